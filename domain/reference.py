"""The reference domain: the aggregates of the two seed scenarios, with their events.

- ``Account`` (banking): a ledger of integer minor units that never goes negative;
  :func:`transfer` moves money between two accounts, one event per stream.
- ``Ride`` (taxi): one trip from request to fare, priced by a :class:`Tariff`.

The demo, the reference projections (:mod:`facta.projections.reference`) and the
``facta audit`` commands use them; an application declares its own aggregates with the
kit in :mod:`facta.domain` and needs nothing from here. Importing this module declares
the two aggregates and registers their events (``account.*``, ``ride.*``) in the
default registry. (They are written in ``account.py`` and ``ride.py``.)
"""

from __future__ import annotations

from .account import (
    Account,
    AccountClosed,
    AccountOpened,
    AccountStatus,
    CurrencyCode,
    Deposited,
    MinorUnits,
    TransferredIn,
    TransferredOut,
    Withdrawn,
    transfer,
)
from .ride import (
    EARTH_RADIUS_M,
    CancelledBy,
    DriverArrived,
    Location,
    Ride,
    RideAccepted,
    RideCancelled,
    RideOffered,
    RideRequested,
    RideStatus,
    Tariff,
    TelemetryRecorded,
    TripEnded,
    TripStarted,
    haversine_m,
)

__all__ = [
    "EARTH_RADIUS_M",
    "Account",
    "AccountClosed",
    "AccountOpened",
    "AccountStatus",
    "CancelledBy",
    "CurrencyCode",
    "Deposited",
    "DriverArrived",
    "Location",
    "MinorUnits",
    "Ride",
    "RideAccepted",
    "RideCancelled",
    "RideOffered",
    "RideRequested",
    "RideStatus",
    "Tariff",
    "TelemetryRecorded",
    "TransferredIn",
    "TransferredOut",
    "TripEnded",
    "TripStarted",
    "Withdrawn",
    "haversine_m",
    "transfer",
]
