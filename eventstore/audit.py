"""History queries for auditors and support: what happened to a stream, who did it, and
what it looked like at a version or a moment.

Every function reads the permanent store and is backed by an index of
``facta_events``: a stream's rows by ``(stream_id, version)``; the log filtered by
``(event_type, position)``, ``(stream_type, position)``, ``(actor, position)``,
``(correlation_id, position)`` or ``(recorded_at, position)`` (alembic revision 0001).
Times must be timezone-aware; every time returned is UTC. On PostgreSQL, log queries
stop at the store's settled horizon, so a page never shows an event that an earlier
page (or a reader tailing the log) could still miss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from facta.domain import Aggregate, AggregateState, aggregate_class

from .errors import StoreError, StreamNotFound
from .records import RecordedEvent
from .repository import Repository, VersionNotFound
from .schema import events as events_table
from .store import EventStore
from .validation import check_position, check_text, check_texts, check_version

__all__ = [
    "AuditError",
    "EventPage",
    "FieldChange",
    "StateAt",
    "StateDiff",
    "diff",
    "events",
    "history",
    "state_at",
    "trace",
    "utc_text",
]

_MAX_LIMIT = 10_000


class AuditError(StoreError):
    """An audit query was asked something that cannot be answered (one line, names the values)."""


@dataclass(frozen=True, slots=True)
class StateAt:
    """An aggregate's state as it was after event ``version`` (recorded at ``recorded_at``)."""

    stream_id: str
    stream_type: str
    version: int
    recorded_at: datetime
    state: AggregateState
    aggregate: Aggregate = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id, "stream_type": self.stream_type, "version": self.version,
            "recorded_at": utc_text(self.recorded_at), "state": self.state.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One state field that events between two versions changed: its value before and
    after, and the events (version, type) that changed it, in order."""

    field: str
    old: Any
    new: Any
    changed_by: tuple[tuple[int, str], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field, "old": self.old, "new": self.new,
            "changed_by": [{"version": v, "event_type": t} for v, t in self.changed_by],
        }


@dataclass(frozen=True, slots=True)
class StateDiff:
    """What the events after ``from_version`` up to ``to_version`` changed in a state."""

    stream_id: str
    stream_type: str
    from_version: int
    to_version: int
    changes: tuple[FieldChange, ...]
    events: tuple[RecordedEvent, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id, "stream_type": self.stream_type, "from_version": self.from_version,
            "to_version": self.to_version, "changes": [c.as_dict() for c in self.changes],
            "events": [{"version": e.version, "event_type": e.event_type} for e in self.events],
        }


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of events. ``cursor`` is None on the last page; otherwise pass it as
    ``after_position`` (oldest first) or ``before_position`` (newest first) for the next."""

    events: list[RecordedEvent]
    cursor: int | None


# -- one stream -------------------------------------------------------------------------------


async def history(store: EventStore, stream_id: str) -> list[RecordedEvent]:
    """Every event of a stream, in version order. Raises :class:`StreamNotFound`."""
    records = await store.read_stream(stream_id)
    if not records:
        raise StreamNotFound(stream_id)
    return records


async def _stream_class(store: EventStore, stream_id: str) -> tuple[str, type[Aggregate]]:
    stream_type = await store.stream_type(stream_id)
    if stream_type is None:
        raise StreamNotFound(stream_id)
    return stream_type, aggregate_class(stream_type)


async def state_at(
    store: EventStore,
    stream_id: str,
    *,
    at_version: int | None = None,
    as_of: datetime | None = None,
) -> StateAt:
    """The stream's aggregate as it was after event ``at_version``, or after the last event
    recorded at or before ``as_of`` (an event recorded exactly then is included). Give at
    most one of the two; neither means now. Loads start from the newest usable snapshot.

    Raises :class:`StreamNotFound`, :class:`VersionNotFound` (a version past the end) and
    :class:`AuditError` (a time before the stream's first event, or in the future).
    """
    check_text("stream id", stream_id)
    check_version("at_version", at_version, optional=True)
    if at_version is not None and as_of is not None:
        raise AuditError("give at most one of at_version and as_of")
    if as_of is not None:
        as_of = _aware(as_of, "as_of")
        now = datetime.now(UTC)
        if as_of > now:
            raise AuditError(f"time {utc_text(as_of)} is in the future (now is {utc_text(now)})")
    stream_type, cls = await _stream_class(store, stream_id)
    if as_of is not None:
        found = await store.database.read(_last_version_at, stream_id, as_of)
        if found is None:
            first = (await store.read_stream(stream_id, limit=1))[0]
            raise AuditError(
                f"stream {stream_id!r} did not exist at {utc_text(as_of)}: its first event was recorded at "
                f"{utc_text(first.recorded_at)}"
            )
        at_version = found
    if at_version is None:
        at_version = await store.stream_version(stream_id)
    if at_version < 1:
        raise VersionNotFound(stream_id, at_version, await store.stream_version(stream_id))
    aggregate = await Repository(store).get(cls, stream_id, at_version=at_version)
    (record,) = await store.read_stream(stream_id, from_version=at_version, to_version=at_version)
    return StateAt(stream_id, stream_type, at_version, record.recorded_at, aggregate.state, aggregate)


def _last_version_at(conn: Connection, stream_id: str, as_of: datetime) -> int | None:
    """The newest version of the stream recorded at or before ``as_of`` (the stream's rows,
    through the unique (stream_id, version) index, newest first)."""
    c = events_table.c
    query = (
        select(c.version)
        .where(c.stream_id == stream_id, c.recorded_at <= as_of)
        .order_by(c.version.desc())
        .limit(1)
    )
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else int(value)


async def diff(store: EventStore, stream_id: str, from_version: int, to_version: int) -> StateDiff:
    """Which state fields the events after ``from_version`` up to ``to_version`` changed
    (old -> new), and which events changed each. ``from_version`` 0 is the empty state
    before the first event."""
    check_text("stream id", stream_id)
    check_version("from_version", from_version)
    check_version("to_version", to_version)
    if from_version < 0:
        raise AuditError(f"from_version must be >= 0, got {from_version}")
    if to_version <= from_version:
        raise AuditError(f"to_version ({to_version}) must be greater than from_version ({from_version})")
    stream_type, cls = await _stream_class(store, stream_id)
    head = await store.stream_version(stream_id)
    if to_version > head:
        raise VersionNotFound(stream_id, to_version, head)
    if from_version == 0:
        aggregate: Aggregate = cls.rehydrate(stream_id, ())
    else:
        aggregate = await Repository(store).get(cls, stream_id, at_version=from_version)
    records = await store.read_stream(stream_id, from_version=from_version + 1, to_version=to_version)
    start: dict[str, Any] = aggregate.state.model_dump(mode="json")
    before = start
    changed_by: dict[str, list[tuple[int, str]]] = {}
    for record in records:
        aggregate._apply(record.event)
        after: dict[str, Any] = aggregate.state.model_dump(mode="json")
        for name, value in after.items():
            if before.get(name) != value:
                changed_by.setdefault(name, []).append((record.version, record.event_type))
        before = after
    changes = tuple(
        FieldChange(name, start.get(name), before.get(name), tuple(changed_by[name]))
        for name in before
        if name in changed_by
    )
    return StateDiff(stream_id, stream_type, from_version, to_version, changes, tuple(records))


# -- the log ----------------------------------------------------------------------------------


async def events(
    store: EventStore,
    *,
    types: Sequence[str] | None = None,
    stream_types: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str | None = None,
    correlation_id: str | None = None,
    newest_first: bool = False,
    limit: int = 100,
    after_position: int | None = None,
    before_position: int | None = None,
) -> EventPage:
    """A page of the log's events matching every filter given (types and stream types:
    any of those listed; ``since <= recorded_at <= until``), in position order or newest
    first, strictly between ``after_position`` and ``before_position``.

    Raises :class:`AuditError` for a bad limit or window and :class:`InvalidValue` (before
    any I/O) for a name facta cannot store or a position outside int64."""
    check_texts("types", types)
    check_texts("stream_types", stream_types)
    check_text("actor", actor, optional=True, empty=True)
    check_text("correlation id", correlation_id, optional=True, empty=True)
    check_position("after_position", after_position, optional=True)
    check_position("before_position", before_position, optional=True)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= _MAX_LIMIT:
        raise AuditError(f"limit must be between 1 and {_MAX_LIMIT}, got {limit!r}")
    if since is not None:
        since = _aware(since, "since")
    if until is not None:
        until = _aware(until, "until")
    if since is not None and until is not None and since > until:
        raise AuditError(f"since ({utc_text(since)}) is after until ({utc_text(until)})")
    c = events_table.c
    query = store._select()
    if types is not None:
        query = query.where(c.event_type.in_(list(types)))
    if stream_types is not None:
        query = query.where(c.stream_type.in_(list(stream_types)))
    if since is not None:
        query = query.where(c.recorded_at >= since)
    if until is not None:
        query = query.where(c.recorded_at <= until)
    if actor is not None:
        query = query.where(c.actor == actor)
    if correlation_id is not None:
        query = query.where(c.correlation_id == correlation_id)
    # Positions bounding a time window, so the log is walked from about there instead of
    # from its start (or end).
    low, high = await store.positions_around(since, until)
    if low is not None:
        after_position = low if after_position is None else max(after_position, low)
    if high is not None:
        before_position = high if before_position is None else min(before_position, high)
    if after_position is not None:
        query = query.where(c.position > after_position)
    if before_position is not None:
        query = query.where(c.position < before_position)
    if store.database.dialect == "postgresql":
        query = query.where(c.position <= await store.head_position())
    query = query.order_by(c.position.desc() if newest_first else c.position).limit(limit + 1)
    found = await store._fetch(query)
    page = found[:limit]
    return EventPage(page, page[-1].position if len(found) > limit else None)


async def trace(store: EventStore, correlation_id: str) -> list[RecordedEvent]:
    """Every event of one business transaction (one correlation id), across streams, in
    position order. Empty when no event has that correlation id."""
    check_text("correlation id", correlation_id, empty=True)
    out: list[RecordedEvent] = []
    after: int | None = None
    while True:
        page = await events(store, correlation_id=correlation_id, limit=_MAX_LIMIT, after_position=after)
        out += page.events
        if page.cursor is None:
            return out
        after = page.cursor


# -- helpers ----------------------------------------------------------------------------------


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise AuditError(f"{what}: naive time {value.isoformat()} given: give a time zone")
    return value.astimezone(UTC)


def utc_text(value: datetime) -> str:
    """A time as ISO 8601 in UTC with a ``Z``: ``2026-11-22T11:00:00.123456Z``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

