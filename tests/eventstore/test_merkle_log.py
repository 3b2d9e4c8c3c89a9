"""The sealed Merkle log on both dialects (facta.eventstore.sealer): the tree folds the
settled log in position order and never re-folds; a digest from yesterday's log verifies
against today's; inclusion proofs verify offline and fail when one byte of them or of the
event changes; a digest signed with another key is refused; tampering (a changed event
hash, a deleted or inserted event, a changed leaf or node) is found and located."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, text

from facta.domain.reference import Account
from facta.errors import AuditError
from facta.eventstore import EventStore, Repository, integrity, merkle, schema, sealer
from facta.eventstore.merkle import TreeHead

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


async def grow(store: EventStore, accounts: int, *, first: int = 0) -> None:
    """``accounts`` new accounts of three events each, saved one account per append."""
    repo = Repository(store)
    for n in range(first, first + accounts):
        account = Account.open(f"acct-{n:04d}", f"owner-{n}", "EUR")
        account.deposit(100 + n)
        account.deposit(7)
        await repo.save(account, actor="test")


def as_uuid(value: object) -> uuid.UUID:
    """An event id read by raw SQL: a UUID on PostgreSQL, 32 hex digits on SQLite."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _rows(conn: Connection, sql: str) -> list[Sequence[Any]]:
    return [tuple(r) for r in conn.execute(text(sql)).all()]


async def event_hashes(store: EventStore) -> list[tuple[int, bytes]]:
    rows = await store.database.read(_rows, "SELECT position, event_hash FROM facta_events ORDER BY position")
    return [(int(p), bytes(h)) for p, h in rows]


async def tamper(store: EventStore, table: str, *statements: str | Callable[[Connection], object]) -> None:
    """Run ``statements`` from a raw connection with ``table``'s triggers out of the way
    (PostgreSQL: disabled for the transaction's duration; SQLite: dropped)."""
    def work(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                                        {"t": table}).all():
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        for statement in statements:
            if isinstance(statement, str):
                conn.execute(text(statement))
            else:
                statement(conn)
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))

    await store.database.write(work)


async def test_seal_folds_the_log_in_position_order_and_never_refolds(store: EventStore) -> None:
    first = await sealer.seal(store, KEY)
    assert (first.added, first.tree_size) == (0, 0)
    assert first.head is not None and first.head.root_hash == merkle.EMPTY_ROOT
    await grow(store, 5)
    report = await sealer.seal(store, KEY, batch=4)
    hashes = await event_hashes(store)
    assert report.added == report.tree_size == len(hashes) == 15
    assert report.head is not None
    assert report.head.root_hash == merkle.root_hash(merkle.leaf_hash(h) for _, h in hashes)
    assert report.head.last_position == hashes[-1][0]
    merkle.verify_head(report.head, KEY.public_key())
    leaves = await store.database.read(_rows, "SELECT leaf_index, position, leaf_hash FROM facta_tree_leaves ORDER BY leaf_index")
    assert [(int(i), int(p), bytes(h)) for i, p, h in leaves] == [
        (i, p, merkle.leaf_hash(h)) for i, (p, h) in enumerate(hashes)]
    again = await sealer.seal(store, KEY)
    assert (again.added, again.tree_size, again.head) == (0, 15, None)

    await grow(store, 4, first=5)
    later = await sealer.seal(store, KEY, batch=5)
    hashes = await event_hashes(store)
    assert (later.added, later.tree_size) == (12, 27)
    assert later.head is not None and later.head.root_hash == merkle.root_hash(merkle.leaf_hash(h) for _, h in hashes)
    # Every complete node above the leaves is stored once (27 leaves: 13 + 6 + 3 + 1 = 23 nodes).
    nodes = await store.database.read(_rows, "SELECT level, node_index, hash FROM facta_tree_nodes ORDER BY level, node_index")
    expected: dict[merkle.Node, bytes] = {}
    tree = merkle.Frontier()
    for _, h in hashes:
        expected.update((n, v) for n, v in tree.push(merkle.leaf_hash(h)) if n[0] > 0)
    assert {(int(lv), int(i)): bytes(h) for lv, i, h in nodes} == expected and len(expected) == 23
    heads = await store.database.read(_rows, "SELECT tree_size FROM facta_tree_heads ORDER BY tree_size")
    assert [int(r[0]) for r in heads] == [0, 15, 27]
    assert (await sealer.latest_head(store)) == later.head


async def test_the_tree_tables_are_written_once(store: EventStore) -> None:
    await grow(store, 2)
    await sealer.seal(store, KEY)
    for statement in ("UPDATE facta_tree_leaves SET position = 99", "DELETE FROM facta_tree_nodes",
                      "DELETE FROM facta_tree_heads"):
        with pytest.raises(Exception, match="is written once"):
            await store.database.write(lambda conn, s=statement: conn.execute(text(s)))


async def test_a_digest_from_yesterdays_log_verifies_against_todays(store: EventStore) -> None:
    await grow(store, 3)
    yesterday = (await sealer.seal(store, KEY)).head
    assert yesterday is not None
    saved = TreeHead.from_json(yesterday.as_json())
    await grow(store, 6, first=3)
    await sealer.seal(store, KEY, batch=7)
    await grow(store, 1, first=9)  # appended after the last seal: not covered yet, not a problem
    report = await sealer.verify_tree(store, KEY.public_key(), against=saved)
    assert report.problem is None and report.intact
    assert (report.leaves, report.heads, report.unsealed) == (27, 2, 3)
    assert report.head is not None and report.head.tree_size == 27
    # The same digest with another key's signature is refused, naming both keys.
    forged = merkle.sign_head(OTHER, saved.tree_size, saved.root_hash, saved.last_position, saved.signed_at)
    with pytest.raises(AuditError, match=f"^the saved digest is signed by key {forged.key_id}, not by this key"):
        await sealer.verify_tree(store, KEY.public_key(), against=forged)
    # A store whose heads another key signed is refused too.
    with pytest.raises(AuditError, match=r"^stored tree head 9 is signed by key [0-9a-f]{16}, not by this key"):
        await sealer.verify_tree(store, OTHER.public_key())
    # A digest of a different history of the same size does not verify.
    other_root = merkle.sign_head(KEY, saved.tree_size, bytes(32), saved.last_position, saved.signed_at)
    bad = await sealer.verify_tree(store, KEY.public_key(), against=other_root)
    assert bad.problem is not None and "do not hash to the saved digest's root" in bad.problem
    assert bad.position == saved.last_position


async def test_an_inclusion_proof_verifies_offline_and_fails_when_a_byte_changes(store: EventStore) -> None:
    await grow(store, 7)
    await sealer.seal(store, KEY)
    rows = await store.database.read(_rows, "SELECT event_id, position FROM facta_events ORDER BY position")
    for event_id, position in rows:
        doc = await sealer.prove(store, as_uuid(event_id))
        assert doc["position"] == int(position)
        head = sealer.verify_proof(doc, KEY.public_key())
        assert head.tree_size == 21
    assert len(doc["audit_path"]) == 2  # leaf 20 of 21: the subtrees over leaves 16..19 and 0..15
    sealer.verify_proof(copy.deepcopy(doc), KEY.public_key())

    def flip(hex_text: str, at: int = 0) -> str:
        raw = bytearray(bytes.fromhex(hex_text))
        raw[at] ^= 0x01
        return bytes(raw).hex()

    for change in (
        lambda d: d.update(event_hash=flip(d["event_hash"])),
        lambda d: d["audit_path"].__setitem__(0, flip(d["audit_path"][0], 31)),
        lambda d: d["audit_path"].__setitem__(-1, flip(d["audit_path"][-1], 7)),
        lambda d: d.update(leaf_index=d["leaf_index"] - 1),
        lambda d: d["tree_head"].update(root_hash=flip(d["tree_head"]["root_hash"])),
        lambda d: d["tree_head"].update(tree_size=d["tree_head"]["tree_size"] + 1),
        lambda d: d["event"].update(payload=d["event"]["payload"].replace("7", "8")),
        lambda d: d["event"].update(actor="someone else"),
        lambda d: d["event"].update(occurred_at=d["event"]["occurred_at"][:-2] + ("1" if d["event"]["occurred_at"][-2] != "1" else "2") + "Z"),
        lambda d: d.update(prev_hash=flip(d["prev_hash"], 9)),
    ):
        changed = copy.deepcopy(doc)
        change(changed)
        with pytest.raises(AuditError):
            sealer.verify_proof(changed, KEY.public_key())
    with pytest.raises(AuditError, match="is signed by key"):
        sealer.verify_proof(doc, OTHER.public_key())

    # The event changes in the database after sealing. Its content alone: the proof's
    # fields no longer give its hash. Its content and a hash recomputed to match (the chain
    # step done again): the hash is no leaf of the signed tree.
    target, event_id = int(rows[4][1]), as_uuid(rows[4][0])
    original = await sealer.prove(store, event_id)
    assert original["event"]["payload"] in ('{"amount": 101, "reference": null}', '{"amount":101,"reference":null}')
    assert original["event"]["version"] == 2 and original["prev_hash"] == (await event_hashes(store))[3][1].hex()
    forged = '{"amount": 9999, "reference": null}'
    cast = "CAST(:p AS jsonb)" if store.database.dialect == "postgresql" else ":p"

    def set_payload(conn: Connection) -> None:
        conn.execute(text(f"UPDATE facta_events SET payload = {cast} WHERE position = :n"), {"p": forged, "n": target})

    await tamper(store, "facta_events", set_payload)
    with pytest.raises(AuditError, match=r"do not hash to its event_hash: the event in the proof was changed$"):
        sealer.verify_proof(await sealer.prove(store, event_id), KEY.public_key())
    when = datetime.strptime(original["event"]["occurred_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    fields = original["event"] | {"payload": forged, "occurred_at": when}
    rehashed = integrity.event_hash(bytes.fromhex(original["prev_hash"]), integrity.content_digest(
        event_id=event_id, **fields))

    def set_hash(conn: Connection) -> None:
        conn.execute(text("UPDATE facta_events SET event_hash = :h WHERE position = :n"), {"h": rehashed, "n": target})

    await tamper(store, "facta_events", set_hash)
    with pytest.raises(AuditError, match=r"is not in the tree of 21 events its head signs"):
        sealer.verify_proof(await sealer.prove(store, event_id), KEY.public_key())


async def test_a_proof_of_an_unsealed_or_unknown_event_is_refused(store: EventStore) -> None:
    await grow(store, 1)
    event_id = as_uuid((await store.database.read(_rows, "SELECT event_id FROM facta_events ORDER BY position LIMIT 1"))[0][0])
    with pytest.raises(AuditError, match=r"is not sealed yet: run facta audit seal$"):
        await sealer.prove(store, event_id)
    missing = uuid.UUID(int=7)
    with pytest.raises(AuditError, match=f"^no event {missing}$"):
        await sealer.prove(store, missing)


@pytest.mark.parametrize("kind", ["changed hash", "deleted", "inserted", "changed leaf", "changed node"])
async def test_tampering_is_found_and_located(store: EventStore, kind: str) -> None:
    await grow(store, 6)
    hashes = await event_hashes(store)
    victim = hashes[9][0]
    if kind == "inserted":
        # A gap in the log before sealing (what a rolled-back append leaves), filled afterwards.
        await tamper(store, "facta_events", f"DELETE FROM facta_events WHERE position = {victim}")
    saved = (await sealer.seal(store, KEY)).head
    assert saved is not None
    blob = "decode(repeat('cd', 32), 'hex')" if store.database.dialect == "postgresql" else "randomblob(32)"
    if kind == "changed hash":
        await tamper(store, "facta_events", f"UPDATE facta_events SET event_hash = {blob} WHERE position = {victim}")
        what = "the event's hash does not match leaf 9 sealed for it"
    elif kind == "deleted":
        await tamper(store, "facta_events", f"DELETE FROM facta_events WHERE position = {victim}")
        what = "the event sealed as leaf 9 is missing (deleted)"
    elif kind == "inserted":
        columns = [c.name for c in schema.events.columns] + (["event_hash"] if "event_hash" not in schema.events.c else [])
        new_id = "'00000000-0000-0000-0000-000000000abc'" if store.database.dialect == "postgresql" else "'00000000000000000000000000000abc'"
        chosen = [str(victim) if c == "position" else new_id if c == "event_id" else "version + 100" if c == "version" else c
                  for c in columns]
        await tamper(store, "facta_events", f"INSERT INTO facta_events ({', '.join(columns)})"
                     f" SELECT {', '.join(chosen)} FROM facta_events WHERE position = {hashes[10][0]}")
        what = f"an event the sealed tree does not hold (inserted before leaf 9 at position {hashes[10][0]})"
    elif kind == "changed leaf":
        await tamper(store, "facta_tree_leaves", f"UPDATE facta_tree_leaves SET leaf_hash = {blob} WHERE leaf_index = 9")
        what = "the event's hash does not match leaf 9 sealed for it"
    else:
        await tamper(store, "facta_tree_nodes", f"UPDATE facta_tree_nodes SET hash = {blob} WHERE level = 1 AND node_index = 0")
        report = await sealer.verify_tree(store, KEY.public_key(), against=saved)
        assert report.problem == (f"position {hashes[1][0]}: the stored node (1, 0) over leaves 0 to 1 differs from the"
                                  " tree recomputed from the events (the tree tables were changed)")
        assert report.position == hashes[1][0]
        return
    report = await sealer.verify_tree(store, KEY.public_key(), against=saved)
    assert report.problem is not None and report.problem.startswith(f"position {victim}: {what}"), report.problem
    assert report.position == victim


async def test_seal_waits_for_the_hash_of_every_event_it_folds(store: EventStore) -> None:
    await grow(store, 1)
    hashes = await event_hashes(store)
    await tamper(store, "facta_events", f"UPDATE facta_events SET event_hash = NULL WHERE position = {hashes[1][0]}")
    with pytest.raises(AuditError, match=f"^the event at position {hashes[1][0]} has no event hash: run the hash backfill first$"):
        await sealer.seal(store, KEY)


def test_signed_at_survives_the_database_to_the_microsecond() -> None:
    head = merkle.sign_head(KEY, 0, merkle.EMPTY_ROOT, 0, datetime(2026, 12, 1, 1, 2, 3, 456789, tzinfo=UTC))
    assert TreeHead.from_json(head.as_json()) == head


@pytest.mark.postgres
async def test_seal_never_passes_an_append_in_flight_postgres(postgres_url: str) -> None:
    """An append in flight holds position 4 while positions 5-10 commit. A tree sealed
    now past position 4 would lack it forever (sealed leaves are never re-folded): the
    sealer waits for the settled horizon, and its tree holds position 4 in its place."""
    import asyncio

    import asyncpg

    from facta.eventstore.locks import WRITER_MARKER

    from ..conftest import migrate

    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    raw = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    sealing: asyncio.Task[Any] | None = None
    try:
        await grow(store, 1)
        tx = raw.transaction()
        await tx.start()
        await raw.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *WRITER_MARKER)
        held = await raw.fetchval(
            "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
            " payload, occurred_at, recorded_at, event_hash) VALUES ($1, 'held', 'account', 1, 'account.deposited',"
            " 1, '{}'::jsonb, now(), now(), $2) RETURNING position", uuid.uuid4(), bytes(range(32)))
        assert held == 4
        await grow(store, 2, first=1)
        sealing = asyncio.create_task(sealer.seal(store, KEY))
        await asyncio.wait({sealing}, timeout=1.0)
        assert not sealing.done(), f"the sealer folded past an append in flight: {sealing}"
        assert await store.database.read(_rows, "SELECT count(*) FROM facta_tree_leaves") == [(0,)]
        await tx.commit()
        report = await asyncio.wait_for(sealing, 10)
        assert report.tree_size == 10
        leaves = await store.database.read(_rows, "SELECT position FROM facta_tree_leaves ORDER BY leaf_index")
        assert [int(p) for (p,) in leaves] == list(range(1, 11))
        assert (await sealer.verify_tree(store, KEY.public_key())).intact
    finally:
        await raw.close()
        if sealing is not None and not sealing.done():
            sealing.cancel()
            await asyncio.gather(sealing, return_exceptions=True)
        await store.close()
