"""`ProjectionRunner`: keeps one projection's live tables up to date from a subscription.

The subscription (:mod:`facta.projections.subscriptions`) is the store's log (the
default, and the only one without Kafka) or Kafka (when ``kafka=`` settings are given):
:func:`subscription_for` picks it. Either way the runner has it apply batches through an
:class:`Applier`, which commits read-model writes and checkpoints together.

- **Store log** (:class:`~facta.projections.subscriptions.StoreLogSubscription`). One
  runner per projection is active (a lock like the relay's); others wait and take over.
- **Kafka** (:class:`~facta.projections.kafka_source.KafkaSubscription`). A consumer group
  per projection (``facta.projection.<name>``), auto-commit off. On every assignment it
  seeks each partition to its own checkpoint in the database; several runners share the
  partitions and take over each other's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from facta.errors import InvalidValue
from facta.eventstore import EventStore
from facta.eventstore.validation import check_bool_arg, check_instance_arg, check_settings, got
from facta.settings import settings

from ._applier import applier_for
from .api import Projection, check_projection_class
from .subscriptions import KafkaSettings, LogPages, StoreLogSubscription, Subscription

__all__ = ["KafkaSettings", "LogPages", "ProjectionRunner", "RunnerConfig", "subscription_for"]


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


def subscription_for(
    store: EventStore, projection: type[Projection], kafka: KafkaSettings | None = None,
    config: RunnerConfig | None = None,
) -> Subscription:
    """The subscription ``projection`` reads: Kafka's with ``kafka`` settings (importing
    aiokafka only then), else the store log's, polling as ``config`` says."""
    if kafka is not None:
        from .kafka_source import KafkaSubscription

        return KafkaSubscription(store, projection, kafka)
    config = config or RunnerConfig()
    return StoreLogSubscription(store, projection, lock_poll_interval=config.lock_poll_interval,
                                poll_interval=config.poll_interval)


class ProjectionRunner:
    """Runs one projection from the store log, or from Kafka when ``kafka`` is given
    (its :attr:`subscription`)."""

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
        self.subscription = subscription_for(store, projection, kafka, self.config)
        self.applier = applier_for(store, projection, source=self.subscription.source)
        self.busy = False

    @property
    def applied(self) -> int:
        return self.applier.applied

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None, wait: bool = True,
                  on_progress: Callable[[int], None] | None = None) -> int:
        """Apply events until ``stop`` is set (or, with ``once``, until caught up with what
        was there when it started). Returns the number of events handled.

        On the store log one runner per projection is active; another one waits to take
        over, or with ``wait=False`` returns at once (``busy`` is then True).

        ``on_progress``, if given, is called after each committed batch with how far the
        checkpoints moved since this run started, summed over coordinates: store
        positions on the log, Kafka records on Kafka (handled, passed over and skipped
        events alike; ``facta projections run --once`` draws its progress with it)."""
        check_bool_arg("once", once)
        check_bool_arg("wait", wait)
        stop = stop or asyncio.Event()
        self.applier.on_progress = on_progress
        followed = await self.subscription.follow(self.applier, batch_size=self.config.batch_size, once=once,
                                                  stop=stop, wait=wait)
        if not followed:
            self.busy = not stop.is_set()
            return 0
        return self.applier.applied


def check_runner_args(store: object, projection: object, kafka: object, config: object) -> None:
    """:class:`~facta.projections.ProjectionRunner`'s arguments."""
    check_instance_arg("store", store, EventStore, "an EventStore")
    check_projection_class("projection", projection)
    if kafka is not None and not isinstance(kafka, KafkaSettings):
        raise InvalidValue(f"kafka must be a KafkaSettings or None, got {got(kafka)}")
    if config is not None and not isinstance(config, RunnerConfig):
        raise InvalidValue(f"config must be a RunnerConfig or None, got {got(config)}")
