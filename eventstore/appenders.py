"""The append hot path, written once per dialect as plain SQL on the driver.

An append is the hottest path in the store, so it bypasses SQLAlchemy's statement machinery (which cost more than the statements
themselves, see ARCHITECTURE.md) while everything else in the store uses Core.

Both appenders take an :class:`AppendPlan` (validated and encoded before any I/O) and
either return the new positions, raise :class:`Rejected` with the streams' current heads
(a version or type mismatch: nothing was written), or raise
:class:`LostRace` (a unique constraint fired: a concurrent writer won a version or an
event id between the check and the insert; nothing was written).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from facta.domain import PendingEvent

from .records import AppendResult, Snapshot, StreamAppend

__all__ = ["WRITER_MARKER", "AppendPlan", "LostRace", "Rejected", "append_postgres", "append_sqlite"]

# The advisory lock every append holds, shared, from before it takes sequence values
# until it commits: the "writer in flight" marker readers wait on (see store.py). As a
# two-key advisory lock it shows in pg_locks as classid 0x66616374 ("fact"), objid 1.
WRITER_MARKER = (0x66616374, 1)


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


# -- PostgreSQL ------------------------------------------------------------------------------
#
# One autocommit call of facta_append() (created by migration 0001, replaced by 0004) does
# the whole append. It takes the shared writer marker first, then one lock per stream in
# ascending key order (so appends sharing streams queue in one global order and never
# deadlock), reads each stream's head, stamps one recorded_at for the whole append,
# inserts the events (and any snapshots) only if every expected version and stream type
# matches, and reports the heads either way. Writers to different streams never wait for
# each other, so their commits share WAL flushes; readers hold the log's order instead
# (EventStore.read_log). The function runs with plan_cache_mode =
# force_generic_plan: PostgreSQL otherwise re-plans the statement for every call, which
# cost more than executing it.

_POSTGRES_APPEND = "SELECT * FROM facta_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"


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

_SQLITE_HEAD = "SELECT max(version), min(stream_type) FROM facta_events WHERE stream_id = ?"
_SQLITE_INSERT = (
    "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
    " payload, occurred_at, recorded_at, actor, correlation_id, causation_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_SNAPSHOT = (
    "INSERT OR IGNORE INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def append_sqlite(connection: sqlite3.Connection, plan: AppendPlan) -> list[AppendResult]:
    """Append inside the caller's ``BEGIN IMMEDIATE`` transaction."""
    heads: dict[str, tuple[str, int]] = {}
    for stream in plan.streams:
        version, stream_type = connection.execute(_SQLITE_HEAD, (stream.stream_id,)).fetchone()
        if version is not None:
            heads[stream.stream_id] = (stream_type, version)
    starts = [heads.get(s.stream_id, ("", 0))[1] for s in plan.streams]
    if any(
        (s.expected_version is not None and s.expected_version != start)
        or (s.stream_id in heads and heads[s.stream_id][0] != s.stream_type)
        for s, start in zip(plan.streams, starts, strict=True)
    ):
        raise Rejected(heads)
    now = datetime.now(UTC)
    recorded = sqlite_time(now)
    times: dict[datetime, str] = {}  # events of one call often share their occurred-at

    def occurred(value: datetime) -> str:
        text = times.get(value)
        if text is None:
            text = times[value] = sqlite_time(value)
        return text

    rows = [
        (
            p.event_id.hex, stream.stream_id, stream.stream_type, start + n, p.event.event_type,
            p.event.schema_version, payload, occurred(p.occurred_at), recorded,
            plan.actor, plan.correlation_id, plan.causation_id,
        )
        for stream, pending, encoded, start in zip(plan.streams, plan.pending, plan.payloads, starts, strict=True)
        for n, (p, payload) in enumerate(zip(pending, encoded, strict=True), start=1)
    ]
    try:
        if len(rows) == 1:
            connection.execute(_SQLITE_INSERT, rows[0])
        else:
            connection.executemany(_SQLITE_INSERT, rows)
        last = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
        if plan.snapshots:
            connection.executemany(
                _SQLITE_SNAPSHOT,
                [(s.stream_id, s.version, s.stream_type, s.state, s.state_schema, recorded) for s in plan.snapshots],
            )
    except sqlite3.IntegrityError:
        raise LostRace() from None
    first = last - len(rows) + 1
    event_ids = [p.event_id for pending in plan.pending for p in pending]
    return plan.results(starts, dict(zip(event_ids, range(first, last + 1), strict=True)), now)
