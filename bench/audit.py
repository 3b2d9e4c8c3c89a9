"""Audit queries at scale: the same queries on a small and a large PostgreSQL store.

    python bench/audit.py                 # 10,000 and 1,000,000 events
    python bench/audit.py --quick         # 2,000 and 20,000 (smoke run, used by tests)

Each store is loaded with COPY (not timed) with the same shape of history: accounts of
~50 events each (opened, deposits, withdrawals) taking turns in log order, recorded over
30 days (time goes forward with the position, as in a live store), a tenth of the
events with an actor, every five events of a stream sharing a correlation id. Then each
query of ``facta.eventstore.audit`` runs ``--repeat`` times on each store (after a warm-up
run) and the median latency is printed beside the other store's, with the growth ratio
(aim: at most 2x from the small store to the large one) and the plan PostgreSQL chose
for each SQL statement the query ran (``EXPLAIN``: index scans, no sequential scans).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from _common import Fresh, fresh_database, load_average, machine_facts, migrate, render_table
from sqlalchemy import event

import facta.domain.reference  # noqa: F401 (declares Account, whose streams the audit queries load)
from facta.eventstore import EventStore, audit

EVENTS_PER_STREAM = 50
START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN = timedelta(days=30)


@dataclass
class Store:
    size: int
    fresh: Fresh
    streams: int
    probe_stream: str
    probe_correlation: str
    window: tuple[datetime, datetime]


def load(size: int) -> Store:
    """A fresh PostgreSQL store holding ``size`` events, loaded with COPY."""
    fresh = fresh_database("postgresql", f"audit{size}")
    asyncio.run(migrate(fresh.url))
    rng = random.Random(size)
    streams = max(1, size // EVENTS_PER_STREAM)
    step = SPAN / size
    buf = io.StringIO()
    balances = [0] * streams
    versions = [0] * streams
    # In log order, as a live store fills: the streams take turns, time only goes forward.
    for n in range(size):
        s = n % streams
        stream = f"acct-{s:07d}"
        versions[s] += 1
        version = versions[s]
        at = START + step * n
        if version == 1:
            kind, payload = "account.opened", {"owner": f"owner-{s}", "currency": "EUR"}
        elif balances[s] > 100 and rng.random() < 0.4:
            amount = rng.randint(1, balances[s])
            balances[s] -= amount
            kind, payload = "account.withdrawn", {"amount": amount, "reference": None}
        else:
            amount = rng.randint(1, 500)
            balances[s] += amount
            kind, payload = "account.deposited", {"amount": amount, "reference": None}
        actor = f"teller-{rng.randrange(50)}" if rng.random() < 0.1 else "\\N"
        correlation = f"corr-{s}-{version // 5}"
        stamp = at.isoformat()
        buf.write(
            f"{uuid.uuid4()}\t{stream}\taccount\t{version}\t{kind}\t1\t{json.dumps(payload)}\t"
            f"{stamp}\t{stamp}\t{actor}\t{correlation}\t\\N\n"
        )
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY facta_events (event_id, stream_id, stream_type, version, event_type, schema_version, payload,"
            " occurred_at, recorded_at, actor, correlation_id, causation_id) FROM STDIN"
        ) as copy:
            copy.write(buf.getvalue())
        conn.execute("ANALYZE facta_events")
    middle = streams // 2
    window_start = START + SPAN / 2
    return Store(size, fresh, streams, f"acct-{middle:07d}", f"corr-{middle}-3",
                 (window_start, window_start + timedelta(minutes=10)))


Query = Callable[[EventStore, Store], Awaitable[Any]]


def queries() -> dict[str, Query]:
    def at_time(s: Store) -> datetime:
        return START + SPAN / 2

    return {
        "history STREAM": lambda st, s: audit.history(st, s.probe_stream),
        "state --at-version 40": lambda st, s: audit.state_at(st, s.probe_stream, at_version=40),
        "state --as-of T": lambda st, s: audit.state_at(st, s.probe_stream, as_of=at_time(s)),
        "diff --from-version 2 --to-version 30": lambda st, s: audit.diff(st, s.probe_stream, 2, 30),
        "events --type deposited --since/--until (10 min)": lambda st, s: audit.events(
            st, types=["account.deposited"], since=s.window[0], until=s.window[1], limit=100),
        "events --actor A (first 100)": lambda st, s: audit.events(st, actor="teller-7", limit=100),
        "events --actor A --newest-first": lambda st, s: audit.events(
            st, actor="teller-7", newest_first=True, limit=100),
        "events --correlation-id C": lambda st, s: audit.events(st, correlation_id=s.probe_correlation),
        "events --newest-first (100)": lambda st, s: audit.events(st, newest_first=True, limit=100),
        "events --stream-type account --since T (100)": lambda st, s: audit.events(
            st, stream_types=["account"], since=s.window[0], limit=100),
        "trace C": lambda st, s: audit.trace(st, s.probe_correlation),
    }


async def measure(store: Store, repeat: int) -> tuple[dict[str, float], dict[str, list[str]]]:
    latencies: dict[str, float] = {}
    plans: dict[str, list[str]] = {}
    async with await EventStore.open(store.fresh.url) as st:
        engine = st.database.engine
        assert engine is not None
        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if statement.lstrip().upper().startswith("SELECT") and "facta_events" in statement:
                captured.append((statement, parameters))

        for name, query in queries().items():
            await query(st, store)  # warm-up
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await query(st, store)
                times.append((time.perf_counter() - started) * 1000)
            latencies[name] = statistics.median(times)
            captured.clear()
            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            try:
                await query(st, store)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", capture)
            lines: list[str] = []
            for statement, parameters in captured:
                async with engine.connect() as conn:
                    result = await conn.exec_driver_sql("EXPLAIN (COSTS OFF) " + statement, parameters)
                    lines += [row[0] for row in result]
            plans[name] = lines
    return latencies, plans


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="2,000 and 20,000 events, 3 repeats")
    parser.add_argument("--no-plans", action="store_true", help="do not print the query plans")
    args = parser.parse_args(argv)
    if args.quick:
        args.small, args.large, args.repeat = 2_000, 20_000, 3
    for line in machine_facts(["postgresql"]):
        print(line)
    results: dict[int, dict[str, float]] = {}
    plans: dict[int, dict[str, list[str]]] = {}
    for size in (args.small, args.large):
        started = time.perf_counter()
        store = load(size)
        print(f"loaded {size:,} events in {store.streams:,} streams with COPY in {time.perf_counter() - started:.1f} s",
              flush=True)
        try:
            results[size], plans[size] = asyncio.run(measure(store, args.repeat))
        finally:
            store.fresh.drop()
    small, large = args.small, args.large
    lines = []
    for name in queries():
        a, b = results[small][name], results[large][name]
        growth = b / a if a > 0 else float("inf")
        lines.append((name, f"{a:.2f}", f"{b:.2f}", f"{growth:.2f}x", "met" if growth <= 2 else "missed"))
    print()
    print(f"median latency (ms) of {args.repeat} runs, {small:,} vs {large:,} events; aim: at most 2x growth")
    print(render_table(["query", f"{small:,} ev", f"{large:,} ev", "growth", "aim <= 2x"], lines, {1, 2, 3}))
    if not args.no_plans:
        print()
        print(f"query plans on the {large:,}-event store (EXPLAIN, costs off)")
        for name, plan in plans[large].items():
            print(f"-- {name}")
            for line in plan:
                print(f"   {line}")
            seq = [line for line in plan if "Seq Scan on facta_events" in line]
            if seq:
                print("   ^ a sequential scan of facta_events")
    print(f"\nat the end: {load_average()}")


if __name__ == "__main__":
    main()
