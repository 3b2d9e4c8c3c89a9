"""The global log's readers, one per dialect, next to the appenders (:mod:`._appenders`).

A reader returns rows of ``facta_events`` (its columns in table order, the payload as JSON
text); :func:`facta.eventstore._rows.records_from_rows` turns them into records. Both readers
have the same methods, so :class:`~facta.eventstore.store.EventStore` picks one when it
opens and never asks for the dialect again:

- :class:`PostgresLogReader`: reads never pass the *settled horizon*. A sequence value
  is taken at insert time but becomes visible at commit, so a reader that read past a
  position still in flight could skip it. The horizon is ``max(position)`` once every
  append that held the writer marker (:data:`~facta.eventstore.locks.WRITER_MARKER`)
  when it was read has ended; the store module's docstring proves it sound.
- :class:`SQLiteLogReader`: plain reads. Writers queue for the file's write lock with
  ``BEGIN IMMEDIATE``, so positions are taken and made visible in one order.

Both cost what the hot paths need: the log's pages (``read_log``, ``read_log_window``,
``read_log_rows``) are prebuilt driver statements returning driver rows (building a Core
select per page and Core's result machinery cost more than the query), and everything
else is a Core select of :attr:`LogReader.columns`.

**Pages are read by position, whatever the statistics.** A page is ``position > after
AND position <= upto`` (optionally ``event_type IN (...)``, ``stream_type IN (...)``)
``ORDER BY position LIMIT n``. Read in position order on the primary key, a whole
catch-up or rebuild reads each row of the range once. On a table without statistics (a
store loaded in bulk and rebuilt at once) the planners took the event-type index
instead and sorted every matching row after ``after`` for each page: on PostgreSQL 44 ms
per 1,000-row page against 0.7 ms after ``ANALYZE`` (issue 12), and SQLite (which has no
statistics unless ``ANALYZE`` ran) did the same with a temporary B-tree. So:

- PostgreSQL runs each page in a read transaction with ``SET LOCAL enable_sort = off``
  and ``enable_bitmapscan = off``: the plan with no sort is the primary key's index scan
  (``tests/eventstore/test_log_plans.py`` checks ``EXPLAIN`` on an unanalyzed table);
- SQLite's filters are written ``+event_type IN (...)``, the unary ``+`` that keeps a
  term from using an index (SQLite's documented way), so the page is a rowid range.

The price: a projection of a rare event type scans the log's rows between matches,
still each row once per rebuild.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Select, Text, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from ._rows import LOG_COLUMNS
from .database import Database
from .locks import WRITER_MARKER
from .schema import events

__all__ = ["LogReader", "PostgresLogReader", "SQLiteLogReader", "all_rows"]

R = TypeVar("R")
Row = Sequence[Any]


class LogReader(Protocol):
    """What the store asks of its dialect's reader."""

    #: The columns of ``facta_events`` in table order, the payload as JSON text.
    columns: list[ColumnElement[Any]]

    def json_text(self, column: Any) -> Any:
        """A JSON column (payload, snapshot state) as its stored text."""

    async def head(self) -> int:
        """The highest position a reader can read up to now; 0 when the log is empty."""

    async def bound(self) -> int | None:
        """The highest position a query that must not show what a log reader could still
        miss may show (the settled horizon); None: no bound needed."""

    async def read(self, after: int, limit: int, event_types: Sequence[str] | None = None,
                   stream_types: Sequence[str] | None = None) -> list[Row]:
        """Up to ``limit`` rows with position > ``after``, in position order, only of the
        given event and stream types (None: any)."""

    async def window(self, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
        """Like :meth:`read` (only the given event types), and how far it looked: every
        such row with ``after < position <= covered`` is in the list."""

    async def rows(self, after: int, limit: int) -> list[Row]:
        """Like :meth:`read` with no filter, as the driver returns the rows."""


def all_rows(conn: Connection, query: Select[Any]) -> list[Row]:
    """Every row of ``query`` (for :meth:`Database.read`)."""
    return list(conn.execute(query).all())


_MAX_POSITION = select(func.coalesce(func.max(events.c.position), 0))


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_HEAD = "SELECT coalesce(max(position), 0) FROM facta_events"
# The transactions holding the writer marker in this database (of those in $3, if given).
_PG_MARKER_HOLDERS = """
SELECT array_agg(virtualtransaction) FROM pg_locks
WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ($3::text[] IS NULL OR virtualtransaction = ANY($3::text[]))
"""
_PG_COLUMNS = ", ".join(LOG_COLUMNS).replace("payload", "payload::text")
# A page of the log, per filter: (event types given, stream types given) -> statement with
# $1 after, $2 upto, $3 limit, then the event types and the stream types as text[].
_PG_PAGES: dict[tuple[bool, bool], str] = {
    (by_event, by_stream): (
        f"SELECT {_PG_COLUMNS} FROM facta_events WHERE position > $1 AND position <= $2"
        + (" AND event_type = ANY($4::text[])" if by_event else "")
        + (f" AND stream_type = ANY(${4 + by_event}::text[])" if by_stream else "")
        + " ORDER BY position LIMIT $3"
    )
    for by_event in (False, True)
    for by_stream in (False, True)
}
# A page's read transaction with its plan settings (see the module docstring): the one
# plan left without a sort is the primary key's index scan, in position order. One round
# trip (asyncpg's transaction() would take two: BEGIN, then the settings).
_PG_BEGIN_BY_POSITION = "BEGIN READ ONLY; SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off"


async def pg_page(conn: Any, after: int, upto: int, limit: int, event_types: Sequence[str] | None = None,
                  stream_types: Sequence[str] | None = None) -> list[Row]:
    """Up to ``limit`` rows (asyncpg records of :data:`LOG_COLUMNS`, the payload as text)
    with ``after < position <= upto``, in position order, read by position on ``conn``
    (an asyncpg connection with no transaction open)."""
    sql = _PG_PAGES[event_types is not None, stream_types is not None]
    args = [list(t) for t in (event_types, stream_types) if t is not None]
    await conn.execute(_PG_BEGIN_BY_POSITION)
    try:
        rows = list(await conn.fetch(sql, after, upto, limit, *args))
    except BaseException:
        try:
            if not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("ROLLBACK")
        except Exception:
            conn.terminate()  # state unknown: the pool drops the connection; the first error stands
        raise
    await conn.execute("COMMIT")
    return rows


class PostgresLogReader:
    """PostgreSQL: every read stops at the settled horizon (see the module's docstring)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.columns: list[ColumnElement[Any]] = [
            self.json_text(c).label("payload") if c.name == "payload" else c
            for c in events.c if c.name in LOG_COLUMNS
        ]
        # Every position at or below this is committed or will never exist.
        self.horizon = 0

    @staticmethod
    def json_text(column: Any) -> Any:
        return cast(column, Text)  # JSONB: asyncpg would decode it otherwise

    async def head(self) -> int:
        """Advance and return the settled horizon: ``max(position)`` once every append
        holding the writer marker when it was read has ended."""
        async with self.database.driver_connection() as conn:
            head = int(await conn.fetchval(_PG_HEAD))
            if head > self.horizon:
                in_flight = await conn.fetchval(_PG_MARKER_HOLDERS, *WRITER_MARKER, None)
                delay = 0.0002
                while in_flight:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    in_flight = await conn.fetchval(_PG_MARKER_HOLDERS, *WRITER_MARKER, in_flight)
                self.horizon = max(self.horizon, head)
        return self.horizon

    async def bound(self) -> int | None:
        return await self.head()

    async def read(self, after: int, limit: int, event_types: Sequence[str] | None = None,
                   stream_types: Sequence[str] | None = None) -> list[Row]:
        rows, _ = await self._settled(after, limit, self._fetcher(event_types, stream_types), None)
        return rows

    async def window(self, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
        return await self._settled(after, limit, self._fetcher(event_types, None), lambda row: int(row[0]))

    async def rows(self, after: int, limit: int) -> list[Row]:
        rows, _ = await self._settled(after, limit, self._fetcher(None, None), None)
        return rows

    def _fetcher(self, event_types: Sequence[str] | None, stream_types: Sequence[str] | None
                 ) -> Callable[[int, int, int], Awaitable[list[Row]]]:
        async def fetch(start: int, upto: int, n: int) -> list[Row]:
            async with self.database.driver_connection() as conn:
                return await pg_page(conn, start, upto, n, event_types, stream_types)

        return fetch

    async def _settled(
        self,
        after: int,
        limit: int,
        fetch: Callable[[int, int, int], Awaitable[list[R]]],
        position_of: Callable[[R], int] | None,
    ) -> tuple[list[R], int]:
        """Up to ``limit`` rows after ``after``, never past the settled horizon, and how
        far that looked. ``fetch(after, upto, n)`` reads at most n rows with after <
        position <= upto. Rows below the horizon known already cost no wait."""
        rows: list[R] = []
        settled = self.horizon
        covered = after
        if settled > after:
            rows = await fetch(after, settled, limit)
            covered = settled
        if len(rows) < limit:
            newer = await self.head()
            start = max(after, settled)
            if newer > start:
                rows += await fetch(start, newer, limit - len(rows))
                covered = newer
        if len(rows) >= limit and position_of is not None:
            covered = position_of(rows[-1])
        return rows, covered


# -- SQLite ----------------------------------------------------------------------------------

_SQLITE_SELECT = f"SELECT {', '.join(LOG_COLUMNS)} FROM facta_events WHERE position > ?"


@functools.lru_cache(maxsize=256)
def _sqlite_page_sql(upto: bool, event_types: int | None, stream_types: int | None) -> str:
    """A page's statement for these filters (bounded or not, and how many event and
    stream types), built once: parameters after, [upto,] event types..., stream types...,
    limit. ``+column`` keeps SQLite off the type indexes (see the module docstring)."""
    sql = _SQLITE_SELECT + (" AND position <= ?" if upto else "")
    for column, count in (("event_type", event_types), ("stream_type", stream_types)):
        if count is not None:
            sql += f" AND +{column} IN ({', '.join('?' * count)})" if count else " AND 0"
    return sql + " ORDER BY position LIMIT ?"


def _sqlite_page(conn: Connection, after: int, upto: int | None, limit: int, event_types: Sequence[str] | None,
                 stream_types: Sequence[str] | None) -> list[Row]:
    driver = conn.connection.driver_connection
    assert driver is not None
    sql = _sqlite_page_sql(upto is not None, None if event_types is None else len(event_types),
                           None if stream_types is None else len(stream_types))
    args = [after, *(() if upto is None else (upto,)), *(event_types or ()), *(stream_types or ()), limit]
    return list(driver.execute(sql, args).fetchall())


def _sqlite_window(conn: Connection, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
    driver = conn.connection.driver_connection
    assert driver is not None
    head = int(driver.execute(_SQLITE_HEAD).fetchone()[0])
    rows = _sqlite_page(conn, after, head, limit, event_types, None)
    return rows, (int(rows[-1][0]) if len(rows) >= limit else max(head, after))


_SQLITE_HEAD = "SELECT coalesce(max(position), 0) FROM facta_events"


def _scalar(conn: Connection, query: Select[Any]) -> Any:
    return conn.execute(query).scalar_one()


class SQLiteLogReader:
    """SQLite: plain reads (positions become visible in the order they are taken)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.columns: list[ColumnElement[Any]] = [c for c in events.c if c.name in LOG_COLUMNS]

    @staticmethod
    def json_text(column: Any) -> Any:
        return column  # TEXT already

    async def head(self) -> int:
        return int(await self.database.read(_scalar, _MAX_POSITION))

    async def bound(self) -> int | None:
        return None

    async def read(self, after: int, limit: int, event_types: Sequence[str] | None = None,
                   stream_types: Sequence[str] | None = None) -> list[Row]:
        return await self.database.read(_sqlite_page, after, None, limit, event_types, stream_types)

    async def window(self, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
        return await self.database.read(_sqlite_window, after, limit, event_types)

    async def rows(self, after: int, limit: int) -> list[Row]:
        return await self.database.read(_sqlite_page, after, None, limit, None, None)
