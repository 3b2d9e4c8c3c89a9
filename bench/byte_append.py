"""Byte appends against facta's own appends, in one run (issue 13).

``EventStore.append_bytes`` (events written by another library, stored as exact bytes:
what ``facta.eventsourcing`` calls for every save) against ``EventStore.append`` (facta's
own DomainEvents), with 1 and with 100 events per call, each call to a new stream, on
SQLite (a WAL file, synchronous=FULL) and PostgreSQL. The payloads are the same five
telemetry fields: a pydantic event for ``append`` (the clock covers facta's encoding and
checks), its JSON text as bytes for ``append_bytes`` (the clock covers the payload-column
rule: a UTF-8 decode and one ``json.loads``). Both contenders share one store per
backend; they run in alternating order round by round. Figures are events/s, medians over
rounds; the ratio is the median of per-round ratios (append_bytes / append) with min-max.

    python bench/byte_append.py                     # both backends, 9 rounds
    python bench/byte_append.py --backend sqlite --rounds 5
    python bench/byte_append.py --quick             # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_database, load_average, machine_facts  # noqa: E402

from facta.domain import DomainEvent  # noqa: E402
from facta.eventstore import ByteEvent, EventStore  # noqa: E402


class Telemetry(DomainEvent, name="bench.byte_append.telemetry"):
    ride: str
    speed: float
    lat: float
    lon: float
    seq: int


def _fields(i: int) -> dict[str, Any]:
    return {"ride": "ride-1", "speed": 12.5 + i % 7, "lat": 52.1 + i / 1e6, "lon": 4.3 + i / 1e6, "seq": i}


async def _one(store: EventStore, who: str, n: int, calls: int, tag: str) -> float:
    """events/s of ``calls`` calls of ``n`` events each, every call to a new stream."""
    streams = [f"{who}-{tag}-{j}" for j in range(calls)]
    if who == "append":
        batches = [[Telemetry(**_fields(i)) for i in range(n)] for _ in streams]
        start = time.perf_counter()
        for stream, batch in zip(streams, batches, strict=True):
            await store.append(stream, "bench", batch, expected_version=0)
    else:
        byte_batches = [[ByteEvent(s, i + 1, "bench.telemetry", json.dumps(_fields(i)).encode()) for i in range(n)]
                        for s in streams]
        start = time.perf_counter()
        for events in byte_batches:
            await store.append_bytes("bench", events)
    return calls * n / (time.perf_counter() - start)


async def _backend(url: str, rounds: int, calls: dict[int, int]) -> list[tuple[int, float, float, float, float, float]]:
    store = await EventStore.open(url, migrate=True)
    out = []
    try:
        for n, k in calls.items():
            await _one(store, "append", n, 2, f"warm-{n}")
            await _one(store, "bytes", n, 2, f"warm-{n}")
            facta, byte, ratios = [], [], []
            for r in range(rounds):
                order = ("append", "bytes") if r % 2 == 0 else ("bytes", "append")
                rate = {who: await _one(store, who, n, k, f"{n}-{r}") for who in order}
                facta.append(rate["append"])
                byte.append(rate["bytes"])
                ratios.append(rate["bytes"] / rate["append"])
            out.append((n, statistics.median(facta), statistics.median(byte), statistics.median(ratios),
                        min(ratios), max(ratios)))
    finally:
        await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of few calls")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    rounds = 2 if args.quick else args.rounds
    calls = {1: 20, 100: 3} if args.quick else {1: 300, 100: 30}
    for line in machine_facts(backends):
        print(line)
    print(f"before: {load_average()}")
    print(f"{'backend':10} {'events/call':>11} {'append ev/s':>12} {'append_bytes ev/s':>18}  append_bytes/append")
    for backend in backends:
        fresh = fresh_database(backend, "byte_append")
        try:
            for n, facta, byte, ratio, low, high in asyncio.run(_backend(fresh.url, rounds, calls)):
                print(f"{backend:10} {n:>11} {facta:>12,.0f} {byte:>18,.0f}  {ratio:.2f}x ({low:.2f}-{high:.2f})")
        finally:
            fresh.drop()
    print(f"after: {load_average()}")


if __name__ == "__main__":
    main()
