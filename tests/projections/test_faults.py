"""Projection runners under SIGKILL: a real runner process (``_runner_worker``), killed at
random moments while a writer keeps appending account and ride events, must end with read
models exactly equal to a rebuild from position 0: no event lost, none applied twice.

Read-model writes and the checkpoint commit in one transaction, so a kill anywhere leaves
either both or neither. To see this test fail, the worker was run with the checkpoint
moved in a separate transaction after the batch's writes (``Applier._commit`` with its
``tracking.move_checkpoints`` call turned into a no-op, and ``Applier.apply`` writing the
checkpoint in its own ``database.write`` afterwards): kills between the two transactions
applied a batch twice, and the test reported balances, earnings and the ride board
differing from the rebuild (and from the Account aggregates).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from facta.domain.reference import Account, Location, Ride, Tariff
from facta.eventstore import EventStore, Repository
from facta.eventstore.schema import projection_checkpoints
from facta.projections import Projection
from facta.projections.reference import AccountBalances, DriverEarnings, RideBoard
from facta.projections.replay import ReplayFrom, replay

from ._runner_worker import PROJECTIONS

ROOT = Path(__file__).resolve().parents[2]
KILLS = 6
BATCH = 20
TARIFF = Tariff(currency="EUR", base=250, per_km=120, per_minute=30, minimum=700)
RIDERS = [f"rider-{i}" for i in range(5)]
DRIVERS = [f"driver-{i}" for i in range(3)]


def _point(rng: random.Random) -> Location:
    return Location(lat=round(rng.uniform(38.70, 38.78), 6), lon=round(rng.uniform(-9.20, -9.10), 6))


class City:
    """The writer: accounts that deposit, withdraw and transfer, and rides driven through
    their whole lifecycle, several at once, each step its own append."""

    def __init__(self, store: EventStore, rng: random.Random) -> None:
        self.repo = Repository(store, snapshot_every=20)
        self.rng = rng
        self.accounts: dict[str, Account] = {}
        self.rides: list[Ride] = []
        self.ride_status: dict[str, str] = {}
        self.earned: dict[str, int] = {}
        self.saves = 0

    async def _save(self, *aggregates: Any, actor: str) -> None:
        await self.repo.save(*aggregates, actor=actor)
        self.saves += 1

    async def open_account(self, account_id: str, owner: str, deposit: int) -> None:
        account = Account.open(account_id, owner, "EUR")
        if deposit:
            account.deposit(deposit, reference="opening")
        self.accounts[account_id] = account
        await self._save(account, actor=owner)

    async def setup(self) -> None:
        for rider in RIDERS:
            await self.open_account(f"acct-{rider}", rider, 20_00)
        for driver in DRIVERS:
            await self.open_account(f"acct-{driver}", driver, 0)

    async def step(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            n = len(self.accounts)
            await self.open_account(f"acct-misc-{n}", f"owner-{n}", rng.choice([0, 5_00]))
        elif roll < 0.30:
            account = self.accounts[rng.choice(sorted(self.accounts))]
            amount = rng.randint(1, 3_00)
            if rng.random() < 0.5 or account.state.balance < amount:
                account.deposit(amount)
            else:
                account.withdraw(amount)
            await self._save(account, actor="bank")
        elif roll < 0.45:
            source, target = (self.accounts[a] for a in rng.sample(sorted(self.accounts), 2))
            amount = rng.randint(1, 2_00)
            if source.state.balance < amount:
                source.deposit(amount)
            source.transfer_out(target.id, amount, transfer_id=f"t-{self.saves}")
            target.transfer_in(source.id, amount, transfer_id=f"t-{self.saves}")
            await self._save(source, target, actor="bank")
        elif not self.rides or (len(self.rides) < 4 and roll < 0.55):
            await self.request_ride()
        else:
            await self.advance(rng.choice(self.rides))

    async def request_ride(self) -> None:
        rider = self.rng.choice(RIDERS)
        ride = Ride.request(f"ride-{len(self.ride_status)}", rider, _point(self.rng), _point(self.rng),
                            rider_account=f"acct-{rider}")
        self.rides.append(ride)
        self.ride_status[ride.id] = "requested"
        await self._save(ride, actor=rider)

    async def advance(self, ride: Ride) -> None:
        rng, status = self.rng, ride.state.status
        if status in ("requested", "offered", "accepted") and rng.random() < 0.05:
            ride.cancel("changed their mind", "rider")
            self.rides.remove(ride)
            self.ride_status[ride.id] = "cancelled"
            await self._save(ride, actor="rider")
            return
        if status == "requested":
            ride.offer(rng.sample(DRIVERS, 2))
            self.ride_status[ride.id] = "offered"
        elif status == "offered":
            ride.accept(rng.choice(ride.state.offered_to), eta_seconds=rng.randint(60, 600))
            self.ride_status[ride.id] = "accepted"
        elif status == "accepted":
            ride.driver_arrived()
            ride.start_trip()
            self.ride_status[ride.id] = "in_trip"
        elif status == "in_progress" and ride.state.telemetry_count < 3:
            ride.record_telemetry(_point(rng), speed_kmh=round(rng.uniform(15, 55), 1))
        else:
            ride.end_trip(TARIFF, duration_s=rng.randint(300, 2400))
            fare = ride.state.fare
            driver = ride.state.driver_id
            assert fare is not None and driver is not None and ride.state.rider_account is not None
            payer, payee = self.accounts[ride.state.rider_account], self.accounts[f"acct-{driver}"]
            if payer.state.balance < fare:
                payer.deposit(50_00, reference="top-up")
            payer.transfer_out(payee.id, fare, transfer_id=ride.id)
            payee.transfer_in(payer.id, fare, transfer_id=ride.id)
            self.rides.remove(ride)
            self.ride_status[ride.id] = "completed"
            self.earned[driver] = self.earned.get(driver, 0) + fare
            await self._save(ride, payer, payee, actor="billing")
            return
        await self._save(ride, actor=ride.state.driver_id or "dispatch")


async def _write(city: City, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await city.step()
        await asyncio.sleep(0.001)


def _live_checkpoints(conn: Connection) -> dict[str, int]:
    c = projection_checkpoints.c
    rows = conn.execute(select(c.projection, c.position).where(c.slot == "live"))
    return {r.projection: int(r.position) for r in rows}


def _snapshot(conn: Connection, projection: type[Projection]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every live table of ``projection``, in key order."""
    out = {}
    for table in projection.live_tables():
        keys = list(table.primary_key.columns)
        out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*keys))]
    return out


def _worker(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.projections._runner_worker", url, str(BATCH), *extra]


async def _wait_for_progress(store: EventStore, before: dict[str, int], process: Any, log: Path) -> None:
    deadline = time.monotonic() + 60
    while (await store.database.read(_live_checkpoints)) == before:
        assert process.returncode is None, f"the runner exited with {process.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the runner made no progress in 60 s:\n{log.read_text()[-3000:]}"
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_runner_killed_repeatedly_ends_equal_to_a_rebuild(migrated_url: str, tmp_path: Path) -> None:
    rng = random.Random(2024)
    log = tmp_path / "runner.log"
    async with await EventStore.open(migrated_url) as store:
        city = City(store, rng)
        await city.setup()
        stop_writing = asyncio.Event()
        writer = asyncio.create_task(_write(city, stop_writing))
        try:
            kills = 0
            for _ in range(KILLS):
                before = await store.database.read(_live_checkpoints)
                with log.open("ab") as err:
                    process = await asyncio.create_subprocess_exec(
                        *_worker(migrated_url), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                    )
                try:
                    # Kill while it works: see it commit a batch, then kill at a random moment.
                    await _wait_for_progress(store, before, process, log)
                    await asyncio.sleep(rng.uniform(0.0, 0.4))
                    assert process.returncode is None, f"the runner exited by itself:\n{log.read_text()[-3000:]}"
                    assert not writer.done(), "the writer stopped"
                finally:
                    if process.returncode is None:
                        process.send_signal(signal.SIGKILL)
                    await asyncio.wait_for(process.wait(), 30)
                kills += 1
        finally:
            stop_writing.set()
            await writer

        head = await store.head_position()
        with log.open("ab") as err:
            final = await asyncio.create_subprocess_exec(
                *_worker(migrated_url, "--once"), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
            )
            assert await asyncio.wait_for(final.wait(), 120) == 0, log.read_text()[-3000:]
        assert kills == KILLS
        assert set(await store.database.read(_live_checkpoints)) == {p.name for p in PROJECTIONS}

        # Every read model equals a full rebuild from position 0.
        for projection in PROJECTIONS:
            live = await store.database.read(_snapshot, projection)
            assert all(live.values()), f"{projection.name} is empty"
            result = await replay(store, projection, ReplayFrom(position=0), batch_size=500)
            assert result.generation == 2
            rebuilt = await store.database.read(_snapshot, projection)
            for table, rows in live.items():
                missing = sorted(set(rebuilt[table]) - set(rows))[:5]
                extra = sorted(set(rows) - set(rebuilt[table]))[:5]
                assert rows == rebuilt[table], (
                    f"{table} after {kills} kills differs from a rebuild: "
                    f"rebuild has {missing}, live has {extra} instead"
                )

        # And the models say what the writer did.
        balances = {r[0]: r[4] for r in (await store.database.read(_snapshot, AccountBalances))["account_balances"]}
        repo = Repository(store)
        assert set(balances) == set(city.accounts)
        for account_id, balance in balances.items():
            assert balance == (await repo.get(Account, account_id)).state.balance == city.accounts[account_id].state.balance
        board = {r[0]: r[2] for r in (await store.database.read(_snapshot, RideBoard))["ride_board"]}
        assert board == city.ride_status
        earned: dict[str, int] = {}
        for row in (await store.database.read(_snapshot, DriverEarnings))["driver_earnings"]:
            earned[row[0]] = earned.get(row[0], 0) + row[3]
        assert earned == city.earned
    print(f"\n{migrated_url.split(':', 1)[0]}: {kills} kills, {head} events, {city.saves} appends")
