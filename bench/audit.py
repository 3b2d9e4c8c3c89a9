"""Audit queries at scale: the same queries on a small and a large PostgreSQL store;
what hash chains cost at append, and how fast `facta audit verify` reads.

    python bench/audit.py                 # 10,000 and 1,000,000 events
    python bench/audit.py --quick         # 2,000 and 20,000 (smoke run, used by tests)
    python bench/audit.py --chains        # append with hashing vs without, both dialects
    python bench/audit.py --verify 1000000  # verify vs a raw read of the same rows (PostgreSQL)

Each store is loaded with COPY (not timed) with the same shape of history: accounts of
~50 events each (opened, deposits, withdrawals) taking turns in log order, recorded over
30 days (time goes forward with the position, as in a live store), a tenth of the
events with an actor, every five events of a stream sharing a correlation id. Then each
query of ``facta.eventstore.audit`` runs ``--repeat`` times on each store (after a warm-up
run) and the median latency is printed beside the other store's, with the growth ratio
(aim: at most 2x from the small store to the large one) and the plan PostgreSQL chose
for each SQL statement the query ran (``EXPLAIN``: index scans, no sequential scans).

``--chains`` (issue 14, aim: hashing at most 10% slower): facta's own ``EventStore.append``
on two fresh databases per dialect, one hashing (revision 0010) and one not (PostgreSQL:
revision 0008's ``facta_append`` put back, the column left NULL; SQLite: the appender's
:class:`~facta.eventstore.integrity.Chainer` replaced by one that computes nothing, so the
loop around it still runs). Each round runs both contenders, in alternating order, on 200
single-event appends and on 5 appends of 1,000 events; the time ratio hashed / plain of
each round, median (min-max).

``--verify N`` (aim: at least 150,000 events/s on PostgreSQL, and at least 0.5x a raw
read of the same rows): N events loaded with COPY and hashed by
:func:`~facta.eventstore.integrity.seal_backfill` (timed too), then per round, in
alternating order, :func:`~facta.eventstore.integrity.verify` and a raw read: the same
paged statement in the same kind of transaction on the asyncpg connection, rows fetched
and dropped. Also on SQLite (``--verify-sqlite``).
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
from facta.domain import DomainEvent, PendingEvent
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


# -- --chains: append with hashing against without --------------------------------------------


class _Noted(DomainEvent, name="bench.chain.noted"):
    text: str
    amount: int
    ratio: float
    tags: dict[str, int]


def _events(n: int, k: int) -> list[PendingEvent]:
    return [PendingEvent(_Noted(text=f"note {k}-{i}", amount=i, ratio=i / 7, tags={"zz": i, "a": k}))
            for i in range(n)]


class _NoChain:
    """The SQLite appender's chainer, computing nothing (the "plain" contender)."""

    heads: dict[str, Any] = {}

    def start(self, *args: Any) -> None:
        return None

    def next(self, *args: Any) -> None:
        return None


def _plain_database(backend: str) -> Fresh:
    fresh = fresh_database(backend, "chainplain")
    asyncio.run(migrate(fresh.url))
    if backend == "postgresql":
        import importlib

        old = importlib.import_module("facta.migrations.versions.0008_contiguous_positions")
        with psycopg.connect(fresh.dsn, autocommit=True) as conn:
            conn.execute(old._FACTA_APPEND)
    return fresh


async def _slice(store: EventStore, plain: bool, backend: str, batch: int, appends: int, tag: str) -> float:
    from facta.eventstore import _appenders, integrity

    if backend == "sqlite":
        _appenders.Chainer = _NoChain if plain else integrity.Chainer  # type: ignore[assignment,misc]
    plans = [_events(batch, k) for k in range(appends)]
    streams = [f"{tag}-{k % 20 if batch == 1 else k}" for k in range(appends)]
    started = time.perf_counter()
    for stream, events in zip(streams, plans, strict=True):
        await store.append(stream, "note", events, expected_version=None)
    return time.perf_counter() - started


def run_chains(rounds: int, backends: list[str], singles: int, batches: int) -> None:
    lines = []
    for backend in backends:
        hashed, plain = fresh_database(backend, "chainhashed"), _plain_database(backend)
        asyncio.run(migrate(hashed.url))
        try:
            ratios: dict[str, list[float]] = {"1 event/append": [], "1,000 events/append": []}
            rates: dict[str, list[float]] = {k: [] for k in ratios}

            async def rounds_() -> None:
                async with await EventStore.open(hashed.url) as h, await EventStore.open(plain.url) as p:
                    await _slice(h, False, backend, 1, 20, "warm")
                    await _slice(p, True, backend, 1, 20, "warm")
                    for r in range(rounds):
                        for label, batch, appends in (("1 event/append", 1, singles),
                                                      ("1,000 events/append", 1000, batches)):
                            times = {}
                            order = (("hashed", h), ("plain", p)) if r % 2 == 0 else (("plain", p), ("hashed", h))
                            for name, store in order:
                                times[name] = await _slice(store, name == "plain", backend, batch, appends,
                                                           f"r{r}-{batch}")
                            ratios[label].append(times["hashed"] / times["plain"])
                            rates[label].append(batch * appends / times["hashed"])

            asyncio.run(rounds_())
        finally:
            from facta.eventstore import _appenders, integrity

            _appenders.Chainer = integrity.Chainer  # type: ignore[misc]
            hashed.drop()
            plain.drop()
        for label, values in ratios.items():
            lines.append((backend, label, f"{statistics.median(rates[label]):,.0f}",
                          f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})",
                          "met" if statistics.median(values) <= 1.10 else "missed"))
    print(f"append with hash chains / without: time ratio per round, median (min-max) of {rounds} rounds")
    print(render_table(["backend", "workload", "hashed events/s", "hashed / plain", "aim <= 1.10"], lines, {2, 3}))


# -- --verify: facta audit verify against a raw read -------------------------------------------


async def _raw_read(url: str, page_size: int) -> int:
    from facta.eventstore import integrity

    async with await EventStore.open(url) as store:
        database = store.database
        if database.dialect == "sqlite":
            def read(conn: Any) -> int:
                raw = conn.connection.driver_connection
                head = raw.execute("SELECT coalesce(max(position), 0) FROM facta_events").fetchone()[0]
                after, n = 0, 0
                while True:
                    rows = raw.execute(integrity._SQLITE_EVENTS, (after, head, page_size)).fetchall()
                    if not rows:
                        return n
                    n += len(rows)
                    after = rows[-1][0]
            return int(await database.read(read))
        async with database.driver_connection() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM facta_events")
                after, n = 0, 0
                while True:
                    rows = await conn.fetch(integrity._PG_EVENTS, after, head, page_size)
                    if not rows:
                        return n
                    n += len(rows)
                    after = rows[-1][0]


async def _verify(url: str) -> int:
    from facta.eventstore import integrity

    async with await EventStore.open(url) as store:
        report = await integrity.verify(store)
    assert report.intact, report
    return report.events


def _load_sqlite(size: int) -> Fresh:
    """A fresh SQLite store with ``size`` events appended by facta (hashed at append)."""
    fresh = fresh_database("sqlite", f"verify{size}")
    asyncio.run(migrate(fresh.url))

    async def fill() -> None:
        async with await EventStore.open(fresh.url) as store:
            for k in range(0, size, 1000):
                await store.append(f"acct-{k // 1000 % 500:05d}", "note", _events(min(1000, size - k), k),
                                   expected_version=None)

    asyncio.run(fill())
    return fresh


def run_verify(size: int, rounds: int, backends: list[str]) -> None:
    from facta.eventstore import integrity

    lines = []
    for backend in backends:
        started = time.perf_counter()
        if backend == "postgresql":
            fresh = load(size).fresh
            with psycopg.connect(fresh.dsn, autocommit=True) as conn:
                conn.execute("UPDATE facta_hash_start SET position = (SELECT max(position) FROM facta_events)")

            async def seal() -> Any:
                async with await EventStore.open(fresh.url) as store:
                    return await integrity.seal_backfill(store)

            loaded = time.perf_counter()
            sealed = asyncio.run(seal())
            seal_s = time.perf_counter() - loaded
            print(f"postgresql: {size:,} events loaded with COPY, sealed ({sealed.events:,} hashes) in {seal_s:.1f} s"
                  f" ({sealed.events / seal_s:,.0f} events/s)", flush=True)
        else:
            fresh = _load_sqlite(size)
            print(f"sqlite: {size:,} events appended in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            ratios, rates = [], []
            for r in range(rounds):
                times = {}
                for name in (("verify", "raw") if r % 2 == 0 else ("raw", "verify")):
                    t0 = time.perf_counter()
                    n = asyncio.run(_verify(fresh.url)) if name == "verify" else asyncio.run(_raw_read(fresh.url, 10_000))
                    times[name] = time.perf_counter() - t0
                    assert n == size, (n, size)
                ratios.append(times["raw"] / times["verify"])
                rates.append(size / times["verify"])
        finally:
            fresh.drop()
        rate, ratio = statistics.median(rates), statistics.median(ratios)
        lines.append((backend, f"{size:,}", f"{rate:,.0f} ({min(rates):,.0f}-{max(rates):,.0f})",
                      f"{ratio:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
                      ("met" if rate >= 150_000 and ratio >= 0.5 else "missed") if backend == "postgresql" else "-"))
    print(f"facta audit verify (integrity.verify, store opened per run) vs a raw read of the same rows,"
          f" {rounds} alternating rounds, median (min-max)")
    print(render_table(["backend", "events", "verify events/s", "raw time / verify time", "aim"], lines, {1, 2, 3}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="2,000 and 20,000 events, 3 repeats")
    parser.add_argument("--no-plans", action="store_true", help="do not print the query plans")
    parser.add_argument("--chains", action="store_true", help="append with hash chains vs without (both dialects)")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="facta audit verify vs a raw read, on N events (PostgreSQL)")
    parser.add_argument("--verify-sqlite", action="store_true", help="--verify on SQLite as well")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of --chains / --verify")
    args = parser.parse_args(argv)
    if args.chains or args.verify:
        for line in machine_facts(["postgresql", "sqlite"]):
            print(line)
        if args.chains:
            run_chains(3 if args.quick else args.rounds, ["postgresql", "sqlite"], 20 if args.quick else 200,
                       1 if args.quick else 5)
        if args.verify:
            run_verify(args.verify, 3 if args.quick else args.rounds,
                       ["postgresql", "sqlite"] if args.verify_sqlite else ["postgresql"])
        print(f"\nat the end: {load_average()}")
        return
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
