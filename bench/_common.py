"""Shared helpers for facta's benchmarks: fresh databases, the benchmark event, machine
facts and the result table.

Every contender in a benchmark gets a database of its own, created just before it runs
and dropped right after, so no contender writes into a bigger table than another.

This module imports only the standard library at import time (psycopg, facta's
migrations and the benchmark event load when first used), so a worker process that
imports it for one contender carries no other contender's libraries in its peak memory.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "BENCH_REGISTRY",
    "PG_ADMIN",
    "Fresh",
    "Result",
    "Telemetry",
    "copy_database",
    "fresh_database",
    "load_average",
    "machine_facts",
    "make_events",
    "median",
    "migrate",
]

PG_ADMIN = os.environ.get("FACTA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def telemetry_fields(i: int, ride: str = "ride-0") -> dict[str, Any]:
    """The fields of the ``i``-th telemetry point of ``ride`` (values vary so payloads
    differ like real ones): what :func:`make_events` builds facta events from, and what
    the eventsourcing and raw contenders build theirs from."""
    return {
        "ride_id": ride,
        "lat": 52.520008 + i * 1e-5,
        "lon": 13.404954 - i * 1e-5,
        "speed_kmh": 30.0 + (i % 40) * 0.5,
        "distance_m": i * 11,
    }


def __getattr__(name: str) -> Any:
    # The benchmark event (``Telemetry``, ``BENCH_REGISTRY``, ``make_events``) lives in
    # _events.py and loads facta.domain (pydantic) only when first asked for.
    if name in ("BENCH_REGISTRY", "Telemetry", "make_events"):
        import _events

        return getattr(_events, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- databases --------------------------------------------------------------------------


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    import psycopg

    return psycopg.connect(PG_ADMIN, autocommit=True)


def postgres_server_facts() -> str:
    import psycopg

    try:
        with _admin() as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), current_setting('fsync'),"
                " current_setting('synchronous_commit'), current_setting('shared_buffers')"
            ).fetchone()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL unreachable at {PG_ADMIN} ({str(exc).splitlines()[0]})"
    assert row is not None
    version, fsync, sync_commit, buffers = row
    return f"PostgreSQL {version} at {PG_ADMIN.rsplit('@', 1)[-1]}, fsync={fsync}, synchronous_commit={sync_commit}, shared_buffers={buffers}"


@dataclass
class Fresh:
    """A new, empty database: ``url`` for facta (SQLAlchemy), ``dsn``/``path`` for drivers."""

    backend: str
    url: str
    dsn: str = ""  # libpq DSN (PostgreSQL)
    dbname: str = ""  # database name (PostgreSQL)
    path: str = ""  # file (SQLite)
    _tmpdir: str = field(default="", repr=False)

    def drop(self) -> None:
        if self.backend == "postgresql":
            with _admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        elif self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


def fresh_database(backend: str, label: str) -> Fresh:
    if backend == "postgresql":
        name = f"facta_bench_{label}_{uuid.uuid4().hex[:8]}"
        with _admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        dsn = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
        return Fresh(backend, dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn=dsn, dbname=name)
    tmpdir = tempfile.mkdtemp(prefix=f"facta_bench_{label}_")
    path = str(Path(tmpdir) / "bench.db")
    return Fresh(backend, f"sqlite+aiosqlite:///{path}", path=path, _tmpdir=tmpdir)


def copy_database(source: Fresh, label: str) -> Fresh:
    """A new PostgreSQL database holding a copy of ``source`` (``CREATE DATABASE ...
    TEMPLATE``; nothing may be connected to ``source`` meanwhile)."""
    if source.backend != "postgresql":
        raise SystemExit(f"copy_database copies PostgreSQL databases, not {source.backend}")
    name = f"facta_bench_{label}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source.dbname}"')
    dsn = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    return Fresh("postgresql", dsn.replace("postgresql://", "postgresql+asyncpg://", 1), dsn=dsn, dbname=name)


async def migrate(url: str) -> None:
    """Create facta's schema the only supported way: the migrations."""
    from facta import migrations

    await migrations.upgrade_url(url)


# -- facts and results ------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine_facts(backends: Iterable[str]) -> list[str]:
    import sqlite3

    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    lines = [
        f"machine: {cores} cores ({usable} usable by this process), {_cpu_model()}, {platform.system()} {platform.release()}",
        (
            f"python {platform.python_version()}; facta {_version('facta')}, eventsourcing {_version('eventsourcing')},"
            f" sqlalchemy {_version('sqlalchemy')}, asyncpg {_version('asyncpg')}, aiosqlite {_version('aiosqlite')},"
            f" psycopg {_version('psycopg')}, pydantic {_version('pydantic')}"
        ),
    ]
    if "sqlite" in backends:
        lines.append(
            f"SQLite {sqlite3.sqlite_version}, files in {tempfile.gettempdir()}, WAL, synchronous=FULL (the default)"
        )
    if "postgresql" in backends:
        lines.append(postgres_server_facts())
    lines.append(load_average())
    lines.append(
        "note: absolute figures drift from run to run on a shared machine; the ratios between contenders"
        " run side by side in this invocation are what matter."
    )
    return lines


def load_average() -> str:
    """The 1/5/15-minute load average: anything well above 0 means other work shared the CPUs."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average: unknown"
    return f"load average (1/5/15 min): {one:.2f} {five:.2f} {fifteen:.2f}"


@dataclass
class Result:
    contender: str
    events: int
    seconds: float
    retries: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def now_utc() -> datetime:
    return datetime.now(UTC)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def render_table(head: Sequence[str], lines: list[tuple[str, ...]], numeric: set[int]) -> str:
    """A plain-text table: columns padded, those in ``numeric`` right-aligned; a trailing
    empty row (a separator the caller added) is dropped."""
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [fmt(head), fmt(["-" * w for w in widths])]
    out += [fmt(r) for r in (lines[:-1] if lines and not any(lines[-1]) else lines)]
    return "\n".join(out)
