"""A small history for the audit tests, built through the domain only: an account with
deposits and a withdrawal by two actors, a ride from request to trip end, billing (the
reference process manager) charging that ride to the rider's account, and the billing
projection recording the charge."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from facta.domain.reference import Account, Location, Ride, Tariff
from facta.eventstore import EventStore, Repository
from facta.projections import ProjectionRunner
from facta.projections.reference import Billing, BillingProcess

TARIFF = Tariff(currency="EUR", base=250, per_km=120, per_minute=30, minimum=700)
RIDE = "ride-audit-1"
RIDER_ACCOUNT = "acct-rider-1"
DRIVER_ACCOUNT = Billing.driver_account("driver-1")
ACCOUNT = "acct-alice"


async def _pause() -> None:
    # Consecutive saves get distinct recorded-at times, so "as of an event's time" is exact.
    await asyncio.sleep(0.005)


@dataclass
class Scenario:
    fare: int


async def build(store: EventStore) -> Scenario:
    repo = Repository(store, snapshot_every=2)
    # acct-alice: v1 opened (alice), v2 deposit 1000 (alice), v3 withdraw 300 (bob), v4 deposit 50 (alice)
    alice = Account.open(ACCOUNT, "alice", "EUR")
    await repo.save(alice, actor="alice", correlation_id="open-alice")
    for step, actor in ((lambda: alice.deposit(1000, reference="salary"), "alice"),
                        (lambda: alice.withdraw(300, reference="rent"), "bob"),
                        (lambda: alice.deposit(50), "alice")):
        await _pause()
        step()
        await repo.save(alice, actor=actor, correlation_id=f"{actor}-{alice.version}")

    rider = Account.open(RIDER_ACCOUNT, "rider-1", "EUR")
    rider.deposit(100_00)
    driver = Account.open(DRIVER_ACCOUNT, "driver-1", "EUR")
    await repo.save(rider, driver, actor="signup")

    # ride-audit-1: v1 requested, v2 offered, v3 accepted, v4 arrived, v5 started, v6-7 telemetry, v8 ended
    ride = Ride.request(RIDE, "rider-1", Location(lat=38.71, lon=-9.14), Location(lat=38.75, lon=-9.18),
                        rider_account=RIDER_ACCOUNT)
    await repo.save(ride, actor="rider-1", correlation_id=RIDE)
    ride.offer(["driver-1", "driver-2"])
    await repo.save(ride, actor="dispatch", correlation_id=RIDE)
    ride.accept("driver-1", eta_seconds=240)
    await repo.save(ride, actor="driver-1", correlation_id=RIDE)
    ride.driver_arrived()
    ride.start_trip()
    ride.record_telemetry(Location(lat=38.72, lon=-9.15), speed_kmh=30.0)
    ride.record_telemetry(Location(lat=38.74, lon=-9.17), speed_kmh=42.0)
    ride.end_trip(TARIFF, duration_s=900)
    await repo.save(ride, actor="driver-1", correlation_id=RIDE)
    assert ride.state.fare is not None
    await ProjectionRunner(store, BillingProcess).run(once=True)  # charges
    await ProjectionRunner(store, Billing).run(once=True)  # billing_charges
    return Scenario(fare=ride.state.fare)
