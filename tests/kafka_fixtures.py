"""Kafka fixtures for the whole suite, chosen by ``FACTA_TEST_KAFKA`` (a plugin that
tests/conftest.py loads, so every folder shares one session broker).

- ``apache`` (the default): Apache Kafka itself (``facta.dev.devbroker``, fetched from
  Maven Central once). ``kafka_broker`` is one single-node broker shared by the whole
  session (a JVM takes seconds to start; every test uses topic names and consumer groups
  of its own); ``managed_kafka_broker`` is a fresh node of the test's own, to stop, kill
  and restart; ``kafka_cluster`` a fresh 3-node KRaft cluster (replication factor 3,
  ``min.insync.replicas`` 2) for fault tests.
- ``noida``, ``tansu``: the PyPI stand-ins, a fresh one per test (they start in
  milliseconds). They prove nothing about Kafka; they are for quick runs.
- ``host:port[,host:port...]``: a real Kafka cluster. No process is started; tests that
  kill or restart a broker skip, and every test uses its own topic names.

A test that needs a capability some brokers lack says so, and then skips on those
brokers with the reason::

    @pytest.mark.kafka_requires("supports_transactions")
    async def test_...(kafka_bootstrap: str) -> None: ...

or calls ``require(kafka_broker, "supports_idempotence")`` inside the test.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from facta.dev.devbroker import (
    BROKER_KINDS,
    CAPABILITIES,
    Broker,
    BrokerCluster,
    Capabilities,
    CapabilityFlags,
    start_broker,
    start_cluster,
    wait_for_kafka,
)

KAFKA = os.environ.get("FACTA_TEST_KAFKA", "").strip() or "apache"
CAPABILITY_NAMES = tuple(f.name for f in fields(Capabilities))
DESCRIPTIONS = {
    "supports_idempotence": "an idempotent producer",
    "supports_transactions": "transactions",
    "reliable_end_offsets": "reliable end offsets",
    "keeps_data": "storage that survives a restart",
}


@dataclass(frozen=True)
class ExternalKafka(CapabilityFlags):
    """A cluster we did not start (FACTA_TEST_KAFKA=host:port): same attributes as a Broker, no process."""

    bootstrap: str
    kind: str = "kafka"
    pid: None = None
    capabilities: Capabilities = CAPABILITIES["kafka"]

    @property
    def can_restart(self) -> bool:
        return False


@dataclass(frozen=True)
class SharedKafka(CapabilityFlags):
    """The session's Apache Kafka broker, lent to one test: same attributes as a Broker,
    but not the test's to stop or restart (``managed_kafka_broker`` is)."""

    broker: Broker

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def kind(self) -> str:
        return self.broker.kind

    @property
    def pid(self) -> int | None:
        return self.broker.pid

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return self.broker.capabilities

    @property
    def can_restart(self) -> bool:
        return False


KafkaTarget = Broker | ExternalKafka | SharedKafka


def external() -> bool:
    return KAFKA not in BROKER_KINDS


def require(broker: KafkaTarget, *capabilities: str) -> None:
    """Skip the test, naming the broker and what it lacks, unless it has every capability."""
    _skip_unless(broker.kind, broker.capabilities, capabilities)


def _skip_unless(kind: str, have: Capabilities, names: tuple[str, ...]) -> None:
    unknown = [name for name in names if name not in CAPABILITY_NAMES]
    if unknown:
        raise ValueError(f"unknown broker capability {unknown}: choose from {', '.join(CAPABILITY_NAMES)}")
    missing = [name for name in names if not getattr(have, name)]
    if missing:
        lacks = " and ".join(DESCRIPTIONS[name] for name in missing)
        pytest.skip(f"the {kind} test broker lacks {lacks} (FACTA_TEST_KAFKA={KAFKA})")


def pytest_configure(config: pytest.Config) -> None:
    if not external() or "," in KAFKA or ":" in KAFKA:
        return
    raise pytest.UsageError(f"FACTA_TEST_KAFKA={KAFKA!r}: use apache, noida, tansu or a host:port bootstrap address")


@pytest.fixture(scope="session")
def _session_apache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One Apache Kafka node for every test that does not stop or kill its broker."""
    broker = start_broker("apache", data_dir=tmp_path_factory.mktemp("apache-shared"))
    try:
        yield broker
    finally:
        broker.stop()


def _marker_args(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    marker = request.node.get_closest_marker("kafka_requires")
    return None if marker is None else tuple(marker.args)


@pytest.fixture
def kafka_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KafkaTarget]:
    """The broker for one test: the session's Apache Kafka node, a fresh stand-in, or the
    external cluster."""
    needs = _marker_args(request)
    if external():
        target = ExternalKafka(KAFKA)
        if needs is not None:
            require(target, *needs)
        wait_for_kafka(KAFKA, timeout=10.0)
        yield target
        return
    if needs is not None:
        _skip_unless(KAFKA, CAPABILITIES[KAFKA], needs)
    if KAFKA == "apache":
        shared: Broker = request.getfixturevalue("_session_apache")
        if not shared.running:  # a test must not stop it; if one did, the next gets a working one
            shared.start()
        yield SharedKafka(shared)
        return
    broker = start_broker(KAFKA, data_dir=tmp_path / f"{KAFKA}-broker")  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaTarget) -> str:
    """``bootstrap_servers`` for the test's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def managed_kafka_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A broker process of the test's own (fresh, on a free port), to stop, kill and restart."""
    if external():
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA} is a cluster this test did not start: it cannot kill or restart it")
    needs = _marker_args(request)
    if needs is not None:
        _skip_unless(KAFKA, CAPABILITIES[KAFKA], needs)
    broker = start_broker(KAFKA, data_dir=tmp_path / f"{KAFKA}-broker")  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[BrokerCluster]:
    """A fresh 3-node Apache Kafka cluster of the test's own (replication factor 3,
    min.insync.replicas 2), for fault tests that kill brokers."""
    if KAFKA != "apache":
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA}: a 3-node cluster this test can kill needs FACTA_TEST_KAFKA=apache")
    cluster = start_cluster(3, data_dir=tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name no other test (or earlier run on a shared cluster) uses."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60].strip("-_")
    return f"facta-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so tests never read each other's records (on a
    shared cluster too)."""
    return f"t{uuid.uuid4().hex[:10]}"
