"""`facta demo`: a small taxi city run through the event store.

Riders and drivers get accounts; rides go through the whole lifecycle (requested,
offered, accepted, driver arrived, trip started, telemetry, trip ended) and a few are
cancelled. Fares are not moved by the demo: the ``billing`` projection charges each
ended trip to the rider's account and pays the driver, exactly once, and the other
reference projections bring their read models up to date. Running it again continues
the same city: accounts are reused, rides are new. A run that was interrupted (Ctrl-C,
SIGKILL) is finished by the next one, as planned: see :func:`run_demo`.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Connection, Integer, MetaData, Table, func, inspect, select

from facta.domain import Aggregate
from facta.domain.reference import Account, Location, Ride, Tariff
from facta.errors import DemoRefused
from facta.eventstore import ConcurrencyError, EventStore, Repository, StreamNotFound
from facta.eventstore.audit import utc_text
from facta.eventstore.database import Database, translate_connect_errors
from facta.eventstore.relay import Relay, RelayConfig
from facta.eventstore.schema import events, projections
from facta.projections import ProjectionRunner
from facta.projections.api import REBUILD_SUFFIX
from facta.projections.reference import (
    BILLING_ACTOR,
    REFERENCE_PROCESSES,
    REFERENCE_PROJECTIONS,
    AccountBalances,
    DriverEarnings,
    RideBoard,
)

__all__ = ["TARIFF", "CityView", "DemoRefused", "DemoSummary", "city_view", "next_commands", "publish_to_kafka", "run_demo"]

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
    #: A time halfway through the run (the recorded time of an event then), for ``--as-of``.
    midway_at: datetime | None = None
    #: Reference projections left alone because they read Kafka (rebuilt from it).
    on_kafka: list[str] = field(default_factory=list)
    #: The run's number in this city (1 for the first ``facta demo`` on a store).
    run: int = 0
    #: Set when this call continued an interrupted run: the ride it went on from (the
    #: newest one the interrupted call had begun to store).
    resumed_at_ride: int | None = None

    @property
    def events_per_second(self) -> float:
        return self.events_appended / self.elapsed_s if self.elapsed_s else 0.0


# Each run's plan, written before its first ride: an interrupted run is continued from it
# (same seed, same rides) by the next `facta demo`, whatever options that one was given.
# Like a read-model table, it is created by the code that uses it, not by a migration.
_runs_metadata = MetaData()
DEMO_RUNS = Table(
    "facta_demo_runs",
    _runs_metadata,
    Column("run", Integer, primary_key=True, autoincrement=False),
    Column("seed", BigInteger, nullable=False),
    Column("rides", Integer, nullable=False),
    Column("riders", Integer, nullable=False),
    Column("drivers", Integer, nullable=False),
    Column("telemetry", Integer, nullable=False),
    Column("first_ride", Integer, nullable=False),
    Column("project", Boolean, nullable=False),
    Column("finished", Boolean, nullable=False),
)


@dataclass(frozen=True)
class DemoPlan:
    """What one demo run appends: rides ``first_ride`` .. ``first_ride + rides - 1``, each
    a pure function of ``seed`` and its number."""

    run: int
    seed: int
    rides: int
    riders: int
    drivers: int
    telemetry: int
    first_ride: int
    project: bool
    resumed: bool = False

    def ride_id(self, n: int) -> str:
        return f"ride-{n:05d}"


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
        # Fixed ids: a second demo opening the same account at the same moment stores nothing twice.
        account.assign_event_ids(*(uuid.uuid5(_DEMO_IDS, f"{account_id}:{v}") for v in
                                   range(1, len(account.pending_events) + 1)))
        try:
            await repo.save(account, actor="demo")
        except ConcurrencyError:
            return await repo.get(Account, account_id)
        return account


_DEMO_IDS = uuid.UUID("5d1e0c2a-6f0b-4c55-9d43-2b8c1f7e0a11")


async def _rides_so_far(store: EventStore) -> int:
    query = select(func.count()).where(events.c.stream_type == Ride.stream_type, events.c.version == 1)
    return int(await store.database.read(lambda conn: conn.execute(query).scalar_one()))


async def _plan(store: EventStore, *, rides: int, riders: int, drivers: int, telemetry: int, seed: int | None,
                project: bool) -> DemoPlan:
    """The newest run if it never finished (it is continued as planned), else a new run."""
    def newest(conn: Connection) -> Any:
        _runs_metadata.create_all(conn, checkfirst=True)
        return conn.execute(select(DEMO_RUNS).order_by(DEMO_RUNS.c.run.desc()).limit(1)).mappings().first()

    last = await store.database.write(newest)
    if last is not None and not last["finished"]:
        fields = {k: last[k] for k in ("run", "seed", "rides", "riders", "drivers", "telemetry", "first_ride", "project")}
        return DemoPlan(**fields, resumed=True)
    first_ride = max(await _rides_so_far(store), last["first_ride"] + last["rides"] - 1 if last is not None else 0) + 1
    plan = DemoPlan(
        run=(last["run"] if last is not None else 0) + 1,
        seed=seed if seed is not None else random.getrandbits(62),
        rides=rides, riders=riders, drivers=drivers, telemetry=telemetry, first_ride=first_ride, project=project,
    )

    def insert(conn: Connection) -> None:
        conn.execute(DEMO_RUNS.insert().values(
            run=plan.run, seed=plan.seed, rides=plan.rides, riders=plan.riders, drivers=plan.drivers,
            telemetry=plan.telemetry, first_ride=plan.first_ride, project=plan.project, finished=False))

    await store.database.write(insert)
    return plan


async def _finish(store: EventStore, plan: DemoPlan) -> None:
    await store.database.write(
        lambda conn: conn.execute(DEMO_RUNS.update().where(DEMO_RUNS.c.run == plan.run).values(finished=True)))


async def _recorded_at_or_before(store: EventStore, position: int) -> datetime | None:
    query = (select(events.c.recorded_at).where(events.c.position <= position)
             .order_by(events.c.position.desc()).limit(1))
    found: datetime | None = await store.database.read(lambda conn: conn.execute(query).scalar())
    return found


async def _projection_sources(store: EventStore) -> dict[str, str]:
    """Each projection's source (``log`` or ``kafka``), for those built already."""
    query = select(projections.c.name, projections.c.source)
    return {name: source for name, source in await store.database.read(lambda conn: conn.execute(query).all())}


async def _ride_versions(store: EventStore) -> dict[str, int]:
    """Every ride stream's stored version."""
    query = (select(events.c.stream_id, func.max(events.c.version))
             .where(events.c.stream_type == Ride.stream_type).group_by(events.c.stream_id))
    return {sid: int(v) for sid, v in await store.database.read(lambda conn: conn.execute(query).all())}


async def _unbilled(store: EventStore) -> dict[str, int]:
    """Per rider account, the fares of ended trips that billing has not charged yet."""
    c = events.c
    query = select(c.stream_id, c.event_type, c.actor, c.payload).where(
        c.event_type.in_(("ride.requested", "ride.trip_ended", "account.transferred_out")))
    rider_account: dict[str, str] = {}
    fares: dict[str, int] = {}
    charged: set[str] = set()
    for stream_id, event_type, actor, payload in await store.database.read(lambda conn: conn.execute(query).all()):
        data = json.loads(payload) if isinstance(payload, (str, bytes)) else payload
        if event_type == "ride.requested" and data.get("rider_account"):
            rider_account[stream_id] = data["rider_account"]
        elif event_type == "ride.trip_ended":
            fares[stream_id] = int(data["fare"])
        elif actor == BILLING_ACTOR:
            charged.add(data["transfer_id"])
    owed: dict[str, int] = {}
    for ride_id, fare in fares.items():
        account = rider_account.get(ride_id)
        if account is not None and ride_id not in charged:
            owed[account] = owed.get(account, 0) + fare
    return owed


def _demo_tables() -> set[str]:
    """The tables a demo makes besides facta's own (``facta_*``): the reference read models
    and their rebuild copies."""
    names = {t.name for projection in REFERENCE_PROJECTIONS for t in projection.live_tables()}
    return names | {name + REBUILD_SUFFIX for name in names}


def _what_is_there(conn: Connection) -> str | None:
    """What makes this database not the demo's, as a phrase, or None when the demo may run
    on it: a database without tables, a previous demo's (it has ``facta_demo_runs``), or a
    facta store without events whose other tables are the demo's read models."""

    tables = set(inspect(conn).get_table_names())
    if not tables or DEMO_RUNS.name in tables:
        return None
    if events.name in tables:
        head = conn.execute(select(func.max(events.c.position))).scalar()
        if head is not None:
            return f"a facta store that no demo made, with events up to position {head}"
    foreign = sorted(t for t in tables - _demo_tables() if not t.startswith(("facta_", "sqlite_")))
    if foreign:
        shown = ", ".join(repr(t) for t in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return f"{_plural_tables(len(foreign))} that {'is' if len(foreign) == 1 else 'are'} not facta's ({shown})"
    return None


def _plural_tables(count: int) -> str:
    return "1 table" if count == 1 else f"{count} tables"


async def check_demo_database(url: str) -> None:
    """Raise :class:`DemoRefused` (one line naming the database, what it holds and how to
    go on) unless the demo may write into the database at ``url``: a new one (a SQLite
    file that does not exist or holds no tables), a previous demo's (which the demo
    continues), or a facta store without events. Reads only; a missing SQLite file is
    created, as the demo would."""
    database = Database.create(url)
    try:
        with translate_connect_errors(database.url):
            problem = await database.read(_what_is_there)
    finally:
        await database.dispose()
    if problem is not None:
        url_ = database.url
        where = (f"the SQLite file {url_.database!r}" if url_.get_backend_name() == "sqlite"
                 else f"the database {url_.render_as_string(hide_password=True)!r}")
        raise DemoRefused(f"{where} holds {problem}: facta demo writes only into a new database or a previous "
                          "demo's; give another --database-url, or --force to add the demo's city to it")


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
    notice: Callable[[str], None] | None = None,
    force: bool = False,
) -> DemoSummary:
    """Run ``rides`` rides through the store at ``url`` (migrated first) and summarise them.

    A run interrupted at any point (Ctrl-C, SIGKILL, a lost connection) is continued by
    the next call, whatever its options: that call stores the run's missing events as
    planned (ride ``n`` is a pure function of the run's seed and ``n``), runs the
    projections, and returns the summary an uninterrupted run would have returned.
    ``notice`` gets one line when that happens.

    Raises :class:`DemoRefused` before writing anything when the database holds data no
    demo made (see :func:`check_demo_database`), unless ``force``.
    """
    if not force:
        await check_demo_database(url)
    summary = DemoSummary()
    started = time.perf_counter()
    async with await EventStore.open(url, migrate=True) as store:
        repo = Repository(store, snapshot_every=50)
        head_before = await store.head_position()
        plan = await _plan(store, rides=rides, riders=riders, drivers=drivers, telemetry=telemetry, seed=seed,
                           project=project)
        summary.run = plan.run
        stored = await _ride_versions(store) if plan.resumed else {}
        if plan.resumed:
            last = plan.first_ride + plan.rides - 1
            done = [n for n in range(plan.first_ride, last + 1) if plan.ride_id(n) in stored]
            summary.resumed_at_ride = max(done, default=plan.first_ride)
            if notice is not None:
                notice(f"continuing run {plan.run}, interrupted before it finished: rides {plan.ride_id(plan.first_ride)} "
                       f"to {plan.ride_id(last)} ({plan.rides} rides, {plan.riders} riders, {plan.drivers} drivers, "
                       f"seed {plan.seed}), then the projections")

        rider_ids = [f"rider-{i:03d}" for i in range(1, plan.riders + 1)]
        driver_ids = [f"driver-{i:03d}" for i in range(1, plan.drivers + 1)]
        accounts = {rid: await _ensure_account(repo, f"acct-{rid}", rid, 100_00) for rid in rider_ids}
        accounts |= {did: await _ensure_account(repo, f"acct-{did}", did, 0) for did in driver_ids}
        # Fares ended trips owe that billing has not charged yet (earlier runs' too): a
        # rider's balance less these is what top-ups keep above zero. That difference does
        # not change when billing charges, so the same top-ups happen however the run was
        # interrupted and whenever billing ran.
        owed = await _unbilled(store)

        for i in range(plan.rides):
            n = plan.first_ride + i
            await _one_ride(repo, plan, n, stored.get(plan.ride_id(n), 0), rider_ids, driver_ids, accounts, owed,
                            summary)
            if progress is not None:
                progress(i + 1, plan.rides)
        # The billing process first, so the read models see its charges. A projection that a running
        # `facta projections run` keeps up to date is left to it.
        sources = await _projection_sources(store)
        for projection in (*REFERENCE_PROCESSES, *REFERENCE_PROJECTIONS) if plan.project else ():
            if sources.get(projection.name) == "kafka":
                # Rebuilt from Kafka (`facta replay NAME --from-offset 0`): its runner reads Kafka.
                summary.on_kafka.append(projection.name)
                if notice is not None:
                    notice(f"  projection {projection.name}: reads Kafka, left to "
                           f"`facta projections run {projection.name}` with FACTA_KAFKA_BOOTSTRAP set")
                continue
            if notice is not None:
                notice(f"  projection {projection.name}")
            runner = ProjectionRunner(store, projection)
            applied = await runner.run(once=True, wait=False)
            if not runner.busy:
                summary.projected[projection.name] = applied
        await _finish(store, plan)
        summary.log_head = await store.head_position()
        summary.midway_at = await _recorded_at_or_before(store, (head_before + summary.log_head + 1) // 2)
        summary.events_appended = summary.log_head - head_before
    summary.elapsed_s = time.perf_counter() - started
    return summary


async def _one_ride(repo: Repository, plan: DemoPlan, n: int, stored_version: int, rider_ids: list[str],
                    driver_ids: list[str], accounts: dict[str, Account], owed: dict[str, int],
                    summary: DemoSummary) -> None:
    """Ride ``n`` of ``plan``: its steps that the store does not hold yet are saved (a
    ride's steps are saved in order, each in one transaction, so the stored version says
    which are done)."""
    rng = random.Random(f"{plan.seed}:{n}")
    ride_id = plan.ride_id(n)
    rider = rng.choice(rider_ids)

    async def save(actor: str) -> None:
        if ride.version <= stored_version:
            ride.mark_saved()  # stored by an earlier, interrupted call
        else:
            await repo.save(ride, actor=actor, correlation_id=ride_id)

    pickup, dropoff = _point(rng), _point(rng)
    ride = Ride.request(ride_id, rider, pickup, dropoff, rider_account=f"acct-{rider}")
    await save(rider)
    candidates = rng.sample(driver_ids, k=min(3, len(driver_ids)))
    ride.offer(candidates)
    await save("dispatch")
    if rng.random() < 0.05:
        ride.cancel("rider changed their mind", "rider")
        await save(rider)
        summary.rides_cancelled += 1
        return
    driver = rng.choice(candidates)
    ride.accept(driver, eta_seconds=rng.randint(60, 600))
    await save(driver)
    ride.driver_arrived()
    ride.start_trip()
    await save(driver)
    for step in range(1, plan.telemetry + 1):
        f = step / plan.telemetry
        here = Location(lat=pickup.lat + (dropoff.lat - pickup.lat) * f, lon=pickup.lon + (dropoff.lon - pickup.lon) * f)
        ride.record_telemetry(here, speed_kmh=round(rng.uniform(15, 55), 1))
        if step % 4 == 0:
            await save(driver)
    summary.telemetry_points += plan.telemetry
    ride.end_trip(TARIFF, duration_s=rng.randint(300, 2400))
    fare = ride.state.fare
    assert fare is not None, "an ended trip has a fare"
    payer_id = f"acct-{rider}"
    if ride.version <= stored_version:
        ride.mark_saved()
    else:
        # The billing projection will charge the fare: make sure the rider can pay it and
        # every fare billing has not charged yet. The trip's end and the top-up are one
        # transaction.
        owed[payer_id] = owed.get(payer_id, 0) + fare
        for attempt in range(10):
            payer = accounts[rider]
            saving: list[Aggregate] = [ride]
            if payer.state.balance < owed[payer_id]:
                payer.deposit(TOP_UP + owed[payer_id] - payer.state.balance, reference="top-up")
                saving.append(payer)
            try:
                await repo.save(*saving, actor=driver, correlation_id=ride_id)
                break
            except ConcurrencyError:  # billing, run elsewhere, charged this account meanwhile
                if attempt == 9:
                    raise
                accounts[rider] = await repo.get(Account, payer_id)
                owed[payer_id] = (await _unbilled(repo.store)).get(payer_id, 0) + fare
    summary.rides_completed += 1
    summary.fares_total += fare
    summary.earnings[driver] = summary.earnings.get(driver, 0) + fare
    summary.sample_ride = ride_id
    summary.sample_rider_account = payer_id


async def publish_to_kafka(url: str, bootstrap: str, *, idempotence: bool = True) -> tuple[int, dict[str, int]]:
    """Relay the store at ``url`` to Kafka until caught up. Returns the number of events
    published by this call and, per facta topic, how many records it holds now."""
    # Lazy: aiokafka costs a tenth of a second of start-up that a demo without --kafka
    # (and every other command, which imports this module) does not need.
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

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
        if summary.midway_at is not None:  # the account as it was halfway through this run
            at = utc_text(summary.midway_at)
            out.append(f"facta audit state {summary.sample_rider_account} --as-of {at} --json{where}")
    out.append(f"facta audit events --stream-type account --actor billing --newest-first --limit 5{where}")
    return out
