"""Append throughput: facta beside the raw driver and eventsourcing 9.5, in one run.

Two workloads, each run on SQLite (a WAL file, synchronous=FULL) and PostgreSQL:

(a) batch    1,000 events per transaction, one stream per transaction, the expected
             version set correctly (each stream takes three batches: 0, 1000, 2000).
(b) single   one event per transaction from 8 writer processes at once (multiprocessing
             spawn, so the GIL is never the limit), each writer on its own 4 streams,
             expected version set; events / wall time from a start barrier.

Contenders, each on a fresh database (or file) of its own:

raw            the fastest raw path of the driver into facta's own table, schema made by
               facta's migrations (same columns, indexes and JSON payloads):
               (a) asyncpg COPY (``copy_records_to_table``) in a transaction / sqlite3
               ``executemany`` in BEGIN IMMEDIATE; (b) asyncpg BEGIN; INSERT; COMMIT /
               sqlite3 BEGIN IMMEDIATE; INSERT; COMMIT. No version check, no lock.
               Rows are fully built (ids, times, JSON) before the clock starts.
eventsourcing  eventsourcing 9.5's application recorder (psycopg / sqlite3): its own domain
               events (``_es_models.ESTelemetry``, the same five fields), built before the
               clock starts; the clock covers its mapper (``to_stored_event``: JSON
               transcoding, as facta's clock covers facta's encoding) and ``insert_events``
               with 1,000 events (a) or one (b). No aggregates.
facta          ``EventStore.append`` with DomainEvent instances (a flat five-field ride
               telemetry event); the clock includes facta's own work: event ids, times,
               JSON encoding, the version check, the append lock (PostgreSQL).

Each contender runs ``--rounds`` times, in rotated order, and does one untimed warm-up
write first (its rows are counted when the rows are checked). Figures are medians over
rounds; ratios are medians of the per-round ratios.

    python bench/append.py                       # both backends, a few minutes
    python bench/append.py --backend postgresql
    python bench/append.py --quick               # smoke run, < 30 s
    python bench/append.py --profile --backend sqlite   # cProfile facta's batch append
    python bench/append.py --positions           # PostgreSQL: revision 0008's facta_append vs 0007's
    python bench/append.py --telemetry           # the cost of facta's traces and metrics (issue 15)

``--positions`` measures what one unbroken range of positions per append costs: facta
alone, with revision 0008's ``facta_append`` (positions from ``facta_take_positions``)
against 0007's (the sequence's default per row), each on a fresh database migrated to
the head, with 0007's function put back in one of them. Each round runs 10 slices; in a
slice every writer appends to one database and then to the other (the first one
alternating), all writers on the same one at a time, so the two contenders see the same
machine within a second of each other. Workloads: 1 event/tx from 1 and from 8 writer
processes, 1,000 events/tx from 1 and from 4. Besides events/s it reads the server's own
time per ``facta_append`` call from ``pg_stat_user_functions`` (``track_functions =
'pl'`` on the fresh databases).

``--telemetry`` measures what facta's OpenTelemetry traces and metrics cost an append:
facta alone, as three contenders each in a process of its own (``_telemetry``): "none"
(``facta.tracing.instrument(False)`` and ``facta.metrics.instrument(False)``), "off" (no
SDK: the default) and "on" (SDK providers, spans batched to an exporter that drops them,
a metric reader that never exports). Workloads on each backend: (a) 1,000-event appends,
each to a new stream, 2 a unit; (b) one-event appends round robin over 4 streams, 100 a
unit. Each round gives every contender a fresh database (and an untimed warm-up append
of each size); then ``TELEMETRY_SLICES`` slices, in each of which every contender runs
one unit, in each of the six orders in turn, after a ``gc.collect()``. A contender's
round time is the sum of its
slices (wall time and its process's CPU time); reported: events/s and the medians
(min-max) of the per-round ratios of each contender's wall and CPU time over "none"'s,
against the aim "off" <= 1.02x, and "on"'s cost. Rows are counted after every round."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import multiprocessing as mp
import pstats
import queue
import sqlite3
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from _common import (
    BENCH_REGISTRY,
    Fresh,
    Result,
    Telemetry,
    fresh_database,
    load_average,
    machine_facts,
    make_events,
    median,
    migrate,
    now_utc,
    render_table,
)

# eventsourcing and facta are imported where a contender first uses them, so that a
# process running one contender (bench/versus.py's workers, the writer processes here)
# carries only that contender's libraries in its peak memory.

CONTENDERS = ("raw", "eventsourcing", "facta")
BACKENDS = ("sqlite", "postgresql")
WRITERS = 8
BATCH = 1000
BATCHES_PER_STREAM = 3
STREAMS_PER_WRITER = 4
STREAM_TYPE = "ride"
COLUMNS = (
    "event_id",
    "stream_id",
    "stream_type",
    "version",
    "event_type",
    "schema_version",
    "payload",
    "occurred_at",
    "actor",
    "correlation_id",
    "causation_id",
)
PG_INSERT = (
    f"INSERT INTO facta_events ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(COLUMNS)))})"
)
SQLITE_INSERT = f"INSERT INTO facta_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
AIM_RAW = 0.6
AIM_ES_PG = 3.0
BARRIER_TIMEOUT = 300.0


# -- rows as each contender takes them ----------------------------------------------------


@dataclass(frozen=True)
class Tx:
    """One transaction of the plan: events for one stream at a known version."""

    stream: str
    expected_version: int
    events: Sequence[Telemetry]


def _sqlite_time(t: datetime) -> str:
    # What SQLAlchemy's DateTime writes on SQLite: naive UTC text with microseconds.
    return t.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def raw_rows(tx: Tx, backend: str) -> list[tuple[Any, ...]]:
    """The rows facta would write for ``tx``, ready for the driver."""
    occurred = now_utc()
    rows = []
    for n, event in enumerate(tx.events):
        eid = uuid.uuid4()
        rows.append(
            (
                eid if backend == "postgresql" else eid.hex,
                tx.stream,
                STREAM_TYPE,
                tx.expected_version + n + 1,
                event.event_type,
                event.schema_version,
                event.model_dump_json(),
                occurred if backend == "postgresql" else _sqlite_time(occurred),
                None,
                None,
                None,
            )
        )
    return rows


def es_events(tx: Tx, originators: dict[str, uuid.UUID]) -> list[Any]:
    """eventsourcing's own domain events for ``tx`` (the same field values), built before
    any clock starts; its mapper turns them into stored events inside the timed work."""
    from _es_models import ESTelemetry

    oid = originators.setdefault(tx.stream, uuid.uuid4())
    at = now_utc()
    return [
        ESTelemetry(originator_id=oid, originator_version=tx.expected_version + n + 1, timestamp=at,
                    ride_id=event.ride_id, lat=event.lat, lon=event.lon, speed_kmh=event.speed_kmh,
                    distance_m=event.distance_m)
        for n, event in enumerate(tx.events)
    ]


def es_mapper() -> Any:
    """eventsourcing's mapper with its JSON transcoder and the transcodings an
    ``Application`` registers by default (UUIDs, datetimes, decimals)."""
    from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex

    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


def _pg_parts(dsn: str) -> dict[str, Any]:
    u = urlsplit(dsn)
    return {
        "dbname": u.path.lstrip("/"),
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username or "postgres",
        "password": u.password or "",
    }


def _sqlite_connect(path: str) -> sqlite3.Connection:
    # The same settings facta's SQLite engine uses (synchronous stays at its default, FULL).
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _es_recorder(fresh: Fresh, pool_size: int = 1) -> tuple[Any, Any]:
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
    from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

    if fresh.backend == "postgresql":
        pg_ds = PostgresDatastore(**_pg_parts(fresh.dsn), pool_size=pool_size)
        return pg_ds, PostgresApplicationRecorder(pg_ds)
    lite_ds = SQLiteDatastore(fresh.path, lock_timeout=60, pool_size=pool_size)
    return lite_ds, SQLiteApplicationRecorder(lite_ds)


def count_rows(fresh: Fresh, table: str) -> int:
    import psycopg

    if fresh.backend == "postgresql":
        with psycopg.connect(fresh.dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    else:
        with sqlite3.connect(fresh.path) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def table_of(contender: str) -> str:
    return "stored_events" if contender == "eventsourcing" else "facta_events"


# -- (a) batch appends, one process -------------------------------------------------------


def batch_plan(total: int) -> tuple[Tx, list[Tx]]:
    """A warm-up transaction and the timed ones: ``total`` events in 1,000-event batches."""
    n_tx = max(1, total // BATCH)
    events = make_events((n_tx + 1) * BATCH)
    warmup = Tx("warmup", 0, events[:BATCH])
    n_streams = max(1, -(-n_tx // BATCHES_PER_STREAM))
    txs = [
        Tx(f"ride-{i % n_streams}", (i // n_streams) * BATCH, events[(i + 1) * BATCH : (i + 2) * BATCH])
        for i in range(n_tx)
    ]
    return warmup, txs


async def _batch_raw_pg(fresh: Fresh, warmup: Tx, txs: list[Tx]) -> float:
    prepared = [raw_rows(tx, "postgresql") for tx in [warmup, *txs]]
    conn = await asyncpg.connect(fresh.dsn)
    try:
        first, *timed = prepared
        async with conn.transaction():
            await conn.copy_records_to_table("facta_events", records=first, columns=COLUMNS)
        t0 = time.perf_counter()
        for rows in timed:
            async with conn.transaction():
                await conn.copy_records_to_table("facta_events", records=rows, columns=COLUMNS)
        return time.perf_counter() - t0
    finally:
        await conn.close()


def _batch_raw_sqlite(fresh: Fresh, warmup: Tx, txs: list[Tx]) -> float:
    first, *timed = [raw_rows(tx, "sqlite") for tx in [warmup, *txs]]
    conn = _sqlite_connect(fresh.path)

    def write(rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(SQLITE_INSERT, rows)
        conn.execute("COMMIT")

    try:
        write(first)
        t0 = time.perf_counter()
        for rows in timed:
            write(rows)
        return time.perf_counter() - t0
    finally:
        conn.close()


def _batch_es(fresh: Fresh, warmup: Tx, txs: list[Tx]) -> float:
    originators: dict[str, uuid.UUID] = {}
    first, *timed = [es_events(tx, originators) for tx in [warmup, *txs]]
    mapper = es_mapper()
    datastore, recorder = _es_recorder(fresh)
    try:
        recorder.insert_events([mapper.to_stored_event(e) for e in first])
        t0 = time.perf_counter()
        for batch in timed:
            recorder.insert_events([mapper.to_stored_event(e) for e in batch])
        return time.perf_counter() - t0
    finally:
        datastore.close()


async def _batch_facta(fresh: Fresh, warmup: Tx, txs: list[Tx]) -> float:
    from facta.eventstore import EventStore

    store = await EventStore.open(fresh.url, registry=BENCH_REGISTRY)
    try:
        await store.append(warmup.stream, STREAM_TYPE, warmup.events, expected_version=warmup.expected_version)
        t0 = time.perf_counter()
        for tx in txs:
            await store.append(tx.stream, STREAM_TYPE, tx.events, expected_version=tx.expected_version)
        return time.perf_counter() - t0
    finally:
        await store.close()


def _create_schema(contender: str, fresh: Fresh) -> None:
    """eventsourcing makes its own table; facta and raw share facta's migrated schema."""
    if contender == "eventsourcing":
        datastore, recorder = _es_recorder(fresh)
        recorder.create_table()
        datastore.close()
    else:
        asyncio.run(migrate(fresh.url))


def run_batch(backend: str, contender: str, warmup: Tx, txs: list[Tx]) -> Result:
    fresh = fresh_database(backend, f"a_{contender[:5]}")
    try:
        _create_schema(contender, fresh)
        if contender == "raw":
            seconds = (
                asyncio.run(_batch_raw_pg(fresh, warmup, txs))
                if backend == "postgresql"
                else _batch_raw_sqlite(fresh, warmup, txs)
            )
        elif contender == "eventsourcing":
            seconds = _batch_es(fresh, warmup, txs)
        else:
            seconds = asyncio.run(_batch_facta(fresh, warmup, txs))
        timed = sum(len(tx.events) for tx in txs)
        _check_rows(fresh, contender, timed + len(warmup.events))
        return Result(contender, timed, seconds)
    finally:
        fresh.drop()


def _check_rows(fresh: Fresh, contender: str, expected: int) -> None:
    found = count_rows(fresh, table_of(contender))
    if found != expected:
        raise SystemExit(f"{contender} on {fresh.backend}: expected {expected} rows, found {found}")


# -- (b) single-event appends from 8 processes ----------------------------------------------


@dataclass(frozen=True)
class WriterTask:
    contender: str
    fresh: Fresh
    writer: int
    appends: int
    # --positions only (facta): events per append, and the database to alternate with.
    batch: int = 1
    paired: Fresh | None = None
    slices: int = 0
    active: bool = True


def writer_plan(writer: int, appends: int, batch: int = 1) -> list[Tx]:
    """The writer's transactions, the first one being the untimed warm-up: ``appends + 1``
    of ``batch`` events each, round robin over the writer's own streams, each at its
    current version."""
    events = make_events((appends + 1) * batch, ride=f"w{writer}")
    versions = [0] * STREAMS_PER_WRITER
    plan = []
    for i in range(appends + 1):
        s = i % STREAMS_PER_WRITER
        plan.append(Tx(f"w{writer}-s{s}", versions[s], events[i * batch : (i + 1) * batch]))
        versions[s] += batch
    return plan


Timing = tuple[float, float, int, int]  # start, end, timed events, retries


async def _single_raw_pg(task: WriterTask, plan: list[Tx], barrier: Any) -> Timing:
    rows = [raw_rows(tx, "postgresql")[0] for tx in plan]
    conn = await asyncpg.connect(task.fresh.dsn)
    try:
        async with conn.transaction():
            await conn.execute(PG_INSERT, *rows[0])
        barrier.wait(BARRIER_TIMEOUT)
        t0 = time.perf_counter()
        for row in rows[1:]:
            async with conn.transaction():
                await conn.execute(PG_INSERT, *row)
        return t0, time.perf_counter(), len(rows) - 1, 0
    finally:
        await conn.close()


def _single_raw_sqlite(task: WriterTask, plan: list[Tx], barrier: Any) -> Timing:
    rows = [raw_rows(tx, "sqlite")[0] for tx in plan]
    conn = _sqlite_connect(task.fresh.path)
    retries = 0

    def one(row: tuple[Any, ...]) -> None:
        nonlocal retries
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # busy beyond the timeout: try again
                retries += 1
                continue
            conn.execute(SQLITE_INSERT, row)
            conn.execute("COMMIT")
            return

    try:
        return (*_timed(one, rows, barrier), retries)
    finally:
        conn.close()


T = TypeVar("T")


def _timed(one: Callable[[T], None], items: Sequence[T], barrier: Any) -> tuple[float, float, int]:
    """Write the first item untimed (warm-up), meet the other writers, time the rest."""
    one(items[0])
    barrier.wait(BARRIER_TIMEOUT)
    t0 = time.perf_counter()
    for item in items[1:]:
        one(item)
    return t0, time.perf_counter(), len(items) - 1


def _single_es(task: WriterTask, plan: list[Tx], barrier: Any) -> Timing:
    from eventsourcing.persistence import OperationalError as ESOperationalError

    originators: dict[str, uuid.UUID] = {}
    batches = [es_events(tx, originators) for tx in plan]
    mapper = es_mapper()
    datastore, recorder = _es_recorder(task.fresh)
    retries = 0

    def one(events: list[Any]) -> None:
        nonlocal retries
        batch = [mapper.to_stored_event(e) for e in events]
        while True:
            try:
                recorder.insert_events(batch)
                return
            except ESOperationalError:  # SQLite "database is locked" after its timeout
                retries += 1

    try:
        return (*_timed(one, batches, barrier), retries)
    finally:
        datastore.close()


async def _single_facta(task: WriterTask, plan: list[Tx], barrier: Any) -> Timing:
    from facta.eventstore import EventStore

    store = await EventStore.open(task.fresh.url, registry=BENCH_REGISTRY)
    try:
        first, *rest = plan
        await store.append(first.stream, STREAM_TYPE, first.events, expected_version=first.expected_version)
        barrier.wait(BARRIER_TIMEOUT)
        t0 = time.perf_counter()
        for tx in rest:
            await store.append(tx.stream, STREAM_TYPE, tx.events, expected_version=tx.expected_version)
        return t0, time.perf_counter(), sum(len(tx.events) for tx in rest), 0
    finally:
        await store.close()


def _run_writer_task(task: WriterTask, barrier: Any) -> Any:
    if task.paired is not None:
        return asyncio.run(_paired_facta(task, barrier))
    plan = writer_plan(task.writer, task.appends, task.batch)
    pg = task.fresh.backend == "postgresql"
    if task.contender == "raw":
        return asyncio.run(_single_raw_pg(task, plan, barrier)) if pg else _single_raw_sqlite(task, plan, barrier)
    if task.contender == "eventsourcing":
        return _single_es(task, plan, barrier)
    return asyncio.run(_single_facta(task, plan, barrier))


def _writer_main(tasks: Any, results: Any, barrier: Any) -> None:
    """A writer process: says it is ready (imports done), then runs tasks until it gets None."""
    results.put(("ready", None))
    while (task := tasks.get()) is not None:
        try:
            results.put(("ok", _run_writer_task(task, barrier), task.writer))
        except BaseException:
            barrier.abort()
            results.put(("error", f"writer {task.writer} ({task.contender}):\n{traceback.format_exc()}", task.writer))


class WriterPool:
    """``WRITERS`` spawned processes, started once and reused for every contender."""

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.size = size
        self.barrier = ctx.Barrier(size)
        self.results: Any = ctx.Queue()
        self.tasks: list[Any] = [ctx.Queue() for _ in range(size)]
        self.procs = [
            ctx.Process(
                target=_writer_main, args=(q, self.results, self.barrier), name=f"bench-writer-{i}", daemon=True
            )
            for i, q in enumerate(self.tasks)
        ]
        for p in self.procs:
            p.start()
        # Wait until every writer has imported everything, so that no process start-up
        # competes for the CPU with the first measurements.
        for _ in range(size):
            kind, _detail = self.results.get(timeout=300)
            assert kind == "ready", kind

    def run(self, contender: str, fresh: Fresh, appends: int) -> list[Timing]:
        return self.run_tasks([WriterTask(contender, fresh, i, appends) for i in range(self.size)])

    def run_tasks(self, tasks: Sequence[WriterTask]) -> list[Any]:
        """One task per writer; their results, in writer order."""
        contender, fresh = tasks[0].contender, tasks[0].fresh
        for q, task in zip(self.tasks, tasks, strict=True):
            q.put(task)
        replies = []
        for _ in range(self.size):
            try:
                replies.append(self.results.get(timeout=BARRIER_TIMEOUT + 600))
            except queue.Empty:
                raise SystemExit(f"{contender} on {fresh.backend}: writers did not finish") from None
        errors = [r[1] for r in replies if r[0] == "error"]
        if errors:
            self.barrier.reset()
            raise SystemExit("\n".join(errors))
        return [r[1] for r in sorted(replies, key=lambda r: r[2])]

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


def run_single(pool: WriterPool, backend: str, contender: str, appends: int) -> Result:
    fresh = fresh_database(backend, f"b_{contender[:5]}")
    try:
        _create_schema(contender, fresh)
        timings = pool.run(contender, fresh, appends)
        start = min(t[0] for t in timings)
        end = max(t[1] for t in timings)
        timed = sum(t[2] for t in timings)
        _check_rows(fresh, contender, timed + pool.size)
        return Result(contender, timed, end - start, retries=sum(t[3] for t in timings))
    finally:
        fresh.drop()


# -- report -------------------------------------------------------------------------------


LABELS = {
    ("raw", "postgresql", "a"): "raw asyncpg COPY",
    ("raw", "sqlite", "a"): "raw sqlite3 executemany",
    ("raw", "postgresql", "b"): "raw asyncpg INSERT",
    ("raw", "sqlite", "b"): "raw sqlite3 INSERT",
    ("eventsourcing", "postgresql", "a"): "eventsourcing 9.5",
    ("eventsourcing", "sqlite", "a"): "eventsourcing 9.5",
    ("eventsourcing", "postgresql", "b"): "eventsourcing 9.5",
    ("eventsourcing", "sqlite", "b"): "eventsourcing 9.5",
    ("facta", "postgresql", "a"): "facta",
    ("facta", "sqlite", "a"): "facta",
    ("facta", "postgresql", "b"): "facta",
    ("facta", "sqlite", "b"): "facta",
}


def _ratio(runs: dict[str, list[Result]], other: str) -> float:
    pairs = zip(runs["facta"], runs[other], strict=True)
    return median([f.rate / o.rate for f, o in pairs])


def _aims(workload: str, backend: str, vs_raw: float, vs_es: float) -> str:
    parts = [f">= {AIM_RAW}x raw: {'ok' if vs_raw >= AIM_RAW else 'MISS'}"]
    if workload == "b" and backend == "postgresql":
        parts.append(f">= {AIM_ES_PG:g}x es: {'ok' if vs_es >= AIM_ES_PG else 'MISS'}")
    return "; ".join(parts)


def render(all_runs: dict[tuple[str, str], dict[str, list[Result]]], titles: dict[str, str]) -> str:
    head = (
        "workload",
        "backend",
        "contender",
        "events",
        "events/s",
        "min-max events/s",
        "facta/raw",
        "facta/es",
        "aim",
    )
    lines: list[tuple[str, ...]] = []
    for (workload, backend), runs in all_runs.items():
        vs_raw, vs_es = _ratio(runs, "raw"), _ratio(runs, "eventsourcing")
        for i, contender in enumerate(CONTENDERS):
            rs = runs[contender]
            rates = [r.rate for r in rs]
            retries = sum(r.retries for r in rs)
            label = LABELS[(contender, backend, workload)] + (f" ({retries} retries)" if retries else "")
            row = [
                titles[workload] if i == 0 else "",
                backend if i == 0 else "",
                label,
                f"{rs[0].events:,}",
                f"{median(rates):,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                "",
                "",
                "",
            ]
            if contender == "facta":
                row[6:] = [f"{vs_raw:.2f}x", f"{vs_es:.2f}x", _aims(workload, backend, vs_raw, vs_es)]
            lines.append(tuple(row))
        lines.append(("",) * len(head))
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    numeric = {3, 4, 5, 6, 7}

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [fmt(head), fmt(["-" * w for w in widths])]
    out += [fmt(r) for r in lines[:-1]]
    return "\n".join(out)


# -- --positions: revision 0008's facta_append against 0007's ------------------------------

#: The revision scripts whose ``facta_append`` each ``--positions`` contender runs.
POSITION_FUNCTIONS = {"0007": "0007_append_fast_path", "0008": "0008_contiguous_positions"}
#: (label, events per append, writer processes, appends per writer and slice).
POSITION_WORKLOADS = (("1 event/tx", 1, 1, 100), ("1 event/tx", 1, WRITERS, 25), ("1,000 events/tx", BATCH, 1, 2),
                      ("1,000 events/tx", BATCH, 4, 1))
#: Slices per round: each slice runs 0007 then 0008 (or the other way round, alternately).
POSITION_SLICES = 10

SliceTiming = tuple[int, str, float, float, int]  # slice, revision, start, end, events


async def _paired_facta(task: WriterTask, barrier: Any) -> list[SliceTiming]:
    """A --positions writer: a store on each database (``fresh``: 0007, ``paired``:
    0008), one warm-up append of ``batch`` events on each, then ``slices`` slices of
    ``appends`` appends on one database and then the other; every writer meets the others
    at the barrier before each part, so all writers run one contender at a time. An idle
    writer only meets the others."""
    from facta.eventstore import EventStore

    assert task.paired is not None
    fresh = {"0007": task.fresh, "0008": task.paired}
    out: list[SliceTiming] = []
    stores = {rev: await EventStore.open(f.url, registry=BENCH_REGISTRY) for rev, f in fresh.items()} if task.active else {}
    try:
        plan = writer_plan(task.writer, task.slices * task.appends, task.batch)
        for store in stores.values():
            await store.append(plan[0].stream, STREAM_TYPE, plan[0].events, expected_version=plan[0].expected_version)
        for k in range(task.slices):
            for rev in ("0007", "0008") if k % 2 == 0 else ("0008", "0007"):
                barrier.wait(BARRIER_TIMEOUT)
                if not task.active:
                    continue
                t0 = time.perf_counter()
                part = plan[1 + k * task.appends : 1 + (k + 1) * task.appends]
                for tx in part:
                    await stores[rev].append(tx.stream, STREAM_TYPE, tx.events, expected_version=tx.expected_version)
                out.append((k, rev, t0, time.perf_counter(), sum(len(tx.events) for tx in part)))
        return out
    finally:
        for store in stores.values():
            await store.close()


def _function_time_us(fresh: Fresh, calls_at_least: int) -> float:
    """facta_append's mean time per call in microseconds (``total_time``, which includes
    ``facta_take_positions`` it calls), once every writer's backend has reported. The
    warm-up calls (one per writer, the same size) are in it, and each backend's first
    call compiles the function."""
    import psycopg

    deadline = time.monotonic() + 30
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT calls, total_time FROM pg_stat_user_functions WHERE funcname = 'facta_append'"
            ).fetchone()
            calls, total_ms = row if row is not None else (0, 0.0)
            if calls >= calls_at_least:
                return float(total_ms) * 1000.0 / int(calls)
            if time.monotonic() > deadline:  # a backend's statistics never arrived
                raise SystemExit(f"pg_stat_user_functions counts {calls} facta_append calls, not {calls_at_least}")
            time.sleep(0.05)


def _positions_database(revision: str) -> Fresh:
    """A fresh database at the head, running ``revision``'s facta_append, with
    ``track_functions = 'pl'`` for the sessions that connect next."""
    import importlib

    import psycopg

    fresh = fresh_database("postgresql", f"p{revision}")
    asyncio.run(migrate(fresh.url))
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{fresh.dbname}" SET track_functions = \'pl\'')
        if revision != "0008":
            module = importlib.import_module(f"facta.migrations.versions.{POSITION_FUNCTIONS[revision]}")
            conn.execute(module._FACTA_APPEND)
    return fresh


@dataclass
class PositionsRound:
    rate_ratios: list[float]  # 0008 / 0007 events/s, per slice
    rates: dict[str, list[float]]  # events/s per slice
    server_us: dict[str, float]  # facta_append's time per call over the round


def run_positions_round(pool: WriterPool, batch: int, writers: int, appends: int, slices: int) -> PositionsRound:
    old, new = _positions_database("0007"), _positions_database("0008")
    try:
        tasks = [
            WriterTask("facta", old, i, appends, batch=batch, paired=new, slices=slices, active=i < writers)
            for i in range(pool.size)
        ]
        timings: list[SliceTiming] = [t for per_writer in pool.run_tasks(tasks) for t in per_writer]
        rates: dict[str, list[float]] = {"0007": [], "0008": []}
        for k in range(slices):
            for rev in rates:
                part = [t for t in timings if t[0] == k and t[1] == rev]
                rates[rev].append(sum(t[4] for t in part) / (max(t[3] for t in part) - min(t[2] for t in part)))
        per_db = (slices * appends + 1) * writers
        for fresh in (old, new):
            _check_rows(fresh, "facta", per_db * batch)
        server = {"0007": _function_time_us(old, per_db), "0008": _function_time_us(new, per_db)}
        ratios = [n / o for n, o in zip(rates["0008"], rates["0007"], strict=True)]
        return PositionsRound(ratios, rates, server)
    finally:
        old.drop()
        new.drop()


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def run_positions(args: argparse.Namespace) -> None:
    """``--positions``: see the module docstring."""
    slices = 2 if args.quick else POSITION_SLICES
    for line in machine_facts(["postgresql"]):
        print(line)
    print(f"rounds: {args.rounds}, each a fresh database per contender and {slices} slices; in each slice every"
          " writer appends to 0007's then 0008's database (or the other way round, alternately), all writers on one"
          " at a time. events/s: median (min-max) over all slices; 0008/0007: median (min-max) of the per-slice"
          " ratios; server us: facta_append's own time per call (pg_stat_user_functions), median (min-max) over"
          " rounds, and the median (min-max) of per-round ratios\n", flush=True)
    started = time.perf_counter()
    pool = WriterPool(WRITERS)
    rounds: dict[tuple[str, int], list[PositionsRound]] = {}
    try:
        for r in range(args.rounds):
            for label, batch, writers, appends in POSITION_WORKLOADS:
                one = run_positions_round(pool, batch, writers, appends, slices)
                rounds.setdefault((label, writers), []).append(one)
                print(f"  round {r + 1}  {label:<15} x{writers}  0008/0007 events/s {median(one.rate_ratios):.2f}"
                      f"  facta_append us/call 0007 {one.server_us['0007']:.1f}, 0008 {one.server_us['0008']:.1f}",
                      file=sys.stderr, flush=True)
    finally:
        pool.close()
    head = ("workload", "writers", "events/s 0007", "events/s 0008", "0008/0007", "server us 0007", "server us 0008",
            "server 0008/0007")
    lines: list[tuple[str, ...]] = []
    for (label, writers), done in rounds.items():
        def every(rev: str, done: list[PositionsRound] = done) -> list[float]:
            return [x for one in done for x in one.rates[rev]]

        ratios = [x for one in done for x in one.rate_ratios]
        server = {rev: [one.server_us[rev] for one in done] for rev in ("0007", "0008")}
        server_ratio = [one.server_us["0008"] / one.server_us["0007"] for one in done]
        lines.append((label, str(writers), _spread(every("0007"), ",.0f"), _spread(every("0008"), ",.0f"),
                      _spread(ratios, ".2f"), _spread(server["0007"], ",.1f"), _spread(server["0008"], ",.1f"),
                      _spread(server_ratio, ".2f")))
    print(render_table(head, lines, numeric=set(range(1, len(head)))))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


# -- --telemetry: the cost of facta's traces and metrics (issue 15) --------------------------

#: (workload, events per append, appends per slice; --quick's appends per slice)
TELEMETRY_WORKLOADS = (("(a) 1,000 events/tx", BATCH, 2, 1), ("(b) 1 event/tx", 1, 100, 20))
TELEMETRY_SLICES = 10

_TEL: dict[str, Any] = {}  # the worker's open store and where its streams stand


async def tel_open(url: str) -> None:
    """In a telemetry worker: open a store on ``url`` (migrated) and write one untimed
    warm-up append of each size."""
    from facta.eventstore import EventStore

    store = await EventStore.open(url, registry=BENCH_REGISTRY)
    _TEL.update(store=store, appends=0, versions=[0] * STREAMS_PER_WRITER)
    await store.append("warmup-a", STREAM_TYPE, make_events(BATCH, ride="warmup"), expected_version=0)
    await store.append("warmup-b", STREAM_TYPE, make_events(1, ride="warmup"), expected_version=0)


async def tel_unit(events_per_append: int, appends: int) -> tuple[int, float, float]:
    """In a telemetry worker: ``appends`` appends of ``events_per_append`` events (built
    before the clock starts), 1,000-event appends each to a new stream, one-event appends
    round robin over 4 streams at their versions. Returns (events, wall seconds, CPU
    seconds of this process)."""
    store = _TEL["store"]
    plan: list[Tx] = []
    for _ in range(appends):
        n = _TEL["appends"]
        _TEL["appends"] += 1
        if events_per_append > 1:
            plan.append(Tx(f"t-{n}", 0, make_events(events_per_append, ride=f"t-{n}")))
        else:
            s = n % STREAMS_PER_WRITER
            plan.append(Tx(f"s-{s}", _TEL["versions"][s], make_events(1, ride=f"s-{s}")))
            _TEL["versions"][s] += 1
    gc.collect()  # each unit pays for the garbage it makes, not for its plan's or an earlier unit's
    t0, c0 = time.perf_counter(), time.process_time()
    for tx in plan:
        await store.append(tx.stream, STREAM_TYPE, tx.events, expected_version=tx.expected_version)
    return appends * events_per_append, time.perf_counter() - t0, time.process_time() - c0


async def tel_close() -> None:
    await _TEL.pop("store").close()


def run_telemetry(args: argparse.Namespace, backends: Sequence[str]) -> None:
    """``--telemetry``: see the module docstring and ``_telemetry``."""
    import _telemetry

    slices = 2 if args.quick else TELEMETRY_SLICES
    for line in machine_facts(backends):
        print(line)
    print(f"telemetry: {_telemetry.what_is_measured()}")
    print(f"rounds: {args.rounds}, each a fresh database per contender and {slices} slices; in each slice every"
          " contender (a process of its own) runs one unit, in each of the 6 orders in turn. events/s: median"
          " (min-max) over rounds; time / none and cpu / none: median (min-max) of the per-round ratios of the"
          " contender's wall time and its process's CPU time over none's\n", flush=True)
    started = time.perf_counter()
    workers = _telemetry.start_workers(["append", "_telemetry", "facta.eventstore"])
    tallies = []
    try:
        for backend in backends:
            for title, size, appends, quick_appends in TELEMETRY_WORKLOADS:
                per_slice = quick_appends if args.quick else appends
                tally = _telemetry.Tally(f"{title}, {backend}")
                for r in range(args.rounds):
                    fresh = {mode: fresh_database(backend, f"t_{mode}") for mode in _telemetry.MODES}
                    try:
                        for mode, w in workers.items():
                            asyncio.run(migrate(fresh[mode].url))
                            w.call("append:tel_open", fresh[mode].url)

                        def unit(mode: str) -> Sequence[float]:
                            return workers[mode].call("append:tel_unit", size, per_slice)  # type: ignore[no-any-return]

                        tally.run_round(r, slices, unit)
                        for mode, w in workers.items():
                            w.call("append:tel_close")
                            _check_rows(fresh[mode], "facta", tally.events[mode][-1] + BATCH + 1)
                    finally:
                        for f in fresh.values():
                            f.drop()
                    line = ", ".join(f"{m} {tally.seconds[m][-1]:.2f} s" for m in _telemetry.MODES)
                    print(f"  {tally.title} round {r + 1}: {tally.events['none'][-1]:,} events each; {line}",
                          file=sys.stderr, flush=True)
                tallies.append(tally)
        recorded = _telemetry.describe(workers)
    finally:
        for w in workers.values():
            w.close()
    print(_telemetry.render(tallies))
    print("what each contender's SDK received over the run:")
    print("\n".join(recorded))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


# -- main ---------------------------------------------------------------------------------


def profile_facta_batch(backends: Sequence[str], warmup: Tx, txs: list[Tx]) -> None:
    for backend in backends:
        fresh = fresh_database(backend, "prof")
        try:
            asyncio.run(migrate(fresh.url))
            profiler = cProfile.Profile()
            profiler.enable()
            seconds = asyncio.run(_batch_facta(fresh, warmup, txs))
            profiler.disable()
        finally:
            fresh.drop()
        events = sum(len(tx.events) for tx in txs)
        print(
            f"\n== cProfile, facta batch append on {backend}: {events:,} events in {seconds:.2f} s"
            f" ({events / seconds:,.0f} events/s under the profiler) =="
        )
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    p.add_argument(
        "--events",
        type=int,
        default=30_000,
        help="events per contender and round in (a), in 1,000-event transactions; (b) writes a tenth"
        " of it, split over the 8 writers (default 30000: 30 batches, 8 x 375 single appends)",
    )
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per contender, order rotated (default 3; with --telemetry 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 batches, 8 x 25 single appends, one round")
    p.add_argument("--profile", action="store_true", help="instead of the comparison, cProfile facta's batch append")
    p.add_argument("--positions", action="store_true",
                   help="instead of the comparison, PostgreSQL only: revision 0008's facta_append (one range of"
                        " positions per append) against 0007's, facta alone")
    p.add_argument("--telemetry", action="store_true",
                   help="instead of the comparison, the cost of facta's traces and metrics: facta alone with"
                        " telemetry none (instrument(False)), off (no SDK) and on (SDK, no-op export)")
    args = p.parse_args(argv)
    if args.positions and args.telemetry:
        p.error("--positions and --telemetry are separate runs: give one")
    if args.positions and args.backend == "sqlite":
        p.error("--positions measures PostgreSQL's facta_append: not with --backend sqlite")
    if args.rounds is None:
        args.rounds = 5 if args.telemetry else 3
    if args.quick:
        args.events, args.rounds = 3_000, 1
    if args.events < BATCH or args.rounds < 1:
        p.error(f"--events must be >= {BATCH} and --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    warmup, txs = batch_plan(args.events)
    appends = max(1, args.events // 10 // WRITERS)
    if args.quick:
        appends = 25
    if args.profile:
        profile_facta_batch(backends, warmup, txs)
        return
    if args.positions:
        run_positions(args)
        return
    if args.telemetry:
        run_telemetry(args, backends)
        return

    titles = {
        "a": f"(a) {BATCH:,} events/tx, {len(txs)} tx",
        "b": f"(b) 1 event/tx, {WRITERS} procs x {appends}",
    }
    for line in machine_facts(backends):
        print(line)
    print(
        f"rounds: {args.rounds} per contender, order rotated each round; figures are medians, ratios are"
        f" medians of per-round ratios; every contender on a fresh database, rows counted after each run\n",
        flush=True,
    )

    started = time.perf_counter()
    pool = WriterPool(WRITERS)
    print(f"  {WRITERS} writer processes spawned and ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    all_runs: dict[tuple[str, str], dict[str, list[Result]]] = {}
    try:
        for backend in backends:
            for workload in ("a", "b"):
                all_runs[(workload, backend)] = {c: [] for c in CONTENDERS}
            for r in range(args.rounds):
                order = CONTENDERS[r % 3 :] + CONTENDERS[: r % 3]
                jobs: list[tuple[str, str, Callable[[], Result]]] = []
                for c in order:
                    jobs.append(("a", c, lambda c=c, b=backend: run_batch(b, c, warmup, txs)))
                for c in order:
                    jobs.append(("b", c, lambda c=c, b=backend: run_single(pool, b, c, appends)))
                for workload, contender, job in jobs:
                    t_job = time.perf_counter()
                    result = job()
                    t_job = time.perf_counter() - t_job
                    all_runs[(workload, backend)][contender].append(result)
                    print(
                        f"  {backend:<10} ({workload}) round {r + 1}  {contender:<13} {result.events:>7,} events"
                        f"  {result.seconds:7.2f} s  {result.rate:>10,.0f} events/s  (with set-up and checks {t_job:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        pool.close()
    print(render(all_runs, titles))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


if __name__ == "__main__":
    main()
