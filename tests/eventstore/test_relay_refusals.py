"""Events the relay cannot publish, and the Kafka timeout (issue 10, items 11 and 23), on
both store backends, against a real broker.

- An event whose topic is not a legal Kafka name (a stream type with a space or a 'ü', a
  topic over 249 characters, two topics that differ only in '.' versus '_') stops the
  relay before it, in one line naming the event and the topic, after publishing every
  event before it.
- So does a record Kafka refuses (over the producer's or the topic's size limit).
- `facta relay skip --position P` records, explicitly, a way past one such event; the
  relay then publishes everything after it, and `facta relay status` lists the skip.
- Topic prefixes and stream types are checked where they are given.
- `--kafka-timeout` is honoured: the relay gives up after it, in one line naming it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from facta.domain import Aggregate, DomainEvent, EventRegistryError
from facta.eventstore import EventStore
from facta.eventstore.relay import RecordRefused, Relay, RelayConfig, RelayError, check_topic_prefix

from ..cli.test_cli import facta, one_line_error
from .test_relay import consume_all, headers_of


class Note(DomainEvent, name="test.refusal_note"):
    text: str


def config(broker: Any, prefix: str, **overrides: Any) -> RelayConfig:
    options: dict[str, Any] = {
        "bootstrap": broker.bootstrap, "topic_prefix": prefix, "idempotence": broker.supports_idempotence,
        "poll_interval": 0.01, "max_backoff": 0.5, "request_timeout_ms": 5000,
    }
    return RelayConfig(**(options | overrides))


async def append(store: EventStore, stream_type: str, text: str) -> int:
    """One event in a stream of its own; its position."""
    stream = f"{stream_type[:20]}-{text[:8]}-{await store.head_position()}"
    return (await store.append(stream, stream_type, [Note(text=text)], expected_version=0)).positions[0]


def texts(records: list[Any]) -> list[str]:
    return sorted(json.loads(r.value)["text"][:20] for r in records)


# -- topic names -------------------------------------------------------------------------


@pytest.mark.parametrize(("stream_type", "shown"), [
    ("shopping cart", "holds ' '"),
    ("kunde_ü", "holds 'ü'"),
])
async def test_an_event_whose_topic_is_not_a_kafka_name_stops_the_relay_after_publishing_those_before_it(
    migrated_url: str, kafka_broker: Any, prefix: str, stream_type: str, shown: str
) -> None:
    async with await EventStore.open(migrated_url) as store:
        before = [await append(store, "good", f"before-{i}") for i in range(3)]
        bad = await append(store, stream_type, "bad")
        after = [await append(store, "good", f"after-{i}") for i in range(2)]
        relay = Relay(store, config(kafka_broker, prefix))
        with pytest.raises(RecordRefused) as info:
            await relay.run(once=True, give_up_after=30)
        message = str(info.value)
        assert "\n" not in message
        assert f"at position {bad} " in message and f"stream type {stream_type!r}" in message, message
        assert f"its topic '{prefix}.{stream_type}' {shown}" in message, message
        assert f"facta relay skip --position {bad} " in message, message
        assert (info.value.position, info.value.checkpoint) == (bad, bad - 1)
        assert (await relay.status()).checkpoint == bad - 1  # everything before it is published
        assert texts(await consume_all(kafka_broker.bootstrap, [f"{prefix}.good"], 3)) == [
            f"before-{i}" for i in range(3)]
        assert before[-1] == bad - 1

        # The same again until someone decides: never automatic.
        with pytest.raises(RecordRefused):
            await relay.run(once=True, give_up_after=30)
        skip, new = await relay.skip(bad, "cannot be a topic", "tester")
        assert new and (skip.position, skip.event_type, skip.skipped_by, skip.passed_at) == (
            bad, "test.refusal_note", "tester", None)
        assert await relay.run(once=True, give_up_after=30) == len(after)
        status = await relay.status()
        assert (status.checkpoint, status.lag) == (after[-1], 0)
        assert [(s.position, s.reason) for s in status.skips] == [(bad, "cannot be a topic")]
        assert status.skips[0].passed_at is not None
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.good"], 5)
    assert texts(records) == [*(f"after-{i}" for i in range(2)), *(f"before-{i}" for i in range(3))]
    assert str(bad) not in {headers_of(r)["position"] for r in records}


async def test_a_topic_over_249_characters_stops_the_relay_naming_it(
    migrated_url: str, kafka_broker: Any, prefix: str
) -> None:
    long_prefix = (prefix + "x" * 247)[:200]
    async with await EventStore.open(migrated_url) as store:
        await append(store, "ok", "fine")
        bad = await append(store, "y" * 60, "long")
        relay = Relay(store, config(kafka_broker, long_prefix))
        with pytest.raises(RecordRefused) as info:
            await relay.run(once=True, give_up_after=30)
        topic = f"{long_prefix}.{'y' * 60}"
        assert f"its topic {topic!r} is 261 characters long (at most 249)" in str(info.value)
        assert (info.value.position, (await relay.status()).checkpoint) == (bad, bad - 1)


async def test_topics_that_differ_only_in_dot_versus_underscore_stop_the_relay_at_the_second(
    migrated_url: str, kafka_broker: Any, prefix: str
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:  # a topic made by someone else: Kafka refuses to create one that collides with it
        await admin.create_topics([NewTopic(f"{prefix}.made_by_hand", 1, 1)])
    finally:
        await admin.close()
    async with await EventStore.open(migrated_url) as store:
        first = await append(store, "a_b", "first")
        second = await append(store, "a.b", "second")
        third = await append(store, "made.by_hand", "third")
        relay = Relay(store, config(kafka_broker, prefix))
        with pytest.raises(RecordRefused) as info:  # the relay's own check
            await relay.run(once=True, give_up_after=30)
        assert info.value.position == second and (await relay.status()).checkpoint == first
        assert f"its topic '{prefix}.a.b' collides with topic '{prefix}.a_b'" in str(info.value)
        await relay.skip(second, "collides", None)
        with pytest.raises(RecordRefused) as info:  # Kafka's own check, against a topic it has
            await relay.run(once=True, give_up_after=30)
        assert info.value.position == third and (await relay.status()).checkpoint == third - 1
        message = str(info.value)
        assert f"its topic '{prefix}.made.by_hand' was refused by Kafka: InvalidTopic" in message, message
        assert "collides" in message and "\n" not in message


def test_topic_prefixes_are_checked_when_given(tmp_path: Any) -> None:
    for bad, shown in (("", "is empty"), ("my prefix", "holds ' '"), ("ü", "holds 'ü'"),
                       ("p" * 248, "is 248 characters long")):
        with pytest.raises(RelayError) as info:
            RelayConfig(bootstrap="127.0.0.1:9092", topic_prefix=bad)
        assert f"invalid topic prefix {bad!r}: it {shown}" in str(info.value) and "\n" not in str(info.value)
        # Every command that forms the relay's topic names from a prefix.
        for command in (["relay", "run", "--once"], ["projections", "list"], ["projections", "run", "billing"],
                        ["replay", "billing", "--from-position", "0"]):
            result = facta(*command, "--kafka-bootstrap", "127.0.0.1:1", "--topic-prefix", bad,
                           "--database-url", f"sqlite:///{tmp_path / 'never.db'}")
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1, (command, result.stderr)
            assert "Invalid value for '--topic-prefix'" in lines[0] and shown in lines[0], lines[0]
    assert not (tmp_path / "never.db").exists()  # refused before any I/O
    assert check_topic_prefix("p" * 247) == "p" * 247


def test_a_stream_type_that_cannot_name_a_topic_is_refused_when_declared() -> None:
    for bad, shown in (("shopping cart", "holds ' '"), ("kunde_ü", "holds 'ü'"), ("", "is empty")):
        with pytest.raises(EventRegistryError) as info:
            class Cart(Aggregate, stream_type=bad):
                pass
        assert str(info.value) == (f"aggregate test_a_stream_type_that_cannot_name_a_topic_is_refused_when_declared."
                                   f"<locals>.Cart: stream type {bad!r} {shown}"
                                   + ("" if bad == "" else ": a Kafka topic name may hold only ASCII letters, digits,"
                                      " '.', '_' and '-'"))

    class Fine(Aggregate, stream_type="shopping_cart-2.x"):
        pass

    assert Fine.stream_type == "shopping_cart-2.x"


# -- records Kafka refuses, and skips ------------------------------------------------------


async def test_a_record_over_the_producer_limit_stops_the_relay_until_skipped(
    migrated_url: str, kafka_broker: Any, prefix: str
) -> None:
    async with await EventStore.open(migrated_url) as store:
        for i in range(3):
            await append(store, "thing", f"before-{i}")
        huge = (await store.append("huge", "thing", [Note(text="h" * 5_000_000)], expected_version=0)).positions[0]
        for i in range(4):
            await append(store, "thing", f"after-{i}")
        relay = Relay(store, config(kafka_broker, prefix))
        with pytest.raises(RecordRefused) as info:
            await relay.run(once=True, give_up_after=30)
        message = str(info.value)
        assert f"stopped before event {info.value.event_id} at position {huge} " in message
        assert "stream 'huge'" in message and "MessageSizeTooLarge" in message and "\n" not in message
        assert f"published up to position {huge - 1}; to publish past it: facta relay skip --position {huge} " \
               "--reason TEXT" in message, message
        assert (await relay.status()).checkpoint == huge - 1
        assert (await relay.status()).skips == ()
        _, new = await relay.skip(huge, "5 MB, over the broker's limit", "ops")
        assert new
        assert await relay.run(once=True, give_up_after=30) == 4
        status = await relay.status()
        assert (status.checkpoint, status.lag) == (huge + 4, 0)
        (listed,) = status.skips
        assert (listed.position, listed.event_id, listed.reason, listed.skipped_by) == (
            huge, info.value.event_id, "5 MB, over the broker's limit", "ops")
        assert listed.passed_at is not None and listed.skipped_at <= listed.passed_at
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.thing"], 7)
    assert texts(records) == sorted([*(f"after-{i}" for i in range(4)), *(f"before-{i}" for i in range(3))])


async def test_a_record_the_topic_refuses_stops_the_relay_with_the_checkpoint_just_before_it(
    migrated_url: str, kafka_broker: Any, prefix: str
) -> None:
    """Refused by the broker (the topic's max.message.bytes), in the acknowledgement."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}.small", 1, 1, topic_configs={"max.message.bytes": "300000"})])
    finally:
        await admin.close()
    async with await EventStore.open(migrated_url) as store:
        for i in range(3):
            await append(store, "small", f"before-{i}")
        big = (await store.append("big", "small", [Note(text="b" * 400_000)], expected_version=0)).positions[0]
        await append(store, "small", "after")
        relay = Relay(store, config(kafka_broker, prefix))
        with pytest.raises(RecordRefused) as info:
            await relay.run(once=True, give_up_after=30)
        assert info.value.position == big and "Kafka rejected its record" in str(info.value), str(info.value)
        assert "TooLarge" in str(info.value) and (await relay.status()).checkpoint == big - 1
        await relay.skip(big, "over the topic's max.message.bytes")
        assert await relay.run(once=True, give_up_after=30) == 1
    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.small"], 4)
    assert texts(records) == ["after", "before-0", "before-1", "before-2"]


async def test_skip_refuses_what_it_cannot_mean_in_one_line(migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        for i in range(3):
            await append(store, "thing", f"{i}")
        relay = Relay(store, config(kafka_broker, prefix))
        assert await relay.run(once=True, give_up_after=30) == 3
        later = [await append(store, "thing", f"later-{i}") for i in range(2)]
        cases = [
            (2, "relay 'default' has published position 2 already (its checkpoint is 3): only an event after the"
                " checkpoint can be skipped"),
            (99, f"no event at position 99 (the log's head is {later[-1]}): nothing to skip"),
            (0, f"invalid position 0: expected an integer from 1 to {2**63 - 1}"),
            (2**63, f"invalid position {2**63}: expected an integer from 1 to {2**63 - 1}"),
        ]
        for position, expected in cases:
            with pytest.raises(RelayError) as info:
                await relay.skip(position, "why")
            assert str(info.value) == expected
        with pytest.raises(RelayError, match="no relay named 'typo' has run on this store"):
            await Relay(store, RelayConfig(bootstrap="unused:9092", name="typo")).skip(later[0], "why")
        with pytest.raises(RelayError, match="invalid reason ''"):
            await relay.skip(later[0], "")
        first, new = await relay.skip(later[0], "first reason", "a")
        again, new_again = await relay.skip(later[0], "second reason", "b")
        assert (new, new_again) == (True, False) and again == first  # a second skip changes nothing
        assert await relay.run(once=True, give_up_after=30) == 1
        assert [s.position for s in (await relay.status()).skips] == [later[0]]


async def test_cli_skip_and_status(migrated_url: str, kafka_broker: Any, prefix: str) -> None:
    url = migrated_url
    async with await EventStore.open(migrated_url) as store:
        await append(store, "thing", "ok")
        huge = (await store.append("huge", "thing", [Note(text="h" * 2_000_000)], expected_version=0)).positions[0]
        await append(store, "thing", "after")
    kafka = ["--kafka-bootstrap", kafka_broker.bootstrap, "--topic-prefix", prefix, "--name", "feed",
             *([] if kafka_broker.supports_idempotence else ["--no-idempotence"])]
    run = await asyncio.to_thread(facta, "relay", "run", "--once", "--database-url", url, *kafka)
    one_line_error(run, "relay 'feed' stopped before event", f"at position {huge} ",
                   f"facta relay skip --position {huge} --name feed --reason TEXT")
    one_line_error(await asyncio.to_thread(facta, "relay", "status", "--name", "fede", "--database-url", url),
                   "no relay named 'fede' has run on this store (relays: 'feed')")
    one_line_error(await asyncio.to_thread(facta, "relay", "skip", "--position", str(huge), "--name", "fede",
                                           "--database-url", url),
                   "no relay named 'fede' has run on this store (relays: 'feed')")
    for bad in ("0", str(2**63), "x"):
        result = await asyncio.to_thread(facta, "relay", "skip", "--position", bad, "--name", "feed",
                                         "--database-url", url)
        assert result.returncode == 2 and "--position" in result.stderr and len(result.stderr.splitlines()) == 1
    skipped = await asyncio.to_thread(facta, "relay", "skip", "--position", str(huge), "--name", "feed",
                                      "--reason", "2 MB", "--actor", "ops", "--json", "--database-url", url)
    assert skipped.returncode == 0, skipped.stderr
    recorded = json.loads(skipped.stdout)
    assert (recorded["relay"], recorded["position"], recorded["reason"], recorded["skipped_by"], recorded["new"],
            recorded["passed_at"]) == ("feed", huge, "2 MB", "ops", True, None)
    run = await asyncio.to_thread(facta, "relay", "run", "--once", "--json", "--database-url", url, *kafka)
    assert run.returncode == 0 and json.loads(run.stdout) == {"name": "feed", "published": 1}, run.stderr
    status = await asyncio.to_thread(facta, "relay", "status", "--name", "feed", "--json", "--database-url", url)
    shown = json.loads(status.stdout)
    assert (shown["checkpoint"], shown["lag"]) == (huge + 1, 0)
    assert [(s["position"], s["reason"], s["skipped_by"]) for s in shown["skips"]] == [(huge, "2 MB", "ops")]
    assert shown["skips"][0]["passed_at"] is not None
    text = await asyncio.to_thread(facta, "relay", "status", "--name", "feed", "--database-url", url)
    assert f"skip position {huge} (test.refusal_note event {recorded['event_id']})" in text.stdout
    assert "by ops: 2 MB; passed over at " in text.stdout


# -- the Kafka timeout ----------------------------------------------------------------------


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """An address that accepts connections and never answers (a hung broker)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_kafka_timeout_is_honoured_with_one_line_naming_it(tmp_path: Any, silent_listener: str, kind: str) -> None:
    """The relay gives up once Kafka left it without an answer for --kafka-timeout seconds:
    a connection refused at once, or a listener that never answers (it took three times the
    timeout: each request waited the request timeout, and the clock started only at the
    first failure)."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert facta("db", "upgrade", "--database-url", url).returncode == 0
    address = "127.0.0.1:1" if kind == "refused" else silent_listener
    result = facta("relay", "run", "--once", "--database-url", url, "--kafka-bootstrap", address,
                   "--kafka-timeout", "3", "--kafka-request-timeout", "15")
    one_line_error(result, f"cannot reach Kafka at {address}: gave up after the Kafka timeout of 3 s",
                   "Unable to bootstrap" if kind == "refused" else "Kafka did not answer")


async def test_a_hung_broker_makes_the_relay_give_up_after_the_timeout_and_lose_nothing(
    migrated_url: str, managed_kafka_broker: Any, prefix: str
) -> None:
    """A broker that stops answering mid-run (SIGSTOP) makes --once give up after the
    Kafka timeout; once it answers again, a new run publishes everything."""
    broker = managed_kafka_broker
    if broker.pid is None:
        pytest.skip("needs a broker process of the test's own")
    async with await EventStore.open(migrated_url) as store:
        for i in range(3):
            await append(store, "thing", f"first-{i}")
        relay = Relay(store, config(broker, prefix, request_timeout_ms=30_000))
        assert await relay.run(once=True, give_up_after=30) == 3
        for i in range(3):
            await append(store, "thing", f"second-{i}")
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RelayError) as info:
                await relay.run(once=True, give_up_after=3)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        assert f"cannot reach Kafka at {broker.bootstrap}: gave up after the Kafka timeout of 3 s" in str(info.value)
        assert "\n" not in str(info.value)
        assert (await relay.status()).checkpoint == 3
        assert await relay.run(once=True, give_up_after=60) == 3
    records = await consume_all(broker.bootstrap, [f"{prefix}.thing"], 6)
    assert sorted(set(texts(records))) == sorted([*(f"first-{i}" for i in range(3)), *(f"second-{i}" for i in range(3))])
