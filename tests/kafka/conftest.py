"""Kafka fixtures: a fresh broker per test, chosen by ``FACTA_TEST_KAFKA``.

- ``noida`` (the default): noida-db, started on a free port with a fresh data directory.
- ``tansu``: Tansu (memory only; no idempotent producer, no transactions, unreliable end
  offsets).
- ``host:port[,host:port...]``: a real Kafka cluster. No process is started; tests that
  kill or restart the broker skip, and every test uses its own topic names.

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

from facta.replay.devbroker import (
    BROKER_KINDS,
    CAPABILITIES,
    Broker,
    Capabilities,
    CapabilityFlags,
    start_broker,
    wait_for_kafka,
)

KAFKA = os.environ.get("FACTA_TEST_KAFKA", "").strip() or "noida"
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


KafkaTarget = Broker | ExternalKafka


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
    raise pytest.UsageError(f"FACTA_TEST_KAFKA={KAFKA!r}: use noida, tansu or a host:port bootstrap address")


@pytest.fixture
def kafka_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KafkaTarget]:
    """The broker for one test: started fresh on a free port, stopped by its pid afterwards."""
    marker = request.node.get_closest_marker("kafka_requires")
    if external():
        target = ExternalKafka(KAFKA)
        if marker is not None:
            require(target, *marker.args)
        wait_for_kafka(KAFKA, timeout=10.0)
        yield target
        return
    kind = "noida" if KAFKA == "noida" else "tansu"
    if marker is not None:
        _skip_unless(kind, CAPABILITIES[kind], marker.args)
    broker = start_broker(kind, data_dir=tmp_path / f"{kind}-broker")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaTarget) -> str:
    """``bootstrap_servers`` for the test's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def managed_kafka_broker(kafka_broker: KafkaTarget) -> Broker:
    """The test's broker as a process we own, for tests that kill or restart it."""
    if not isinstance(kafka_broker, Broker):
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA} is a cluster this test did not start: it cannot kill or restart it")
    return kafka_broker


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
