"""SQLite batch appends against facta_events' indexes and pragmas (issue 12, item 2).

Raw sqlite3 ``executemany`` of 1,000-row transactions (BEGIN IMMEDIATE ... COMMIT, WAL,
synchronous=FULL unless a variant says otherwise) into facta's table as the migrations
make it, and into variants of it: an index or trigger dropped, the audit indexes
dropped, a table with only its primary key, and connection pragmas. Each variant gets a
fresh file per round; ``--prefill`` events are written first (not timed) so the indexes
hold a log of that size when the timed transactions run. Variants run in rotated order
each round; figures are medians over rounds with min-max, and each variant's rate as a
median of per-round ratios to facta's table as it is.

    python bench/sqlite_indexes.py                     # 30,000 timed events, empty log
    python bench/sqlite_indexes.py --prefill 300000    # the same on a 300k-event log
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from facta import migrations

INSERT = (
    "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
    " payload, occurred_at, recorded_at, actor, correlation_id, causation_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
AUDIT = ["ix_facta_events_recorded_at", "ix_facta_events_type", "ix_facta_events_stream_type",
         "ix_facta_events_actor", "ix_facta_events_correlation"]
PK_ONLY = """
CREATE TABLE facta_events_pk (
    position INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, event_id CHAR(32) NOT NULL,
    stream_id VARCHAR(255) NOT NULL, stream_type VARCHAR(100) NOT NULL, version INTEGER NOT NULL,
    event_type VARCHAR(200) NOT NULL, schema_version INTEGER NOT NULL, payload TEXT NOT NULL,
    occurred_at DATETIME NOT NULL, recorded_at DATETIME NOT NULL, actor VARCHAR(255),
    correlation_id VARCHAR(255), causation_id VARCHAR(255));
DROP TRIGGER facta_events_no_replace; DROP TRIGGER facta_events_no_update; DROP TRIGGER facta_events_no_delete;
DROP TABLE facta_events; ALTER TABLE facta_events_pk RENAME TO facta_events;
"""



def _trigger(when: str) -> str:
    return (
        "DROP TRIGGER facta_events_no_replace; CREATE TRIGGER facta_events_no_replace BEFORE INSERT ON facta_events"
        f" WHEN {when} BEGIN SELECT RAISE(ABORT, 'no replace'); END;"
    )


# name -> (DDL applied after migrating, pragmas set on the writing connection)
VARIANTS: dict[str, tuple[str, str]] = {
    "facta_events as migrated": ("", ""),
    "- no_replace trigger": ("DROP TRIGGER facta_events_no_replace;", ""),
    "trigger WHEN 0 (machinery only)": (_trigger("0"), ""),
    "trigger: event_id probe only": (_trigger("EXISTS (SELECT 1 FROM facta_events WHERE event_id = NEW.event_id)"), ""),
    "trigger: event_id + stream/version": (_trigger(
        "EXISTS (SELECT 1 FROM facta_events WHERE event_id = NEW.event_id)"
        " OR EXISTS (SELECT 1 FROM facta_events WHERE stream_id = NEW.stream_id AND version = NEW.version)"), ""),
    "trigger: position only": (_trigger("EXISTS (SELECT 1 FROM facta_events WHERE position = NEW.position)"), ""),
    "- stream_type index": ("DROP INDEX ix_facta_events_stream_type;", ""),
    "- event_type index": ("DROP INDEX ix_facta_events_type;", ""),
    "- recorded_at index": ("DROP INDEX ix_facta_events_recorded_at;", ""),
    "- all 5 audit indexes": ("".join(f"DROP INDEX {name};" for name in AUDIT), ""),
    "primary key only": (PK_ONLY, ""),
    "+ cache_size 64 MiB": ("", "PRAGMA cache_size=-65536;"),
    "+ wal_autocheckpoint 10000": ("", "PRAGMA wal_autocheckpoint=10000;"),
    "+ wal_autocheckpoint 4000": ("", "PRAGMA wal_autocheckpoint=4000;"),
    "+ cache 16 MiB, autocheckpoint 10000": ("", "PRAGMA cache_size=-16384; PRAGMA wal_autocheckpoint=10000;"),
    "+ cache 64 MiB, autocheckpoint 10000": ("", "PRAGMA cache_size=-65536; PRAGMA wal_autocheckpoint=10000;"),
    "+ synchronous=NORMAL (less durable)": ("", "PRAGMA synchronous=NORMAL;"),
}


def rows(count: int, start_stream: int) -> list[list[tuple[object, ...]]]:
    """``count`` events in 1,000-event transactions, one stream each, as facta writes them."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    out = []
    for t in range(count // 1000):
        stream = f"ride-{start_stream + t}"
        out.append([
            (uuid.uuid4().hex, stream, "ride", n + 1, "bench.ride_telemetry", 1,
             json.dumps({"ride_id": stream, "lat": 52.52 + n * 1e-5, "lon": 13.4 - n * 1e-5,
                         "speed_kmh": 30.0 + (n % 40) * 0.5, "distance_m": n * 11}),
             now, now, None, None, None)
            for n in range(1000)
        ])
    return out


def write(conn: sqlite3.Connection, txs: Sequence[list[tuple[object, ...]]]) -> float:
    t0 = time.perf_counter()
    for tx in txs:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, tx)
        conn.execute("COMMIT")
    return time.perf_counter() - t0


def run(name: str, directory: str, prefill: int, timed: int) -> float:
    ddl, pragmas = VARIANTS[name]
    path = os.path.join(directory, f"{uuid.uuid4().hex}.db")
    asyncio.run(migrations.upgrade_url(f"sqlite+aiosqlite:///{path}"))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        if ddl:
            conn.executescript(ddl)
        if pragmas:
            conn.executescript(pragmas)
        write(conn, rows(prefill, 0))
        txs = rows(timed, prefill // 1000)
        return timed / write(conn, txs)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prefill", type=int, default=0, help="events written (untimed) before the timed ones")
    p.add_argument("--events", type=int, default=30_000, help="timed events per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = p.parse_args(argv)
    names = [n for n in VARIANTS if not args.only or n in args.only]
    rates: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as directory:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                rates[name].append(run(name, directory, args.prefill, args.events))
    base = rates[names[0]]
    print(f"SQLite {sqlite3.sqlite_version}; {args.events:,} events in 1,000-event transactions after"
          f" {args.prefill:,} prefilled; {args.rounds} rounds, medians (min-max)")
    for name in names:
        ratio = statistics.median(a / b for a, b in zip(rates[name], base, strict=True))
        print(f"  {name:<38} {statistics.median(rates[name]):>9,.0f} events/s"
              f"  ({min(rates[name]):,.0f}-{max(rates[name]):,.0f})  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
