"""One eventsourcing application on eventsourcing's own persistence modules and on facta's, in one run.

The application is eventsourcing 9.5's own style: ``_es_models.ESAccount`` (an
``eventsourcing.domain.Aggregate`` with ``@event`` methods: opened, deposited) saved by an
``eventsourcing.application.Application`` (``_es_models.ESApp``; ``ESSnapshottingApp`` with
snapshotting enabled for the snapshot row). The only thing that differs between the
contenders is the persistence setting:

facta          ``PERSISTENCE_MODULE=facta.eventsourcing`` and ``FACTA_DATABASE_URL`` (a SQLite
               file with WAL, or a PostgreSQL database made by facta's migrations)
eventsourcing  ``PERSISTENCE_MODULE=eventsourcing.sqlite`` (a SQLite file, WAL) or
               ``eventsourcing.postgres`` (``POSTGRES_DBNAME``/``HOST``/``PORT``/``USER``/``PASSWORD``)

Seven rows per dialect (SQLite, then PostgreSQL):

 save, 1 new event          one process: ``account.deposit(n)`` then ``app.save(account)``,
                            over the writer's 4 accounts (opened untimed)
 save, 100 new events       one process: ``app.save(account)`` of a new account holding 100
                            pending events (opened + 99 deposits, built before the clock)
 4 / 8 writer processes     each writer (multiprocessing spawn) does the 1-event saves on
                            its own 4 accounts; events / wall time from a start barrier to
                            the last writer's finish
 load, no snapshot          ``app.repository.get(id)`` of an account with ``--aggregate-events``
                            events (snapshotting off)
 load, snapshot at head     the same account history with a snapshot at its head, loaded by
                            the snapshotting application (``take_snapshot`` untimed)
 follower reads the log     a catch-up follower: ``app.recorder.select_notifications`` pages
                            of 500 from the start to the end of the log, each notification
                            decoded with ``app.mapper.to_domain_event`` (one pass untimed,
                            then 3 timed)

How it measures:
- Each contender has 8 worker processes of its own (spawn), started once for the run; all
  their imports finish before any timing. One-process rows use the first; writer rows the
  first 4 or 8. Each job resets its process's high-water RSS at its start (Linux
  ``/proc/self/clear_refs``) and reports ``VmHWM`` at its end: the peak MiB column is the
  largest over the row's jobs.
- ``--rounds`` rounds (default 3) run every contender once each, the order rotated every
  round. Rates are medians over rounds; each ratio is the median of the per-round ratios
  (facta's rate / eventsourcing's), printed with its min and max.
- Every write run gets fresh databases (a new SQLite file, a new PostgreSQL database;
  facta's made by its migrations, eventsourcing's tables made by its application before
  the clock). After it, untimed, every account is loaded and must have the version and
  balance written, and the whole log is counted. The read rows share one loaded database
  per contender and dialect (the same accounts and events, loaded untimed), which they
  only read; each load is checked (version, balance), the follower counts every event and
  sums the deposited amounts.
- Aims (issue 13): facta/es at least 1.0x on every row, 1.5x on the PostgreSQL writer
  rows (eventsourcing locks its events table for every insert there).

    python bench/eventsourcing_backend.py                 # both dialects, 3 rounds; 2 to 4 minutes on 2 shared cores
    python bench/eventsourcing_backend.py --dialect sqlite
    python bench/eventsourcing_backend.py --rounds 5
    python bench/eventsourcing_backend.py --quick         # smoke run: small sizes, one round; 25 s (45 s at load 7)
    python bench/eventsourcing_backend.py --profile 1     # cProfile of facta's contender on one row instead
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import multiprocessing as mp
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import versus
from versus import log_line, rotated

# Only the standard library (and versus.py, which imports only the standard library) at import time: every worker process imports this module
# (spawn runs it as __mp_main__) and then only its own contender's libraries.

CONTENDERS = ("facta", "eventsourcing")
DIALECTS = ("sqlite", "postgresql")
MAX_WRITERS = 8
ACCOUNTS_PER_WRITER = 4
PAGE = 500  # notifications per select_notifications page
BIG_SAVE = 100  # events per save in the 100-event row
BARRIER_TIMEOUT_S = 300.0
PRELOAD = {
    "facta": ["_es_models", "eventsourcing.application", "facta.eventsourcing"],
    "eventsourcing": ["_es_models", "eventsourcing.application", "eventsourcing.sqlite", "eventsourcing.postgres"],
}


def deposit_amount(i: int) -> int:
    """The amount of the ``i``-th deposit (minor units; varied so balances check the order-free sum)."""
    return 1 + i % 97


# -- inside the worker processes ---------------------------------------------------------------

BARRIERS: dict[int, Any] = {}  # writers -> a barrier shared by that many of the contender's workers


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve(conn: Any, preload: Sequence[str], barriers: dict[int, Any]) -> None:
    """A contender's worker: imports ``preload``, says ready, then runs ``(job, args)``
    messages (a job is a function of this module) until it gets None; each reply carries
    the job's value and the process's peak MiB during the job."""
    BARRIERS.update(barriers)
    try:
        for name in preload:
            importlib.import_module(name)
    except BaseException:
        conn.send(("error", traceback.format_exc(), 0.0))
        return
    conn.send(("ready", None, 0.0))
    while (message := conn.recv()) is not None:
        job, args = message
        try:
            gc.collect()
            _reset_peak()
            value = globals()[job](*args)
            conn.send(("ok", value, _peak_mib()))
        except BaseException:
            for barrier in BARRIERS.values():
                barrier.abort()
            conn.send(("error", traceback.format_exc(), 0.0))


def _app(env: dict[str, str], snapshotting: bool = False) -> Any:
    from _es_models import ESApp, ESSnapshottingApp

    return (ESSnapshottingApp if snapshotting else ESApp)(env=env)


def prepare_job(env: dict[str, str]) -> None:
    """Construct and close the application once: eventsourcing makes its tables here, so
    that concurrent writers never race to create them."""
    _app(env).close()


def write_job(env: dict[str, str], writer: int, writers: int, saves: int, per_save: int
              ) -> tuple[float, float, int, list[tuple[Any, int, int]]]:
    """One writer's timed saves. ``per_save`` 1: deposit on one of its own 4 accounts
    (opened untimed), then ``app.save``; ``per_save`` > 1: ``app.save`` of a new account
    already holding ``per_save`` pending events (built before the clock; one saved untimed
    first). Returns (start, end, events timed, [(account id, version, balance)])."""
    from _es_models import ESAccount

    app = _app({**env, "CREATE_TABLE": "n"})  # prepare_job made them; concurrent CREATEs race on PostgreSQL
    try:
        if per_save == 1:
            accounts = [ESAccount(owner=f"w{writer}-{k}", currency="EUR") for k in range(ACCOUNTS_PER_WRITER)]
            for account in accounts:
                app.save(account)
            if writers > 1:
                BARRIERS[writers].wait(BARRIER_TIMEOUT_S)
            t0 = time.perf_counter()
            for s in range(saves):
                account = accounts[s % ACCOUNTS_PER_WRITER]
                account.deposit(deposit_amount(s))
                app.save(account)
            t1 = time.perf_counter()
        else:
            accounts = []
            for s in range(saves + 1):
                account = ESAccount(owner=f"w{writer}-{s}", currency="EUR")
                for i in range(per_save - 1):
                    account.deposit(deposit_amount(i))
                accounts.append(account)
            app.save(accounts[0])
            if writers > 1:
                BARRIERS[writers].wait(BARRIER_TIMEOUT_S)
            t0 = time.perf_counter()
            for account in accounts[1:]:
                app.save(account)
            t1 = time.perf_counter()
        return t0, t1, saves * per_save, [(a.id, a.version, a.balance) for a in accounts]
    finally:
        app.close()


def _read_log(app: Any) -> tuple[int, int]:
    """Every notification of the application's log, in pages of PAGE, decoded by its
    mapper: (events, sum of deposited amounts)."""
    from _es_models import ESAccount

    deposited = ESAccount.Deposited  # type: ignore[attr-defined]
    select, decode = app.recorder.select_notifications, app.mapper.to_domain_event
    count = total = 0
    start: int | None = None
    while True:
        page = select(start, PAGE, inclusive_of_start=start is None)
        for notification in page:
            event = decode(notification)
            if type(event) is deposited:
                total += event.amount
        count += len(page)
        if len(page) < PAGE:
            return count, total
        start = page[-1].id


def check_job(env: dict[str, str], accounts: list[tuple[Any, int, int]]) -> tuple[int, list[str]]:
    """After a write run: load every account (version and balance must be as written) and
    count the log. Returns (events in the log, mismatches)."""
    app = _app(env)
    try:
        wrong = []
        for account_id, version, balance in accounts:
            got = app.repository.get(account_id)
            if (got.version, got.balance) != (version, balance):
                wrong.append(f"{account_id}: version {got.version}, balance {got.balance};"
                             f" wrote version {version}, balance {balance}")
        return _read_log(app)[0], wrong
    finally:
        app.close()


def setup_job(env: dict[str, str], aggregate_events: int, log_events: int) -> dict[str, Any]:
    """Load the read rows' database: two accounts of ``aggregate_events`` events ("plain";
    "snap" with a snapshot at its head), then ``log_events`` more events (new accounts of
    100 events, one save each)."""
    from _es_models import ESAccount

    app = _app(env, snapshotting=True)
    try:
        ids = {}
        for name in ("plain", "snap"):
            account = ESAccount(owner=name, currency="EUR")
            for i in range(aggregate_events - 1):
                account.deposit(deposit_amount(i))
            app.save(account)
            ids[name] = account.id
        app.take_snapshot(ids["snap"])
        for n in range(log_events // BIG_SAVE):
            account = ESAccount(owner=f"log-{n}", currency="EUR")
            for i in range(BIG_SAVE - 1):
                account.deposit(deposit_amount(i))
            app.save(account)
        return ids
    finally:
        app.close()


def load_job(env: dict[str, str], account_id: Any, snapshotting: bool, loads: int) -> tuple[float, int, tuple[int, int]]:
    """``loads`` x ``app.repository.get(account_id)`` after one untimed. Returns (seconds,
    loads, (version, balance))."""
    app = _app(env, snapshotting)
    try:
        account = app.repository.get(account_id)
        t0 = time.perf_counter()
        for _ in range(loads):
            account = app.repository.get(account_id)
        return time.perf_counter() - t0, loads, (account.version, account.balance)
    finally:
        app.close()


def follow_job(env: dict[str, str], passes: int) -> tuple[float, int, tuple[int, int]]:
    """The whole log read and decoded once untimed (a warm cache for both), then ``passes``
    times timed. Returns (seconds, events read, (events, deposited sum) of one pass)."""
    app = _app(env)
    try:
        _read_log(app)
        t0 = time.perf_counter()
        for _ in range(passes):
            check = _read_log(app)
        return time.perf_counter() - t0, check[0] * passes, check
    finally:
        app.close()


# -- the parent: workers, databases, rounds --------------------------------------------------------


class Worker(versus.Worker):
    """One spawned process of one contender (versus.py's worker, with this script's jobs
    and the writer barriers; ``close`` is versus.py's)."""

    def __init__(self, label: str, preload: Sequence[str], barriers: dict[int, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.label = label
        self.barriers = barriers  # kept: a barrier freed here before the child unpickles it is gone
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, list(preload), barriers), name=label, daemon=True)
        self.proc.start()

    def send(self, job: str, *args: Any) -> None:
        self.conn.send((job, args))

    def call(self, job: str, *args: Any) -> tuple[Any, float]:
        self.send(job, *args)
        return gather([self], job)[0]


def gather(workers: Sequence[Worker], job: str) -> list[tuple[Any, float]]:
    """Every worker's reply to ``job``: (value, peak MiB); exits with every failure when any
    failed (a writer's own error first, then the others' broken barriers)."""
    replies = [w.conn.recv() for w in workers]
    errors = [f"{w.label}: {job} failed:\n{value}" for w, (kind, value, _) in zip(workers, replies, strict=True)
              if kind == "error"]
    if errors:
        for barrier in workers[0].barriers.values():
            barrier.reset()
        errors.sort(key=lambda text: "BrokenBarrierError" in text)
        raise SystemExit("\n".join(errors))
    return [(value, peak) for _, value, peak in replies]


def start_pools() -> dict[str, list[Worker]]:
    ctx = mp.get_context("spawn")
    pools = {}
    for c in CONTENDERS:
        barriers = {n: ctx.Barrier(n) for n in (4, MAX_WRITERS)}
        pools[c] = [Worker(f"{c}-{i}", PRELOAD[c], barriers) for i in range(MAX_WRITERS)]
    for pool in pools.values():  # all started at once, then every import waited for
        for w in pool:
            kind, detail, _ = w.conn.recv()
            if kind != "ready":
                raise SystemExit(f"worker {w.label} did not start:\n{detail}")
    return pools


def env_for(contender: str, fresh: Any) -> dict[str, str]:
    """The persistence settings of ``contender`` for a fresh database."""
    if contender == "facta":
        return {"PERSISTENCE_MODULE": "facta.eventsourcing", "FACTA_DATABASE_URL": fresh.url}
    from _es_models import es_env

    return es_env(fresh.backend, path=fresh.path, dsn=fresh.dsn)


def fresh_for(contender: str, dialect: str, label: str) -> Any:
    """A new database for ``contender``: facta's schema by its migrations; eventsourcing's
    is made by its application (prepare_job)."""
    from _common import fresh_database, migrate

    fresh = fresh_database(dialect, label)
    if contender == "facta":
        try:
            asyncio.run(migrate(fresh.url))
        except BaseException:
            fresh.drop()
            raise
    return fresh


@dataclass
class Row:
    number: int
    dialect: str
    kind: str  # save, writers, load, load_snapshot, follow
    title: str
    unit: str
    aim: float
    writers: int = 1
    per_save: int = 1


@dataclass
class Outcome:
    rates: dict[str, list[float]] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)

    def add(self, contender: str, rate: float, peak: float) -> None:
        self.rates.setdefault(contender, []).append(rate)
        self.peaks[contender] = max(self.peaks.get(contender, 0.0), peak)

    def ratios(self) -> list[float]:
        return [f / e for f, e in zip(self.rates.get("facta", []), self.rates.get("eventsourcing", []), strict=True)]


def run_write(row: Row, args: argparse.Namespace, pool: list[Worker], contender: str, r: int) -> tuple[float, float, str]:
    saves = args.big_saves if row.per_save > 1 else args.saves if row.writers == 1 else args.writer_saves
    fresh = fresh_for(contender, row.dialect, f"esb{row.number}_{contender[:5]}")
    try:
        env = env_for(contender, fresh)
        pool[0].call("prepare_job", env)
        writers = pool[: row.writers]
        for i, w in enumerate(writers):
            w.send("write_job", env, i, row.writers, saves, row.per_save)
        replies = gather(writers, "write_job")
        start = min(v[0] for v, _ in replies)
        end = max(v[1] for v, _ in replies)
        timed = sum(v[2] for v, _ in replies)
        accounts = [a for v, _ in replies for a in v[3]]
        (logged, wrong), _ = pool[0].call("check_job", env, accounts)
        warmup = row.writers * (ACCOUNTS_PER_WRITER if row.per_save == 1 else row.per_save)
        if wrong or logged != timed + warmup:
            raise SystemExit(f"row {row.number} {contender}: the log holds {logged} events, expected"
                             f" {timed + warmup}; {'; '.join(wrong[:3])}")
    finally:
        fresh.drop()
    seconds = end - start
    return timed / seconds, max(p for _, p in replies), (f"{timed:,} events in {seconds:.2f} s, {len(accounts)}"
                                                        f" accounts and {logged:,} log events checked")


@dataclass
class Loaded:
    """One contender's read database on one dialect."""

    fresh: Any
    env: dict[str, str]
    ids: dict[str, Any]


LOADED: dict[tuple[str, str], Loaded] = {}


def loaded(dialect: str, contender: str, args: argparse.Namespace, pool: list[Worker]) -> Loaded:
    key = (dialect, contender)
    if key not in LOADED:
        t0 = time.perf_counter()
        fresh = fresh_for(contender, dialect, f"esb_read_{contender[:5]}")
        env = env_for(contender, fresh)
        try:
            ids, _ = pool[0].call("setup_job", env, args.aggregate_events, args.log_events)
        except BaseException:
            fresh.drop()
            raise
        LOADED[key] = Loaded(fresh, env, ids)
        print(f"  {dialect} {contender}: read database loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr,
              flush=True)
    return LOADED[key]


def run_read(row: Row, args: argparse.Namespace, pool: list[Worker], contender: str, r: int) -> tuple[float, float, str]:
    setup = loaded(row.dialect, contender, args, pool)
    balance = sum(deposit_amount(i) for i in range(args.aggregate_events - 1))
    if row.kind == "follow":
        per_account = sum(deposit_amount(i) for i in range(BIG_SAVE - 1))
        expected: Any = (2 * args.aggregate_events + args.log_events,
                         2 * balance + per_account * (args.log_events // BIG_SAVE))
        (seconds, items, check), peak = pool[0].call("follow_job", setup.env, args.passes)
        what = "events"
    else:
        snapshot = row.kind == "load_snapshot"
        loads = args.snapshot_loads if snapshot else args.loads
        expected = (args.aggregate_events, balance)
        (seconds, items, check), peak = pool[0].call("load_job", setup.env, setup.ids["snap" if snapshot else "plain"],
                                                     snapshot, loads)
        what = "loads"
    if tuple(check) != expected:
        raise SystemExit(f"row {row.number} {contender}: got {check}, expected {expected}")
    return items / seconds, peak, f"{items:,} {what} in {seconds:.3f} s, checked {tuple(check)}"


def rows_of(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for dialect in DIALECTS:
        name = "SQLite" if dialect == "sqlite" else "PostgreSQL"
        pg = dialect == "postgresql"
        n = len(rows)
        rows += [
            Row(n + 1, dialect, "save", f"{name} save, 1 new event", "events/s", 1.0),
            Row(n + 2, dialect, "save", f"{name} save, {BIG_SAVE} new events", "events/s", 1.0, per_save=BIG_SAVE),
            Row(n + 3, dialect, "writers", f"{name} 4 writer processes, 1 event/save", "events/s", 1.5 if pg else 1.0,
                writers=4),
            Row(n + 4, dialect, "writers", f"{name} 8 writer processes, 1 event/save", "events/s",
                1.5 if pg else 1.0, writers=MAX_WRITERS),
            Row(n + 5, dialect, "load", f"{name} load {args.aggregate_events:,}-event aggregate", "loads/s", 1.0),
            Row(n + 6, dialect, "load_snapshot", f"{name} load, snapshot at head", "loads/s", 1.0),
            Row(n + 7, dialect, "follow", f"{name} follower reads {2 * args.aggregate_events + args.log_events:,}"
                f"-event log", "events/s", 1.0),
        ]
    return [row for row in rows if args.dialect in ("all", row.dialect)]


def run_row(row: Row, args: argparse.Namespace, pools: dict[str, list[Worker]]) -> Outcome:
    out = Outcome()
    run: Callable[..., tuple[float, float, str]] = run_write if row.kind in ("save", "writers") else run_read
    for r in range(args.rounds):
        for c in rotated(CONTENDERS, r):
            rate, peak, text = run(row, args, pools[c], c, r)
            out.add(c, rate, peak)
            log_line(row, r, c, text)
    return out


# -- the table -------------------------------------------------------------------------------------------


def figure(values: Sequence[float], unit: str) -> str:
    if not values:
        return "-"
    m = statistics.median(values)
    short = {"events/s": "ev/s", "loads/s": "loads/s"}[unit]
    return f"{m:,.1f} {short}" if m < 100 else f"{m:,.0f} {short}"


def render(rows: Sequence[Row], outcomes: dict[int, Outcome]) -> str:
    from _common import render_table

    head = ("row", "facta", "eventsourcing", "facta/es", "peak MiB facta/es", "aim")
    lines: list[tuple[str, ...]] = []
    for row in rows:
        out = outcomes[row.number]
        ratios = out.ratios()
        m = statistics.median(ratios)
        lines.append((
            f"{row.number:>2} {row.title}",
            figure(out.rates.get("facta", []), row.unit),
            figure(out.rates.get("eventsourcing", []), row.unit),
            f"{m:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
            " / ".join(f"{out.peaks[c]:.0f}" for c in CONTENDERS),
            f"facta/es >= {row.aim:.1f}x {'ok' if m >= row.aim else 'MISSED'}",
        ))
    return render_table(head, lines, {1, 2, 3, 4})


# -- profile ---------------------------------------------------------------------------------------------


THREAD_PROFILERS: list[tuple[str, Any]] = []  # --profile: (thread name, its cProfile)


def _profile_new_thread(frame: Any, event: str, arg: Any) -> None:
    """--profile: installed with ``threading.setprofile``, so it runs first in every thread
    started afterwards (facta's store loop, SQLite writer and reader threads); it gives that
    thread a cProfile of its own (cProfile sees only the thread that enabled it)."""
    import cProfile
    import threading

    sys.setprofile(None)
    profiler = cProfile.Profile()
    THREAD_PROFILERS.append((threading.current_thread().name, profiler))
    profiler.enable()


def profile_row(row: Row, args: argparse.Namespace) -> None:
    """cProfile of facta's contender on one row, in this process (writer rows: one writer):
    the calling thread (eventsourcing's application and facta's recorder), then each thread
    the run started (facta's store loop; on SQLite its writer and reader threads)."""
    import cProfile
    import pstats
    import threading

    fresh = fresh_for("facta", row.dialect, f"esb_prof{row.number}")
    env = env_for("facta", fresh)
    profiler = cProfile.Profile()
    try:
        prepare_job(env)
        if row.kind != "save" and row.kind != "writers":
            ids = setup_job(env, args.aggregate_events, args.log_events)
        threading.setprofile(_profile_new_thread)
        profiler.enable()
        if row.kind in ("save", "writers"):
            saves = args.big_saves if row.per_save > 1 else args.saves if row.writers == 1 else args.writer_saves
            value: Any = write_job(env, 0, 1, saves, row.per_save)
            seconds, items = value[1] - value[0], value[2]
        elif row.kind == "follow":
            seconds, items, _ = follow_job(env, args.passes)
        else:
            snapshot = row.kind == "load_snapshot"
            seconds, items, _ = load_job(env, ids["snap" if snapshot else "plain"], snapshot,
                                         args.snapshot_loads if snapshot else args.loads)
        profiler.disable()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
        fresh.drop()
    print(f"row {row.number} {row.title} (facta, one process): {items:,} in {seconds:.3f} s timed")
    print("\n== the calling thread (eventsourcing's application, facta's recorders) ==")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    for name, thread_profiler in THREAD_PROFILERS:
        stats = pstats.Stats(thread_profiler)
        if stats.total_tt > 0.05:  # type: ignore[attr-defined]
            print(f"\n== thread {name} ==")
            stats.sort_stats("tottime").print_stats(15)


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dialect", choices=("sqlite", "postgresql", "all"), default="all")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the order of contenders rotated each (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, one round (25 s; 45 s at load 7)")
    p.add_argument("--aggregate-events", type=int, default=3_000, help="events of the loaded aggregate (default 3,000)")
    p.add_argument("--profile", type=int, metavar="ROW", help="cProfile facta's contender on one row instead")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.aggregate_events < 2:
        p.error(f"--aggregate-events must be >= 2, got {args.aggregate_events}")
    # Per contender and round: 1-event saves (one process; per writer), 100-event saves, loads
    # without and with snapshot, events in the log besides the two accounts, passes over it.
    args.saves, args.writer_saves, args.big_saves = 600, 200, 200
    args.loads, args.snapshot_loads, args.log_events, args.passes = 20, 4_000, 24_000, 3
    if args.quick:
        args.rounds = 1
        args.saves, args.writer_saves, args.big_saves = 20, 20, 4
        args.loads, args.snapshot_loads, args.log_events, args.passes = 2, 20, 1_000, 1
        args.aggregate_events = min(args.aggregate_events, 300)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    from _common import load_average, machine_facts

    args = parse_args(argv)
    started = time.perf_counter()
    rows = rows_of(args)
    if args.profile is not None:
        chosen = [row for row in rows if row.number == args.profile]
        if not chosen:
            raise SystemExit(f"--profile: no row {args.profile} (rows {rows[0].number}-{rows[-1].number})")
        profile_row(chosen[0], args)
        return
    dialects = sorted({row.dialect for row in rows})
    for line in machine_facts(dialects):
        print(line)
    print(f"{args.rounds} round(s), contenders in rotated order; rates are medians, facta/es the median of per-round"
          f" ratios (min-max); {args.saves} 1-event saves in one process, {args.writer_saves} per writer,"
          f" {args.big_saves} x {BIG_SAVE}-event saves; loads {args.loads} (no snapshot) and {args.snapshot_loads}"
          f" (snapshot); the follower reads the log {args.passes} time(s) in pages of {PAGE}\n",
          flush=True)
    outcomes: dict[int, Outcome] = {}
    pools: dict[str, list[Worker]] = {}
    try:
        t0 = time.perf_counter()
        pools = start_pools()
        print(f"  {len(CONTENDERS)} x {MAX_WRITERS} worker processes ready in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        for row in rows:
            t0 = time.perf_counter()
            outcomes[row.number] = run_row(row, args, pools)
            print(f"  row {row.number:>2} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        for setup in LOADED.values():
            setup.fresh.drop()
        for pool in pools.values():
            for w in pool:
                w.close()
    print(render(rows, outcomes))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


if __name__ == "__main__":
    main()
