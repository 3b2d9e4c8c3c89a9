"""The aggregate base: commands validate and emit events; state changes only by applying them.

An aggregate keeps its state in a pydantic model (``State``), so the same model serves
snapshots, audit output and diffs. Handlers that apply events are marked with
:func:`applies`; commands call :meth:`Aggregate._emit`, which applies the event and keeps
it pending until a repository saves it::

    class Counter(Aggregate, stream_type="counter"):
        class State(AggregateState):
            total: int = 0

        def add(self, n: int) -> None:
            if n <= 0:
                raise DomainError(f"counter {self.id}: cannot add {n}")
            self._emit(Added(n=n))

        @applies(Added)
        def _added(self, event: Added) -> None:
            self.state.total += event.n
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from facta.errors import DomainError, EventRegistryError, InvalidValue, UnknownAggregateType

from .events import DomainEvent, check_event_class
from .names import stream_type_problem
from .personal import personal_fields

__all__ = ["Aggregate", "AggregateState", "PendingEvent", "UnknownAggregateType", "aggregate_class", "applies"]

E = TypeVar("E", bound=DomainEvent)
_HANDLER_ATTR = "__facta_applies__"


class AggregateState(BaseModel):
    """Base for an aggregate's state: validated on assignment, serialisable for snapshots."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")
    #: The fields marked ``PersonalData`` (as :attr:`DomainEvent.__personal_data__`):
    #: snapshots store them encrypted, like events.
    __personal_data__: ClassVar[tuple[tuple[str, str | None], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.__personal_data__ = personal_fields(cls)


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event emitted but not yet stored, with the identity that makes retries idempotent."""

    event: DomainEvent
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def applies(event_cls: type[E]) -> Callable[[Callable[[Any, E], None]], Callable[[Any, E], None]]:
    """Mark a method as the handler that applies ``event_cls`` to the aggregate's state.
    Raises :class:`EventRegistryError` unless it is a declared event class."""
    check_event_class("applies", event_cls)

    def mark(fn: Callable[[Any, E], None]) -> Callable[[Any, E], None]:
        setattr(fn, _HANDLER_ATTR, event_cls)
        return fn

    return mark


class Aggregate:
    """Base class of aggregates. Subclasses set ``stream_type`` and a ``State`` model."""

    stream_type: ClassVar[str]
    State: ClassVar[type[AggregateState]] = AggregateState
    #: Bump when ``State`` changes shape: snapshots of other state versions are ignored.
    state_version: ClassVar[int] = 1
    _handlers: ClassVar[dict[type[DomainEvent], Callable[[Any, Any], None]]] = {}
    #: Every class declared with ``stream_type=...``, by that stream type (the newest
    #: declaration wins): audit queries find a stream's aggregate class here.
    _by_stream_type: ClassVar[dict[str, type[Aggregate]]] = {}

    def __init_subclass__(cls, *, stream_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if stream_type is not None:
            problem = stream_type_problem(stream_type)
            if problem is not None:  # it names the relay's Kafka topic <prefix>.<stream type>
                raise EventRegistryError(f"aggregate {cls.__qualname__}: stream type {stream_type!r} {problem}")
            cls.stream_type = stream_type
            Aggregate._by_stream_type[stream_type] = cls
        own: dict[type[DomainEvent], Callable[[Any, Any], None]] = {}
        for value in vars(cls).values():
            event_cls = getattr(value, _HANDLER_ATTR, None)
            if event_cls is not None:
                if event_cls in own:
                    raise EventRegistryError(f"{cls.__name__} has two handlers for {event_cls.__name__}")
                own[event_cls] = value
        cls._handlers = {**cls._handlers, **own}

    def __init__(self, id: str) -> None:
        if not isinstance(id, str) or not id:
            raise DomainError(f"{type(self).__name__}: id must be a non-empty string, got {id!r}")
        self.id = id
        self.version = 0
        self.state: Any = self.State()
        self._pending: list[PendingEvent] = []

    # -- commands use these -------------------------------------------------------------

    def _emit(self, event: DomainEvent) -> None:
        """Apply ``event`` now and keep it pending until the aggregate is saved."""
        self._apply(event)
        self._pending.append(PendingEvent(event))

    def _apply(self, event: DomainEvent) -> None:
        handler = self._handlers.get(type(event))
        if handler is None:
            raise EventRegistryError(f"{type(self).__name__} has no handler for {type(event).__name__}")
        handler(self, event)
        self.version += 1

    # -- repositories use these ---------------------------------------------------------

    @property
    def pending_events(self) -> list[PendingEvent]:
        """Events emitted since the aggregate was loaded or last saved."""
        return list(self._pending)

    def assign_event_ids(self, *event_ids: uuid.UUID) -> None:
        """Give the newest pending events these ids, oldest first. A process that reacts
        to an event derives them from that event's id, so retrying its command stores
        nothing new: the store keeps the first events with those ids. Raises
        :class:`~facta.errors.InvalidValue` for none, or more ids than pending events."""
        if not 0 < len(event_ids) <= len(self._pending):
            raise InvalidValue(f"{self.stream_type} {self.id!r}: {len(event_ids)} ids given for"
                               f" {len(self._pending)} pending events; give 1 id per pending event, at most")
        start = len(self._pending) - len(event_ids)
        for i, event_id in enumerate(event_ids, start):
            self._pending[i] = replace(self._pending[i], event_id=event_id)

    def mark_saved(self) -> None:
        """Forget the pending events: the store has them now."""
        self._pending.clear()

    @property
    def saved_version(self) -> int:
        """The stream version the store holds: the current version less what is pending."""
        return self.version - len(self._pending)

    @classmethod
    def rehydrate(
        cls,
        id: str,
        events: Iterable[DomainEvent],
        *,
        state: AggregateState | None = None,
        version: int = 0,
    ) -> Self:
        """Rebuild an aggregate from stored events, optionally starting from a snapshot."""
        agg = cls.__new__(cls)
        agg.id = id
        agg.version = version
        agg.state = state.model_copy(deep=True) if state is not None else cls.State()
        agg._pending = []
        for event in events:
            agg._apply(event)
        return agg

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, version={self.version}, state={self.state!r})"


def aggregate_class(stream_type: str) -> type[Aggregate]:
    """The aggregate class declared with ``stream_type=...``; importing a module declares
    its classes (``facta.domain.reference`` declares ``Account`` and ``Ride``)."""
    try:
        return Aggregate._by_stream_type[stream_type]
    except KeyError:
        raise UnknownAggregateType(stream_type, Aggregate._by_stream_type) from None
