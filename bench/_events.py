"""The benchmark event: a flat ride-telemetry point, in a registry of its own (so it never
shows up in the application's registry). Imported lazily through ``_common``."""

from __future__ import annotations

from _common import telemetry_fields

from facta.domain import DomainEvent, EventRegistry

__all__ = ["BENCH_REGISTRY", "Telemetry", "make_events"]

BENCH_REGISTRY = EventRegistry()


class Telemetry(DomainEvent, name="bench.ride_telemetry", version=1, registry=BENCH_REGISTRY):
    """A flat five-field telemetry point, the most frequent event of a ride."""

    ride_id: str
    lat: float
    lon: float
    speed_kmh: float
    distance_m: int


def make_events(n: int, ride: str = "ride-0") -> list[Telemetry]:
    """``n`` distinct telemetry events (:func:`_common.telemetry_fields` 0..n-1)."""
    return [Telemetry(**telemetry_fields(i, ride)) for i in range(n)]
