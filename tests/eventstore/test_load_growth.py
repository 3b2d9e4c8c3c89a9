"""A load with a snapshot at the head of a stream does the same work whatever the stream's
length (issue 12, item 1: every per-load query is O(log n) in stream and log length).

No timing: each test loads an aggregate through ``Repository.get`` with a snapshot at the
head of its stream of 1,000 events, and again once the stream holds 8,000 (a neighbour
stream grows the log beside it), and counts the work the database did:

- SQLite: virtual machine instructions on every connection the load used (the event
  loop thread's own and the read threads' pooled ones), with
  ``set_progress_handler(cb, 1)``. A statement that walks the stream's rows runs its loop
  once per row: about 8x the instructions at 8,000 events.
- PostgreSQL: the statements the load sent (recorded on the driver connection), each run
  again under ``EXPLAIN (ANALYZE, FORMAT JSON)``: the rows every plan node produced or
  removed by a filter, on tables never analyzed.

The instrument tests at the end run a deliberately bad events query (``version + 0``,
which no index serves) through the same counters and see it grow, so the load tests can
fail.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event

from facta.domain import Aggregate, AggregateState, DomainEvent, applies
from facta.eventstore import EventStore, Repository
from facta.eventstore import _loads as loads

from ..conftest import migrate

SHORT, LONG = 1_000, 8_000
# Instructions an O(log n) load may gain between the two lengths (a deeper b-tree costs
# no extra instructions; the bad query gains about 7,000 x 10).
SLACK = 50


class Tocked(DomainEvent, name="test.load_growth.tocked"):
    n: int


class Clock(Aggregate, stream_type="load_growth_clock"):
    class State(AggregateState):
        ticks: int = 0

    def tock(self, n: int) -> None:
        self._emit(Tocked(n=n))

    @applies(Tocked)
    def _tocked(self, event: Tocked) -> None:
        self.state.ticks += 1


async def _grow_and_snapshot(store: EventStore, to: int) -> None:
    """Grow stream "long" to ``to`` events in 1,000-event saves (a neighbour stream with
    it) and store a snapshot at its head."""
    repo = Repository(store, snapshot_every=None)
    have = await store.stream_version("long")
    clock = await repo.get(Clock, "long") if have else Clock("long")
    neighbour = await repo.get(Clock, "long-neighbour") if have else Clock("long-neighbour")
    while clock.version < to:
        for i in range(min(1_000, to - clock.version)):
            clock.tock(i)
            neighbour.tock(i)
        await repo.save(clock, neighbour)
    await repo.snapshot(clock)


async def _check_load(store: EventStore, expected: int) -> None:
    loaded = await Repository(store).get(Clock, "long")
    assert (loaded.version, loaded.state.ticks) == (expected, expected)


# -- SQLite -----------------------------------------------------------------------------------


class Steps:
    """Counts VM instructions on every SQLite connection a store reads with while
    counting: the stream reader's own (event loop thread) and the read pool's."""

    def __init__(self, store: EventStore) -> None:
        self.count = 0
        self.on = False
        reader = store.database._sync_reader  # the read threads' pooled connections
        assert reader is not None
        event.listen(reader, "checkout", lambda conn, *_: self._watch(conn))
        event.listen(reader, "checkin", lambda conn, *_: conn.set_progress_handler(None, 1))
        self.inline = store._streams._inline  # type: ignore[attr-defined]

    def _tick(self) -> int:
        self.count += 1
        return 0

    def _watch(self, conn: sqlite3.Connection) -> None:
        if self.on:
            conn.set_progress_handler(self._tick, 1)

    async def of(self, work: Callable[[], Any]) -> int:
        self.count, self.on = 0, True
        inline = self.inline()
        inline.set_progress_handler(self._tick, 1)
        try:
            await work()
        finally:
            inline.set_progress_handler(None, 1)
            self.on = False
        return self.count


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[EventStore]:
    await migrate(sqlite_url)
    store = await EventStore.open(sqlite_url)
    try:
        yield store
    finally:
        await store.close()


async def test_a_sqlite_load_from_a_snapshot_at_the_head_does_the_same_work_at_1000_and_8000_events(
    sqlite_store: EventStore,
) -> None:
    store = sqlite_store
    steps = Steps(store)
    await _grow_and_snapshot(store, SHORT)
    await _check_load(store, SHORT)  # warm: the connection's first statement reads the schema
    await store.latest_snapshot("long")
    short = await steps.of(lambda: _check_load(store, SHORT))
    short_snapshot = await steps.of(lambda: store.latest_snapshot("long"))
    await _grow_and_snapshot(store, LONG)
    long = await steps.of(lambda: _check_load(store, LONG))
    long_snapshot = await steps.of(lambda: store.latest_snapshot("long"))
    assert 0 < short and long <= short + SLACK, (short, long)
    assert 0 < short_snapshot and long_snapshot <= short_snapshot + SLACK, (short_snapshot, long_snapshot)


def _sqlite_steps(path: str, sql: str, args: tuple[Any, ...]) -> int:
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        raw.set_progress_handler(tick, 1)
        raw.execute(sql, args).fetchall()
        return count[0]
    finally:
        raw.close()


# The events query with its index defeated: every row of the stream is read and filtered.
_BAD_SQLITE = loads._SQLITE_STREAM.replace("version >= ?", "version + 0 >= ?")


async def test_the_sqlite_instrument_sees_a_query_that_reads_the_whole_stream(sqlite_store: EventStore) -> None:
    path = sqlite_store.database.url.database or ""
    await _grow_and_snapshot(sqlite_store, SHORT)
    good_short = _sqlite_steps(path, loads._SQLITE_STREAM, ("long", SHORT, SHORT, -1))
    bad_short = _sqlite_steps(path, _BAD_SQLITE, ("long", SHORT, SHORT, -1))
    await _grow_and_snapshot(sqlite_store, LONG)
    good_long = _sqlite_steps(path, loads._SQLITE_STREAM, ("long", LONG, LONG, -1))
    bad_long = _sqlite_steps(path, _BAD_SQLITE, ("long", LONG, LONG, -1))
    assert good_long <= good_short + SLACK, (good_short, good_long)
    assert bad_long > bad_short + 100 * SLACK, (bad_short, bad_long)


# -- PostgreSQL -------------------------------------------------------------------------------


def _rows_touched(plan: dict[str, Any]) -> int:
    """Rows every node of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan produced or removed."""
    loops = plan.get("Actual Loops", 1)
    own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
           + plan.get("Rows Removed by Index Recheck", 0)) * loops
    return int(own + sum(_rows_touched(child) for child in plan.get("Plans", [])))


class Recording:
    """The asyncpg connection, recording every statement sent through it."""

    def __init__(self, conn: Any, sent: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._conn, self._sent = conn, sent

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute"):
            return method

        async def recorded(sql: str, *args: Any, **kwargs: Any) -> Any:
            self._sent.append((sql, args))
            return await method(sql, *args, **kwargs)

        return recorded


def _record(store: EventStore) -> list[tuple[str, tuple[Any, ...]]]:
    sent: list[tuple[str, tuple[Any, ...]]] = []
    original = store.database.driver_connection

    @asynccontextmanager
    async def driver_connection() -> AsyncIterator[Any]:
        async with original() as conn:
            yield Recording(conn, sent)

    store.database.driver_connection = driver_connection  # type: ignore[method-assign]
    return sent


async def _explained_rows(store: EventStore, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
    total = 0
    async with store.database.driver_connection() as conn:
        for sql, args in statements:
            explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            document = json.loads(explained) if isinstance(explained, str) else explained
            total += _rows_touched(document[0]["Plan"])
    return total


async def _pg_load_rows(store: EventStore, sent: list[tuple[str, tuple[Any, ...]]], expected: int) -> int:
    sent.clear()
    await _check_load(store, expected)
    statements = list(sent)
    assert statements, "the load sent its statements through the driver connection"
    assert all(not sql.lstrip().upper().startswith("EXPLAIN") for sql, _ in statements)
    sent.clear()
    return await _explained_rows(store, statements)


async def test_a_postgres_load_from_a_snapshot_at_the_head_touches_the_same_rows_at_1000_and_8000_events(
    postgres_url: str,
) -> None:
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    try:
        await _grow_and_snapshot(store, SHORT)
        sent = _record(store)
        short = await _pg_load_rows(store, sent, SHORT)
        await _grow_and_snapshot(store, LONG)
        long = await _pg_load_rows(store, sent, LONG)
        # The snapshot row, the snapshot's own event, the union and its sort: a handful.
        assert 0 < short <= 12 and long <= short, (short, long)
    finally:
        await store.close()


async def test_the_postgres_instrument_sees_a_query_that_reads_the_whole_stream(postgres_url: str) -> None:
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    bad = loads._PG_FROM_SNAPSHOT.replace("AND version >= coalesce", "AND version + 0 >= coalesce")
    args = ("long", loads.LAST_VERSION, "load_growth_clock.state/v1")
    try:
        await _grow_and_snapshot(store, SHORT)
        good_short = await _explained_rows(store, [(loads._PG_FROM_SNAPSHOT, args)])
        bad_short = await _explained_rows(store, [(bad, args)])
        await _grow_and_snapshot(store, LONG)
        good_long = await _explained_rows(store, [(loads._PG_FROM_SNAPSHOT, args)])
        bad_long = await _explained_rows(store, [(bad, args)])
        assert good_long <= good_short <= 12, (good_short, good_long)
        assert bad_long >= bad_short + 6_000, (bad_short, bad_long)
    finally:
        await store.close()
