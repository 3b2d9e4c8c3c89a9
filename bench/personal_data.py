"""Append cost of one encrypted field (issue 14 item 6): facta's append of an event with one
field marked ``PersonalData`` against the same append of the same event without the mark.

Two contenders, each on a fresh database of its own (SQLite: a WAL file; PostgreSQL: a new
database), both through ``EventStore.append``:

plain    ``bench.pd_plain``: the five-field telemetry event of ``_events`` plus a
         ``rider_name`` string (about 20 characters), unmarked.
sealed   ``bench.pd_sealed``: the same six fields, ``rider_name`` marked
         ``PersonalData(subject="rider_id")``: encrypted with AES-256-GCM at append, one
         key store call per append for the append's subjects (the default
         ``SqlKeyStore``: one read when the keys exist, a write when one is missing).

Workloads, each timed per round for both contenders, in rotated order (the one that goes
first alternates) so the two see the same machine within seconds of each other:

(a) batch    1,000 events per append on one new stream, 10 riders (10 subjects) per batch,
             ``--batches`` appends per round.
(b) single   one event per append, ``--singles`` appends per round on one stream, the
             riders of a round's events drawn from 10 (their keys exist after the first).

Reported: events/s per contender (median over rounds) and the ratio sealed/plain of the
time per round: the median of the per-round ratios, with min and max. The aim (issue 14)
is a ratio of at most 1.10 on both workloads.

    python bench/personal_data.py                     # both backends
    python bench/personal_data.py --backend sqlite --rounds 5
    python bench/personal_data.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Annotated, Any

from _common import fresh_database, load_average, machine_facts, median, migrate, telemetry_fields

from facta.domain import DomainEvent, EventRegistry, PersonalData
from facta.eventstore import EventStore

REGISTRY = EventRegistry()
RIDERS = 10


class PlainPoint(DomainEvent, name="bench.pd_plain", registry=REGISTRY):
    ride_id: str
    lat: float
    lon: float
    speed_kmh: float
    distance_m: int
    rider_id: str
    rider_name: str


class SealedPoint(DomainEvent, name="bench.pd_sealed", registry=REGISTRY):
    ride_id: str
    lat: float
    lon: float
    speed_kmh: float
    distance_m: int
    rider_id: str
    rider_name: Annotated[str, PersonalData(subject="rider_id")]


def make(cls: type[DomainEvent], n: int, ride: str) -> list[DomainEvent]:
    return [cls(**telemetry_fields(i, ride), rider_id=f"rider-{i % RIDERS}",
                rider_name=f"Rider Number {i % RIDERS:03d} Name") for i in range(n)]


async def batch_round(store: EventStore, cls: type[DomainEvent], label: str, batches: int, round_no: int) -> float:
    """Seconds for ``batches`` appends of 1,000 events (events built before the clock)."""
    work = [make(cls, 1000, f"{label}-{round_no}-{b}") for b in range(batches)]
    start = time.perf_counter()
    for b, events in enumerate(work):
        await store.append(f"{label}-{round_no}-{b}", "ride", events, expected_version=0)
    return time.perf_counter() - start


async def single_round(store: EventStore, cls: type[DomainEvent], label: str, singles: int, round_no: int) -> float:
    """Seconds for ``singles`` one-event appends to one stream."""
    stream = f"{label}-single-{round_no}"
    work = make(cls, singles, stream)
    start = time.perf_counter()
    for version, event in enumerate(work):
        await store.append(stream, "ride", [event], expected_version=version)
    return time.perf_counter() - start


async def run(backend: str, rounds: int, batches: int, singles: int) -> list[str]:
    lines = []
    dbs = {name: fresh_database(backend, f"pd_{name}") for name in ("plain", "sealed")}
    try:
        stores: dict[str, EventStore] = {}
        for name, db in dbs.items():
            await migrate(db.url)
            stores[name] = await EventStore.open(db.url, registry=REGISTRY)
        classes: dict[str, Any] = {"plain": PlainPoint, "sealed": SealedPoint}
        for name, store in stores.items():  # warm-up: connections, statements, the riders' keys
            await store.append(f"warm-{name}", "ride", make(classes[name], 20, "warm"), expected_version=0)
        for workload, fn, count in (("batch 1,000 events/append", batch_round, batches * 1000),
                                    ("single event/append", single_round, singles)):
            times: dict[str, list[float]] = {"plain": [], "sealed": []}
            ratios = []
            for r in range(rounds):
                order = ["plain", "sealed"] if r % 2 == 0 else ["sealed", "plain"]
                took = {}
                for name in order:
                    took[name] = await fn(stores[name], classes[name], name, batches if fn is batch_round else singles, r)
                    times[name].append(took[name])
                ratios.append(took["sealed"] / took["plain"])
            plain_rate = count / median(times["plain"])
            sealed_rate = count / median(times["sealed"])
            lines.append(
                f"{backend:10s} {workload:26s} plain {plain_rate:9,.0f} ev/s  sealed {sealed_rate:9,.0f} ev/s"
                f"  sealed/plain time: median {median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f},"
                f" {rounds} rounds)"
            )
            print(lines[-1], flush=True)
        for store in stores.values():
            await store.close()
    finally:
        for db in dbs.values():
            db.drop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=5, help="1,000-event appends per round")
    parser.add_argument("--singles", type=int, default=300, help="one-event appends per round")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 2 batches, 50 singles")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batches, args.singles = 3, 2, 50
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for fact in machine_facts(backends):
        print(fact)
    print(f"load average before: {load_average()}")
    for backend in backends:
        asyncio.run(run(backend, args.rounds, args.batches, args.singles))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
