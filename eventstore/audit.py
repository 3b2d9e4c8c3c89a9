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

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, literal_column, select, text
from sqlalchemy.sql.elements import ColumnElement

from facta.domain import Aggregate, AggregateState, aggregate_class
from facta.errors import AuditError, StreamNotFound

from . import _blocks as blocks
from .records import RecordedEvent
from .repository import Repository, VersionNotFound
from .schema import events as events_table
from .store import EventStore
from .validation import INT32, check_position, check_text, check_texts, check_version, check_window_args

__all__ = [
    "FILTER_COLUMNS",
    "AuditError",
    "EventPage",
    "FieldChange",
    "StateAt",
    "StateDiff",
    "UnknownValue",
    "diff",
    "events",
    "history",
    "state_at",
    "trace",
    "unknown_filter_values",
    "utc_text",
]

_MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class StateAt:
    """An aggregate's state as it was after event ``version`` (recorded at ``recorded_at``).

    ``left_out``: for a state as of a time, the versions below ``version`` that were
    recorded after that time (a writer whose clock stepped back, or an append that
    started later but took the earlier version), in order. They are not applied, so a
    non-empty ``left_out`` means a state that no reader of the stream ever saw."""

    stream_id: str
    stream_type: str
    version: int
    recorded_at: datetime
    state: AggregateState
    aggregate: Aggregate = field(repr=False)
    left_out: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; ``left_out_versions`` appears only when some versions were left out."""
        data: dict[str, Any] = {
            "stream_id": self.stream_id, "stream_type": self.stream_type, "version": self.version,
            "recorded_at": utc_text(self.recorded_at), "state": self.state.model_dump(mode="json"),
        }
        if self.left_out:
            data["left_out_versions"] = list(self.left_out)
        return data


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
    """Every event of a stream, in version order. Raises :class:`StreamNotFound`.

    From the lowest version stored: facta's own streams start at 1, byte events
    (:meth:`EventStore.append_bytes`, eventsourcing's) may start at 0 or below."""
    records = await store.read_stream(stream_id, from_version=INT32[0])
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
    """The stream's aggregate as it was after event ``at_version``, or as of the time
    ``as_of``: built from exactly the stream's events recorded at or before ``as_of`` (an
    event recorded exactly then is included), applied in version order. Give at most one
    of the two; neither means now. Loads start from the newest usable snapshot.

    recorded_at is one time per append, but it need not grow with the version: an append
    that started earlier can take a later version than one that started after it, and a
    writer whose clock stepped back records an earlier time at a later version, by any
    amount. Then the events recorded by ``as_of`` are not a prefix of the stream: the
    result is after the newest of them (``version``), without the versions below it that
    were recorded later (``left_out``), a state that no reader of the stream saw.

    Raises :class:`StreamNotFound`, :class:`VersionNotFound` (a version past the end) and
    :class:`AuditError` (a time before the stream's first recorded event, or in the future).
    """
    check_window_args(as_of=as_of)
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
        found = await store.database.read(_versions_at, stream_id, as_of)
        if found is None:
            earliest = await store.database.read(_first_recorded, stream_id)
            raise AuditError(
                f"stream {stream_id!r} did not exist at {utc_text(as_of)}: its first event was recorded at "
                f"{utc_text(earliest)}"
            )
        at_version, first_later = found
        if first_later is not None:
            return await _state_without_later(store, stream_id, stream_type, cls, as_of, at_version, first_later)
    if at_version is None:
        at_version = await store.stream_version(stream_id)
    if at_version < 1:
        raise VersionNotFound(stream_id, at_version, await store.stream_version(stream_id))
    aggregate = await Repository(store).get(cls, stream_id, at_version=at_version)
    (record,) = await store.read_stream(stream_id, from_version=at_version, to_version=at_version)
    return StateAt(stream_id, stream_type, at_version, record.recorded_at, aggregate.state, aggregate)


async def _state_without_later(
    store: EventStore, stream_id: str, stream_type: str, cls: type[Aggregate], as_of: datetime, last: int,
    first_later: int,
) -> StateAt:
    """The state from the events recorded at or before ``as_of`` where version
    ``first_later`` (< ``last``) and maybe others below ``last`` were recorded after it:
    versions up to ``first_later - 1`` load as usual (snapshots too), the rest one by one."""
    if first_later > 1:
        aggregate = await Repository(store).get(cls, stream_id, at_version=first_later - 1)
    else:
        aggregate = cls.rehydrate(stream_id, ())
    records = await store.read_stream(stream_id, from_version=first_later, to_version=last)
    left_out = []
    for record in records:
        if record.recorded_at <= as_of:
            aggregate._apply(record.event)
        else:
            left_out.append(record.version)
    aggregate.version = last
    return StateAt(stream_id, stream_type, last, records[-1].recorded_at, aggregate.state, aggregate,
                   tuple(left_out))


def _versions_at(conn: Connection, stream_id: str, as_of: datetime) -> tuple[int, int | None] | None:
    """None if no event of the stream was recorded at or before ``as_of``; otherwise the
    newest version that was, and the oldest version below it that was recorded after
    ``as_of`` (None: every version up to it was recorded by then), in one transaction.

    The first reads the stream's rows newest first through the unique (stream_id,
    version) index. The second has no order or limit, so the database reads whichever
    is smaller: the stream's rows below that version, or the (recorded_at, position)
    index after ``as_of``; it returns the versions left out, usually none."""
    c = events_table.c
    newest = conn.execute(
        select(c.version).where(c.stream_id == stream_id, c.recorded_at <= as_of).order_by(c.version.desc()).limit(1)
    ).scalar_one_or_none()
    if newest is None:
        return None
    later = conn.execute(
        select(c.version).where(c.stream_id == stream_id, c.version < newest, c.recorded_at > as_of)
    ).scalars().all()
    return int(newest), min(later, default=None)


def _first_recorded(conn: Connection, stream_id: str) -> datetime:
    """The earliest recorded_at of the stream's events (not necessarily version 1's)."""
    c = events_table.c
    earliest: datetime = conn.execute(select(func.min(c.recorded_at)).where(c.stream_id == stream_id)).scalar_one()
    return earliest


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

    A time window is exact whatever the writers' clocks did: it is a filter on each
    event's recorded_at (through the (recorded_at, position) index), never a range of
    positions guessed from times, because recorded_at does not follow position order
    (concurrent appends interleave, and a clock that steps back records an earlier time
    at a later position). So the events of a window need not be consecutive in the log,
    and the page holds the first (or last) ``limit`` of them by position.

    Raises :class:`AuditError` for a bad limit or window and :class:`InvalidValue` (before
    any I/O) for a name facta cannot store or a position outside int64."""
    check_window_args(since=since, until=until)
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
    where: list[ColumnElement[bool]] = []
    if types is not None:
        where.append(c.event_type.in_(list(types)))
    if stream_types is not None:
        where.append(c.stream_type.in_(list(stream_types)))
    if since is not None:
        where.append(c.recorded_at >= since)
    if until is not None:
        where.append(c.recorded_at <= until)
    if actor is not None:
        where.append(c.actor == actor)
    if correlation_id is not None:
        where.append(c.correlation_id == correlation_id)
    if since is None and until is None:
        if after_position is not None:
            where.append(c.position > after_position)
        if before_position is not None:
            where.append(c.position < before_position)
        order = c.position.desc() if newest_first else c.position
        found = await store.find_events(*where, order_by=order, limit=limit + 1, settled=True)
    else:
        # Positions strictly between low and high: on PostgreSQL up to the settled horizon.
        head = await store.head_position()
        low = after_position if after_position is not None else 0
        high = head + 1 if before_position is None else min(before_position, head + 1)
        found = await _window_page(store, where, since, until, low, high, newest_first, limit + 1)
    page = found[:limit]
    return EventPage(page, page[-1].position if len(found) > limit else None)


# A time-window query first walks this many positions per event it wants.
_FIRST_WALK = 4.0


async def _window_page(
    store: EventStore, where: list[ColumnElement[bool]], since: datetime | None, until: datetime | None, low: int,
    high: int, newest_first: bool, want: int,
) -> list[RecordedEvent]:
    """The first ``want`` events meeting ``where`` (its filters include the time window) with
    ``low < position < high``, in position order (or the last ones, newest first).

    The window's events can be anywhere in the log (recorded_at is not in position
    order). The log blocks (:mod:`facta.eventstore._blocks`) rule out the summarised
    blocks whose recorded times miss the window; what is left (the candidate
    positions) is read in one of two exact ways: walk it by position from the cursor
    through the primary key, which costs the positions passed until the page is full,
    or read the window through the (recorded_at, position) index and sort it by
    position, which costs the window's events. It first walks ``4 * want`` candidate
    positions (a page of a window around the cursor ends there). Then it looks up the
    window's first and last events by recorded_at (one index entry each): in a log
    whose clocks mostly agree, the candidate positions from the cursor to the nearer
    one estimate what a walk passes, and the positions between them the window's size,
    and it takes the way that looks cheaper. Both ways are exact whatever the clocks
    did and whichever summaries exist; a wrong estimate only costs time."""
    c = events_table.c
    # A walk reads each range by the primary key, descending with newest_first.
    by_position = c.position.desc() if newest_first else c.position
    ranges = await blocks.window_ranges(store, since, until, low, high)
    step = max(1, int(_FIRST_WALK * want))
    walked = blocks.take(ranges, step, from_end=newest_first)
    found = await store.find_events(*where, order_by=by_position, limit=want, ranges=walked)
    if len(found) >= want or not walked:
        return found
    if newest_first:
        high = walked[-1][0]
    else:
        low = walked[-1][1]
    ranges = blocks.clip(ranges, low, high)
    if not ranges:
        return found
    ends = await store.database.read(_window_ends, since, until, low, high)
    if ends is None:
        return found  # no event recorded in the window is left between the bounds
    first, last = ends
    walk = blocks.size(blocks.clip(ranges, last, high) if newest_first else blocks.clip(ranges, low, first))
    if abs(last - first) < walk:
        # Sorted by position + 0, not by the primary key, so the database reads the
        # window through its index instead of walking the log.
        key: Any = c.position + literal_column("0")
        found += await store.find_events(
            *where, c.position > low, c.position < high, order_by=key.desc() if newest_first else key,
            limit=want - len(found),
        )
    else:
        ordered = list(reversed(ranges)) if newest_first else ranges
        found += await store.find_events(*where, order_by=by_position, limit=want - len(found), ranges=ordered)
    return found


def _window_ends(
    conn: Connection, since: datetime | None, until: datetime | None, low: int, high: int
) -> tuple[int, int] | None:
    """The positions of the first and the last event by recorded_at (then position) of
    those recorded in [since, until] with low < position < high, each one entry of the
    (recorded_at, position) index; None when there is none."""
    c = events_table.c
    query = select(c.position).where(c.position > low, c.position < high)
    if since is not None:
        query = query.where(c.recorded_at >= since)
    if until is not None:
        query = query.where(c.recorded_at <= until)
    first = conn.execute(query.order_by(c.recorded_at, c.position).limit(1)).scalar_one_or_none()
    if first is None:
        return None
    last = conn.execute(query.order_by(c.recorded_at.desc(), c.position.desc()).limit(1)).scalar_one()
    return int(first), int(last)


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


# -- filter values that match nothing -----------------------------------------------------------

#: The columns :func:`unknown_filter_values` checks, with their names in a sentence.
FILTER_COLUMNS = {"event_type": "type", "stream_type": "stream type", "actor": "actor",
                  "correlation_id": "correlation id"}
# Few distinct values: close names are cheap to list.
_SUGGESTED = {"event_type", "stream_type", "actor"}


@dataclass(frozen=True)
class UnknownValue:
    """A filter value no stored event has: its ``column`` (a key of
    :data:`FILTER_COLUMNS`), the ``value``, and up to three stored values close to it
    (``close``, most similar first; empty for correlation ids, which are not listed)."""

    column: str
    value: str
    close: tuple[str, ...] = ()


async def unknown_filter_values(store: EventStore, filters: Mapping[str, Sequence[str]]) -> list[UnknownValue]:
    """The values of ``filters`` (``{column: values}``, columns of :data:`FILTER_COLUMNS`)
    that no stored event holds in that column: a typo, most likely. Each is found by one
    index lookup; the close values by a skip scan over the column's index (one lookup per
    distinct value, at most 2000), not a walk of the log. Raises :class:`AuditError` for
    a column not in :data:`FILTER_COLUMNS`."""
    out: list[UnknownValue] = []
    for column, values in filters.items():
        if column not in FILTER_COLUMNS:
            raise AuditError(f"cannot check values of column {column!r}: give one of {', '.join(FILTER_COLUMNS)}")
        if not values:
            continue
        found = await store.database.read(_stored_values, column, list(values))
        missing = [v for v in values if v not in found]
        if not missing:
            continue
        known = await store.database.read(_distinct_values, column) if column in _SUGGESTED else []
        out += [UnknownValue(column, value, tuple(difflib.get_close_matches(value, known, n=3, cutoff=0.8)))
                for value in missing]
    return out


def _stored_values(conn: Connection, column: str, values: list[str]) -> set[str]:
    """Which of ``values`` some event holds in ``column`` (one index lookup each)."""
    col = events_table.c[column]
    return {v for v in values if conn.execute(select(col).where(col == v).limit(1)).first() is not None}


def _distinct_values(conn: Connection, column: str, limit: int = 2000) -> list[str]:
    """The distinct values of an indexed ``column``, by a skip scan over its index (one
    lookup per value, not a walk of the log)."""
    assert column in FILTER_COLUMNS
    query = text(
        f"WITH RECURSIVE t(v) AS (SELECT MIN({column}) FROM facta_events UNION ALL "
        f"SELECT (SELECT MIN({column}) FROM facta_events WHERE {column} > t.v) FROM t WHERE t.v IS NOT NULL) "
        f"SELECT v FROM t WHERE v IS NOT NULL LIMIT {int(limit)}"
    )
    return [row[0] for row in conn.execute(query)]


# -- helpers ----------------------------------------------------------------------------------


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise AuditError(f"{what}: naive time {value.isoformat()} given: give a time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise AuditError(
            f"{what}: time {value.isoformat()} is outside the years 0001 to 9999 once converted to UTC"
        ) from None


def utc_text(value: datetime) -> str:
    """A time as ISO 8601 in UTC with a ``Z``: ``2026-11-22T11:00:00.123456Z``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

