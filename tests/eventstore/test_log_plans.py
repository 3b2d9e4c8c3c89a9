"""Log pages are read by position on a table without statistics (issue 12).

A store loaded in bulk and rebuilt at once has an events table that was never analyzed.
On it, PostgreSQL planned the event-type-filtered log page with the event-type index and
a sort of every matching row after the page's start (44 ms per 1,000-row page against
0.7 ms after ``ANALYZE``), and SQLite, which has no statistics unless ``ANALYZE`` ran,
sorted in a temporary B-tree the same way. These tests read the plan the store's own
page reads get (PostgreSQL: ``EXPLAIN (FORMAT JSON)`` of the statement the reader sends,
with the reader's settings, caught on its connection) and require a primary-key scan in
position order with no sort.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from facta.eventstore import EventStore
from facta.eventstore import _readers as readers
from tests.conftest import migrate

TYPES = [f"bench.t{i}" for i in range(10)]
ROWS = 20_000

# 20,000 events of 10 types in turn, written in one statement (no ANALYZE, and autovacuum
# is off for the table, so it has no statistics).
FILL = """
INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version, payload,
                          occurred_at, recorded_at)
SELECT gen_random_uuid(), 's-' || (g / 100), 'ride', g % 100 + 1, 'bench.t' || (g % 10), 1, '{"n": 1}'::jsonb,
       now(), now()
FROM generate_series(0, $1 - 1) g
"""


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


class ExplainingConnection:
    """An asyncpg connection whose log-page fetches are also EXPLAINed (plans kept)."""

    def __init__(self, conn: asyncpg.Connection, plans: list[dict[str, Any]]) -> None:
        self.conn, self.plans = conn, plans

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if "FROM facta_events" in sql and "ORDER BY position" in sql:
            explained = await self.conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
            # SQLAlchemy's asyncpg dialect gives the connection a json codec; a bare one returns text.
            self.plans.append((json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"])
        return list(await self.conn.fetch(sql, *args))


@pytest.mark.parametrize("analyzed", [False, True], ids=["unanalyzed", "analyzed"])
async def test_postgres_log_pages_read_by_position_without_statistics(postgres_url: str, analyzed: bool) -> None:
    await migrate(postgres_url)
    dsn = postgres_url.replace("postgresql+asyncpg", "postgresql")
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("ALTER TABLE facta_events SET (autovacuum_enabled = false)")
        await admin.execute(FILL, ROWS)
        if analyzed:
            await admin.execute("ANALYZE facta_events")
        stats = await admin.fetchrow(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = 'facta_events'")
        assert (stats["last_analyze"] is not None) == analyzed and stats["last_autoanalyze"] is None
    finally:
        await admin.close()

    store = await EventStore.open(postgres_url)
    plans: list[dict[str, Any]] = []
    driver_connection = store.database.driver_connection

    @asynccontextmanager
    async def explaining() -> AsyncIterator[ExplainingConnection]:
        async with driver_connection() as conn:
            yield ExplainingConnection(conn, plans)

    store.database.driver_connection = explaining  # type: ignore[method-assign]
    try:
        records, covered = await store.read_log_window(0, 1000, event_types=TYPES[:2])
        assert [r.position for r in records] == [p for p in range(1, ROWS + 1) if (p - 1) % 10 < 2][:1000]
        assert covered == records[-1].position
        page = await store.read_log(0, 1000, event_types=TYPES[3:6], stream_types=["ride"])
        assert [r.position for r in page] == [p for p in range(1, ROWS + 1) if 3 <= (p - 1) % 10 < 6][:1000]
        assert [row[0] for row in await store.read_log_rows(0, 1000)] == list(range(1, 1001))
    finally:
        await store.close()

    for plan in plans:
        kinds = [(n["Node Type"], n.get("Index Name")) for n in nodes(plan)]
        assert kinds == [("Limit", None), ("Index Scan", "facta_events_pkey")], kinds
    assert len(plans) == 3  # read_log_window, read_log, read_log_rows: each on the driver


def test_sqlite_log_pages_read_by_position(sqlite_url: str) -> None:
    import asyncio

    asyncio.run(migrate(sqlite_url))
    path = sqlite_url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:
        for by_event, by_stream in [(2, None), (3, 1), (None, 2), (None, None)]:
            for upto in (True, False):
                sql = readers._sqlite_page_sql(upto, by_event, by_stream)
                args = [0, *([10] if upto else []), *TYPES[: by_event or 0], *(["ride"] * (by_stream or 0)), 1000]
                plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
                assert plan.startswith("SEARCH facta_events USING INTEGER PRIMARY KEY (rowid>?"), plan
                assert "B-TREE" not in plan, plan


async def test_postgres_page_that_fails_leaves_no_transaction_open(postgres_url: str) -> None:
    """A page read runs in its own read transaction; when the read fails (or is
    cancelled: a read-ahead page is), it is rolled back before the connection goes back
    to the pool."""
    await migrate(postgres_url)
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))

    class Failing:
        def __getattr__(self, name: str) -> Any:
            return getattr(conn, name)

        async def fetch(self, sql: str, *args: Any) -> list[Any]:
            assert conn.is_in_transaction()
            raise RuntimeError("page read failed")

    try:
        with pytest.raises(RuntimeError, match="page read failed"):
            await readers.pg_page(Failing(), 0, 10, 5, ["a"])
        assert not conn.is_in_transaction()
        assert await readers.pg_page(conn, 0, 10, 5, None, ["ride"]) == []
        assert not conn.is_in_transaction()
    finally:
        await conn.close()
