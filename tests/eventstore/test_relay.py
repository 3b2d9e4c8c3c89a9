"""The relay's contract (brief item 6), on both store backends, against a real broker.

Every committed event reaches Kafka, keyed by stream id, in stream order within its
partition, with its metadata in headers; a rolled-back append never does; the checkpoint
moves only after the broker acknowledged; a broker outage delays and never loses; a
record the broker rejects stops the relay naming the event; two relays never publish at
once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from facta.domain import DomainEvent
from facta.domain.reference import Account, Location, Ride
from facta.eventstore import ConcurrencyError, EventStore, Repository
from facta.eventstore.relay import Relay, RelayConfig, RelayError

from ..conftest import migrate
from ..polling import wait_for


class Blob(DomainEvent, name="test.blob"):
    data: str


def relay_config(broker: Any, prefix: str, **overrides: Any) -> RelayConfig:
    options: dict[str, Any] = {
        "bootstrap": broker.bootstrap,
        "topic_prefix": prefix,
        "idempotence": broker.supports_idempotence,
        "poll_interval": 0.01,
        "max_backoff": 0.5,
        "request_timeout_ms": 5000,
    }
    return RelayConfig(**(options | overrides))


async def consume_all(bootstrap: str, topics: list[str], expected: int, within: float = 30) -> list[Any]:
    """Every record on ``topics`` from the beginning, once at least ``expected`` arrived."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for messages in batch.values():
                records.extend(messages)
            if len(records) >= expected and not batch:
                break
    finally:
        await consumer.stop()
    return records


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def city(store: EventStore, rides: int = 6) -> None:
    """Accounts and rides, appended the way an application would."""
    repo = Repository(store)
    for i in range(rides):
        account = Account.open(f"acct-{i}", f"owner-{i}", "EUR")
        account.deposit(10_00)
        ride = Ride.request(f"ride-{i}", f"rider-{i}", Location(lat=1, lon=1), Location(lat=1.01, lon=1.01))
        ride.offer(["d1", "d2"])
        ride.accept("d1", eta_seconds=60)
        await repo.save(account, ride, actor="tester", correlation_id=f"corr-{i}")
        for _ in range(3):
            account.deposit(1)
            await repo.save(account)


async def test_every_committed_event_reaches_kafka_once_in_stream_order(migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        await city(store)
        with pytest.raises(ConcurrencyError):  # a rejected append: never on Kafka
            await store.append("acct-0", "account", [Blob(data="rejected")], expected_version=0)
        relay = Relay(store, relay_config(kafka_broker, prefix, partitions=3))
        published = await relay.run(once=True)
        log = await store.read_log(limit=10_000)
        # Kafka carries the payloads as stored: personal data (the owners) as ciphertext.
        stored = {str(uuid.UUID(str(row[1]))): row[7] for row in await store.read_log_rows(0, 10_000)}
        assert published == len(log) > 0
        status = await relay.status()
        assert (status.checkpoint, status.lag) == (log[-1].position, 0)

    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.account", f"{prefix}.ride"], len(log))
    assert sorted(headers_of(r)["event-id"] for r in records) == sorted(str(e.event_id) for e in log)
    by_id = {str(e.event_id): e for e in log}
    per_stream: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        h = headers_of(record)
        event = by_id[h["event-id"]]
        assert record.topic == f"{prefix}.{event.stream_type}"
        assert record.key == event.stream_id.encode()
        assert json.loads(record.value) == json.loads(stored[h["event-id"]])
        if event.event_type == "account.opened":
            assert json.loads(record.value)["owner"].startswith("pd1:") and b"owner-" not in record.value
        assert h["event-type"] == event.event_type and h["schema-version"] == str(event.schema_version)
        assert (h["stream-id"], h["stream-type"]) == (event.stream_id, event.stream_type)
        assert (h["stream-version"], h["position"]) == (str(event.version), str(event.position))
        assert h["recorded-at"] == event.recorded_at.isoformat() and h["occurred-at"] == event.occurred_at.isoformat()
        assert h.get("actor") == event.actor and h.get("correlation-id") == event.correlation_id
        assert "causation-id" not in h
        per_stream[event.stream_id].append(event.version)
        partitions[event.stream_id].add(record.partition)
    for stream, versions in per_stream.items():
        assert versions == sorted(versions), f"{stream} out of order on Kafka: {versions}"
    assert all(len(p) == 1 for p in partitions.values()), "a stream's events spread over partitions"

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([f"{prefix}.account"])
        assert len(described[0]["partitions"]) == 3
    finally:
        await admin.close()


async def test_relay_resumes_from_its_checkpoint(migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        await store.append("a", "thing", [Blob(data="1"), Blob(data="2")], expected_version=0)
        config = relay_config(kafka_broker, prefix)
        assert await Relay(store, config).run(once=True) == 2
        await store.append("a", "thing", [Blob(data="3")], expected_version=2)
        assert await Relay(store, config).run(once=True) == 1
        assert await Relay(store, config).run(once=True) == 0
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.thing"], 3)
    assert [json.loads(r.value)["data"] for r in records] == ["1", "2", "3"]


async def test_a_record_kafka_rejects_stops_the_relay_naming_it(migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        await store.append("ok", "thing", [Blob(data="small")], expected_version=0)
        huge = await store.append("big", "thing", [Blob(data="x" * 1_500_000)], expected_version=0)
        await store.append("after", "thing", [Blob(data="small")], expected_version=0)
        relay = Relay(store, relay_config(kafka_broker, prefix))
        with pytest.raises(RelayError) as info:
            await relay.run(once=True)
        message = str(info.value)
        assert f"at position {huge.positions[0]}" in message and "stream 'big'" in message
        assert "MessageSizeTooLarge" in message and "\n" not in message
        # Everything before it is published; it and what follows wait for `facta relay skip`.
        assert f"published up to position {huge.positions[0] - 1}" in message
        assert (await relay.status()).checkpoint == huge.positions[0] - 1


@pytest.mark.kafka_requires("supports_idempotence")
async def test_a_producer_session_error_starts_a_new_producer_and_loses_nothing(
    migrated_url: str, kafka_broker: Any, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker answers OUT_OF_ORDER_SEQUENCE_NUMBER (here because the producer's
    sequence numbers were moved ahead, as after a broker that lost the producer's state):
    the relay drops that producer, starts a new one and republishes from its checkpoint,
    logging one warning that names the error. It does not stop."""
    producers: list[Any] = []
    start_producer = Relay._start_producer

    async def recording(self: Relay) -> Any:
        producer = await start_producer(self)
        producers.append(producer)
        return producer

    monkeypatch.setattr(Relay, "_start_producer", recording)
    caplog.set_level(logging.WARNING, logger="facta.relay")
    async with await EventStore.open(migrated_url) as store:
        for i in range(12):
            await store.append(f"s-{i % 4}", "thing", [Blob(data=f"{i}a"), Blob(data=f"{i}b")], expected_version=None)
        relay = Relay(store, relay_config(kafka_broker, prefix, batch_size=10))
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop=stop))
        await wait_for(relay.status, lambda s: s.lag == 0 or task.done(), 60, "the relay to catch up")
        assert not task.done() and len(producers) == 1
        # The broker expects each partition's next sequence number; skip ten ahead on every
        # partition this producer wrote to, so its next batch there is out of order.
        txn = producers[0]._txn_manager
        partitions = list(txn._sequence_numbers)
        assert partitions, "the producer wrote with sequence numbers (idempotence is on)"
        for tp in partitions:
            txn.increment_sequence_number(tp, 10)
        for i in range(12, 24):
            await store.append(f"s-{i % 4}", "thing", [Blob(data=f"{i}a"), Blob(data=f"{i}b")], expected_version=None)
        await wait_for(relay.status, lambda s: s.lag == 0 or task.done(), 60, "the relay to catch up again")
        if task.done():
            raise AssertionError(f"the relay stopped: {task.exception()!r}")
        stop.set()
        assert await asyncio.wait_for(task, 30) >= 48
        log = await store.read_log(limit=10_000)
    assert len(producers) >= 2, "the relay went on with a new producer"
    warnings = [r.getMessage() for r in caplog.records if r.name == "facta.relay" and r.levelno == logging.WARNING]
    session = [w for w in warnings if "OutOfOrderSequenceNumber" in w]
    assert session and "new producer" in session[0] and "\n" not in session[0], warnings

    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.thing"], len(log))
    assert {headers_of(r)["event-id"] for r in records} == {str(e.event_id) for e in log}
    first: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        h = headers_of(record)
        if h["event-id"] not in seen:
            seen.add(h["event-id"])
            first[h["stream-id"]].append(int(h["stream-version"]))
    assert all(v == list(range(1, len(v) + 1)) for v in first.values()), dict(first)


async def test_broker_down_at_start_delays_and_loses_nothing(migrated_url: str, managed_kafka_broker: Any,
                                                             prefix: str) -> None:
    kafka_broker = managed_kafka_broker
    kafka_broker.stop()
    async with await EventStore.open(migrated_url) as store:
        await city(store, rides=2)
        relay = Relay(store, relay_config(kafka_broker, prefix))
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop=stop))
        await asyncio.sleep(1.5)
        assert (await relay.status()).checkpoint == 0, "nothing is acknowledged while the broker is down"
        assert not task.done()
        kafka_broker.restart()
        total = len(await store.read_log(limit=10_000))
        await wait_for(lambda: relay.status(), lambda s: s.lag == 0, 60, "the relay to catch up")
        stop.set()
        assert await asyncio.wait_for(task, 30) == total
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.account", f"{prefix}.ride"], total)
    assert len({headers_of(r)["event-id"] for r in records}) == total


@pytest.mark.kafka_requires("keeps_data")
async def test_broker_restart_mid_stream_loses_nothing(migrated_url: str, managed_kafka_broker: Any,
                                                       prefix: str) -> None:
    kafka_broker = managed_kafka_broker
    async with await EventStore.open(migrated_url) as store:
        relay = Relay(store, relay_config(kafka_broker, prefix, batch_size=20))
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop=stop))
        for i in range(40):
            await store.append(f"s-{i % 5}", "thing", [Blob(data=str(i))], expected_version=None)
            if i == 15:
                await wait_for(lambda: relay.status(), lambda s: s.checkpoint > 0, 30, "a first checkpoint")
                kafka_broker.stop()  # a clean stop: the broker keeps what it acknowledged
            if i == 25:
                kafka_broker.restart()
        await wait_for(lambda: relay.status(), lambda s: s.lag == 0, 60, "the relay to catch up")
        stop.set()
        await asyncio.wait_for(task, 30)
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.thing"], 40)
    assert sorted({int(json.loads(r.value)["data"]) for r in records}) == list(range(40))


async def test_two_relays_never_publish_at_once(migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        first, second = Relay(store, relay_config(kafka_broker, prefix)), Relay(store, relay_config(kafka_broker, prefix))
        stop_first, stop_second = asyncio.Event(), asyncio.Event()
        first_task = asyncio.create_task(first.run(stop=stop_first))
        await asyncio.sleep(0.3)
        second_task = asyncio.create_task(second.run(stop=stop_second))
        for i in range(10):
            await store.append(f"s-{i}", "thing", [Blob(data=str(i))], expected_version=0)
        await wait_for(lambda: first.status(), lambda s: s.lag == 0, 30, "the relay to catch up")
        stop_first.set()
        assert await asyncio.wait_for(first_task, 30) == 10
        for i in range(10, 15):
            await store.append(f"s-{i}", "thing", [Blob(data=str(i))], expected_version=0)
        await wait_for(lambda: second.status(), lambda s: s.lag == 0, 30, "the relay to catch up")
        stop_second.set()
        assert await asyncio.wait_for(second_task, 30) == 5, "the waiting relay published only after taking over"
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.thing"], 15)
    assert sorted(int(json.loads(r.value)["data"]) for r in records) == list(range(15))


async def test_bad_bootstrap_is_a_one_line_error() -> None:
    for bad in ("", "nohost", "host:port", "a:1,b"):
        with pytest.raises(RelayError, match="invalid Kafka bootstrap address") as info:
            RelayConfig(bootstrap=bad)
        assert "\n" not in str(info.value)


async def test_rolled_back_append_never_reaches_kafka_postgres(postgres_url: str, kafka_broker: Any, prefix: str) -> None:
    """An append that took positions and then rolled back (in flight while the relay
    read the log) leaves nothing on Kafka."""
    import asyncpg

    from facta.eventstore.locks import WRITER_MARKER

    await migrate(postgres_url)
    async with await EventStore.open(postgres_url) as store:
        raw = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            tx = raw.transaction()
            await tx.start()
            await raw.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *WRITER_MARKER)
            await raw.execute(
                "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
                " payload, occurred_at) VALUES ($1, 'ghost', 'thing', 1, 'test.blob', 1, '{\"data\": \"ghost\"}', now())",
                uuid.uuid4(),
            )
            await store.append("real", "thing", [Blob(data="real")], expected_version=0)
            relay_task = asyncio.create_task(Relay(store, relay_config(kafka_broker, prefix)).run(once=True))
            await asyncio.sleep(0.5)
            await tx.rollback()
            assert await asyncio.wait_for(relay_task, 30) == 1
        finally:
            await raw.close()
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.thing"], 1, within=5)
    assert [json.loads(r.value)["data"] for r in records] == ["real"]

