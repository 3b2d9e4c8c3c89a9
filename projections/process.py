"""`ProcessManager`: handlers that turn events into commands on aggregates, exactly once.

A projection turns events into rows; a process manager turns events into commands: when
a trip ends, charge the rider and pay the driver. Its handlers are async, load aggregates,
run their commands and save them through the :class:`ProcessContext` they are given::

    class Billing(ProcessManager, name="billing_process"):
        @reacts_to(TripEnded)
        async def _charge(self, ctx: ProcessContext, event: TripEnded, record: RecordedEvent) -> None:
            payer = await ctx.repository.get(Account, ...)
            payer.withdraw(event.fare, reference=record.stream_id)
            await ctx.save(payer)

Exactly once, by deterministic event ids: the events one handler saves for one event
get ids derived from that event's id (and the process's and the handler's name,
:meth:`ProcessManager.event_id`), so a redelivery (a reset checkpoint, a crash after the
save and before the checkpoint, a Kafka rebalance) finds them stored and stores nothing:

- before a handler runs, the id of its first event is looked up; stored, with the event
  as its cause, means the handler ran: it is not run again;
- a save that loses a race to another delivery of the same event (a
  :class:`~facta.eventstore.ConcurrencyError`, or the store's
  :class:`~facta.eventstore.DuplicateEventError` for a differing copy of the events)
  keeps what the other delivery stored and stores nothing; a differing copy is logged;
- a conflict with other writers retries the handler on freshly loaded aggregates
  (``max_attempts`` times in all);
- a derived id stored for another cause (two events deriving the same ids: an
  :meth:`~ProcessManager.event_id` override that ignores the event) stops the process
  with one line naming both.

A handler saves at most once (one atomic append of every aggregate it changed): that
append is the unit that happens once. A handler that saves nothing may run again on a
redelivery, on the aggregates' state then.

The :class:`~facta.projections.ProjectionRunner` runs a process manager like a
projection: the same sources (the store log, Kafka), its own checkpoint, lock and consumer
group, ``facta projections skip`` past an event it cannot handle. It has no read-model
tables, and a replay refuses it: rebuilding a read model re-reads history, while a
process's history is the events its commands stored, which must never be issued again.
A read model of what a process did is a plain projection of the events it stored.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from facta import metrics, tracing
from facta.domain import Aggregate, DomainEvent
from facta.domain.events import check_event_class
from facta.errors import ProjectionError
from facta.eventstore import (
    AppendResult,
    ConcurrencyError,
    DuplicateEventError,
    EventStore,
    RecordedEvent,
    Repository,
)

from ._applier import Applier, Delivery, _destination, _Work
from .api import Projection

__all__ = ["ProcessContext", "ProcessManager", "reacts_to"]

log = logging.getLogger("facta.projections")

E = TypeVar("E", bound=DomainEvent)
M = TypeVar("M", bound="ProcessManager")

Reaction = Callable[[Any, "ProcessContext", Any, RecordedEvent], Awaitable[None]]

_PROCESS_IDS = uuid.UUID("8b6c2f4e-1d3a-4c59-9e07-5f2a6b8d0c31")


def reacts_to(
    event_cls: type[E],
) -> Callable[[Callable[[M, ProcessContext, E, RecordedEvent], Awaitable[None]]],
              Callable[[M, ProcessContext, E, RecordedEvent], Awaitable[None]]]:
    """Mark an async method of a :class:`ProcessManager` as its handler of ``event_cls``
    (one per event class). Raises :class:`~facta.domain.EventRegistryError` unless it is
    a declared event class."""
    check_event_class("reacts_to", event_cls)

    def mark(
        fn: Callable[[M, ProcessContext, E, RecordedEvent], Awaitable[None]],
    ) -> Callable[[M, ProcessContext, E, RecordedEvent], Awaitable[None]]:
        fn.__facta_reacts__ = event_cls  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass
class ProcessContext:
    """What a process handler works with: the store, a repository on it, and the event
    it handles (``trigger``). :meth:`save` stores its commands' events."""

    store: EventStore
    repository: Repository
    process: ProcessManager
    handler: str
    trigger: RecordedEvent
    results: list[AppendResult] | None = field(default=None, init=False)

    async def save(self, *aggregates: Aggregate) -> list[AppendResult]:
        """Append the pending events of ``aggregates`` in one transaction, with ids derived
        from the trigger's (:meth:`ProcessManager.event_id`, numbered across the
        aggregates in the order given, each one's oldest first), actor
        :attr:`ProcessManager.actor`, the trigger's correlation id, and the trigger's id
        as causation id. Returns where they are stored. When another delivery of the same
        event stored its events first, the handler stops here (it is done) and nothing is
        stored. Raises :class:`ProjectionError` when called twice in one handler call, and
        :class:`~facta.eventstore.InvalidValue` for an argument that is not an Aggregate."""
        if self.results is not None:
            raise ProjectionError(
                f"process {self.process.name!r} handler {self.handler} saved twice for one event: a handler saves"
                " every aggregate it changed in one call of save(), the unit that happens once"
            )
        dirty = [a for a in aggregates if isinstance(a, Aggregate) and a.pending_events]
        count = sum(len(a.pending_events) for a in dirty)
        ids = [self.process.event_id(self.handler, self.trigger.event_id, k) for k in range(count)]
        if len(set(ids)) != count:
            raise ProjectionError(
                f"process {self.process.name!r} derives the same event id twice for the {count} events of handler"
                f" {self.handler}: event_id() must give each index its own id"
            )
        taken = 0
        for aggregate in dirty:
            n = len(aggregate.pending_events)
            aggregate.assign_event_ids(*ids[taken:taken + n])
            taken += n
        trigger = self.trigger
        try:
            self.results = await self.repository.save(  # refuses what is not an Aggregate (InvalidValue)
                *aggregates, actor=self.process.actor or self.process.name,
                correlation_id=trigger.correlation_id, causation_id=str(trigger.event_id),
            )
        except (ConcurrencyError, DuplicateEventError) as exc:
            if ids and await self.process.handled(self.store, self.handler, trigger):
                # Another delivery of this event saved first: its events stand, ours are not stored.
                if isinstance(exc, DuplicateEventError):
                    log.warning(
                        "process %r, %s event %s: an earlier delivery stored different events for it; they stand"
                        " and this delivery's were refused (%s)", self.process.name, trigger.event_type,
                        trigger.event_id, exc.differs or exc,
                    )
                raise _Done from None
            if isinstance(exc, ConcurrencyError):
                raise _Retry(exc) from exc
            raise
        return self.results


class _Done(BaseException):
    """The handler's events are stored (by another delivery): stop it, it is done. (Not an
    Exception, so that a handler's ``except Exception`` does not swallow it.)"""


class _Retry(BaseException):
    """Another writer moved an aggregate the handler loaded: run it again (see _Done)."""

    def __init__(self, cause: ConcurrencyError) -> None:
        self.cause = cause


class ProcessManager(Projection):
    """Base class of process managers: async handlers (:func:`reacts_to`) that turn events
    into commands on aggregates, each handler's events stored once (see the module's
    docstring). Subclasses give ``name=`` (a projection name: it keys the checkpoint)."""

    actor: ClassVar[str | None] = None
    """The actor of the events it stores (default: its name)."""
    max_attempts: ClassVar[int] = 10
    """How often a handler runs for one event when other writers keep moving its aggregates."""
    _reactions: ClassVar[dict[str, Reaction]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        label = getattr(cls, "name", cls.__name__)
        if cls._handlers:
            raise ProjectionError(
                f"process manager {label!r} has @handles handlers ({', '.join(sorted(cls._handlers))}): a process"
                " manager reacts with @reacts_to; a read model is a projection of its own"
            )
        if cls._table_attrs:
            raise ProjectionError(
                f"process manager {label!r} declares read-model tables ({', '.join(sorted(cls._table_attrs))}):"
                " a read model of what it does is a projection of the events it stores"
            )
        reactions: dict[str, Reaction] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                reacted = getattr(value, "__facta_reacts__", None)
                if reacted is not None:
                    reactions[reacted.event_type] = value
                    cls._event_classes[reacted.event_type] = reacted
        cls._reactions = reactions

    def event_id(self, handler: str, trigger: uuid.UUID, index: int) -> uuid.UUID:
        """The id of event ``index`` (from 0) that ``handler`` (the method's name) saves for
        the event ``trigger``: a name-based UUID of the process's name, the handler, the
        trigger's id and the index. Override to keep ids a process used before; give each
        (trigger, index) its own id."""
        return uuid.uuid5(_PROCESS_IDS, f"{self.name}:{handler}:{trigger}:{index}")

    def reaction_for(self, event_type: str) -> Reaction | None:
        return self._reactions.get(event_type)

    async def handled(self, store: EventStore, handler: str, trigger: RecordedEvent) -> bool:
        """Whether ``handler`` saved its events for ``trigger`` already (its first event id is
        stored). Raises :class:`ProjectionError` when that id is stored with another cause."""
        first = self.event_id(handler, trigger.event_id, 0)
        stored = await store.get_event(first)
        if stored is None:
            return False
        if stored.causation_id != str(trigger.event_id):
            raise ProjectionError(
                f"process {self.name!r} derives event id {first} for {trigger.event_type} event {trigger.event_id},"
                f" but it is stored already (stream {stored.stream_id} v{stored.version}, position {stored.position})"
                f" caused by {stored.causation_id or 'nothing'}: event_id() must derive each event's ids from its id"
            )
        return True

    async def handle(self, store: EventStore, record: RecordedEvent, event: DomainEvent | None = None) -> bool:
        """Run this process's handler of ``record`` (once: not when its events are stored).
        Returns whether the handler ran. Raises what the handler raises, and
        :class:`ProjectionError` when other writers kept moving its aggregates for
        ``max_attempts`` tries."""
        reaction = self.reaction_for(record.event_type)
        if reaction is None:
            return False
        handler = reaction.__name__
        if await self.handled(store, handler, record):
            return False  # a redelivery: its events are stored
        event = record.event if event is None else event
        for _ in range(self.max_attempts):
            context = ProcessContext(store, Repository(store), self, handler, record)
            try:
                await reaction(self, context, event, record)
            except _Done:
                return True
            except _Retry:
                continue
            return True
        raise ProjectionError(
            f"process {self.name!r} could not handle {record.event_type} event {record.event_id} (stream"
            f" {record.stream_id}): other writers kept changing its aggregates ({self.max_attempts} tries)"
        )


class ProcessApplier(Applier):
    """The applier of a process manager: each batch's handlers run in order, outside any
    transaction (each save is its own append); then one transaction moves the checkpoint.
    A failing handler stops it like a projection's (the events before it checkpointed)."""

    projection: ProcessManager

    def _selects(self, event_type: str) -> bool:
        return self.projection.reaction_for(event_type) is not None

    async def _before_commit(self, batch: Sequence[Delivery], work: list[_Work]) -> None:
        started = metrics.clock()
        chosen = tracing.tracer()
        for w in work:
            try:
                if chosen is None:
                    await self.projection.handle(self.store, w.record, w.event)
                    continue
                # With an SDK recording: a CONSUMER span per event handled, so that the
                # handler's saves carry the event's trace on: the child of the batch's span
                # when that is in the event's trace already, else of the event's stored
                # context, linked to the batch's span.
                record, batch_span = w.record, tracing.current_span_context()
                stored = tracing.context_of(record.traceparent, record.tracestate)
                nested = stored is None or (batch_span is not None and batch_span.trace_id == stored.trace_id)
                with tracing.consumer_span(
                    chosen, self.source, _destination([batch[w.index]]), 1,
                    [] if nested else [(record.traceparent, record.tracestate)],
                    {"facta.projection": self.name, "messaging.message.id": str(record.event_id),
                     "facta.event_type": record.event_type,
                     **({} if self.consumer_group is None else {"messaging.consumer.group.name": self.consumer_group})},
                    link=None if nested else batch_span,
                ):
                    await self.projection.handle(self.store, record, w.event)
            except Exception as exc:
                await self._fail(batch, w.index, work, exc)
        if work:
            self.metrics.handled(started)


ProcessManager._applier_class = ProcessApplier
