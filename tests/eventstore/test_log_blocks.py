"""Log blocks (revision 0006): per-block summaries of recorded_at that let time windows
skip most of the log, without ever changing a result.

Blocks are made 4 positions long here (``blocks.BLOCK``) so a short log spans several.
The log's clocks step back across block boundaries: a late event with an earlier time
in a later block, a day back, an hour ahead. Every query is compared with the answer
computed from the rows themselves, with summaries for every settled block, for none
(a database that refuses the write), and for some only (rows deleted: it is a cache).

Each test runs on SQLite and PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection, delete, insert, inspect, select
from sqlalchemy.exc import DBAPIError

from facta import migrations
from facta.eventstore import EventStore, audit
from facta.eventstore import _blocks as blocks
from facta.eventstore import store as store_module
from facta.eventstore.audit import events
from facta.eventstore.locks import WRITER_MARKER
from facta.eventstore.schema import events as events_table
from facta.eventstore.schema import log_blocks

from ..conftest import migrate

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)
B = 4  # positions per block in these tests

# recorded_at of positions 1..22 (blocks 0-4 full, block 5 holds 21-22 and is unsettled):
# a minute per position, with writers whose clocks were off.
TIMES = [T + n * M for n in range(22)]
TIMES[5] = T - timedelta(days=1)  # position 6 (block 1): a day back
TIMES[12] = T + 5 * M + 30 * timedelta(seconds=1)  # position 13 (block 3): late, inside block 1's span
TIMES[16] = T + M  # position 17 (block 4): back to block 0's times
TIMES[2] = T + 2 * timedelta(hours=1)  # position 3 (block 0): an hour ahead
TIMES[20] = T + 3 * M  # position 21 (block 5, the unsettled tail): back to block 0's times


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "BLOCK", B)


async def _write(store: EventStore, times: list[datetime], first: int = 1) -> None:
    def write(conn: Connection) -> None:
        for n, at in enumerate(times, start=first):  # one statement each: positions follow the list
            conn.execute(insert(events_table), [{
                "event_id": uuid.uuid4(), "stream_id": f"acct-{n % 3}", "stream_type": "account",
                "version": (n - 1) // 3 + 1, "event_type": "account.deposited" if n % 2 else "account.withdrawn",
                "schema_version": 1, "payload": json.dumps({"amount": n, "reference": None}),
                "occurred_at": at, "recorded_at": at, "actor": None, "correlation_id": None, "causation_id": None,
            }])

    await store.database.write(write)


async def _summaries(store: EventStore) -> dict[int, tuple[datetime, datetime, int]]:
    def read(conn: Connection) -> dict[int, tuple[datetime, datetime, int]]:
        c = log_blocks.c
        rows = conn.execute(select(c.block, c.min_recorded_at, c.max_recorded_at, c.events).order_by(c.block))
        return {int(r[0]): (r[1], r[2], int(r[3])) for r in rows}

    return await store.database.read(read)


def _expected_summaries(times: list[datetime], settled_blocks: int) -> dict[int, tuple[datetime, datetime, int]]:
    out = {}
    for b in range(settled_blocks):
        part = times[b * B:(b + 1) * B]
        out[b] = (min(part), max(part), len(part))
    return out


async def test_summary_rows_hold_each_settled_blocks_min_and_max_and_none_for_an_unsettled_block(
    store: EventStore,
) -> None:
    await _write(store, TIMES)
    assert await _summaries(store) == {}  # appends never write them
    page = await events(store, since=T + 10 * M, limit=100)
    assert [r.position for r in page.events] == [p for p, at in enumerate(TIMES, 1) if at >= T + 10 * M]
    # Blocks 0-4 are wholly at or below the head (22); block 5 (21-24) is not.
    assert await _summaries(store) == _expected_summaries(TIMES, 5)
    assert max(await _summaries(store)) == 4
    # Two more events fill block 5: the next time-window reader summarises it, and the
    # rows written before are as they were.
    more = [T + 30 * M, T - timedelta(hours=5)]
    await _write(store, more, first=23)
    assert await store.first_position_at(T + 3 * timedelta(hours=1)) == 24  # none recorded since
    assert await _summaries(store) == _expected_summaries(TIMES + more, 6)
    # A cache: its rows may be deleted (no permanent-history trigger), and a store that
    # finds none writes them again.
    await store.database.write(lambda conn: conn.execute(delete(log_blocks)))
    store.block_summaries.known = 0  # as a store opened afresh
    assert await store.first_position_at(T + 3 * timedelta(hours=1)) == 24
    assert await _summaries(store) == _expected_summaries(TIMES + more, 6)


async def test_downgrade_to_0005_drops_the_summaries_and_an_upgrade_brings_them_back(store: EventStore) -> None:
    await _write(store, TIMES)
    await blocks.refresh(store)
    assert len(await _summaries(store)) == 5
    await migrations.downgrade(store.database, "0005")
    assert "facta_log_blocks" not in await store.database.read(lambda conn: inspect(conn).get_table_names())
    await migrations.upgrade(store.database)
    assert await _summaries(store) == {}
    store.block_summaries.known = 0
    assert [r.position for r in (await events(store, since=T + 18 * M, limit=100)).events] == [3, 19, 20, 22]
    assert await _summaries(store) == _expected_summaries(TIMES, 5)


async def test_window_ranges_skip_exactly_the_summarised_blocks_that_miss_the_window(store: EventStore) -> None:
    await _write(store, TIMES)
    # The window [T + 12 min, T + 13 min] against each block's [min, max]: block 0
    # [T, T + 2 h] (position 3) intersects; block 1 [T - 1 d, T + 7 min] and block 2
    # [T + 8 min, T + 11 min] miss; block 3 [T + 5.5 min, T + 15 min] and block 4
    # [T + 1 min, T + 19 min] intersect; block 5 (21-22) is not summarised.
    ranges = await blocks.window_ranges(store, T + 12 * M, T + 13 * M, 0, 23)
    assert ranges == [(1, 4), (13, 22)]
    # Strict bounds inside blocks are kept.
    assert await blocks.window_ranges(store, T + 12 * M, T + 13 * M, 2, 15) == [(3, 4), (13, 14)]
    # No summaries for a block (a deleted cache row): it is read.
    await store.database.write(lambda conn: conn.execute(delete(log_blocks).where(log_blocks.c.block == 2)))
    assert await blocks.window_ranges(store, T + 12 * M, T + 13 * M, 0, 23) == [(1, 4), (9, 22)]
    # Neither bound: nothing is skipped.
    assert await blocks.window_ranges(store, None, None, 0, 23) == [(1, 22)]


def _inside(times: list[datetime], since: datetime | None, until: datetime | None) -> list[int]:
    return [p for p, at in enumerate(times, 1) if (since is None or at >= since) and (until is None or at <= until)]


async def _check_every_window(store: EventStore, times: list[datetime], rng: random.Random) -> None:
    edges = sorted({at + d for at in times for d in (-timedelta(microseconds=1), timedelta(0))})
    windows: list[tuple[datetime | None, datetime | None]] = [(None, None)]
    windows += [(t, None) for t in edges[::3]] + [(None, t) for t in edges[1::3]]
    for _ in range(30):
        a, b = sorted(rng.sample(edges, 2))
        windows.append((a, b))
    for since, until in windows:
        if since is None and until is None:
            continue
        expected = _inside(times, since, until)
        for newest_first in (False, True):
            want = expected[::-1] if newest_first else expected
            page = await events(store, since=since, until=until, newest_first=newest_first, limit=100)
            assert [r.position for r in page.events] == want, (since, until, newest_first)
            got: list[int] = []
            cursor: int | None = None
            while True:
                page = await events(store, since=since, until=until, newest_first=newest_first, limit=3,
                                    **({} if cursor is None else
                                       {"before_position" if newest_first else "after_position": cursor}))
                got += [r.position for r in page.events]
                if page.cursor is None:
                    break
                cursor = page.cursor
            assert got == want, (since, until, newest_first)
        # With another filter: only the odd positions are deposits.
        page = await events(store, since=since, until=until, types=["account.deposited"], limit=100)
        assert [r.position for r in page.events] == [p for p in expected if p % 2], (since, until)
    for since in edges:
        inside = _inside(times, since, None)
        assert await store.first_position_at(since) == (inside[0] - 1 if inside else len(times)), since


@pytest.mark.parametrize("summaries", ["all", "none", "some"])
@pytest.mark.parametrize("first_walk", [4.0, 0.01])
async def test_time_windows_are_exact_with_summaries_for_all_some_or_no_blocks(
    store: EventStore, summaries: str, first_walk: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # first_walk 0.01: a window query first walks one candidate position, then chooses
    # between the (recorded_at, position) index and walking on (both exact).
    monkeypatch.setattr(audit, "_FIRST_WALK", first_walk)
    monkeypatch.setattr(store_module, "_FIRST_WALK", 2)  # first_position_at: 2 positions, then the index
    await _write(store, TIMES)
    if summaries == "none":
        store.block_summaries.writable = False
    elif summaries == "some":
        await blocks.refresh(store)
        gone = [1, 3]
        await store.database.write(lambda conn: conn.execute(delete(log_blocks).where(log_blocks.c.block.in_(gone))))
    await _check_every_window(store, TIMES, random.Random(10))
    held = await _summaries(store)
    expected = _expected_summaries(TIMES, 5)
    if summaries == "none":
        assert held == {}
    elif summaries == "some":
        assert held == {b: s for b, s in expected.items() if b not in (1, 3)}
    else:
        assert held == expected


async def test_a_database_that_refuses_the_summaries_gets_exact_answers(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(conn: Connection, rows: list[dict[str, Any]]) -> None:
        raise DBAPIError("INSERT INTO facta_log_blocks", None, Exception("permission denied for table"))

    monkeypatch.setattr(blocks, "_insert_blocks", refuse)
    await _write(store, TIMES)
    await _check_every_window(store, TIMES, random.Random(11))
    assert store.block_summaries.writable is False
    assert await _summaries(store) == {}


@pytest.mark.postgres
async def test_a_block_with_an_append_in_flight_is_not_summarised_until_it_ends_postgres(postgres_url: str) -> None:
    """An append in flight has taken position 3 (block 0) with a time a day before the
    rest, and later appends committed positions 4-9. A summary of block 0 written now
    would miss it: the reader waits for the settled horizon, and block 0's summary,
    written once the append committed, holds its time."""
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    raw = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    reader: asyncio.Task[Any] | None = None
    try:
        await _write(store, TIMES[:2])
        tx = raw.transaction()
        await tx.start()
        await raw.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *WRITER_MARKER)
        held = T - timedelta(days=1)
        held_position = await raw.fetchval(
            "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
            " payload, occurred_at, recorded_at) VALUES ($1, 'held', 'account', 1, 'account.deposited', 1,"
            " $2::jsonb, $3, $3) RETURNING position",
            uuid.uuid4(), json.dumps({"amount": 3, "reference": None}), held,
        )
        assert held_position == 3
        await _write(store, TIMES[3:9], first=4)
        reader = asyncio.create_task(blocks.refresh(store))
        await asyncio.wait({reader}, timeout=1.0)
        assert not reader.done(), f"the summaries were written past an append in flight: {reader}"
        assert await _summaries(store) == {}
        await tx.commit()
        await asyncio.wait_for(reader, 10)
        times = [*TIMES[:2], held, *TIMES[3:9]]
        assert await _summaries(store) == _expected_summaries(times, 2)
        page = await events(store, until=T - timedelta(hours=1), limit=100)
        assert [r.position for r in page.events] == [3, 6]  # the held append and the day-back one
    finally:
        await raw.close()
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await store.close()
