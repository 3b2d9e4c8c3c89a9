"""One store, both worlds: facta's own aggregates and an eventsourcing application
(PERSISTENCE_MODULE=facta.eventsourcing) in one database, each reading back its own; and a
ciphered application's events, which facta stores and shows as the placeholder, read by a
projection of OpaqueEvent classes without a crash. Both on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Column, Integer, String, select

from facta.domain import EventRegistry
from facta.domain.reference import Account
from facta.eventsourcing.events import OPAQUE_KEY, OpaqueEvent, TranscodedEvent
from facta.eventstore import EventStore, RecordedEvent, Repository, audit
from facta.eventstore._bytes import OPAQUE_KEY as STORE_OPAQUE_KEY
from facta.eventstore._bytes import opaque_placeholder
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import (
    KafkaSettings,
    Projection,
    ProjectionError,
    ProjectionRunner,
    ReadModel,
    handles,
    read_model_table,
)
from tests.eventstore.test_relay import consume_all, headers_of

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "eventsourcing_bank"
TOPIC = "bankaccounts:BankAccount."

# The bank example's events as facta reads them in plain JSON, and as it reads them ciphered.
PLAIN, SEALED = EventRegistry(), EventRegistry()


class Opened(TranscodedEvent, topic=TOPIC + "Opened", registry=PLAIN):
    full_name: str


class Credited(TranscodedEvent, topic=TOPIC + "Credited", registry=PLAIN):
    amount: Decimal


class SealedOpened(OpaqueEvent, topic=TOPIC + "Opened", registry=SEALED):
    pass


class SealedCredited(OpaqueEvent, topic=TOPIC + "Credited", registry=SEALED):
    pass


class PlainBalances(Projection, name="es_plain_balances", registry=PLAIN):
    streams = ("BankAccounts",)
    balances = read_model_table("es_plain_balances", Column("account_id", String(36), primary_key=True),
                                Column("cents", Integer, nullable=False))

    @handles(Credited)
    def _credited(self, rm: ReadModel, event: Credited, record: RecordedEvent) -> None:
        rm.upsert(self.balances, {"account_id": record.stream_id}, add={"cents": int(event.amount * 100)})


class SealedActivity(Projection, name="es_sealed_activity", registry=SEALED):
    """What a projection can know of ciphered events: how many, which version, which bytes."""

    streams = ("BankAccounts",)
    activity = read_model_table("es_sealed_activity", Column("account_id", String(36), primary_key=True),
                                Column("events", Integer, nullable=False), Column("version", Integer, nullable=False),
                                Column("last_sha256", String(64), nullable=False))

    def _seen(self, rm: ReadModel, event: OpaqueEvent, record: RecordedEvent) -> None:
        rm.upsert(self.activity, {"account_id": record.stream_id},
                  set={"version": record.version, "last_sha256": event.sha256}, add={"events": 1})

    @handles(SealedOpened)
    def _opened(self, rm: ReadModel, event: SealedOpened, record: RecordedEvent) -> None:
        self._seen(rm, event, record)

    @handles(SealedCredited)
    def _credited(self, rm: ReadModel, event: SealedCredited, record: RecordedEvent) -> None:
        self._seen(rm, event, record)


@pytest.fixture
def bank(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The README example's application module, imported as `bankaccounts` (its topics)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield importlib.import_module("bankaccounts")


def cipher_settings() -> dict[str, str]:
    """eventsourcing's AES cipher: on pycryptodome (the test extra's, as eventsourcing's own
    test cases use) or, where only the `cryptography` package is installed, on that one."""
    for module in ("eventsourcing.cipher", "eventsourcing.cryptography"):
        try:
            cipher = importlib.import_module(module).AESCipher
        except ImportError:
            continue
        return {"CIPHER_TOPIC": f"{module}:AESCipher", "CIPHER_KEY": cipher.create_key(16)}
    raise AssertionError("neither pycryptodome nor cryptography is installed: pip install -e '.[test]'")


def app_env(url: str, **more: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "facta.eventsourcing", "FACTA_DATABASE_URL": url, **more}


def test_facta_aggregates_and_an_eventsourcing_application_share_one_store(backend_url: str, bank: ModuleType) -> None:
    app = bank.BankAccounts(env=app_env(backend_url))  # migrates the new database
    try:
        async def facta_open() -> None:
            async with await EventStore.open(backend_url) as store:
                ann = Account.open("acct-ann", "ann", "EUR")
                ann.deposit(50_00)
                await Repository(store).save(ann)

        async def facta_deposit() -> None:
            async with await EventStore.open(backend_url) as store:
                repo = Repository(store)
                ann = await repo.get(Account, "acct-ann")
                ann.deposit(10_00)
                await repo.save(ann)

        asyncio.run(facta_open())                                  # 2 events
        alice = app.open_account("Alice", "alice@example.com")     # 1
        asyncio.run(facta_deposit())                               # 1
        app.deposit(alice, Decimal("100.00"))                      # 1

        async def read_back() -> tuple[list[RecordedEvent], Account, Credited]:
            async with await EventStore.open(backend_url) as store:
                log = [r async for r in store.iter_log(after=0, page_size=100)]
                ann = await Repository(store).get(Account, "acct-ann")
                record = (await store.read_stream(str(alice)))[1]
                credited = PLAIN.decode(record.event_type, record.schema_version, record.payload, record.position)
                assert isinstance(credited, Credited)
                return log, ann, credited

        log, ann, credited = asyncio.run(read_back())
        # Positions interleave in the order of the appends.
        assert [(r.stream_type, r.stream_id, r.version) for r in log] == [
            ("account", "acct-ann", 1), ("account", "acct-ann", 2), ("BankAccounts", str(alice), 1),
            ("account", "acct-ann", 3), ("BankAccounts", str(alice), 2),
        ]
        positions = [r.position for r in log]
        assert positions == sorted(positions) and len(set(positions)) == 5
        # Each world reads back its own.
        assert ann.version == 3 and ann.state.balance == 60_00
        assert app.balance(alice) == Decimal("100.00") and app.repository.get(alice).version == 2
        assert credited.amount == Decimal("100.00") and str(credited.amount) == "100.00"
        # The application's notification ids are the positions of its own events only.
        notifications = app.recorder.select_notifications(start=None, limit=10)
        assert [(n.id, n.topic, n.originator_id, n.originator_version) for n in notifications] == [
            (positions[2], TOPIC + "Opened", alice, 1), (positions[4], TOPIC + "Credited", alice, 2),
        ]
        assert app.recorder.max_notification_id() == positions[4]
    finally:
        app.close()


@pytest.mark.parametrize("sealing", ["cipher", "compressor"])
def test_a_ciphered_applications_events_show_the_placeholder(backend_url: str, bank: ModuleType, sealing: str) -> None:
    assert OPAQUE_KEY == STORE_OPAQUE_KEY  # the bridge reads what the store writes
    settings = {
        "cipher": cipher_settings(),
        "compressor": {"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"},
    }[sealing]
    app = bank.BankAccounts(env=app_env(backend_url, **settings))
    try:
        alice = app.open_account("Alice", "alice@example.com")
        app.deposit(alice, Decimal("100.00"))
        assert app.balance(alice) == Decimal("100.00")  # the application reads its ciphered events as ever
        stored = app.recorder.select_events(alice)
    finally:
        app.close()
    ciphered = [e.state for e in stored]
    assert all(not s.startswith(b"{") for s in ciphered)
    placeholders = [json.loads(opaque_placeholder(s)) for s in ciphered]
    assert placeholders == [{"$opaque": {"length": len(s), "sha256": hashlib.sha256(s).hexdigest()}}
                            for s in ciphered]

    async def facta_side() -> tuple[list[Any], list[Any], str]:
        async with await EventStore.open(backend_url, registry=SEALED) as store:
            history = [json.loads(r.payload) for r in await audit.history(store, str(alice))]
            await ProjectionRunner(store, SealedActivity).run(once=True)
            table = SealedActivity.activity
            rows = await store.database.read(
                lambda conn: [tuple(r) for r in conn.execute(select(table.c.account_id, table.c.events,
                                                                   table.c.version, table.c.last_sha256))])
        async with await EventStore.open(backend_url, registry=PLAIN) as store:
            with pytest.raises(ProjectionError) as stopped:
                await ProjectionRunner(store, PlainBalances).run(once=True)
        return history, rows, str(stopped.value)

    history, rows, stopped = asyncio.run(facta_side())
    # facta audit shows the placeholder, the bytes' length and digest, for each event.
    assert history == placeholders
    # An OpaqueEvent projection runs through: it counts and fingerprints the events.
    assert rows == [(str(alice), 2, 2, hashlib.sha256(ciphered[1]).hexdigest())]
    # A TranscodedEvent projection stops at the first one with one line saying why.
    assert "\n" not in stopped
    assert f"stopped at {TOPIC}Credited" in stopped and f"stream {alice} v2" in stopped, stopped
    assert (f"the payload is opaque ({len(ciphered[1])} bytes, sha256 {hashlib.sha256(ciphered[1]).hexdigest()}):"
            " ciphered or compressed by the application") in stopped, stopped
    assert isinstance(alice, UUID)


def test_a_ciphered_applications_events_go_through_kafka_as_the_placeholder(
        backend_url: str, bank: ModuleType, kafka_bootstrap: str, prefix: str) -> None:
    app = bank.BankAccounts(env=app_env(backend_url, **cipher_settings()))
    try:
        alice = app.open_account("Alice", "alice@example.com")
        app.deposit(alice, Decimal("100.00"))
        ciphered = [e.state for e in app.recorder.select_events(alice)]
    finally:
        app.close()

    async def relay_and_project() -> list[tuple[Any, ...]]:
        async with await EventStore.open(backend_url, registry=SEALED) as store:
            published = await Relay(store, RelayConfig(bootstrap=kafka_bootstrap, topic_prefix=prefix)).run(once=True)
            assert published == 2, published
            # What the relay sent: ordinary facta records whose value is the placeholder.
            records = sorted(await consume_all(kafka_bootstrap, [f"{prefix}.BankAccounts"], 2),
                             key=lambda r: int(headers_of(r)["position"]))
            assert [(r.key.decode(), json.loads(r.value)) for r in records] == [
                (str(alice), json.loads(opaque_placeholder(state))) for state in ciphered]
            headers = [headers_of(r) for r in records]
            assert [(h["event-type"], h["stream-type"], h["stream-id"], h["stream-version"], h["schema-version"])
                    for h in headers] == [(TOPIC + "Opened", "BankAccounts", str(alice), "1", "1"),
                                          (TOPIC + "Credited", "BankAccounts", str(alice), "2", "1")]
            assert not any({"actor", "correlation-id", "causation-id"} & set(h) for h in headers)
            kafka = KafkaSettings(bootstrap=kafka_bootstrap, topic_prefix=prefix, group_prefix=f"{prefix}.")
            runner = ProjectionRunner(store, SealedActivity, kafka=kafka)
            assert runner.subscription.source == "kafka"
            await runner.run(once=True)
            table = SealedActivity.activity
            return await store.database.read(
                lambda conn: [tuple(r) for r in conn.execute(select(table.c.account_id, table.c.events,
                                                                   table.c.version, table.c.last_sha256))])

    rows = asyncio.run(relay_and_project())
    assert rows == [(str(alice), 2, 2, hashlib.sha256(ciphered[1]).hexdigest())]
