"""Stream and snapshot reads for aggregate loads, one reader per dialect, next to the log
readers (:mod:`._readers`) and the appenders (:mod:`._appenders`).

:meth:`~facta.eventstore.repository.Repository.get` is a hot path: with a snapshot at the
head of a stream it reads one snapshot row and one or a few event rows. Building, compiling
and executing SQLAlchemy Core selects for that cost more than the reads themselves, and
each ``Database.read`` is a thread hop (SQLite) or a greenlet hop with a pool checkout
(PostgreSQL). So a load here is:

- one read (:meth:`StreamReader.from_snapshot`): the newest snapshot and the events from
  its version. PostgreSQL: one statement, one round trip. SQLite: two statements on one
  connection, on the event loop's own thread while they return at most
  :data:`INLINE_ROWS` events (no hop at all), the rest in one hop to the read threads;
- statements written once as SQL text, kept prepared by the driver's statement cache
  (sqlite3: 128 per connection, asyncpg: 100), never built per call;
- rows as the driver returns them, turned into records by
  :func:`facta.eventstore._rows.records_from_rows` (the one decoder) in the store.

Every statement is one descent of an index followed by the rows it returns: facta_events'
``(stream_id, version)`` unique index, read in version order, and facta_snapshots'
primary key ``(stream_id, version)``, read backwards for the newest snapshot at or below
a version (PostgreSQL's one statement sorts the rows it returns, snapshot first). So a
load is O(log n) in the stream's and the log's length plus the rows it returns
(tests/eventstore/test_load_growth.py counts SQLite's VM instructions and PostgreSQL's
plan rows at two stream lengths).

SQLite's statements run without a transaction around them. Nothing is lost by that:
events are never changed or deleted (revision 0004's triggers), a snapshot is written in
or after the transaction of the events it covers, so every event a snapshot read shows is
visible to the events read after it; the events read may include ones appended between
the statements, as if the load had started a moment later.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection

from ._rows import LOG_COLUMNS
from .database import Database
from .validation import INT32

__all__ = ["PostgresStreamReader", "SQLiteStreamReader", "StreamReader"]

Row = Sequence[Any]
#: The largest version facta stores: the upper bound of a read with no ``to_version``.
LAST_VERSION = INT32[1]
#: facta_snapshots' columns in :class:`~facta.eventstore.records.Snapshot`'s field order.
SNAPSHOT_COLUMNS = ("stream_id", "stream_type", "version", "state", "state_schema", "recorded_at")
#: Where a snapshot row holds its version and its state_schema.
SNAPSHOT_VERSION, SNAPSHOT_SCHEMA = 2, 4


class StreamReader(Protocol):
    """What the store asks of its dialect's stream reader. Rows of facta_events come with
    :data:`~facta.eventstore._rows.LOG_COLUMNS` (payload as JSON text), snapshot rows with
    :data:`SNAPSHOT_COLUMNS` (state as JSON text), as the driver returns them."""

    async def stream(self, stream_id: str, first: int, last: int, backwards: bool, limit: int | None) -> list[Row]:
        """Rows of the stream with ``first <= version <= last`` in version order (reverse
        order with ``backwards``), at most ``limit`` (None: all)."""

    async def snapshot(self, stream_id: str, last: int) -> Row | None:
        """The stream's newest snapshot row at or below version ``last``, or None."""

    async def from_snapshot(self, stream_id: str, last: int, state_schema: str) -> tuple[Row | None, list[Row]]:
        """In one hop: the newest snapshot row at or below ``last`` (or None), and the
        stream's rows up to ``last`` from that snapshot's version when it was written
        for ``state_schema``, else from version 1."""

    def close(self) -> None:
        """Close what the reader opened itself (the store closes it)."""


def _start(snapshot: Row | None, state_schema: str) -> int:
    """Where a load's events start: at the snapshot's own version (so the load can check
    the stream has it, and its type) when the snapshot claims today's state schema."""
    if snapshot is not None and snapshot[SNAPSHOT_SCHEMA] == state_schema:
        return int(snapshot[SNAPSHOT_VERSION])
    return 1


# -- SQLite ------------------------------------------------------------------------------------

_SQLITE_SNAPSHOT = (
    f"SELECT {', '.join(SNAPSHOT_COLUMNS)} FROM facta_snapshots"
    " WHERE stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1"
)
_SQLITE_STREAM = (
    f"SELECT {', '.join(LOG_COLUMNS)} FROM facta_events"
    " WHERE stream_id = ? AND version >= ? AND version <= ? ORDER BY version LIMIT ?"
)
_SQLITE_STREAM_BACKWARDS = _SQLITE_STREAM.replace("ORDER BY version", "ORDER BY version DESC")


def _driver(conn: Connection) -> Any:
    # The stdlib connection under the pooled SQLAlchemy one: no Core statement runs, so
    # SQLAlchemy begins no transaction and each statement reads the newest commit.
    driver = conn.connection.driver_connection
    assert driver is not None
    return driver


def _sqlite_stream(conn: Connection, stream_id: str, first: int, last: int, backwards: bool,
                   limit: int | None) -> list[Row]:
    sql = _SQLITE_STREAM_BACKWARDS if backwards else _SQLITE_STREAM
    return list(_driver(conn).execute(sql, (stream_id, first, last, -1 if limit is None else limit)).fetchall())


def _sqlite_snapshot(conn: Connection, stream_id: str, last: int) -> Row | None:
    row: Row | None = _driver(conn).execute(_SQLITE_SNAPSHOT, (stream_id, last)).fetchone()
    return row


def _sqlite_from_snapshot_on(driver: sqlite3.Connection, stream_id: str, last: int, state_schema: str,
                             limit: int) -> tuple[Row | None, list[Row]]:
    """The snapshot row and up to ``limit`` (-1: all) event rows after it, on ``driver``."""
    snapshot: Row | None = driver.execute(_SQLITE_SNAPSHOT, (stream_id, last)).fetchone()
    rows = driver.execute(_SQLITE_STREAM, (stream_id, _start(snapshot, state_schema), last, limit)).fetchall()
    return snapshot, list(rows)


def _sqlite_from_snapshot(conn: Connection, stream_id: str, last: int, state_schema: str) -> tuple[Row | None, list[Row]]:
    return _sqlite_from_snapshot_on(_driver(conn), stream_id, last, state_schema, -1)


#: A load's reads run on the event loop's own thread while they return at most this many
#: event rows (after the snapshot row): a few tens of microseconds of index descents and
#: row conversion, less than a thread hop costs (the hop's row conversion holds the GIL as
#: well). A longer read continues on the read threads from where this one stopped.
INLINE_ROWS = 128
_VERSION_AT = LOG_COLUMNS.index("version")


class SQLiteStreamReader:
    """SQLite: reads on the stdlib driver, with no SQLAlchemy statement.

    :meth:`from_snapshot` (the load) first tries the event loop's thread, on a connection
    of its own per thread that never waits for a lock (``busy_timeout`` 0, ``query_only``):
    the snapshot and at most :data:`INLINE_ROWS` events. More events are read on the read
    threads (one hop), from the version after the last one read; any SQLite error there
    (a WAL reader that would have to wait, an unreadable file) hands the whole load to the
    read threads, whose errors are the store's usual ones. Everything else is one hop.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    async def stream(self, stream_id: str, first: int, last: int, backwards: bool, limit: int | None) -> list[Row]:
        return await self.database.read(_sqlite_stream, stream_id, first, last, backwards, limit)

    async def snapshot(self, stream_id: str, last: int) -> Row | None:
        return await self.database.read(_sqlite_snapshot, stream_id, last)

    async def from_snapshot(self, stream_id: str, last: int, state_schema: str) -> tuple[Row | None, list[Row]]:
        self.database._check_open()  # the loop-thread read below does not go through the database
        try:
            snapshot, rows = _sqlite_from_snapshot_on(self._inline(), stream_id, last, state_schema, INLINE_ROWS)
        except sqlite3.Error:
            return await self.database.read(_sqlite_from_snapshot, stream_id, last, state_schema)
        if len(rows) == INLINE_ROWS:
            rows += await self.database.read(_sqlite_stream, stream_id, int(rows[-1][_VERSION_AT]) + 1, last, False,
                                             None)
        return snapshot, rows

    def _inline(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.database.url.database or "", timeout=0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            with self._lock:
                self._opened.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
        self._local = threading.local()


# -- PostgreSQL --------------------------------------------------------------------------------

_PG_SNAPSHOT = (
    f"SELECT {', '.join(SNAPSHOT_COLUMNS).replace('state,', 'state::text,')} FROM facta_snapshots"
    " WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1"
)
_PG_STREAM = (
    f"SELECT {', '.join(LOG_COLUMNS).replace('payload', 'payload::text')} FROM facta_events"
    " WHERE stream_id = $1 AND version >= $2 AND version <= $3 ORDER BY version LIMIT $4"
)
_PG_STREAM_BACKWARDS = _PG_STREAM.replace("ORDER BY version", "ORDER BY version DESC")
# A load in one statement, one round trip: the snapshot (if any) as a row of facta_events'
# shape with no position (its state_schema where the event type is, its state where the
# payload is), sorted first (false before true), then the events from its version (from 1 when it is for
# another state schema). Sorting the union costs the rows returned, not the stream.
_PG_FROM_SNAPSHOT = f"""
WITH s AS MATERIALIZED (
  SELECT stream_id, stream_type, version, state::text AS state, state_schema, recorded_at FROM facta_snapshots
  WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1)
SELECT * FROM (
  SELECT NULL::bigint AS position, NULL::uuid AS event_id, stream_id, stream_type, version,
    state_schema AS event_type, NULL::integer AS schema_version, state AS payload, NULL::timestamptz AS occurred_at,
    recorded_at, NULL::varchar AS actor, NULL::varchar AS correlation_id, NULL::varchar AS causation_id,
    NULL::varchar AS traceparent, NULL::varchar AS tracestate FROM s
  UNION ALL
  SELECT {', '.join(LOG_COLUMNS).replace('payload', 'payload::text')} FROM facta_events
  WHERE stream_id = $1 AND version <= $2 AND version >= coalesce((SELECT version FROM s WHERE state_schema = $3), 1)
) AS load ORDER BY position IS NOT NULL, version
"""


class PostgresStreamReader:
    """PostgreSQL: each read takes one pooled asyncpg connection (LIMIT NULL is no limit)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def close(self) -> None:
        pass  # its connections are the engine's

    async def stream(self, stream_id: str, first: int, last: int, backwards: bool, limit: int | None) -> list[Row]:
        async with self.database.driver_connection() as conn:
            return list(await conn.fetch(_PG_STREAM_BACKWARDS if backwards else _PG_STREAM,
                                         stream_id, first, last, limit))

    async def snapshot(self, stream_id: str, last: int) -> Row | None:
        async with self.database.driver_connection() as conn:
            row: Row | None = await conn.fetchrow(_PG_SNAPSHOT, stream_id, last)
            return row

    async def from_snapshot(self, stream_id: str, last: int, state_schema: str) -> tuple[Row | None, list[Row]]:
        async with self.database.driver_connection() as conn:
            rows = list(await conn.fetch(_PG_FROM_SNAPSHOT, stream_id, last, state_schema))
        if not rows or rows[0][0] is not None:
            return None, rows
        r = rows[0]  # the snapshot: back to SNAPSHOT_COLUMNS' order
        return (r[2], r[3], r[4], r[7], r[5], r[9]), rows[1:]
