"""A projection runner consuming Kafka, SIGKILLed at random points while events stream in,
ends with the read model a fresh full rebuild from the store gives.

The runner is a child process (this module run with ``python -m``); it is killed once
while it starts, then again and again at a random moment after it applied something:
between batches or in the middle of one. Each
batch's rows and checkpoints commit in one transaction, and every restart seeks to the
database's checkpoints, so nothing is lost and nothing is counted twice.

``FACTA_FAULT_SEED`` replays a run (the seed is in the failure message).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from facta.eventstore import EventStore
from facta.eventstore.relay import Relay
from facta.projections import KafkaSettings, ProjectionRunner, RunnerConfig
from facta.projections import _tracking as tracking
from facta.projections._applier import Applier, Delivery
from facta.projections._tracking import LOG
from facta.projections.kafka_source import KafkaSubscription

from ..polling import wait_for
from .test_source_contract import Book, Source, Wallets, checkpoints, rows, workload

ROOT = Path(__file__).resolve().parents[2]
KILLS = 4


def _child(argv: list[str]) -> None:
    """The runner process: ``URL BOOTSTRAP PREFIX GROUP_PREFIX SESSION_MS COMMIT``."""
    url, bootstrap, prefix, group_prefix, session_ms, commit = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run() -> None:
        async with await EventStore.open(url) as store:
            settings = KafkaSettings(
                bootstrap=bootstrap, topic_prefix=prefix, group_prefix=group_prefix,
                session_timeout_ms=int(session_ms), heartbeat_interval_ms=500, request_timeout_ms=10_000,
                commit_to_kafka=commit == "1",
            )
            runner = ProjectionRunner(store, Wallets, kafka=settings, config=RunnerConfig(batch_size=5))
            await runner.run()

    asyncio.run(run())


def _spawn(source: Source, url: str, log: Path, number: int) -> subprocess.Popen[bytes]:
    settings = source.settings()
    group_prefix = source.group_prefix
    commit = "1"
    if source.broker.kind == "noida":
        # noida-db never drops a member that died without leaving: the group's next member
        # is never assigned anything. So each runner gets a group of its own there (the
        # database's checkpoints are all a runner resumes from anyway). noida also stalls a
        # group whose member commits offsets while it rebalances (see the contract suite's
        # two-runner test); the offsets in Kafka are only for lag tools.
        group_prefix = f"{group_prefix}{number}."
        commit = "0"
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.projections.test_kafka_faults", url, source.broker.bootstrap, source.prefix,
             group_prefix, str(settings.session_timeout_ms), commit],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


async def _rebuild_from_the_store(store: EventStore) -> dict[str, tuple[int, int]]:
    """The projection built afresh from the store's log, into its rebuild tables."""
    rebuild = Applier(store, Wallets, source="log", slot=tracking.REBUILD)
    await store.database.write(tracking.start_rebuild, rebuild.projection, {})
    await rebuild.open()
    log = await store.read_log(limit=1_000_000)
    await rebuild.apply([Delivery(r, LOG, r.position) for r in log])
    table = rebuild.projection.balances

    def query(conn: Any) -> dict[str, tuple[int, int]]:
        return {r.wallet_id: (int(r.balance), int(r.events)) for r in conn.execute(select(table))}

    built = await store.database.read(query)
    await store.database.write(tracking.drop_rebuild, rebuild.projection)
    return built


@pytest.mark.slow
async def test_a_runner_killed_at_random_points_ends_equal_to_a_full_rebuild(
    migrated_url: str, kafka_broker: Any, prefix: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("FACTA_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    source = Source(KafkaSubscription, kafka_broker, prefix, partitions=3)
    child_log = tmp_path / "runner.log"
    context = f"seed {seed} (FACTA_FAULT_SEED); runner output in {child_log}"

    async with await EventStore.open(migrated_url) as store:
        book = Book()
        relay_stop, writer_stop = asyncio.Event(), asyncio.Event()
        relay = asyncio.create_task(Relay(store, source.relay_config()).run(stop=relay_stop))

        async def write() -> None:
            round_ = 0
            while not writer_stop.is_set():
                round_ += 1
                await workload(store, book, rounds=1, wallets=12, seed=seed + round_)
                await asyncio.sleep(rng.uniform(0.02, 0.08))

        writer = asyncio.create_task(write())
        processes: list[subprocess.Popen[bytes]] = []
        try:
            # Once while it starts (opening the database, joining the group)...
            process = _spawn(source, migrated_url, child_log, len(processes))
            processes.append(process)
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            _kill(process)
            assert process.returncode == -signal.SIGKILL, f"the runner ended by itself; {context}"
            # ...then at random moments once it applies: between batches or inside one.
            for _ in range(KILLS):
                before = sum((await checkpoints(store)).values())
                process = _spawn(source, migrated_url, child_log, len(processes))
                processes.append(process)
                await wait_for(lambda p=process: _applied(store, p), lambda n, b=before: n > b, 60,
                               f"the runner to apply something; {context}")
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                _kill(process)
                assert process.returncode == -signal.SIGKILL, f"the runner ended by itself; {context}"
            writer_stop.set()
            await asyncio.wait_for(writer, 30)
            await wait_for(lambda: relay_status(store, source), lambda lag: lag == 0, 60, "the relay to catch up")

            process = _spawn(source, migrated_url, child_log, len(processes))
            processes.append(process)
            total = book.appended
            await wait_for(lambda: _state(store), lambda s: s[0] >= total and s[1] == book.balances, 90,
                           f"the restarted runner to catch up with {total} events; {context}")
            _kill(process)
        finally:
            writer_stop.set()
            relay_stop.set()
            for process in processes:
                _kill(process)
            await asyncio.wait_for(asyncio.gather(writer, relay, return_exceptions=True), 30)

        live = await rows(store)
        assert live == book.balances, context
        assert live == await _rebuild_from_the_store(store), context


async def _applied(store: EventStore, process: subprocess.Popen[bytes]) -> int:
    if process.poll() is not None:
        raise AssertionError(f"the runner exited with {process.returncode}")
    return sum((await checkpoints(store)).values())


async def _has_row(store: EventStore) -> bool:
    return Wallets.name in await store.database.read(tracking.describe)


async def _state(store: EventStore) -> tuple[int, dict[str, tuple[int, int]]]:
    if not await _has_row(store):
        return 0, {}
    return sum((await checkpoints(store)).values()), await rows(store)


async def relay_status(store: EventStore, source: Source) -> int:
    return int((await Relay(store, source.relay_config()).status()).lag)


if __name__ == "__main__":
    _child(sys.argv[1:])
