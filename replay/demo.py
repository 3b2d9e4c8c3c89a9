"""`facta demo`: a small taxi city run through the event store.

Riders and drivers get accounts; rides go through the whole lifecycle (requested,
offered, accepted, driver arrived, trip started, telemetry, trip ended) and a few are
cancelled. When a trip ends, the ride, the rider's account and the driver's account are
saved in one transaction: the fare moves from rider to driver atomically with the ride's
end. Running it again continues the same city: accounts are reused, rides are new.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from facta.domain.account import Account
from facta.domain.ride import Location, Ride, Tariff
from facta.eventstore import EventStore, Repository, StreamNotFound

__all__ = ["TARIFF", "DemoSummary", "publish_to_kafka", "run_demo"]

TARIFF = Tariff(currency="EUR", base=250, per_km=120, per_minute=30, minimum=700)
TOP_UP = 50_00
# A box around a made-up city centre (Lisbon's coordinates, for realism).
CITY = (38.70, 38.78, -9.20, -9.10)


@dataclass
class DemoSummary:
    rides_completed: int = 0
    rides_cancelled: int = 0
    telemetry_points: int = 0
    fares_total: int = 0
    events_appended: int = 0
    transactions: int = 0
    elapsed_s: float = 0.0
    log_head: int = 0
    earnings: dict[str, int] = field(default_factory=dict)
    sample_ride: str | None = None
    sample_rider_account: str | None = None

    @property
    def events_per_second(self) -> float:
        return self.events_appended / self.elapsed_s if self.elapsed_s else 0.0


def _point(rng: random.Random) -> Location:
    lat_lo, lat_hi, lon_lo, lon_hi = CITY
    return Location(lat=round(rng.uniform(lat_lo, lat_hi), 6), lon=round(rng.uniform(lon_lo, lon_hi), 6))


async def _ensure_account(repo: Repository, account_id: str, owner: str, deposit: int) -> Account:
    try:
        return await repo.get(Account, account_id)
    except StreamNotFound:
        account = Account.open(account_id, owner, "EUR")
        if deposit:
            account.deposit(deposit, reference="opening deposit")
        await repo.save(account, actor="demo")
        return account


async def run_demo(
    url: str,
    *,
    rides: int = 300,
    riders: int = 40,
    drivers: int = 12,
    telemetry: int = 12,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Run ``rides`` rides through the store at ``url`` (migrated first) and summarise them."""
    summary = DemoSummary()
    started = time.perf_counter()
    async with await EventStore.open(url, migrate=True) as store:
        repo = Repository(store, snapshot_every=50)
        head_before = await store.head_position()
        # Same seed, same store: same run. A store that has moved on gets new rides.
        rng = random.Random(f"{seed}:{head_before}" if seed is not None else None)

        rider_ids = [f"rider-{i:03d}" for i in range(1, riders + 1)]
        driver_ids = [f"driver-{i:03d}" for i in range(1, drivers + 1)]
        accounts = {rid: await _ensure_account(repo, f"acct-{rid}", rid, 100_00) for rid in rider_ids}
        accounts |= {did: await _ensure_account(repo, f"acct-{did}", did, 0) for did in driver_ids}

        for n in range(1, rides + 1):
            rider = rng.choice(rider_ids)
            ride_id = f"ride-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
            correlation = ride_id
            pickup, dropoff = _point(rng), _point(rng)
            ride = Ride.request(ride_id, rider, pickup, dropoff, rider_account=f"acct-{rider}")
            await repo.save(ride, actor=rider, correlation_id=correlation)
            candidates = rng.sample(driver_ids, k=min(3, len(driver_ids)))
            ride.offer(candidates)
            await repo.save(ride, actor="dispatch", correlation_id=correlation)
            if rng.random() < 0.05:
                ride.cancel("rider changed their mind", "rider")
                await repo.save(ride, actor=rider, correlation_id=correlation)
                summary.rides_cancelled += 1
                continue
            driver = rng.choice(candidates)
            ride.accept(driver, eta_seconds=rng.randint(60, 600))
            await repo.save(ride, actor=driver, correlation_id=correlation)
            ride.driver_arrived()
            ride.start_trip()
            await repo.save(ride, actor=driver, correlation_id=correlation)
            for step in range(1, telemetry + 1):
                f = step / telemetry
                here = Location(
                    lat=pickup.lat + (dropoff.lat - pickup.lat) * f,
                    lon=pickup.lon + (dropoff.lon - pickup.lon) * f,
                )
                ride.record_telemetry(here, speed_kmh=round(rng.uniform(15, 55), 1))
                if step % 4 == 0:
                    await repo.save(ride, actor=driver, correlation_id=correlation)
            summary.telemetry_points += telemetry
            ride.end_trip(TARIFF, duration_s=rng.randint(300, 2400))
            fare = ride.state.fare
            assert fare is not None, "an ended trip has a fare"
            payer, payee = accounts[rider], accounts[driver]
            if payer.state.balance < fare:
                payer.deposit(TOP_UP, reference="top-up")
            payer.transfer_out(payee.id, fare, transfer_id=ride_id)
            payee.transfer_in(payer.id, fare, transfer_id=ride_id)
            # The trip's end and the money it moves commit together or not at all.
            await repo.save(ride, payer, payee, actor="billing", correlation_id=correlation, causation_id=ride_id)
            summary.rides_completed += 1
            summary.fares_total += fare
            summary.earnings[driver] = summary.earnings.get(driver, 0) + fare
            summary.sample_ride = ride_id
            summary.sample_rider_account = payer.id
            if progress is not None:
                progress(n, rides)
        summary.log_head = await store.head_position()
        summary.events_appended = summary.log_head - head_before
    summary.elapsed_s = time.perf_counter() - started
    return summary


async def publish_to_kafka(url: str, bootstrap: str, *, idempotence: bool = True) -> tuple[int, dict[str, int]]:
    """Relay the store at ``url`` to Kafka until caught up. Returns the number of events
    published by this call and, per facta topic, how many records it holds now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from facta.eventstore.relay import Relay, RelayConfig

    async with await EventStore.open(url) as store:
        published = await Relay(store, RelayConfig(bootstrap=bootstrap, idempotence=idempotence)).run(
            once=True, give_up_after=30
        )
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith("facta."))
        counts: dict[str, int] = {}
        for topic in topics:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            starts = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
            counts[topic] = sum(ends[tp] - starts[tp] for tp in partitions)
    finally:
        await consumer.stop()
    return published, counts
