"""The relay under broker faults on Apache Kafka itself (issue 9).

Each fault test runs a real `facta relay run` process while a writer appends to a dozen
streams (one to four events per append), breaks the brokers under it, and then checks,
by event id, what reached Kafka:

- every committed event is on the topic (``lost``) and nothing else is (``phantom``);
- within its partition, each stream's first occurrences come in version order
  (``out_of_order``), and a stream never spreads over partitions (``split_streams``);
- the relay never stopped: it is alive at the end, exits 0 on SIGTERM, and its stderr
  has no "stopped" (the relay's fatal error says "relay ... stopped").

Duplicates are counted, not bounded: delivery is at least once, and each time the relay
drops its producer it republishes from its checkpoint. ``duplicates_per_fault``
attributes each repeated event to the last fault that began at or before its position
(by the relay's checkpoint when the fault began). Each test prints one line,
``FAULT-SUMMARY {...}`` (run pytest with ``-s`` to see it).

The faults:

a. the node leading the busiest partition is SIGKILLed and restarted, three times, on a
   3-node cluster (replication factor 3, min.insync.replicas 2);
b. the whole 3-node cluster goes down (SIGKILL, then SIGTERM) for four times the relay's
   request timeout, which is also how long aiokafka keeps a batch whose partition has
   no leader: the relay waits and resumes;
c. a single-node broker is stopped with SIGTERM and restarted five times (where a
   stand-in broker once made the relay stop with OutOfOrderSequenceNumber).

And on the 3-node cluster, the relay's topics get the cluster's replication factor (3)
unless one is given.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from facta.domain import DomainEvent
from facta.eventstore import EventStore
from facta.eventstore.relay import Relay, RelayConfig, RelayError, RelayStatus

from ..conftest import migrate
from ..polling import wait_for

BATCH = 50
STREAMS = 12
REQUEST_TIMEOUT = 5.0  # seconds: the relay's --kafka-request-timeout
LEADER_KILLS = 3
CLUSTER_OUTAGES = 2
OUTAGE_SECONDS = 4 * REQUEST_TIMEOUT
BROKER_RESTARTS = 5
PATIENCE = 300.0  # seconds to wait for anything that must happen; generous, the machine is shared

pytestmark = pytest.mark.slow


class Tick(DomainEvent, name="test.tick"):
    n: int


# -- the pieces ---------------------------------------------------------------------------


def relay_command(url: str, bootstrap: str, prefix: str, *extra: str) -> list[str]:
    facta = shutil.which("facta")
    base = [facta] if facta else [sys.executable, "-m", "facta.replay.cli"]
    return [*base, "relay", "run", "--database-url", url, "--kafka-bootstrap", bootstrap, "--topic-prefix", prefix,
            "--batch-size", str(BATCH), "--kafka-request-timeout", str(REQUEST_TIMEOUT), *extra]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("FACTA_DATABASE_URL", "FACTA_KAFKA_BOOTSTRAP")}


@dataclass
class Run:
    """One fault test's relay process, writer and fault log."""

    store: EventStore
    url: str
    bootstrap: str
    prefix: str
    stderr_path: Path
    test: str
    backend: str
    rng: random.Random = field(default_factory=lambda: random.Random(9))
    fault_checkpoints: list[int] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # what each fault was, for the summary
    process: asyncio.subprocess.Process | None = None
    started: float = field(default_factory=time.monotonic)
    _stop_writing: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.Task[int] | None = None

    @property
    def topic(self) -> str:
        return f"{self.prefix}.tick"

    async def status(self) -> RelayStatus:
        return await Relay(self.store, RelayConfig(bootstrap=self.bootstrap, topic_prefix=self.prefix)).status()

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write())
        with self.stderr_path.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *relay_command(self.url, self.bootstrap, self.prefix), env=clean_env(),
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        await self.publishing("the relay's first checkpoint")

    async def _write(self) -> int:
        """Appends of one to four events to a dozen streams, until told to stop."""
        appends = 0
        while not self._stop_writing.is_set():
            count = self.rng.randint(1, 4)
            await self.store.append(f"s-{appends % STREAMS}", "tick", [Tick(n=appends * 10 + i) for i in range(count)],
                                    expected_version=None)
            appends += 1
            await asyncio.sleep(0.02)
        return appends

    def alive(self) -> None:
        assert self.process is not None
        assert self.process.returncode is None, f"the relay exited ({self.process.returncode}): {self.stderr_tail()}"

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def publishing(self, what: str) -> None:
        """Wait until the relay publishes what was committed by now (and is still alive)."""
        head = max(await self.store.head_position(), 1)  # at the start: the first event

        async def probe() -> RelayStatus:
            self.alive()
            return await self.status()

        await wait_for(probe, lambda status: status.checkpoint >= head, PATIENCE, what)

    async def fault_begins(self, what: str) -> None:
        self.alive()
        self.fault_checkpoints.append((await self.status()).checkpoint)
        self.faults.append(what)

    async def finish(self) -> int:
        """Stop the writer, let the relay catch up, SIGTERM it; its exit code."""
        assert self.process is not None and self._writer is not None
        self._stop_writing.set()
        await self._writer

        async def probe() -> RelayStatus:
            self.alive()
            return await self.status()

        await wait_for(probe, lambda status: status.lag == 0, PATIENCE, "the relay to catch up")
        self.alive()
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 120)

    async def abort(self) -> None:
        self._stop_writing.set()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def check(self) -> dict[str, Any]:
        """What reached Kafka, by event id; prints the FAULT-SUMMARY line and returns it."""
        log = [event async for event in self.store.iter_log()]
        committed = {str(event.event_id): event for event in log}
        records = await read_topic(self.bootstrap, self.topic)
        seen_ids = [headers_of(record)["event-id"] for record in records]
        unique = set(seen_ids)
        first: set[str] = set()
        last_version: dict[str, int] = {}
        partitions: dict[str, set[int]] = defaultdict(set)
        out_of_order = 0
        cuts = sorted(self.fault_checkpoints)
        duplicates_per_fault = [0] * len(cuts)
        for record in records:  # per partition, in offset order
            h = headers_of(record)
            partitions[h["stream-id"]].add(record.partition)
            if h["event-id"] in first:
                position = int(h["position"])
                index = max([i for i, cut in enumerate(cuts) if cut <= position] or [0])
                if duplicates_per_fault:
                    duplicates_per_fault[index] += 1
                continue
            first.add(h["event-id"])
            version = int(h["stream-version"])
            if version != last_version.get(h["stream-id"], 0) + 1:
                out_of_order += 1
            last_version[h["stream-id"]] = version
        stderr = self.stderr_path.read_text(errors="replace")
        summary = {
            "test": self.test,
            "backend": self.backend,
            "kills": len(self.fault_checkpoints),
            "events": len(log),
            "lost": len(committed.keys() - unique),
            "phantom": len(unique - committed.keys()),
            "out_of_order": out_of_order,
            "split_streams": sum(len(p) > 1 for p in partitions.values()),
            "duplicates": len(seen_ids) - len(unique),
            "duplicates_per_fault": duplicates_per_fault,
            "relay_retries": stderr.count("unavailable ("),
            "relay_new_sessions": stderr.count("producer session error"),
            "faults": self.faults,
            "seconds": round(time.monotonic() - self.started),
        }
        print(f"FAULT-SUMMARY {json.dumps(summary)}", flush=True)
        return summary


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    return sorted(int(p["partition"]) for p in await describe(bootstrap, topic))


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic``, partition by partition in offset order, up to the end
    offsets as they are now (so nothing is missed however slow the fetches are)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", request_timeout_ms=60_000)
    await consumer.start()
    try:
        partitions = await partitions_of(bootstrap, topic)
        assert partitions, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        by_partition: dict[int, list[Any]] = {p: [] for p in partitions}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            assert loop.time() < deadline, f"reading {topic} did not reach its end offsets {ends}"
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                by_partition[tp.partition].extend(m for m in messages if m.offset < ends[tp])
    finally:
        await consumer.stop()
    return [record for p in partitions for record in by_partition[p]]


async def describe(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The topic's partitions: ``partition``, ``leader``, ``replicas``, ``isr``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    (entry,) = [e for e in described if e["topic"] == topic]
    assert not entry["error_code"], f"describing {topic}: Kafka error code {entry['error_code']}"
    return list(entry["partitions"])


async def healthy(bootstrap: str, topic: str, replicas: int) -> None:
    """Wait until every partition has a leader and all ``replicas`` in sync again."""

    async def probe() -> list[dict[str, Any]]:
        try:
            return await describe(bootstrap, topic)
        except Exception as exc:  # a node still starting: ask again
            return [{"error": repr(exc)}]

    await wait_for(probe, lambda parts: all(p.get("leader", -1) >= 0 and len(p.get("isr", ())) == replicas
                                            for p in parts),
                   PATIENCE, f"{topic}'s partitions to have a leader and {replicas} in-sync replicas")


async def busiest_partition(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, request_timeout_ms=30_000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return max(tps, key=lambda tp: ends[tp]).partition


def backend_of(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


async def run_faults(run: Run, faults: Any) -> dict[str, Any]:
    """Start the relay and the writer, apply ``faults(run)``, finish, check."""
    async with run.store:
        try:
            await run.start()
            await faults(run)
            code = await run.finish()
        finally:
            await run.abort()
        stderr = run.stderr_path.read_text(errors="replace")
        assert code == 0, f"the relay exited with {code} on SIGTERM: {run.stderr_tail()}"
        assert "stopped" not in stderr and "facta: error" not in stderr, run.stderr_tail(20)
        summary = await run.check()
    assert summary["lost"] == 0, summary
    assert summary["phantom"] == 0, summary
    assert summary["out_of_order"] == 0, summary
    assert summary["split_streams"] == 0, summary
    return summary


# -- the tests ----------------------------------------------------------------------------


async def test_killing_the_busiest_partitions_leader_never_stops_the_relay(
    migrated_url: str, kafka_cluster: Any, tmp_path: Path, prefix: str
) -> None:
    cluster = kafka_cluster

    async def faults(run: Run) -> None:
        replicas = {len(p["replicas"]) for p in await describe(cluster.bootstrap, run.topic)}
        assert replicas == {3}, "the relay's topic has the cluster's replication factor"
        for _ in range(LEADER_KILLS):
            await healthy(cluster.bootstrap, run.topic, 3)
            await run.publishing("the relay to publish before the next kill")
            partition = await busiest_partition(cluster.bootstrap, run.topic)
            leader = {p["partition"]: p["leader"] for p in await describe(cluster.bootstrap, run.topic)}[partition]
            node = cluster.node(leader)
            await run.fault_begins(f"SIGKILL node {leader} (leader of partition {partition})")
            await asyncio.to_thread(node.kill)
            # Two replicas are left, as many as min.insync.replicas: publishing goes on
            # through a new leader while the node is down.
            await run.publishing(f"the relay to publish with node {leader} (leader of partition {partition}) dead")
            await asyncio.to_thread(node.start)
        await healthy(cluster.bootstrap, run.topic, 3)

    await run_faults(Run(await EventStore.open(migrated_url), migrated_url, cluster.bootstrap, prefix,
                         tmp_path / "relay.stderr", "leader_kills", backend_of(migrated_url)), faults)


async def test_a_whole_cluster_outage_longer_than_the_delivery_timeout_loses_nothing(
    migrated_url: str, kafka_cluster: Any, tmp_path: Path, prefix: str
) -> None:
    cluster = kafka_cluster

    async def faults(run: Run) -> None:
        for outage in range(CLUSTER_OUTAGES):
            await healthy(cluster.bootstrap, run.topic, 3)
            await run.publishing("the relay to publish before the outage")
            # First a power cut (SIGKILL), then a clean shutdown (SIGTERM) of every node.
            await run.fault_begins(f"{'SIGKILL' if outage % 2 == 0 else 'SIGTERM'} all nodes, {OUTAGE_SECONDS:g} s")
            await asyncio.to_thread(cluster.kill if outage % 2 == 0 else cluster.stop)
            await asyncio.sleep(OUTAGE_SECONDS)  # the writer goes on appending meanwhile
            run.alive()
            await asyncio.to_thread(cluster.start)
            await run.publishing("the relay to resume after the outage")
        await healthy(cluster.bootstrap, run.topic, 3)

    await run_faults(Run(await EventStore.open(migrated_url), migrated_url, cluster.bootstrap, prefix,
                         tmp_path / "relay.stderr", "cluster_outage", backend_of(migrated_url)), faults)


async def test_a_single_broker_stopped_and_restarted_five_times_never_stops_the_relay(
    migrated_url: str, managed_kafka_broker: Any, tmp_path: Path, prefix: str
) -> None:
    broker = managed_kafka_broker

    async def faults(run: Run) -> None:
        for _ in range(BROKER_RESTARTS):
            await run.publishing("the relay to publish before the broker stops")
            # Down for up to twice the request timeout: some batches wait out their
            # delivery timeout, some do not.
            down = run.rng.uniform(0.5, 2 * REQUEST_TIMEOUT)
            await run.fault_begins(f"SIGTERM, {down:.1f} s")
            await asyncio.to_thread(broker.stop)  # SIGTERM: Kafka's controlled shutdown
            await asyncio.sleep(down)
            run.alive()
            await asyncio.to_thread(broker.start)
            await run.publishing("the relay to publish after the broker restarted")

    await run_faults(Run(await EventStore.open(migrated_url), migrated_url, broker.bootstrap, prefix,
                         tmp_path / "relay.stderr", "single_broker_restarts", backend_of(migrated_url)), faults)


async def test_the_relays_topics_get_the_clusters_replication_factor_unless_given(
    sqlite_url: str, kafka_cluster: Any, prefix: str
) -> None:
    cluster = kafka_cluster
    await migrate(sqlite_url)
    async with await EventStore.open(sqlite_url) as store:
        await store.append("s-1", "tick", [Tick(n=1), Tick(n=2)], expected_version=0)
    for extra, name, factor in (((), "default", 3), (("--replication-factor", "2"), "two", 2)):
        result = await asyncio.create_subprocess_exec(
            *relay_command(sqlite_url, cluster.bootstrap, f"{prefix}-{name}", "--once", "--name", name, *extra),
            env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(result.communicate(), PATIENCE)
        assert result.returncode == 0, stderr.decode()[-2000:]
        partitions = await describe(cluster.bootstrap, f"{prefix}-{name}.tick")
        assert len(partitions) == 3 and all(len(p["replicas"]) == factor for p in partitions), partitions

    async with await EventStore.open(sqlite_url) as store:
        relay = Relay(store, RelayConfig(bootstrap=cluster.bootstrap, topic_prefix=f"{prefix}-five", name="five",
                                         replication_factor=5))
        with pytest.raises(RelayError) as info:
            await relay.run(once=True, give_up_after=60)
    message = str(info.value)
    assert f"topic '{prefix}-five.tick'" in message and "replication factor 5" in message, message
    assert "InvalidReplicationFactor" in message and "\n" not in message, message
