"""facta beside eventsourcing 9.5.6 and the raw drivers on every path of issue 12, in one run.

Fourteen rows (``--rows`` picks some), each run with the contenders side by side:

 1  SQLite append, 1,000 events per transaction      facta ``EventStore.append`` / eventsourcing
                                                      application recorder ``insert_events`` /
                                                      sqlite3 ``executemany`` into facta's table
                                                      in BEGIN IMMEDIATE
 2  SQLite append, 1 event per transaction, 4 writer processes (raw: BEGIN IMMEDIATE; INSERT; COMMIT)
 3  PostgreSQL append, 1,000 events per transaction   raw: asyncpg COPY in a transaction
 4  PostgreSQL append, 1 event per transaction, 4 writer processes (raw: asyncpg BEGIN; INSERT; COMMIT)
 5, 6  load a 10,000-event aggregate, no snapshot    facta ``Repository.get`` / eventsourcing
       (SQLite, PostgreSQL)                           ``app.repository.get`` / driver select of the
                                                      stream + json.loads + fold
 7, 8  load with a snapshot at the head               the same, facta from its snapshot, eventsourcing
                                                      with snapshotting enabled, raw from the snapshot row
 9, 10 read and decode 100,000 log events             facta ``iter_log`` + ``record.event`` /
                                                      eventsourcing ``select_notifications`` pages +
                                                      its mapper / driver select + json.loads
 11 rebuild a PostgreSQL read model from 100,000      facta ``replay`` / eventsourcing with a hand-written
    events (account_balances)                         batched loop over its notifications / raw asyncpg loop
 12, 13 relay to Kafka, 100,000 events                facta ``Relay.run(once=True)`` / raw aiokafka
        (SQLite, PostgreSQL)                          batches (no eventsourcing contender)
 14 memory after ``import facta.eventstore``           peak RSS of a fresh process, against one that
                                                      imports all of eventsourcing

How it measures:
- Each contender of a row runs in a worker process of its own (``multiprocessing`` spawn),
  started once per row; it imports its own libraries only, before any timing. The peak
  memory column is each worker's high-water RSS (``VmHWM``, what ``ru_maxrss`` reports) at
  the end of the row; for the 4-writer rows, the largest of the contender's 4 writers.
- Rounds (``--rounds``, default 3) run every contender once each, the order rotated every
  round. Rates are medians over rounds; each ratio is the median of the per-round ratios
  (facta's rate / the other's), printed with its min and max.
- Every contender's result is checked before its figure counts: rows counted after
  appends, loaded aggregate state (version, balance, status) equal to what was written,
  log events counted and a field summed, read models compared row by row (md5), records
  counted on the topic.
- Every append run gets a fresh database; the load, log and rebuild rows share one set-up
  per backend (loaded untimed), which the contenders only read (or, for the rebuild,
  write to tables of their own).

    python bench/versus.py                   # every row, 3 rounds; 3 to 5 minutes on 2 otherwise idle cores
    python bench/versus.py --rows 1 3 9-11   # some rows
    python bench/versus.py --quick           # smoke run: every row, small sizes, one round
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing as mp
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Only the standard library at import time: every worker process imports this module
# (spawn runs it as __mp_main__) and must carry only its own contender's libraries.

CONTENDERS = ("facta", "eventsourcing", "raw")
RUN_ID = uuid.uuid4().hex[:6]
AGGREGATE_EVENTS = 10_000
LOG_EVENTS = 100_000
REBUILD_EVENTS = 100_000
RELAY_EVENTS = 100_000
WRITERS = 4
BATCH = 1000


# -- worker processes -----------------------------------------------------------------------


def _call(target: str, args: Sequence[Any]) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args)


def _worker_main(conn: Any, preload: Sequence[str], setup: tuple[str, tuple[Any, ...]] | None = None,
                 keep_loop: bool = False) -> None:
    """A contender's process: calls ``setup`` (``("module:function", args)``) if given,
    imports ``preload``, says ready, then runs ``module:function`` calls until it gets
    None; coroutines are run with asyncio.run, or with ``keep_loop`` on one event loop
    kept for the life of the process (so that what a call opens can serve the next)."""
    try:
        if setup is not None:
            _call(*setup)
        for name in preload:
            importlib.import_module(name)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    loop = asyncio.new_event_loop() if keep_loop else None
    while (message := conn.recv()) is not None:
        try:
            value = _call(*message)
            if asyncio.iscoroutine(value):
                value = loop.run_until_complete(value) if loop is not None else asyncio.run(value)
            conn.send(("ok", value))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
    if loop is not None:
        loop.close()


def peak_mib(pid: int) -> float:
    """A live process's high-water resident set (VmHWM, the figure ru_maxrss gives), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Worker:
    """One spawned process for one contender of one row."""

    def __init__(self, label: str, preload: Sequence[str], *, setup: tuple[str, tuple[Any, ...]] | None = None,
                 keep_loop: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.label = label
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, list(preload), setup, keep_loop),
                                name=f"versus-{label}", daemon=True)
        self.proc.start()

    def ready(self) -> None:
        kind, detail = self.conn.recv()
        if kind != "ready":
            raise SystemExit(f"worker {self.label} did not start:\n{detail}")

    def call(self, target: str, *args: Any) -> Any:
        self.conn.send((target, args))
        kind, value = self.conn.recv()
        if kind != "ok":
            raise SystemExit(f"{self.label}: {target} failed:\n{value}")
        return value

    def peak(self) -> float:
        assert self.proc.pid is not None
        return peak_mib(self.proc.pid)

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.terminate()


def start_workers(preloads: dict[str, Sequence[str]]) -> dict[str, Worker]:
    workers = {c: Worker(c, p) for c, p in preloads.items()}
    for w in workers.values():  # all started at once, then every import waited for
        w.ready()
    return workers


# -- results -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A row's figures: per contender, one rate per round; peak MiB per contender."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    note: str = ""

    def add(self, contender: str, rate: float) -> None:
        self.rates.setdefault(contender, []).append(rate)


def ratios(outcome: Outcome, other: str, inverse: bool = False) -> list[float]:
    mine, theirs = outcome.rates.get("facta", []), outcome.rates.get(other, [])
    if not mine or not theirs:
        return []
    return [(t / f if inverse else f / t) for f, t in zip(mine, theirs, strict=True)]


# -- the rows ------------------------------------------------------------------------------------


@dataclass
class Row:
    number: int
    title: str
    unit: str
    run: Callable[[Row, argparse.Namespace], Outcome]
    backend: str = ""
    aim_es: float | None = None
    aim_raw: float | None = None
    contenders: tuple[str, ...] = CONTENDERS
    starred: tuple[str, ...] = ()  # contenders whose worker also imports facta (shared bench code)


def rotated(items: Sequence[str], r: int) -> list[str]:
    k = r % len(items)
    return [*items[k:], *items[:k]]


def log_line(row: Row, r: int, contender: str, text: str) -> None:
    print(f"  row {row.number:>2} round {r + 1}  {contender:<13} {text}", file=sys.stderr, flush=True)


def run_rounds(row: Row, args: argparse.Namespace, preload: dict[str, Sequence[str]],
               one: Callable[[dict[str, Worker], int, str], tuple[float, str]], out: Outcome | None = None) -> Outcome:
    """Start the row's workers, run ``one(workers, round, contender)`` for every round in
    rotated order (it returns the contender's rate and a line for the log), record each
    worker's peak memory, stop the workers."""
    out = out or Outcome()
    workers = start_workers({c: preload[c] for c in row.contenders})
    try:
        for r in range(args.rounds):
            for c in rotated(row.contenders, r):
                rate, text = one(workers, r, c)
                out.add(c, rate)
                log_line(row, r, c, text)
        out.peaks = {c: w.peak() for c, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    return out


# rows 1 and 3 ---------------------------------------------------------------------------------

APPEND_PRELOAD = {
    "facta": ["_contenders", "append", "facta.eventstore"],
    "eventsourcing": ["_contenders", "append", "eventsourcing.application", "eventsourcing.sqlite",
                      "eventsourcing.postgres"],
    "raw": ["_contenders", "append", "asyncpg", "sqlite3"],
}


def run_append_batch(row: Row, args: argparse.Namespace) -> Outcome:
    import append
    from _common import fresh_database

    def one(workers: dict[str, Worker], r: int, c: str) -> tuple[float, str]:
        fresh = fresh_database(row.backend, f"v{row.number}_{c[:5]}")
        try:
            append._create_schema(c, fresh)
            timed = workers[c].call("_contenders:append_batch", c, fresh, args.batch_events)
            append._check_rows(fresh, c, timed.check)
        finally:
            fresh.drop()
        return timed.items / timed.seconds, f"{timed.items:,} events in {timed.seconds:.2f} s, rows checked"

    return run_rounds(row, args, APPEND_PRELOAD, one)


# rows 2 and 4 ---------------------------------------------------------------------------------


def run_append_single(row: Row, args: argparse.Namespace) -> Outcome:
    import append

    out = Outcome()
    pools: dict[str, Any] = {}
    try:
        for c in row.contenders:  # 4 writers per contender, so each pool's peak is its own
            pools[c] = append.WriterPool(WRITERS)
        for r in range(args.rounds):
            for c in rotated(row.contenders, r):
                result = append.run_single(pools[c], row.backend, c, args.appends)  # counts the rows itself
                out.add(c, result.rate)
                retries = f", {result.retries} retries" if result.retries else ""
                log_line(row, r, c, f"{result.events:,} appends in {result.seconds:.2f} s, rows checked{retries}")
        out.peaks = {c: max(peak_mib(p.pid) for p in pool.procs) for c, pool in pools.items()}
    finally:
        for pool in pools.values():
            pool.close()
    return out


# rows 5 to 10: a loaded store per backend -------------------------------------------------------


@dataclass
class Loaded:
    """One backend's read-only set-up, in two pairs of databases: facta's and
    eventsourcing's with two 10,000-event accounts each (one with a snapshot at its
    head), and facta's and eventsourcing's with the 100,000 log events."""

    facta_agg: Any
    es_agg: Any
    facta_log: Any
    es_log: Any
    es_agg_env: dict[str, str]
    es_log_env: dict[str, str]
    es_ids: dict[str, Any]
    expected_account: tuple[int, int, str]
    expected_log: tuple[int, int]

    def drop(self) -> None:
        for fresh in (self.facta_agg, self.es_agg, self.facta_log, self.es_log):
            fresh.drop()


LOADED: dict[str, Loaded] = {}


def deposit_amount(i: int) -> int:
    return 1 + i % 97


async def _load_facta(agg: Any, log: Any, aggregate_events: int, log_events: int) -> None:
    import relay
    from _common import migrate
    from _events import BENCH_REGISTRY

    from facta.domain.reference import Account
    from facta.eventstore import EventStore, Repository

    await migrate(log.url)
    async with await EventStore.open(log.url, registry=BENCH_REGISTRY) as store:
        await relay.append_load(store, log_events)  # telemetry, 1,000-event appends, a stream each
    await migrate(agg.url)
    async with await EventStore.open(agg.url) as store:
        repo = Repository(store, snapshot_every=None)
        for stream in ("acct-plain", "acct-snap"):
            account = Account.open(stream, "owner-1", "EUR")
            for i in range(aggregate_events - 1):
                account.deposit(deposit_amount(i))
            await repo.save(account)
            if stream == "acct-snap":
                await repo.snapshot(account)


def _load_es(agg_env: dict[str, str], log_env: dict[str, str], aggregate_events: int, log_events: int
             ) -> dict[str, Any]:
    from _common import telemetry_fields
    from _es_models import ESAccount, ESApp, ESSnapshottingApp, ESTelemetry

    app = ESApp(env=log_env)
    try:
        base = datetime.now(UTC)
        for start in range(0, log_events, BATCH):  # the same events as relay.append_load's
            stream = f"ride-{start // BATCH}"
            oid = uuid.uuid5(uuid.NAMESPACE_URL, stream)
            app.recorder.insert_events([
                app.mapper.to_stored_event(ESTelemetry(
                    originator_id=oid, originator_version=i + 1, timestamp=base + timedelta(microseconds=i),
                    **telemetry_fields(i, stream)))
                for i in range(BATCH)
            ])
    finally:
        app.close()
    snap_app = ESSnapshottingApp(env=agg_env)
    try:
        ids: dict[str, Any] = {}
        for name in ("acct-plain", "acct-snap"):
            account = ESAccount(owner="owner-1", currency="EUR")
            for i in range(aggregate_events - 1):
                account.deposit(deposit_amount(i))
            snap_app.save(account)
            if name == "acct-snap":
                snap_app.take_snapshot(account.id)
            ids[name] = account.id
        return ids
    finally:
        snap_app.close()


def loaded(backend: str, args: argparse.Namespace) -> Loaded:
    if backend in LOADED:
        return LOADED[backend]
    from _common import fresh_database, telemetry_fields
    from _es_models import es_env

    t0 = time.perf_counter()
    dbs = [fresh_database(backend, f"v_{what}") for what in ("agg", "agg_es", "log", "log_es")]
    facta_agg, es_agg, facta_log, es_log = dbs
    asyncio.run(_load_facta(facta_agg, facta_log, args.aggregate_events, args.log_events))
    agg_env = es_env(backend, path=es_agg.path, dsn=es_agg.dsn)
    log_env = es_env(backend, path=es_log.path, dsn=es_log.dsn)
    ids = _load_es(agg_env, log_env, args.aggregate_events, args.log_events)
    balance = sum(deposit_amount(i) for i in range(args.aggregate_events - 1))
    per_stream = sum(telemetry_fields(i)["distance_m"] for i in range(BATCH))
    LOADED[backend] = Loaded(facta_agg, es_agg, facta_log, es_log, agg_env, log_env, ids,
                             (args.aggregate_events, balance, "open"),
                             (args.log_events, per_stream * (args.log_events // BATCH)))
    print(f"  {backend}: stores loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return LOADED[backend]


READ_PRELOAD = {
    "facta": ["_contenders", "facta.eventstore", "facta.domain.reference", "_events"],
    "eventsourcing": ["_contenders", "_es_models", "eventsourcing.sqlite", "eventsourcing.postgres"],
    "raw": ["_contenders", "json", "sqlite3", "asyncpg"],
}


def _where(fresh: Any) -> str:
    return fresh.path if fresh.backend == "sqlite" else fresh.dsn


def run_load(row: Row, args: argparse.Namespace, snapshot: bool) -> Outcome:
    setup = loaded(row.backend, args)
    stream = "acct-snap" if snapshot else "acct-plain"
    loads = args.snapshot_loads if snapshot else args.loads
    jobs = {
        "facta": ("_contenders:facta_load", (setup.facta_agg.url, stream, loads)),
        "eventsourcing": ("_contenders:es_load", (setup.es_agg_env, snapshot, setup.es_ids[stream], loads)),
        "raw": ("_contenders:raw_load", (row.backend, _where(setup.facta_agg), stream, loads, snapshot)),
    }
    return _run_read_jobs(row, args, jobs, setup.expected_account, "loads")


def run_log(row: Row, args: argparse.Namespace) -> Outcome:
    setup = loaded(row.backend, args)
    jobs = {
        "facta": ("_contenders:facta_log", (setup.facta_log.url,)),
        "eventsourcing": ("_contenders:es_log", (setup.es_log_env,)),
        "raw": ("_contenders:raw_log", (row.backend, _where(setup.facta_log))),
    }
    return _run_read_jobs(row, args, jobs, setup.expected_log, "events")


def _run_read_jobs(row: Row, args: argparse.Namespace, jobs: dict[str, tuple[str, tuple[Any, ...]]],
                   expected: Any, what: str) -> Outcome:
    def one(workers: dict[str, Worker], r: int, c: str) -> tuple[float, str]:
        target, job_args = jobs[c]
        timed = workers[c].call(target, *job_args)
        if timed.check != expected:
            raise SystemExit(f"row {row.number} {c}: got {timed.check}, expected {expected}")
        return timed.items / timed.seconds, f"{timed.items:,} {what} in {timed.seconds:.3f} s, checked {timed.check}"

    return run_rounds(row, args, READ_PRELOAD, one)


# row 11 ------------------------------------------------------------------------------------------

REBUILD_PRELOAD = {
    "facta": ["_contenders", "facta.eventstore", "facta.projections.replay", "facta.projections.reference"],
    "eventsourcing": ["_contenders", "projections"],
    "raw": ["_contenders", "projections"],
}


def run_rebuild(row: Row, args: argparse.Namespace) -> Outcome:
    import psycopg
    import projections
    from facta.projections.reference import AccountBalances

    t0 = time.perf_counter()
    # facta's and eventsourcing's stores, loaded in bulk and rebuilt at once: no ANALYZE,
    # autovacuum off for facta's events table (its statistics are reported with the row).
    setup = projections.prepare(args.rebuild_events, None, "not used", analyze=False)
    print(f"  rebuild: {setup.mix_events:,} events loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)
    handled = setup.handled[AccountBalances.name]
    env = projections.es_env(setup.es)
    table = projections.live_table(AccountBalances)
    with psycopg.connect(setup.facta.dsn) as conn:
        stats = conn.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'facta_events'").fetchone()
    analyzed = "with" if stats and stats[0] else "without"
    out = Outcome(note=f"{setup.mix_events:,} events in the log, account_balances handles {handled:,};"
                       f" facta_events {analyzed} planner statistics")
    digests: set[tuple[int, str]] = set()

    def one(workers: dict[str, Worker], r: int, c: str) -> tuple[float, str]:
        if c == "facta":
            timed = workers[c].call("_contenders:facta_rebuild", setup.facta.url, BATCH)
            dsn, name = setup.facta.dsn, table
        elif c == "raw":
            timed = workers[c].call("_contenders:raw_rebuild", setup.facta, BATCH)
            dsn, name = setup.facta.dsn, table + projections.RAW_SUFFIX
        else:
            with psycopg.connect(setup.es.dsn, autocommit=True) as conn:  # a fresh, empty read model
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
                for ddl in projections.table_ddl(AccountBalances):
                    conn.execute(ddl)  # type: ignore[arg-type]
            timed = workers[c].call("_contenders:es_rebuild", env, setup.es.dsn, BATCH)
            dsn, name = setup.es.dsn, table
        found = asyncio.run(projections.digest(dsn, AccountBalances, name))
        digests.add(found)
        if timed.check != handled or len(digests) != 1 or found[0] == 0:
            raise SystemExit(f"row 11 {c}: handled {timed.check} of {handled} events; read model"
                             f" {found} (every contender's so far: {sorted(digests)})")
        return timed.items / timed.seconds, (f"{timed.items:,} events in {timed.seconds:.2f} s, read model"
                                             f" {found[0]:,} rows md5 {found[1][:8]} as the others'")

    try:
        return run_rounds(row, args, REBUILD_PRELOAD, one, out)
    finally:
        setup.facta.drop()
        setup.es.drop()


# rows 12 and 13 ------------------------------------------------------------------------------------

BROKER: list[Any] = []
RELAY_PRELOAD = {"facta": ["_contenders", "relay"], "raw": ["_contenders", "relay"]}


def broker() -> Any:
    if not BROKER:
        from facta.dev.devbroker import start_broker

        t0 = time.perf_counter()
        BROKER.append(start_broker("apache"))
        print(f"  Apache Kafka up on {BROKER[0].bootstrap} in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
              flush=True)
    return BROKER[0]


def run_relay(row: Row, args: argparse.Namespace) -> Outcome:
    from _common import fresh_database

    kafka = broker()
    # What the relay helpers read of a broker, picklable for the workers.
    where = SimpleNamespace(bootstrap=kafka.bootstrap, supports_idempotence=kafka.supports_idempotence,
                            reliable_end_offsets=kafka.reliable_end_offsets, kind=kafka.kind)

    def one(workers: dict[str, Worker], r: int, c: str) -> tuple[float, str]:
        fresh = fresh_database(row.backend, f"v{row.number}_{c}")
        try:
            prefix = f"versus.{RUN_ID}.{row.number}.{c}.r{r}"
            timed = workers[c].call("_contenders:relay_run", c, fresh, where, args.relay_events, prefix)
        finally:
            fresh.drop()
        return timed.items / timed.seconds, f"{timed.items:,} events in {timed.seconds:.2f} s, records counted"

    return run_rounds(row, args, RELAY_PRELOAD, one)


# row 14 --------------------------------------------------------------------------------------------

IMPORTS = {
    "facta": "import facta.eventstore",
    "eventsourcing": ("import eventsourcing.application, eventsourcing.domain, eventsourcing.persistence,"
                      " eventsourcing.postgres, eventsourcing.sqlite, eventsourcing.projection, eventsourcing.system"),
}


def run_imports(row: Row, args: argparse.Namespace) -> Outcome:
    out = Outcome()
    for r in range(args.rounds):
        for c in rotated(row.contenders, r):
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking
            # parent (this big process), while VmHWM belongs to the new program's memory.
            code = f"{IMPORTS[c]}\nimport os\nprint(open(f'/proc/{{os.getpid()}}/status').read())"
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"row 14 {c}: {done.stderr.strip().splitlines()[-1]}")
            hwm = next(line for line in done.stdout.splitlines() if line.startswith("VmHWM:"))
            mib = int(hwm.split()[1]) / 1024
            out.add(c, mib)
            log_line(row, r, c, f"{mib:.1f} MiB after {IMPORTS[c].split(',')[0]}...")
    return out


# -- the table ------------------------------------------------------------------------------------------


def rows_of(args: argparse.Namespace) -> list[Row]:
    both = ("facta", "raw")
    return [
        Row(1, "SQLite append, 1,000 events/tx", "events/s", run_append_batch, "sqlite", 1.0, 0.5),
        Row(2, f"SQLite append, 1 event/tx, {WRITERS} processes", "events/s", run_append_single, "sqlite", 1.0, 0.5),
        Row(3, "PostgreSQL append, 1,000 events/tx", "events/s", run_append_batch, "postgresql", 1.5, 0.5),
        Row(4, f"PostgreSQL append, 1 event/tx, {WRITERS} processes", "events/s", run_append_single, "postgresql",
            1.5, 0.5),
        Row(5, f"SQLite load {args.aggregate_events:,}-event aggregate", "loads/s",
            lambda row, a: run_load(row, a, False), "sqlite", 1.0),
        Row(6, f"PostgreSQL load {args.aggregate_events:,}-event aggregate", "loads/s",
            lambda row, a: run_load(row, a, False), "postgresql", 1.0),
        Row(7, "SQLite load, snapshot at head", "loads/s", lambda row, a: run_load(row, a, True), "sqlite", 1.0),
        Row(8, "PostgreSQL load, snapshot at head", "loads/s", lambda row, a: run_load(row, a, True), "postgresql",
            1.0),
        Row(9, f"SQLite read+decode {args.log_events:,} log events", "events/s", run_log, "sqlite", 1.2),
        Row(10, f"PostgreSQL read+decode {args.log_events:,} log events", "events/s", run_log, "postgresql", 1.2),
        Row(11, f"PostgreSQL rebuild from {args.rebuild_events:,} events", "events/s", run_rebuild, "postgresql",
            1.5, starred=("eventsourcing", "raw")),
        Row(12, f"SQLite relay {args.relay_events:,} events to Kafka", "events/s", run_relay, "sqlite", None, 0.75,
            contenders=both, starred=("raw",)),
        Row(13, f"PostgreSQL relay {args.relay_events:,} events to Kafka", "events/s", run_relay, "postgresql", None,
            0.75, contenders=both, starred=("raw",)),
        Row(14, "memory after import", "MiB", run_imports, contenders=("facta", "eventsourcing")),
    ]


def median(values: Sequence[float]) -> float:
    import statistics

    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    return f"{median(values):.2f}x ({min(values):.2f}-{max(values):.2f})" if values else "-"


def figure(values: Sequence[float] | None, unit: str) -> str:
    if not values:
        return "-"
    m = median(values)
    short = {"events/s": "ev/s", "loads/s": "loads/s", "MiB": "MiB"}[unit]
    return f"{m:,.1f} {short}" if unit == "MiB" or m < 100 else f"{m:,.0f} {short}"


def aim_text(row: Row, out: Outcome) -> str:
    parts = []
    if row.unit == "MiB":
        facta = median(out.rates["facta"])
        parts.append(f"facta < 45 MiB{'' if facta < 45 else ' MISSED'}")
    for other, aim in (("eventsourcing", row.aim_es), ("raw", row.aim_raw)):
        values = ratios(out, other)
        if aim is not None and values:
            short = "es" if other == "eventsourcing" else "raw"
            shown = f"{aim:.1f}" if round(aim, 1) == aim else f"{aim:.2f}"
            parts.append(f"facta/{short} >= {shown}x{'' if median(values) >= aim else ' MISSED'}")
    return "; ".join(parts)


def render(rows: Sequence[Row], outcomes: dict[int, Outcome]) -> str:
    from _common import render_table

    head = ("row", "facta", "eventsourcing", "raw", "facta/es", "facta/raw", "peak MiB facta/es/raw", "aim")
    lines: list[tuple[str, ...]] = []
    for row in rows:
        out = outcomes[row.number]
        if row.unit == "MiB":
            vs_es, vs_raw = "-", "-"
        else:
            vs_es, vs_raw = spread(ratios(out, "eventsourcing")), spread(ratios(out, "raw"))
        peaks = " / ".join(
            (f"{out.peaks[c]:.0f}{'*' if c in row.starred else ''}" if c in out.peaks else "-") for c in CONTENDERS
        )
        lines.append((
            f"{row.number:>2} {row.title}",
            figure(out.rates.get("facta"), row.unit),
            figure(out.rates.get("eventsourcing"), row.unit),
            figure(out.rates.get("raw"), row.unit),
            vs_es,
            vs_raw,
            peaks if out.peaks else "-",
            aim_text(row, out),
        ))
    return render_table(head, lines, {1, 2, 3, 4, 5, 6})


# -- main -------------------------------------------------------------------------------------------------


def parse_rows(text: Sequence[str]) -> list[int]:
    picked: list[int] = []
    for part in text:
        for item in part.split(","):
            lo, _, hi = item.partition("-")
            try:
                first, last = int(lo), int(hi or lo)
            except ValueError:
                raise SystemExit(f"--rows: {item!r} is not a row number or range such as 9-11") from None
            if not 1 <= first <= last <= 14:
                raise SystemExit(f"--rows: {item!r} is outside rows 1-14")
            picked.extend(range(first, last + 1))
    return sorted(set(picked))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=["1-14"], help="rows to run: numbers and ranges (default 1-14)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the order of contenders rotated each (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: every row with small sizes (3,000 events, 1,000-event aggregate), one round")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    args.rows = parse_rows(args.rows)
    # Sizes: the row definitions' (10,000-event aggregate, 100,000 events), fewer repetitions.
    args.batch_events, args.appends = 30_000, 500  # per contender and round; appends per writer
    args.aggregate_events, args.loads, args.snapshot_loads = AGGREGATE_EVENTS, 8, 1000
    args.log_events, args.rebuild_events, args.relay_events = LOG_EVENTS, REBUILD_EVENTS, RELAY_EVENTS
    if args.quick:
        args.rounds = 1
        args.batch_events, args.appends = 2_000, 20
        args.aggregate_events, args.loads, args.snapshot_loads = 1_000, 2, 20
        args.log_events = args.rebuild_events = args.relay_events = 3_000
    return args


def main(argv: Sequence[str] | None = None) -> None:
    from _common import load_average, machine_facts

    args = parse_args(argv)
    started = time.perf_counter()
    rows = [row for row in rows_of(args) if row.number in args.rows]
    backends = sorted({row.backend for row in rows if row.backend}) or ["sqlite"]
    for line in machine_facts(backends):
        print(line)
    print(f"rows {', '.join(map(str, args.rows))}; {args.rounds} round(s), contenders in rotated order; rates are"
          f" medians, ratios medians of per-round ratios (min-max); each contender in its own worker process"
          f" (peak MiB: its high-water RSS; * = the worker also imports facta for shared bench code)\n", flush=True)
    outcomes: dict[int, Outcome] = {}
    try:
        for row in rows:
            t0 = time.perf_counter()
            outcomes[row.number] = row.run(row, args)
            print(f"  row {row.number:>2} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        for setup in LOADED.values():
            setup.drop()
        for b in BROKER:
            b.close()
    print(render(rows, outcomes))
    notes = [f"row {n}: {o.note}" for n, o in outcomes.items() if o.note]
    if notes:
        print("; ".join(notes))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


if __name__ == "__main__":
    main()
