"""Time-window queries at scale: rows read and latency on PostgreSQL stores of two sizes.

    python bench/time_windows.py                      # 10,000 and 100,000 events
    python bench/time_windows.py --sizes 10000 1000000

Stores are loaded by bench/audit.py's loader (COPY, time going forward with the
position). For each time-window query: the median latency of ``--repeat`` runs after a
warm-up (the first run's latency is printed too: it writes the log-block summaries when
a store has none), and, from ``EXPLAIN (ANALYZE, BUFFERS)`` of every statement on
facta_events the query ran, the rows its scans of facta_events read (returned plus
removed by a filter) and the shared buffers touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from _common import machine_facts, render_table
from audit import SPAN, START, Store, load
from sqlalchemy import event

import facta.domain.reference  # noqa: F401 (declares Account, whose streams the audit queries load)
from facta.eventstore import EventStore, audit

Query = Callable[[EventStore, Store], Awaitable[Any]]


def queries() -> dict[str, Query]:
    half = START + SPAN / 2
    late = START + SPAN * 9 / 10
    early = START + SPAN / 10

    async def second_page(st: EventStore, s: Store) -> Any:
        first = await audit.events(st, stream_types=["account"], since=half, limit=100)
        return await audit.events(st, stream_types=["account"], since=half, limit=100, after_position=first.cursor)

    return {
        "events --type deposited --since/--until (10 min)": lambda st, s: audit.events(
            st, types=["account.deposited"], since=s.window[0], until=s.window[1], limit=100),
        "events --stream-type account --since T/2 (100)": lambda st, s: audit.events(
            st, stream_types=["account"], since=half, limit=100),
        "  the same, its second page (--after-position)": second_page,
        "events --since 9T/10 (100)": lambda st, s: audit.events(st, since=late, limit=100),
        "events --until T/10 --newest-first (100)": lambda st, s: audit.events(
            st, until=early, newest_first=True, limit=100),
        "events --since T/2 --until T/2+1d --newest-first": lambda st, s: audit.events(
            st, since=half, until=half + timedelta(days=1), newest_first=True, limit=100),
        "first_position_at(T/2) (replay --from-time)": lambda st, s: st.first_position_at(half),
        "state --as-of T/2": lambda st, s: audit.state_at(st, s.probe_stream, as_of=half),
    }


def _scanned(plan: dict[str, Any]) -> int:
    rows = 0
    if plan.get("Relation Name") == "facta_events" or plan.get("Index Name", "").startswith(("facta_events", "ix_facta_events")):
        loops = plan.get("Actual Loops", 1)
        rows += (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
                 + plan.get("Rows Removed by Index Recheck", 0)) * loops
    for child in plan.get("Plans", []):
        rows += _scanned(child)
    return rows


async def measure(store: Store, repeat: int) -> dict[str, tuple[float, float, int, int]]:
    out: dict[str, tuple[float, float, int, int]] = {}
    async with await EventStore.open(store.fresh.url) as st:
        engine = st.database.engine
        assert engine is not None
        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "facta_events" in statement:
                captured.append((statement, parameters))

        for name, query in queries().items():
            started = time.perf_counter()
            await query(st, store)  # warm-up (and, the first time, the summaries)
            first_ms = (time.perf_counter() - started) * 1000
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await query(st, store)
                times.append((time.perf_counter() - started) * 1000)
            captured.clear()
            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            try:
                await query(st, store)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", capture)
            rows = buffers = 0
            for statement, parameters in captured:
                async with engine.connect() as conn:
                    result = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
                    raw = result.scalar_one()
                    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
                rows += _scanned(plan)
                buffers += plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
            out[name] = (statistics.median(times), first_ms, rows, buffers)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    for line in machine_facts(["postgresql"]):
        print(line)
    results = {}
    for size in args.sizes:
        started = time.perf_counter()
        store = load(size)
        print(f"loaded {size:,} events with COPY in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            results[size] = asyncio.run(measure(store, args.repeat))
        finally:
            store.fresh.drop()
    head = ["query"]
    for size in args.sizes:
        head += [f"{size:,}: ms", "1st ms", "rows", "buffers"]
    lines = []
    for name in queries():
        line = [name]
        for size in args.sizes:
            ms, first, rows, buffers = results[size][name]
            line += [f"{ms:.2f}", f"{first:.1f}", f"{rows:,}", f"{buffers:,}"]
        lines.append(tuple(line))
    print(render_table(head, lines, set(range(1, len(head)))))


if __name__ == "__main__":
    main()
