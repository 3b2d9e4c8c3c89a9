"""One append's events get one unbroken range of positions, in the order given, however
many writers append at once (issue 13; revision 0008's ``facta_take_positions``).

The race is made, not hoped for. On PostgreSQL each 1,000-event append is held at its
stream lock (``facta_append`` takes it before anything else) by a transaction of the
test's own until every append is waiting there; then the gate opens and all of them take
positions at the same moment, while other connections append single events in a loop.
Before revision 0008 (the sequence's ``nextval`` per row, as 0007's ``facta_append``
did), every round interleaved the ranges. On SQLite writers queue for the file's write
lock, so the same race is simply run.

The cancel tests stop an append while it holds the positions lock, a session lock that
outlives the transaction: the sequence itself is held by an ``ALTER SEQUENCE`` in an
open transaction, so the append waits in ``nextval`` with the lock taken; then it is
cancelled (``statement_timeout`` or ``pg_cancel_backend``). The lock must be gone and
the next append, from another connection, must complete.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from facta.domain import PendingEvent
from facta.eventstore._appenders import AppendPlan, append_postgres
from facta.eventstore.locks import POSITIONS_LOCK, STREAM_LOCK_CLASS
from facta.eventstore.records import StreamAppend
from facta.eventstore.store import EventStore

from ..conftest import migrate
from ._torture_worker import STREAM_TYPE, Tick

BIG = 1_000
HANG_GUARD_S = 60  # only a hung append comes near it; never a timing assertion


def _ticks(writer: int, n: int) -> list[Tick]:
    return [Tick(writer=writer, seq=i) for i in range(n)]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def assert_one_range_each(appends: Sequence[Sequence[int]]) -> None:
    """Each append's positions run first, first + 1, ... in the order given, and no two
    appends share a position."""
    for positions in appends:
        first = positions[0]
        assert list(positions) == list(range(first, first + len(positions))), (
            f"an append of {len(positions)} events got positions {_runs(positions)}, not one range"
        )
    taken = list(itertools.chain.from_iterable(appends))
    assert len(taken) == len(set(taken)), "two appends got the same position"


def _runs(positions: Sequence[int]) -> str:
    """``10-12, 15, 17-20``: the runs of consecutive positions, for a failure message."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    shown = [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs[:8]]
    return ", ".join(shown) + (f" ... ({len(runs)} runs)" if len(runs) > 8 else "")


async def _singles(store: EventStore, writer: int, stop: asyncio.Event, out: list[list[int]]) -> None:
    seq = 0
    while not stop.is_set():
        seq += 1
        result = await store.append(f"single-{writer}", STREAM_TYPE, [Tick(writer=writer, seq=seq)], expected_version=None)
        out.append(list(result.positions))
        await asyncio.sleep(0)


async def _waiting_on_stream_locks(admin: Any) -> int:
    return int(await admin.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND NOT granted",
        STREAM_LOCK_CLASS,
    ))


async def race(url: str, *, big_writers: int, rounds: int, single_writers: int) -> tuple[list[list[int]], list[list[int]]]:
    """``rounds`` rounds of ``big_writers`` concurrent 1,000-event appends, each from a
    store (and connection) of its own, while ``single_writers`` more append one event at a
    time. Returns the big appends' positions and the single ones'."""
    postgres = url.startswith("postgresql")
    stores = [await EventStore.open(url) for _ in range(big_writers + single_writers)]
    gate = await asyncpg.connect(_dsn(url)) if postgres else None
    bigs: list[list[int]] = []
    singles: list[list[int]] = []
    try:
        for r in range(rounds):
            streams = [f"big-{r}-{w}" for w in range(big_writers)]
            stop = asyncio.Event()
            single_tasks = [
                asyncio.create_task(_singles(stores[big_writers + s], s, stop, singles)) for s in range(single_writers)
            ]
            tx = None
            if gate is not None:
                # Hold every big append at its stream lock until all of them wait there.
                tx = gate.transaction()
                await tx.start()
                for stream in streams:
                    await gate.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", STREAM_LOCK_CLASS, stream)
            big_tasks = [
                asyncio.create_task(stores[w].append(stream, STREAM_TYPE, _ticks(w, BIG), expected_version=0))
                for w, stream in enumerate(streams)
            ]
            if gate is not None and tx is not None:
                async with asyncio.timeout(HANG_GUARD_S):
                    while await _waiting_on_stream_locks(gate) < big_writers:
                        await asyncio.sleep(0.005)
                await tx.commit()
            async with asyncio.timeout(HANG_GUARD_S):
                results = await asyncio.gather(*big_tasks)
            stop.set()
            await asyncio.gather(*single_tasks)
            bigs.extend(list(result.positions) for result in results)
    finally:
        if gate is not None:
            await gate.close()
        for store in stores:
            await store.close()
    return bigs, singles


@pytest.mark.postgres
async def test_concurrent_big_appends_each_get_one_range_postgres(postgres_url: str) -> None:
    await migrate(postgres_url)
    bigs, singles = await race(postgres_url, big_writers=3, rounds=3, single_writers=2)
    assert len(bigs) == 9 and all(len(p) == BIG for p in bigs)
    assert singles, "no single-event append ran during the race"
    assert_one_range_each(bigs + singles)


async def test_concurrent_big_appends_each_get_one_range_sqlite(sqlite_url: str) -> None:
    await migrate(sqlite_url)
    bigs, singles = await race(sqlite_url, big_writers=3, rounds=2, single_writers=1)
    assert len(bigs) == 6 and all(len(p) == BIG for p in bigs)
    assert_one_range_each(bigs + singles)


async def test_a_multi_stream_append_gets_one_range_in_the_order_given(migrated_url: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        results = await store.append_many([
            StreamAppend("first", STREAM_TYPE, _ticks(1, 3), 0),
            StreamAppend("second", STREAM_TYPE, _ticks(2, 2), 0),
            StreamAppend("third", STREAM_TYPE, _ticks(3, 4), 0),
        ])
    positions = [p for r in results for p in r.positions]
    assert positions == list(range(positions[0], positions[0] + 9))


# -- A cancelled position take ---------------------------------------------------------------


def _plan(stream_id: str, n: int) -> AppendPlan:
    pending = [PendingEvent(tick) for tick in _ticks(9, n)]
    return AppendPlan(
        streams=[StreamAppend(stream_id, STREAM_TYPE, pending, 0)],
        pending=[pending],
        payloads=[[p.event.model_dump_json() for p in pending]],
        actor=None, correlation_id=None, causation_id=None, snapshots=(),
    )


async def _positions_lock_holders(conn: Any) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT pid, mode FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2"
        " AND objsubid = 2 AND granted",
        *POSITIONS_LOCK,
    )
    return [(r["pid"], r["mode"]) for r in rows]


async def _waits_in_nextval_holding_the_lock(admin: Any, pid: int) -> bool:
    """The backend ``pid`` holds the positions lock and waits for the sequence."""
    return bool(await admin.fetchval(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND classid = $2"
        "  AND objid = $3 AND granted)"
        " AND EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND locktype = 'relation'"
        "  AND relation = 'facta_events_position_seq'::regclass AND NOT granted)",
        pid, *POSITIONS_LOCK,
    ))


@pytest.mark.postgres
@pytest.mark.parametrize("events", [1, BIG])
@pytest.mark.parametrize("cancel", ["statement_timeout", "pg_cancel_backend"])
async def test_a_cancelled_append_leaves_the_positions_lock_free_postgres(
    postgres_url: str, events: int, cancel: str
) -> None:
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    holder = await asyncpg.connect(_dsn(postgres_url))
    victim = await asyncpg.connect(_dsn(postgres_url))
    try:
        pid = await victim.fetchval("SELECT pg_backend_pid()")
        # Hold the sequence: the victim's nextval waits, with the positions lock taken.
        tx = holder.transaction()
        await tx.start()
        await holder.execute("ALTER SEQUENCE facta_events_position_seq CACHE 1")
        if cancel == "statement_timeout":
            await victim.execute("SET statement_timeout = '3s'")
        append = asyncio.create_task(append_postgres(victim, _plan("victim", events)))
        async with asyncio.timeout(HANG_GUARD_S):
            while not await _waits_in_nextval_holding_the_lock(holder, pid):
                assert not append.done(), "the append ended before it waited for the sequence"
                await asyncio.sleep(0.005)
        if cancel == "pg_cancel_backend":
            assert await holder.fetchval("SELECT pg_cancel_backend($1)", pid)
        with pytest.raises(asyncpg.QueryCanceledError):
            async with asyncio.timeout(HANG_GUARD_S):
                await append
        assert await _positions_lock_holders(holder) == [], "the cancelled append left the positions lock held"
        await tx.rollback()

        # The next appends complete: from another connection, a big one (the exclusive
        # lock), and on the cancelled session itself.
        async with asyncio.timeout(HANG_GUARD_S):
            after = await store.append("after", STREAM_TYPE, _ticks(1, BIG), expected_version=0)
            await victim.execute("RESET statement_timeout")
            again = await append_postgres(victim, _plan("victim", events))
        assert_one_range_each([list(after.positions), list(again[0].positions)])
        assert await store.stream_version("victim") == events
    finally:
        await victim.close()
        await holder.close()
        await store.close()


@pytest.mark.postgres
async def test_take_positions_refuses_a_count_below_one_postgres(postgres_url: str) -> None:
    await migrate(postgres_url)
    conn = await asyncpg.connect(_dsn(postgres_url))
    try:
        for bad in (0, -3, None):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="n must be 1 or more"):
                await conn.fetchval("SELECT facta_take_positions($1)", bad)
        first = await conn.fetchval("SELECT facta_take_positions(5)")
        assert await conn.fetchval("SELECT facta_take_positions(1)") == first + 5
        assert await _positions_lock_holders(conn) == []
    finally:
        await conn.close()
