"""Where each projection is: its source, checkpoints, lag, last error and read-model rows.

`facta projections list` prints this; any Python program that watches projections can
call it too. The lag is counted in the store for projections that read the store log,
and from Kafka's end offsets for those that read Kafka. Skips (events an operator told a
projection to pass over) are recorded and listed here as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from facta.domain import FactaError
from facta.eventstore import EventStore
from facta.eventstore.kafka_codec import utc
from facta.eventstore.relay_status import relays_at
from facta.eventstore.schema import events

from . import _tracking as tracking
from .api import Projection
from .subscriptions import KafkaSettings

__all__ = ["Follower", "ProjectionStatus", "StoreStatus", "checkpoints", "describe_projections", "fill_kafka_lag",
           "projection_status", "skip_event", "skipped_events", "store_status"]

Coord = tuple[str, int]


@dataclass
class ProjectionStatus:
    """One projection as the store and (for lag on Kafka) Kafka see it.

    ``known``: its class is among those given (False: built before, but not loaded now;
    then ``lag`` is None and ``rows`` empty). ``source``: what it was built from, ``"log"``
    or ``"kafka"`` (None: it never ran); ``consumes``: what it reads now (its source, or
    the default when it never ran). ``checkpoints``: the live checkpoints, ``{("", 0):
    position}`` on the store log, ``{(topic, partition): offset}`` on Kafka (offsets of
    the next record). ``lag``: events (store log) or records (Kafka) not applied yet, None
    when unknown. ``rows``: each live read-model table's row count (None: the table does
    not exist yet). ``updated_at``: when its row was last written (aware UTC)."""

    name: str
    known: bool
    source: str | None
    consumes: str
    generation: int | None
    checkpoints: dict[Coord, int]
    lag: int | None
    last_error: str | None
    rows: dict[str, int | None] = field(default_factory=dict)
    updated_at: datetime | None = None


def describe_projections(conn: Connection, classes: Sequence[type[Projection]],
                         default_source: str = "log") -> list[ProjectionStatus]:
    """Each of ``classes`` (in their order), then each projection built before whose class
    is not among them (by name), on the connection ``conn``: row, live checkpoints, table
    row counts, and the lag of those that read the store log (events after the
    checkpoint of the types the projection handles). ``default_source`` (``"log"`` or
    ``"kafka"``) is what a projection that never ran would read. Kafka lags stay None:
    see :func:`fill_kafka_lag`."""
    described = tracking.describe(conn)
    out: list[ProjectionStatus] = []
    for cls in classes:
        row = described.get(cls.name, {})
        checkpoints: dict[Coord, int] = row.get("checkpoints", {})
        source = row.get("source") or default_source
        lag: int | None = None
        if source == "log":
            after = checkpoints.get(tracking.LOG, 0)
            lag = int(conn.execute(
                select(func.count()).where(events.c.position > after, events.c.event_type.in_(cls.event_types()))
            ).scalar_one())
        tables = {
            t.name: tracking.count_rows(conn, t) if tracking.table_exists(conn, t.name) else None
            for t in cls.live_tables()
        }
        out.append(ProjectionStatus(
            name=cls.name, known=True, source=row.get("source"), consumes=source, generation=row.get("generation"),
            checkpoints=checkpoints, lag=lag, last_error=row.get("last_error"), rows=tables,
            updated_at=row.get("updated_at"),
        ))
    known = {cls.name for cls in classes}
    for name, row in sorted(described.items()):
        if name not in known:  # built before, but its module is not loaded now
            out.append(ProjectionStatus(
                name=name, known=False, source=row["source"], consumes=row["source"], generation=row["generation"],
                checkpoints=row["checkpoints"], lag=None, last_error=row["last_error"], rows={},
                updated_at=row["updated_at"],
            ))
    return out


async def fill_kafka_lag(kafka: KafkaSettings, classes: Sequence[type[Projection]],
                         statuses: Sequence[ProjectionStatus],
                         on_error: Callable[[FactaError], None] | None = None) -> None:
    """Set the ``lag`` of every known status that consumes Kafka: per partition of its
    topics, the end offset less its checkpoint (the partition's beginning when it has
    none), never below 0, summed. Each set of topics is asked once.

    When Kafka's offsets cannot be read, ``on_error`` gets the
    :class:`~facta.projections.ProjectionError` (one line) and the remaining lags stay
    None; without ``on_error`` it is raised. A projection whose topic Kafka cannot have
    raises :class:`~facta.projections.ProjectionError` either way."""
    # Lazy: kafka_source imports aiokafka, which a status on the store log does not need.
    from .kafka_source import kafka_offsets

    by_name = {cls.name: cls for cls in classes}
    offsets: dict[tuple[str, ...], tuple[dict[Coord, int], dict[Coord, int]]] = {}
    for status in statuses:
        if status.consumes != "kafka" or not status.known:
            continue
        topics = tuple(kafka.topics(by_name[status.name]))
        if topics not in offsets:
            try:
                offsets[topics] = await kafka_offsets(kafka, list(topics))
            except FactaError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                return
        beginning, end = offsets[topics]
        status.lag = sum(max(end[tp] - status.checkpoints.get(tp, beginning.get(tp, 0)), 0) for tp in end)


async def projection_status(store: EventStore, classes: Sequence[type[Projection]], *,
                            kafka: KafkaSettings | None = None,
                            on_kafka_error: Callable[[FactaError], None] | None = None) -> list[ProjectionStatus]:
    """Where each projection is (see :class:`ProjectionStatus` and
    :func:`describe_projections`): ``classes`` first, in their order, then those built
    before whose classes are not given. With ``kafka``, projections that never ran count
    as reading Kafka, and the lag of those reading Kafka is read from it
    (:func:`fill_kafka_lag`, whose ``on_error`` is ``on_kafka_error``)."""
    statuses = await store.database.read(describe_projections, list(classes), "kafka" if kafka else "log")
    if kafka is not None:
        await fill_kafka_lag(kafka, classes, statuses, on_kafka_error)
    return statuses


@dataclass(frozen=True)
class Follower:
    """A relay or a projection as :func:`store_status` sees it.

    ``kind``: ``"relay"`` or ``"projection"``; ``source``: ``"log"`` (a relay, a projection
    of the store log) or ``"kafka"``; ``checkpoints``: as :class:`ProjectionStatus`'s (a
    relay's is ``{("", -1): position}``). ``lag_events``: store positions after the
    checkpoint (the log is gap-free: one event each), counting events a projection does
    not handle; None on Kafka (offsets; Kafka's end offsets are not read).
    ``lag_s``: how long ago the oldest event not applied (or published) yet was recorded,
    0.0 when caught up, None on Kafka. ``updated_at``: when its checkpoint or row was
    last written (aware UTC; None: never). ``last_error``: a projection's recorded
    failure (None: none; relays record none)."""

    kind: str
    name: str
    source: str
    checkpoints: dict[Coord, int]
    lag_events: int | None
    lag_s: float | None
    updated_at: datetime | None
    last_error: str | None = None

    @property
    def progress(self) -> int:
        """The checkpoints summed: what a rate is measured on (positions, or offsets)."""
        return sum(self.checkpoints.values())


@dataclass(frozen=True)
class StoreStatus:
    """One reading of a store (:func:`store_status`): its ``head`` (the last position),
    when it was taken (``taken_at``, aware UTC), the relays then the projections."""

    head: int
    taken_at: datetime
    relays: list[Follower]
    projections: list[Follower]


async def store_status(store: EventStore) -> StoreStatus:
    """Where the store's log, its relays and every projection that has run are, from the
    store alone (no Kafka connection), in cheap reads: the head, the relays' and the
    projections' checkpoint rows, and the recorded-at of each one's first event not yet
    applied (a primary-key read). ``facta status`` draws it."""
    head = await store.head_position()
    relays = await relays_at(store)
    described = await store.database.read(tracking.describe)
    taken_at = datetime.now(UTC)
    nexts = {position + 1 for _, position, _ in relays if position < head}
    for row in described.values():
        at = row["checkpoints"].get(tracking.LOG)
        if row["source"] == "log" and (at or 0) < head:
            nexts.add((at or 0) + 1)
    recorded = await store.database.read(_recorded_at, sorted(nexts))

    def lag_s(position: int) -> float:
        when = recorded.get(position + 1)
        return 0.0 if position >= head or when is None else max((taken_at - when).total_seconds(), 0.0)

    out_relays = [Follower("relay", name, "log", {tracking.LOG: position}, max(head - position, 0), lag_s(position),
                           updated) for name, position, updated in relays]
    out_projections = []
    for name, row in sorted(described.items()):
        cps: dict[Coord, int] = row["checkpoints"]
        updated = row.get("updated_at")
        if row["source"] == "log":
            at = cps.get(tracking.LOG, 0)
            lag: int | None = max(head - at, 0)
            seconds: float | None = lag_s(at)
        else:
            lag = seconds = None
        out_projections.append(Follower("projection", name, str(row["source"]), cps, lag, seconds,
                                        None if updated is None else utc(updated), row.get("last_error")))
    return StoreStatus(head, taken_at, out_relays, out_projections)


def _recorded_at(conn: Connection, positions: list[int]) -> dict[int, datetime]:
    if not positions:
        return {}
    rows = conn.execute(select(events.c.position, events.c.recorded_at).where(events.c.position.in_(positions)))
    return {int(r[0]): utc(r[1]) for r in rows}


async def checkpoints(store: EventStore) -> dict[str, dict[Coord, int]]:
    """Every projection's live checkpoints, by name (see :class:`ProjectionStatus`)."""
    described = await store.database.read(tracking.describe)
    return {name: row["checkpoints"] for name, row in described.items()}


async def skip_event(store: EventStore, name: str, position: int, reason: str,
                     actor: str | None = None) -> dict[str, Any]:
    """Record that projection ``name`` skips the event at store ``position`` (a poison
    event): the projection passes over it the next time it starts, and rebuilds leave it
    out. Returns what was recorded: ``projection``, ``position``, ``event_id`` (text),
    ``event_type``, ``reason`` and ``already_applied`` (whether the live read model
    holds it already; None on Kafka, where it is not known). Skipping a position recorded already changes nothing. Raises
    :class:`~facta.projections.ProjectionError` when no event is at ``position``, and
    :class:`~facta.eventstore.InvalidValue` (before writing) for a ``reason`` or
    ``actor`` out of their limits."""
    return await store.database.write(tracking.add_skip, name, position, reason, actor)


async def skipped_events(store: EventStore, name: str | None = None) -> list[dict[str, Any]]:
    """The recorded skips of projection ``name`` (None: of every projection), by
    projection and position: ``projection``, ``position``, ``event_id`` (UUID),
    ``event_type``, ``reason``, ``skipped_by``, ``skipped_at`` and ``applied_at`` (aware
    UTC; None: not passed over yet)."""
    return await store.database.read(tracking.list_skips, name)
