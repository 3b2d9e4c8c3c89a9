"""The append hot path, written once per dialect as plain SQL on the driver.

An append is the hottest path in the store, so it bypasses SQLAlchemy's statement machinery (which cost more than the statements
themselves, see ARCHITECTURE.md) while everything else in the store uses Core.

Both appenders take an :class:`AppendPlan` (validated and encoded before any I/O) and
either return the new positions, raise :class:`Rejected` with the streams' current heads
(a version or type mismatch: nothing was written), or raise
:class:`LostRace` (a unique constraint fired: a concurrent writer won a version or an
event id between the check and the insert; nothing was written).

:class:`PostgresAppender` and :class:`SQLiteAppender` wrap them for the store, each with
what else an append needs of its dialect: how to find events stored already (to tell a
retry from a conflict) and how to write snapshots. The log's readers are next door
(:mod:`._readers`); the store picks one appender and one reader when it opens.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from facta.domain import PendingEvent

from .database import Database
from .integrity import Chainer, micros, state_hash
from .records import AppendResult, Snapshot, StreamAppend
from .schema import UTCDateTime, snapshots

__all__ = [
    "AppendPlan",
    "Appender",
    "LostRace",
    "PostgresAppender",
    "Rejected",
    "SQLiteAppender",
    "append_postgres",
    "append_sqlite",
]



class Rejected(Exception):
    """The streams were not where the plan expected: ``heads`` maps stream id to
    (stream type, version) for the streams that exist."""

    def __init__(self, heads: dict[str, tuple[str, int]]) -> None:
        self.heads = heads


class LostRace(Exception):
    """A unique constraint fired: someone else appended first. Nothing was written."""


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """One append, validated and encoded: streams, events, metadata and snapshots."""

    streams: Sequence[StreamAppend]
    pending: Sequence[Sequence[PendingEvent]]
    payloads: Sequence[Sequence[str]]
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    snapshots: Sequence[Snapshot]
    # The W3C trace context every event of the append records (facta.tracing.trace_fields).
    traceparent: str | None = None
    tracestate: str | None = None

    def results(self, starts: Sequence[int], positions: dict[uuid.UUID, int], recorded_at: datetime) -> list[AppendResult]:
        return [
            AppendResult(
                stream.stream_id,
                tuple(positions[p.event_id] for p in pending),
                start + 1,
                start + len(pending),
                recorded_at,
            )
            for stream, pending, start in zip(self.streams, self.pending, starts, strict=True)
        ]

    def consecutive_results(self, starts: Sequence[int], first: int, recorded_at: datetime) -> list[AppendResult]:
        """The results when the plan's events took the consecutive positions from ``first``
        on, in plan order (one SQLite insert of all of them)."""
        results = []
        for stream, pending, start in zip(self.streams, self.pending, starts, strict=True):
            n = len(pending)
            results.append(AppendResult(stream.stream_id, tuple(range(first, first + n)), start + 1, start + n, recorded_at))
            first += n
        return results


# -- PostgreSQL ------------------------------------------------------------------------------
#
# One autocommit call of facta_append() (created by migration 0001, replaced by 0004, 0007
# 0008, 0010 and 0013) does the whole append. It takes one lock per stream in ascending key order (so
# appends sharing streams queue in one global order and never deadlock), stamps one
# recorded_at for the whole append, reads each stream's head (the newest entry of the
# (stream_id, version) index: O(log n)), and only if every expected version and stream
# type matches takes its positions with facta_take_positions(n) (the shared writer marker,
# then n contiguous positions however many write at once) and inserts the events (and any
# snapshots); it reports the heads either way. One stream, the common case, takes a path
# of plain statements. Writers to different streams never wait for each other (the
# positions lock is held only while values are taken, never to commit), so their commits
# share WAL flushes; readers hold the log's order instead (EventStore.read_log). The
# function runs with plan_cache_mode = force_generic_plan: PostgreSQL otherwise re-plans
# the statement for every call, which cost more than executing it.

_POSTGRES_APPEND = "SELECT * FROM facta_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"


def _postgres_args(plan: AppendPlan) -> list[Any]:
    ks: list[int] = []
    ns: list[int] = []
    ids: list[uuid.UUID] = []
    types: list[str] = []
    versions: list[int] = []
    payloads: list[str] = []
    occurred: list[datetime] = []
    for k, (pending, encoded) in enumerate(zip(plan.pending, plan.payloads, strict=True), start=1):
        for n, (p, payload) in enumerate(zip(pending, encoded, strict=True), start=1):
            ks.append(k)
            ns.append(n)
            ids.append(p.event_id)
            types.append(p.event.event_type)
            versions.append(p.event.schema_version)
            payloads.append(payload)
            occurred.append(p.occurred_at)
    snaps = plan.snapshots
    return [
        [s.stream_id for s in plan.streams],
        [s.stream_type for s in plan.streams],
        [s.expected_version for s in plan.streams],
        plan.actor,
        plan.correlation_id,
        plan.causation_id,
        ks, ns, ids, types, versions, payloads, occurred,
        [s.stream_id for s in snaps],
        [s.version for s in snaps],
        [s.stream_type for s in snaps],
        [s.state for s in snaps],
        [s.state_schema for s in snaps],
        plan.traceparent,
        plan.tracestate,
    ]


async def append_postgres(connection: Any, plan: AppendPlan) -> list[AppendResult]:
    """Append on an asyncpg connection with no transaction open (autocommit)."""
    from asyncpg.exceptions import DeadlockDetectedError, UniqueViolationError

    try:
        row = await connection.fetchrow(_POSTGRES_APPEND, *_postgres_args(plan))
    except (UniqueViolationError, DeadlockDetectedError):
        # A deadlock is settled like a lost race: the appends take their stream locks in
        # one order, so only event ids shared by appends to other streams can wait in a cycle.
        raise LostRace() from None
    if not row["appended"]:
        heads = {
            s.stream_id: (actual_type, version)
            for s, version, actual_type in zip(plan.streams, row["head_versions"], row["head_types"], strict=True)
            if actual_type is not None
        }
        raise Rejected(heads)
    positions = dict(zip(row["inserted_ids"], row["positions"], strict=True))
    return plan.results(row["head_versions"], positions, row["first_recorded_at"])


# -- SQLite ----------------------------------------------------------------------------------
#
# Runs on the writer thread's own connection inside BEGIN IMMEDIATE, which holds the
# file's write lock for the whole transaction. AUTOINCREMENT then hands out consecutive
# positions to the rows of one executemany, so they follow from last_insert_rowid().
# Times are stored as SQLAlchemy stores them on SQLite: naive UTC text with microseconds.
# Every row of one append (events and snapshots) gets one recorded_at: the clock read once
# the write lock is held, just before positions are taken (as facta_append does).

# The head is the stream's newest row, found by one descent of the (stream_id, version)
# unique index. (max(version) and min(stream_type) together read every row of the
# stream: SQLite's min/max shortcut takes a single aggregate only.) Every row of a stream
# has its type: an append of another type is refused.
# It also gives the hash the stream's next event chains from (facta.eventstore.integrity).
_SQLITE_HEAD = "SELECT version, stream_type, event_hash FROM facta_events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
_SQLITE_INSERT = (
    "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
    " payload, occurred_at, recorded_at, actor, correlation_id, causation_id, event_hash, traceparent, tracestate)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SNAPSHOT = (
    "INSERT OR IGNORE INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at,"
    " state_hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def append_sqlite(connection: sqlite3.Connection, plan: AppendPlan) -> list[AppendResult]:
    """Append inside the caller's ``BEGIN IMMEDIATE`` transaction."""
    heads: dict[str, tuple[str, int]] = {}
    head_hashes: dict[str, tuple[int, bytes | None]] = {}
    for stream in plan.streams:
        head = connection.execute(_SQLITE_HEAD, (stream.stream_id,)).fetchone()
        if head is not None:
            heads[stream.stream_id] = (head[1], head[0])
            head_hashes[stream.stream_id] = (head[0], head[2])
    starts = [heads.get(s.stream_id, ("", 0))[1] for s in plan.streams]
    if any(
        (s.expected_version is not None and s.expected_version != start)
        or (s.stream_id in heads and heads[s.stream_id][0] != s.stream_type)
        for s, start in zip(plan.streams, starts, strict=True)
    ):
        raise Rejected(heads)
    now = datetime.now(UTC)
    recorded = now.replace(tzinfo=None).isoformat(" ", "microseconds")  # sqlite_time(now): now is UTC already
    times: dict[datetime, tuple[str, int]] = {}  # events of one call often share their occurred-at

    def occurred(value: datetime) -> tuple[str, int]:
        found = times.get(value)
        if found is None:
            found = times[value] = (sqlite_time(value), micros(value))
        return found

    chain = Chainer()
    actor, correlation_id, causation_id = plan.actor, plan.correlation_id, plan.causation_id
    traceparent, tracestate = plan.traceparent, plan.tracestate
    rows = []
    for stream, pending, encoded, start in zip(plan.streams, plan.pending, plan.payloads, starts, strict=True):
        sid = stream.stream_id
        base = chain.start(sid, stream.stream_type, actor, correlation_id, causation_id, head_hashes.get(sid))
        for n, (p, payload) in enumerate(zip(pending, encoded, strict=True), start=start + 1):
            event = p.event
            at, us = occurred(p.occurred_at)
            event_id = p.event_id
            rows.append((
                event_id.hex, sid, stream.stream_type, n, event.event_type, event.schema_version, payload, at,
                recorded, actor, correlation_id, causation_id,
                chain.next(base, sid, event_id.bytes, n, event.event_type, event.schema_version, us, payload, None),
                traceparent, tracestate,
            ))
    try:
        last: int | None
        if len(rows) == 1:
            last = connection.execute(_SQLITE_INSERT, rows[0]).lastrowid  # set by every successful INSERT
        else:
            connection.executemany(_SQLITE_INSERT, rows)
            last = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
        if plan.snapshots:
            connection.executemany(
                _SQLITE_SNAPSHOT,
                [(s.stream_id, s.version, s.stream_type, s.state, s.state_schema, recorded, _state_hash(s))
                 for s in plan.snapshots],
            )
    except sqlite3.IntegrityError:
        raise LostRace() from None
    assert last is not None
    return plan.consecutive_results(starts, last - len(rows) + 1, now)


# -- per dialect, for the store ----------------------------------------------------------------


class Appender(Protocol):
    """What the store asks of its dialect's appender."""

    async def append(self, plan: AppendPlan) -> list[AppendResult]:
        """Run the plan: its results, or :class:`Rejected` / :class:`LostRace`."""

    @staticmethod
    def stored(conn: Connection, event_ids: Sequence[uuid.UUID], payloads: Sequence[str]) -> dict[uuid.UUID, Any]:
        """The events among ``event_ids`` stored already, by id, in the order the database
        returned them: each with ``event_id``, ``stream_id``, ``stream_type``, ``version``,
        ``position``, ``recorded_at``, ``event_type``, ``schema_version`` and
        ``same_payload`` (whether the stored payload is the one at the same index of
        ``payloads``, compared as stored)."""

    @staticmethod
    def insert_snapshots(conn: Connection, snaps: Sequence[Snapshot]) -> None:
        """Write snapshots; one at a stored (stream id, version) is kept as it is."""


_STORED = "event_id, stream_id, stream_type, version, position, recorded_at, event_type, schema_version"
_PG_STORED_BY_ID = text(
    f"SELECT {', '.join('e.' + c for c in _STORED.split(', '))}, e.payload::text = c.payload::jsonb::text AS same_payload"
    " FROM unnest(CAST(:event_ids AS uuid[]), CAST(:payloads AS text[])) AS c(event_id, payload)"
    " JOIN facta_events e ON e.event_id = c.event_id"
).columns(recorded_at=UTCDateTime())
_SQLITE_STORED_BY_ID = text(
    f"SELECT {_STORED}, payload, NULL AS same_payload FROM facta_events WHERE event_id IN :event_ids"
).bindparams(bindparam("event_ids", expanding=True)).columns(recorded_at=UTCDateTime())


# Built once, like the statements above: constructing one costs more than running it.
_PG_INSERT_SNAPSHOTS: list[Any] = []


def _pg_insert_snapshots() -> Any:
    """PostgreSQL's ``INSERT ... ON CONFLICT DO NOTHING`` into the snapshots table, built
    on first use and kept (the PostgreSQL dialect is 2 MiB that SQLite stores never need)."""
    if not _PG_INSERT_SNAPSHOTS:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        _PG_INSERT_SNAPSHOTS.append(pg_insert(snapshots).on_conflict_do_nothing())
    return _PG_INSERT_SNAPSHOTS[0]


def _state_hash(s: Snapshot) -> bytes:
    return state_hash(stream_id=s.stream_id, version=s.version, stream_type=s.stream_type,
                      state_schema=s.state_schema, state=s.state)


def _snapshot_rows(snaps: Sequence[Snapshot], hashed: bool = False) -> list[dict[str, Any]]:
    """The rows of ``snaps``; ``hashed`` adds ``state_hash`` (SQLite: PostgreSQL's
    trigger of revision 0010 computes it from the stored jsonb)."""
    return [
        {"stream_id": s.stream_id, "version": s.version, "stream_type": s.stream_type,
         "state": s.state, "state_schema": s.state_schema, **({"state_hash": _state_hash(s)} if hashed else {})}
        for s in snaps
    ]


class PostgresAppender:
    """PostgreSQL: one autocommit ``facta_append()`` call on a pooled connection's asyncpg
    connection (:func:`append_postgres`)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def append(self, plan: AppendPlan) -> list[AppendResult]:
        async with self.database.driver_connection() as conn:
            return await append_postgres(conn, plan)

    @staticmethod
    def stored(conn: Connection, event_ids: Sequence[uuid.UUID], payloads: Sequence[str]) -> dict[uuid.UUID, Any]:
        # The payload compared as stored: JSONB normalises key order and spacing.
        rows = conn.execute(_PG_STORED_BY_ID, {"event_ids": list(event_ids), "payloads": list(payloads)})
        found: dict[uuid.UUID, Any] = {}
        for raw in rows:
            stored = SimpleNamespace(**raw._mapping)
            found[stored.event_id] = stored
        return found

    @staticmethod
    def insert_snapshots(conn: Connection, snaps: Sequence[Snapshot]) -> None:
        conn.execute(_pg_insert_snapshots(), _snapshot_rows(snaps))


class SQLiteAppender:
    """SQLite: :func:`append_sqlite` on the writer thread's own connection, inside
    ``BEGIN IMMEDIATE``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def append(self, plan: AppendPlan) -> list[AppendResult]:
        return await self.database.sqlite_write(append_sqlite, plan)

    @staticmethod
    def stored(conn: Connection, event_ids: Sequence[uuid.UUID], payloads: Sequence[str]) -> dict[uuid.UUID, Any]:
        # Event ids are stored as hex digits; the payload compared as the exact JSON text.
        ours = {event_id.hex: payload for event_id, payload in zip(event_ids, payloads, strict=True)}
        rows = conn.execute(_SQLITE_STORED_BY_ID.bindparams(event_ids=list(ours)))
        found: dict[uuid.UUID, Any] = {}
        for raw in rows:
            stored = SimpleNamespace(**raw._mapping)
            stored.event_id = uuid.UUID(raw.event_id)
            stored.same_payload = raw.payload == ours[raw.event_id]
            found[stored.event_id] = stored
        return found

    @staticmethod
    def insert_snapshots(conn: Connection, snaps: Sequence[Snapshot]) -> None:
        conn.execute(sqlite_insert(snapshots).on_conflict_do_nothing(), _snapshot_rows(snaps, hashed=True))
