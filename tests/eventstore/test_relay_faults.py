"""The relay under SIGKILL: a real `facta relay run` process, killed at random moments
while a writer appends, never skips an event and republishes at most the page it had in
flight: at most two pages, as the relay pipelines them (at least once, never lost)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from facta.domain import DomainEvent
from facta.eventstore import EventStore
from facta.eventstore.relay import _MAX_PAGES_IN_FLIGHT, Relay, RelayConfig

from ..polling import wait_for
from .test_relay import consume_all, headers_of

BATCH = 25
KILLS = 8


class Step(DomainEvent, name="test.step"):
    n: int


def relay_command(url: str, broker: Any, prefix: str, *extra: str) -> list[str]:
    facta = shutil.which("facta")
    base = [facta] if facta else [sys.executable, "-m", "facta.replay.cli"]
    args = [*base, "relay", "run", "--database-url", url, "--kafka-bootstrap", broker.bootstrap,
            "--batch-size", str(BATCH), "--topic-prefix", prefix, *extra]
    if not broker.supports_idempotence:
        args.append("--no-idempotence")
    return args


@pytest.mark.slow
async def test_relay_killed_repeatedly_loses_nothing_and_repeats_at_most_a_page(
    migrated_url: str, kafka_broker: Any, tmp_path: Path, prefix: str
) -> None:
    rng = random.Random(11)
    env = {k: v for k, v in os.environ.items() if k not in ("FACTA_DATABASE_URL", "FACTA_KAFKA_BOOTSTRAP")}
    async with await EventStore.open(migrated_url) as store:
        stop_writing = asyncio.Event()

        async def write() -> int:
            n = 0
            while not stop_writing.is_set():
                n += 1
                await store.append(f"s-{n % 7}", "step", [Step(n=3 * n + i) for i in range(3)], expected_version=None)
                await asyncio.sleep(0.001)
            return n

        writer = asyncio.create_task(write())
        relay_status = Relay(store, RelayConfig(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix))
        kills = 0
        for _ in range(KILLS):
            process = await asyncio.create_subprocess_exec(
                *relay_command(migrated_url, kafka_broker, prefix), env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            # Kill while it publishes: first see it move its checkpoint (the process takes
            # about a second to start), then kill at a random moment soon after.
            before = (await relay_status.status()).checkpoint
            await wait_for(relay_status.status, lambda status, before=before: status.checkpoint != before, 60,
                           "the relay's checkpoint to move")
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            assert process.returncode is None, "the relay exited by itself"
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 30)
            kills += 1
        stop_writing.set()
        written = await writer

        caught_up = await asyncio.create_subprocess_exec(
            *relay_command(migrated_url, kafka_broker, prefix, "--once"), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(caught_up.communicate(), 120)
        assert caught_up.returncode == 0, stderr.decode()[-2000:]
        log = [r async for r in store.iter_log()]
    assert len(log) == 3 * written and kills == KILLS

    records = await consume_all(kafka_broker.bootstrap, [f"{prefix}.step"], len(log), within=60)
    seen_ids = [headers_of(r)["event-id"] for r in records]
    assert set(seen_ids) == {str(e.event_id) for e in log}, "an event committed in the store is missing on Kafka"
    duplicates = len(seen_ids) - len(set(seen_ids))
    in_flight = _MAX_PAGES_IN_FLIGHT * BATCH  # what a crash may leave unacknowledged, so republish
    assert duplicates <= kills * in_flight, f"{duplicates} duplicates after {kills} kills ({in_flight} in flight)"

    first_seen: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for record in records:
        h = headers_of(record)
        if h["event-id"] in seen:
            continue
        seen.add(h["event-id"])
        first_seen[h["stream-id"]].append(int(h["stream-version"]))
    for stream, versions in first_seen.items():
        assert versions == list(range(1, len(versions) + 1)), f"{stream}: versions out of order on Kafka"
    assert sum(json.loads(r.value)["n"] > 0 for r in records) == len(records)


async def test_sigterm_stops_a_relay_waiting_on_a_dead_broker_promptly_and_loses_nothing(
    migrated_url: str, managed_kafka_broker: Any, prefix: str
) -> None:
    """With the broker SIGKILLed under it, the relay holds records aiokafka would flush for
    up to the request timeout (60 s here); SIGTERM must still end it within seconds, with
    its checkpoint where the acknowledgements left it, and a later run publishes the rest."""
    broker = managed_kafka_broker
    env = {k: v for k, v in os.environ.items() if k not in ("FACTA_DATABASE_URL", "FACTA_KAFKA_BOOTSTRAP")}
    async with await EventStore.open(migrated_url) as store:
        for n in range(200):
            await store.append(f"s-{n % 7}", "step", [Step(n=3 * n + i) for i in range(3)], expected_version=None)
        relay_status = Relay(store, RelayConfig(bootstrap=broker.bootstrap, topic_prefix=prefix))
        process = await asyncio.create_subprocess_exec(
            *relay_command(migrated_url, broker, prefix, "--kafka-request-timeout", "60"), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        await wait_for(relay_status.status, lambda status: status.checkpoint > 0, 60, "the relay to publish")
        broker.kill()
        for n in range(200, 400):  # pages the relay reads and sends into the dead broker
            await store.append(f"s-{n % 7}", "step", [Step(n=3 * n + i) for i in range(3)], expected_version=None)
        await asyncio.sleep(2)
        assert process.returncode is None, "the relay exited by itself"
        loop = asyncio.get_running_loop()
        signalled = loop.time()
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 20)  # a hang detector, not a timing aim
        except TimeoutError:
            process.kill()
            raise AssertionError("the relay still ran 20 s after SIGTERM while the broker was down") from None
        stopped_after = loop.time() - signalled
        assert process.returncode == 0, stderr.decode()[-2000:]
        assert "stopped" not in stderr.decode()
        print(f"relay stopped {stopped_after:.1f} s after SIGTERM with the broker down")

        broker.start()
        caught_up = await asyncio.create_subprocess_exec(
            *relay_command(migrated_url, broker, prefix, "--once"), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(caught_up.communicate(), 120)
        assert caught_up.returncode == 0, stderr.decode()[-2000:]
        log = [r async for r in store.iter_log()]
    records = await consume_all(broker.bootstrap, [f"{prefix}.step"], len(log), within=60)
    assert {headers_of(r)["event-id"] for r in records} == {str(e.event_id) for e in log}
