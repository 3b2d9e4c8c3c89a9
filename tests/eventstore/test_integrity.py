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
