"""The reference ``Ride`` aggregate: one taxi ride from request to fare.

Lifecycle: new -> requested -> offered -> accepted -> driver_arrived -> in_progress -> ended;
a ride can be cancelled while requested, offered, accepted or driver_arrived.

Telemetry is recorded only while the trip is in progress. Each point carries the trip's
cumulative distance in whole metres (haversine from the previous point, rounded per
segment), so replay never redoes float maths and the state stays small: only the last
position and a count are kept, never the points. The fare comes from a :class:`Tariff`
and is computed in ``Decimal``, never in float.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from facta.errors import DomainError, InvalidTransition

from .aggregate import Aggregate, AggregateState, applies
from .events import DomainEvent
from .personal import PersonalData

__all__ = [
    "EARTH_RADIUS_M",
    "CancelledBy",
    "DriverArrived",
    "Location",
    "Ride",
    "RideAccepted",
    "RideCancelled",
    "RideOffered",
    "RideRequested",
    "RideStatus",
    "Tariff",
    "TelemetryRecorded",
    "TripEnded",
    "TripStarted",
    "haversine_m",
]

EARTH_RADIUS_M = 6_371_000.0
"""Mean Earth radius used by :func:`haversine_m`."""

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Count = Annotated[StrictInt, Field(ge=0)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
RideStatus = Literal["new", "requested", "offered", "accepted", "driver_arrived", "in_progress", "ended", "cancelled"]
CancelledBy = Literal["rider", "driver", "system"]
_CANCELLABLE: frozenset[str] = frozenset({"requested", "offered", "accepted", "driver_arrived"})
_CANCELLERS: tuple[str, ...] = ("rider", "driver", "system")


class Location(BaseModel):
    """A WGS84 point in decimal degrees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)


def haversine_m(a: Location, b: Location) -> float:
    """Great-circle distance between two points in metres."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi = phi2 - phi1
    dlmb = math.radians(b.lon - a.lon)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class Tariff(BaseModel):
    """Prices in minor units: ``base`` plus ``per_km`` and ``per_minute``, at least ``minimum``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: Currency
    base: Count
    per_km: Count
    per_minute: Count
    minimum: Count

    def fare(self, distance_m: int, duration_s: int) -> int:
        """The fare in minor units, rounded half up, never below ``minimum``."""
        for what, value in (("distance_m", distance_m), ("duration_s", duration_s)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise DomainError(f"tariff {self.currency}: {what} must be a non-negative integer, got {value!r}")
        with localcontext() as ctx:
            ctx.prec = 80  # exact for any realistic input; the /60 part is the only non-terminating one
            amount = (
                Decimal(self.base)
                + Decimal(self.per_km) * Decimal(distance_m) / Decimal(1000)
                + Decimal(self.per_minute) * Decimal(duration_s) / Decimal(60)
            )
            fare = int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        return max(fare, self.minimum)


# -- events -------------------------------------------------------------------------------


class RideRequested(DomainEvent, name="ride.requested", version=1):
    rider_id: NonEmpty
    pickup: Location
    dropoff: Location
    rider_account: NonEmpty | None = None
    # Personal data of the rider (subject: rider_id): stored encrypted, "[erased]" once
    # `facta gdpr forget <rider id>` destroyed the rider's key. Left out of the payload
    # when None, so rides requested without a name are stored as before.
    rider_name: Annotated[NonEmpty | None, PersonalData(subject="rider_id")] = Field(
        default=None, exclude_if=lambda value: value is None
    )


class RideOffered(DomainEvent, name="ride.offered", version=1):
    driver_ids: tuple[NonEmpty, ...] = Field(min_length=1)


class RideAccepted(DomainEvent, name="ride.accepted", version=1):
    driver_id: NonEmpty
    eta_seconds: Count


class DriverArrived(DomainEvent, name="ride.driver_arrived", version=1):
    pass


class TripStarted(DomainEvent, name="ride.trip_started", version=1):
    pass


class TelemetryRecorded(DomainEvent, name="ride.telemetry_recorded", version=1):
    """One position during the trip; ``distance_m`` is the trip's cumulative distance so far."""

    position: Location
    speed_kmh: float = Field(ge=0, allow_inf_nan=False)
    distance_m: Count


class TripEnded(DomainEvent, name="ride.trip_ended", version=1):
    distance_m: Count
    duration_s: Count
    fare: Count
    currency: Currency


class RideCancelled(DomainEvent, name="ride.cancelled", version=1):
    reason: NonEmpty
    by: CancelledBy


# -- aggregate ----------------------------------------------------------------------------


class Ride(Aggregate, stream_type="ride"):
    """A taxi ride: requested by a rider, offered to drivers, accepted by one, driven, priced."""

    class State(AggregateState):
        status: RideStatus = "new"
        rider_id: str | None = None
        rider_account: str | None = None
        # Sealed in snapshots too; left out when None (snapshots of rides without a name
        # keep their shape).
        rider_name: Annotated[str | None, PersonalData(subject="rider_id")] = Field(
            default=None, exclude_if=lambda value: value is None
        )
        pickup: Location | None = None
        dropoff: Location | None = None
        offered_to: tuple[str, ...] = ()
        driver_id: str | None = None
        eta_seconds: int | None = None
        last_position: Location | None = None
        telemetry_count: int = 0
        distance_m: int = 0
        fare: int | None = None
        currency: str | None = None

    state: State

    # -- commands -----------------------------------------------------------------------

    @classmethod
    def request(
        cls,
        ride_id: str,
        rider_id: str,
        pickup: Location,
        dropoff: Location,
        rider_account: str | None = None,
        rider_name: str | None = None,
    ) -> Ride:
        """A rider asks for a ride from ``pickup`` to ``dropoff``. ``rider_name`` is
        personal data of ``rider_id`` (stored encrypted; erased by forgetting the rider)."""
        ride = cls(ride_id)
        ride._text(rider_id, "rider_id")
        ride._location(pickup, "pickup")
        ride._location(dropoff, "dropoff")
        if rider_account is not None:
            ride._text(rider_account, "rider_account")
        if rider_name is not None:
            ride._text(rider_name, "rider_name")
        ride._emit(RideRequested(rider_id=rider_id, pickup=pickup, dropoff=dropoff, rider_account=rider_account,
                                 rider_name=rider_name))
        return ride

    def offer(self, driver_ids: Iterable[str]) -> None:
        """Offer the ride to some drivers; offering again replaces the previous offer."""
        self._require("offer", "requested", "offered")
        if isinstance(driver_ids, str) or not isinstance(driver_ids, Iterable):
            raise DomainError(f"ride {self.id}: driver_ids must be a collection of ids, got {driver_ids!r}")
        ids = tuple(driver_ids)
        if not ids:
            raise DomainError(f"ride {self.id}: driver_ids must not be empty")
        for driver_id in ids:
            self._text(driver_id, "driver id")
        if len(set(ids)) != len(ids):
            dupes = sorted({d for d in ids if ids.count(d) > 1})
            raise DomainError(f"ride {self.id}: driver_ids has duplicates {dupes}")
        self._emit(RideOffered(driver_ids=ids))

    def accept(self, driver_id: str, eta_seconds: int) -> None:
        """One of the offered drivers takes the ride."""
        self._require("accept", "offered")
        self._text(driver_id, "driver_id")
        if driver_id not in self.state.offered_to:
            raise InvalidTransition(
                "ride", self.id, f"accept by driver {driver_id!r}", f"offered to {list(self.state.offered_to)}"
            )
        self._count(eta_seconds, "eta_seconds")
        self._emit(RideAccepted(driver_id=driver_id, eta_seconds=eta_seconds))

    def driver_arrived(self) -> None:
        """The accepted driver is at the pickup point."""
        self._require("mark driver arrived", "accepted")
        self._emit(DriverArrived())

    def start_trip(self) -> None:
        """The rider is on board."""
        self._require("start trip", "driver_arrived")
        self._emit(TripStarted())

    def record_telemetry(self, position: Location, speed_kmh: float) -> None:
        """Record a position during the trip and extend the running distance."""
        self._require("record telemetry", "in_progress")
        self._location(position, "position")
        if (
            isinstance(speed_kmh, bool)
            or not isinstance(speed_kmh, (int, float))
            or not math.isfinite(speed_kmh)
            or speed_kmh < 0
        ):
            raise DomainError(f"ride {self.id}: speed_kmh must be a finite number >= 0, got {speed_kmh!r}")
        last = self.state.last_position
        segment = 0 if last is None else int(haversine_m(last, position) + 0.5)
        self._emit(
            TelemetryRecorded(position=position, speed_kmh=speed_kmh, distance_m=self.state.distance_m + segment)
        )

    def end_trip(self, tariff: Tariff, duration_s: int) -> None:
        """The rider is dropped off; price the distance recorded so far."""
        self._require("end trip", "in_progress")
        if not isinstance(tariff, Tariff):
            raise DomainError(f"ride {self.id}: tariff must be a Tariff, got {tariff!r}")
        self._count(duration_s, "duration_s")
        distance_m = self.state.distance_m
        fare = tariff.fare(distance_m, duration_s)
        self._emit(TripEnded(distance_m=distance_m, duration_s=duration_s, fare=fare, currency=tariff.currency))

    def cancel(self, reason: str, by: CancelledBy) -> None:
        """Cancel before the trip starts."""
        if self.state.status not in _CANCELLABLE:
            raise InvalidTransition("ride", self.id, "cancel", self.state.status)
        self._text(reason, "reason")
        if by not in _CANCELLERS:
            raise DomainError(f"ride {self.id}: cancelled by must be one of {list(_CANCELLERS)}, got {by!r}")
        self._emit(RideCancelled(reason=reason, by=by))

    # -- checks -------------------------------------------------------------------------

    def _require(self, command: str, *statuses: str) -> None:
        if self.state.status not in statuses:
            raise InvalidTransition("ride", self.id, command, self.state.status)

    def _text(self, value: object, what: str) -> None:
        if not isinstance(value, str) or not value:
            raise DomainError(f"ride {self.id}: {what} must be a non-empty string, got {value!r}")

    def _count(self, value: object, what: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DomainError(f"ride {self.id}: {what} must be a non-negative integer, got {value!r}")

    def _location(self, value: object, what: str) -> None:
        if not isinstance(value, Location):
            raise DomainError(f"ride {self.id}: {what} must be a Location, got {value!r}")

    # -- event handlers -----------------------------------------------------------------

    @applies(RideRequested)
    def _requested(self, event: RideRequested) -> None:
        self.state.status = "requested"
        self.state.rider_id = event.rider_id
        self.state.rider_account = event.rider_account
        self.state.rider_name = event.rider_name
        self.state.pickup = event.pickup
        self.state.dropoff = event.dropoff

    @applies(RideOffered)
    def _offered(self, event: RideOffered) -> None:
        self.state.status = "offered"
        self.state.offered_to = event.driver_ids

    @applies(RideAccepted)
    def _accepted(self, event: RideAccepted) -> None:
        self.state.status = "accepted"
        self.state.driver_id = event.driver_id
        self.state.eta_seconds = event.eta_seconds

    @applies(DriverArrived)
    def _driver_arrived(self, event: DriverArrived) -> None:
        self.state.status = "driver_arrived"

    @applies(TripStarted)
    def _trip_started(self, event: TripStarted) -> None:
        self.state.status = "in_progress"

    @applies(TelemetryRecorded)
    def _telemetry(self, event: TelemetryRecorded) -> None:
        self.state.last_position = event.position
        self.state.telemetry_count += 1
        self.state.distance_m = event.distance_m

    @applies(TripEnded)
    def _trip_ended(self, event: TripEnded) -> None:
        self.state.status = "ended"
        self.state.distance_m = event.distance_m
        self.state.fare = event.fare
        self.state.currency = event.currency

    @applies(RideCancelled)
    def _cancelled(self, event: RideCancelled) -> None:
        self.state.status = "cancelled"
