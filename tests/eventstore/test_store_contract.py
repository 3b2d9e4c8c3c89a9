"""The store's contract (architecture brief, items 1-5), run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from facta.domain import (
    DomainEvent,
    EventDecodeError,
    EventRegistry,
    EventRegistryError,
    PendingEvent,
    UnknownEventType,
)
from facta.eventstore import (
    ConcurrencyError,
    DuplicateEventError,
    EventStore,
    StoreError,
    StreamAppend,
    StreamTypeMismatch,
    schema,
)
from facta.eventstore.schema import events as events_table


class Noted(DomainEvent, name="test.noted"):
    text: str
    amount: int = 0


def noted(n: int) -> list[PendingEvent]:
    return [PendingEvent(Noted(text=f"note {i}", amount=i)) for i in range(n)]


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


async def count_rows(store: EventStore) -> int:
    return int(await store.database.read(lambda conn: conn.execute(text("SELECT count(*) FROM facta_events")).scalar_one()))


# -- 1. events are facts ------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE facta_events SET payload = payload WHERE position = {p}",
    "DELETE FROM facta_events WHERE position = {p}",
])
async def test_stored_events_cannot_be_updated_or_deleted(store: EventStore, statement: str) -> None:
    result = await store.append(sid(), "note", noted(1), expected_version=0)
    with pytest.raises(DBAPIError, match="append-only"):
        await store.database.write(lambda conn: conn.execute(text(statement.format(p=result.positions[0]))))
    assert await count_rows(store) == 1
    (record,) = await store.read_log()
    assert record.event == Noted(text="note 0", amount=0)


async def test_events_table_cannot_be_truncated_on_postgres(store: EventStore) -> None:
    if store.database.dialect != "postgresql":
        pytest.skip("SQLite has no TRUNCATE; its DELETE trigger covers `DELETE FROM` without WHERE")
    await store.append(sid(), "note", noted(2), expected_version=0)
    with pytest.raises(DBAPIError, match="append-only"):
        await store.database.write(lambda conn: conn.execute(text("TRUNCATE facta_events")))
    assert await count_rows(store) == 2


async def test_event_classes_are_frozen() -> None:
    event = Noted(text="x")
    with pytest.raises(Exception, match="frozen"):
        event.text = "y"  # type: ignore[misc]


# -- 2. optimistic concurrency ---------------------------------------------------------------


async def test_conflicting_append_names_stream_and_versions_and_writes_nothing(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "note", noted(3), expected_version=0)
    for expected in (0, 2, 4):
        with pytest.raises(ConcurrencyError) as info:
            await store.append(stream, "note", noted(2), expected_version=expected)
        assert (info.value.stream_id, info.value.expected, info.value.actual) == (stream, expected, 3)
        assert str(info.value) == (
            f"concurrency conflict on stream {stream!r}: expected version {expected}, actual version 3"
        )
    assert await count_rows(store) == 3
    assert await store.stream_version(stream) == 3


async def test_multi_stream_append_is_all_or_nothing(store: EventStore) -> None:
    a, b = sid(), sid()
    await store.append(b, "note", noted(1), expected_version=0)
    with pytest.raises(ConcurrencyError, match=b):
        await store.append_many([
            StreamAppend(a, "note", noted(2), 0),
            StreamAppend(b, "note", noted(2), 0),  # b is at 1
        ])
    assert await store.stream_version(a) == 0
    assert await count_rows(store) == 1
    results = await store.append_many([StreamAppend(a, "note", noted(2), 0), StreamAppend(b, "note", noted(2), 1)])
    assert [(r.first_version, r.last_version) for r in results] == [(1, 2), (2, 3)]
    log = await store.read_log()
    assert [(r.stream_id, r.version) for r in log] == [(b, 1), (a, 1), (a, 2), (b, 2), (b, 3)]
    assert [r.position for r in log] == sorted({r.position for r in log})


async def test_positions_follow_versions_within_every_stream_of_a_batch(store: EventStore) -> None:
    a, b, c = sid(), sid(), sid()
    await store.append(b, "note", noted(2), expected_version=0)
    results = await store.append_many([
        StreamAppend(a, "note", noted(5), 0),
        StreamAppend(b, "note", noted(3), 2),
        StreamAppend(c, "note", noted(4), 0),
    ])
    for result, stream in zip(results, (a, b, c), strict=True):
        records = await store.read_stream(stream)
        assert [r.position for r in records][-len(result.positions):] == list(result.positions)
        assert list(result.positions) == sorted(result.positions)
        assert [r.version for r in records] == list(range(1, len(records) + 1))
        assert [r.event.amount for r in records[-len(result.positions):]] == list(range(len(result.positions)))  # type: ignore[attr-defined]
    batch_positions = [p for r in results for p in r.positions]
    assert batch_positions == sorted(batch_positions), "a batch's events take positions in the order given"


async def test_concurrent_appends_at_the_same_version_let_exactly_one_win(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "note", noted(1), expected_version=0)
    outcomes = await asyncio.gather(
        *(store.append(stream, "note", noted(2), expected_version=1) for _ in range(6)), return_exceptions=True
    )
    wins = [o for o in outcomes if not isinstance(o, BaseException)]
    conflicts = [o for o in outcomes if isinstance(o, ConcurrencyError)]
    assert len(wins) == 1 and len(conflicts) == 5, outcomes
    assert all(c.actual == 3 for c in conflicts)
    assert [r.version for r in await store.read_stream(stream)] == [1, 2, 3]


async def test_expected_version_none_appends_at_the_end(store: EventStore) -> None:
    stream = sid()
    await asyncio.gather(*(store.append(stream, "note", noted(1), expected_version=None) for _ in range(5)))
    assert [r.version for r in await store.read_stream(stream)] == [1, 2, 3, 4, 5]


async def test_any_version_appends_keep_going_through_many_lost_races(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Losing the race for a stream's next version many times in a row (a hot stream,
    many writer processes) is not an error while other appends keep committing: the
    append tries again after a pause. (CI once saw five losses in a row on PostgreSQL.)"""
    from facta.eventstore import _appenders as appenders
    from facta.eventstore import store as store_module

    stream = sid()
    await store.append(stream, "note", noted(1), expected_version=None)
    losses = {"left": 25}

    def losing(real):  # type: ignore[no-untyped-def]
        def attempt(*args):  # type: ignore[no-untyped-def]
            if losses["left"] > 0:
                losses["left"] -= 1
                raise appenders.LostRace()
            return real(*args)
        return attempt

    # The dialects' appenders (facta.eventstore._appenders) call these by their module names.
    monkeypatch.setattr(appenders, "append_sqlite", losing(appenders.append_sqlite))
    real_pg = appenders.append_postgres

    async def losing_pg(conn, plan):  # type: ignore[no-untyped-def]
        if losses["left"] > 0:
            losses["left"] -= 1
            raise appenders.LostRace()
        return await real_pg(conn, plan)

    monkeypatch.setattr(appenders, "append_postgres", losing_pg)
    result = await store.append(stream, "note", noted(2), expected_version=None)
    assert losses["left"] == 0 and (result.first_version, result.last_version) == (2, 3)

    # Past the budget it is one line naming the streams, and nothing was written.
    monkeypatch.setattr(store_module, "_LOST_RACE_BUDGET", 0.05)
    losses["left"] = 10**9
    with pytest.raises(StoreError, match=rf"append to \['{stream}'\] lost \d+ races in a row") as failed:
        await store.append(stream, "note", noted(1), expected_version=None)
    assert "\n" not in str(failed.value)
    assert [r.version for r in await store.read_stream(stream)] == [1, 2, 3]


async def test_many_writers_appending_at_the_end_of_one_stream_all_succeed(store: EventStore) -> None:
    stream = sid()

    async def writer(n: int) -> None:
        for _ in range(n):
            await store.append(stream, "note", noted(1), expected_version=None)

    await asyncio.gather(*(writer(15) for _ in range(8)))
    assert [r.version for r in await store.read_stream(stream)] == list(range(1, 121))


async def test_a_stream_keeps_its_type(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "note", noted(1), expected_version=0)
    with pytest.raises(StreamTypeMismatch, match="is of stream type 'note', not 'other'"):
        await store.append(stream, "other", noted(1), expected_version=1)


@pytest.mark.parametrize("bad", [
    StreamAppend("", "note", noted(1), 0),
    StreamAppend("x", "", noted(1), 0),
    StreamAppend("x", "note", [], 0),
    StreamAppend("x", "note", noted(1), -1),
])
async def test_malformed_appends_are_refused_with_one_line(store: EventStore, bad: StreamAppend) -> None:
    with pytest.raises(StoreError) as info:
        await store.append_many([bad])
    assert "\n" not in str(info.value)
    assert await count_rows(store) == 0


async def test_unregistered_event_class_is_refused(store: EventStore) -> None:
    class Loose(DomainEvent):
        x: int

    with pytest.raises(EventRegistryError, match="Loose is not a registered event class"):
        await store.append(sid(), "note", [Loose(x=1)], expected_version=0)


# -- 3. idempotent appends ---------------------------------------------------------------------


async def test_retrying_an_append_returns_the_original_positions(store: EventStore) -> None:
    stream, events = sid(), noted(3)
    first = await store.append(stream, "note", events, expected_version=0)
    await store.append(sid(), "note", noted(2), expected_version=0)
    again = await store.append(stream, "note", events, expected_version=0)
    assert again == first
    also = await store.append(stream, "note", events, expected_version=None)
    assert also == first
    assert await count_rows(store) == 5


async def test_concurrent_identical_retries_write_once(store: EventStore) -> None:
    stream, events = sid(), noted(2)
    results = await asyncio.gather(*(store.append(stream, "note", events, expected_version=0) for _ in range(5)))
    assert len({r.positions for r in results}) == 1
    assert await count_rows(store) == 2


async def test_a_retry_that_differs_is_an_error_not_a_silent_no_op(store: EventStore) -> None:
    stream, events = sid(), noted(2)
    await store.append(stream, "note", events, expected_version=0)
    with pytest.raises(DuplicateEventError, match=str(events[0].event_id)):
        await store.append(stream, "note", [*events, *noted(1)], expected_version=0)
    with pytest.raises(DuplicateEventError):
        await store.append(sid(), "note", events, expected_version=0)
    assert await count_rows(store) == 2


# -- 4. the global log --------------------------------------------------------------------------


async def test_log_positions_increase_and_pages_cover_everything(store: EventStore) -> None:
    streams = [sid() for _ in range(5)]
    for round_ in range(4):
        for s in streams:
            await store.append(s, "note", noted(round_ + 1), expected_version=None)
    log = await store.read_log(0, limit=10_000)
    positions = [r.position for r in log]
    assert positions == sorted(positions) and len(set(positions)) == len(positions) == 50
    paged = [r async for r in store.iter_log(page_size=7)]
    assert [r.event_id for r in paged] == [r.event_id for r in log]
    assert [r.position for r in await store.read_log(after=positions[9], limit=3)] == positions[10:13]
    assert await store.head_position() == positions[-1]
    assert [r.position async for r in store.iter_log(after=positions[5], until=positions[8])] == positions[6:9]


async def test_log_filters_by_event_type_and_stream_type(store: EventStore) -> None:
    class Other(DomainEvent, name="test.other"):
        x: int

    await store.append(sid(), "note", noted(2), expected_version=0)
    await store.append(sid(), "thing", [Other(x=1)], expected_version=0)
    assert [r.event_type for r in await store.read_log(event_types=["test.other"])] == ["test.other"]
    assert [r.stream_type for r in await store.read_log(stream_types=["note"])] == ["note", "note"]


# -- 5. metadata ----------------------------------------------------------------------------------


async def test_every_event_records_its_metadata(store: EventStore) -> None:
    stream = sid()
    occurred = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    pending = PendingEvent(Noted(text="hello", amount=7), occurred_at=occurred)
    before = datetime.now(UTC) - timedelta(seconds=5)
    result = await store.append(
        stream, "note", [pending], expected_version=0, actor="alice", correlation_id="corr-1", causation_id="cause-1"
    )
    (record,) = await store.read_stream(stream)
    assert record.event_id == pending.event_id
    assert (record.stream_id, record.stream_type, record.version) == (stream, "note", 1)
    assert record.position == result.positions[0]
    assert (record.event_type, record.schema_version) == ("test.noted", 1)
    assert record.occurred_at == occurred
    assert record.recorded_at.tzinfo is not None and before <= record.recorded_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert record.recorded_at == result.recorded_at
    assert (record.actor, record.correlation_id, record.causation_id) == ("alice", "corr-1", "cause-1")
    assert record.event == Noted(text="hello", amount=7)


# -- stream reads ----------------------------------------------------------------------------------


async def test_read_stream_forwards_backwards_and_ranges(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "note", noted(10), expected_version=0)
    await store.append(sid(), "note", noted(3), expected_version=0)
    assert [r.version for r in await store.read_stream(stream)] == list(range(1, 11))
    assert [r.version for r in await store.read_stream(stream, backwards=True, limit=3)] == [10, 9, 8]
    assert [r.version for r in await store.read_stream(stream, from_version=4, to_version=6)] == [4, 5, 6]
    assert [r.version for r in await store.read_stream(stream, from_version=3, limit=2)] == [3, 4]
    assert await store.read_stream("missing") == []
    assert await store.stream_version("missing") == 0
    assert await store.stream_type(stream) == "note"


# -- decoding what is stored ----------------------------------------------------------------------


async def _insert_raw(store: EventStore, event_type: str, version: int, payload: str) -> int:
    row = {"event_id": uuid.uuid4(), "stream_id": sid(), "stream_type": "raw", "version": 1,
           "event_type": event_type, "schema_version": version, "payload": payload, "occurred_at": datetime.now(UTC)}
    return int(await store.database.write(
        lambda conn: conn.execute(events_table.insert().returning(events_table.c.position), row).scalar_one()
    ))


async def test_unknown_event_type_names_type_and_position(store: EventStore) -> None:
    position = await _insert_raw(store, "test.never_registered", 1, '{"a": 1}')
    (record,) = await store.read_log()
    with pytest.raises(UnknownEventType) as info:
        _ = record.event
    assert str(info.value) == f"unknown event type 'test.never_registered' at position {position}: register its class"


async def test_invalid_stored_payload_names_type_position_and_field(store: EventStore) -> None:
    position = await _insert_raw(store, "test.noted", 1, '{"text": 5}')
    (record,) = await store.read_log()
    with pytest.raises(EventDecodeError, match=rf"'test.noted' v1 at position {position}: text: Input should be"):
        _ = record.event


async def test_upcasting_chain_v1_to_v3_on_read(migrated_url: str) -> None:
    old, new = EventRegistry(), EventRegistry()

    class OpenedV1(DomainEvent, name="acct.opened", version=1, registry=old):
        owner: str

    class OpenedV3(DomainEvent, name="acct.opened", version=3, registry=new):
        owner_name: str
        currency: str
        overdraft_limit: int

    @new.upcaster("acct.opened", 1)
    def _v1_to_v2(data: dict[str, object]) -> dict[str, object]:
        return {"owner_name": data["owner"], "currency": "EUR"}

    @new.upcaster("acct.opened", 2)
    def _v2_to_v3(data: dict[str, object]) -> dict[str, object]:
        return {**data, "overdraft_limit": 0}

    async with await EventStore.open(migrated_url, registry=old) as writer:
        await writer.append("acct-1", "acct", [OpenedV1(owner="ada")], expected_version=0)
    async with await EventStore.open(migrated_url, registry=new) as reader:
        await reader.append("acct-2", "acct", [OpenedV3(owner_name="bob", currency="GBP", overdraft_limit=5)],
                            expected_version=0)
        first, second = await reader.read_log()
        assert first.schema_version == 1 and second.schema_version == 3
        assert first.event == OpenedV3(owner_name="ada", currency="EUR", overdraft_limit=0)
        assert second.event == OpenedV3(owner_name="bob", currency="GBP", overdraft_limit=5)
        del new._upcasters[("acct.opened", 2)]
        first._decoded = None
        with pytest.raises(EventDecodeError, match="no upcaster from v2 to v3"):
            _ = first.event


# -- the schema comes from the migrations ------------------------------------------------------------


async def test_core_tables_match_the_migrated_schema(store: EventStore) -> None:
    def columns(sync_conn: object) -> dict[str, list[str]]:
        insp = inspect(sync_conn)
        return {t: [c["name"] for c in insp.get_columns(t)] for t in schema.metadata.tables}

    actual = await store.database.read(columns)
    assert actual == {name: [c.name for c in table.c] for name, table in schema.metadata.tables.items()}
    assert set(schema.metadata.tables) >= {"facta_events", "facta_snapshots", "facta_relay_checkpoints",
                                           "facta_projections", "facta_projection_checkpoints"}
