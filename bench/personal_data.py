"""Append cost of one encrypted field (issue 14 item 6): facta's append of an event with one
field marked ``PersonalData`` against the same append of the same event without the mark.

Two contenders, each on a fresh database of its own (SQLite: a WAL file; PostgreSQL: a new
database), both through ``EventStore.append``:

plain    ``bench.pd_plain``: the five-field telemetry event of ``_events`` plus a
         ``rider_name`` string (about 20 characters), unmarked.
sealed   ``bench.pd_sealed``: the same six fields, ``rider_name`` marked
         ``PersonalData(subject="rider_id")``: encrypted with AES-256-GCM at append. The
         keys come from the default ``SqlKeyStore``, kept ``FACTA_KEY_CACHE_S`` seconds
         (default 2) for sealing; with ``FACTA_KEY_CACHE_S=0`` every append asks the key
         store once (one read when the keys exist, a write when one is missing).

Workloads, in units; a round is ``--slices`` slices, and in each slice both contenders
run one unit, the one going first alternating, so the two see the same machine within a
second of each other:

(a) batch    a unit is one append of 1,000 events to a new stream, 10 riders (10
             subjects) per batch (their keys exist after the warm-up).
(b) single   a unit is ``--singles`` one-event appends to a new stream, the riders of
             its events drawn from the same 10.

Reported: events/s per contender (median over rounds) and the ratio sealed/plain of the
time per round (the sum of its slices): the median of the per-round ratios, with min and max. The aim (issue 14)
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


async def batch_unit(store: EventStore, cls: type[DomainEvent], label: str, n: int, key: str) -> float:
    """Seconds for one append of ``n`` (1,000) events to a new stream (events built before the clock)."""
    events = make(cls, n, f"{label}-{key}")
    start = time.perf_counter()
    await store.append(f"{label}-{key}", "ride", events, expected_version=0)
    return time.perf_counter() - start


async def single_unit(store: EventStore, cls: type[DomainEvent], label: str, n: int, key: str) -> float:
    """Seconds for ``n`` one-event appends to a new stream."""
    stream = f"{label}-single-{key}"
    work = make(cls, n, stream)
    start = time.perf_counter()
    for version, event in enumerate(work):
        await store.append(stream, "ride", [event], expected_version=version)
    return time.perf_counter() - start


async def run(backend: str, rounds: int, slices: int, singles: int) -> list[str]:
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
        for workload, fn, unit in (("batch 1,000 events/append", batch_unit, 1000),
                                   ("single event/append", single_unit, singles)):
            times: dict[str, list[float]] = {"plain": [], "sealed": []}
            ratios = []
            for r in range(rounds):
                # A round is `slices` slices; in each, both contenders run one unit, the
                # one going first alternating, so both see the same machine within a second.
                took = {"plain": 0.0, "sealed": 0.0}
                for k in range(slices):
                    order = ["plain", "sealed"] if (r + k) % 2 == 0 else ["sealed", "plain"]
                    for name in order:
                        took[name] += await fn(stores[name], classes[name], name, unit, f"{r}-{k}")
                for name in took:
                    times[name].append(took[name])
                ratios.append(took["sealed"] / took["plain"])
            count = unit * slices
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
    parser.add_argument("--slices", type=int, default=6, help="slices per round (each: one unit per contender)")
    parser.add_argument("--singles", type=int, default=40, help="one-event appends per single-event unit")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 slices, 10 singles a unit")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.slices, args.singles = 3, 2, 10
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for fact in machine_facts(backends):
        print(fact)
    print(f"load average before: {load_average()}")
    for backend in backends:
        asyncio.run(run(backend, args.rounds, args.slices, args.singles))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    sys.exit(main())
