"""Tests of the reference ``Ride`` aggregate, ``Location``, ``Tariff`` and ``haversine_m``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from facta import testing  # testing.given: hypothesis has a `given` too
from facta.domain import DomainError, DomainEvent, InvalidTransition, default_registry
from facta.domain.reference import (
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

PICKUP = Location(lat=52.5200, lon=13.4050)
DROPOFF = Location(lat=52.5000, lon=13.4000)
TARIFF = Tariff(currency="EUR", base=300, per_km=150, per_minute=30, minimum=700)


def events(ride: Ride) -> list[DomainEvent]:
    return [p.event for p in ride.pending_events]


def snapshot(ride: Ride) -> tuple[int, dict[str, object]]:
    return ride.version, ride.state.model_dump()


def ride_in(status: str) -> Ride:
    """A ride driven to ``status`` along the happy path (or cancelled by the rider)."""
    if status == "new":
        return Ride("ride-1")
    ride = Ride.request("ride-1", "rider-1", PICKUP, DROPOFF, rider_account="acc-1")
    steps: list[tuple[str, Callable[[Ride], None]]] = [
        ("offered", lambda r: r.offer(["drv-1", "drv-2"])),
        ("accepted", lambda r: r.accept("drv-2", 240)),
        ("driver_arrived", lambda r: r.driver_arrived()),
        ("in_progress", lambda r: r.start_trip()),
        ("ended", lambda r: r.end_trip(TARIFF, 600)),
    ]
    if status == "cancelled":
        ride.cancel("changed my mind", "rider")
        return ride
    for reached, step in steps:
        if ride.state.status == status:
            break
        step(ride)
        assert ride.state.status == reached
    assert ride.state.status == status
    return ride


# -- Location and haversine ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.0001, 0), (-90.5, 0), (0, 180.01), (0, -181), (math.nan, 0), (0, math.inf), ("north", 0)]
)
def test_location_rejects_out_of_range_coordinates(lat: object, lon: object) -> None:
    with pytest.raises(ValidationError):
        Location(lat=lat, lon=lon)


@pytest.mark.parametrize(("lat", "lon"), [(90, 180), (-90, -180), (0, 0), (52.52, 13.405)])
def test_location_accepts_the_bounds(lat: float, lon: float) -> None:
    loc = Location(lat=lat, lon=lon)
    assert (loc.lat, loc.lon) == (lat, lon)


def test_location_is_frozen_and_hashable() -> None:
    with pytest.raises(ValidationError):
        PICKUP.lat = 0  # type: ignore[misc]
    assert hash(PICKUP) == hash(Location(lat=52.52, lon=13.405))


@pytest.mark.parametrize(
    ("a", "b", "metres"),
    [
        (Location(lat=0, lon=0), Location(lat=1, lon=0), 111_195),  # one degree of latitude, R = 6371 km
        (Location(lat=0, lon=0), Location(lat=0, lon=1), 111_195),  # one degree of longitude at the equator
        (Location(lat=48.8566, lon=2.3522), Location(lat=51.5074, lon=-0.1278), 343_556),  # Paris - London
        (Location(lat=0, lon=0), Location(lat=0, lon=180), 20_015_087),  # half the equator
        (PICKUP, PICKUP, 0),
    ],
)
def test_haversine_known_distances(a: Location, b: Location, metres: int) -> None:
    assert round(haversine_m(a, b)) == metres
    assert haversine_m(a, b) == pytest.approx(haversine_m(b, a))


# -- Tariff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tariff", "distance_m", "duration_s", "fare"),
    [
        (TARIFF, 10_000, 1_200, 300 + 1_500 + 600),
        (TARIFF, 444, 600, 700),  # 666.6 is below the minimum
        (TARIFF, 0, 0, 700),
        (Tariff(currency="EUR", base=0, per_km=1, per_minute=0, minimum=0), 500, 0, 1),  # 0.5 rounds up
        (Tariff(currency="EUR", base=0, per_km=1, per_minute=0, minimum=0), 2_500, 0, 3),  # 2.5 -> 3, not 2
        (Tariff(currency="EUR", base=0, per_km=1, per_minute=0, minimum=0), 2_499, 0, 2),
        (Tariff(currency="EUR", base=0, per_km=0, per_minute=1, minimum=0), 0, 30, 1),  # half a minute
        (Tariff(currency="EUR", base=0, per_km=0, per_minute=1, minimum=0), 0, 29, 0),
        (Tariff(currency="EUR", base=0, per_km=0, per_minute=7, minimum=0), 0, 10, 1),  # 1.1666...
        (Tariff(currency="JPY", base=500, per_km=333, per_minute=17, minimum=0), 1_234, 75, 932),  # 932.172...
    ],
)
def test_fare_known_values(tariff: Tariff, distance_m: int, duration_s: int, fare: int) -> None:
    result = tariff.fare(distance_m, duration_s)
    assert result == fare
    assert type(result) is int


@pytest.mark.parametrize(("distance_m", "duration_s", "named"), [(-1, 0, "-1"), (1.5, 0, "1.5"), (0, True, "True")])
def test_fare_rejects_bad_input(distance_m: object, duration_s: object, named: str) -> None:
    with pytest.raises(DomainError) as exc:
        TARIFF.fare(distance_m, duration_s)  # type: ignore[arg-type]
    assert str(exc.value).endswith(f"got {named}")


@pytest.mark.parametrize(
    "payload",
    [
        {"currency": "eur", "base": 1, "per_km": 1, "per_minute": 1, "minimum": 1},
        {"currency": "EUR", "base": -1, "per_km": 1, "per_minute": 1, "minimum": 1},
        {"currency": "EUR", "base": 1, "per_km": 1.5, "per_minute": 1, "minimum": 1},
        {"currency": "EUR", "base": 1, "per_km": 1, "per_minute": True, "minimum": 1},
        {"currency": "EUR", "base": 1, "per_km": 1, "per_minute": 1},
    ],
)
def test_tariff_validates_its_prices(payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Tariff.model_validate(payload)


prices = st.integers(0, 100_000)
tariffs = st.builds(Tariff, currency=st.just("EUR"), base=prices, per_km=prices, per_minute=prices, minimum=prices)
distances = st.integers(0, 2_000_000)
durations = st.integers(0, 86_400)


def oracle_fare(t: Tariff, distance_m: int, duration_s: int) -> int:
    exact = Fraction(t.base) + Fraction(t.per_km * distance_m, 1000) + Fraction(t.per_minute * duration_s, 60)
    return max(math.floor(exact + Fraction(1, 2)), t.minimum)


@settings(max_examples=300)
@given(tariffs, distances, distances, durations, durations)
def test_fare_properties(t: Tariff, d1: int, d2: int, s1: int, s2: int) -> None:
    fare = t.fare(d1, s1)
    assert fare == oracle_fare(t, d1, s1)
    assert fare >= t.minimum
    lo, hi = sorted((d1, d2))
    assert t.fare(lo, s1) <= t.fare(hi, s1)
    lo, hi = sorted((s1, s2))
    assert t.fare(d1, lo) <= t.fare(d1, hi)


# -- the happy path -------------------------------------------------------------------------


def test_a_whole_ride() -> None:
    ride = Ride.request("ride-1", "rider-1", PICKUP, DROPOFF, rider_account="acc-1")
    assert (ride.state.status, ride.state.rider_id, ride.state.rider_account) == ("requested", "rider-1", "acc-1")
    assert (ride.state.pickup, ride.state.dropoff) == (PICKUP, DROPOFF)

    ride.offer(["drv-1", "drv-2"])
    assert (ride.state.status, ride.state.offered_to) == ("offered", ("drv-1", "drv-2"))

    ride.accept("drv-2", 240)
    assert (ride.state.status, ride.state.driver_id, ride.state.eta_seconds) == ("accepted", "drv-2", 240)

    ride.driver_arrived()
    assert ride.state.model_dump()["status"] == "driver_arrived"
    ride.start_trip()
    assert ride.state.model_dump()["status"] == "in_progress"

    path = [Location(lat=52.5200 + i * 0.01, lon=13.4050) for i in range(4)]  # 3 x 1112 m
    for point in path:
        ride.record_telemetry(point, 35.5)
    assert (ride.state.telemetry_count, ride.state.distance_m, ride.state.last_position) == (4, 3_336, path[-1])

    ride.end_trip(TARIFF, 900)
    # 300 + 150 * 3.336 + 30 * 15 = 1250.4
    assert (ride.state.status, ride.state.fare, ride.state.currency, ride.state.distance_m) == (
        "ended",
        1_250,
        "EUR",
        3_336,
    )
    assert ride.version == 10
    assert [type(e) for e in events(ride)] == [
        RideRequested,
        RideOffered,
        RideAccepted,
        DriverArrived,
        TripStarted,
        *[TelemetryRecorded] * 4,
        TripEnded,
    ]
    assert events(ride)[-1] == TripEnded(distance_m=3_336, duration_s=900, fare=1_250, currency="EUR")
    assert [e.distance_m for e in events(ride) if isinstance(e, TelemetryRecorded)] == [0, 1_112, 2_224, 3_336]


def test_request_without_account() -> None:
    ride = Ride.request("ride-1", "rider-1", PICKUP, DROPOFF)
    assert ride.state.rider_account is None
    assert events(ride) == [RideRequested(rider_id="rider-1", pickup=PICKUP, dropoff=DROPOFF)]


# -- request ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"rider_id": ""}, "rider_id must be a non-empty string, got ''"),
        ({"rider_id": None}, "rider_id must be a non-empty string, got None"),
        ({"pickup": {"lat": 1, "lon": 2}}, "pickup must be a Location, got {'lat': 1, 'lon': 2}"),
        ({"dropoff": (1.0, 2.0)}, "dropoff must be a Location, got (1.0, 2.0)"),
        ({"rider_account": ""}, "rider_account must be a non-empty string, got ''"),
    ],
)
def test_request_validates_its_input(kwargs: dict[str, object], named: str) -> None:
    args: dict[str, object] = {"rider_id": "rider-1", "pickup": PICKUP, "dropoff": DROPOFF, **kwargs}
    with pytest.raises(DomainError) as exc:
        Ride.request("ride-1", **args)  # type: ignore[arg-type]
    assert str(exc.value) == f"ride ride-1: {named}"


# -- offer ------------------------------------------------------------------------------------


def test_offering_again_replaces_the_offer() -> None:
    ride = ride_in("offered")
    ride.offer(("drv-7",))
    assert ride.state.offered_to == ("drv-7",)
    with pytest.raises(InvalidTransition, match=r"cannot accept by driver 'drv-1' while offered to \['drv-7'\]$"):
        ride.accept("drv-1", 60)


@pytest.mark.parametrize(
    ("driver_ids", "message"),
    [
        ([], "driver_ids must not be empty"),
        ("drv-1", "driver_ids must be a collection of ids, got 'drv-1'"),
        (None, "driver_ids must be a collection of ids, got None"),
        (["drv-1", ""], "driver id must be a non-empty string, got ''"),
        (["drv-1", 5], "driver id must be a non-empty string, got 5"),
        (["drv-1", "drv-2", "drv-1"], "driver_ids has duplicates ['drv-1']"),
    ],
)
def test_offer_validates_the_drivers(driver_ids: object, message: str) -> None:
    ride = ride_in("requested")
    before = snapshot(ride)
    with pytest.raises(DomainError) as exc:
        ride.offer(driver_ids)  # type: ignore[arg-type]
    assert str(exc.value) == f"ride ride-1: {message}"
    assert snapshot(ride) == before


def test_offer_accepts_any_iterable() -> None:
    ride = ride_in("requested")
    ride.offer(d for d in ["drv-1", "drv-2"])
    assert ride.state.offered_to == ("drv-1", "drv-2")


# -- accept -----------------------------------------------------------------------------------


# facta.testing's given/when/then, as users' own tests would use it: given the stored events.
OFFERED = (RideRequested(rider_id="rider-1", pickup=PICKUP, dropoff=DROPOFF), RideOffered(driver_ids=("drv-1", "drv-2")))


def test_only_an_offered_driver_may_accept() -> None:
    scenario = testing.given(Ride, "ride-1", *OFFERED)
    before = snapshot(scenario.aggregate)
    error = scenario.when(lambda ride: ride.accept("drv-9", 60)).then_raises(InvalidTransition)
    assert str(error) == "ride ride-1: cannot accept by driver 'drv-9' while offered to ['drv-1', 'drv-2']"
    assert snapshot(scenario.aggregate) == before


@pytest.mark.parametrize("eta", [-1, 1.5, True, None, "60"])
def test_accept_needs_a_non_negative_integer_eta(eta: object) -> None:
    ride = ride_in("offered")
    with pytest.raises(DomainError) as exc:
        ride.accept("drv-1", eta)  # type: ignore[arg-type]
    assert str(exc.value) == f"ride ride-1: eta_seconds must be a non-negative integer, got {eta!r}"
    assert ride.state.status == "offered"


def test_accept_with_zero_eta() -> None:
    ride = testing.given(Ride, "ride-1", *OFFERED).when(lambda ride: ride.accept("drv-1", 0)).then(
        RideAccepted(driver_id="drv-1", eta_seconds=0))
    assert (ride.state.driver_id, ride.state.eta_seconds) == ("drv-1", 0)


# -- telemetry -------------------------------------------------------------------------------


def test_telemetry_distance_accumulates_per_segment() -> None:
    ride = ride_in("in_progress")
    assert ride.state.last_position is None
    # 0.001 degrees of latitude is 111.19 m: each segment counts 111 m
    for i in range(10):
        ride.record_telemetry(Location(lat=10 + i * 0.001, lon=20), 40)
    assert (ride.state.telemetry_count, ride.state.distance_m) == (10, 999)
    assert ride.state.last_position == Location(lat=10.009, lon=20)


def test_standing_still_adds_no_distance() -> None:
    ride = ride_in("in_progress")
    for _ in range(5):
        ride.record_telemetry(PICKUP, 0)
    assert (ride.state.telemetry_count, ride.state.distance_m) == (5, 0)


@pytest.mark.parametrize("speed", [-0.1, math.nan, math.inf, True, "30", None])
def test_telemetry_rejects_a_bad_speed(speed: object) -> None:
    ride = ride_in("in_progress")
    with pytest.raises(DomainError) as exc:
        ride.record_telemetry(PICKUP, speed)  # type: ignore[arg-type]
    assert str(exc.value) == f"ride ride-1: speed_kmh must be a finite number >= 0, got {speed!r}"
    assert ride.state.telemetry_count == 0


def test_telemetry_rejects_a_bad_position() -> None:
    ride = ride_in("in_progress")
    with pytest.raises(DomainError, match=r"position must be a Location, got \(52.5, 13.4\)$"):
        ride.record_telemetry((52.5, 13.4), 10)  # type: ignore[arg-type]


def test_state_keeps_no_telemetry_points() -> None:
    ride = ride_in("in_progress")
    for i in range(200):
        ride.record_telemetry(Location(lat=i * 0.0001, lon=0), 20)
    dumped = ride.state.model_dump()
    assert set(dumped) == set(Ride.State.model_fields) - {"rider_name"}  # rider_name: left out when None
    assert all(not isinstance(v, (list, tuple)) or len(v) <= 2 for v in dumped.values())
    assert len(ride.state.model_dump_json()) < 500


# -- end_trip ---------------------------------------------------------------------------------


def test_end_trip_prices_the_recorded_distance() -> None:
    ride = ride_in("in_progress")
    ride.record_telemetry(Location(lat=0, lon=0), 50)
    ride.record_telemetry(Location(lat=0.1, lon=0), 50)  # 11_119 m
    tariff = Tariff(currency="GBP", base=250, per_km=200, per_minute=0, minimum=0)
    ride.end_trip(tariff, 1_000)
    assert events(ride)[-1] == TripEnded(distance_m=11_119, duration_s=1_000, fare=250 + 2_224, currency="GBP")


def test_end_trip_without_telemetry_charges_the_minimum() -> None:
    ride = ride_in("in_progress")
    ride.end_trip(TARIFF, 60)
    assert (ride.state.distance_m, ride.state.fare) == (0, 700)


@pytest.mark.parametrize(
    ("tariff", "duration", "message"),
    [
        (TARIFF, -5, "duration_s must be a non-negative integer, got -5"),
        (TARIFF, 60.0, "duration_s must be a non-negative integer, got 60.0"),
        ({"currency": "EUR"}, 60, "tariff must be a Tariff, got {'currency': 'EUR'}"),
    ],
)
def test_end_trip_validates_its_input(tariff: object, duration: object, message: str) -> None:
    ride = ride_in("in_progress")
    with pytest.raises(DomainError) as exc:
        ride.end_trip(tariff, duration)  # type: ignore[arg-type]
    assert str(exc.value) == f"ride ride-1: {message}"
    assert ride.state.status == "in_progress"


# -- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["requested", "offered", "accepted", "driver_arrived"])
@pytest.mark.parametrize("by", ["rider", "driver", "system"])
def test_cancel_before_the_trip(status: str, by: str) -> None:
    ride = ride_in(status)
    ride.cancel("no cars nearby", by)  # type: ignore[arg-type]
    assert ride.state.status == "cancelled"
    assert events(ride)[-1] == RideCancelled(reason="no cars nearby", by=by)


@pytest.mark.parametrize("status", ["new", "in_progress", "ended", "cancelled"])
def test_cancel_is_refused_once_the_trip_started_or_over(status: str) -> None:
    ride = ride_in(status)
    before = snapshot(ride)
    with pytest.raises(InvalidTransition) as exc:
        ride.cancel("too late", "rider")
    assert str(exc.value) == f"ride ride-1: cannot cancel while {status}"
    assert snapshot(ride) == before


@pytest.mark.parametrize(
    ("reason", "by", "message"),
    [
        ("late", "passenger", "cancelled by must be one of ['rider', 'driver', 'system'], got 'passenger'"),
        ("late", None, "cancelled by must be one of ['rider', 'driver', 'system'], got None"),
        ("", "rider", "reason must be a non-empty string, got ''"),
    ],
)
def test_cancel_validates_its_input(reason: str, by: object, message: str) -> None:
    ride = ride_in("offered")
    with pytest.raises(DomainError) as exc:
        ride.cancel(reason, by)  # type: ignore[arg-type]
    assert str(exc.value) == f"ride ride-1: {message}"
    assert ride.state.status == "offered"


# -- every illegal transition -----------------------------------------------------------------

STATUSES = ["new", "requested", "offered", "accepted", "driver_arrived", "in_progress", "ended", "cancelled"]
COMMANDS: dict[str, tuple[str, set[str], Callable[[Ride], None]]] = {
    # command name in the message, statuses that allow it, the call
    "offer": ("offer", {"requested", "offered"}, lambda r: r.offer(["drv-1"])),
    "accept": ("accept", {"offered"}, lambda r: r.accept("drv-1", 60)),
    "driver_arrived": ("mark driver arrived", {"accepted"}, lambda r: r.driver_arrived()),
    "start_trip": ("start trip", {"driver_arrived"}, lambda r: r.start_trip()),
    "record_telemetry": ("record telemetry", {"in_progress"}, lambda r: r.record_telemetry(PICKUP, 10)),
    "end_trip": ("end trip", {"in_progress"}, lambda r: r.end_trip(TARIFF, 60)),
    "cancel": ("cancel", {"requested", "offered", "accepted", "driver_arrived"}, lambda r: r.cancel("x", "system")),
}
ILLEGAL = [(cmd, status) for cmd, (_, allowed, _) in COMMANDS.items() for status in STATUSES if status not in allowed]


@pytest.mark.parametrize(("command", "status"), ILLEGAL, ids=[f"{c}-while-{s}" for c, s in ILLEGAL])
def test_illegal_transitions(command: str, status: str) -> None:
    label, _, call = COMMANDS[command]
    ride = ride_in(status)
    before = snapshot(ride)
    with pytest.raises(InvalidTransition) as exc:
        call(ride)
    assert str(exc.value) == f"ride ride-1: cannot {label} while {status}"
    assert (exc.value.aggregate, exc.value.status) == ("ride", status)
    assert snapshot(ride) == before


def test_there_are_many_illegal_transitions() -> None:
    assert len(ILLEGAL) == 7 * 8 - 2 - 1 - 1 - 1 - 1 - 1 - 4


# -- events, registry and rehydration -------------------------------------------------------

EXPECTED_NAMES = {
    RideRequested: "ride.requested",
    RideOffered: "ride.offered",
    RideAccepted: "ride.accepted",
    DriverArrived: "ride.driver_arrived",
    TripStarted: "ride.trip_started",
    TelemetryRecorded: "ride.telemetry_recorded",
    TripEnded: "ride.trip_ended",
    RideCancelled: "ride.cancelled",
}


@pytest.mark.parametrize(("cls", "name"), EXPECTED_NAMES.items(), ids=EXPECTED_NAMES.values())
def test_events_are_registered_by_name(cls: type[DomainEvent], name: str) -> None:
    assert cls.event_type == name
    assert default_registry.get(name) is cls


@pytest.mark.parametrize(
    ("cls", "payload"),
    [
        (RideOffered, {"driver_ids": []}),
        (RideOffered, {"driver_ids": ["d", ""]}),
        (RideAccepted, {"driver_id": "d", "eta_seconds": -1}),
        (RideAccepted, {"driver_id": "d", "eta_seconds": 1.5}),
        (TelemetryRecorded, {"position": {"lat": 0, "lon": 0}, "speed_kmh": -1, "distance_m": 0}),
        (TelemetryRecorded, {"position": {"lat": 0, "lon": 0}, "speed_kmh": 1, "distance_m": -1}),
        (TelemetryRecorded, {"position": {"lat": 95, "lon": 0}, "speed_kmh": 1, "distance_m": 0}),
        (TripEnded, {"distance_m": 0, "duration_s": 0, "fare": 10.5, "currency": "EUR"}),
        (TripEnded, {"distance_m": 0, "duration_s": 0, "fare": 10, "currency": "euro"}),
        (RideCancelled, {"reason": "x", "by": "passenger"}),
        (DriverArrived, {"unexpected": 1}),
    ],
)
def test_events_validate_their_payload(cls: type[DomainEvent], payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        cls.model_validate(payload)


def test_every_event_survives_a_json_round_trip() -> None:
    ride = ride_in("in_progress")
    ride.record_telemetry(Location(lat=1.5, lon=-2.25), 12.75)
    ride.end_trip(TARIFF, 61)
    stored = events(ride) + events(ride_in("cancelled"))[-1:]
    assert {type(e) for e in stored} == set(EXPECTED_NAMES)
    for event in stored:
        decoded = default_registry.decode(event.event_type, event.schema_version, event.model_dump_json())
        assert decoded == event
        assert type(decoded) is type(event)


@pytest.mark.parametrize("status", STATUSES)
def test_rehydrate_reproduces_state_and_version(status: str) -> None:
    ride = ride_in(status)
    copy = Ride.rehydrate("ride-1", events(ride))
    assert copy.state == ride.state
    assert copy.version == ride.version


def test_rehydrate_from_a_snapshot_mid_trip() -> None:
    ride = ride_in("in_progress")
    ride.record_telemetry(Location(lat=0, lon=0), 10)
    ride.record_telemetry(Location(lat=0.01, lon=0), 10)
    cut = ride.version
    snap = Ride.State.model_validate_json(ride.state.model_dump_json())
    assert snap == ride.state
    ride.record_telemetry(Location(lat=0.02, lon=0), 10)
    ride.end_trip(TARIFF, 120)
    copy = Ride.rehydrate("ride-1", events(ride)[cut:], state=snap, version=cut)
    assert copy.state == ride.state
    assert (copy.version, copy.state.distance_m, copy.state.telemetry_count) == (ride.version, 2_224, 3)


# -- properties -------------------------------------------------------------------------------

locations = st.builds(
    Location,
    lat=st.floats(-89.9, 89.9, allow_nan=False),
    lon=st.floats(-180, 180, allow_nan=False),
)
nearby_steps = st.tuples(st.floats(-0.01, 0.01), st.floats(-0.01, 0.01))


@given(st.lists(nearby_steps, min_size=1, max_size=50), st.floats(0, 200))
def test_telemetry_distance_is_the_sum_of_rounded_segments(steps: list[tuple[float, float]], speed: float) -> None:
    ride = ride_in("in_progress")
    points = []
    lat, lon = 45.0, 7.0
    for dlat, dlon in steps:
        lat, lon = lat + dlat, lon + dlon
        points.append(Location(lat=lat, lon=lon))
    previous = 0
    for point in points:
        ride.record_telemetry(point, speed)
        assert ride.state.distance_m >= previous
        previous = ride.state.distance_m
    expected = sum(int(haversine_m(a, b) + 0.5) for a, b in itertools.pairwise(points))
    assert ride.state.distance_m == expected
    assert ride.state.distance_m >= haversine_m(points[0], points[-1]) - 0.5 * (len(points) - 1)
    assert (ride.state.telemetry_count, ride.state.last_position) == (len(points), points[-1])
    copy = Ride.rehydrate("ride-1", events(ride))
    assert copy.state == ride.state and copy.version == ride.version


@given(locations, locations, locations)
def test_haversine_is_a_metric(a: Location, b: Location, c: Location) -> None:
    ab, bc, ac = haversine_m(a, b), haversine_m(b, c), haversine_m(a, c)
    assert 0 <= ab <= math.pi * 6_371_000 + 1e-6
    assert ab == pytest.approx(haversine_m(b, a), abs=1e-6)
    assert ac <= ab + bc + 1e-3


ALLOWED = {name: allowed for name, (_, allowed, _) in COMMANDS.items()}
NEXT = {
    "offer": "offered",
    "accept": "accepted",
    "driver_arrived": "driver_arrived",
    "start_trip": "in_progress",
    "record_telemetry": "in_progress",
    "end_trip": "ended",
    "cancel": "cancelled",
}


@settings(max_examples=300)
@given(st.lists(st.sampled_from(sorted(COMMANDS)), max_size=30))
def test_random_command_sequences_follow_the_lifecycle(commands: list[str]) -> None:
    ride = Ride.request("ride-1", "rider-1", PICKUP, DROPOFF)
    status = "requested"
    for command in commands:
        before = snapshot(ride)
        try:
            COMMANDS[command][2](ride)
        except InvalidTransition:
            assert status not in ALLOWED[command], f"{command} refused while {status}"
            assert snapshot(ride) == before
        else:
            assert status in ALLOWED[command], f"{command} accepted while {status}"
            status = NEXT[command]
            assert ride.version == before[0] + 1
        assert ride.state.status == status
    copy = Ride.rehydrate("ride-1", events(ride))
    assert copy.state == ride.state
    assert copy.version == ride.version == len(events(ride))
