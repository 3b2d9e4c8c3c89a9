"""Kafka retention never hides a gap (contract item 9), on SQLite and PostgreSQL.

The test broker deletes records the way retention does (DeleteRecords moves a
partition's log start offset). Expected values come from the topic as it was before the
deletion (its records' offsets, ``position`` headers and types), from what the test
appended (``Book``), or from a replay made while Kafka still held everything; never from
the code under test.

- a runner whose checkpoint Kafka deleted, a new runner on a partition whose start Kafka
  deleted, and a runner whose next records Kafka deletes while it runs: each stops with
  one line naming the partition, the checkpoint and the earliest offset;
- a replay from an offset Kafka deleted refuses, naming the store position to replay from;
- a replay from a position or a time reads what Kafka deleted from the store, builds what
  a full store replay builds, and the live runner goes on from its checkpoints without
  applying anything twice or skipping anything, also where Kafka emptied a partition
  while the relay still had events for it;
- a process manager (even one whose unhandled records Kafka deleted) and a topic whose
  partitions changed refuse, naming why.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Column, Integer, String, insert, select

from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore.schema import events as events_table
from facta.projections import (
    ProcessContext,
    ProcessManager,
    Projection,
    ProjectionError,
    ProjectionRunner,
    ReadModel,
    RunnerConfig,
    handles,
    reacts_to,
    read_model_table,
)
from facta.projections import _tracking as tracking
from facta.projections._applier import Applier
from facta.projections._tracking import LIVE, REBUILD
from facta.projections.kafka_source import KafkaSubscription, consume_range
from facta.projections.replay import ReplayFrom, plan_replay, replay
from facta.projections.retention import RetentionGap, StoreFill

from ..polling import wait_for
from .test_source_contract import (
    Book,
    Credited,
    Debited,
    Source,
    Wallets,
    _rewind_relay,
    append,
    checkpoints,
    consume_all,
    last_error,
    rows,
    workload,
)

Coord = tuple[str, int]
HANDLED = frozenset(Wallets.event_types())


@pytest.fixture
def source(kafka_broker: Any, prefix: str) -> Source:
    if not kafka_broker.reliable_end_offsets:
        pytest.skip(f"{kafka_broker.kind} reports wrong end offsets, which these tests compare")
    return Source(KafkaSubscription, kafka_broker, prefix)


@pytest.fixture
async def store(migrated_url: str) -> Any:
    async with await EventStore.open(migrated_url) as s:
        yield s


@dataclass(frozen=True)
class Record:
    offset: int
    position: int
    stream_id: str
    event_type: str
    timestamp: int


async def layout(source: Source, store: EventStore, topic: str | None = None) -> dict[Coord, list[Record]]:
    """Every record of the topic, by partition, in offset order (every partition, even empty)."""
    topic = topic or source.topic
    total = len(await store.read_log(limit=100_000))
    messages = await consume_all(source.broker.bootstrap, [topic], total)
    out: dict[Coord, list[Record]] = {(topic, p): [] for p in range(source.partitions)}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        headers = {k: bytes(v).decode() for k, v in m.headers}
        out[(m.topic, m.partition)].append(Record(m.offset, int(headers["position"]), m.key.decode(),
                                                  headers["event-type"], m.timestamp))
    return out


def ends_of(parts: dict[Coord, list[Record]]) -> dict[Coord, int]:
    return {coord: len(records) for coord, records in parts.items()}


async def delete_before(bootstrap: str, offsets: dict[Coord, int]) -> None:
    """What retention does: Kafka drops each partition's records before the offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        done = await admin.delete_records({TopicPartition(*c): RecordsToDelete(o) for c, o in offsets.items()},
                                          timeout_ms=30_000)
    finally:
        await admin.close()
    assert {(tp.topic, tp.partition): int(low) for tp, low in done.items()} == offsets


def handled(records: Sequence[Record]) -> int:
    return sum(1 for r in records if r.event_type in HANDLED)


async def live_floors(store: EventStore, name: str = Wallets.name) -> dict[Coord, int]:
    return await store.database.read(tracking.load_checkpoints, name, tracking.FLOORS[LIVE])


def fold(records: Sequence[RecordedEvent]) -> dict[str, tuple[int, int]]:
    """The wallets' read model from stored events (an independent fold of the store)."""
    out: dict[str, tuple[int, int]] = {}
    for r in records:
        event = r.event
        if isinstance(event, (Credited, Debited)):
            balance, count = out.get(r.stream_id, (0, 0))
            out[r.stream_id] = (balance + (event.amount if isinstance(event, Credited) else -event.amount), count + 1)
    return out


class InOrder(Projection, name="wallet_order"):
    """Fails on an event of a wallet that comes after a later one of the same wallet: the
    per-stream order a replay must keep when it switches from the store to Kafka."""

    versions = read_model_table(
        "wallet_order",
        Column("wallet_id", String(100), primary_key=True),
        Column("last_version", Integer, nullable=False),
        Column("events", Integer, nullable=False),
    )

    def _next(self, rm: ReadModel, record: RecordedEvent) -> None:
        row = rm.get(self.versions, {"wallet_id": record.stream_id})
        if row is not None and record.version <= row["last_version"]:
            raise ValueError(f"{record.stream_id} v{record.version} came after v{row['last_version']}")
        rm.upsert(self.versions, {"wallet_id": record.stream_id}, set={"last_version": record.version},
                  add={"events": 1})

    @handles(Credited)
    def _credited(self, rm: ReadModel, event: Credited, record: RecordedEvent) -> None:
        self._next(rm, record)

    @handles(Debited)
    def _debited(self, rm: ReadModel, event: Debited, record: RecordedEvent) -> None:
        self._next(rm, record)


async def in_order_rows(store: EventStore) -> dict[str, tuple[int, int]]:
    def query(conn: Any) -> dict[str, tuple[int, int]]:
        return {r.wallet_id: (int(r.last_version), int(r.events)) for r in conn.execute(select(InOrder.versions))}

    return await store.database.read(query)


def in_order_expected(log: Sequence[RecordedEvent]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for r in log:
        if r.event_type in HANDLED:
            out[r.stream_id] = (r.version, out.get(r.stream_id, (0, 0))[1] + 1)
    return out


# -- runners ------------------------------------------------------------------------------------


async def test_a_runner_whose_checkpoint_kafka_deleted_stops_naming_it(store: EventStore, source: Source) -> None:
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    assert await source.catch_up(store, source.runner(store)) == book.handled
    built, at = await rows(store), await checkpoints(store)

    await workload(store, book, rounds=30, seed=2)
    await source.publish(store)
    parts = await layout(source, store)
    grown = sorted(c for c in parts if len(parts[c]) >= at[c] + 2)
    assert len(grown) >= 2, "two partitions got new records"
    gap, level = grown[0], grown[1]
    # One partition loses a record past the checkpoint; another exactly up to it (no gap).
    await delete_before(source.broker.bootstrap, {gap: at[gap] + 1, level: at[level]})

    with pytest.raises(RetentionGap) as info:
        await asyncio.wait_for(source.runner(store).run(once=True), 60)
    expected = (
        f"projection 'wallets' cannot go on from its checkpoint, offset {at[gap]} of {gap[0]}[{gap[1]}]: Kafka"
        f" deleted the records before offset {at[gap] + 1}, the earliest it retains, and starting there would skip"
        " events; rebuild it with `facta replay wallets --from-position 0`, which reads the deleted events from"
        " the store"
    )
    assert str(info.value) == expected
    assert await last_error(store) == expected
    assert await rows(store) == built and await checkpoints(store) == at


async def test_a_new_runner_on_partitions_whose_start_kafka_deleted_stops(store: EventStore, source: Source) -> None:
    """No checkpoint yet is the same gap: starting at the earliest retained record would
    leave out the deleted ones."""
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    parts = await layout(source, store)
    first, second, kept = sorted(parts)
    await delete_before(source.broker.bootstrap, {first: 2, second: 1, kept: 0})

    with pytest.raises(RetentionGap) as info:
        await asyncio.wait_for(source.runner(store).run(once=True), 60)
    assert str(info.value) == (
        f"projection 'wallets' has no checkpoint on {first[0]}[{first[1]}] yet: Kafka deleted the records before"
        f" offset 2, the earliest it retains (likewise in {second[0]}[{second[1]}]), and starting there would skip"
        " events; build it with `facta replay wallets --from-position 0`, which reads the deleted events from the"
        " store"
    )
    assert await rows(store) == {} and await checkpoints(store) == {}


async def test_a_running_runner_stops_when_kafka_deletes_what_it_was_to_read(store: EventStore,
                                                                            source: Source) -> None:
    """Kafka deletes records the runner has not fetched yet while it works on a batch:
    its next fetch finds them gone, and it stops instead of resetting to the earliest
    retained offset (an offset reset would jump over them)."""
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    fetched = ends_of(await layout(source, store))
    assert all(n >= 2 for n in fetched.values()), "each partition's fetch leaves records to drain"

    runner = source.runner(store, batch_size=1)
    apply, entered, gate = runner.applier.apply, asyncio.Event(), asyncio.Event()

    first: list[Coord] = []

    async def gated(batch: Any, advance: Any = None) -> None:
        first.extend(advance or ())
        entered.set()
        await gate.wait()
        await apply(batch, advance)

    runner.applier.apply = gated  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop=stop))
    try:
        await asyncio.wait_for(entered.wait(), 60)
        await workload(store, book, rounds=30, seed=4)
        await source.publish(store)
        ends = ends_of(await layout(source, store))
        # The partition of the batch held up: its consumer holds the rest of what it fetched
        # (it fetches a partition again only once that is drained), so its next fetch is at
        # the old end, which Kafka now deletes.
        [gap] = first
        assert ends[gap] >= fetched[gap] + 2, "the partition got new records"
        await delete_before(source.broker.bootstrap, {gap: fetched[gap] + 1})
        gate.set()
        await wait_for(lambda: _state(store, task), lambda s: s[0] or s[1].get(gap, 0) > fetched[gap], 60,
                       "the runner to stop or to move past the deleted records")
        assert task.done(), f"the runner went on past {gap}: checkpoints {await checkpoints(store)}"
        with pytest.raises(RetentionGap) as info:
            task.result()
    finally:
        stop.set()
        gate.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
    assert str(info.value) == (
        f"projection 'wallets' cannot go on from its checkpoint, offset {fetched[gap]} of {gap[0]}[{gap[1]}]:"
        f" Kafka deleted the records before offset {fetched[gap] + 1}, the earliest it retains, and starting there"
        " would skip events; rebuild it with `facta replay wallets --from-position 0`, which reads the deleted"
        " events from the store"
    )
    assert (await checkpoints(store))[gap] == fetched[gap]


async def _state(store: EventStore, task: asyncio.Task[Any], slot: str = LIVE) -> tuple[bool, dict[Coord, int]]:
    return task.done(), await store.database.read(tracking.load_checkpoints, Wallets.name, slot)


async def test_a_replay_stops_when_kafka_deletes_what_it_was_to_read(store: EventStore, source: Source) -> None:
    """The same while a replay reads a range, and when it starts reading again from a
    checkpoint Kafka deleted meanwhile (after an outage, or in its next round)."""
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    fetched = ends_of(await layout(source, store))
    assert all(n >= 2 for n in fetched.values())
    settings = source.settings()
    rebuild = Applier(store, Wallets, source="kafka", slot=REBUILD)
    await store.database.write(tracking.start_rebuild, rebuild.projection, dict.fromkeys(fetched, 0))
    await rebuild.open()
    apply, entered, gate = rebuild.apply, asyncio.Event(), asyncio.Event()

    first: list[Coord] = []

    async def gated(batch: Any, advance: Any = None) -> None:
        first.extend(advance or ())
        entered.set()
        await gate.wait()
        await apply(batch, advance)

    rebuild.apply = gated  # type: ignore[method-assign]
    stop = asyncio.Event()
    endless = dict.fromkeys(fetched, 10**9)  # until stopped
    task = asyncio.create_task(consume_range(rebuild, settings, [source.topic], dict.fromkeys(fetched, 0), endless,
                                             batch_size=1, stop=stop))
    try:
        await asyncio.wait_for(entered.wait(), 60)
        await workload(store, book, rounds=30, seed=4)
        await source.publish(store)
        ends = ends_of(await layout(source, store))
        # The partition of the batch held up: its consumer holds the rest of what it fetched
        # (it fetches a partition again only once that is drained), so its next fetch is at
        # the old end, which Kafka now deletes.
        [gap] = first
        assert ends[gap] >= fetched[gap] + 2, "the partition got new records"
        await delete_before(settings.bootstrap, {gap: fetched[gap] + 1})
        gate.set()
        await wait_for(lambda: _state(store, task, REBUILD), lambda s: s[0] or s[1].get(gap, 0) > fetched[gap], 60,
                       "the replay to stop or to move past the deleted records")
        assert task.done(), "the replay went on past the deleted records"
        with pytest.raises(RetentionGap) as info:
            task.result()
    finally:
        stop.set()
        gate.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
    expected = (
        f"replay of projection 'wallets': Kafka deleted the records of {gap[0]}[{gap[1]}] before offset"
        f" {fetched[gap] + 1} while the replay was at offset {fetched[gap]}, and going on would skip events;"
        " run the replay again"
    )
    assert str(info.value) == expected
    assert rebuild.checkpoints[gap] == fetched[gap]

    rebuild.apply = apply  # type: ignore[method-assign]
    with pytest.raises(RetentionGap) as info:
        await consume_range(rebuild, settings, [source.topic], rebuild.checkpoints, ends, batch_size=100,
                            stop=asyncio.Event())
    assert str(info.value) == expected


# -- replays ------------------------------------------------------------------------------------


async def test_a_replay_from_an_offset_kafka_deleted_refuses_naming_the_position_instead(
    store: EventStore, source: Source
) -> None:
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    parts = await layout(source, store)
    coords = sorted(parts)
    gone, second = coords[1], coords[2]
    assert all(len(records) > 5 for records in parts.values())
    await delete_before(source.broker.bootstrap, {gone: 4, second: 5})
    settings = source.settings()
    name = f"{gone[0]}[{gone[1]}]"

    # From offset 3 everywhere: gone and second start in their deleted ranges.
    first_deleted = parts[gone][0].position
    instead = min(first_deleted, parts[second][0].position, parts[coords[0]][3].position) - 1
    expected = (
        f"offset 3 of {name} is gone: Kafka deleted the records before offset 4, the earliest it retains"
        f" (likewise in {second[0]}[{second[1]}]), so a replay from offset 3 would skip events;"
        f" replay from store position {instead} instead (--from-position {instead}), which reads the deleted"
        f" events from the store; the first event deleted there is at position {first_deleted}"
    )
    for dry_run in (True, False):
        with pytest.raises(RetentionGap) as info:
            if dry_run:
                await plan_replay(store, Wallets, ReplayFrom(offset=3), kafka=settings)
            else:
                await replay(store, Wallets, ReplayFrom(offset=3), kafka=settings, slice=True)
        assert str(info.value) == expected

    # One partition from an offset it retains: the others start at their beginning,
    # which Kafka deleted in two of them.
    with pytest.raises(RetentionGap) as info:
        await plan_replay(store, Wallets, ReplayFrom(offset=1, partition=coords[0][1]), kafka=settings)
    instead = min(first_deleted, parts[second][0].position, parts[coords[0]][1].position) - 1
    assert str(info.value) == (
        f"offset 0 of {name} is gone: Kafka deleted the records before offset 4, the earliest it retains"
        f" (likewise in {second[0]}[{second[1]}]), so a replay from offset 1 of partition"
        f" {coords[0][1]} would skip events; replay from store position {instead} instead (--from-position"
        f" {instead}), which reads the deleted events from the store; the first event deleted there is at"
        f" position {first_deleted}"
    )
    # From offsets Kafka retains everywhere there is no gap.
    plan = await plan_replay(store, Wallets, ReplayFrom(offset=5), kafka=settings)
    assert plan.start == dict.fromkeys(coords, 5) and plan.fill == {}
    assert await store.database.read(tracking.describe) == {}, "nothing was built"


async def test_a_replay_from_a_position_reads_what_kafka_deleted_from_the_store(store: EventStore,
                                                                                source: Source) -> None:
    book = Book()
    await workload(store, book, rounds=40)
    await source.publish(store)
    parts = await layout(source, store)
    ends = ends_of(parts)
    intact, some, half = sorted(parts)
    cut = {some: 3, half: ends[half] // 2}  # different amounts; one partition keeps everything
    assert cut[half] > 3
    await delete_before(source.broker.bootstrap, cut)
    settings = source.settings()

    plan = await plan_replay(store, Wallets, ReplayFrom(position=0), kafka=settings)
    fills = {c: StoreFill(0, parts[c][n].position - 1, handled(parts[c][:n]), n) for c, n in cut.items()}
    assert all(f.events for f in fills.values()), "each cut holds events the projection handles"
    assert plan.fill == fills
    assert plan.start == {intact: 0} | cut and plan.end == ends
    assert plan.floors == {c: f.through for c, f in fills.items()}
    assert plan.events == sum(ends.values()) - sum(cut.values()) + sum(f.events for f in fills.values())

    result = await replay(store, Wallets, ReplayFrom(position=0), kafka=settings, batch_size=7)
    assert await rows(store) == book.balances, "the model a full store replay builds"
    assert result.events == book.handled
    assert await checkpoints(store) == ends, "Kafka offsets: it stays a Kafka-source projection"
    assert await live_floors(store) == plan.floors
    # Each stream's events in version order across the switch from the store to Kafka.
    await replay(store, InOrder, ReplayFrom(position=0), kafka=settings, batch_size=7)
    assert await in_order_rows(store) == in_order_expected(await store.read_log(limit=100_000))

    # The live runner goes on from the replay's checkpoints: it applies the new events
    # once, and passes over the copies of everything the relay publishes again.
    before = book.handled
    await workload(store, book, rounds=20, seed=5)
    await store.database.write(_rewind_relay, 0)
    await source.publish(store)
    runner = source.runner(store, batch_size=5)
    assert await source.catch_up(store, runner) == book.handled - before
    assert await rows(store) == book.balances
    assert await last_error(store) is None


async def test_a_replay_from_a_later_position_builds_that_slice(store: EventStore, source: Source) -> None:
    book = Book()
    await workload(store, book, rounds=40)
    await source.publish(store)
    parts = await layout(source, store)
    coords = sorted(parts)
    log = await store.read_log(limit=100_000)
    after = log[len(log) // 3].position
    # One partition's deleted range reaches past the position, another's stops before it.
    past = next(c for c in coords if parts[c][0].position <= after
                and sum(1 for r in parts[c] if r.position > after and r.event_type in HANDLED) >= 2)
    cut = {past: next(i for i, r in enumerate(parts[past]) if r.position > after and r.event_type in HANDLED) + 1}
    early = [c for c in coords if c != past and parts[c][0].position <= after]
    if early:
        cut[early[0]] = next(i for i, r in enumerate(parts[early[0]]) if r.position > after)
    await delete_before(source.broker.bootstrap, cut)

    plan = await plan_replay(store, Wallets, ReplayFrom(position=after), kafka=source.settings())
    deleted = [r for r in parts[past][:cut[past]] if r.position > after]
    assert handled(deleted), "the deleted part of the slice holds an event the projection handles"
    assert plan.fill == {past: StoreFill(after, parts[past][cut[past]].position - 1, handled(deleted), cut[past])}
    await replay(store, Wallets, ReplayFrom(position=after), kafka=source.settings(), slice=True)
    assert await rows(store) == fold([r for r in log if r.position > after])

    with pytest.raises(ProjectionError, match=rf"position {log[-1].position + 1} is beyond the end of the log"):
        await plan_replay(store, Wallets, ReplayFrom(position=log[-1].position + 1), kafka=source.settings())


async def test_a_replay_from_a_time_reads_what_kafka_deleted_from_the_store(store: EventStore,
                                                                            source: Source) -> None:
    book = Book()
    await workload(store, book, rounds=40)
    await asyncio.sleep(0.05)
    middle = datetime.now().astimezone()
    await asyncio.sleep(0.05)
    await workload(store, book, rounds=40, seed=3)
    await source.publish(store)
    parts = await layout(source, store)
    settings = source.settings()
    # What the replay from that time builds while Kafka holds everything.
    whole = await replay(store, Wallets, ReplayFrom(time=middle), kafka=settings, slice=True)
    intact_model = await rows(store)
    assert intact_model and whole.plan.fill == {}

    millis = int(middle.timestamp() * 1000)
    firsts = {c: next(i for i, r in enumerate(records) if r.timestamp >= millis) for c, records in parts.items()}
    crossing, before, _ = sorted(c for c in parts if firsts[c] >= 1 and len(parts[c]) > firsts[c] + 2)
    # One partition loses records from both sides of the time, another only older ones.
    cut = {crossing: firsts[crossing] + 2, before: firsts[before]}
    await delete_before(settings.bootstrap, cut)

    plan = await plan_replay(store, Wallets, ReplayFrom(time=middle), kafka=settings)
    kept = parts[crossing][firsts[crossing]:cut[crossing]]
    assert handled(kept), "the deleted records at or after the time hold an event the projection handles"
    assert plan.fill == {crossing: StoreFill(parts[crossing][firsts[crossing]].position - 1,
                                             parts[crossing][cut[crossing]].position - 1, handled(kept), cut[crossing])}
    assert plan.start[crossing] == cut[crossing] and plan.start[before] == cut[before]
    await replay(store, Wallets, ReplayFrom(time=middle), kafka=settings, slice=True)
    assert await rows(store) == intact_model


async def test_a_replay_from_a_time_applies_exactly_the_events_recorded_since_whatever_the_clocks(
    store: EventStore, source: Source
) -> None:
    """recorded_at does not follow position order: writers whose clocks stepped back by
    hours record earlier times at later positions (and one ran an hour ahead at the
    start). The relay publishes the events in position order, each record stamped with
    its recorded time; a replay from a time applies exactly the events recorded at or
    after it, from Kafka, and from the store where Kafka deleted records."""
    t = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    rows_in: list[dict[str, Any]] = []
    versions: dict[str, int] = {}
    for n in range(72):
        wallet = f"w-{n % 6}"
        versions[wallet] = versions.get(wallet, 0) + 1
        at = t + timedelta(seconds=n - 20)  # the time passes T at n = 20
        if n < 4:
            at = t + timedelta(hours=1, seconds=n)  # a clock an hour ahead
        elif n % 5 == 0:
            at = t - timedelta(hours=n % 3 + 1, seconds=n)  # clocks one to three hours behind
        event_type = "wallet.credited" if n % 4 else "wallet.debited"
        rows_in.append({
            "event_id": uuid.uuid4(), "stream_id": wallet, "stream_type": "wallet", "version": versions[wallet],
            "event_type": event_type, "schema_version": 1, "payload": json.dumps({"amount": 3 * n + 1}),
            "occurred_at": at, "recorded_at": at, "actor": None, "correlation_id": None, "causation_id": None,
        })

    def write(conn: Any) -> None:
        for row in rows_in:  # one statement each: positions follow the list
            conn.execute(insert(events_table), [row])

    await store.database.write(write)
    log = await store.read_log(limit=100_000)
    since = [r for r in log if r.recorded_at >= t]
    assert 0 < len(since) < len(log) and any(r.recorded_at < t for r in log if r.position > since[0].position)
    expected = fold(since)
    await source.publish(store)
    parts = await layout(source, store)
    settings = source.settings()

    plan = await plan_replay(store, Wallets, ReplayFrom(time=t), kafka=settings)
    assert plan.fill == {}
    result = await replay(store, Wallets, ReplayFrom(time=t), kafka=settings, batch_size=5, slice=True)
    assert await rows(store) == expected
    assert result.events == len(since)

    # Kafka deletes the first records of two partitions, across the time: those events
    # recorded at or after it come from the store, the others are passed over.
    recorded = {r.position: r.recorded_at for r in log}
    coords = sorted(parts)
    cut = {coords[0]: len(parts[coords[0]]) // 2, coords[1]: 3}
    await delete_before(source.broker.bootstrap, cut)
    fills = {}
    for coord, n in cut.items():
        deleted = [r for r in parts[coord][:n]]
        inside = [r for r in deleted if recorded[r.position] >= t]
        if inside:
            fills[coord] = StoreFill(inside[0].position - 1, parts[coord][n].position - 1,
                                     sum(1 for r in inside if r.event_type in HANDLED), n)
    assert fills, "a deleted range holds events recorded at or after the time"
    plan = await plan_replay(store, Wallets, ReplayFrom(time=t), kafka=settings)
    assert plan.fill == fills
    result = await replay(store, Wallets, ReplayFrom(time=t), kafka=settings, batch_size=5, slice=True)
    assert await rows(store) == expected
    assert result.events == len(since)


async def test_a_partition_kafka_emptied_is_read_from_the_store_and_its_late_records_passed_over(
    store: EventStore, source: Source
) -> None:
    """Kafka deleted every record of a partition, and the relay has not published the
    newest events yet: the replay reads the partition's events up to the store's head,
    and the replay's position floor makes the live runner pass over them when the relay
    publishes them."""
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    parts = await layout(source, store)
    emptied = sorted(parts)[1]
    wallet = parts[emptied][0].stream_id
    await delete_before(source.broker.bootstrap, {emptied: len(parts[emptied])})
    for amount in (7, 11, 13):  # the relay is behind: these are in the store only
        await append(store, book, wallet, Credited(amount=amount), Debited(amount=1))
    head = await store.head_position()

    plan = await plan_replay(store, Wallets, ReplayFrom(position=0), kafka=source.settings())
    in_store = [r for r in await store.read_log(limit=100_000) if r.stream_id in {x.stream_id for x in parts[emptied]}]
    assert plan.fill == {emptied: StoreFill(0, head, sum(1 for r in in_store if r.event_type in HANDLED),
                                            len(parts[emptied]))}
    assert plan.floors == {emptied: head}
    await replay(store, Wallets, ReplayFrom(position=0), kafka=source.settings())
    assert await rows(store) == book.balances
    assert await live_floors(store) == {emptied: head}

    before = book.handled
    await source.publish(store)  # the six late events reach the emptied partition now
    await workload(store, book, rounds=10, seed=6)
    await source.publish(store)
    assert await source.catch_up(store, source.runner(store)) == book.handled - before
    assert await rows(store) == book.balances


# -- refusals -----------------------------------------------------------------------------------


class Noticing(ProcessManager, name="wallet_notices"):
    """Sends a notice for each credit (a process manager: the notices are its commands)."""

    sent: ClassVar[list[str]] = []

    @reacts_to(Credited)
    async def _notify(self, context: ProcessContext, event: Credited, record: RecordedEvent) -> None:
        type(self).sent.append(str(record.event_id))


async def test_a_process_manager_refuses_to_replay_even_over_records_kafka_deleted(
    store: EventStore, source: Source
) -> None:
    """It was: a projection with effects refused a replay over effects that never ran. A
    replay now refuses a process manager whatever Kafka holds: it would issue its commands
    again, and the ones whose events Kafka deleted are the live runner's to reach."""
    Noticing.sent.clear()
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    live = ProjectionRunner(store, Noticing, kafka=source.settings(), config=RunnerConfig())
    await asyncio.wait_for(live.run(once=True), 60)
    at = await store.database.read(tracking.load_checkpoints, Noticing.name, LIVE)
    sent = len(Noticing.sent)
    assert sent == len({r.event_id for r in await store.read_log(limit=100_000, event_types=[Credited.event_type])})
    await workload(store, book, rounds=30, seed=2)
    await source.publish(store)
    parts = await layout(source, store)
    gap = next(c for c in sorted(parts) if len(parts[c]) >= at[c] + 2)
    await delete_before(source.broker.bootstrap, {gap: at[gap] + 1})

    refusal = (
        "'wallet_notices' is a process manager, not a projection: it has no read model to rebuild, and a replay"
        " never issues its commands again (a read model of what it did is a projection: replay that)"
    )
    with pytest.raises(ProjectionError) as info:
        await plan_replay(store, Noticing, ReplayFrom(position=0), kafka=source.settings())
    assert str(info.value) == refusal
    with pytest.raises(ProjectionError) as info:
        await replay(store, Noticing, ReplayFrom(position=0), kafka=source.settings())
    assert str(info.value) == refusal
    assert len(Noticing.sent) == sent
    assert await store.database.read(tracking.load_checkpoints, Noticing.name, LIVE) == at


async def test_a_topic_whose_partitions_changed_is_not_guessed_at(store: EventStore, source: Source) -> None:
    book = Book()
    await workload(store, book, rounds=30)
    await source.publish(store)
    parts = await layout(source, store)
    admin = AIOKafkaAdminClient(bootstrap_servers=source.broker.bootstrap)
    await admin.start()
    try:
        await admin.create_partitions({source.topic: NewPartitions(total_count=source.partitions + 1)})
    finally:
        await admin.close()
    # Delete up to a record of a stream that four partitions would put elsewhere.
    four = list(range(source.partitions + 1))
    moved = [(c, i, r) for c, records in sorted(parts.items()) for i, r in enumerate(records)
             if i > 0 and DefaultPartitioner()(r.stream_id.encode(), four, four) != c[1]]
    coord, index, record = moved[0]
    await delete_before(source.broker.bootstrap, {coord: index})

    with pytest.raises(ProjectionError) as info:
        await plan_replay(store, Wallets, ReplayFrom(position=0), kafka=source.settings())
    now = DefaultPartitioner()(record.stream_id.encode(), four, four)
    assert str(info.value) == (
        f"the first record {coord[0]}[{coord[1]}] retains (offset {index}, stream {record.stream_id}) maps to"
        f" {coord[0]}[{now}] by its key: the topic's partitions changed after it was published, so the store"
        " cannot tell which events Kafka deleted from which partition"
    )


async def test_a_first_retained_record_that_is_no_facta_event_is_named(store: EventStore, source: Source) -> None:
    """The deleted range ends at the first retained record's position: a record without
    one (not the relay's) cannot say where, and the replay refuses, naming it."""
    book = Book()
    await workload(store, book, rounds=10)
    await source.publish(store)
    coord = sorted(await layout(source, store))[0]
    producer = AIOKafkaProducer(bootstrap_servers=source.broker.bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(coord[0], b"{}", partition=coord[1], headers=[("event-type", b"x.y")])
    finally:
        await producer.stop()
    await delete_before(source.broker.bootstrap, {coord: sent.offset})
    with pytest.raises(ProjectionError) as info:
        await plan_replay(store, Wallets, ReplayFrom(position=0), kafka=source.settings())
    assert str(info.value) == (
        f"Kafka record {coord[0]}[{coord[1]}] offset {sent.offset} is not a facta event: it lacks a key or a"
        " 'position' header"
    )

