"""Writer process of the global-log torture test (tests/eventstore/test_log_torture.py).

It lives in its own importable module so ``multiprocessing`` with the "spawn" context can
start it. Each writer runs its own asyncio loop and its own :class:`EventStore`, appends
to a mix of streams shared with the other writers and a private one, and writes what
happened to every append (committed, with its positions and versions, or rejected by a
:class:`ConcurrencyError`) to a JSON file for the checker.
"""

from __future__ import annotations

import asyncio
import json
import random
import traceback
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from facta.domain import DomainEvent, PendingEvent
from facta.eventstore._appenders import AppendPlan, LostRace, Rejected, append_postgres
from facta.eventstore.errors import ConcurrencyError
from facta.eventstore.records import AppendResult, StreamAppend
from facta.eventstore.store import EventStore

STREAM_TYPE = "torture"


class Tick(DomainEvent, name="torture.tick"):
    writer: int
    seq: int


@dataclass(frozen=True)
class WriterPlan:
    url: str
    writer: int
    appends: int
    shared_streams: int
    seed: int
    out_path: str
    slow_commits: bool = False


def shared_stream(n: int) -> str:
    return f"shared-{n}"


def private_stream(writer: int) -> str:
    return f"private-{writer}"


def run_writer(plan: WriterPlan, ready: Queue[int], start: Event) -> None:
    """Process target: open a store, report ready, wait for the start signal, write."""
    log: list[dict[str, Any]] = []
    error = None
    try:
        asyncio.run(_write(plan, ready, start, log))
    except BaseException:
        error = traceback.format_exc()
        raise
    finally:
        with open(plan.out_path, "w") as f:
            json.dump({"writer": plan.writer, "log": log, "error": error}, f)


async def _write(plan: WriterPlan, ready: Queue[int], start: Event, log: list[dict[str, Any]]) -> None:
    rng = random.Random(plan.seed)
    shared = [shared_stream(i) for i in range(plan.shared_streams)]
    mine = private_stream(plan.writer)
    seq = 0
    last_ok: tuple[list[StreamAppend], list[dict[str, Any]]] | None = None
    async with await EventStore.open(plan.url) as store:
        await store.stream_version(mine)  # connect before the start signal
        ready.put(plan.writer)
        if not await asyncio.to_thread(start.wait, 120):
            raise TimeoutError("no start signal")
        for _ in range(plan.appends):
            roll = rng.random()
            if roll < 0.05 and last_ok is not None:
                # Repeat a committed append verbatim (same event ids, stale expected
                # versions): the store must see a retry, write nothing, and answer with
                # the original positions.
                appends, original = last_ok
                log.append(
                    {
                        "kind": "retry",
                        "original": original,
                        "streams": _describe(appends, await store.append_many(appends)),
                    }
                )
                continue
            if roll < 0.80:
                names = [rng.choice(shared) if rng.random() < 0.75 else mine]
            else:  # one transaction across two streams: all of it is written, or none
                names = rng.sample([*shared, mine], 2)
            any_version = rng.random() < 0.1
            appends = []
            for name in names:
                expected = None if any_version else await store.stream_version(name)
                events = []
                size = rng.random()
                # Mostly one event, some a few; a few batches wide enough to overlap others.
                for _ in range(1 if size < 0.6 else rng.randint(2, 4) if size < 0.95 else rng.randint(20, 60)):
                    seq += 1
                    events.append(PendingEvent(Tick(writer=plan.writer, seq=seq)))
                appends.append(StreamAppend(name, STREAM_TYPE, events, expected))
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.003)  # think time widens the race window
            try:
                if plan.slow_commits and rng.random() < 0.25:
                    results = await _append_with_slow_commit(store, appends, rng)
                else:
                    results = await store.append_many(appends)
            except ConcurrencyError as exc:
                log.append({"kind": "rejected", "conflict_on": exc.stream_id, "streams": _describe(appends, None)})
                continue
            described = _describe(appends, results)
            log.append({"kind": "ok", "streams": described})
            last_ok = (appends, described)


async def _append_with_slow_commit(store: EventStore, appends: list[StreamAppend], rng: random.Random) -> list[AppendResult]:
    """PostgreSQL: facta's own append (facta_append), run inside an explicit transaction
    that waits a few milliseconds before COMMIT. This stands in for a commit whose WAL
    flush stalls: the append holds its positions, invisible, while later appends commit
    around it, which is the moment a tailing reader could skip it."""
    plan = AppendPlan(
        streams=appends,
        pending=[[e for e in a.events if isinstance(e, PendingEvent)] for a in appends],
        payloads=[[e.event.model_dump_json() for e in a.events if isinstance(e, PendingEvent)] for a in appends],
        actor=None, correlation_id=None, causation_id=None, snapshots=(),
    )
    async with store.database.driver_connection() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            results = await append_postgres(conn, plan)
        except (Rejected, LostRace):
            await tx.rollback()
            raise ConcurrencyError(appends[0].stream_id, appends[0].expected_version or 0, -1) from None
        await asyncio.sleep(rng.random() * 0.006)
        await tx.commit()
    return results


def _describe(appends: list[StreamAppend], results: list[AppendResult] | None) -> list[dict[str, Any]]:
    out = []
    for i, a in enumerate(appends):
        entry: dict[str, Any] = {
            "stream_id": a.stream_id,
            "expected": a.expected_version,
            "event_ids": [str(e.event_id) for e in a.events if isinstance(e, PendingEvent)],
        }
        if results is not None:
            r = results[i]
            assert r.stream_id == a.stream_id
            entry.update(positions=list(r.positions), first_version=r.first_version, last_version=r.last_version)
        out.append(entry)
    return out
