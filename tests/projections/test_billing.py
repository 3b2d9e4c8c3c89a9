"""The billing process (``billing_process``) charges each ended trip exactly once:
through redelivery, a replay, a crash between the charge and the checkpoint, and an
operator's skip; the ``billing`` projection's ``billing_charges`` table records it.

Every scenario is built through the domain only: accounts opened with a Repository, rides
driven through Ride's commands. The trip's fare is moved by the process, never here.
Each test runs on SQLite and PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Connection, select, update

from facta import testing
from facta.domain.reference import Account, Location, Ride, Tariff, TransferredIn, TransferredOut, TripEnded
from facta.eventstore import EventStore, RecordedEvent, Repository
from facta.eventstore.schema import events, projection_checkpoints, projection_skips, projections
from facta.projections import ProjectionError, ProjectionRunner, ReadModel
from facta.projections import _tracking as tracking
from facta.projections.reference import Billing, BillingProcess
from facta.projections.replay import ReplayFrom, replay

TARIFF = Tariff(currency="EUR", base=250, per_km=120, per_minute=30, minimum=700)
RIDER_FUNDS = 500_00
TRIP_ENDED = TripEnded.event_type
PROCESS, TABLE = BillingProcess.name, Billing.name  # "billing_process", "billing"


@dataclass
class Town:
    """What the scenario did: each ended ride's rider, driver and fare."""

    repo: Repository
    rng: random.Random
    funds: dict[str, int] = field(default_factory=dict)  # account id -> money put in
    ended: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # ride -> rider acct, driver acct, fare
    cancelled: list[str] = field(default_factory=list)

    async def open(self, account_id: str, owner: str, deposit: int) -> None:
        account = Account.open(account_id, owner, "EUR")
        if deposit:
            account.deposit(deposit, reference="opening deposit")
        await self.repo.save(account, actor=owner)
        self.funds[account_id] = deposit

    async def ride(self, rider: str, driver: str, *, cancel: bool = False) -> str:
        """Drive one ride through the domain: request to trip end (or a cancellation)."""
        rng = self.rng
        ride_id = f"ride-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        point = lambda: Location(lat=round(rng.uniform(38.70, 38.78), 6), lon=round(rng.uniform(-9.2, -9.1), 6))  # noqa: E731
        ride = Ride.request(ride_id, rider, point(), point(), rider_account=f"acct-{rider}")
        await self.repo.save(ride, actor=rider, correlation_id=ride_id)
        ride.offer([driver, "driver-other"])
        await self.repo.save(ride, actor="dispatch", correlation_id=ride_id)
        if cancel:
            ride.cancel("no longer needed", "rider")
            await self.repo.save(ride, actor=rider, correlation_id=ride_id)
            self.cancelled.append(ride_id)
            return ride_id
        ride.accept(driver, eta_seconds=rng.randint(60, 600))
        await self.repo.save(ride, actor=driver, correlation_id=ride_id)
        ride.driver_arrived()
        ride.start_trip()
        await self.repo.save(ride, actor=driver, correlation_id=ride_id)
        for _ in range(3):
            ride.record_telemetry(point(), speed_kmh=30.0)
        ride.end_trip(TARIFF, duration_s=rng.randint(300, 2400))
        await self.repo.save(ride, actor=driver, correlation_id=ride_id)
        assert ride.state.fare is not None
        self.ended[ride_id] = (f"acct-{rider}", Billing.driver_account(driver), ride.state.fare)
        return ride_id

    def expected_balances(self) -> dict[str, int]:
        balances = dict(self.funds)
        for rider_account, driver_account, fare in self.ended.values():
            balances[rider_account] -= fare
            balances[driver_account] += fare
        return balances


async def _town(store: EventStore, rides: int = 8, seed: int = 5) -> Town:
    town = Town(Repository(store, snapshot_every=None), random.Random(seed))
    for i in range(3):
        await town.open(f"acct-rider-{i}", f"rider-{i}", RIDER_FUNDS)
    for i in range(2):
        await town.open(Billing.driver_account(f"driver-{i}"), f"driver-{i}", 0)
    for n in range(rides):
        await town.ride(f"rider-{n % 3}", f"driver-{n % 2}", cancel=n == 3)
    return town


# -- what is in the store and the read model ----------------------------------------------


def _account_events(conn: Connection) -> list[tuple[Any, ...]]:
    c = events.c
    query = select(c.position, c.event_id, c.stream_id, c.event_type, c.actor, c.causation_id).where(
        c.stream_type == "account"
    )
    return [tuple(r) for r in conn.execute(query.order_by(c.position))]


def _charges(conn: Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(select(Billing.charges).order_by(Billing.charges.c.ride_id))]


def _checkpoint(conn: Connection, name: str = PROCESS) -> int | None:
    c = projection_checkpoints.c
    return conn.execute(select(c.position).where(c.projection == name, c.slot == "live")).scalar()


def _last_error(conn: Connection, name: str = PROCESS) -> str | None:
    return conn.execute(select(projections.c.last_error).where(projections.c.name == name)).scalar()


async def _billing_transfers(store: EventStore) -> list[RecordedEvent]:
    """The account events the process wrote (actor ``billing``)."""
    return [
        r async for r in store.iter_log()
        if r.stream_type == "account" and r.actor == "billing"
    ]


async def _run(store: EventStore) -> int:
    """Run the billing process, then the billing projection, until both checkpoints are at
    the head: the process charges, the projection reads the account events it wrote."""
    applied = 0
    for _ in range(5):
        applied += await ProjectionRunner(store, BillingProcess).run(once=True)
        applied += await ProjectionRunner(store, Billing).run(once=True)
        head = await store.head_position()
        if [await store.database.read(_checkpoint, name) for name in (PROCESS, TABLE)] == [head, head]:
            return applied
    raise AssertionError("billing did not catch up")


async def _balances(store: EventStore, town: Town) -> dict[str, int]:
    repo = Repository(store)
    return {a: (await repo.get(Account, a)).state.balance for a in town.funds}


async def _assert_charged_once(store: EventStore, town: Town, unbilled: tuple[str, ...] = ()) -> None:
    """Every ended trip charged exactly once, with the event ids billing derives from the
    trip's end; balances exact; one billing_charges row per ended trip (``unbilled``: trips
    that ended and were never charged, whose rows hold the fare and no charge)."""
    transfers = await _billing_transfers(store)
    outs = Counter(r.event.transfer_id for r in transfers if isinstance(r.event, TransferredOut))
    ins = Counter(r.event.transfer_id for r in transfers if isinstance(r.event, TransferredIn))
    assert outs == ins == Counter(list(town.ended)), f"charges per ride: out {dict(outs)}, in {dict(ins)}"
    ends = {r.stream_id: r for r in await store.read_log(limit=100_000, event_types=[TRIP_ENDED])}
    by_id = {r.event_id: r for r in transfers}
    for ride_id, (rider_account, driver_account, fare) in town.ended.items():
        out_id, in_id = BillingProcess.charge_ids(ends[ride_id].event_id)
        out, in_ = by_id[out_id], by_id[in_id]
        assert (out.stream_id, out.event.amount, out.event.to_account) == (rider_account, fare, driver_account)
        assert (in_.stream_id, in_.event.amount, in_.event.from_account) == (driver_account, fare, rider_account)
        assert out.causation_id == str(ends[ride_id].event_id) and out.correlation_id == ride_id
    assert await _balances(store, town) == town.expected_balances()

    rows = {r[0]: r for r in await store.database.read(_charges)}
    assert set(rows) == set(town.ended) | set(unbilled), "billing_charges does not hold exactly the ended rides"
    for ride_id in unbilled:
        _, row_fare, currency, ended_at, rider, driver, charged, charged_at = rows[ride_id]
        assert row_fare and ended_at == ends[ride_id].occurred_at
        assert (rider, driver, charged, charged_at) == (None, None, None, None), "an unbilled trip shows a charge"
    for ride_id, (rider_account, driver_account, fare) in town.ended.items():
        _, row_fare, currency, ended_at, rider, driver, charged, charged_at = rows[ride_id]
        assert (row_fare, currency, rider, driver, charged) == (fare, "EUR", rider_account, driver_account, fare)
        assert ended_at == ends[ride_id].occurred_at and charged_at is not None


# -- tests ---------------------------------------------------------------------------------


async def test_every_ended_trip_is_charged_once(store: EventStore) -> None:
    town = await _town(store)
    assert len(town.ended) == 7 and len(town.cancelled) == 1
    assert not await _billing_transfers(store)
    await _run(store)
    await _assert_charged_once(store, town)
    assert await store.database.read(_last_error) is None
    assert await store.database.read(_last_error, TABLE) is None

    # Later trips are charged by the next run; earlier ones are not charged again.
    await town.ride("rider-0", "driver-1")
    await _run(store)
    await _assert_charged_once(store, town)
    # The same rows through facta.testing's projection scenario (as a user's test would).
    await testing.project(store, Billing).then_rows(Billing.charges, [
        {"ride_id": ride_id, "fare": fare, "currency": "EUR", "rider_account": rider, "driver_account": driver,
         "charged": fare}
        for ride_id, (rider, driver, fare) in town.ended.items()
    ])


async def test_redelivery_from_a_reset_checkpoint_charges_nothing_again(store: EventStore) -> None:
    town = await _town(store)
    await _run(store)
    account_events = await store.database.read(_account_events)
    charges = await store.database.read(_charges)
    balances = await _balances(store, town)

    def reset(conn: Connection) -> None:
        c = projection_checkpoints.c
        for name in (PROCESS, TABLE):
            done = conn.execute(
                update(projection_checkpoints).where(c.projection == name, c.slot == "live").values(position=0)
            )
            assert done.rowcount == 1

    await store.database.write(reset)
    applied = await _run(store)
    assert applied >= len(town.ended), "the reset checkpoint did not make the runner deliver again"
    assert await store.database.read(_account_events) == account_events, "a redelivered trip was charged again"
    assert await _balances(store, town) == balances
    assert await store.database.read(_charges) == charges
    await _assert_charged_once(store, town)


async def test_a_replay_charges_nothing_and_rebuilds_the_charges(store: EventStore) -> None:
    town = await _town(store)
    await _run(store)
    account_events = await store.database.read(_account_events)
    charges = await store.database.read(_charges)

    result = await replay(store, Billing, ReplayFrom(position=0), batch_size=7)
    assert result.generation == 2 and result.events > 0
    assert await store.database.read(_account_events) == account_events, "a replay charged"
    assert await store.database.read(_charges) == charges
    await _assert_charged_once(store, town)

    # The process itself is never replayed: that would issue its commands again.
    for start in (ReplayFrom(position=0), ReplayFrom(position=await store.head_position())):
        with pytest.raises(ProjectionError, match="'billing_process' is a process manager, not a projection"):
            await replay(store, BillingProcess, start)
    assert await store.database.read(_account_events) == account_events

    # A trip that ends after the process's checkpoint is the live process's to charge, not
    # the replay's: the rebuild (of the whole log now) shows it ended and unbilled.
    late = await town.ride("rider-1", "driver-0")
    await replay(store, Billing, ReplayFrom(position=0))
    assert await store.database.read(_account_events) == account_events
    late_end = next(r for r in await store.read_log(limit=1000, event_types=[TRIP_ENDED]) if r.stream_id == late)
    assert await store.database.read(_charges) == sorted(
        [*charges, (late, town.ended[late][2], "EUR", late_end.occurred_at, None, None, None, None)]
    )
    assert late not in {r[0] for r in charges}
    await _run(store)
    await _assert_charged_once(store, town)


async def test_a_crash_after_the_charge_before_the_checkpoint_charges_once(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    town = await _town(store)
    original = Billing._handlers[TRIP_ENDED]
    calls = 0

    def fails_once(self: Billing, rm: ReadModel, event: TripEnded, record: RecordedEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the read-model commit failed")
        original(self, rm, event, record)

    monkeypatch.setitem(Billing._handlers, TRIP_ENDED, fails_once)
    await ProjectionRunner(store, BillingProcess).run(once=True)
    with pytest.raises(ProjectionError, match="the read-model commit failed"):
        await ProjectionRunner(store, Billing).run(once=True)
    first_end = (await store.read_log(limit=1, event_types=[TRIP_ENDED]))[0]
    checkpoint = await store.database.read(_checkpoint, TABLE)
    assert checkpoint is None or checkpoint < first_end.position, "the checkpoint moved past the failed event"
    # The process charged the whole batch before the table's transaction failed: the money moved.
    assert len(await _billing_transfers(store)) == 2 * len(town.ended)

    await _run(store)
    assert calls > 1
    await _assert_charged_once(store, town)


async def test_a_process_crash_right_after_its_charge_charges_once(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies between a trip's charge and its checkpoint: the restart redelivers
    that trip, finds its charge stored, and stores nothing for it."""
    town = await _town(store)
    original = BillingProcess._reactions[TRIP_ENDED]
    crashed: list[str] = []

    async def crashes_after_the_first_charge(self: BillingProcess, ctx: Any, event: TripEnded,
                                             record: RecordedEvent) -> None:
        await original(self, ctx, event, record)
        if not crashed:
            crashed.append(record.stream_id)
            raise RuntimeError("killed right after the charge")

    crashes_after_the_first_charge.__name__ = original.__name__  # the ids derive from the handler's name
    monkeypatch.setitem(BillingProcess._reactions, TRIP_ENDED, crashes_after_the_first_charge)
    with pytest.raises(ProjectionError, match="killed right after the charge"):
        await ProjectionRunner(store, BillingProcess).run(once=True)
    first_end = (await store.read_log(limit=1, event_types=[TRIP_ENDED]))[0]
    assert crashed == [first_end.stream_id]
    checkpoint = await store.database.read(_checkpoint)
    assert checkpoint is None or checkpoint < first_end.position, "the checkpoint moved past the crashed trip"
    assert {r.event.transfer_id for r in await _billing_transfers(store)} == {first_end.stream_id}  # type: ignore[attr-defined]

    await _run(store)
    await _assert_charged_once(store, town)


async def test_a_failed_checkpoint_write_after_the_charge_charges_once(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    town = await _town(store, rides=5)
    original = tracking.move_checkpoints
    failed: set[str] = set()

    def crash_once(*args: Any) -> None:  # each consumer's first checkpoint write
        name = args[1]
        if name not in failed:
            failed.add(name)
            raise RuntimeError("connection lost while writing the checkpoint")
        original(*args)

    monkeypatch.setattr(tracking, "move_checkpoints", crash_once)
    with pytest.raises(RuntimeError, match="connection lost"):
        await ProjectionRunner(store, BillingProcess).run(once=True)
    assert await store.database.read(_checkpoint) is None
    assert len(await _billing_transfers(store)) == 2 * len(town.ended)
    with pytest.raises(RuntimeError, match="connection lost"):
        await ProjectionRunner(store, Billing).run(once=True)
    assert await store.database.read(_checkpoint, TABLE) is None
    assert await store.database.read(_charges) == [], "the batch's read-model writes outlived its failed commit"
    assert len(await _billing_transfers(store)) == 2 * len(town.ended)

    await _run(store)
    await _assert_charged_once(store, town)


async def test_a_rider_who_cannot_pay_stops_billing_until_skipped(store: EventStore) -> None:
    town = await _town(store, rides=3)
    await town.open("acct-rider-poor", "rider-poor", 100)
    poor = await town.ride("rider-poor", "driver-0")
    poor_fare = town.ended.pop(poor)[2]
    after = await town.ride("rider-2", "driver-1")  # behind the failing trip in the log
    poor_end = next(r for r in await store.read_log(limit=1000, event_types=[TRIP_ENDED]) if r.stream_id == poor)

    with pytest.raises(ProjectionError) as stopped:
        await ProjectionRunner(store, BillingProcess).run(once=True)
    message = str(stopped.value)
    assert "\n" not in message
    assert f"{TRIP_ENDED} event {poor_end.event_id}" in message
    assert f"position {poor_end.position}" in message
    assert f"insufficient funds: balance 100, amount {poor_fare}" in message
    assert f"facta projections skip billing_process --position {poor_end.position}" in message
    assert await store.database.read(_last_error) == message
    checkpoint = await store.database.read(_checkpoint)
    assert checkpoint is not None and checkpoint < poor_end.position, "the checkpoint moved past the failed trip"
    # The trips before it were charged and committed; the one after it was not reached.
    charged = {r.event.transfer_id for r in await _billing_transfers(store)}
    assert charged == set(town.ended) - {after}
    assert poor not in charged

    # Running again stops at the same trip, with the same message.
    with pytest.raises(ProjectionError) as again:
        await ProjectionRunner(store, BillingProcess).run(once=True)
    assert str(again.value) == message
    assert await store.database.read(_checkpoint) == checkpoint

    recorded = await store.database.write(tracking.add_skip, PROCESS, poor_end.position, "rider cannot pay", "ops")
    assert recorded["event_id"] == str(poor_end.event_id) and recorded["event_type"] == TRIP_ENDED
    await _run(store)
    # Every other trip, the later one included; the table shows the skipped trip unbilled.
    await _assert_charged_once(store, town, unbilled=(poor,))
    assert await store.database.read(_last_error) is None

    def skips(conn: Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(select(projection_skips)).mappings()]

    (skip,) = await store.database.read(skips)
    assert (skip["projection"], skip["position"], skip["reason"], skip["skipped_by"]) == (
        PROCESS, poor_end.position, "rider cannot pay", "ops",
    )
    assert skip["applied_at"] is not None, "the runner passed the skipped event without marking it applied"
    assert (await Repository(store).get(Account, "acct-rider-poor")).state.balance == 100
