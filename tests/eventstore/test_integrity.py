"""Issue 14, hash chains (revision 0010), on SQLite and PostgreSQL: every event and
snapshot is hashed at append exactly as :mod:`facta.eventstore.integrity` defines; an
untampered store verifies; each kind of tampering from a raw connection (trigger dropped)
is detected and located; a store upgraded from revision 0009 verifies after
``seal_backfill``; the permanent-history triggers allow only that backfill."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from facta import migrations
from facta.domain import DomainEvent, PendingEvent
from facta.eventstore import ByteEvent, EventStore, StreamAppend
from facta.eventstore import integrity
from facta.eventstore.records import Snapshot

from ..conftest import migrate


class Noted(DomainEvent, name="chain.noted"):
    text: str
    amount: int = 0
    ratio: float = 0.5
    tags: dict[str, int] = {}


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def noted(n: int, prefix: str = "note") -> list[PendingEvent]:
    # Keys jsonb reorders (longer after shorter), a float, a non-ASCII text.
    return [PendingEvent(Noted(text=f"{prefix} {i} café", amount=i, ratio=i / 3, tags={"zz": i, "a": 1}))
            for i in range(n)]


async def rows(store: EventStore, sql: str, **params: Any) -> list[Any]:
    return await store.database.read(lambda conn: list(conn.execute(text(sql), params)))


async def raw(store: EventStore, *statements: str) -> None:
    """Statements from a raw connection, in one transaction (the tamperer's)."""
    def run(conn: Any) -> None:
        for sql in statements:
            conn.execute(text(sql))
    await store.database.write(run)


def postgres(store: EventStore) -> bool:
    return store.database.dialect != "sqlite"


async def drop_triggers(store: EventStore) -> None:
    if postgres(store):
        await raw(store, "ALTER TABLE facta_events DISABLE TRIGGER USER",
                  "ALTER TABLE facta_snapshots DISABLE TRIGGER USER")
    else:
        await raw(store, "DROP TRIGGER facta_events_no_update", "DROP TRIGGER facta_events_no_delete",
                  "DROP TRIGGER facta_events_no_replace", "DROP TRIGGER facta_snapshots_no_update")


async def filled(store: EventStore) -> dict[str, Any]:
    """A store with facta events on three streams (one multi-stream append, metadata),
    byte events, a snapshot and a byte snapshot."""
    a, b, c = sid(), sid(), sid()
    await store.append(a, "note", noted(3), expected_version=0, actor="ana", correlation_id="corr-1")
    await store.append_many([StreamAppend(a, "note", noted(2, "more"), 3), StreamAppend(b, "note", noted(4), 0)],
                            causation_id="cause-1")
    await store.append(c, "note", noted(1), expected_version=0)
    await store.save_snapshot(Snapshot(a, "note", 5, '{"count": 5, "b": [1, 2.5]}', "note.state/v1"))
    e = sid()
    await store.append_bytes("acct", [ByteEvent(e, 0, "Opened", b'{"z": 1, "a": -2}'),
                                      ByteEvent(e, 1, "Raw", b"\x00\xff not json")])
    await store.append_bytes("acct", [ByteEvent(e, 2, "Closed", b'{"ok": true}')])
    await store.append_byte_snapshots("acct", [ByteEvent(e, 2, "acct.state", b"\x01state")])
    return {"a": a, "b": b, "c": c, "e": e}


async def test_hashes_at_append_are_the_modules_definition(store: EventStore) -> None:
    names = await filled(store)
    payload = "payload::text" if postgres(store) else "payload"
    found = await rows(store, f"SELECT event_id, stream_id, stream_type, version, event_type, schema_version, {payload},"
                              " payload_bytes, occurred_at, actor, correlation_id, causation_id, event_hash"
                              " FROM facta_events ORDER BY position")
    assert len(found) == 13
    last: dict[str, bytes] = {}
    for r in found:
        occurred = r[8] if isinstance(r[8], datetime) else datetime.fromisoformat(r[8]).replace(tzinfo=UTC)
        digest = integrity.content_digest(
            event_id=r[0] if isinstance(r[0], uuid.UUID) else uuid.UUID(hex=r[0]), stream_id=r[1], stream_type=r[2],
            version=r[3], event_type=r[4], schema_version=r[5], payload=None if r[7] is not None else r[6],
            payload_bytes=None if r[7] is None else bytes(r[7]), occurred_at=occurred,
            actor=r[9], correlation_id=r[10], causation_id=r[11])
        expected = integrity.event_hash(last.get(r[1]), digest)
        assert bytes(r[12]) == expected, r
        last[r[1]] = expected
    snaps = await rows(store, "SELECT stream_id, version, stream_type, state_schema,"
                              f" {'state::text' if postgres(store) else 'state'}, state_bytes, state_hash"
                              " FROM facta_snapshots ORDER BY stream_id")
    assert len(snaps) == 2
    for s in snaps:
        assert bytes(s[6]) == integrity.state_hash(stream_id=s[0], version=s[1], stream_type=s[2], state_schema=s[3],
                                                   state=None if s[5] is not None else s[4],
                                                   state_bytes=None if s[5] is None else bytes(s[5]))
    assert names["a"] in last


async def test_an_untampered_store_verifies(store: EventStore) -> None:
    await filled(store)
    seen: list[int] = []
    report = await integrity.verify(store, progress=seen.append, page_size=4)
    assert report == integrity.VerifyReport(events=13, streams=4, snapshots=2, differences=0, first=None)
    assert report.intact
    assert seen == [4, 8, 12, 13]


async def position_of(store: EventStore, stream_id: str, version: int) -> int:
    found = await rows(store, "SELECT position FROM facta_events WHERE stream_id = :s AND version = :v",
                       s=stream_id, v=version)
    return int(found[0][0])


async def first_difference(store: EventStore) -> integrity.Difference:
    report = await integrity.verify(store)
    assert not report.intact and report.first is not None
    return report.first


def payload_sql(store: EventStore, expression: str) -> str:
    """``expression`` over the payload's text, stored back as the column's type."""
    return f"({expression.replace('payload', 'payload::text')})::jsonb" if postgres(store) else expression


async def test_one_changed_byte_in_a_payload_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    at = await position_of(store, n["a"], 2)
    changed = payload_sql(store, "replace(payload, 'note 1', 'note 7')")
    await raw(store, f"UPDATE facta_events SET payload = {changed} WHERE position = {at}")
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (at, n["a"], 2, "hash")
    assert "content" in first.what


async def test_a_changed_byte_in_byte_event_bytes_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    at = await position_of(store, n["e"], 1)
    flip = "'\\x01ff'::bytea || substring(payload_bytes from 3)" if postgres(store) else "X'01ff' || substr(payload_bytes, 3)"
    await raw(store, f"UPDATE facta_events SET payload_bytes = {flip} WHERE position = {at}")
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (at, n["e"], 1, "hash")


async def test_a_changed_actor_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    at = await position_of(store, n["a"], 3)
    await raw(store, f"UPDATE facta_events SET actor = 'eve' WHERE position = {at}")
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (at, n["a"], 3, "hash")


async def test_a_swapped_pair_of_positions_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    p4, p5 = await position_of(store, n["a"], 4), await position_of(store, n["a"], 5)
    await raw(store, f"UPDATE facta_events SET position = -1 WHERE position = {p4}",
              f"UPDATE facta_events SET position = {p4} WHERE position = {p5}",
              f"UPDATE facta_events SET position = {p5} WHERE position = -1")
    report = await integrity.verify(store)
    assert report.first is not None
    assert (report.first.position, report.first.stream_id, report.first.version) == (p4, n["a"], 5)
    assert "version 4" in report.first.what
    assert report.differences == 2  # and version 4 after version 5, at p5


async def test_a_swapped_pair_of_versions_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    p1 = await position_of(store, n["b"], 1)
    await raw(store, f"UPDATE facta_events SET version = 1000 WHERE stream_id = '{n['b']}' AND version = 1",
              f"UPDATE facta_events SET version = 1 WHERE stream_id = '{n['b']}' AND version = 2",
              f"UPDATE facta_events SET version = 2 WHERE stream_id = '{n['b']}' AND version = 1000")
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (p1, n["b"], 2, "hash")


async def test_a_deleted_event_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    at = await position_of(store, n["b"], 2)
    await raw(store, f"DELETE FROM facta_events WHERE position = {at}")
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (at + 1, n["b"], 3, "gap")
    assert "version 2 is missing" in first.what


async def test_an_inserted_event_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    # A copy of stream c's first event as its version 2, with a fresh id and c's own hash.
    eid = uuid.uuid4()
    ident = f"'{eid}'" if postgres(store) else f"'{eid.hex}'"
    await raw(store, "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type,"
                     " schema_version, payload, occurred_at, recorded_at, event_hash)"
                     f" SELECT {ident}, stream_id, stream_type, 2, event_type, schema_version, payload, occurred_at,"
                     f" recorded_at, event_hash FROM facta_events WHERE stream_id = '{n['c']}' AND version = 1")
    at = await position_of(store, n["c"], 2)
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (at, n["c"], 2, "hash")


async def test_an_inserted_event_without_a_hash_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    eid = uuid.uuid4()
    ident = f"'{eid}'" if postgres(store) else f"'{eid.hex}'"
    await raw(store, "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type,"
                     " schema_version, payload, occurred_at, recorded_at)"
                     f" SELECT {ident}, stream_id, stream_type, 6, event_type, schema_version, payload, occurred_at,"
                     f" recorded_at FROM facta_events WHERE stream_id = '{n['a']}' AND version = 5")
    at = await position_of(store, n["a"], 6)
    first = await first_difference(store)
    assert (first.position, first.stream_id, first.version, first.kind) == (at, n["a"], 6, "missing")


async def test_a_changed_snapshot_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    changed = ("(replace(state::text, '5', '6'))::jsonb" if postgres(store) else "replace(state, '5', '6')")
    await raw(store, f"UPDATE facta_snapshots SET state = {changed} WHERE stream_id = '{n['a']}'")
    report = await integrity.verify(store)
    assert report.differences == 1 and report.first is not None
    assert (report.first.position, report.first.stream_id, report.first.version, report.first.kind) == (
        None, n["a"], 5, "snapshot")


async def test_a_changed_byte_snapshot_is_found(store: EventStore) -> None:
    n = await filled(store)
    await drop_triggers(store)
    other = "'\\x02'::bytea" if postgres(store) else "X'02'"
    await raw(store, f"UPDATE facta_snapshots SET state_bytes = {other} WHERE stream_id = '{n['e']}'")
    first = await first_difference(store)
    assert (first.stream_id, first.version, first.kind) == (n["e"], 2, "snapshot")


# -- the one UPDATE the permanent-history triggers allow ---------------------------------------


def blob(store: EventStore, data: bytes) -> str:
    return f"'\\x{data.hex()}'::bytea" if postgres(store) else f"X'{data.hex()}'"


async def refused(store: EventStore, sql: str) -> str:
    with pytest.raises(Exception) as caught:
        await raw(store, sql)
    message = str(caught.value)
    assert "append-only" in message or "keeps a snapshot" in message, message
    return message


async def test_only_setting_a_null_hash_once_is_allowed(store: EventStore) -> None:
    n = await filled(store)
    eid = uuid.uuid4()
    ident = f"'{eid}'" if postgres(store) else f"'{eid.hex}'"
    # An event without a hash, as revision 0009 stored them (inserts are not refused).
    await raw(store, "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type,"
                     " schema_version, payload, occurred_at, recorded_at)"
                     f" SELECT {ident}, 'old', stream_type, 1, event_type, schema_version, payload, occurred_at,"
                     f" recorded_at FROM facta_events WHERE stream_id = '{n['c']}'")
    where = "WHERE stream_id = 'old'"
    h1, h2 = bytes(range(32)), bytes(range(1, 33))
    await refused(store, f"UPDATE facta_events SET event_hash = {blob(store, h1[:31])} {where}")  # not 32 bytes
    await refused(store, f"UPDATE facta_events SET event_hash = {blob(store, h1)}, actor = 'eve' {where}")
    await refused(store, f"UPDATE facta_events SET event_hash = {blob(store, h1)}, version = 2 {where}")
    await refused(store, f"UPDATE facta_events SET event_hash = {blob(store, h1)}, position = position + 100 {where}")
    await raw(store, f"UPDATE facta_events SET event_hash = {blob(store, h1)} {where}")  # the backfill
    assert bytes((await rows(store, f"SELECT event_hash FROM facta_events {where}"))[0][0]) == h1
    await refused(store, f"UPDATE facta_events SET event_hash = {blob(store, h2)} {where}")  # once only
    await refused(store, f"UPDATE facta_events SET event_hash = NULL {where}")
    await refused(store, f"UPDATE facta_events SET actor = 'eve' WHERE stream_id = '{n['a']}'")
    await refused(store, f"DELETE FROM facta_events {where}")
    # Snapshots: a stored hash cannot be changed or removed, nor the state.
    await refused(store, f"UPDATE facta_snapshots SET state_hash = {blob(store, h2)} WHERE stream_id = '{n['a']}'")
    await refused(store, f"UPDATE facta_snapshots SET state_hash = NULL WHERE stream_id = '{n['a']}'")
    await refused(store, f"UPDATE facta_snapshots SET stream_type = 'x' WHERE stream_id = '{n['a']}'")
    assert (await rows(store, f"SELECT count(*) FROM facta_events {where}"))[0][0] == 1


# -- a store upgraded from revision 0009 --------------------------------------------------------


async def test_a_store_upgraded_from_0009_verifies_once_sealed(backend_url: str) -> None:
    from facta.eventstore import Database

    await migrations.upgrade_url(backend_url, "0009")
    database = Database.create(backend_url)
    pg = database.dialect != "sqlite"
    at = "2026-11-01 10:00:00.123456" + ("+00" if pg else "")
    ids = [uuid.uuid4() for _ in range(5)]
    ident = [f"'{i}'" if pg else f"'{i.hex}'" for i in ids]
    payload = "'{\"b\": 1, \"a\": [1.5, \"x\"]}'"

    two_bytes = "'\\x00ff'::bytea" if pg else "X'00ff'"

    def old_rows(conn: Any) -> None:
        # Stream "old" (versions 1-3), stream "gone" (1), a byte event, a snapshot: as 0009 wrote them.
        for k, (stream, version) in enumerate([("old", 1), ("gone", 1), ("old", 2), ("old", 3)]):
            actor = "'ana'" if k == 0 else "NULL"
            conn.execute(text(
                "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
                f" payload, occurred_at, recorded_at, actor) VALUES ({ident[k]}, '{stream}', 'note', {version},"
                f" 'chain.noted', 1, {payload}, '{at}', '{at}', {actor})"))
        conn.execute(text(
            "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
            f" payload, occurred_at, recorded_at, payload_bytes) VALUES ({ident[4]}, 'bytes', 'acct', 0, 'Raw', 1,"
            f" '{{}}', '{at}', '{at}', {two_bytes})"))
        conn.execute(text(
            "INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
            f" VALUES ('old', 3, 'note', '{{\"n\": 3}}', 'note.state/v1', '{at}')"))

    try:
        await database.write(old_rows)
    finally:
        await database.dispose()
    await migrations.upgrade_url(backend_url)
    store = await EventStore.open(backend_url)
    try:
        # Appended after the upgrade, before the seal: "old" v4 chains from ZERO (v3 had no hash).
        await store.append("old", "note", noted(2), expected_version=3)
        await store.append("new", "note", noted(1), expected_version=0)
        report = await integrity.verify(store)
        assert report.differences == 6  # five events and the snapshot
        assert report.first is not None and (report.first.position, report.first.stream_id, report.first.kind) == (
            1, "old", "unsealed")
        assert await integrity.seal_backfill(store) == integrity.SealReport(events=5, snapshots=1)
        assert await integrity.verify(store) == integrity.VerifyReport(
            events=8, streams=4, snapshots=1, differences=0, first=None)
        assert await integrity.seal_backfill(store) == integrity.SealReport(events=0, snapshots=0)
        # The seam is only for events stored before 0010: a hash above the start that
        # chains from ZERO in the middle of a stream is a difference.
        await store.append("old", "note", noted(1), expected_version=5)
        assert (await integrity.verify(store)).intact
        # Once sealed, the backfilled hashes are as permanent as the rest.
        await refused(store, f"UPDATE facta_events SET event_hash = {blob(store, bytes(32))} WHERE position = 1")
        await refused(store, f"UPDATE facta_snapshots SET state_hash = {blob(store, bytes(32))} WHERE stream_id = 'old'")
    finally:
        await store.close()


async def test_seal_leaves_a_missing_hash_above_the_start_alone(store: EventStore) -> None:
    n = await filled(store)
    eid = uuid.uuid4()
    ident = f"'{eid}'" if postgres(store) else f"'{eid.hex}'"
    await raw(store, "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type,"
                     " schema_version, payload, occurred_at, recorded_at)"
                     f" SELECT {ident}, stream_id, stream_type, 2, event_type, schema_version, payload, occurred_at,"
                     f" recorded_at FROM facta_events WHERE stream_id = '{n['c']}' AND version = 1")
    assert await integrity.seal_backfill(store) == integrity.SealReport(events=0, snapshots=0)
    first = await first_difference(store)
    assert (first.stream_id, first.version, first.kind) == (n["c"], 2, "missing")
