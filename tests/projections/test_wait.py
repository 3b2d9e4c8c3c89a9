"""Read-your-writes (issue 15, item 4): wait until a projection has applied a write.

A web-handler-like flow with the runner running beside it (store log, both dialects; and
Kafka with a real broker and the relay running too); the wait timing out with one line
naming the projection, the positions and the timeout; a projection that never ran; a
position the projection does not handle; the blocking facade's form.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from facta.domain.reference import Account, Location, Ride
from facta.errors import InvalidValue, ProjectionError, ProjectionWaitTimeout
from facta.eventstore import AppendResult, EventStore, Repository
from facta.eventstore.blocking import BlockingEventStore
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import ProjectionRunner, RunnerConfig, wait_for_append, wait_for_position
from facta.projections._tracking import LOG
from facta.projections.reference import AccountBalances
from facta.projections.runner import KafkaSettings
from facta.projections.wait import wait_for_append_blocking, wait_for_position_blocking


def _balance(account_id: str) -> Any:
    table = AccountBalances.balances
    return lambda conn: conn.execute(select(table.c.balance).where(table.c.account_id == account_id)).scalar()


async def _handler(store: EventStore, repo: Repository, account_id: str, amount: int, **kafka: Any) -> int | None:
    """What a web handler does: save the command's events, wait for the read model, read it."""
    account = (await repo.get(Account, account_id) if await store.stream_version(account_id)
               else Account.open(account_id, owner="ann", currency="EUR"))
    account.deposit(amount)
    result = await repo.save(account)
    await wait_for_append(store, "account_balances", result, timeout_s=60, **kafka)
    return await store.database.read(_balance(account_id))


async def test_a_handler_reads_its_own_write_while_the_runner_runs(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=None)
    stop = asyncio.Event()
    runner = ProjectionRunner(store, AccountBalances, config=RunnerConfig(batch_size=50, poll_interval=0.02))
    await runner.run(once=True)  # a service whose runner is up (one that never ran is an error)
    task = asyncio.ensure_future(runner.run(stop=stop))
    try:
        # Each request sees the balance its own deposit made, never an older one.
        balance = 0
        for amount in (100, 250, 30, 7):
            balance += amount
            assert await _handler(store, repo, "acct-rw-1", amount) == balance
        # Events the projection does not handle (a ride's) still count once its
        # checkpoint passes them: the log checkpoint covers every position it looked at.
        ride = Ride.request("ride-rw-1", "rider-1", Location(lat=1, lon=1), Location(lat=1.01, lon=1.01))
        result = await repo.save(ride)
        reached = await wait_for_append(store, AccountBalances, result, timeout_s=60)
        assert reached[LOG] >= result[0].positions[-1]
    finally:
        stop.set()
        await task
    assert runner.applied >= 5


async def test_a_wait_times_out_naming_the_projection_the_positions_and_the_timeout(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=None)
    account = Account.open("acct-rw-2", owner="bo", currency="EUR")
    first = await repo.save(account)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    # Reached already: returns at once, with timeout 0 too.
    assert await wait_for_position(store, "account_balances", first[0].positions[-1], timeout_s=0) == {
        LOG: first[0].positions[-1]}
    account.deposit(5)
    second = await repo.save(account)
    wanted = second[0].positions[-1]
    with pytest.raises(ProjectionWaitTimeout) as timed_out:
        await wait_for_append(store, "account_balances", [*first, *second], timeout_s=0.2)
    assert str(timed_out.value) == (
        f"projection 'account_balances' did not reach position {wanted} within 0.2 s:"
        f" it is at position {first[0].positions[-1]}"
    )
    assert isinstance(timed_out.value, TimeoutError) and isinstance(timed_out.value, ProjectionError)
    assert (timed_out.value.projection, timed_out.value.position, timed_out.value.timeout_s) == (
        "account_balances", wanted, 0.2)
    # The runner applies it: the same wait now returns.
    await ProjectionRunner(store, AccountBalances).run(once=True)
    assert (await wait_for_append(store, "account_balances", second, timeout_s=1))[LOG] == wanted


async def test_a_projection_that_never_ran_and_bad_arguments_are_one_line(store: EventStore) -> None:
    await Repository(store, snapshot_every=None).save(Account.open("acct-rw-3", owner="cy", currency="EUR"))
    with pytest.raises(ProjectionError) as never:
        await wait_for_position(store, "ride_board", 1, timeout_s=1)
    assert str(never.value) == ("projection 'ride_board' has never run on this store, so nothing to wait for"
                                " (projections that have: none)")
    for bad, message in [
        ({"position": 0}, "invalid position 0: expected an integer from 1 to"),
        ({"position": True}, "invalid position True"),
        ({"timeout_s": -1}, "invalid timeout_s -1: expected a finite number of seconds >= 0"),
        ({"timeout_s": float("nan")}, "invalid timeout_s nan"),
    ]:
        arguments: dict[str, Any] = {"position": 1, "timeout_s": 1} | bad
        with pytest.raises(InvalidValue, match=message.replace("(", r"\(")):
            await wait_for_position(store, "account_balances", arguments.pop("position"), **arguments)
    with pytest.raises(InvalidValue, match="results must be an AppendResult or a list of them, got int"):
        await wait_for_append(store, "account_balances", [3], timeout_s=1)  # type: ignore[list-item]


def test_the_blocking_facade_waits_too(migrated_url: str) -> None:
    with BlockingEventStore.open(migrated_url) as blocking:
        async def save_and_run(store: EventStore) -> list[AppendResult]:
            result = await Repository(store, snapshot_every=None).save(
                Account.open("acct-rw-4", owner="di", currency="EUR"))
            await ProjectionRunner(store, AccountBalances).run(once=True)
            return result

        result = blocking.call(save_and_run)
        assert wait_for_append_blocking(blocking, "account_balances", result, timeout_s=5) == {
            LOG: result[0].positions[-1]}
        with pytest.raises(ProjectionWaitTimeout, match="did not reach position 999 within 0.05 s"):
            wait_for_position_blocking(blocking, "account_balances", 999, timeout_s=0.05)


async def test_a_kafka_projection_is_waited_for_per_partition(store: EventStore, kafka_broker: Any,
                                                              prefix: str) -> None:
    """The relay and a Kafka-source runner run beside the handler: each wait returns once
    the runner's checkpoint of the account's partition is past the event's record."""
    settings = KafkaSettings(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix,
                             group_prefix=f"g{uuid.uuid4().hex[:8]}.", session_timeout_ms=6_000,
                             heartbeat_interval_ms=500)
    repo = Repository(store, snapshot_every=None)
    # Accounts on several partitions, published before the runner starts (its topic exists).
    for i in range(4):
        await repo.save(Account.open(f"acct-k-{i}", owner="ed", currency="EUR"))
    relay = Relay(store, RelayConfig(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix, partitions=3,
                                     idempotence=kafka_broker.supports_idempotence, poll_interval=0.02))
    stop = asyncio.Event()
    await relay.run(once=True)  # the topic exists before the runner starts
    runner = ProjectionRunner(store, AccountBalances, kafka=settings)
    await runner.run(once=True)
    running = asyncio.ensure_future(runner.run(stop=stop))
    relaying = asyncio.ensure_future(relay.run(stop=stop))
    try:
        for i in range(4):
            assert await _handler(store, repo, f"acct-k-{i}", 10 * (i + 1), kafka=settings) == 10 * (i + 1)
        assert await _handler(store, repo, "acct-k-0", 5, kafka=settings) == 15
        # A ride's events: a stream type account_balances does not read from Kafka. Given
        # its class, the wait knows there is nothing to apply and returns at once.
        ride = await repo.save(Ride.request("ride-k-1", "rider-1", Location(lat=1, lon=1), Location(lat=2, lon=2)))
        reached = await wait_for_append(store, AccountBalances, ride, timeout_s=0, kafka=settings)
        assert reached and all(topic == f"{prefix}.account" for topic, _ in reached)
        # Without Kafka settings the wait says what it needs.
        with pytest.raises(ProjectionError, match="projection 'account_balances' reads Kafka: give kafka="):
            await wait_for_position(store, "account_balances", 1, timeout_s=1)
    finally:
        stop.set()
        await asyncio.gather(relaying, running)
    # A record not published yet (the relay stopped): the wait times out naming the partition.
    account = await repo.get(Account, "acct-k-1")
    account.deposit(1)
    late = await repo.save(account)
    with pytest.raises(ProjectionWaitTimeout) as timed_out:
        await wait_for_append(store, AccountBalances, late, timeout_s=1.0, kafka=settings)
    message = str(timed_out.value)
    wanted = late[0].positions[-1]
    assert message.startswith(f"projection 'account_balances' did not reach position {wanted} within 1 s:"
                              f" its checkpoint of {prefix}.account[")
    assert message.endswith("yet") and f", and the relay has not sent the event to {prefix}.account[" in message
