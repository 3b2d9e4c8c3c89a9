"""The store's parts (issue 11, item 4), on SQLite and PostgreSQL: the one row decoder
(``rows.records_from_rows``), the public query audit uses (``EventStore.find_events``),
and that nothing outside the store builds records from rows or reaches into it."""

from __future__ import annotations

import ast
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from facta.domain import DomainEvent, PendingEvent
from facta.eventstore import EventStore, InvalidValue, RecordedEvent
from facta.eventstore._rows import LOG_COLUMNS, records_from_rows, stored_time
from facta.eventstore.schema import events

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ["domain", "eventstore", "projections", "replay", "facta_pkg", "migrations"]


class Marked(DomainEvent, name="test.parts.marked"):
    n: int


def fields(record: RecordedEvent) -> tuple[object, ...]:
    return tuple(getattr(record, name) for name in LOG_COLUMNS)


async def _append(store: EventStore, stream: str, count: int, *, actor: str | None = None) -> list[int]:
    result = await store.append(
        stream, "marker", [PendingEvent(Marked(n=i)) for i in range(count)], expected_version=None, actor=actor,
    )
    return list(result.positions)


def test_log_columns_are_the_records_fields_in_order() -> None:
    assert LOG_COLUMNS == (
        "position", "event_id", "stream_id", "stream_type", "version", "event_type", "schema_version", "payload",
        "occurred_at", "recorded_at", "actor", "correlation_id", "causation_id", "traceparent", "tracestate",
    )


def test_a_sqlite_driver_row_gets_a_uuid_and_aware_utc_times() -> None:
    event_id = uuid.UUID("0123456789abcdef0123456789abcdef")
    row = (7, event_id.hex, "s-1", "marker", 2, "test.parts.marked", 1, '{"n":3}',
           "2026-11-22 11:00:00.123456", "2026-11-22 11:00:01.000001", None, "c-1", None,
           "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None)
    (record,) = records_from_rows([row])
    assert fields(record) == (
        7, event_id, "s-1", "marker", 2, "test.parts.marked", 1, '{"n":3}',
        datetime(2026, 11, 22, 11, 0, 0, 123456, tzinfo=UTC), datetime(2026, 11, 22, 11, 0, 1, 1, tzinfo=UTC),
        None, "c-1", None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None,
    )
    assert type(record.event_id) is uuid.UUID and record.occurred_at.tzinfo is UTC
    assert record.event == Marked(n=3)


def test_stored_time_reads_text_naive_and_aware_times_as_utc() -> None:
    moment = datetime(2026, 11, 22, 11, 0, 0, 5, tzinfo=UTC)
    assert stored_time("2026-11-22 11:00:00.000005") == moment
    assert stored_time(moment.replace(tzinfo=None)) == moment
    assert stored_time(moment.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+05:30").tzinfo)) == moment


async def test_driver_rows_and_read_log_make_the_same_records(store: EventStore) -> None:
    """read_log_rows (the relay's driver rows: hex text on SQLite) decoded by the one
    decoder equal what read_log returns, field by field."""
    await _append(store, f"s-{uuid.uuid4().hex[:8]}", 3, actor="ops")
    rows = await store.read_log_rows(0, 10)
    records = await store.read_log(0, 10)
    assert [fields(r) for r in records_from_rows(rows, store.registry)] == [fields(r) for r in records]
    assert all(isinstance(r.event_id, uuid.UUID) and r.recorded_at.tzinfo is not None for r in records)


async def test_find_events_filters_orders_and_limits(store: EventStore) -> None:
    stream = f"s-{uuid.uuid4().hex[:8]}"
    positions = await _append(store, stream, 5, actor="ops")
    await _append(store, f"s-{uuid.uuid4().hex[:8]}", 2)
    c = events.c
    found = await store.find_events(c.stream_id == stream, c.version >= 2, order_by=c.version.desc(), limit=3)
    assert [(r.stream_id, r.version, r.position, r.actor) for r in found] == [
        (stream, 5, positions[4], "ops"), (stream, 4, positions[3], "ops"), (stream, 3, positions[2], "ops"),
    ]
    assert [r.event for r in found] == [Marked(n=4), Marked(n=3), Marked(n=2)]
    everything = await store.find_events(order_by=[c.position])
    assert [r.position for r in everything] == sorted(r.position for r in everything) and len(everything) == 7
    assert await store.find_events(c.actor == "nobody") == []


async def test_find_events_walks_position_ranges_in_the_order_given_until_the_limit(store: EventStore) -> None:
    positions = await _append(store, f"s-{uuid.uuid4().hex[:8]}", 10)
    p = positions
    c = events.c
    ranges = [(p[6], p[8]), (p[0], p[1]), (p[3], p[3])]
    found = await store.find_events(order_by=c.position, ranges=ranges)
    assert [r.position for r in found] == [p[6], p[7], p[8], p[0], p[1], p[3]]
    found = await store.find_events(order_by=c.position.desc(), ranges=ranges, limit=4)
    assert [r.position for r in found] == [p[8], p[7], p[6], p[1]]
    assert await store.find_events(ranges=[]) == []


async def test_find_events_settled_shows_what_a_log_reader_shows(store: EventStore) -> None:
    positions = await _append(store, f"s-{uuid.uuid4().hex[:8]}", 3)
    found = await store.find_events(order_by=events.c.position, settled=True)
    assert [r.position for r in found] == positions == [r.position for r in await store.read_log()]


@pytest.mark.parametrize("limit", [0, -1])
async def test_find_events_refuses_a_limit_below_one(store: EventStore, limit: int) -> None:
    with pytest.raises(InvalidValue, match="limit") as refused:
        await store.find_events(limit=limit)
    assert "\n" not in str(refused.value) and str(limit) in str(refused.value)


@pytest.mark.parametrize("bound", [2**63, "7", 1.5])
async def test_find_events_refuses_a_range_bound_that_is_no_position(store: EventStore, bound: object) -> None:
    with pytest.raises(InvalidValue, match="ranges") as refused:
        await store.find_events(ranges=[(1, bound)])  # type: ignore[list-item]
    assert "\n" not in str(refused.value) and repr(bound) in str(refused.value)


def _library_files() -> list[Path]:
    return [path for folder in LIBRARY for path in sorted((ROOT / folder).rglob("*.py"))]


def test_only_the_row_decoder_builds_records_from_rows() -> None:
    """RecordedEvent(...) is called in eventstore/_rows.py (rows) and, for records rebuilt
    from Kafka headers, in the Kafka record codec (a module named for Kafka or codecs);
    nowhere else in the library."""
    builders = set()
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "RecordedEvent":
                builders.add(path.relative_to(ROOT).as_posix())
    assert "eventstore/_rows.py" in builders
    assert {b for b in builders if "kafka" not in b and "codec" not in b} == {"eventstore/_rows.py"}, builders


def test_nothing_outside_the_store_module_reaches_into_a_store() -> None:
    """No library module but eventstore/store.py reads or sets a private attribute of a
    name ``store`` (or ``self.store``)."""
    found = []
    for path in _library_files():
        if path.relative_to(ROOT).as_posix() == "eventstore/store.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name in ("store", "_store"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}.{node.attr}")
    assert found == []


def test_pending_events_gives_fresh_version_4_ids_and_keeps_pending_events_as_given() -> None:
    from facta.eventstore.records import pending_events

    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    kept = PendingEvent(Marked(n=-1), uuid.UUID("00000000-0000-0000-0000-000000000001"), datetime(2020, 1, 1, tzinfo=UTC))
    given = [Marked(n=0), kept, *(Marked(n=i) for i in range(1, 2000))]
    out = pending_events(given, at)
    assert [p.event for p in out] == [given[0], kept.event, *given[2:]]
    assert out[1] is kept
    fresh = [p for p in out if p is not kept]
    assert all(p.occurred_at is at for p in fresh)
    ids = [p.event_id for p in fresh]
    assert len(set(ids)) == len(ids) == 2000
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    # Each id is the one uuid.UUID reads back from its text (no stray bits outside 128).
    assert all(uuid.UUID(str(i)) == i and 0 <= i.int < 1 << 128 for i in ids)
    # Random bits vary everywhere outside the version and variant fields.
    varying = 0
    for i in ids[1:]:
        varying |= i.int ^ ids[0].int
    assert varying == ((1 << 128) - 1) & ~((0xF000 << 64) | (0xC000 << 48))
    assert pending_events([kept], at) == [kept] and pending_events([], at) == []
