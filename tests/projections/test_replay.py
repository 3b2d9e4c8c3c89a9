"""Replay and rebuild from the store log: fresh tables, an atomic swap, any start.

Each test runs on SQLite and PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, func, insert, select

from facta.domain.reference import Account
from facta.eventstore import EventStore, Repository
from facta.eventstore.schema import events, projection_checkpoints
from facta.projections import ProjectionError, ProjectionRunner
from facta.projections.reference import AccountBalances
from facta.projections.replay import ReplayFrom, plan_replay, replay
from tests.conftest import migrate

ACCOUNTS = 12


async def _bank(store: EventStore, rounds: int, seed: int = 7) -> dict[str, int]:
    """Open accounts and move money around; returns each account's expected balance."""
    rng = random.Random(seed)
    repo = Repository(store, snapshot_every=None)
    balances: dict[str, int] = {}
    for i in range(ACCOUNTS):
        account = Account.open(f"acct-{i}", f"owner-{i}", "EUR")
        account.deposit(1_000)
        await repo.save(account)
        balances[account.id] = 1_000
    for _ in range(rounds):
        account = await repo.get(Account, f"acct-{rng.randrange(ACCOUNTS)}")
        amount = rng.randint(1, 50)
        if rng.random() < 0.5:
            account.deposit(amount)
            balances[account.id] += amount
        elif account.state.balance >= amount:
            account.withdraw(amount)
            balances[account.id] -= amount
        await repo.save(account)
    return balances


def _rows(conn: Connection) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in conn.execute(select(AccountBalances.balances)).all())


def _live_checkpoint(conn: Connection) -> int | None:
    c = projection_checkpoints.c
    return conn.execute(
        select(c.position).where(c.projection == "account_balances", c.slot == "live")
    ).scalar()


async def test_a_rebuild_equals_the_live_model_and_bumps_the_generation(store: EventStore) -> None:
    expected = await _bank(store, 150)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    live = await store.database.read(_rows)
    assert {r[0]: r[4] for r in live} == expected

    result = await replay(store, AccountBalances, ReplayFrom(position=0), batch_size=37)
    assert result.generation == 2
    assert await store.database.read(_rows) == live
    assert await store.database.read(_live_checkpoint) == await store.head_position()
    # The live runner goes on from the rebuild's checkpoint: nothing is applied twice.
    await _bank_more(store, 20)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    balances = {r[0]: r[4] for r in await store.database.read(_rows)}
    repo = Repository(store)
    for account_id, balance in balances.items():
        assert (await repo.get(Account, account_id)).state.balance == balance


async def test_readers_never_see_a_half_built_model(store: EventStore) -> None:
    expected = await _bank(store, 400)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    total = sum(expected.values())

    def snapshot(conn: Connection) -> tuple[int, int]:
        row = conn.execute(
            select(func.count(), func.coalesce(func.sum(AccountBalances.balances.c.balance), 0))
        ).one()
        return int(row[0]), int(row[1])

    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            seen.append(await store.database.read(snapshot))
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    try:
        # Small batches: the rebuild takes many transactions, each a chance to be seen.
        await replay(store, AccountBalances, ReplayFrom(position=0), batch_size=5)
        await asyncio.sleep(0.05)
    finally:
        done.set()
        await task
    assert len(seen) > 10, "the reader must have overlapped the rebuild"
    assert set(seen) == {(ACCOUNTS, total)}, "a reader saw a partial model"


async def test_a_live_runner_keeps_going_across_a_swap(store: EventStore) -> None:
    await _bank(store, 100)
    stop = asyncio.Event()
    runner = ProjectionRunner(store, AccountBalances)
    running = asyncio.create_task(runner.run(stop=stop))
    writer = asyncio.create_task(_bank_more(store, 120))
    await asyncio.sleep(0.2)
    await replay(store, AccountBalances, ReplayFrom(position=0), batch_size=50)
    await writer
    await _wait_caught_up(store)
    stop.set()
    await running
    repo = Repository(store)
    rows = await store.database.read(_rows)
    assert len(rows) == ACCOUNTS
    for row in rows:
        assert (await repo.get(Account, row[0])).state.balance == row[4], row[0]


async def _bank_more(store: EventStore, rounds: int) -> None:
    repo = Repository(store, snapshot_every=None)
    rng = random.Random(99)
    for _ in range(rounds):
        account = await repo.get(Account, f"acct-{rng.randrange(ACCOUNTS)}")
        account.deposit(rng.randint(1, 9))
        await repo.save(account)
        await asyncio.sleep(0.001)


async def _wait_caught_up(store: EventStore) -> None:
    head = await store.head_position()
    for _ in range(500):
        if (await store.database.read(_live_checkpoint) or 0) >= head:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the live runner did not catch up")


async def _copy_after(store: EventStore, url: str, after: int) -> EventStore:
    """A fresh store holding exactly the events after ``after``, positions and all."""
    await migrate(url)
    other = await EventStore.open(url)
    rows = [dict(r._mapping) for r in await store.database.read(
        lambda c: c.execute(select(events).where(events.c.position > after).order_by(events.c.position)).all()
    )]
    for row in rows:  # PostgreSQL hands JSONB back decoded
        if not isinstance(row["payload"], str):
            row["payload"] = json.dumps(row["payload"])
    if rows:
        await other.database.write(lambda c: c.execute(insert(events), rows))
    return other


@pytest.mark.parametrize("start", ["position", "time"])
async def test_replay_from_the_middle_equals_the_same_slice_replayed_in_full(
    store: EventStore, start: str, tmp_path: Any
) -> None:
    await _bank(store, 60, seed=1)
    await asyncio.sleep(0.05)
    middle_time = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await _bank_more(store, 60)
    if start == "position":
        after = (await store.head_position()) // 2
        origin = ReplayFrom(position=after)
    else:
        after = await store.first_position_at(middle_time)
        origin = ReplayFrom(time=middle_time)
        assert 0 < after < await store.head_position()

    await replay(store, AccountBalances, origin, slice=True)
    sliced = await store.database.read(_rows)

    other = await _copy_after(store, f"sqlite+aiosqlite:///{tmp_path / 'slice.db'}", after)
    try:
        await replay(other, AccountBalances, ReplayFrom(position=0))
        assert sliced == await other.database.read(_rows)
        assert sliced, "the slice is not empty"
    finally:
        await other.close()


async def test_a_dry_run_reports_and_changes_nothing(store: EventStore) -> None:
    await _bank(store, 30)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    before = (await store.database.read(_rows), await store.database.read(_live_checkpoint))
    plan = await plan_replay(store, AccountBalances, ReplayFrom(position=10))
    c = events.c
    expected = await store.database.read(
        lambda conn: conn.execute(
            select(func.count()).where(c.position > 10, c.event_type.in_(AccountBalances.event_types()))
        ).scalar_one()
    )
    assert plan.events == expected and plan.start == {("", -1): 10}
    assert plan.end == {("", -1): await store.head_position()}
    assert plan.estimated_seconds is not None and plan.estimated_seconds >= 0
    assert (await store.database.read(_rows), await store.database.read(_live_checkpoint)) == before


async def test_bad_starting_points_are_one_line_errors(store: EventStore) -> None:
    await _bank(store, 5)
    head = await store.head_position()
    with pytest.raises(ProjectionError, match=f"position {head + 1} is beyond the end of the log"):
        await plan_replay(store, AccountBalances, ReplayFrom(position=head + 1))
    with pytest.raises(ProjectionError, match="is in the future"):
        await plan_replay(store, AccountBalances, ReplayFrom(time=datetime.now(UTC) + timedelta(days=1)))
    with pytest.raises(ProjectionError, match="--from-offset replays from Kafka"):
        await plan_replay(store, AccountBalances, ReplayFrom(offset=3))
    with pytest.raises(ProjectionError, match="exactly one"):
        ReplayFrom(position=1, offset=2)
    with pytest.raises(ProjectionError, match="has no time zone"):
        ReplayFrom(time=datetime(2026, 1, 1))


async def test_a_failed_replay_leaves_the_live_model_serving(store: EventStore, monkeypatch: Any) -> None:
    await _bank(store, 40)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    before = (await store.database.read(_rows), await store.database.read(_live_checkpoint))
    calls = 0
    original = AccountBalances._handlers["account.deposited"]

    def flaky(self: Any, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 20:
            raise RuntimeError("disk on fire")
        original(self, *args)

    monkeypatch.setitem(AccountBalances._handlers, "account.deposited", flaky)
    with pytest.raises(ProjectionError, match=r"projection 'account_balances' stopped at account\.deposited .*disk on fire"):
        await replay(store, AccountBalances, ReplayFrom(position=0), batch_size=7)
    assert (await store.database.read(_rows), await store.database.read(_live_checkpoint)) == before
    tables = await store.database.read(lambda c: __import__("sqlalchemy").inspect(c).get_table_names())
    assert "account_balances__rebuild" not in tables


async def _one_account(store: EventStore) -> None:
    """Positions 1-4: opened (owner 'ann'), deposited 1,000, withdrew 300, deposited 50."""
    repo = Repository(store, snapshot_every=None)
    account = Account.open("acct-x", "ann", "EUR")
    account.deposit(1_000)
    await repo.save(account)
    account.withdraw(300)
    await repo.save(account)
    account.deposit(50)
    await repo.save(account)


def _balance_row(conn: Connection) -> tuple[Any, ...]:
    t = AccountBalances.balances
    return tuple(conn.execute(select(t.c.owner, t.c.status, t.c.balance, t.c.version)).one())


@pytest.mark.parametrize("start", ["position", "time"])
async def test_a_replay_from_a_later_start_refuses_without_slice_and_builds_the_slice_with_it(
    store: EventStore, start: str
) -> None:
    await _one_account(store)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    live = await store.database.read(_balance_row)
    assert live == ("ann", "open", 750, 4)
    if start == "position":
        origin, described = ReplayFrom(position=2), "position 2"
    else:
        second = (await store.read_log(1, 1))[0].recorded_at
        origin = ReplayFrom(time=second + timedelta(microseconds=1))
        described = f"time {origin.time.isoformat().replace('+00:00', 'Z')}"  # type: ignore[union-attr]
    left_out = 2  # opened, deposited 1,000

    plan = await plan_replay(store, AccountBalances, origin)
    assert (plan.is_slice, plan.left_out, plan.events) == (True, left_out, 2)
    assert plan.describe_result() == (
        f"a slice: only the events from {described} on; it leaves out the 2 earlier events of the types it handles"
    )
    assert plan.as_dict()["slice"] is True and plan.as_dict()["left_out"] == 2
    with pytest.raises(ProjectionError) as refused:
        await replay(store, AccountBalances, origin)
    assert str(refused.value) == (
        f"a replay of projection 'account_balances' from {described} would replace its read model with one built"
        " from that point on, leaving out the 2 earlier events it handles: replay from the beginning"
        " (--from-position 0), or give --slice to build that slice on purpose"
    )
    assert await store.database.read(_balance_row) == live  # nothing changed
    assert await store.database.read(_live_checkpoint) == 4

    result = await replay(store, AccountBalances, origin, slice=True)
    assert result.events == 2 and result.generation == 2
    # The slice: no opening (owner and status unknown), -300 + 50.
    assert await store.database.read(_balance_row) == (None, None, -250, 4)

    full = await plan_replay(store, AccountBalances, ReplayFrom(position=0))
    assert (full.is_slice, full.left_out) == (False, 0)
    await replay(store, AccountBalances, ReplayFrom(position=0))
    assert await store.database.read(_balance_row) == live


async def test_a_later_start_before_the_projections_first_event_is_no_slice(store: EventStore) -> None:
    # Events of other types before the start leave nothing of this projection out.
    from facta.domain.reference import Location, Ride

    repo = Repository(store, snapshot_every=None)
    await repo.save(Ride.request("ride-1", "rider-1", Location(lat=1, lon=2), Location(lat=3, lon=4)))
    before = await store.head_position()
    await _one_account(store)
    plan = await plan_replay(store, AccountBalances, ReplayFrom(position=before))
    assert (plan.is_slice, plan.left_out) == (False, 0)
    await replay(store, AccountBalances, ReplayFrom(position=before))
    assert await store.database.read(_balance_row) == ("ann", "open", 750, 4)
