"""`store_status` (issue 15, item 5: what `facta status` draws) on both dialects: the head,
the relays' and the projections' checkpoints, lag in events and in seconds, read from
the store alone."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from facta.domain.reference import Account
from facta.eventstore import EventStore, Repository
from facta.eventstore.schema import events, relay_checkpoints
from facta.projections import ProjectionRunner
from facta.projections._tracking import LOG
from facta.projections.reference import AccountBalances
from facta.projections.status import store_status


async def test_store_status_reads_head_checkpoints_and_lags(store: EventStore) -> None:
    empty = await store_status(store)
    assert (empty.head, empty.relays, empty.projections) == (0, [], [])
    repo = Repository(store, snapshot_every=None)
    for i in range(3):
        account = Account.open(f"acct-st-{i}", owner="ann", currency="EUR")
        account.deposit(10)
        await repo.save(account)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    applied = await store.head_position()
    await repo.save(Account.open("acct-st-9", owner="bo", currency="EUR"))
    head = await store.head_position()
    stamp = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    await store.database.write(lambda conn: conn.execute(insert(relay_checkpoints).values(
        name="feed", position=2, updated_at=stamp)))
    await store.database.write(lambda conn: conn.execute(insert(relay_checkpoints).values(
        name="caught-up", position=head, updated_at=stamp)))
    recorded = await store.database.read(lambda conn: {int(p): r for p, r in conn.execute(
        select(events.c.position, events.c.recorded_at).where(events.c.position.in_([3, applied + 1])))})

    status = await store_status(store)

    def seconds_since(position: int) -> float:
        when = recorded[position]
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
        return (status.taken_at - when).total_seconds()

    assert status.head == head and head > applied
    assert [(r.name, r.checkpoints, r.lag_events, r.updated_at) for r in status.relays] == [
        ("caught-up", {LOG: head}, 0, stamp), ("feed", {LOG: 2}, head - 2, stamp)]
    assert status.relays[0].lag_s == 0.0
    assert status.relays[1].lag_s == seconds_since(3) and status.relays[1].lag_s > 0
    (balances,) = status.projections
    assert (balances.name, balances.source, balances.checkpoints, balances.lag_events, balances.last_error) == (
        "account_balances", "log", {LOG: applied}, head - applied, None)
    assert balances.lag_s == seconds_since(applied + 1)
    assert balances.progress == applied
    await ProjectionRunner(store, AccountBalances).run(once=True)
    (caught_up,) = (await store_status(store)).projections
    assert (caught_up.checkpoints, caught_up.lag_events, caught_up.lag_s) == ({LOG: head}, 0, 0.0)
