"""The ProcessManager base: each handler's events get ids derived from the event it
handles, so a redelivery stores nothing new and a differing copy is refused.

The process under test pays a bonus from a bank account to every account that receives a
"promo" deposit (a transfer: two events on two streams, one append). Expected ids come
from the documented derivation (a name-based UUID of process, handler, trigger and
index), recomputed here with uuid5. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest
from sqlalchemy import Column, Connection, String, select, update

from facta.domain.account import Account, Deposited, TransferredIn, TransferredOut, transfer
from facta.eventstore import EventStore, RecordedEvent, Repository
from facta.eventstore.schema import events, projection_checkpoints
from facta.projections import (
    ProcessContext,
    ProcessManager,
    ProjectionError,
    ProjectionRunner,
    ReadModel,
    handles,
    reacts_to,
    read_model_table,
)
from facta.projections import _tracking as tracking
from facta.projections.replay import ReplayFrom, plan_replay, replay

BANK = "acct-bank"
PROCESS_IDS = uuid.UUID("8b6c2f4e-1d3a-4c59-9e07-5f2a6b8d0c31")  # the documented namespace


class Bonus(ProcessManager, name="test_bonus"):
    """Pays ``rate`` times every promo deposit from the bank to the depositor."""

    actor: ClassVar[str | None] = "bonus"
    rate: ClassVar[int] = 1
    before_save: ClassVar[Callable[[RecordedEvent], Awaitable[None]] | None] = None

    @reacts_to(Deposited)
    async def _pay(self, ctx: ProcessContext, event: Deposited, record: RecordedEvent) -> None:
        if event.reference != "promo":
            return
        bank = await ctx.repository.get(Account, BANK)
        depositor = await ctx.repository.get(Account, record.stream_id)
        transfer(bank, depositor, event.amount * self.rate, transfer_id=f"bonus-{record.event_id}")
        hook = type(self).before_save
        if hook is not None:
            type(self).before_save = None
            await hook(record)
        await ctx.save(bank, depositor)


@pytest.fixture(autouse=True)
def _reset_bonus() -> None:
    Bonus.rate, Bonus.before_save = 1, None


async def _setup(store: EventStore, promos: tuple[int, ...] = (100, 250)) -> list[RecordedEvent]:
    """The bank, two customers, their promo deposits (and one plain deposit); the promo
    deposits' records."""
    repo = Repository(store)
    bank = Account.open(BANK, "bank", "EUR")
    bank.deposit(1_000_00)
    await repo.save(bank, actor="bank")
    for n, amount in enumerate(promos):
        customer = Account.open(f"acct-{n}", f"customer-{n}", "EUR")
        customer.deposit(5, reference="plain")
        customer.deposit(amount, reference="promo")
        await repo.save(customer, actor=f"customer-{n}", correlation_id=f"promo-{n}")
    return [r for r in await store.read_log(limit=1000, event_types=[Deposited.event_type])
            if r.event.reference == "promo"]  # type: ignore[attr-defined]


def _log(conn: Connection) -> list[tuple[Any, ...]]:
    c = events.c
    return [tuple(r) for r in conn.execute(select(c.position, c.event_id, c.stream_id, c.version, c.payload)
                                           .order_by(c.position))]


async def _bonus_events(store: EventStore) -> list[RecordedEvent]:
    return [r async for r in store.iter_log() if r.actor == "bonus"]


def _expected_id(trigger: uuid.UUID, index: int) -> uuid.UUID:
    return uuid.uuid5(PROCESS_IDS, f"test_bonus:_pay:{trigger}:{index}")


async def _balance(store: EventStore, account: str) -> int:
    return (await Repository(store).get(Account, account)).state.balance


async def test_each_handlers_events_get_ids_derived_from_the_event_it_handles(store: EventStore) -> None:
    promos = await _setup(store)
    applied = await ProjectionRunner(store, Bonus).run(once=True)
    assert applied == 5, "five deposits reach the handler (two promo; the bank's and two plain ones)"
    paid = await _bonus_events(store)
    assert len(paid) == 4
    for trigger in promos:
        out, in_ = (next(r for r in paid if r.event_id == _expected_id(trigger.event_id, k)) for k in (0, 1))
        assert isinstance(out.event, TransferredOut) and out.stream_id == BANK
        assert isinstance(in_.event, TransferredIn) and in_.stream_id == trigger.stream_id
        assert out.event.amount == in_.event.amount == trigger.event.amount  # type: ignore[attr-defined]
        for r in (out, in_):
            assert (r.causation_id, r.correlation_id, r.actor) == (str(trigger.event_id), trigger.correlation_id,
                                                                   "bonus")
    assert await _balance(store, "acct-0") == 5 + 100 + 100 and await _balance(store, "acct-1") == 5 + 250 + 250
    # The derivation is a pure function of process, handler, trigger and index.
    trigger = promos[0].event_id
    assert Bonus().event_id("_pay", trigger, 1) == _expected_id(trigger, 1)
    assert len({Bonus().event_id(h, t, k) for h in ("_pay", "_other") for t in (trigger, promos[1].event_id)
                for k in (0, 1)}) == 8


async def test_a_redelivery_stores_nothing_new(store: EventStore) -> None:
    promos = await _setup(store)
    await ProjectionRunner(store, Bonus).run(once=True)
    log_before = await store.database.read(_log)

    def reset(conn: Connection) -> None:
        c = projection_checkpoints.c
        done = conn.execute(update(projection_checkpoints).where(c.projection == Bonus.name).values(position=0))
        assert done.rowcount == 1

    await store.database.write(reset)
    assert await ProjectionRunner(store, Bonus).run(once=True) == 5, "the reset checkpoint did not redeliver"
    assert await store.database.read(_log) == log_before, "a redelivery stored something"
    # Handing it the event directly: the handler does not run again.
    Bonus.rate = 3
    assert await Bonus().handle(store, promos[0]) is False
    assert await store.database.read(_log) == log_before
    assert await _balance(store, "acct-0") == 205


async def test_a_crash_after_the_save_before_the_checkpoint_stores_nothing_new(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _setup(store)
    original = tracking.move_checkpoints
    failures = 0

    def crash_once(*args: Any) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("connection lost while writing the checkpoint")
        original(*args)

    monkeypatch.setattr(tracking, "move_checkpoints", crash_once)
    with pytest.raises(RuntimeError, match="connection lost"):
        await ProjectionRunner(store, Bonus).run(once=True)
    c = projection_checkpoints.c
    assert await store.database.read(
        lambda conn: conn.execute(select(c.position).where(c.projection == Bonus.name)).scalar()
    ) is None
    log_after_crash = await store.database.read(_log)
    assert len(await _bonus_events(store)) == 4, "the saves happened before the checkpoint write failed"
    await ProjectionRunner(store, Bonus).run(once=True)
    assert await store.database.read(_log) == log_after_crash
    assert await _balance(store, "acct-1") == 505


async def test_a_differing_redelivery_is_refused_and_the_first_stands(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Another delivery of the same event (another runner, during a Kafka rebalance)
    stores its events between this delivery's check and its save, computed differently
    (here: another rate): the store refuses this delivery's copy (DuplicateEventError),
    nothing new is stored, the first stands, and a warning names the event."""
    (first, second) = await _setup(store)

    async def other_delivery(record: RecordedEvent) -> None:
        Bonus.rate = 2
        assert await Bonus().handle(store, record) is True
        Bonus.rate = 1

    Bonus.before_save = other_delivery
    with caplog.at_level(logging.WARNING, logger="facta.projections"):
        assert await Bonus().handle(store, first) is True
    paid = await _bonus_events(store)
    assert sorted(r.event_id for r in paid) == sorted(_expected_id(first.event_id, k) for k in (0, 1))
    assert {r.event.amount for r in paid} == {200}, "the other delivery's events (rate 2) stand"  # type: ignore[attr-defined]
    assert await _balance(store, "acct-0") == 5 + 100 + 200
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"process 'test_bonus', account.deposited event {first.event_id}: an earlier delivery stored" in warning
    assert "this delivery's were refused" in warning and "\n" not in warning
    # The event is handled: the next delivery does not run the handler.
    head = await store.head_position()
    assert await ProjectionRunner(store, Bonus).run(once=True) == 5
    assert await store.head_position() == head + 2, "only the second promo was paid"
    assert await _balance(store, second.stream_id) == 505


async def test_a_conflict_with_another_writer_runs_the_handler_again(store: EventStore) -> None:
    (first, _) = await _setup(store)

    async def bank_moves(record: RecordedEvent) -> None:
        repo = Repository(store)
        bank = await repo.get(Account, BANK)
        bank.withdraw(1, reference="fee")
        await repo.save(bank, actor="bank")

    Bonus.before_save = bank_moves
    assert await Bonus().handle(store, first) is True
    paid = await _bonus_events(store)
    assert sorted(r.event_id for r in paid) == sorted(_expected_id(first.event_id, k) for k in (0, 1))
    assert await _balance(store, BANK) == 1_000_00 - 1 - 100


async def test_ids_stored_for_another_event_stop_the_process_naming_both(store: EventStore) -> None:
    class Constant(Bonus, name="test_constant"):
        def event_id(self, handler: str, trigger: uuid.UUID, index: int) -> uuid.UUID:
            return uuid.UUID(int=index + 1)  # ignores the trigger: a bug

    (first, _) = await _setup(store)
    # Every event it handles is checked first: the next deposit after the first promo.
    after = next(r for r in await store.read_log(limit=1000, event_types=[Deposited.event_type])
                 if r.position > first.position)
    with pytest.raises(ProjectionError) as stopped:
        await ProjectionRunner(store, Constant).run(once=True)
    message = str(stopped.value)
    assert "\n" not in message
    assert f"projection 'test_constant' stopped at account.deposited event {after.event_id}" in message
    assert (f"process 'test_constant' derives event id {uuid.UUID(int=1)} for account.deposited event"
            f" {after.event_id}, but it is stored already") in message
    assert f"caused by {first.event_id}" in message
    assert len(await _bonus_events(store)) == 2, "the second promo stored nothing"


async def test_a_handler_saves_once(store: EventStore) -> None:
    class Twice(ProcessManager, name="test_twice"):
        @reacts_to(Deposited)
        async def _pay(self, ctx: ProcessContext, event: Deposited, record: RecordedEvent) -> None:
            bank = await ctx.repository.get(Account, BANK)
            bank.withdraw(1)
            await ctx.save(bank)
            bank.withdraw(1)
            await ctx.save(bank)

    (first, _) = await _setup(store)
    with pytest.raises(ProjectionError, match="handler _pay saved twice for one event"):
        await Twice().handle(store, first)


async def test_a_replay_refuses_a_process_manager_before_any_io(store: EventStore) -> None:
    await _setup(store)
    await ProjectionRunner(store, Bonus).run(once=True)
    log_before = await store.database.read(_log)
    says = ("'test_bonus' is a process manager, not a projection: it has no read model to rebuild, and a replay never"
            " issues its commands again (a read model of what it did is a projection: replay that)")
    with pytest.raises(ProjectionError) as planned:
        await plan_replay(store, Bonus, ReplayFrom(position=0))
    assert str(planned.value) == says
    with pytest.raises(ProjectionError) as replayed:
        await replay(store, Bonus, ReplayFrom(position=0))
    assert str(replayed.value) == says
    assert await store.database.read(_log) == log_before


def test_a_process_manager_declares_no_read_model() -> None:
    with pytest.raises(ProjectionError, match="process manager 'test_tables' declares read-model tables"):
        class WithTable(ProcessManager, name="test_tables"):
            rows = read_model_table("test_tables_rows", Column("id", String(10), primary_key=True))

    with pytest.raises(ProjectionError, match="process manager 'test_handles' has @handles handlers"):
        class WithHandler(ProcessManager, name="test_handles"):
            @handles(Deposited)
            def _row(self, rm: ReadModel, event: Deposited, record: RecordedEvent) -> None:
                pass

    assert Bonus.event_types() == [Deposited.event_type] and Bonus.stream_types() == ["account"]
    assert Bonus.live_tables() == []
