"""Erasable personal data (issue 14 item 4), on SQLite and PostgreSQL: fields marked
``PersonalData`` are ciphertext at rest, read back while the subject's key exists, and
read as "[erased]" in every reader (stream and log reads, audit queries, aggregate loads
from events and from snapshots, a projection rebuilt from position 0) once the subject is
forgotten; forgetting twice is one quiet no-op; a KMS-like key store replaces the table;
wrong configurations are one line."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from pydantic import StringConstraints
from sqlalchemy import Connection, select, text

from facta.domain import ERASED, DomainEvent, EventRegistryError, PendingEvent, PersonalData
from facta.domain.reference import Account, Location, Ride
from facta.errors import DuplicateEventError, InvalidSetting, InvalidValue, PersonalDataError
from facta.eventstore import EventStore, Repository
from facta.eventstore import audit as audit_queries
from facta.eventstore.personal_data import (
    FORGOTTEN_STREAM_TYPE,
    PREFIX,
    KeyStore,
    SqlKeyStore,
    SubjectForgotten,
    forget_subject,
)
from facta.eventstore.schema import subject_keys
from facta.projections.reference import AccountBalances
from facta.projections.replay import ReplayFrom, replay

OWNER = "Ada Lovelace"
RIDER_NAME = "Grace Hopper"


@pytest.fixture(autouse=True)
def _no_sealing_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores made here ask the key store on every append and forget without waiting;
    the test of the sealing cache sets its own."""
    monkeypatch.setenv("FACTA_KEY_CACHE_S", "0")


class Contact(DomainEvent, name="test.pd.contact"):
    person_id: str
    email: Annotated[str, PersonalData(subject="person_id")]
    phone: Annotated[str | None, PersonalData(subject="person_id")] = None
    note: str = ""


def _raw_payloads(conn: Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(text("SELECT CAST(payload AS TEXT) FROM facta_events ORDER BY position"))]


def _raw_states(conn: Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute(text("SELECT CAST(state AS TEXT) FROM facta_snapshots"))]


def _key_rows(conn: Connection) -> dict[str, bytes]:
    return {r[0]: bytes(r[1]) for r in conn.execute(select(subject_keys.c.subject, subject_keys.c.data_key))}


async def _city(store: EventStore) -> None:
    """An account (owner name: personal data of the account) with a snapshot, a ride
    whose rider has a name (personal data of rider-1), and a contact event."""
    repo = Repository(store, snapshot_every=2)
    account = Account.open("acct-1", OWNER, "EUR")
    account.deposit(500)
    ride = Ride.request("ride-1", "rider-1", Location(lat=1, lon=1), Location(lat=1.01, lon=1.01),
                        rider_account="acct-1", rider_name=RIDER_NAME)
    await repo.save(account, ride, actor="app", correlation_id="corr-1")
    await store.append("person-1", "person", [Contact(person_id="p-1", email="p1@example.com", phone=None)],
                       expected_version=0, actor="app", correlation_id="corr-1")


async def test_personal_data_is_ciphertext_at_rest(store: EventStore) -> None:
    await _city(store)
    payloads = await store.database.read(_raw_payloads)
    states = await store.database.read(_raw_states)
    stored = "\n".join(payloads + states)
    for plain in (OWNER, RIDER_NAME, "p1@example.com"):
        assert plain not in stored
    opened = json.loads(payloads[0])
    assert opened["owner"].startswith(PREFIX) and opened["currency"] == "EUR"
    assert json.loads(payloads[-1])["phone"] is None  # None holds no data: stored as null
    assert len(states) == 1 and json.loads(states[0])["owner"].startswith(PREFIX)
    keys = await store.database.read(_key_rows)
    assert sorted(keys) == ["acct-1", "p-1", "rider-1"]
    assert all(len(k) == 32 for k in keys.values())
    # One token per field, fresh nonce: the same plaintext seals differently each time.
    await store.append("person-2", "person", [Contact(person_id="p-1", email="p1@example.com")], expected_version=0)
    again = json.loads((await store.database.read(_raw_payloads))[-1])
    assert again["email"] != json.loads(payloads[-1])["email"]


async def test_every_reader_shows_the_plaintext_while_the_key_exists(store: EventStore) -> None:
    await _city(store)
    (opened, *_) = await store.read_stream("acct-1")
    assert opened.event.owner == OWNER  # type: ignore[attr-defined]
    assert json.loads(opened.payload)["owner"] == OWNER
    log = await store.read_log()
    assert [r.event for r in log if r.event_type == "ride.requested"][0].rider_name == RIDER_NAME  # type: ignore[attr-defined]
    assert (await store.get_event(log[-1].event_id)).event.email == "p1@example.com"  # type: ignore[union-attr,attr-defined]
    assert [r.payload for r in await audit_queries.trace(store, "corr-1")] == [r.payload for r in log]
    loaded = await Repository(store).get(Account, "acct-1")  # from the sealed snapshot
    assert loaded.state.owner == OWNER
    assert (await Repository(store).get(Ride, "ride-1")).state.rider_name == RIDER_NAME


async def test_forget_then_every_reader_shows_the_placeholder(store: EventStore) -> None:
    await _city(store)
    assert await forget_subject(store, "acct-1", actor="dpo") is True
    assert await forget_subject(store, "rider-1", actor="dpo") is True
    assert "acct-1" not in await store.database.read(_key_rows)

    (opened, deposited) = await store.read_stream("acct-1")
    assert opened.event.owner == ERASED and json.loads(opened.payload)["owner"] == ERASED  # type: ignore[attr-defined]
    assert deposited.event.amount == 500  # type: ignore[attr-defined]
    log = await store.read_log()
    ride = next(r for r in log if r.event_type == "ride.requested").event
    assert ride.rider_name == ERASED and ride.rider_id == "rider-1"  # type: ignore[attr-defined]
    assert ride.rider_account == "acct-1"  # type: ignore[attr-defined]  # not marked: kept
    assert next(r for r in log if r.event_type == "test.pd.contact").event.email == "p1@example.com"  # type: ignore[attr-defined]
    assert [e.payload for e in await audit_queries.history(store, "acct-1")] == [opened.payload, deposited.payload]
    found = await audit_queries.events(store, types=["account.opened"], limit=10)
    assert [json.loads(r.payload)["owner"] for r in found.events] == [ERASED]
    found_state = await audit_queries.state_at(store, "acct-1", at_version=1)
    assert found_state.as_dict()["state"]["owner"] == ERASED
    # Loads from the sealed snapshot and from the events agree.
    assert (await Repository(store).get(Account, "acct-1")).state.owner == ERASED
    assert (await Repository(store, snapshot_every=None).get(Account, "acct-1", at_version=1)).state.owner == ERASED
    assert (await Repository(store).get(Ride, "ride-1")).state.rider_name == ERASED

    # The erasure is recorded: who, when, which subject; never the data.
    (record,) = await store.read_stream("facta.gdpr/acct-1")
    assert (record.stream_type, record.actor) == (FORGOTTEN_STREAM_TYPE, "dpo")
    assert record.event == SubjectForgotten(subject="acct-1", key_destroyed=True)
    assert OWNER not in record.payload

    # The aggregate goes on working: a new event after the forget gets a new key.
    account = await Repository(store).get(Account, "acct-1")
    account.deposit(1)
    await Repository(store).save(account)
    assert (await Repository(store).get(Account, "acct-1")).state.balance == 501


async def test_forget_then_a_rebuild_from_zero_shows_the_placeholder(store: EventStore) -> None:
    await _city(store)

    def owners(conn: Connection) -> dict[str, str]:
        t = AccountBalances.balances
        return {r[0]: r[1] for r in conn.execute(select(t.c.account_id, t.c.owner))}

    await replay(store, AccountBalances, ReplayFrom(position=0))
    assert await store.database.read(owners) == {"acct-1": OWNER}
    await forget_subject(store, "acct-1", actor="dpo")
    # A read model built before the forget keeps its copy until it is rebuilt.
    assert await store.database.read(owners) == {"acct-1": OWNER}
    await replay(store, AccountBalances, ReplayFrom(position=0))
    assert await store.database.read(owners) == {"acct-1": ERASED}


async def test_forgetting_twice_is_a_no_op(store: EventStore) -> None:
    await _city(store)
    assert await forget_subject(store, "p-1", actor="dpo") is True
    assert await forget_subject(store, "p-1", actor="dpo") is False
    assert len(await store.read_stream("facta.gdpr/p-1")) == 1
    # A subject that never had a key: the request is recorded once.
    assert await forget_subject(store, "nobody", actor="dpo") is True
    assert await forget_subject(store, "nobody", actor="dpo") is False
    (record,) = await store.read_stream("facta.gdpr/nobody")
    assert record.event == SubjectForgotten(subject="nobody", key_destroyed=False)
    with pytest.raises(InvalidValue, match="subject must be a non-empty string"):
        await forget_subject(store, "", actor="dpo")


async def test_an_identical_retry_with_personal_data_returns_the_original_positions(store: EventStore) -> None:
    pending = PendingEvent(Contact(person_id="p-9", email="p9@example.com"), uuid.uuid4())
    first = await store.append("person-9", "person", [pending], expected_version=0)
    again = await store.append("person-9", "person", [pending], expected_version=0)
    assert again == first
    other = PendingEvent(Contact(person_id="p-9", email="other@example.com"), pending.event_id, pending.occurred_at)
    with pytest.raises(DuplicateEventError, match="its payload differs"):
        await store.append("person-9", "person", [other], expected_version=0)


async def test_a_token_moved_to_another_event_does_not_open(store: EventStore) -> None:
    await store.append("person-1", "person", [Contact(person_id="p-1", email="a@example.com")], expected_version=0)
    (stored,) = await store.database.read(_raw_payloads)
    token = json.loads(stored)["email"]
    # A second event of the same subject, then its stored field swapped for the first
    # event's token (from a raw connection, the permanent-history trigger dropped).
    await store.append("person-2", "person", [Contact(person_id="p-1", email="b@example.com")], expected_version=0)
    await store.database.write(_swap_payload, "person-2", json.dumps({"person_id": "p-1", "email": token,
                                                                      "phone": None, "note": ""}))
    with pytest.raises(PersonalDataError, match="does not open with subject 'p-1'") as caught:
        await store.read_stream("person-2")
    assert "\n" not in str(caught.value)


def _swap_payload(conn: Connection, stream_id: str, payload: str) -> None:
    postgres = conn.dialect.name == "postgresql"
    conn.execute(text("DROP TRIGGER IF EXISTS facta_events_append_only ON facta_events" if postgres
                      else "DROP TRIGGER IF EXISTS facta_events_no_update"))
    cast = "CAST(:p AS jsonb)" if postgres else ":p"
    conn.execute(text(f"UPDATE facta_events SET payload = {cast} WHERE stream_id = :s"), {"p": payload, "s": stream_id})


class WrappingKeyStore:
    """A KMS-like key store: data keys are kept wrapped (RFC 3394) under a master key
    held elsewhere; only unwrapped keys leave it."""

    def __init__(self) -> None:
        self.master = os.urandom(32)
        self.wrapped: dict[str, bytes] = {}
        self.calls: list[tuple[str, int]] = []

    async def get_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        self.calls.append(("get", len(subjects)))
        return {s: aes_key_unwrap(self.master, self.wrapped[s]) for s in subjects if s in self.wrapped}

    async def create_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        self.calls.append(("create", len(subjects)))
        for s in subjects:
            self.wrapped.setdefault(s, aes_key_wrap(self.master, os.urandom(32)))
        return {s: aes_key_unwrap(self.master, self.wrapped[s]) for s in subjects}

    async def forget(self, subject: str) -> bool:
        return self.wrapped.pop(subject, None) is not None


async def test_a_kms_like_key_store_replaces_the_table(migrated_url: str) -> None:
    kms = WrappingKeyStore()
    assert isinstance(kms, KeyStore)
    async with await EventStore.open(migrated_url, key_store=kms) as store:
        events = [Contact(person_id=f"p-{i % 3}", email=f"{i}@example.com") for i in range(30)]
        await store.append("people", "person", events, expected_version=0)
        assert kms.calls == [("create", 3)]  # one call per append, every subject at once
        assert [r.event.email for r in await store.read_stream("people")] == [e.email for e in events]  # type: ignore[attr-defined]
        assert kms.calls[-1] == ("get", 3)  # one call per page read
        assert await store.database.read(_key_rows) == {}
        assert await forget_subject(store, "p-0", actor="dpo") is True
        emails = [r.event.email for r in await store.read_stream("people")]  # type: ignore[attr-defined]
        assert emails == [ERASED if i % 3 == 0 else f"{i}@example.com" for i in range(30)]
    # The default store cannot open what the KMS sealed: it shows the placeholder.
    async with await EventStore.open(migrated_url) as store:
        assert {r.event.email for r in await store.read_stream("people")} == {ERASED}  # type: ignore[attr-defined]


class ShortKeys(WrappingKeyStore):
    async def create_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        return {s: b"k" * 16 for s in subjects}


async def test_wrong_key_store_configuration_is_one_line(migrated_url: str, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    with pytest.raises(InvalidValue, match=r"^key_store must be a KeyStore .*got object$"):
        await EventStore.open(migrated_url, key_store=object())  # type: ignore[arg-type]
    async with await EventStore.open(migrated_url, key_store=ShortKeys()) as store:
        with pytest.raises(PersonalDataError, match="^the key store gave subject 'p-1' a key of 16 bytes; facta takes 32 bytes$"):
            await store.append("person-1", "person", [Contact(person_id="p-1", email="x@example.com")], expected_version=0)
        assert await store.stream_version("person-1") == 0  # nothing written
        with pytest.raises(InvalidValue, match="subject '' .* must be a non-empty string"):
            await store.append("person-1", "person", [Contact(person_id="", email="x@example.com")], expected_version=0)

    (tmp_path / "kms_factory.py").write_text(
        "def good(database):\n    from facta.eventstore.personal_data import SqlKeyStore\n    return SqlKeyStore(database)\n"
        "def bad(database):\n    return 42\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for value, needle in [
        ("nocolon", "module:factory"),
        ("kms_factory:missing", "a factory named 'missing'"),
        ("no_such_module_x:make", "No module named 'no_such_module_x'"),
        ("kms_factory:bad", "it returned int"),
    ]:
        monkeypatch.setenv("FACTA_KEY_STORE", value)
        with pytest.raises(InvalidSetting, match=needle) as caught:
            await EventStore.open(migrated_url)
        assert "\n" not in str(caught.value) and str(caught.value).startswith("invalid FACTA_KEY_STORE=")
    monkeypatch.setenv("FACTA_KEY_STORE", "kms_factory:good")
    async with await EventStore.open(migrated_url) as store:
        assert isinstance(store.key_store, SqlKeyStore)
    sys.modules.pop("kms_factory", None)


def test_markers_are_checked_when_the_event_is_declared() -> None:
    with pytest.raises(EventRegistryError, match=r"\.Bad\.age: PersonalData marks str or str \| None fields only, not int$"):
        class Bad(DomainEvent, name="test.pd.bad_type"):
            age: Annotated[int, PersonalData()]
    with pytest.raises(EventRegistryError, match=r"PersonalData subject 'who' is not a field of Bad2 \(fields: email\)"):
        class Bad2(DomainEvent, name="test.pd.bad_subject"):
            email: Annotated[str, PersonalData(subject="who")]
    with pytest.raises(EventRegistryError, match="must be an unmarked str"):
        class Bad3(DomainEvent, name="test.pd.bad_subject_type"):
            n: int
            email: Annotated[str, PersonalData(subject="n")]
    with pytest.raises(EventRegistryError, match="must accept the placeholder '\\[erased\\]'"):
        class Bad4(DomainEvent, name="test.pd.bad_constraint"):
            code: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), PersonalData()]
    with pytest.raises(EventRegistryError, match="must be a field name"):
        PersonalData(subject="not a name")
    assert Contact.__personal_data__ == (("email", "person_id"), ("phone", "person_id"))
    from facta.domain import default_registry

    assert "test.pd.bad_type" not in default_registry  # a refused class is not registered
    assert default_registry.get("test.pd.contact") is Contact


async def test_kafka_carries_ciphertext_only_and_a_kafka_projection_shows_the_placeholder(
        migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    from facta.eventstore.relay import Relay

    from .test_relay import consume_all, headers_of, relay_config

    async with await EventStore.open(migrated_url) as store:
        await _city(store)
        await Relay(store, relay_config(kafka_broker, prefix)).run(once=True)
        await forget_subject(store, "acct-1", actor="dpo")
        records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.account", f"{prefix}.ride"], 4)
        values = b"\n".join(r.value for r in records)
        for plain in (OWNER, RIDER_NAME):
            assert plain.encode() not in values
        opened = next(r for r in records if headers_of(r)["event-type"] == "account.opened")
        assert json.loads(opened.value)["owner"].startswith(PREFIX)
        # A consumer of the Kafka copy opens it with the key store: erased after the forget,
        # the rider's name (not forgotten) still readable.
        from facta.projections.kafka_source import record_from_message

        decoded = [record_from_message(r, store.registry) for r in records]
        await store._shredder.reveal(decoded)
        by_type = {r.event_type: r.event for r in decoded}
        assert by_type["account.opened"].owner == ERASED  # type: ignore[attr-defined]
        assert by_type["ride.requested"].rider_name == RIDER_NAME  # type: ignore[attr-defined]


def test_a_marked_field_must_be_stored_under_its_own_name() -> None:
    from pydantic import Field, field_serializer

    with pytest.raises(EventRegistryError, match="without an alias"):
        class Aliased(DomainEvent, name="test.pd.aliased"):
            email: Annotated[str, PersonalData()] = Field(alias="mail")
    with pytest.raises(EventRegistryError, match="without a field_serializer"):
        class Serialised(DomainEvent, name="test.pd.serialised"):
            email: Annotated[str, PersonalData()]

            @field_serializer("email")
            def _lower(self, value: str) -> str:
                return value.lower()


async def test_a_nested_field_of_the_same_name_and_value_is_left_alone(store: EventStore) -> None:
    from pydantic import BaseModel

    class Inner(BaseModel):
        email: str

    class Nested(DomainEvent, name="test.pd.nested"):
        inner: Inner
        email: Annotated[str, PersonalData()]

    await store.append("n-1", "person", [Nested(inner=Inner(email="same@example.com"), email="same@example.com")],
                       expected_version=0)
    (raw,) = await store.database.read(_raw_payloads)
    assert json.loads(raw)["inner"] == {"email": "same@example.com"} and json.loads(raw)["email"].startswith(PREFIX)
    (record,) = await store.read_stream("n-1")
    assert record.event == Nested(inner=Inner(email="same@example.com"), email="same@example.com")


async def test_an_append_of_many_subjects_gets_and_reads_every_key(store: EventStore) -> None:
    events = [Contact(person_id=f"p-{i}", email=f"{i}@example.com") for i in range(1200)]
    await store.append("crowd", "person", events, expected_version=0)
    assert len(await store.database.read(_key_rows)) == 1200
    assert [r.event.email for r in await store.read_stream("crowd")] == [e.email for e in events]  # type: ignore[attr-defined]


async def test_sealing_keys_are_kept_and_a_forget_waits_them_out(migrated_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("FACTA_KEY_CACHE_S", "0.5")
    kms = WrappingKeyStore()
    async with await EventStore.open(migrated_url, key_store=kms) as store, \
            await EventStore.open(migrated_url, key_store=kms) as other:
        await store.append("a", "person", [Contact(person_id="p-1", email="1@example.com")], expected_version=0)
        await store.append("a", "person", [Contact(person_id="p-1", email="2@example.com")], expected_version=1)
        assert kms.calls == [("create", 1)]  # the second append sealed with the kept key
        started = time.monotonic()
        assert await forget_subject(other, "p-1", actor="dpo") is True
        assert time.monotonic() - started >= 0.5  # waited out every store's kept key
        # After the forget returned, `store` no longer seals with the destroyed key: its
        # new event gets a new key and reads back; the old ones read as erased.
        await store.append("a", "person", [Contact(person_id="p-1", email="3@example.com")], expected_version=2)
        emails = [r.event.email for r in await store.read_stream("a")]  # type: ignore[attr-defined]
        assert emails == [ERASED, ERASED, "3@example.com"]


async def test_forget_then_the_chains_the_tree_and_an_earlier_digest_still_verify(store: EventStore) -> None:
    """Hashes cover the ciphertext (issue 14: "forget then verify passes"): destroying a
    subject's key changes no stored byte of its events, so every stream chain, the signed
    tree and a digest saved before the forget still verify; the erasure's own record is
    one more event the next seal folds in. An inclusion proof of an erased event still
    verifies offline: it proves the ciphertext."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from facta.eventstore import integrity, sealer

    key = Ed25519PrivateKey.generate()
    await _city(store)
    await sealer.seal(store, key)
    before = await sealer.latest_head(store)
    assert before is not None
    (opened, _) = await store.read_stream("acct-1")
    raw_before = await store.database.read(_raw_payloads)

    assert await forget_subject(store, "acct-1", actor="dpo") is True
    assert (await store.read_stream("acct-1"))[0].event.owner == ERASED  # type: ignore[attr-defined]
    raw_after = await store.database.read(_raw_payloads)
    assert raw_after[: len(raw_before)] == raw_before  # not one stored byte changed
    assert len(raw_after) == len(raw_before) + 1  # the record of the erasure

    report = await integrity.verify(store)
    assert report.intact and report.differences == 0, report
    await sealer.seal(store, key)
    tree = await sealer.verify_tree(store, key.public_key(), against=before)
    assert tree.intact, tree.problem
    proof = await sealer.prove(store, opened.event_id)
    head = sealer.verify_proof(proof, key.public_key())
    assert head.tree_size == before.tree_size + 1


async def test_a_stream_id_of_255_characters_is_its_own_subject_and_can_be_forgotten(store: EventStore) -> None:
    """An aggregate whose stream is its own subject (``PersonalData()``, the reference
    Account's owner) may have any stream id, up to 255 characters; its erasure record's
    stream is then named by the subject's SHA-256 (``facta.gdpr/<subject>`` would not fit)."""
    import hashlib

    from facta.eventstore.personal_data import forgotten_stream

    long_id = "acct-" + "y" * 250
    account = Account.open(long_id, owner=OWNER, currency="EUR")
    await Repository(store).save(account)
    assert (await Repository(store).get(Account, long_id)).state.owner == OWNER
    assert forgotten_stream("acct-1") == "facta.gdpr/acct-1"
    assert forgotten_stream(long_id) == "facta.gdpr/sha256:" + hashlib.sha256(long_id.encode()).hexdigest()
    assert await forget_subject(store, long_id, actor="dpo") is True
    assert (await Repository(store).get(Account, long_id)).state.owner == ERASED
    (record,) = await store.read_stream(forgotten_stream(long_id))
    assert record.event == SubjectForgotten(subject=long_id, key_destroyed=True)
    assert await forget_subject(store, long_id, actor="dpo") is False
