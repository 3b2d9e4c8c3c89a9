"""Per-append and per-load head queries stay O(log n) as a stream grows (issue 12, item 1).

No timing: each test counts the work the database does for one call on a stream of
1,000 events and again once the same stream holds 8,000 (with other streams in the log
beside it), and requires the two counts to stay within a small constant of each other.

- SQLite: virtual machine instructions, counted with ``set_progress_handler(cb, 1)`` on
  the connection that runs the statement (the store's own writer connection for an
  append). A query that reads every row of the stream runs its loop once per row, so its
  count grows about 8x between the two lengths; an index descent is one instruction
  whatever the tree's depth.
- PostgreSQL: the rows each plan node produced and removed by a filter, from
  ``EXPLAIN (ANALYZE, FORMAT JSON)`` on a table never analyzed.

The old head queries (``max(version), min(stream_type) ... WHERE stream_id = ?``, two
aggregates: no min/max shortcut) fail the three counting tests: 9,166 against 72,166
instructions for an append, 9,225 against 72,225 for the head reads, 1,001 and 16,001
rows on PostgreSQL. The plan test guards the index descent itself (no scan, no sort);
the old query passed it too, as it searched the same index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.dialects import postgresql, sqlite

from facta.domain import DomainEvent
from facta.eventstore import EventStore, StreamAppend
from facta.eventstore import _appenders as appenders
from facta.eventstore import store as store_module
from facta.errors import StreamTypeMismatch

from ..conftest import migrate

SHORT, LONG = 1_000, 8_000
# Instructions an O(log n) call may gain between the two lengths (none were seen; the
# old queries gained about 7,000 x 9 and more).
SLACK = 25


class Ticked(DomainEvent, name="test.growth.ticked"):
    n: int


async def _grow(store: EventStore, stream_id: str, to: int) -> None:
    """Append to ``stream_id`` in 1,000-event batches until it holds ``to`` events, and
    as many to a neighbour stream (the log grows with it)."""
    have = await store.stream_version(stream_id)
    while have < to:
        n = min(1_000, to - have)
        await store.append_many([
            StreamAppend(stream_id, "ticker", [Ticked(n=i) for i in range(n)], have),
            StreamAppend(f"{stream_id}-neighbour", "ticker", [Ticked(n=i) for i in range(n)], None),
        ])
        have += n


def _counting(conn: sqlite3.Connection) -> Callable[[], int]:
    """Count ``conn``'s VM instructions from now; the returned function stops and reads."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 1)

    def stop() -> int:
        conn.set_progress_handler(None, 1)
        return steps[0]

    return stop


async def _append_steps(store: EventStore, stream_id: str, version: int) -> int:
    """VM instructions of one single-event ``store.append`` at ``version`` on the store's
    own SQLite writer connection (its BEGIN IMMEDIATE and COMMIT included)."""
    stops: list[Callable[[], int]] = []
    await store.database.sqlite_write(lambda conn: stops.append(_counting(conn)))
    result = await store.append(stream_id, "ticker", [Ticked(n=-1)], expected_version=version)
    steps = await store.database.sqlite_write(lambda conn: stops[0]())
    assert result.last_version == version + 1
    return steps


def _sqlite_file(store: EventStore) -> str:
    return store.database.url.database or ""


def _head_steps(path: str, stream_id: str) -> tuple[int, int, dict[str, tuple[str, int]]]:
    """VM instructions of the appender's head query and of the store's head read
    (``EventStore._stream_heads``, on a SQLAlchemy connection over a counted driver
    connection), and what the latter returned."""
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        stop = _counting(raw)
        row = raw.execute(appenders._SQLITE_HEAD, (stream_id,)).fetchone()
        appender_steps = stop()
        assert row is not None
        engine = create_engine("sqlite://", creator=lambda: raw)
        with engine.connect() as conn:
            stop = _counting(raw)
            heads = store_module.EventStore._stream_heads(conn, [stream_id])
            store_steps = stop()
        return appender_steps, store_steps, heads
    finally:
        raw.close()


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> Any:
    await migrate(sqlite_url)
    s = await EventStore.open(sqlite_url)
    try:
        yield s
    finally:
        await s.close()


async def test_a_sqlite_append_does_the_same_work_at_1000_and_8000_events_in_the_stream(
    sqlite_store: EventStore,
) -> None:
    store = sqlite_store
    await _grow(store, "long", SHORT)
    short = await _append_steps(store, "long", SHORT)
    await _grow(store, "long", LONG)
    long = await _append_steps(store, "long", LONG)
    assert long <= short + SLACK, (short, long)
    # A stream refused for its type is still refused (the head names the type).
    with pytest.raises(StreamTypeMismatch):
        await store.append("long", "other", [Ticked(n=0)], expected_version=None)
    assert await store.stream_version("long") == LONG + 1


async def test_the_sqlite_head_reads_do_the_same_work_at_1000_and_8000_events(sqlite_store: EventStore) -> None:
    store = sqlite_store
    await _grow(store, "long", SHORT)
    short_appender, short_store, heads = _head_steps(_sqlite_file(store), "long")
    assert heads == {"long": ("ticker", SHORT)}
    await _grow(store, "long", LONG)
    long_appender, long_store, heads = _head_steps(_sqlite_file(store), "long")
    assert heads == {"long": ("ticker", LONG)}
    assert long_appender <= short_appender + SLACK, (short_appender, long_appender)
    assert long_store <= short_store + SLACK, (short_store, long_store)


def _sqlite_plans(path: str, stream_id: str) -> list[str]:
    """``EXPLAIN QUERY PLAN`` of the appender's and the store's head queries, as SQLite
    would run them on the migrated file."""
    compiled = store_module._HEAD_OF_ONE.compile(dialect=sqlite.dialect())
    params = compiled.construct_params({"stream_id": stream_id})
    args = tuple(params[name] for name in compiled.positiontup or ())
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        return [
            " / ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", sql_args))
            for sql, sql_args in ((appenders._SQLITE_HEAD, (stream_id,)), (str(compiled), args))
        ]
    finally:
        raw.close()


async def test_the_sqlite_head_queries_descend_the_stream_version_index(sqlite_store: EventStore) -> None:
    await _grow(sqlite_store, "long", SHORT)
    for plan in _sqlite_plans(_sqlite_file(sqlite_store), "long"):
        assert plan.startswith("SEARCH facta_events USING INDEX sqlite_autoindex_facta_events_"), plan
        assert plan.endswith("(stream_id=?)") and "TEMP B-TREE" not in plan, plan


def _rows_touched(plan: dict[str, Any]) -> int:
    """Rows every node of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan produced or removed."""
    loops = plan.get("Actual Loops", 1)
    own = (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
           + plan.get("Rows Removed by Index Recheck", 0)) * loops
    return int(own + sum(_rows_touched(child) for child in plan.get("Plans", [])))


async def _pg_head_rows(store: EventStore, stream_id: str) -> tuple[int, dict[str, tuple[str, int]]]:
    query = store_module._HEAD_OF_ONE.params(stream_id=stream_id)
    sql = str(query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))

    def run(conn: Connection) -> tuple[int, dict[str, tuple[str, int]]]:
        (explained,) = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).one()
        document = json.loads(explained) if isinstance(explained, str) else explained
        return _rows_touched(document[0]["Plan"]), store_module.EventStore._stream_heads(conn, [stream_id])

    return await store.database.read(run)


async def test_the_postgres_head_read_touches_the_same_rows_at_1000_and_8000_events(postgres_url: str) -> None:
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    try:
        await _grow(store, "long", SHORT)
        short, heads = await _pg_head_rows(store, "long")
        assert heads == {"long": ("ticker", SHORT)}
        await _grow(store, "long", LONG)
        long, heads = await _pg_head_rows(store, "long")
        assert heads == {"long": ("ticker", LONG)}
        assert short <= 3 and long <= 3, (short, long)
        assert await store.stream_type("long") == "ticker"
        assert await store.stream_type("long-missing") is None
    finally:
        await store.close()


async def test_the_sqlite_append_connection_checkpoints_every_10000_pages_with_a_16_mib_cache(
    sqlite_store: EventStore,
) -> None:
    def pragmas(conn: sqlite3.Connection) -> tuple[int, int, int, str, int]:
        return (
            conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0],
            conn.execute("PRAGMA cache_size").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA temp_store").fetchone()[0],
        )

    # synchronous 2 = FULL: every commit is synced to the WAL (durability as before);
    # temp_store 2 = MEMORY: statement journals in memory.
    assert await sqlite_store.database.sqlite_write(pragmas) == (10_000, -16_384, 2, "wal", 2)
