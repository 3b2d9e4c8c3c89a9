"""Subscriptions: where a projection's events come from, as one protocol.

A *subscription* hands a projection's :class:`~facta.projections._applier.Applier`
batches of :class:`~facta.projections._applier.Delivery` from a *checkpoint* on; the
applier commits the read-model writes and the moved checkpoints in one transaction.
Two implementations, one protocol (:class:`Subscription`):

- :class:`StoreLogSubscription` (``source == "log"``): the store's log. Its one
  coordinate is :data:`~facta.projections._tracking.LOG`; a checkpoint is the store
  *position* of the last event looked at (0: none yet).
- :class:`~facta.projections.kafka_source.KafkaSubscription` (``source == "kafka"``): the
  relay's topics. Its coordinates are ``(topic, partition)``; a checkpoint is the
  partition's next Kafka *offset* to read. It lives in ``kafka_source.py``, which imports
  aiokafka: nothing imports it until a Kafka subscription is asked for
  (:func:`facta.projections.runner.subscription_for`).

What the runner and a replay ask of a subscription:

- :meth:`Subscription.follow`: open the projection at its live checkpoints and apply
  batches from them until stopped (the runner);
- :meth:`Subscription.plan_range`: where a replay from a position, an offset or a time
  starts and ends, per coordinate, and how many events that is (``plan_replay``);
- :meth:`Subscription.read_range`: apply that range into the rebuild slot (``replay``).

Every batch stays a batch: a subscription hands the applier one list per read, never an
event at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Protocol

from sqlalchemy import Connection, func, select

from facta import metrics
from facta.errors import ProjectionError
from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore._rows import decode_records
from facta.eventstore.kafka_codec import collector_paused
from facta.eventstore.audit import utc_text
from facta.eventstore.kafka_support import bootstrap_problem
from facta.eventstore.locks import active_lock
from facta.eventstore.schema import events
from facta.eventstore.validation import check_settings
from facta.settings import settings

from ._applier import Applier, Delivery
from ._tracking import LOG, Coord, Stale
from .api import _KAFKA_TOPIC_CHARS, MAX_TOPIC_LENGTH, Projection

if TYPE_CHECKING:
    from .replay import ReplayFrom
    from .retention import StoreFill

__all__ = ["KafkaSettings", "LogPages", "Range", "StoreLogSubscription", "Subscription", "count_log"]

log = logging.getLogger("facta.projections")


@dataclass(frozen=True)
class KafkaSettings:
    """Where a projection consumes Kafka: the relay's topics ``<topic_prefix>.<stream type>``.
    The defaults are :func:`facta.settings.settings`' (``FACTA_TOPIC_PREFIX``, ...)."""

    bootstrap: str
    topic_prefix: str = field(default_factory=lambda: settings().topic_prefix)
    group_prefix: str = field(default_factory=lambda: settings().group_prefix)
    session_timeout_ms: int = field(default_factory=lambda: settings().kafka_session_timeout_ms)
    heartbeat_interval_ms: int = field(default_factory=lambda: settings().kafka_heartbeat_interval_ms)
    request_timeout_ms: int = field(default_factory=lambda: settings().kafka_request_timeout_ms)
    commit_to_kafka: bool = True
    give_up_after: float = field(default_factory=lambda: settings().kafka_timeout_s)
    """With ``once`` and in replays: how long Kafka may stay unreachable before the run
    stops with an error (a long-running runner keeps retrying instead)."""

    def __post_init__(self) -> None:
        """Raises :class:`ProjectionError` for a bootstrap list that is not
        ``host:port[,host:port]`` with ports 1 to 65535 (before any I/O)."""
        problem = bootstrap_problem(self.bootstrap)
        if problem is not None:
            raise ProjectionError(problem)
        check_settings("KafkaSettings", {"session_timeout_ms": self.session_timeout_ms, "heartbeat_interval_ms": self.heartbeat_interval_ms, "request_timeout_ms": self.request_timeout_ms}, {"give_up_after": self.give_up_after}, {"commit_to_kafka": self.commit_to_kafka})

    def topics(self, projection: type[Projection]) -> list[str]:
        """The topics ``<topic_prefix>.<stream type>`` of the projection's stream types;
        raises :class:`ProjectionError` for one Kafka cannot have (more than 249
        characters, or others than letters, digits, '.', '_' and '-')."""
        topics = [f"{self.topic_prefix}.{stream_type}" for stream_type in projection.stream_types()]
        for topic in topics:
            if len(topic) > MAX_TOPIC_LENGTH or not set(topic) <= _KAFKA_TOPIC_CHARS:
                raise ProjectionError(
                    f"the Kafka topic name {topic!r} of projection {projection.name!r} is {len(topic)} characters"
                    f" long: Kafka's topic names have at most {MAX_TOPIC_LENGTH}, of letters, digits, '.', '_' and '-'"
                    " (check --topic-prefix and the projection's stream types)"
                )
        return topics

    def group(self, projection: type[Projection]) -> str:
        return f"{self.group_prefix}{projection.name}"


@dataclass
class Range:
    """A planned range of a subscription, per coordinate (the store log's ``LOG``, or a
    Kafka ``(topic, partition)``): reading starts after checkpoint ``start[coord]`` (a
    store position, or the first Kafka offset to read) and goes to ``end[coord]`` (the
    last position, or the offset after the last record). ``events``: how many events
    that is (on Kafka: records of the projection's topics, plus the events ``fill``
    reads from the store)."""

    start: dict[Coord, int]
    end: dict[Coord, int]
    events: int
    first_position: int | None = None
    last_position: int | None = None
    fill: dict[Coord, StoreFill] = field(default_factory=dict)
    """Kafka: per partition whose records Kafka deleted, the events read from the store
    before the partition's earliest retained offset (``start``)."""
    floors: dict[Coord, int] = field(default_factory=dict)
    """Kafka: per partition, the store position at or below which records are passed over
    (read from the store, or before the replayed slice)."""


class Subscription(Protocol):
    """A projection's source of events: the store log or Kafka. Built for one store and
    one projection class; errors are :class:`ProjectionError` (one line)."""

    source: ClassVar[str]
    """``"log"`` or ``"kafka"``: the name the projection's row records as its source."""

    async def follow(self, applier: Applier, *, batch_size: int, once: bool, stop: asyncio.Event,
                     wait: bool = True) -> bool:
        """Open ``applier`` (its live tables and checkpoints) and apply batches of at most
        ``batch_size`` events from its checkpoints until ``stop`` is set, or with ``once``
        until caught up with what was there when it started. Returns False, having
        applied nothing, if another runner is active and ``wait`` is False (or ``stop``
        was set while waiting for it); True otherwise."""
        ...

    async def plan_range(self, start: ReplayFrom) -> Range:
        """Where a replay from ``start`` begins and ends, per coordinate, and how many
        events that is; reads, writes nothing. Raises
        :class:`ProjectionError` for a start this source cannot replay from (an offset
        on the store log, a position past the log's end, a time in the future, an
        offset Kafka deleted)."""
        ...

    async def read_range(self, applier: Applier, planned: Range, *, batch_size: int, stop: asyncio.Event,
                         on_batch: Callable[[int], None]) -> None:
        """Apply ``planned`` into ``applier`` (a rebuild slot, already opened), in batches
        of at most ``batch_size``, then what arrived since, until caught up or ``stop`` is
        set. Calls ``on_batch(n)`` after each batch committed (``n``: events, or on
        Kafka records, looked at)."""
        ...


class LogPages:
    """Pages of the store log for one set of event types, the next one read while the
    current one is applied (reading the log and writing the read model overlap)."""

    def __init__(self, store: EventStore, event_types: list[str], batch_size: int) -> None:
        self.store, self.event_types, self.batch_size = store, event_types, batch_size
        self._ahead: tuple[int, asyncio.Task[tuple[list[RecordedEvent], int]]] | None = None

    async def next(self, after: int) -> tuple[list[RecordedEvent], int]:
        """The page after position ``after``: (its records, the position it covers up
        to); starts reading the one after it."""
        if self._ahead is not None and self._ahead[0] == after:
            page = await self._ahead[1]
        else:
            await self.close()
            page = await self._read(after)
        self._ahead = None
        records, covered = page
        if len(records) >= self.batch_size:  # more is waiting: read it now
            self._ahead = (covered, asyncio.ensure_future(self._read(covered)))
        return page

    async def _read(self, after: int) -> tuple[list[RecordedEvent], int]:
        records, covered = await self.store.read_log_window(after, self.batch_size, event_types=self.event_types)
        # Decode the payloads here: for a page read ahead, this runs while the previous
        # page's transaction waits on the database. A payload that does not decode is
        # left for the applier, which decodes it again and stops naming the event.
        decode_records(records)
        return records, covered

    async def close(self) -> None:
        if self._ahead is not None:
            task = self._ahead[1]
            self._ahead = None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def count_log(
    conn: Connection, types: list[str], after: int, end: int, since: datetime | None = None
) -> tuple[int, int | None, int | None]:
    """How many events of ``types`` lie in ``after < position <= end`` (recorded at or
    after ``since``, where given), and the first and last one's position."""
    c = events.c
    query = select(func.count(), func.min(c.position), func.max(c.position)).where(
        c.position > after, c.position <= end, c.event_type.in_(types)
    )
    if since is not None:
        query = query.where(c.recorded_at >= since)
    row = conn.execute(query).one()
    return int(row[0]), row[1], row[2]


async def _log_lag(store: EventStore, lag: metrics.Lag, after: int, covered: int, records: list[RecordedEvent],
                   full: bool, *, applied: bool) -> None:
    """A store-log runner's lag gauges, once per page: read (``applied`` False: the page's
    first event is the oldest not applied) and applied (a page that was not full leaves it
    caught up; a full one leaves its last event as the bound on the next one's age). The
    head is the page's end, or, while catching up, read from the store every
    :data:`facta.metrics.HEAD_REFRESH_S` while an SDK records."""
    if not metrics.instrumented():
        return
    if applied and not full:
        lag.caught_up(covered)
        return
    if full and lag.head_due():
        lag.head_read(await store.head_position())
    oldest = (records[-1] if applied else records[0]).recorded_at.timestamp() if records else None
    lag.at(after, covered, oldest)


def _stopped_lag(lag: metrics.Lag, checkpoint: int, records: list[RecordedEvent]) -> None:
    """A store-log runner stopped on an event: behind from ``checkpoint`` (just before it)."""
    if metrics.instrumented():
        rest = [r for r in records if r.position > checkpoint]
        lag.at(checkpoint, 0, rest[0].recorded_at.timestamp() if rest else None)


class StoreLogSubscription:
    """The store's log as a :class:`Subscription` of ``projection``.

    One runner per projection follows it (a lock like the relay's); others wait and take
    over. It reads the log after its checkpoint with the projection's event types as a
    filter, so unhandled events are never read, and moves the checkpoint to the end of
    what it looked at."""

    source: ClassVar[str] = "log"

    def __init__(self, store: EventStore, projection: type[Projection], *, lock_poll_interval: float | None = None,
                 poll_interval: float | None = None) -> None:
        """``lock_poll_interval``: seconds between tries for the lock; ``poll_interval``:
        seconds between reads once caught up (None: the settings', ``FACTA_LOCK_POLL_INTERVAL_S``
        and ``FACTA_RUNNER_POLL_INTERVAL_S``)."""
        self.store = store
        self.projection = projection
        self.lock_poll_interval = settings().lock_poll_interval_s if lock_poll_interval is None else lock_poll_interval
        self.poll_interval = settings().runner_poll_interval_s if poll_interval is None else poll_interval

    async def follow(self, applier: Applier, *, batch_size: int, once: bool, stop: asyncio.Event,
                     wait: bool = True) -> bool:
        """Under the projection's lock (waiting for it every ``lock_poll_interval``
        seconds, or with ``wait=False`` returning False at once if another runner holds
        it): from the ``LOG`` checkpoint, pages of at most ``batch_size`` events of the
        projection's types; a batch refused as :class:`Stale` (tables swapped, checkpoint
        moved) reloads the checkpoint. Raises :class:`ProjectionError` if a handler fails."""
        lock = active_lock(self.store, "projection", self.projection.name, ProjectionError)
        if not await lock.acquire(stop, self.lock_poll_interval, wait=wait):
            return False
        try:
            await self._follow(applier, batch_size, once, stop)
        finally:
            await lock.release()
        return True

    async def _follow(self, applier: Applier, batch_size: int, once: bool, stop: asyncio.Event) -> None:
        store = self.store
        checkpoints = await applier.open()
        after = checkpoints.get(LOG, 0)
        pages = LogPages(store, self.projection.event_types(), batch_size)
        target = await store.head_position() if once else None
        lag = applier.metrics.follow()
        try:
            while not stop.is_set():
                records, covered = await pages.next(after)
                await _log_lag(store, lag, after, covered, records, len(records) >= batch_size, applied=False)
                if covered > after:
                    try:
                        await applier.apply([Delivery(r, LOG, r.position) for r in records], {LOG: covered})
                    except Stale:
                        log.info("projection %r: tables swapped or checkpoint moved; reloading", self.projection.name)
                        after = (await applier.open()).get(LOG, 0)
                        continue
                    except ProjectionError:
                        _stopped_lag(lag, applier.checkpoints.get(LOG, after), records)
                        raise
                    after = covered
                await _log_lag(store, lag, after, covered, records, len(records) >= batch_size, applied=True)
                if target is not None and after >= target:
                    return
                if len(records) < batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_interval)
        finally:
            await pages.close()

    async def plan_range(self, start: ReplayFrom) -> Range:
        """From store ``position`` P: after P up to the head; from ``time`` T: after the
        position before the first event recorded at or after T (``events`` counts those
        recorded at or after T). An ``offset`` is refused: offsets are Kafka's."""
        store, projection = self.store, self.projection
        if start.offset is not None:
            raise ProjectionError(
                f"--from-offset replays from Kafka, and projection {projection.name!r} is running without it:"
                " set FACTA_KAFKA_BOOTSTRAP (or --kafka-bootstrap), or replay from a position or a time"
            )
        head = await store.head_position()
        if start.time is not None:
            if start.time > datetime.now(UTC):
                raise ProjectionError(f"time {utc_text(start.time)} is in the future")
            after = await store.first_position_at(start.time)
        else:
            assert start.position is not None
            after = start.position
            if after > head:
                raise ProjectionError(f"position {after} is beyond the end of the log (the last position is {head})")
        end = head
        count, first, last = await store.database.read(count_log, projection.event_types(), after, end, start.time)
        return Range({LOG: after}, {LOG: end}, count, first, last)

    async def read_range(self, applier: Applier, planned: Range, *, batch_size: int, stop: asyncio.Event,
                         on_batch: Callable[[int], None]) -> None:
        """Pages after ``planned.start[LOG]`` until the log's head (as it is when reached);
        ``on_batch(n)`` counts the events of the projection's types in each page."""
        after = planned.start[LOG]
        pages = LogPages(self.store, self.projection.event_types(), batch_size)
        try:
            while not stop.is_set():
                records, covered = await pages.next(after)
                if covered <= after:
                    return  # caught up
                with collector_paused():
                    deliveries = [Delivery(r, LOG, r.position) for r in records]
                await applier.apply(deliveries, {LOG: covered})
                after = covered
                on_batch(len(records))
        finally:
            await pages.close()
