"""facta.domain: the modelling kit (aggregates, events, registry, errors) and the
reference aggregates ``Account`` and ``Ride``. This layer does no I/O."""

from .account import (
    Account,
    AccountClosed,
    AccountOpened,
    Deposited,
    TransferredIn,
    TransferredOut,
    Withdrawn,
    transfer,
)
from .aggregate import Aggregate, AggregateState, PendingEvent, applies
from .errors import (
    DomainError,
    EventDecodeError,
    EventRegistryError,
    FactaError,
    InvalidTransition,
    UnknownEventType,
)
from .events import DomainEvent, EventRegistry, Upcaster, default_registry
from .ride import (
    DriverArrived,
    Location,
    Ride,
    RideAccepted,
    RideCancelled,
    RideOffered,
    RideRequested,
    Tariff,
    TelemetryRecorded,
    TripEnded,
    TripStarted,
    haversine_m,
)

__all__ = [
    "Account",
    "AccountClosed",
    "AccountOpened",
    "Aggregate",
    "AggregateState",
    "Deposited",
    "DomainError",
    "DomainEvent",
    "DriverArrived",
    "EventDecodeError",
    "EventRegistry",
    "EventRegistryError",
    "FactaError",
    "InvalidTransition",
    "Location",
    "PendingEvent",
    "Ride",
    "RideAccepted",
    "RideCancelled",
    "RideOffered",
    "RideRequested",
    "Tariff",
    "TelemetryRecorded",
    "TransferredIn",
    "TransferredOut",
    "TripEnded",
    "TripStarted",
    "UnknownEventType",
    "Upcaster",
    "Withdrawn",
    "applies",
    "default_registry",
    "haversine_m",
    "transfer",
]
