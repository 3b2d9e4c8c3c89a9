"""The permanent event store: appends with optimistic concurrency, stream and log reads.

Global order. Every event gets an integer ``position``, and a reader that tails the log
with :meth:`EventStore.read_log` never skips one.

On PostgreSQL a sequence value is taken at insert time but becomes visible at commit
time: writer A takes 10, writer B takes 11 and commits first, and a naive reader sees 11,
moves past 10, and never sees it. facta lets writers commit concurrently and makes the
reader wait instead. Every append holds a shared advisory lock, the writer marker, from
before it takes positions until it ends. ``read_log`` only returns positions up to a
*settled horizon*: it reads ``max(position)`` = M, lists the transactions holding the
marker at that moment, waits until exactly those have ended, and then reads with a new
snapshot. Any position below M was taken before M's writer took M (a sequence only goes
up), so its writer held the marker before M committed: it had ended by the time the
marker was listed, or it was listed and waited for. Either way it is committed (and
visible to the new snapshot) or rolled back (a gap that can never fill). The wait is
bounded by the appends in flight at that moment; nothing else holds the marker.

On SQLite, writers queue for the file's write lock with ``BEGIN IMMEDIATE``, so positions
are taken and made visible in one order and no horizon is needed.

ARCHITECTURE.md explains the choice; tests/eventstore/test_log_torture.py (a torture
test with 8 writer processes and a deterministic in-flight-writer test) proves it.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Select, Text, bindparam, cast, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from facta import migrations
from facta.domain import DomainEvent, EventRegistry, EventRegistryError, PendingEvent, default_registry

from .appenders import WRITER_MARKER, AppendPlan, LostRace, Rejected, append_postgres, append_sqlite
from .database import Database, database_url_from_env
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    SchemaNotReady,
    StoreError,
)
from .errors import StreamTypeMismatch as _StreamTypeMismatch
from .records import AppendResult, RecordedEvent, Snapshot, StreamAppend, as_pending
from .schema import events, snapshots

__all__ = ["EventStore"]

R = TypeVar("R")

# An append without an expected version that loses the race for a stream's next version
# (another writer took it between facta_append's head read and its insert) tries again
# after a short random pause, for up to this long: every lost race means another append
# committed, so a hot stream keeps moving, and the pause spreads the losers apart.
_LOST_RACE_BUDGET = 10.0
_LOST_RACE_PAUSE = 0.002  # doubled per attempt, up to _LOST_RACE_PAUSE_MAX, then jittered
_LOST_RACE_PAUSE_MAX = 0.1


class EventStore:
    """An asyncio event store on SQLAlchemy 2 (SQLite via aiosqlite, PostgreSQL via asyncpg).

    Open one with :meth:`open` (it checks the schema is migrated), use it as an async
    context manager or call :meth:`close`.
    """

    def __init__(self, database: Database, registry: EventRegistry = default_registry) -> None:
        self.database = database
        self.registry = registry
        self._postgres = database.dialect == "postgresql"
        payload = cast(events.c.payload, Text).label("payload") if self._postgres else events.c.payload
        self._columns = [payload if c.name == "payload" else c for c in events.c]
        # PostgreSQL: every position at or below this is committed or will never exist.
        self._horizon = 0

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        registry: EventRegistry = default_registry,
        migrate: bool = False,
        check_schema: bool = True,
        **engine_options: Any,
    ) -> EventStore:
        """Connect to ``url`` (default: ``FACTA_DATABASE_URL`` or the embedded SQLite file).

        ``migrate=True`` first brings the schema to the newest revision (what
        ``facta db upgrade`` does); otherwise an unmigrated database is an error.
        """
        store = cls(Database.create(url or database_url_from_env(), **engine_options), registry)
        if migrate or check_schema:
            try:
                if migrate:
                    await migrations.upgrade(store.database)
                await store.check_schema()
            except BaseException:
                await store.close()
                raise
        return store

    async def check_schema(self) -> None:
        """Raise :class:`SchemaNotReady` unless the database is at facta's newest revision."""
        revision = await migrations.current(self.database)
        where = self.database.url.render_as_string(hide_password=True)
        if revision is None:
            raise SchemaNotReady(f"{where} has no facta schema: run `facta db upgrade`")
        if revision != migrations.head():
            raise SchemaNotReady(
                f"{where} is at schema revision {revision}, this facta needs {migrations.head()}: run `facta db upgrade`"
            )

    async def close(self) -> None:
        await self.database.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- appends --------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        stream_type: str,
        events: Sequence[DomainEvent | PendingEvent],
        *,
        expected_version: int | None,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> AppendResult:
        """Append ``events`` to one stream if it is at ``expected_version`` (0: new stream,
        None: any). Raises :class:`ConcurrencyError` and writes nothing on a conflict."""
        (result,) = await self.append_many(
            [StreamAppend(stream_id, stream_type, events, expected_version)],
            actor=actor,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        return result

    async def append_many(
        self,
        appends: Sequence[StreamAppend],
        *,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        snapshots: Sequence[Snapshot] = (),
    ) -> list[AppendResult]:
        """Append to several streams in one transaction: all of it is written, or none.

        Snapshots given here are written in the same transaction. Repeating an append
        whose events are all stored already (a retry) writes nothing and returns the
        original positions.
        """
        now = datetime.now(UTC)
        batch = [(a, [as_pending(e, now) for e in a.events]) for a in appends]
        _validate(batch)
        plan = AppendPlan(
            streams=[a for a, _ in batch],
            pending=[pending for _, pending in batch],
            payloads=[[p.event.model_dump_json() for p in pending] for _, pending in batch],
            actor=actor,
            correlation_id=correlation_id,
            causation_id=causation_id,
            snapshots=snapshots,
        )
        deadline = time.monotonic() + _LOST_RACE_BUDGET
        attempts = 0
        while True:
            attempts += 1
            try:
                if self._postgres:
                    async with self.database.driver_connection() as conn:
                        return await append_postgres(conn, plan)
                return await self.database.sqlite_write(append_sqlite, plan)
            except Rejected as rejected:
                # Nothing was written. An identical earlier append explains it (a retry);
                # otherwise a stream has another type or moved on.
                retried = await self.database.read(self._original_results, batch)
                if retried is not None:
                    return retried
                _check_types(batch, rejected.heads)
                raise _conflict(batch, rejected.heads) from None
            except LostRace:
                # A concurrent writer won a version or an event id between our check and
                # our insert; find out which case this is.
                settled = await self.database.read(self._settle_tx, batch)
                if settled is not None:
                    return settled
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"append to {[a.stream_id for a, _ in batch]} lost {attempts} races in a row"
                        f" over {_LOST_RACE_BUDGET:g} s"
                    ) from None
                pause = min(_LOST_RACE_PAUSE * 2 ** min(attempts - 1, 10), _LOST_RACE_PAUSE_MAX)
                await asyncio.sleep(pause * random.random())

    def _settle_tx(
        self, conn: Connection, batch: list[tuple[StreamAppend, list[PendingEvent]]]
    ) -> list[AppendResult] | None:
        """After a lost race: the original results (a retry), a conflict error, or None to try again."""
        retried = self._original_results(conn, batch)
        if retried is not None:
            return retried
        current = self._stream_heads(conn, [a.stream_id for a, _ in batch])
        if _conflicting(batch, current):
            raise _conflict(batch, current)
        return None

    def _original_results(
        self, conn: Connection, batch: list[tuple[StreamAppend, list[PendingEvent]]]
    ) -> list[AppendResult] | None:
        """If every event of the batch is stored already, as this batch, return where."""
        ids = [p.event_id for _, pending in batch for p in pending]
        found = {
            row.event_id: row
            for row in conn.execute(_STORED_BY_ID, {"event_ids": ids})
        }
        if not found:
            return None
        results = []
        for append, pending in batch:
            rows = [found.get(p.event_id) for p in pending]
            first = rows[0]
            for offset, row in enumerate(rows):
                if first is None or row is None or row.stream_id != append.stream_id or row.version != first.version + offset:
                    known = row or first or next(iter(found.values()))
                    raise DuplicateEventError(known.event_id, known.stream_id, known.version, known.position)
            assert first is not None
            results.append(
                AppendResult(append.stream_id, tuple(r.position for r in rows if r is not None), first.version,
                             first.version + len(rows) - 1, first.recorded_at)
            )
        return results

    @staticmethod
    def _stream_heads(conn: Connection, stream_ids: list[str]) -> dict[str, tuple[str, int]]:
        if len(stream_ids) == 1:
            rows = conn.execute(_HEAD_OF_ONE, {"stream_id": stream_ids[0]})
        else:
            rows = conn.execute(_HEADS_OF_MANY, {"stream_ids": stream_ids})
        return {sid: (stype, version) for sid, stype, version in rows if version is not None}

    def _insert_snapshots(self, conn: Connection, snaps: Sequence[Snapshot]) -> None:
        insert = pg_insert(snapshots) if self._postgres else sqlite_insert(snapshots)
        conn.execute(
            insert.on_conflict_do_nothing(),
            [
                {"stream_id": s.stream_id, "version": s.version, "stream_type": s.stream_type,
                 "state": s.state, "state_schema": s.state_schema}
                for s in snaps
            ],
        )

    # -- reads ----------------------------------------------------------------------------

    def _select(self) -> Select[Any]:
        return select(*self._columns)

    async def _fetch(self, query: Select[Any]) -> list[RecordedEvent]:
        rows = await self.database.read(_all_rows, query)
        registry = self.registry
        # Rows come in RecordedEvent's field order (self._columns); mypy cannot count them.
        return [RecordedEvent(*row, registry=registry) for row in rows]  # type: ignore[misc]

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with ``from_version <= version <= to_version``, in version
        order (or reverse order with ``backwards``), at most ``limit`` of them."""
        query = self._select().where(events.c.stream_id == stream_id, events.c.version >= from_version)
        if to_version is not None:
            query = query.where(events.c.version <= to_version)
        query = query.order_by(events.c.version.desc() if backwards else events.c.version)
        if limit is not None:
            query = query.limit(limit)
        return await self._fetch(query)

    async def read_log(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        event_types: Sequence[str] | None = None,
        stream_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of the global log with position > ``after``, in order,
        optionally only those of some event types or stream types.

        Tailing the log with this never skips an event: a later call returns nothing
        that sorts before what an earlier call returned.
        """
        query = self._select()
        if event_types is not None:
            query = query.where(events.c.event_type.in_(list(event_types)))
        if stream_types is not None:
            query = query.where(events.c.stream_type.in_(list(stream_types)))
        if not self._postgres:
            return await self._fetch(query.where(events.c.position > after).order_by(events.c.position).limit(limit))

        async def fetch(start: int, upto: int, n: int) -> list[RecordedEvent]:
            return await self._fetch(_log_slice(query, start, upto, n))

        return await self._read_settled(after, limit, fetch)

    async def read_log_window(
        self, after: int = 0, limit: int = 1000, *, event_types: Sequence[str] | None = None
    ) -> tuple[list[RecordedEvent], int]:
        """Like :meth:`read_log`, and also how far the read looked: every event of the
        given types with ``after < position <= covered`` is in the list. A consumer that
        handles only some types moves its checkpoint to ``covered``, past the rest."""
        registry = self.registry
        if not self._postgres:
            query = self._select()
            if event_types is not None:
                query = query.where(events.c.event_type.in_(list(event_types)))
            rows, covered = await self.database.read(_sqlite_window, query, after, limit)
            return [RecordedEvent(*row, registry=registry) for row in rows], covered  # type: ignore[misc]

        types = None if event_types is None else list(event_types)

        async def fetch(start: int, upto: int, n: int) -> list[RecordedEvent]:
            # The driver's rows straight into records: Core's result machinery cost more
            # than the query on this hot path (projection catch-up and rebuilds).
            async with self.database.driver_connection() as conn:
                rows = await conn.fetch(_PG_WINDOW_ROWS, start, upto, n, types)
            # Rows come in RecordedEvent's field order; mypy cannot count them.
            return [RecordedEvent(*row, registry=registry) for row in rows]  # type: ignore[misc]

        return await self._read_settled_window(after, limit, fetch, lambda r: r.position)

    async def _read_settled(
        self, after: int, limit: int, fetch: Callable[[int, int, int], Awaitable[list[R]]]
    ) -> list[R]:
        """PostgreSQL: up to ``limit`` rows after ``after``, never past the settled horizon.
        ``fetch(after, upto, n)`` reads at most n rows with after < position <= upto."""
        rows, _ = await self._read_settled_window(after, limit, fetch, None)
        return rows

    async def _read_settled_window(
        self,
        after: int,
        limit: int,
        fetch: Callable[[int, int, int], Awaitable[list[R]]],
        position_of: Callable[[R], int] | None,
    ) -> tuple[list[R], int]:
        rows: list[R] = []
        settled = self._horizon
        covered = after
        if settled > after:
            rows = await fetch(after, settled, limit)
            covered = settled
        if len(rows) < limit:
            newer = await self._settle_horizon()
            start = max(after, settled)
            if newer > start:
                rows += await fetch(start, newer, limit - len(rows))
                covered = newer
        if len(rows) >= limit and position_of is not None:
            covered = position_of(rows[-1])
        return rows, covered

    async def positions_around(
        self, since: datetime | None, until: datetime | None
    ) -> tuple[int | None, int | None]:
        """Exclusive position bounds of the events recorded in [since, until] (None: no
        bound), each found as one row of the (recorded_at, position) index, so that a
        query by time can walk the log from near the window (see :func:`_window_bounds`)."""
        return await self.database.read(_window_bounds, since, until)

    async def first_position_at(self, when: datetime) -> int:
        """The position just before the first event recorded at or after ``when``: a
        replay "from a time" starts after it. Concurrent appends can make recorded-at
        times interleave along the log by their overlap, so this is the smallest such
        position, and the replay includes every event recorded at or after ``when``."""
        if when.tzinfo is None:
            raise ValueError(f"naive datetime {when.isoformat()} given: use an aware time")
        low, _ = await self.positions_around(when, None)
        query = (
            select(events.c.position)
            .where(events.c.recorded_at >= when, events.c.position > (low or 0))
            .order_by(events.c.position)
            .limit(1)
        )
        first = await self.database.read(_scalar_or_none, query)
        if first is None:  # nothing recorded at or after ``when`` yet
            return await self.head_position()
        return int(first) - 1

    async def read_log_rows(self, after: int = 0, limit: int = 1000) -> list[Sequence[Any]]:
        """Like :meth:`read_log` (same order, same settled horizon, never skips an event),
        but the rows as the database driver returns them, for hot paths that build their
        own output (the relay). Columns in :class:`RecordedEvent`'s field order, the payload
        as JSON text. On SQLite ``event_id`` is 32 hex digits and the two times are naive
        UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``); on PostgreSQL ``event_id`` is a UUID and
        the times are aware datetimes."""
        if not self._postgres:
            return await self.database.read(_sqlite_log_rows, after, limit)
        return await self._read_settled(after, limit, self._pg_log_rows)

    async def _pg_log_rows(self, after: int, upto: int, limit: int) -> list[Sequence[Any]]:
        async with self.database.driver_connection() as conn:
            return list(await conn.fetch(_PG_LOG_ROWS, after, upto, limit))

    async def _settle_horizon(self) -> int:
        """Advance and return the settled horizon (see the module's docstring)."""
        async with self.database.driver_connection() as conn:
            head = int(await conn.fetchval(_PG_HEAD))
            if head > self._horizon:
                in_flight = await conn.fetchval(_PG_MARKER_HOLDERS, *WRITER_MARKER, None)
                delay = 0.0002
                while in_flight:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    in_flight = await conn.fetchval(_PG_MARKER_HOLDERS, *WRITER_MARKER, in_flight)
                self._horizon = max(self._horizon, head)
        return self._horizon

    async def iter_log(
        self,
        after: int = 0,
        *,
        page_size: int = 1000,
        until: int | None = None,
        event_types: Sequence[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after ``after`` (up to position ``until``), read in pages."""
        while True:
            page = await self.read_log(after, page_size, event_types=event_types)
            for record in page:
                if until is not None and record.position > until:
                    return
                yield record
            if len(page) < page_size:
                return
            after = page[-1].position

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it has no events."""
        head = await self.database.read(self._stream_heads, [stream_id])
        return head.get(stream_id, ("", 0))[1]

    async def stream_type(self, stream_id: str) -> str | None:
        """The type of the stream's aggregate, or None when the stream has no events."""
        head = await self.database.read(self._stream_heads, [stream_id])
        return head[stream_id][0] if stream_id in head else None

    async def head_position(self) -> int:
        """The highest position a reader can read up to now; 0 when the log is empty."""
        if self._postgres:
            return await self._settle_horizon()
        return int(await self.database.read(_scalar, select(func.coalesce(func.max(events.c.position), 0))))

    async def get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        found = await self._fetch(self._select().where(events.c.event_id == event_id))
        return found[0] if found else None

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot (a cache: one at the same stream version is kept as it is)."""
        await self.database.write(self._insert_snapshots, [snapshot])

    async def latest_snapshot(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """The newest snapshot of a stream, or the newest at or below ``max_version``."""
        query = select(
            snapshots.c.stream_id, snapshots.c.stream_type, snapshots.c.version,
            cast(snapshots.c.state, Text) if self._postgres else snapshots.c.state,
            snapshots.c.state_schema, snapshots.c.recorded_at,
        ).where(snapshots.c.stream_id == stream_id)
        if max_version is not None:
            query = query.where(snapshots.c.version <= max_version)
        query = query.order_by(snapshots.c.version.desc()).limit(1)
        rows = await self.database.read(_all_rows, query)
        return Snapshot(*rows[0]) if rows else None


# Built once: statement construction costs more than executing these small queries.
_HEAD_OF_ONE = (
    select(events.c.stream_id, func.min(events.c.stream_type), func.max(events.c.version))
    .where(events.c.stream_id == bindparam("stream_id"))
    .group_by(events.c.stream_id)
)
_HEADS_OF_MANY = (
    select(events.c.stream_id, func.min(events.c.stream_type), func.max(events.c.version))
    .where(events.c.stream_id.in_(bindparam("stream_ids", expanding=True)))
    .group_by(events.c.stream_id)
)
_STORED_BY_ID = select(
    events.c.event_id, events.c.stream_id, events.c.version, events.c.position, events.c.recorded_at
).where(events.c.event_id.in_(bindparam("event_ids", expanding=True)))


_PG_HEAD = "SELECT coalesce(max(position), 0) FROM facta_events"
# The transactions holding the writer marker in this database (of those in $3, if given).
_PG_MARKER_HOLDERS = """
SELECT array_agg(virtualtransaction) FROM pg_locks
WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ($3::text[] IS NULL OR virtualtransaction = ANY($3::text[]))
"""


_LOG_COLUMNS = ", ".join(c.name for c in events.c)
_PG_LOG_ROWS = (
    f"SELECT {_LOG_COLUMNS.replace('payload', 'payload::text')} FROM facta_events"
    " WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
)
_PG_WINDOW_ROWS = (
    f"SELECT {_LOG_COLUMNS.replace('payload', 'payload::text')} FROM facta_events"
    " WHERE position > $1 AND position <= $2 AND ($4::text[] IS NULL OR event_type = ANY($4::text[]))"
    " ORDER BY position LIMIT $3"
)
_SQLITE_LOG_ROWS = f"SELECT {_LOG_COLUMNS} FROM facta_events WHERE position > ? ORDER BY position LIMIT ?"


def _sqlite_log_rows(conn: Connection, after: int, limit: int) -> list[Sequence[Any]]:
    driver = conn.connection.driver_connection
    assert driver is not None
    return list(driver.execute(_SQLITE_LOG_ROWS, (after, limit)).fetchall())


# How long an append may take from the start of its transaction (its recorded_at) to
# taking its positions. facta's appends take them in their first statement, so this is a
# wide margin; it only makes the bounds below looser, never wrong.
_CLOCK_MARGIN = timedelta(minutes=5)
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _window_bounds(
    conn: Connection, since: datetime | None, until: datetime | None
) -> tuple[int | None, int | None]:
    """Exclusive position bounds for events recorded in [since, until], found with the
    (recorded_at, position) index. recorded_at is the start of the appending transaction,
    and positions are taken within _CLOCK_MARGIN of it, in increasing order over time:

    - the newest event recorded before ``since - margin`` took its position before
      ``since``, so every event recorded at or after ``since`` is past it;
    - the oldest event recorded after ``until + margin`` took its position after
      ``until + margin``, so every event recorded at or before ``until`` is before it.
    """
    c = events.c
    low = high = None
    # Within the margin of the first or last time a datetime holds, there is no bound
    # (and the margin's arithmetic would overflow).
    if since is not None and since.astimezone(UTC) >= _EARLIEST + _CLOCK_MARGIN:
        low = conn.execute(
            select(c.position).where(c.recorded_at < since - _CLOCK_MARGIN)
            .order_by(c.recorded_at.desc(), c.position.desc()).limit(1)
        ).scalar()
    if until is not None and until.astimezone(UTC) <= _LATEST - _CLOCK_MARGIN:
        high = conn.execute(
            select(c.position).where(c.recorded_at > until + _CLOCK_MARGIN)
            .order_by(c.recorded_at, c.position).limit(1)
        ).scalar()
    return low, high


def _sqlite_window(conn: Connection, query: Select[Any], after: int, limit: int) -> tuple[Sequence[Any], int]:
    head = int(conn.execute(select(func.coalesce(func.max(events.c.position), 0))).scalar_one())
    rows = conn.execute(_log_slice(query, after, head, limit)).all()
    return rows, (rows[-1][0] if len(rows) >= limit else max(head, after))


def _log_slice(query: Select[Any], after: int, upto: int, limit: int) -> Select[Any]:
    return (
        query.where(events.c.position > after, events.c.position <= upto).order_by(events.c.position).limit(limit)
    )


def _all_rows(conn: Connection, query: Select[Any]) -> Sequence[Any]:
    return conn.execute(query).all()


def _scalar(conn: Connection, query: Select[Any]) -> Any:
    return conn.execute(query).scalar_one()


def _scalar_or_none(conn: Connection, query: Select[Any]) -> Any:
    return conn.execute(query).scalar_one_or_none()


def _conflicting(batch: list[tuple[StreamAppend, list[PendingEvent]]], current: dict[str, tuple[str, int]]) -> bool:
    return any(
        a.expected_version is not None and current.get(a.stream_id, ("", 0))[1] != a.expected_version
        for a, _ in batch
    )


def _validate(batch: list[tuple[StreamAppend, list[PendingEvent]]]) -> None:
    seen: set[str] = set()
    for append, pending in batch:
        if not isinstance(append.stream_id, str) or not append.stream_id or len(append.stream_id) > 255:
            raise StoreError(f"invalid stream id {append.stream_id!r}: need a non-empty string of at most 255 characters")
        if not append.stream_type:
            raise StoreError(f"stream {append.stream_id!r}: stream type must be a non-empty string")
        if append.stream_id in seen:
            raise StoreError(f"stream {append.stream_id!r} appears twice in one append")
        seen.add(append.stream_id)
        if not pending:
            raise StoreError(f"append to stream {append.stream_id!r} has no events")
        if append.expected_version is not None and (
            not isinstance(append.expected_version, int) or append.expected_version < 0
        ):
            raise StoreError(f"stream {append.stream_id!r}: invalid expected version {append.expected_version!r}")
        for p in pending:
            if not isinstance(p.event, DomainEvent) or "event_type" not in vars(type(p.event)):
                raise EventRegistryError(
                    f"{type(p.event).__qualname__} is not a registered event class: declare it with name=..."
                )


def _check_types(batch: list[tuple[StreamAppend, list[PendingEvent]]], current: dict[str, tuple[str, int]]) -> None:
    for append, _ in batch:
        if append.stream_id in current and current[append.stream_id][0] != append.stream_type:
            raise _StreamTypeMismatch(append.stream_id, append.stream_type, current[append.stream_id][0])


def _conflict(
    batch: list[tuple[StreamAppend, list[PendingEvent]]], current: dict[str, tuple[str, int]]
) -> ConcurrencyError:
    for append, _ in batch:
        actual = current.get(append.stream_id, ("", 0))[1]
        if append.expected_version is not None and actual != append.expected_version:
            return ConcurrencyError(append.stream_id, append.expected_version, actual)
    raise AssertionError("no conflicting stream in batch")  # pragma: no cover


