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
``read_log_rows``) read driver rows where Core's result machinery cost more than the
query, and everything else is a Core select of :attr:`LogReader.columns`.
"""

from __future__ import annotations

import asyncio
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

    async def read(self, query: Select[Any], after: int, limit: int) -> list[Row]:
        """Up to ``limit`` rows of ``query`` (a select of :attr:`columns`, filtered) with
        position > ``after``, in position order."""

    async def window(self, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
        """Like :meth:`read` (only the given event types), and how far it looked: every
        such row with ``after < position <= covered`` is in the list."""

    async def rows(self, after: int, limit: int) -> list[Row]:
        """Like :meth:`read` with no filter, as the driver returns the rows."""


def _select(columns: list[ColumnElement[Any]], event_types: Sequence[str] | None) -> Select[Any]:
    query = select(*columns)
    if event_types is not None:
        query = query.where(events.c.event_type.in_(list(event_types)))
    return query


def _log_slice(query: Select[Any], after: int, upto: int | None, limit: int) -> Select[Any]:
    query = query.where(events.c.position > after)
    if upto is not None:
        query = query.where(events.c.position <= upto)
    return query.order_by(events.c.position).limit(limit)


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
_PG_LOG_ROWS = (
    f"SELECT {_PG_COLUMNS} FROM facta_events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
)
_PG_WINDOW_ROWS = (
    f"SELECT {_PG_COLUMNS} FROM facta_events"
    " WHERE position > $1 AND position <= $2 AND ($4::text[] IS NULL OR event_type = ANY($4::text[]))"
    " ORDER BY position LIMIT $3"
)


class PostgresLogReader:
    """PostgreSQL: every read stops at the settled horizon (see the module's docstring)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.columns: list[ColumnElement[Any]] = [
            self.json_text(c).label("payload") if c.name == "payload" else c for c in events.c
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

    async def read(self, query: Select[Any], after: int, limit: int) -> list[Row]:
        async def fetch(start: int, upto: int, n: int) -> list[Row]:
            return await self.database.read(all_rows, _log_slice(query, start, upto, n))

        rows, _ = await self._settled(after, limit, fetch, None)
        return rows

    async def window(self, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
        types = None if event_types is None else list(event_types)

        async def fetch(start: int, upto: int, n: int) -> list[Row]:
            # The driver's rows: Core's result machinery cost more than the query on this
            # hot path (projection catch-up and rebuilds).
            async with self.database.driver_connection() as conn:
                return list(await conn.fetch(_PG_WINDOW_ROWS, start, upto, n, types))

        return await self._settled(after, limit, fetch, lambda row: int(row[0]))

    async def rows(self, after: int, limit: int) -> list[Row]:
        async def fetch(start: int, upto: int, n: int) -> list[Row]:
            async with self.database.driver_connection() as conn:
                return list(await conn.fetch(_PG_LOG_ROWS, start, upto, n))

        rows, _ = await self._settled(after, limit, fetch, None)
        return rows

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

_SQLITE_LOG_ROWS = f"SELECT {', '.join(LOG_COLUMNS)} FROM facta_events WHERE position > ? ORDER BY position LIMIT ?"


def _sqlite_log_rows(conn: Connection, after: int, limit: int) -> list[Row]:
    driver = conn.connection.driver_connection
    assert driver is not None
    return list(driver.execute(_SQLITE_LOG_ROWS, (after, limit)).fetchall())


def _sqlite_window(conn: Connection, query: Select[Any], after: int, limit: int) -> tuple[list[Row], int]:
    head = int(conn.execute(_MAX_POSITION).scalar_one())
    rows: list[Row] = list(conn.execute(_log_slice(query, after, head, limit)).all())
    return rows, (int(rows[-1][0]) if len(rows) >= limit else max(head, after))


def _scalar(conn: Connection, query: Select[Any]) -> Any:
    return conn.execute(query).scalar_one()


class SQLiteLogReader:
    """SQLite: plain reads (positions become visible in the order they are taken)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.columns: list[ColumnElement[Any]] = list(events.c)

    @staticmethod
    def json_text(column: Any) -> Any:
        return column  # TEXT already

    async def head(self) -> int:
        return int(await self.database.read(_scalar, _MAX_POSITION))

    async def bound(self) -> int | None:
        return None

    async def read(self, query: Select[Any], after: int, limit: int) -> list[Row]:
        return await self.database.read(all_rows, _log_slice(query, after, None, limit))

    async def window(self, after: int, limit: int, event_types: Sequence[str] | None) -> tuple[list[Row], int]:
        return await self.database.read(_sqlite_window, _select(self.columns, event_types), after, limit)

    async def rows(self, after: int, limit: int) -> list[Row]:
        return await self.database.read(_sqlite_log_rows, after, limit)
