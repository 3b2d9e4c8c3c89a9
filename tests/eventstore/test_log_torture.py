"""Torture test of the contract "a global log with no skipped events".

Many writer processes append at once (with real optimistic-concurrency conflicts on
shared streams) while a reader tails the log with ``read_log(after=last_seen)``. The
checker then proves the reader saw every committed event exactly once, in position
order, that committed appends got gap-free consecutive stream versions and one unbroken
range of positions each (in the order given, revision 0008), and that rejected appends
left nothing behind. Deterministic tests show the PostgreSQL mechanism at work:
while an append is in flight (it holds the writer marker and has taken a position),
other appends go ahead but readers do not read past it until it commits or rolls back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import queue
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from facta.eventstore.locks import WRITER_MARKER
from facta.eventstore.store import EventStore

from ..conftest import migrate
from ._torture_worker import STREAM_TYPE, Tick, WriterPlan, run_writer

WRITER_DEADLINE_S = 240  # generous: only a hung writer comes near it


@dataclass
class Outcome:
    events: int
    appends_ok: int
    appends_rejected: int
    retries: int
    multi_stream_ok: int
    reader_pages_while_writing: int
    seconds: float


async def _wait_ready(ready: Any, procs: Sequence[BaseProcess]) -> None:
    """Wait until every writer has opened its store (or fail fast if one died)."""
    pending = len(procs)
    deadline = time.monotonic() + WRITER_DEADLINE_S
    while pending:
        try:
            await asyncio.to_thread(ready.get, True, 0.5)
            pending -= 1
        except queue.Empty:
            dead = [p.name for p in procs if p.exitcode is not None]
            assert not dead, f"writers died before starting: {dead}"
            assert time.monotonic() < deadline, "writers did not start in time"


async def _tail(
    store: EventStore, writers_done: asyncio.Event, rng: random.Random
) -> tuple[list[tuple[int, uuid.UUID]], int]:
    """Tail the log as a subscriber would: read after the last position seen, forever,
    until the writers are done and a read after that comes back short."""
    seen: list[tuple[int, uuid.UUID]] = []
    last = 0
    pages_while_writing = 0
    while True:
        finished = writers_done.is_set()
        limit = rng.choice((1, 3, 20, 100, 500))
        page = await store.read_log(after=last, limit=limit)
        for record in page:
            seen.append((record.position, record.event_id))
            last = record.position
        if page and not finished:
            pages_while_writing += 1
        if finished and len(page) < limit:
            return seen, pages_while_writing
        if not page:
            await asyncio.sleep(0.002)


async def _torture(url: str, tmp_path: Path, *, writers: int, appends: int, shared_streams: int) -> Outcome:
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    start = ctx.Event()
    plans = [
        WriterPlan(
            url, w, appends, shared_streams, seed=7919 * (w + 1), out_path=str(tmp_path / f"writer-{w}.json"),
            slow_commits=url.startswith("postgresql"),
        )
        for w in range(writers)
    ]
    procs = [ctx.Process(target=run_writer, args=(plan, ready, start), name=f"writer-{plan.writer}") for plan in plans]
    reader_store = await EventStore.open(url)
    reader: asyncio.Task[tuple[list[tuple[int, uuid.UUID]], int]] | None = None
    try:
        for p in procs:
            p.start()
        await _wait_ready(ready, procs)
        writers_done = asyncio.Event()
        reader = asyncio.create_task(_tail(reader_store, writers_done, random.Random(4242)))
        start.set()
        deadline = time.monotonic() + WRITER_DEADLINE_S
        for p in procs:
            await asyncio.to_thread(p.join, max(0.0, deadline - time.monotonic()))
            assert p.exitcode is not None, f"{p.name} did not finish in {WRITER_DEADLINE_S} s"
        writers_done.set()
        seen, pages_while_writing = await asyncio.wait_for(reader, 120)
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
        for p in procs:
            if p.is_alive():
                p.kill()
            if p.pid is not None:
                p.join()
        await reader_store.close()

    logs = []
    for plan, p in zip(plans, procs, strict=True):
        result = json.loads(Path(plan.out_path).read_text())
        assert result["error"] is None, f"{p.name} failed:\n{result['error']}"
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
        assert len(result["log"]) == appends
        logs.append(result["log"])

    async with await EventStore.open(url) as fresh:
        table = [r async for r in fresh.iter_log(page_size=257)]
        head = await fresh.head_position()
    outcome = _check(logs, seen, table, head)
    outcome.reader_pages_while_writing = pages_while_writing
    outcome.seconds = time.monotonic() - started
    print(f"\n{url.split(':', 1)[0]}: {outcome}")
    return outcome


def _check(logs: list[list[dict[str, Any]]], seen: list[tuple[int, uuid.UUID]], table: list[Any], head: int) -> Outcome:
    # The final table, read fresh, is in strictly increasing position order.
    positions = [r.position for r in table]
    assert positions == sorted(set(positions)), "log read is not in strictly increasing position order"
    assert not table or head == positions[-1]
    by_id = {r.event_id: r for r in table}
    assert len(by_id) == len(table), "an event id appears twice in the log"
    assert all(r.stream_type == STREAM_TYPE and r.event_type == Tick.event_type for r in table)

    # The tailing reader saw exactly the table: every event once, in position order.
    seen_positions = [pos for pos, _ in seen]
    assert all(a < b for a, b in itertools.pairwise(seen_positions)), "tailing reader saw positions out of order"
    assert len({eid for _, eid in seen}) == len(seen), "tailing reader saw an event twice"
    missed = sorted(set(positions) - set(seen_positions))
    assert not missed, f"tailing reader skipped {len(missed)} committed events, first positions {missed[:10]}"
    assert seen == [(r.position, r.event_id) for r in table], "tailing reader's log differs from the final log"

    # Every committed append is in the table as written; every rejected one is absent.
    committed: set[uuid.UUID] = set()
    rejected: set[uuid.UUID] = set()
    ok = bad = retries = multi = 0
    for log in logs:
        for entry in log:
            if entry["kind"] == "retry":
                retries += 1
                assert [s["positions"] for s in entry["streams"]] == [s["positions"] for s in entry["original"]], (
                    "a repeated append did not answer with the original positions"
                )
                continue
            if entry["kind"] == "rejected":
                bad += 1
                for s in entry["streams"]:
                    rejected.update(uuid.UUID(e) for e in s["event_ids"])
                continue
            ok += 1
            multi += len(entry["streams"]) > 1
            taken = [p for s in entry["streams"] for p in s["positions"]]
            assert taken == list(range(taken[0], taken[0] + len(taken))), (
                f"an append's positions are not one range in the order given: {taken}"
            )
            for s in entry["streams"]:
                ids = [uuid.UUID(e) for e in s["event_ids"]]
                committed.update(ids)
                missing = [e for e in ids if e not in by_id]
                assert not missing, f"committed events missing from the log: {missing} of {s}"
                rows = [by_id[e] for e in ids]
                assert [r.stream_id for r in rows] == [s["stream_id"]] * len(ids)
                assert [r.version for r in rows] == list(range(s["first_version"], s["last_version"] + 1)), (
                    f"append to {s['stream_id']} did not get consecutive versions: {s}"
                )
                assert [r.position for r in rows] == s["positions"]
                assert s["positions"] == sorted(set(s["positions"]))
                if s["expected"] is not None:
                    assert s["first_version"] == s["expected"] + 1
    assert not rejected & set(by_id), "events of a rejected append were written"
    assert committed == set(by_id), "the log holds events no writer saw committed"

    # Streams have versions 1..n without gaps, in position order.
    streams: dict[str, list[Any]] = defaultdict(list)
    for r in table:
        streams[r.stream_id].append(r)
    for stream_id, rows in streams.items():
        assert [r.version for r in rows] == list(range(1, len(rows) + 1)), f"stream {stream_id} has version gaps"

    assert bad > 0, "no append was rejected: the conflict path was not exercised"
    assert ok > 0 and multi > 0
    return Outcome(len(table), ok, bad, retries, multi, 0, 0.0)


@pytest.mark.slow
@pytest.mark.postgres
async def test_tailing_reader_never_skips_with_many_writer_processes_postgres(
    postgres_url: str, tmp_path: Path
) -> None:
    await migrate(postgres_url)
    outcome = await _torture(postgres_url, tmp_path, writers=8, appends=150, shared_streams=4)
    assert outcome.reader_pages_while_writing > 0, "the reader did not run while the writers wrote"


@pytest.mark.slow
async def test_tailing_reader_never_skips_with_many_writer_processes_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    await migrate(sqlite_url)
    outcome = await _torture(sqlite_url, tmp_path, writers=4, appends=60, shared_streams=2)
    assert outcome.reader_pages_while_writing > 0, "the reader did not run while the writers wrote"


async def _begin_in_flight_append(raw: Any) -> tuple[Any, int, uuid.UUID]:
    """On a raw connection, do what facta_append does up to its commit: take the writer
    marker and insert an event (taking a position). Return the open transaction."""
    tx = raw.transaction()
    await tx.start()
    await raw.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *WRITER_MARKER)
    held_id = uuid.uuid4()
    held_position = await raw.fetchval(
        "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
        " payload, occurred_at) VALUES ($1, 'held', $2, 1, $3, 1, $4::jsonb, now()) RETURNING position",
        held_id,
        STREAM_TYPE,
        Tick.event_type,
        Tick(writer=0, seq=0).model_dump_json(),
    )
    return tx, int(held_position), held_id


@pytest.mark.postgres
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_readers_wait_for_an_in_flight_append_but_writers_do_not_postgres(postgres_url: str, outcome: str) -> None:
    """An in-flight append has taken a position but not committed. A later append must
    not wait for it (writers commit concurrently), but a reader must not read past the
    held position until it commits or rolls back: had it returned the later event, its
    checkpoint would move past the held one before that became visible."""
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    raw = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    reader: asyncio.Task[Any] | None = None
    try:
        tx, held_position, held_id = await _begin_in_flight_append(raw)

        late = await asyncio.wait_for(
            store.append("late", STREAM_TYPE, [Tick(writer=1, seq=1)], expected_version=0), 10
        )
        assert late.positions[0] > held_position, "the later append committed, with a later position"

        reader = asyncio.create_task(store.read_log())
        await asyncio.wait({reader}, timeout=1.0)
        assert not reader.done(), f"the reader read past an append in flight: {reader}"

        if outcome == "commit":
            await tx.commit()
            expected = [(held_position, "held"), (late.positions[0], "late")]
        else:
            await tx.rollback()
            expected = [(late.positions[0], "late")]
        log = await asyncio.wait_for(reader, 10)
        assert [(r.position, r.stream_id) for r in log] == expected
        if outcome == "commit":
            assert log[0].event_id == held_id
        assert [(r.position, r.stream_id) for r in await store.read_log()] == expected
    finally:
        await raw.close()  # rolls back if still open, releasing the marker
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await store.close()


@pytest.mark.postgres
async def test_a_reader_waits_only_for_appends_in_flight_when_it_looked_postgres(postgres_url: str) -> None:
    """Appends that start after a reader listed the writers in flight do not hold it up:
    the reader's wait is bounded by what was in flight, not by a busy log."""
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    try:
        await store.append("first", STREAM_TYPE, [Tick(writer=0, seq=0)], expected_version=0)
        stop = asyncio.Event()

        async def keep_writing(w: int) -> int:
            n = 0
            while not stop.is_set():
                n += 1
                await store.append(f"busy-{w}-{n}", STREAM_TYPE, [Tick(writer=w, seq=n)], expected_version=0)
            return n

        writers = [asyncio.create_task(keep_writing(w)) for w in range(4)]
        await asyncio.sleep(0.2)
        seen = 0
        for _ in range(20):
            page = await asyncio.wait_for(store.read_log(after=seen, limit=50), 10)
            assert [r.position for r in page] == sorted(r.position for r in page)
            seen = page[-1].position if page else seen
        stop.set()
        written = sum(await asyncio.gather(*writers))
        assert written > 20 and seen > 1
    finally:
        await store.close()
