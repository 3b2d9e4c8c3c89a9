"""Inclusion proofs from the sealed Merkle log at 10,000 and 1,000,000 events (PostgreSQL).

    python bench/merkle.py              # 10,000 and 1,000,000 events, 300 rounds
    python bench/merkle.py --quick      # 1,000 and 20,000 events, 30 rounds (smoke run, used by tests)

Two fresh stores, their events loaded with COPY (not timed), each the first of its own
stream with its chain hash computed as ``facta_append`` computes it (so every proof also
passes the offline check of the event's fields). The small one is sealed the real way
(``facta.eventstore.sealer.seal``, timed: sealing events/s); the large one gets the same
tables by COPY (not timed): every leaf and complete node computed by ``merkle.Frontier``
(the sealer's own arithmetic) and one head signed over the root. Both roots are checked
against a tree computed apart.

Then ``--rounds`` rounds, each proving one random event on each store, the order of the two
alternating by round: ``sealer.prove(store, event_id)`` (what ``facta audit prove`` runs:
the event by id, its leaf, the newest head and the O(log n) stored nodes in one query)
is timed; every proof is then checked offline (``sealer.verify_proof``, not timed). The
table gives each store's median with min-max, the median of the per-round ratios
large/small with min-max (aim: under 10 ms at 1M events, growing like log n: 1M/10k
is 20 levels against 14) and the offline check's median.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from _common import Fresh, fresh_database, load_average, machine_facts, migrate
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facta.eventstore import EventStore, integrity, merkle, sealer

KEY = Ed25519PrivateKey.generate()
CHUNK = 100_000


STAMP = datetime(2026, 11, 1, tzinfo=UTC)


def event_ids(size: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=random.Random(size).getrandbits(128) ^ n) for n in range(size)]


def chain_hashes(ids: list[uuid.UUID]) -> list[bytes]:
    """Each event is the first of its own stream (so its chain predecessor is ZERO) with
    payload ``{}`` (jsonb gives back the same text): its event_hash as facta_append makes it."""
    return [integrity.event_hash(integrity.ZERO, integrity.content_digest(
        event_id=e, stream_id=f"s-{n:07d}", stream_type="account", version=1, event_type="account.deposited",
        schema_version=1, payload="{}", occurred_at=STAMP, actor=None, correlation_id=None, causation_id=None))
        for n, e in enumerate(ids)]


@dataclass
class Store:
    size: int
    fresh: Fresh
    ids: list[uuid.UUID]
    seal_s: float | None = None


def _copy(conn: psycopg.Connection[tuple[object, ...]], statement: str, lines: list[str]) -> None:
    with conn.cursor().copy(statement) as copy:
        copy.write("".join(lines))


def load_events(fresh: Fresh, ids: list[uuid.UUID], hashes: list[bytes]) -> None:
    """The events, one per stream, with their chain hashes, by COPY."""
    stamp = STAMP.isoformat()
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        for start in range(0, len(ids), CHUNK):
            lines = [
                f"{ids[n]}\ts-{n:07d}\taccount\t1\taccount.deposited\t1\t{{}}\t{stamp}\t{stamp}\t\\\\x{hashes[n].hex()}\n"
                for n in range(start, min(len(ids), start + CHUNK))
            ]
            _copy(conn, "COPY facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
                        " payload, occurred_at, recorded_at, event_hash) FROM STDIN", lines)
        conn.execute("ANALYZE facta_events")


def load_tree(fresh: Fresh, hashes: list[bytes]) -> bytes:
    """Every leaf and complete node of the tree over the events' hashes, by COPY; one
    signed head. Returns the root."""
    size = len(hashes)
    tree = merkle.Frontier()
    leaves: list[str] = []
    nodes: list[str] = []
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        for n in range(size):
            for (level, index), h in tree.push(merkle.leaf_hash(hashes[n])):
                if level == 0:
                    leaves.append(f"{index}\t{n + 1}\t\\\\x{h.hex()}\n")
                else:
                    nodes.append(f"{level}\t{index}\t\\\\x{h.hex()}\n")
            if len(leaves) >= CHUNK or n == size - 1:
                _copy(conn, "COPY facta_tree_leaves (leaf_index, position, leaf_hash) FROM STDIN", leaves)
                _copy(conn, "COPY facta_tree_nodes (level, node_index, hash) FROM STDIN", nodes)
                leaves, nodes = [], []
        head = merkle.sign_head(KEY, size, tree.root(), size, datetime.now(UTC))
        conn.execute("INSERT INTO facta_tree_heads (tree_size, root_hash, last_position, signed_at, key_id, signature)"
                     " VALUES (%s, %s, %s, %s, %s, %s)",
                     (head.tree_size, head.root_hash, head.last_position, head.signed_at, head.key_id, head.signature))
        conn.execute("ANALYZE facta_tree_leaves")
        conn.execute("ANALYZE facta_tree_nodes")
    return tree.root()


async def build(size: int, *, real_seal: bool) -> Store:
    fresh = fresh_database("postgresql", f"merkle{size}")
    try:
        return await _fill(fresh, size, real_seal=real_seal)
    except BaseException:
        fresh.drop()
        raise


async def _fill(fresh: Fresh, size: int, *, real_seal: bool) -> Store:
    await migrate(fresh.url)
    ids = event_ids(size)
    hashes = chain_hashes(ids)
    load_events(fresh, ids, hashes)
    expected = merkle.root_hash(merkle.leaf_hash(h) for h in hashes)
    store = Store(size, fresh, ids)
    if real_seal:
        async with await EventStore.open(fresh.url) as es:
            t0 = time.perf_counter()
            report = await sealer.seal(es, KEY)
            store.seal_s = time.perf_counter() - t0
        assert report.head is not None and report.head.root_hash == expected
    else:
        assert load_tree(fresh, hashes) == expected
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_total_relation_size('facta_tree_leaves') + pg_total_relation_size('facta_tree_nodes'),"
                           " pg_total_relation_size('facta_events')").fetchone()
        assert row is not None
        print(f"{size:,} events: tree tables {row[0] / 2**20:,.1f} MiB (with indexes), events {row[1] / 2**20:,.1f} MiB")
    return store


async def run(sizes: tuple[int, int], rounds: int) -> None:
    for line in machine_facts(["postgresql"]):
        print(line)
    small = await build(sizes[0], real_seal=True)
    try:
        large = await build(sizes[1], real_seal=False)
    except BaseException:
        small.fresh.drop()
        raise
    assert small.seal_s is not None
    print(f"sealed {small.size:,} events with sealer.seal in {small.seal_s:.2f} s"
          f" ({small.size / small.seal_s:,.0f} events/s)")
    rng = random.Random(14)
    times: dict[int, list[float]] = {small.size: [], large.size: []}
    checks: list[float] = []
    ratios: list[float] = []
    try:
        async with await EventStore.open(small.fresh.url) as a, await EventStore.open(large.fresh.url) as b:
            pairs = [(small, a), (large, b)]
            for s, es in pairs:  # warm-up: connections, statement caches
                await sealer.prove(es, s.ids[0])
            for r in range(rounds):
                this: dict[int, float] = {}
                for s, es in (pairs if r % 2 == 0 else pairs[::-1]):
                    wanted = s.ids[rng.randrange(s.size)]
                    t0 = time.perf_counter()
                    doc = await sealer.prove(es, wanted)
                    this[s.size] = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    sealer.verify_proof(doc, KEY.public_key())
                    checks.append(time.perf_counter() - t1)
                for size, t in this.items():
                    times[size].append(t)
                ratios.append(this[large.size] / this[small.size])
    finally:
        small.fresh.drop()
        large.fresh.drop()
    print(f"{rounds} rounds, the two stores alternating first; times in ms")
    print(f"{'store':>12} | {'prove median (min-max)':>28} | audit path length")
    for size in sizes:
        ms = [t * 1000 for t in times[size]]
        depth = (size - 1).bit_length()
        print(f"{size:>12,} | {statistics.median(ms):8.3f} ({min(ms):.3f}-{max(ms):.3f}) | up to {depth}")
    print(f"ratio {sizes[1]:,} / {sizes[0]:,}, median of per-round ratios: {statistics.median(ratios):.2f}"
          f" ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"offline check (verify_proof: signature, event hash, path), median {statistics.median(checks) * 1000:.3f} ms"
          f" ({min(checks) * 1000:.3f}-{max(checks) * 1000:.3f})")
    print(load_average())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000 and 20,000 events, 30 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    sizes = (1_000, 20_000) if args.quick else (10_000, 1_000_000)
    asyncio.run(run(sizes, args.rounds or (30 if args.quick else 300)))


if __name__ == "__main__":
    main()
