"""`ProjectionRunner`: keeps one projection's live tables up to date from a source.

The source is the store's log (the default, and the only one without Kafka) or Kafka
(when a bootstrap address is given). Either way the runner applies batches through an
:class:`Applier`, which commits read-model writes and checkpoints together.

- **Store log.** One runner per projection is active (a lock like the relay's); others
  wait and take over. It reads the log after its checkpoint with the projection's event
  types as a filter, so unhandled events are never read, and moves the checkpoint to the
  end of what it looked at.
- **Kafka.** A consumer group per projection (``facta.projection.<name>``), auto-commit
  off. On every assignment it seeks each partition to its own checkpoint in the database;
  several runners share the partitions and take over each other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from facta.errors import InvalidValue, ProjectionError
from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore.kafka_support import bootstrap_problem
from facta.eventstore.locks import active_lock
from facta.eventstore.validation import check_instance_arg, check_settings, got
from facta.settings import settings

from .api import _KAFKA_TOPIC_CHARS, MAX_TOPIC_LENGTH, Projection, check_projection_class
from .applier import Delivery, applier_for
from .tracking import LOG, Stale

__all__ = ["KafkaSettings", "LogPages", "ProjectionRunner", "RunnerConfig"]

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


@dataclass(frozen=True)
class RunnerConfig:
    """How a runner reads: events per batch, and how often (seconds) it polls an idle log
    and a held lock. The defaults are :func:`facta.settings.settings`' (``FACTA_BATCH_SIZE``,
    ``FACTA_RUNNER_POLL_INTERVAL_S``, ``FACTA_LOCK_POLL_INTERVAL_S``)."""

    batch_size: int = field(default_factory=lambda: settings().batch_size)
    poll_interval: float = field(default_factory=lambda: settings().runner_poll_interval_s)
    lock_poll_interval: float = field(default_factory=lambda: settings().lock_poll_interval_s)

    def __post_init__(self) -> None:
        check_settings("RunnerConfig", {"batch_size": self.batch_size}, {"poll_interval": self.poll_interval, "lock_poll_interval": self.lock_poll_interval})


class ProjectionRunner:
    """Runs one projection from the store log, or from Kafka when ``kafka`` is given."""

    def __init__(
        self,
        store: EventStore,
        projection: type[Projection],
        *,
        kafka: KafkaSettings | None = None,
        config: RunnerConfig | None = None,
    ) -> None:
        check_runner_args(store, projection, kafka, config)
        self.store = store
        self.projection = projection
        self.kafka = kafka
        self.config = config or RunnerConfig()
        self.applier = applier_for(store, projection, source="kafka" if kafka else "log")
        self.busy = False

    @property
    def applied(self) -> int:
        return self.applier.applied

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None, wait: bool = True) -> int:
        """Apply events until ``stop`` is set (or, with ``once``, until caught up with what
        was there when it started). Returns the number of events handled.

        On the store log one runner per projection is active; another one waits to take
        over, or with ``wait=False`` returns at once (``busy`` is then True)."""
        stop = stop or asyncio.Event()
        if self.kafka is not None:
            from .kafka_source import run_kafka

            await run_kafka(self.applier, self.kafka, batch_size=self.config.batch_size, once=once, stop=stop)
            return self.applier.applied
        lock = active_lock(self.store, "projection", self.projection.name, ProjectionError)
        if not await lock.acquire(stop, self.config.lock_poll_interval, wait=wait):
            self.busy = not stop.is_set()
            return 0
        try:
            await self._run_log(once, stop)
        finally:
            await lock.release()
        return self.applier.applied

    async def _run_log(self, once: bool, stop: asyncio.Event) -> None:
        applier, store = self.applier, self.store
        checkpoints = await applier.open()
        after = checkpoints.get(LOG, 0)
        pages = LogPages(store, self.projection.event_types(), self.config.batch_size)
        target = await store.head_position() if once else None
        try:
            while not stop.is_set():
                records, covered = await pages.next(after)
                if covered > after:
                    try:
                        await applier.apply([Delivery(r, LOG, r.position) for r in records], {LOG: covered})
                    except Stale:
                        log.info("projection %r: tables swapped or checkpoint moved; reloading", self.projection.name)
                        after = (await applier.open()).get(LOG, 0)
                        continue
                    after = covered
                if target is not None and after >= target:
                    return
                if len(records) < self.config.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.config.poll_interval)
        finally:
            await pages.close()


class LogPages:
    """Pages of the store log for one set of event types, the next one read while the
    current one is applied (reading the log and writing the read model overlap)."""

    def __init__(self, store: EventStore, event_types: list[str], batch_size: int) -> None:
        self.store, self.event_types, self.batch_size = store, event_types, batch_size
        self._ahead: tuple[int, asyncio.Task[tuple[list[RecordedEvent], int]]] | None = None

    async def next(self, after: int) -> tuple[list[RecordedEvent], int]:
        """The page after ``after``; starts reading the one after it."""
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
        for record in records:
            with contextlib.suppress(Exception):
                record.event  # noqa: B018 (decodes and keeps the event)
        return records, covered

    async def close(self) -> None:
        if self._ahead is not None:
            task = self._ahead[1]
            self._ahead = None
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def check_runner_args(store: object, projection: object, kafka: object, config: object) -> None:
    """:class:`~facta.projections.ProjectionRunner`'s arguments."""
    check_instance_arg("store", store, EventStore, "an EventStore")
    check_projection_class("projection", projection)
    if kafka is not None and not isinstance(kafka, KafkaSettings):
        raise InvalidValue(f"kafka must be a KafkaSettings or None, got {got(kafka)}")
    if config is not None and not isinstance(config, RunnerConfig):
        raise InvalidValue(f"config must be a RunnerConfig or None, got {got(config)}")
