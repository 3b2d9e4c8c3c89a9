"""`replay()` from Kafka: everything, from an offset (in every partition or in one), from a
time. Each result equals the same slice of the topic folded independently, from the
records a plain consumer reads."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest

from facta.eventstore import EventStore
from facta.projections import ProjectionError
from facta.projections.kafka_source import KafkaSubscription
from facta.projections.replay import ReplayFrom, plan_replay, replay

from .test_source_contract import Book, Source, Wallets, checkpoints, consume_all, rows, workload


def fold(messages: list[Any], start: dict[tuple[str, int], int]) -> dict[str, tuple[int, int]]:
    """The wallets' read model from the records at or after ``start`` in their partition."""
    out: dict[str, tuple[int, int]] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        if m.offset < start[(m.topic, m.partition)]:
            continue
        kind = dict(m.headers)["event-type"].decode()
        if kind not in ("wallet.credited", "wallet.debited"):
            continue
        amount = json.loads(m.value)["amount"]
        balance, count = out.get(m.key.decode(), (0, 0))
        out[m.key.decode()] = (balance + (amount if kind == "wallet.credited" else -amount), count + 1)
    return out


@pytest.fixture
def source(kafka_broker: Any, prefix: str) -> Source:
    if not kafka_broker.reliable_end_offsets:
        pytest.skip(f"{kafka_broker.kind} reports wrong end offsets, which a replay's plan is made of")
    return Source(KafkaSubscription, kafka_broker, prefix)


async def test_replays_from_kafka_equal_the_same_slice_folded_independently(migrated_url: str, source: Source) -> None:
    async with await EventStore.open(migrated_url) as store:
        await workload(store, Book(), rounds=40)
        await asyncio.sleep(0.05)
        middle_time = datetime.now().astimezone()
        await asyncio.sleep(0.05)
        await workload(store, Book(), rounds=40, seed=3)
        await source.publish(store)
        total = len(await store.read_log(limit=10_000))
        messages = await consume_all(source.broker.bootstrap, [source.topic], total)
        settings = source.settings()
        begin = {(source.topic, p): 0 for p in range(source.partitions)}
        ends = {(source.topic, p): 0 for p in range(source.partitions)}
        for m in messages:
            ends[(m.topic, m.partition)] = max(ends[(m.topic, m.partition)], m.offset + 1)

        full = await replay(store, Wallets, ReplayFrom(offset=0), kafka=settings)
        assert full.plan.source == "kafka" and full.events > 0
        assert await rows(store) == fold(messages, begin)
        assert await checkpoints(store) == ends

        # One partition from the middle, the others whole.
        target = max(ends, key=lambda tp: ends[tp])
        offset = ends[target] // 2
        plan = await plan_replay(store, Wallets, ReplayFrom(offset=offset, partition=target[1]), kafka=settings)
        assert plan.start == begin | {target: offset} and plan.end == ends
        assert plan.events == total - offset
        await replay(store, Wallets, ReplayFrom(offset=offset, partition=target[1]), kafka=settings, slice=True)
        assert await rows(store) == fold(messages, begin | {target: offset})

        # Every partition from an offset: a slice, refused unless asked for.
        before = await rows(store)
        sliced = await plan_replay(store, Wallets, ReplayFrom(offset=2), kafka=settings)
        assert (sliced.left_out, sliced.left_out_unit) == (2 * len(ends), "records")
        with pytest.raises(ProjectionError, match=(
                "a replay of projection 'wallets' from offset 2 would replace its read model with one built from"
                f" that point on, leaving out the {2 * len(ends)} earlier records of its topics")):
            await replay(store, Wallets, ReplayFrom(offset=2), kafka=settings)
        assert await rows(store) == before
        await replay(store, Wallets, ReplayFrom(offset=2), kafka=settings, slice=True)
        assert await rows(store) == fold(messages, dict.fromkeys(begin, 2))

        # From a time: each partition from its first record at or after it.
        timed = await plan_replay(store, Wallets, ReplayFrom(time=middle_time), kafka=settings)
        first_after = {
            tp: min((m.offset for m in messages if (m.topic, m.partition) == tp
                     and m.timestamp >= middle_time.timestamp() * 1000), default=ends[tp])
            for tp in begin
        }
        assert timed.start == first_after
        await replay(store, Wallets, ReplayFrom(time=middle_time), kafka=settings, slice=True)
        assert await rows(store) == fold(messages, first_after)
        assert len(await rows(store)) > 0

        with pytest.raises(ProjectionError, match=rf"offset {ends[target] + 1} is beyond the end of"):
            await plan_replay(store, Wallets, ReplayFrom(offset=ends[target] + 1, partition=target[1]),
                              kafka=settings)
        with pytest.raises(ProjectionError, match="partition 99 does not exist"):
            await plan_replay(store, Wallets, ReplayFrom(offset=0, partition=99), kafka=settings)
