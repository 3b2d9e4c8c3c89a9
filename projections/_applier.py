"""`Applier`: applies batches of events to one projection's tables with its checkpoints.

Both sources (the store log, Kafka) hand it batches of :class:`Delivery`. For each batch:

1. events the projection does not handle, and events an operator skipped, are passed
   over (they still move the checkpoint);
2. one database transaction checks the projection's generation, runs the handlers on a
   :class:`ReadModel`, flushes it, and moves the checkpoints by compare-and-set.

A process manager's applier (:class:`~facta.projections.process.ProcessApplier`) runs
its handlers before that transaction, which then only moves its checkpoints;
:func:`applier_for` gives each class its applier.

A redelivered event therefore changes nothing: either its batch committed, and the
checkpoint is past it, or nothing of it did. A failing handler stops the projection with
one line naming the event; the events before it in the batch are committed, the
checkpoint stays just before it, and a restart retries it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from facta import metrics, tracing
from facta.domain import DomainEvent
from facta.errors import ProjectionError
from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore._diagnostics import describe
from facta.eventstore.kafka_codec import collector_paused

from . import _tracking as tracking
from ._tracking import LIVE, LOG, Coord, Stale
from .api import REBUILD_SUFFIX, Handler, Projection
from .writer import ReadModel

__all__ = ["Applier", "Delivery", "applier_for"]

log = logging.getLogger("facta.projections")


@dataclass(slots=True)
class Delivery:
    """One event as a source delivers it: the record, where it came from, and the value
    its coordinate's checkpoint takes once it is applied."""

    record: RecordedEvent
    coord: Coord
    next: int
    offset: int | None = None  # the Kafka offset, for messages

    def where(self) -> str:
        if self.offset is None:
            return f"position {self.record.position}"
        topic, partition = self.coord
        return f"position {self.record.position}, {topic}[{partition}] offset {self.offset}"


@dataclass(slots=True)
class _Work:
    index: int
    handler: Handler | None
    event: DomainEvent
    record: RecordedEvent


class _HandlerFailed(Exception):
    def __init__(self, index: int, cause: BaseException) -> None:
        self.index, self.cause = index, cause


class _FlushFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        self.cause = cause


def advance_over(batch: Sequence[Delivery]) -> dict[Coord, int]:
    """The checkpoints after applying ``batch``."""
    out: dict[Coord, int] = {}
    for d in batch:
        out[d.coord] = max(out.get(d.coord, d.next), d.next)
    return out


class Applier:
    def __init__(
        self,
        store: EventStore,
        projection: type[Projection],
        *,
        source: str,
        slot: str = LIVE,
    ) -> None:
        self.store = store
        self.projection = projection(table_suffix="" if slot == LIVE else REBUILD_SUFFIX,
                                     rename_constraints=store.database.dialect == "postgresql")
        self.name = projection.name
        self.source = source
        self.slot = slot
        # The Kafka consumer group the batches come through (set by the Kafka source's
        # group session; None for the store log and a replay's group-less consumer): the
        # CONSUMER spans' ``messaging.consumer.group.name`` (the messaging conventions).
        self.consumer_group: str | None = None
        self.generation: int | None = None
        self.checkpoints: dict[Coord, int] = {}
        # Per Kafka partition: the store position up to which its events are applied (read
        # from the store by a replay) or outside the replayed slice; see tracking.FLOORS.
        self.position_floors: dict[Coord, int] = {}
        self.skips: set[int] = set()
        self.applied = 0
        self._failed_before = False
        self.metrics = metrics.projection(self.name)
        # Called after each committed batch with ``moved`` (ProjectionRunner.run's on_progress).
        self.on_progress: Callable[[int], None] | None = None
        self.moved = 0  # how far the checkpoints moved, summed over coordinates

    async def open(self) -> dict[Coord, int]:
        """Make the live tables if needed; load generation, checkpoints, position floors
        and skips."""
        return await self.store.database.write(self._open)

    def _open(self, conn: Connection) -> dict[Coord, int]:
        if self.slot == LIVE:
            self.generation = tracking.ensure_live(conn, type(self.projection), self.source)
            # A recorded error is cleared by the next commit (only then: that update takes
            # the row's lock, which other runners' batches share).
            self._failed_before = tracking.last_error(conn, self.name) is not None
        self.checkpoints = tracking.load_checkpoints(conn, self.name, self.slot)
        self.position_floors = tracking.load_checkpoints(conn, self.name, tracking.FLOORS[self.slot])
        self.skips = tracking.skipped_positions(conn, self.name)
        return dict(self.checkpoints)

    async def apply(self, batch: Sequence[Delivery], advance: Mapping[Coord, int] | None = None) -> None:
        """Apply ``batch`` and move the checkpoints to ``advance`` (default: just past the
        batch). Raises :class:`Stale` if this runner's view is out of date (reload), and
        :class:`ProjectionError` if a handler failed.

        With an OpenTelemetry SDK recording (:func:`facta.tracing.tracer`), a batch is one
        CONSUMER span ``process <destination>`` (the topic, or ``facta_events`` for the
        store log), the child of its events' stored trace context when they share one,
        else linked to each (:func:`facta.tracing.consumer_span`)."""
        chosen = tracing.tracer()
        if chosen is None or not batch:
            return await self._apply(batch, advance)
        with tracing.consumer_span(
            chosen, self.source, _destination(batch), len(batch),
            [(d.record.traceparent, d.record.tracestate) for d in batch], self._span_attributes(batch),
        ):
            await self._apply(batch, advance)

    def _span_attributes(self, batch: Sequence[Delivery]) -> dict[str, object]:
        attributes: dict[str, object] = {"facta.projection": self.name, "facta.slot": self.slot}
        if self.consumer_group is not None:
            attributes["messaging.consumer.group.name"] = self.consumer_group
        partitions = {d.coord for d in batch}
        if batch[0].offset is not None and len(partitions) == 1:
            attributes["messaging.destination.partition.id"] = str(batch[0].coord[1])
        if len(batch) == 1:
            attributes["messaging.message.id"] = str(batch[0].record.event_id)
        return attributes

    async def _apply(self, batch: Sequence[Delivery], advance: Mapping[Coord, int] | None) -> None:
        done = self.checkpoints
        # A delivery at or behind its checkpoint was applied already (a redelivery, a
        # batch handed over twice): it changes nothing, and no checkpoint moves back.
        if any(d.next <= done.get(d.coord, -1) for d in batch):
            batch = [d for d in batch if d.next > done.get(d.coord, -1)]
        advance = dict(advance) if advance is not None else advance_over(batch)
        advance = {coord: value for coord, value in advance.items() if value > done.get(coord, -1)}
        if not batch and not advance:
            return
        work: list[_Work] = []
        skipped: list[int] = []
        projection = self.projection
        undecoded: tuple[int, Exception] | None = None
        skips, handler_for = self.skips, projection.handler_for
        # A subclass that selects otherwise (a process manager's) is asked; a projection
        # selects what it has a handler for, looked up once.
        selects = None if type(self)._selects is Applier._selects else self._selects
        with collector_paused():  # a batch's objects form no cycles (see collector_paused)
            for i, delivery in enumerate(batch):
                record = delivery.record
                if skips and record.position in skips:
                    skipped.append(record.position)
                    continue
                handler = handler_for(record.event_type)
                if handler is None if selects is None else not selects(record.event_type):
                    continue
                try:
                    event = record.event
                except Exception as exc:
                    undecoded = i, exc
                    break
                work.append(_Work(i, handler, event, record))
        if undecoded is not None:
            await self._fail(batch, undecoded[0], work, undecoded[1])
        await self._before_commit(batch, work)
        try:
            await self.store.database.write(self._commit, work, advance, skipped)
        except _HandlerFailed as failed:
            await self._fail(batch, failed.index, work, failed.cause)
        except _FlushFailed as failed:
            if len(batch) <= 1:
                await self._fail(batch, 0, work, failed.cause)
            # The flush does not say which event's change it choked on: apply one at a
            # time to find it (the failing one then stops the projection, named).
            for delivery in batch:
                await self.apply([delivery])
            await self.apply([], advance)
            return
        if self.on_progress is not None:
            self.moved += _moved(batch, done, advance)
        self.checkpoints.update(advance)
        self.skips.difference_update(skipped)
        self.applied += len(work)
        self.metrics.applied(len(work))
        if self.on_progress is not None:
            self.on_progress(self.moved)

    def _selects(self, event_type: str) -> bool:
        """Whether events of ``event_type`` are handled (others only move the checkpoint)."""
        return self.projection.handler_for(event_type) is not None

    async def _before_commit(self, batch: Sequence[Delivery], work: list[_Work]) -> None:
        """What runs before the batch's transaction: nothing, for a projection."""

    def _commit(self, conn: Connection, work: list[_Work], advance: dict[Coord, int], skipped: list[int]) -> None:
        if self.slot == LIVE and tracking.generation(conn, self.name, lock=True) != self.generation:
            raise Stale
        rm = ReadModel(conn)
        projection = self.projection
        # The collector waits for the end of the batch's changes: handlers' allocations
        # (a pending change and its dicts per event) would set off young collections
        # every 700 and full ones every few batches (see collector_paused).
        # On PostgreSQL the checkpoint moves go within the flush's first statement: one
        # round trip less per batch.
        rider = tracking.checkpoint_rider(conn, self.name, self.slot, self.checkpoints, advance)
        moved: int | None = None
        with collector_paused():
            started = metrics.clock()
            for w in work:
                if w.handler is not None:
                    try:
                        w.handler(projection, rm, w.event, w.record)
                    except Exception as exc:
                        raise _HandlerFailed(w.index, exc) from exc
            if work and work[0].handler is not None:  # a process manager's ran before (ProcessApplier)
                self.metrics.handled(started)
            try:
                if rider is None:
                    rm.flush()
                else:
                    moved = rm.flush_with(rider[0])
            except (SQLAlchemyError, ValueError, TypeError) as exc:
                raise _FlushFailed(exc) from exc
        if moved is None:
            tracking.move_checkpoints(conn, self.name, self.slot, self.checkpoints, advance)
        elif rider is not None and moved != rider[1]:
            raise Stale
        if skipped:
            tracking.mark_skips_applied(conn, self.name, skipped)
        if self._failed_before and self.slot == LIVE:
            tracking.record_error(conn, self.name, None)
            self._failed_before = False

    async def _fail(self, batch: Sequence[Delivery], index: int, work: list[_Work], cause: BaseException) -> NoReturn:
        self.metrics.failed()
        delivery = batch[index]
        record = delivery.record
        message = (
            f"projection {self.name!r} stopped at {record.event_type} event {record.event_id}"
            f" (stream {record.stream_id} v{record.version}, {delivery.where()}): {describe(cause, limit=300)};"
            f" its checkpoint stays before this event: fix the cause and run it again, or skip it with"
            f" `facta projections skip {self.name} --position {record.position}`"
        )
        if index > 0:  # keep what came before the poison event
            before = [w for w in work if w.index < index]
            prefix = batch[:index]
            try:
                await self.store.database.write(self._commit, before, advance_over(prefix), [])
                self.checkpoints.update(advance_over(prefix))
                self.applied += len(before)
                self.metrics.applied(len(before))
            except (Stale, _HandlerFailed, _FlushFailed, SQLAlchemyError):
                log.warning("projection %r: could not commit the events before the failing one", self.name)
        if self.slot == LIVE:
            try:
                await self.store.database.write(tracking.record_error, self.name, message)
                self._failed_before = True
            except SQLAlchemyError:
                pass
        raise ProjectionError(message) from cause


def _moved(batch: Sequence[Delivery], done: Mapping[Coord, int], advance: Mapping[Coord, int]) -> int:
    """How far ``advance`` moves the checkpoints ``done``, summed; a coordinate without a
    checkpoint yet counts from 0 on the store log, and from its first delivery on a Kafka
    partition (whose beginning may be past 0)."""
    moved = 0
    for coord, value in advance.items():
        old = done.get(coord)
        if old is None and coord == LOG:
            old = 0
        elif old is None:
            firsts = [d.next - 1 for d in batch if d.coord == coord]
            old = min(firsts) if firsts else value
        moved += max(value - old, 0)
    return moved


def _destination(batch: Sequence[Delivery]) -> str:
    """What a batch's span names: its Kafka topic (``kafka`` when it spans several), or
    ``facta_events`` for the store log."""
    if batch[0].offset is None:
        return "facta_events"
    topics = {d.coord[0] for d in batch}
    return str(batch[0].coord[0]) if len(topics) == 1 else "kafka"


def applier_for(store: EventStore, projection: type[Projection], *, source: str) -> Applier:
    """The applier that keeps ``projection`` live from ``source``: an :class:`Applier`, or
    the class its ``_applier_class`` names (a process manager's)."""
    return (projection._applier_class or Applier)(store, projection, source=source)

