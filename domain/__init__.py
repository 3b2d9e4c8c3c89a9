"""facta.domain: the modelling kit: aggregates, events, the event registry and the errors.
This layer does no I/O.

The reference aggregates ``Account`` and ``Ride`` are not part of the kit: they live in
:mod:`facta.domain.reference` (``from facta.domain.reference import Account, Ride``).
``__all__`` is the public face; the other modules of the package are its implementation.
"""

from .aggregate import Aggregate, AggregateState, PendingEvent, UnknownAggregateType, aggregate_class, applies
from .errors import (
    DomainError,
    EventDecodeError,
    EventRegistryError,
    FactaError,
    InvalidTransition,
    UnknownEventType,
)
from .events import DomainEvent, EventRegistry, Upcaster, default_registry
from .personal import ERASED, PersonalData

__all__ = [
    "ERASED",
    "Aggregate",
    "AggregateState",
    "DomainError",
    "DomainEvent",
    "EventDecodeError",
    "EventRegistry",
    "EventRegistryError",
    "FactaError",
    "InvalidTransition",
    "PendingEvent",
    "PersonalData",
    "UnknownAggregateType",
    "UnknownEventType",
    "Upcaster",
    "aggregate_class",
    "applies",
    "default_registry",
]
__all__ += ["reference"]  # the public module
