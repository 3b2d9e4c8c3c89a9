"""`facta demo`: a small taxi city run through the event store.

Riders and drivers get accounts; rides go through the whole lifecycle (requested,
offered, accepted, driver arrived, trip started, telemetry, trip ended) and a few are
cancelled. Fares are not moved by the demo: the ``billing`` projection charges each
ended trip to the rider's account and pays the driver, exactly once, and the other
reference projections bring their read models up to date. Running it again continues
the same city: accounts are reused, rides are new.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facta.domain import Aggregate
from facta.domain.account import Account
from facta.domain.ride import Location, Ride, Tariff
from facta.eventstore import EventStore, Repository, StreamNotFound
from facta.projections import ProjectionRunner
from facta.projections.reference import REFERENCE_PROJECTIONS, Billing

__all__ = ["TARIFF", "CityView", "DemoSummary", "city_view", "next_commands", "publish_to_kafka", "render_city", "run_demo"]

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
    projected: dict[str, int] = field(default_factory=dict)

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


async def _rides_so_far(store: EventStore) -> int:
    from sqlalchemy import func, select

    from facta.eventstore.schema import events

    query = select(func.count()).where(events.c.stream_type == Ride.stream_type, events.c.version == 1)
    return int(await store.database.read(lambda conn: conn.execute(query).scalar_one()))


async def run_demo(
    url: str,
    *,
    rides: int = 300,
    riders: int = 40,
    drivers: int = 12,
    telemetry: int = 12,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    project: bool = True,
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
        owed: dict[str, int] = {}
        # Rides are numbered through the city's history (ride-00001, ...), so ids are
        # easy to type into `facta audit` and a second run carries on from the first.
        rides_before = await _rides_so_far(store)

        for n in range(1, rides + 1):
            rider = rng.choice(rider_ids)
            ride_id = f"ride-{rides_before + n:05d}"
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
            # The billing projection will charge the fare: make sure the rider can pay it
            # and every fare this run has left unbilled so far.
            payer = accounts[rider]
            owed[rider] = owed.get(rider, 0) + fare
            saving: list[Aggregate] = [ride]
            if payer.state.balance < owed[rider]:
                payer.deposit(TOP_UP + owed[rider] - payer.state.balance, reference="top-up")
                saving.append(payer)
            await repo.save(*saving, actor=driver, correlation_id=correlation)
            summary.rides_completed += 1
            summary.fares_total += fare
            summary.earnings[driver] = summary.earnings.get(driver, 0) + fare
            summary.sample_ride = ride_id
            summary.sample_rider_account = payer.id
            if progress is not None:
                progress(n, rides)
        # Billing first, so the read models see its charges. A projection that a running
        # `facta projections run` keeps up to date is left to it.
        for projection in sorted(REFERENCE_PROJECTIONS, key=lambda p: p is not Billing) if project else ():
            runner = ProjectionRunner(store, projection)
            applied = await runner.run(once=True, wait=False)
            if not runner.busy:
                summary.projected[projection.name] = applied
        summary.log_head = await store.head_position()
        summary.events_appended = summary.log_head - head_before
    summary.elapsed_s = time.perf_counter() - started
    return summary


async def publish_to_kafka(url: str, bootstrap: str, *, idempotence: bool = True) -> tuple[int, dict[str, int]]:
    """Relay the store at ``url`` to Kafka until caught up. Returns the number of events
    published by this call and, per facta topic, how many records it holds now."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from facta.eventstore.relay import Relay, RelayConfig

    async with await EventStore.open(url) as store:
        published = await Relay(store, RelayConfig(bootstrap=bootstrap, idempotence=idempotence)).run(
            once=True, give_up_after=30
        )
    # The partitions come from the admin client: a consumer's topics() call does not
    # put the partitions into the metadata its partitions_for_topic() reads.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith("facta."))
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    partitions = {
        entry["topic"]: [TopicPartition(entry["topic"], p["partition"]) for p in entry["partitions"]]
        for entry in described
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        counts: dict[str, int] = {}
        for topic in topics:
            owned = sorted(partitions.get(topic, []))
            starts = await consumer.beginning_offsets(owned)
            ends = await consumer.end_offsets(owned)
            counts[topic] = sum(ends[tp] - starts[tp] for tp in owned)
    finally:
        await consumer.stop()
    return published, counts


# -- what the demo shows at the end ---------------------------------------------------------


@dataclass
class CityView:
    """The reference read models, as the demo prints them."""

    rides: list[dict[str, Any]]
    balances: list[dict[str, Any]]
    earnings: list[dict[str, Any]]
    ride_statuses: dict[str, int]


async def city_view(store: EventStore, *, limit: int = 8) -> CityView:
    """The newest rides, the biggest balances and the best-earning drivers, read from the
    live read-model tables (what any reader of them would see)."""
    from sqlalchemy import Connection, func, select

    from facta.projections.reference import AccountBalances, DriverEarnings, RideBoard

    def read(conn: Connection) -> CityView:
        rides_t, balances_t, earnings_t = RideBoard.rides, AccountBalances.balances, DriverEarnings.earnings
        rides = conn.execute(
            select(rides_t.c.ride_id, rides_t.c.status, rides_t.c.driver_id, rides_t.c.eta_seconds, rides_t.c.fare,
                   rides_t.c.currency).order_by(rides_t.c.updated_at.desc(), rides_t.c.ride_id).limit(limit)
        ).mappings().all()
        statuses: dict[Any, Any] = dict(conn.execute(select(rides_t.c.status, func.count()).group_by(rides_t.c.status)).all())
        balances = conn.execute(
            select(balances_t.c.account_id, balances_t.c.owner, balances_t.c.balance, balances_t.c.currency,
                   balances_t.c.last_activity).order_by(balances_t.c.balance.desc(), balances_t.c.account_id)
            .limit(limit)
        ).mappings().all()
        earnings = conn.execute(
            select(earnings_t.c.driver_id, earnings_t.c.day, earnings_t.c.trips, earnings_t.c.earnings,
                   earnings_t.c.currency).order_by(earnings_t.c.earnings.desc(), earnings_t.c.driver_id).limit(limit)
        ).mappings().all()
        return CityView([dict(r) for r in rides], [dict(r) for r in balances], [dict(r) for r in earnings],
                        {str(k): int(v) for k, v in statuses.items()})

    return await store.database.read(read)


def money(minor: int | None, currency: str | None) -> str:
    return "-" if minor is None else f"{currency or ''} {minor / 100:,.2f}".strip()


def text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Rows padded into columns under ``head``."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(head), *(line(r) for r in rows)]


def render_city(view: CityView) -> list[str]:
    out = ["ride board (newest first; " + ", ".join(f"{n} {s}" for s, n in sorted(view.ride_statuses.items())) + ")"]
    out += ["  " + s for s in text_table(
        ["RIDE", "STATUS", "DRIVER", "ETA", "FARE"],
        [[r["ride_id"], r["status"], r["driver_id"] or "-", f"{r['eta_seconds']}s" if r["status"] == "accepted" and r["eta_seconds"] is not None else "-",
          money(r["fare"], r["currency"])] for r in view.rides],
    )]
    out.append("account balances (largest first)")
    out += ["  " + s for s in text_table(
        ["ACCOUNT", "OWNER", "BALANCE", "LAST ACTIVITY (UTC)"],
        [[b["account_id"], b["owner"] or "-", money(b["balance"], b["currency"]),
          b["last_activity"].strftime("%Y-%m-%d %H:%M:%S") if b["last_activity"] else "-"] for b in view.balances],
    )]
    out.append("driver earnings (best first)")
    out += ["  " + s for s in text_table(
        ["DRIVER", "DAY", "TRIPS", "EARNINGS"],
        [[e["driver_id"], e["day"], str(e["trips"]), money(e["earnings"], e["currency"])] for e in view.earnings],
    )]
    return out


def next_commands(summary: DemoSummary, database_url: str | None = None) -> list[str]:
    """The commands to try next, with ids from this run."""
    where = f" --database-url {database_url}" if database_url else ""
    out = [
        f"facta projections list{where}",
        f"facta replay ride_board --from-position 0 --dry-run{where}",
        f"facta replay account_balances --from-position 0{where}",
    ]
    if summary.sample_ride is not None:
        out.append(f"facta audit history {summary.sample_ride}{where}")
        out.append(f"facta audit trace {summary.sample_ride}{where}")
        out.append(f"facta audit diff {summary.sample_ride} --from-version 1 --to-version 3{where}")
    if summary.sample_rider_account is not None:
        out.append(f"facta audit state {summary.sample_rider_account} --at-version 2{where}")
    out.append(f"facta audit events --stream-type account --actor billing --newest-first --limit 5{where}")
    return out
