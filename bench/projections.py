"""Projection rebuild throughput and latency: facta beside a raw loop and eventsourcing 9.5.

One store on PostgreSQL is loaded with N events of an account/ride mix (accounts opened,
deposits, withdrawals, transfers as two events, a few closures; rides requested, offered,
accepted, driver arrived, trip started, 3-8 telemetry points, trip ended, a few
cancelled), written with ``EventStore.append_many`` in 5,000-event appends. For the Kafka
source the relay then publishes the whole log to a local development broker (topics
``<prefix>.account`` and ``<prefix>.ride``, 3 partitions each), untimed.

(1) rebuild throughput, events/s: the events a projection handles divided by the time to
    build its PostgreSQL read model from scratch (``account_balances`` handles every
    account event; ``ride_board`` the ride events except telemetry, which it skips).

    facta          ``replay(store, projection, ReplayFrom(position=0), batch_size=B)`` from
                   the store log, and ``ReplayFrom(offset=0), kafka=KafkaSettings(...)``
                   from Kafka: fresh ``<table>__rebuild`` tables, filled batch by batch
                   (handlers, ReadModel flush, checkpoint in one transaction), then
                   swapped in. Timed whole, planning and swap included.
    raw            asyncpg and hand-written SQL, the same batch size, one transaction per
                   batch: read the log rows of the handled types (only the columns used,
                   payload as text), ``json.loads`` each payload, fold the batch into one
                   row per key in plain Python, write them with one
                   ``INSERT ... SELECT FROM unnest($1, ...) ON CONFLICT DO UPDATE`` and move
                   a one-row checkpoint. From Kafka: a bare aiokafka consumer assigned to the
                   topic's partitions from the beginning, ``getmany(max_records=B)``,
                   skipping unhandled types by the ``event-type`` header, writing the same
                   way with per-partition offsets as the checkpoint (aiokafka's default
                   fetch settings, as facta's consumer). Same table DDL and index as the
                   projection's.
    eventsourcing  eventsourcing 9.5's ``ProjectionRunner`` with a ``PostgresTrackingRecorder``
                   view: the same events (same stream ids, versions, times and fields)
                   were written beforehand, untimed, into an eventsourcing PostgreSQL
                   application (its own database, text originator ids); the runner
                   catches up from the start with the projection's topics as its filter,
                   one transaction per event (the row upsert and its tracking record), as
                   eventsourcing's projections do. Timed from constructing the runner to
                   its view tracking the last event timed: the first ``--es-events``
                   handled events (default 5,000; its rate is one commit per event
                   wherever it is in the log), checked against the raw loop over the same
                   prefix. eventsourcing has no Kafka source: the Kafka rows compare facta
                   against the same run.

    Personal data (issue 14): the reference ``AccountOpened`` marks ``owner`` as
    ``PersonalData``, so facta_events (and the Kafka records the relay publishes) hold it
    sealed (``pd1:...``, AES-GCM) and facta's reads open it. Every contender builds the
    same read model from the same stored events, so each pays for that opening as facta
    does: the raw loops find the rows holding a sealed field by the same ``pd1:`` test
    facta's reads make on every payload and open them per batch through a store's
    shredder (``store.shredder.reveal``: one key-store read per batch, AES-GCM per field),
    the code facta's log and Kafka reads run. The workload keeps the sealed field rather
    than dropping it because that is what facta's reference projections meet in use: a
    bench without it would not measure facta's reads as they are. eventsourcing has no
    sealed fields: its store is loaded (untimed) with the events as facta's reads return
    them, owner in the clear, which is what an eventsourcing user would store; it opens
    nothing, a small advantage to it (one event in 40 or fewer is an ``account.opened``).

    The read model each contender builds is checked against the others (row count and an
    md5 of every row in key order) after every run. Every run starts after a gc.collect()
    and a gc.freeze(), as `facta replay` and `facta projections run` do.

(2) append -> read model latency, ms: on a fresh store, a ``ProjectionRunner`` for
    ``account_balances`` runs as a task (default ``RunnerConfig``: log polled every 50 ms;
    from Kafka, with the relay running as another task at its default 20 ms poll). One
    deposit at a time is appended with ``EventStore.append``; the clock starts when the
    append returns (committed) and stops when a separate connection, polling every 2 ms,
    sees the account's row at the new version. A random 0-100 ms pause between samples
    keeps them from locking onto the poll phase. Appender, runner(s) and poller share one
    process and event loop.

Each contender runs ``--rounds`` times per projection and source, in rotated order;
figures are medians, ratios are medians of per-round ratios. Aims: facta >= 0.5x raw and
>= 3x eventsourcing.

    python bench/projections.py                    # 120,000 events, 3 rounds; about 2 minutes
    python bench/projections.py --events 200000 --rounds 3
    python bench/projections.py --es-events 0      # eventsourcing over every event (slow)
    python bench/projections.py --quick            # smoke run, < 30 s
    python bench/projections.py --profile          # where facta's log replay spends its time
    python bench/projections.py --telemetry        # the cost of facta's traces and metrics (issue 15)

``--telemetry`` measures what facta's OpenTelemetry traces and metrics cost a projection
on the store log: facta alone, as three contenders each in a process of its own
(``_telemetry``): "none" (``facta.tracing.instrument(False)`` and
``facta.metrics.instrument(False)``), "off" (no SDK: the default) and "on" (SDK providers,
spans batched to an exporter that drops them, a metric reader that never exports). One
base store is loaded with ``--events`` events of the mix; every round gives each
contender its own copy (``CREATE DATABASE ... TEMPLATE``), an untimed warm-up replay, then
(a) ``TELEMETRY_REPLAY_SLICES`` slices of one ``replay`` of account_balances from position
0, and (b) after an untimed catch-up, ``TELEMETRY_FOLLOW_SLICES`` slices of: every
contender appends the next ``TELEMETRY_CHUNK`` events of the same mix (untimed), then
each times a ``ProjectionRunner(...).run(once=True)`` catching up with them. In each
slice every contender runs one unit, in each of the six orders in turn, after a
``gc.collect()`` (the worker's planned events frozen out of the collector's view at the
round's start); a contender's round time is the sum of its slices (wall time and its
process's CPU time). Reported:
events/s and the medians (min-max) of the per-round ratios of each contender's wall and
CPU time over "none"'s, against the aim "off" <= 1.02x, and "on"'s cost.
After every round the three read models must be alike (rows and md5).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import gc
import importlib.util
import json
import pstats
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any, ClassVar

import asyncpg
import psycopg
from _common import Fresh, fresh_database, load_average, machine_facts, median, percentile, render_table
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from eventsourcing.application import Application
from eventsourcing.domain import HasOriginatorIDVersion
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.projection import Projection as ESProjection
from eventsourcing.projection import ProjectionRunner as ESProjectionRunner
from psycopg.sql import SQL
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from facta.dev.devbroker import Broker, BrokerError, default_kind, start_broker
from facta.domain import DomainEvent, PendingEvent
from facta.domain.reference import (
    AccountClosed,
    AccountOpened,
    Deposited,
    DriverArrived,
    Location,
    RideAccepted,
    RideCancelled,
    RideOffered,
    RideRequested,
    TelemetryRecorded,
    TransferredIn,
    TransferredOut,
    TripEnded,
    TripStarted,
    Withdrawn,
)
from facta.eventstore import EventStore, RecordedEvent, StreamAppend
from facta.eventstore.personal_data import PREFIX as SEALED
from facta.eventstore.personal_data import Shredder
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import KafkaSettings, Projection, ProjectionRunner, RunnerConfig
from facta.projections.reference import AccountBalances, RideBoard
from facta.projections.replay import ReplayFrom, replay

CONTENDERS = ("facta", "raw", "eventsourcing")
PROJECTIONS: tuple[type[Projection], ...] = (AccountBalances, RideBoard)
SOURCES = ("log", "kafka")
LOAD_CHUNK = 5000  # events per append_many when loading (and per eventsourcing insert)
PARTITIONS = 3
AIM_RAW = 0.5
AIM_ES = 3.0
POLL_S = 0.002  # the latency poller's interval
LATENCY_ACCOUNTS = 8
RUN_ID = uuid.uuid4().hex[:6]
ES_APP = "bench"
SEALED_BYTES = SEALED.encode()  # a sealed field's stored string starts with it
BASE_TIME = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
PG = postgresql.dialect()  # type: ignore[no-untyped-call]


# -- the event mix -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    stream_id: str
    stream_type: str
    event: DomainEvent
    occurred_at: datetime


def build_mix(n: int, seed: int = 20260105) -> list[Planned]:
    """``n`` (or one more: a transfer is two events) valid events of accounts and rides,
    interleaved: about half account events, half ride events (a bit under half of those
    telemetry). Deterministic for a seed."""
    rng = random.Random(seed)
    out: list[Planned] = []
    clock = [BASE_TIME]

    def emit(stream: str, stype: str, event: DomainEvent) -> None:
        clock[0] += timedelta(milliseconds=rng.randint(1, 40))
        out.append(Planned(stream, stype, event, clock[0]))

    target_accounts = max(LATENCY_ACCOUNTS, n // 40)
    accounts: list[str] = []
    balance: dict[str, int] = {}
    open_accounts: list[str] = []
    transfers = 0
    rides: list[dict[str, Any]] = []
    ride_seq = 0

    def point() -> Location:
        return Location(lat=52.40 + rng.random() * 0.25, lon=13.20 + rng.random() * 0.40)

    while len(out) < n:
        if rng.random() < 0.5:  # an account
            if len(open_accounts) < 2 or (len(accounts) < target_accounts and rng.random() < 0.1):
                acct = f"acct-{len(accounts):06d}"
                accounts.append(acct)
                open_accounts.append(acct)
                balance[acct] = 0
                emit(acct, "account", AccountOpened(owner=f"owner-{len(accounts) % 997}", currency="EUR"))
                continue
            acct = rng.choice(open_accounts)
            r = rng.random()
            if r < 0.45 or balance[acct] == 0:
                amount = rng.randint(100, 50_000)
                balance[acct] += amount
                emit(acct, "account", Deposited(amount=amount, reference=f"dep-{len(out)}"))
            elif r < 0.65:
                amount = rng.randint(1, balance[acct])
                balance[acct] -= amount
                emit(acct, "account", Withdrawn(amount=amount))
            elif r < 0.997:
                other = rng.choice(open_accounts)
                if other == acct:
                    continue
                amount = rng.randint(1, min(balance[acct], 20_000))
                transfers += 1
                tid = f"tx-{transfers}"
                balance[acct] -= amount
                balance[other] += amount
                emit(acct, "account", TransferredOut(amount=amount, to_account=other, transfer_id=tid))
                emit(other, "account", TransferredIn(amount=amount, from_account=acct, transfer_id=tid))
            else:
                emit(acct, "account", Withdrawn(amount=balance[acct], reference="closing"))
                balance[acct] = 0
                emit(acct, "account", AccountClosed(reason="customer request"))
                open_accounts.remove(acct)
            continue
        # a ride
        if not rides or (len(rides) < 200 and rng.random() < 0.15):
            ride_seq += 1
            ride = {"id": f"ride-{ride_seq:07d}", "stage": "requested", "left": rng.randint(3, 8), "distance": 0}
            rides.append(ride)
            emit(ride["id"], "ride", RideRequested(
                rider_id=f"rider-{rng.randint(1, 5000)}", pickup=point(), dropoff=point(),
                rider_account=rng.choice(accounts) if accounts else None,
            ))
            continue
        ride = rng.choice(rides)
        rid, stage = ride["id"], ride["stage"]
        if stage == "requested":
            ride["stage"] = "offered"
            emit(rid, "ride", RideOffered(driver_ids=tuple(f"drv-{rng.randint(1, 800)}" for _ in range(rng.randint(1, 3)))))
        elif stage == "offered":
            if rng.random() < 0.07:
                rides.remove(ride)
                emit(rid, "ride", RideCancelled(reason="no driver accepted", by="system"))
            else:
                ride["stage"] = "accepted"
                emit(rid, "ride", RideAccepted(driver_id=f"drv-{rng.randint(1, 800)}", eta_seconds=rng.randint(60, 900)))
        elif stage == "accepted":
            if rng.random() < 0.05:
                rides.remove(ride)
                emit(rid, "ride", RideCancelled(reason="rider changed plans", by="rider"))
            else:
                ride["stage"] = "arrived"
                emit(rid, "ride", DriverArrived())
        elif stage == "arrived":
            ride["stage"] = "trip"
            emit(rid, "ride", TripStarted())
        elif ride["left"] > 0:
            ride["left"] -= 1
            ride["distance"] += rng.randint(100, 900)
            emit(rid, "ride", TelemetryRecorded(position=point(), speed_kmh=rng.random() * 60, distance_m=ride["distance"]))
        else:
            rides.remove(ride)
            emit(rid, "ride", TripEnded(
                distance_m=ride["distance"], duration_s=rng.randint(300, 2400),
                fare=500 + ride["distance"] * 2, currency="EUR",
            ))
    return out


def handled_count(mix: Sequence[Planned], projection: type[Projection]) -> int:
    types = set(projection.event_types())
    return sum(1 for p in mix if p.event.event_type in types)


async def load_store(store: EventStore, mix: Sequence[Planned], versions: dict[str, int] | None = None) -> None:
    """The mix in ``LOAD_CHUNK``-event ``append_many`` calls; within one call a stream's
    events are contiguous, in the order they were planned. ``versions``: where each
    stream stands before (updated; empty: every stream is new)."""
    versions = {} if versions is None else versions
    for start in range(0, len(mix), LOAD_CHUNK):
        grouped: dict[str, list[Planned]] = {}
        for p in mix[start : start + LOAD_CHUNK]:
            grouped.setdefault(p.stream_id, []).append(p)
        appends = []
        for stream, planned in grouped.items():
            appends.append(StreamAppend(
                stream, planned[0].stream_type,
                [PendingEvent(p.event, uuid.uuid4(), p.occurred_at) for p in planned],
                versions.get(stream, 0),
            ))
            versions[stream] = versions.get(stream, 0) + len(planned)
        await store.append_many(appends)


# -- read-model tables and checks ------------------------------------------------------------------


def table_ddl(projection: type[Projection], suffix: str = "") -> list[str]:
    """CREATE TABLE and CREATE INDEX for the projection's table, named ``<name><suffix>``."""
    (table,) = projection(table_suffix=suffix).tables.values()
    return [str(CreateTable(table).compile(dialect=PG)).strip()] + [
        str(CreateIndex(index).compile(dialect=PG)).strip() for index in table.indexes
    ]


def live_table(projection: type[Projection]) -> str:
    (table,) = projection.live_tables()
    return table.name


def key_column(projection: type[Projection]) -> str:
    (table,) = projection.live_tables()
    (key,) = table.primary_key.columns
    return key.name


async def digest(dsn: str, projection: type[Projection], table: str) -> tuple[int, str]:
    """Row count and an md5 of every row (as text, in key order) of a read-model table."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        row = await conn.fetchrow(
            f'SELECT count(*), md5(coalesce(string_agg(t::text, E\'\\n\' ORDER BY t."{key_column(projection)}"), \'\'))'
            f' FROM "{table}" t'
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), str(row[1])


# -- facta -------------------------------------------------------------------------------------------


async def facta_rebuild(
    fresh: Fresh, projection: type[Projection], source: str, kafka: KafkaSettings | None, batch: int
) -> tuple[int, float]:
    store = await EventStore.open(fresh.url)
    try:
        start = ReplayFrom(position=0) if source == "log" else ReplayFrom(offset=0)
        t0 = time.perf_counter()
        result = await replay(store, projection, start, kafka=kafka if source == "kafka" else None, batch_size=batch)
        return result.events, time.perf_counter() - t0
    finally:
        await store.close()


# -- raw: asyncpg, fold per batch, one unnest upsert per batch ------------------------------------


ACCOUNT_UPSERT = """
INSERT INTO "{t}" AS t (account_id, owner, currency, status, balance, last_activity, version)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::bigint[],
                     $6::timestamptz[], $7::int[])
ON CONFLICT (account_id) DO UPDATE SET
  owner = COALESCE(EXCLUDED.owner, t.owner), currency = COALESCE(EXCLUDED.currency, t.currency),
  status = COALESCE(EXCLUDED.status, t.status), balance = t.balance + EXCLUDED.balance,
  last_activity = EXCLUDED.last_activity, version = EXCLUDED.version
"""

RIDE_UPSERT = """
INSERT INTO "{t}" AS t (ride_id, rider_id, status, driver_id, eta_seconds, distance_m, fare, currency,
                        requested_at, updated_at, version)
SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], $5::int[], $6::int[],
                     $7::bigint[], $8::varchar[], $9::timestamptz[], $10::timestamptz[], $11::int[])
ON CONFLICT (ride_id) DO UPDATE SET
  rider_id = COALESCE(EXCLUDED.rider_id, t.rider_id), status = EXCLUDED.status,
  driver_id = COALESCE(EXCLUDED.driver_id, t.driver_id), eta_seconds = COALESCE(EXCLUDED.eta_seconds, t.eta_seconds),
  distance_m = COALESCE(EXCLUDED.distance_m, t.distance_m), fare = COALESCE(EXCLUDED.fare, t.fare),
  currency = COALESCE(EXCLUDED.currency, t.currency), requested_at = COALESCE(EXCLUDED.requested_at, t.requested_at),
  updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
"""

_ACCOUNT_DELTA = {
    "account.deposited": 1, "account.transferred_in": 1, "account.withdrawn": -1, "account.transferred_out": -1,
}
_RIDE_STATUS = {
    "ride.requested": "requested", "ride.offered": "offered", "ride.accepted": "accepted",
    "ride.driver_arrived": "driver_arrived", "ride.trip_started": "in_trip", "ride.trip_ended": "completed",
    "ride.cancelled": "cancelled",
}


def fold_account(rows: dict[str, list[Any]], stream: str, version: int, etype: str, data: dict[str, Any],
                 occurred: datetime) -> None:
    """One event into the batch's pending row: [owner, currency, status, balance delta, last_activity, version]."""
    row = rows.get(stream)
    if row is None:
        row = rows[stream] = [None, None, None, 0, None, None]
    sign = _ACCOUNT_DELTA.get(etype)
    if sign is not None:
        row[3] += sign * data["amount"]
    elif etype == "account.opened":
        row[0], row[1], row[2] = data["owner"], data["currency"], "open"
    elif etype == "account.closed":
        row[2] = "closed"
    row[4], row[5] = occurred, version


def fold_ride(rows: dict[str, list[Any]], stream: str, version: int, etype: str, data: dict[str, Any],
              occurred: datetime) -> None:
    """[rider_id, status, driver_id, eta_seconds, distance_m, fare, currency, requested_at, updated_at, version]."""
    row = rows.get(stream)
    if row is None:
        row = rows[stream] = [None, None, None, None, None, None, None, None, None, None]
    row[1] = _RIDE_STATUS[etype]
    if etype == "ride.requested":
        row[0], row[7] = data["rider_id"], occurred
    elif etype == "ride.accepted":
        row[2], row[3] = data["driver_id"], data["eta_seconds"]
    elif etype == "ride.driver_arrived":
        row[3] = 0
    elif etype == "ride.trip_ended":
        row[4], row[5], row[6] = data["distance_m"], data["fare"], data["currency"]
    row[8], row[9] = occurred, version


RAW = {
    "account_balances": (fold_account, ACCOUNT_UPSERT),
    "ride_board": (fold_ride, RIDE_UPSERT),
}


def columns_of(rows: dict[str, list[Any]]) -> list[list[Any]]:
    """The pending rows as one array per column, the key first (unnest's arguments)."""
    return [list(rows), *map(list, zip(*rows.values(), strict=True))] if rows else []


RAW_SUFFIX = "__raw"


async def raw_setup(conn: Any, projection: type[Projection], suffix: str = RAW_SUFFIX) -> str:
    table = live_table(projection) + suffix
    await conn.execute(f'DROP TABLE IF EXISTS "{table}"')
    for ddl in table_ddl(projection, suffix):
        await conn.execute(ddl)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS raw_checkpoints (name text, part int, position bigint, PRIMARY KEY (name, part))"
    )
    await conn.execute("DELETE FROM raw_checkpoints WHERE name = $1", table)
    return table


RAW_LOG_READ = (
    "SELECT position, event_id, stream_id, version, event_type, payload::text, occurred_at FROM facta_events"
    " WHERE position > $1 AND position <= $4 AND event_type = ANY($2::text[]) ORDER BY position LIMIT $3"
)


async def open_sealed(shredder: Shredder, sealed: Sequence[Sequence[Any]]) -> dict[Any, str]:
    """The payloads of ``sealed`` (rows of position or other key, event id, stream id,
    version, event type, stored payload, occurred at), keyed by their first column, with
    their ``PersonalData`` fields opened by the store's shredder: one key-store read for
    the batch and AES-GCM per sealed field, the very work facta's reads (and its Kafka
    source) do on a page. Every other row's payload is already plain."""
    records = [RecordedEvent(0, event_id, stream, "", version, etype, 1, payload, occurred, occurred, None, None, None)
               for _key, event_id, stream, version, etype, payload, occurred in sealed]
    await shredder.reveal(records)
    return {row[0]: record.payload for row, record in zip(sealed, records, strict=True)}


async def raw_log(
    fresh: Fresh, projection: type[Projection], batch: int, *, until: int = 2**62, suffix: str = RAW_SUFFIX
) -> tuple[int, float]:
    """The raw contender from the log (up to position ``until``, into ``<table><suffix>``).
    Rows holding a sealed field (``pd1:`` in the payload text, the test facta's reads
    make too) are opened through a store's shredder (:func:`open_sealed`) before the fold."""
    conn = await asyncpg.connect(fresh.dsn)
    store = await EventStore.open(fresh.url)  # for its key store only: the opening of sealed fields
    try:
        shredder = store.shredder
        table = await raw_setup(conn, projection, suffix)
        await conn.execute("INSERT INTO raw_checkpoints VALUES ($1, -1, 0)", table)
        fold, upsert = RAW[projection.name]
        upsert = upsert.format(t=table)
        types = projection.event_types()
        loads = json.loads
        handled = 0
        t0 = time.perf_counter()
        after = 0
        while True:
            events = await conn.fetch(RAW_LOG_READ, after, types, batch, until)
            if not events:
                break
            sealed = [e for e in events if SEALED in e[5]]
            opened = await open_sealed(shredder, sealed) if sealed else {}
            rows: dict[str, list[Any]] = {}
            for position, _event_id, stream, version, etype, payload, occurred in events:
                fold(rows, stream, version, etype, loads(opened.get(position, payload) if opened else payload), occurred)
            after = events[-1][0]
            async with conn.transaction():
                await conn.execute(upsert, *columns_of(rows))
                await conn.execute("UPDATE raw_checkpoints SET position = $2 WHERE name = $1 AND part = -1", table, after)
            handled += len(events)
        return handled, time.perf_counter() - t0
    finally:
        await conn.close()
        await store.close()


async def raw_kafka(fresh: Fresh, projection: type[Projection], kafka: KafkaSettings, batch: int) -> tuple[int, float]:
    """The raw contender from Kafka. The records carry the stored ciphertext of sealed
    fields (as the relay publishes them): those are opened per fetched batch through a
    store's shredder (:func:`open_sealed`), as facta's Kafka source opens them."""
    conn = await asyncpg.connect(fresh.dsn)
    store = await EventStore.open(fresh.url)  # for its key store only: the opening of sealed fields
    try:
        shredder = store.shredder
        table = await raw_setup(conn, projection)
        fold, upsert = RAW[projection.name]
        upsert = upsert.format(t=table)
        types = {t.encode(): t for t in projection.event_types()}
        loads, fromiso = json.loads, datetime.fromisoformat
        handled = 0
        t0 = time.perf_counter()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for topic in kafka.topics(projection)
                     for p in sorted(consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            done = {tp: 0 for tp in parts}
            await conn.executemany("INSERT INTO raw_checkpoints VALUES ($1, $2, 0)", [(table, i) for i in range(len(parts))])
            index = {tp: i for i, tp in enumerate(parts)}
            while any(done[tp] < ends[tp] for tp in parts):
                fetched = await consumer.getmany(timeout_ms=500, max_records=batch)
                if not fetched:
                    continue
                mine: list[tuple[str, int, str, bytes, datetime]] = []
                sealed: list[tuple[int, uuid.UUID, str, int, str, str, datetime]] = []
                for tp, messages in fetched.items():
                    for m in messages:
                        headers = dict(m.headers)
                        etype = types.get(headers["event-type"])
                        if etype is not None:
                            stream, version = m.key.decode(), int(headers["stream-version"])
                            occurred = fromiso(headers["occurred-at"].decode())
                            if SEALED_BYTES in m.value:
                                sealed.append((len(mine), uuid.UUID(headers["event-id"].decode()), stream, version,
                                               etype, m.value.decode(), occurred))
                            mine.append((stream, version, etype, m.value, occurred))
                    done[tp] = messages[-1].offset + 1
                opened = await open_sealed(shredder, sealed) if sealed else {}
                rows: dict[str, list[Any]] = {}
                for i, (stream, version, etype, value, occurred) in enumerate(mine):
                    fold(rows, stream, version, etype, loads(opened.get(i, value) if opened else value), occurred)
                handled += len(mine)
                async with conn.transaction():
                    if rows:
                        await conn.execute(upsert, *columns_of(rows))
                    await conn.execute(
                        "UPDATE raw_checkpoints c SET position = v.position FROM unnest($2::int[], $3::bigint[])"
                        " AS v(part, position) WHERE c.name = $1 AND c.part = v.part",
                        table, [index[tp] for tp in fetched], [done[tp] for tp in fetched],
                    )
        finally:
            await consumer.stop()
        return handled, time.perf_counter() - t0
    finally:
        await conn.close()
        await store.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise SystemExit(f"topic {topic} has no partitions")


# -- eventsourcing 9.5 ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ESEvent(HasOriginatorIDVersion[str]):
    """Base of the eventsourcing events: text originator ids (facta's stream ids)."""

    originator_id: str
    originator_version: int
    timestamp: datetime


ES_CLASSES: dict[str, type[ESEvent]] = {}


def _es_class(event_cls: type[DomainEvent]) -> type[ESEvent]:
    """An eventsourcing event class with the same fields as a facta event class."""
    name = "ES_" + event_cls.event_type.replace(".", "_")
    fields = event_cls.model_fields
    spec: list[Any] = [(f, Any) for f, info in fields.items() if info.is_required()]
    spec += [(f, Any, dataclasses.field(default=info.default)) for f, info in fields.items() if not info.is_required()]
    cls = dataclasses.make_dataclass(name, spec, bases=(ESEvent,), frozen=True, namespace={"__module__": __name__})
    globals()[name] = cls  # so that eventsourcing can resolve its topic
    return cls


for _cls in (AccountOpened, Deposited, Withdrawn, TransferredOut, TransferredIn, AccountClosed, RideRequested,
             RideOffered, RideAccepted, DriverArrived, TripStarted, TelemetryRecorded, TripEnded, RideCancelled):
    ES_CLASSES[_cls.event_type] = _es_class(_cls)


class ESBenchApp(Application[str]):
    name = ES_APP


class ESView(PostgresTrackingRecorder):
    """A view: one read-model table plus eventsourcing's tracking table, both made by
    the recorder's ``create_table``."""

    projection: type[Projection]
    upsert_sql: str

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        for ddl in table_ddl(self.projection):
            self.sql_create_statements.append(SQL(ddl.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)  # type: ignore[arg-type]
                                                   .replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1)))
        self._sql = SQL(self.upsert_sql)  # type: ignore[arg-type]

    def upsert(self, params: Sequence[Any], tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._sql, params, prepare=True)
            self._insert_tracking(curs, tracking)


ES_ACCOUNT_UPSERT = """
INSERT INTO account_balances AS t (account_id, owner, currency, status, balance, last_activity, version)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (account_id) DO UPDATE SET
  owner = COALESCE(EXCLUDED.owner, t.owner), currency = COALESCE(EXCLUDED.currency, t.currency),
  status = COALESCE(EXCLUDED.status, t.status), balance = t.balance + EXCLUDED.balance,
  last_activity = EXCLUDED.last_activity, version = EXCLUDED.version
"""
ES_RIDE_UPSERT = """
INSERT INTO ride_board AS t (ride_id, rider_id, status, driver_id, eta_seconds, distance_m, fare, currency,
                             requested_at, updated_at, version)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (ride_id) DO UPDATE SET
  rider_id = COALESCE(EXCLUDED.rider_id, t.rider_id), status = EXCLUDED.status,
  driver_id = COALESCE(EXCLUDED.driver_id, t.driver_id), eta_seconds = COALESCE(EXCLUDED.eta_seconds, t.eta_seconds),
  distance_m = COALESCE(EXCLUDED.distance_m, t.distance_m), fare = COALESCE(EXCLUDED.fare, t.fare),
  currency = COALESCE(EXCLUDED.currency, t.currency), requested_at = COALESCE(EXCLUDED.requested_at, t.requested_at),
  updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
"""


class ESBalancesView(ESView):
    projection = AccountBalances
    upsert_sql = ES_ACCOUNT_UPSERT


class ESRidesView(ESView):
    projection = RideBoard
    upsert_sql = ES_RIDE_UPSERT


class ESBalances(ESProjection[ESBalancesView]):
    """account_balances, eventsourcing style: one handler call per event."""

    name = "account_balances"
    topics = tuple(f"{__name__}:{ES_CLASSES[t].__qualname__}" for t in AccountBalances.event_types())

    stop_after: ClassVar[int] = 2**62  # the bench times a prefix: events after this are left alone

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if tracking.notification_id > self.stop_after:
            return
        etype = _ES_TYPE[type(domain_event)]
        e = domain_event
        owner = currency = status = None
        delta = 0
        if etype == "account.opened":
            owner, currency, status = e.owner, e.currency, "open"
        elif etype == "account.closed":
            status = "closed"
        else:
            delta = _ACCOUNT_DELTA[etype] * e.amount
        self.view.upsert((e.originator_id, owner, currency, status, delta, e.timestamp, e.originator_version), tracking)


class ESRides(ESProjection[ESRidesView]):
    name = "ride_board"
    topics = tuple(f"{__name__}:{ES_CLASSES[t].__qualname__}" for t in RideBoard.event_types())

    stop_after: ClassVar[int] = 2**62

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        if tracking.notification_id > self.stop_after:
            return
        etype = _ES_TYPE[type(domain_event)]
        e = domain_event
        row: list[Any] = [e.originator_id, None, _RIDE_STATUS[etype], None, None, None, None, None, None,
                          e.timestamp, e.originator_version]
        if etype == "ride.requested":
            row[1], row[8] = e.rider_id, e.timestamp
        elif etype == "ride.accepted":
            row[3], row[4] = e.driver_id, e.eta_seconds
        elif etype == "ride.driver_arrived":
            row[4] = 0
        elif etype == "ride.trip_ended":
            row[5], row[6], row[7] = e.distance_m, e.fare, e.currency
        self.view.upsert(row, tracking)


_ES_TYPE = {cls: etype for etype, cls in ES_CLASSES.items()}
ES_PROJECTIONS: dict[str, tuple[type[ESProjection[Any]], type[ESView]]] = {
    "account_balances": (ESBalances, ESBalancesView),
    "ride_board": (ESRides, ESRidesView),
}


def es_env(fresh: Fresh) -> dict[str, str]:
    from _es_models import es_env as es_persistence

    return es_persistence("postgresql", dsn=fresh.dsn) | {"ORIGINATOR_ID_TYPE": "text"}


def es_load(fresh: Fresh, log: Sequence[tuple[int, str, int, str, str, datetime]]) -> dict[str, list[tuple[int, int]]]:
    """The same events into an eventsourcing application, in bulk (untimed). Returns, per
    projection, the (facta position, eventsourcing notification id) of each event it
    handles, in log order."""
    app = ESBenchApp(env=es_env(fresh))
    handles = {p.name: set(p.event_types()) for p in PROJECTIONS}
    cuts: dict[str, list[tuple[int, int]]] = {p.name: [] for p in PROJECTIONS}
    try:
        mapper = app.mapper
        for start in range(0, len(log), LOAD_CHUNK):
            chunk = log[start : start + LOAD_CHUNK]
            stored: list[StoredEvent] = []
            for _position, stream, version, etype, payload, occurred in chunk:
                event = ES_CLASSES[etype](originator_id=stream, originator_version=version, timestamp=occurred,
                                          **json.loads(payload))
                stored.append(mapper.to_stored_event(event))
            ids = app.recorder.insert_events(stored)
            assert ids is not None and len(ids) == len(stored)
            for nid, (position, _, _, etype, _, _) in zip(ids, chunk, strict=True):
                for name, types in handles.items():
                    if etype in types:
                        cuts[name].append((position, nid))
        return cuts
    finally:
        app.close()


def es_catch_up(fresh: Fresh, projection: type[Projection], last_id: int) -> float:
    """Seconds for eventsourcing's runner to build the view up to notification ``last_id``."""
    es_projection, view_class = ES_PROJECTIONS[projection.name]
    tracking_table = f"{es_projection.name}_tracking"  # what eventsourcing's factory names it
    es_projection.stop_after = last_id  # type: ignore[attr-defined]
    with psycopg.connect(fresh.dsn, autocommit=True) as conn:  # a fresh view each run
        conn.execute(f'DROP TABLE IF EXISTS "{live_table(projection)}", "{tracking_table}"')
    t0 = time.perf_counter()
    with ESProjectionRunner(application_class=ESBenchApp, projection_class=es_projection, view_class=view_class,
                            env=es_env(fresh)) as runner:
        runner.wait(last_id, timeout=3600)
        seconds = time.perf_counter() - t0
    with psycopg.connect(fresh.dsn) as conn:
        tracked = conn.execute(f'SELECT notification_id FROM "{tracking_table}" WHERE application_name = %s',
                               (ES_APP,)).fetchone()
    if tracked is None or tracked[0] != last_id:
        raise SystemExit(f"eventsourcing {projection.name}: tracked {tracked}, expected notification id {last_id}")
    return seconds


# -- set-up of the shared databases and topics ------------------------------------------------------


@dataclass
class Setup:
    facta: Fresh
    es: Fresh
    mix_events: int
    handled: dict[str, int]
    es_handled: dict[str, list[tuple[int, int]]]  # per projection: (position, notification id) handled
    kafka: KafkaSettings | None = None
    kafka_skip: str = ""
    load_seconds: dict[str, float] = field(default_factory=dict)


async def _load_facta(
    fresh: Fresh, mix: Sequence[Planned], analyze: bool = True
) -> list[tuple[int, str, int, str, str, datetime]]:
    store = await EventStore.open(fresh.url, migrate=True)
    conn = await asyncpg.connect(fresh.dsn)
    try:
        if not analyze:  # a store loaded in bulk and rebuilt at once: no statistics, not even autovacuum's
            await conn.execute("ALTER TABLE facta_events SET (autovacuum_enabled = off)")
        await load_store(store, mix)
        # The events as facta's reads give them, sealed fields opened: what eventsourcing
        # is loaded with (it has no sealed fields; see the module's docstring).
        rows: list[tuple[int, str, int, str, str, datetime]] = []
        after = 0
        while page := await store.read_log(after, LOAD_CHUNK):
            rows += [(r.position, r.stream_id, r.version, r.event_type, r.payload, r.occurred_at) for r in page]
            after = page[-1].position
        if analyze:
            await conn.execute("ANALYZE facta_events")
    finally:
        await conn.close()
        await store.close()
    return rows


async def _relay_all(fresh: Fresh, broker: Broker, prefix: str, expected: int) -> None:
    store = await EventStore.open(fresh.url)
    try:
        config = RelayConfig(bootstrap=broker.bootstrap, name="bench", topic_prefix=prefix, partitions=PARTITIONS,
                             idempotence=broker.supports_idempotence, batch_size=1000)
        published = await Relay(store, config).run(once=True)
    finally:
        await store.close()
    if published != expected:
        raise SystemExit(f"relay published {published} events, expected {expected}")


def kafka_unavailable() -> str:
    """Why the Kafka source cannot be measured, or "" if it can."""
    if importlib.util.find_spec("facta.projections.kafka_source") is None:
        return "facta.projections.kafka_source is not there yet (ProjectionRunner/replay with kafka= need it)"
    try:
        from facta.projections import kafka_source
    except Exception as exc:  # any import failure is a reason to skip
        return f"facta.projections.kafka_source does not import: {type(exc).__name__}: {exc}"
    missing = [n for n in ("run_kafka", "consume_range", "kafka_offsets") if not hasattr(kafka_source, n)]
    if missing:
        return f"facta.projections.kafka_source lacks {', '.join(missing)}"
    return ""


def prepare(events: int, broker: Broker | None, kafka_skip: str, *, analyze: bool = True) -> Setup:
    """The shared stores (and topics): facta's, ANALYZEd after loading unless ``analyze``
    is false (then autovacuum is off for its events table), and eventsourcing's."""
    mix = build_mix(events)
    facta = fresh_database("postgresql", "proj")
    es = fresh_database("postgresql", "proj_es")
    setup = Setup(facta, es, len(mix), {p.name: handled_count(mix, p) for p in PROJECTIONS}, {}, kafka_skip=kafka_skip)
    t0 = time.perf_counter()
    rows = asyncio.run(_load_facta(facta, mix, analyze))
    setup.load_seconds["facta store"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    setup.es_handled = es_load(es, rows)
    setup.load_seconds["eventsourcing store"] = time.perf_counter() - t0
    if broker is not None and not kafka_skip:
        prefix = f"bench.{RUN_ID}.proj"
        t0 = time.perf_counter()
        asyncio.run(_relay_all(facta, broker, prefix, len(mix)))
        setup.load_seconds["relay to Kafka"] = time.perf_counter() - t0
        setup.kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=prefix)
    return setup


# -- one timed run -------------------------------------------------------------------------------------


@dataclass
class Run:
    contender: str
    projection: str
    source: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def run_one(setup: Setup, contender: str, projection: type[Projection], source: str, batch: int,
            expected_digest: dict[str, tuple[int, str]], es_events: int) -> Run:
    expected = setup.handled[projection.name]
    check = projection.name
    gc.collect()  # every contender starts with the same clean heap,
    gc.freeze()  # and with start-up objects out of the collector's view, as `facta replay` does
    if contender == "facta":
        events, seconds = asyncio.run(facta_rebuild(setup.facta, projection, source, setup.kafka, batch))
        dsn, table = setup.facta.dsn, live_table(projection)
    elif contender == "raw":
        if source == "log":
            events, seconds = asyncio.run(raw_log(setup.facta, projection, batch))
        else:
            assert setup.kafka is not None
            events, seconds = asyncio.run(raw_kafka(setup.facta, projection, setup.kafka, batch))
        dsn, table = setup.facta.dsn, live_table(projection) + RAW_SUFFIX
    else:
        handled = setup.es_handled[projection.name]
        if len(handled) != expected:
            raise SystemExit(f"eventsourcing {projection.name}: {len(handled)} events loaded, expected {expected}")
        if 0 < es_events < expected:
            # The first ``es_events`` handled events only; checked against the raw loop
            # run over the same prefix of the log (once, untimed).
            expected = es_events
            position, _ = handled[es_events - 1]
            check = f"{projection.name} up to position {position}"
            if check not in expected_digest:
                asyncio.run(raw_log(setup.facta, projection, batch, until=position, suffix="__prefix"))
                expected_digest[check] = asyncio.run(
                    digest(setup.facta.dsn, projection, live_table(projection) + "__prefix"))
        seconds = es_catch_up(setup.es, projection, handled[expected - 1][1])
        events, dsn, table = expected, setup.es.dsn, live_table(projection)
    if events != expected:
        raise SystemExit(f"{contender} {projection.name} from {source}: handled {events} events, expected {expected}")
    found = asyncio.run(digest(dsn, projection, table))
    first = expected_digest.setdefault(check, found)
    if found != first:
        raise SystemExit(
            f"{contender} {projection.name} from {source}: read model differs from the other contenders'"
            f" ({found[0]} rows, md5 {found[1]} vs {first[0]} rows, md5 {first[1]})"
        )
    return Run(contender, projection.name, source, events, seconds)


# -- (2) latency ---------------------------------------------------------------------------------------


@dataclass
class Latency:
    source: str
    samples: list[float] = field(default_factory=list)
    skipped: str = ""


async def _wait_visible(conn: Any, account: str, version: int, task: asyncio.Task[Any], within: float) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            seen = await conn.fetchval("SELECT version FROM account_balances WHERE account_id = $1", account)
        except asyncpg.UndefinedTableError:
            seen = None
        if seen is not None and seen >= version:
            return time.perf_counter()
        if task.done():
            task.result()
            raise SystemExit("the projection runner stopped")
        if loop.time() > deadline:
            raise SystemExit(f"latency: {account} v{version} not visible after {within:g} s")
        await asyncio.sleep(POLL_S)


async def latency_run(fresh: Fresh, source: str, samples: int, broker: Broker | None) -> Latency:
    store = await EventStore.open(fresh.url, migrate=True)
    conn = await asyncpg.connect(fresh.dsn)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    kafka: KafkaSettings | None = None
    try:
        if source == "kafka":
            assert broker is not None
            prefix = f"bench.{RUN_ID}.lat"
            kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=prefix)
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(f"{prefix}.{t}", PARTITIONS, 1) for t in ("account", "ride")])
            finally:
                await admin.close()
            relay = Relay(store, RelayConfig(bootstrap=broker.bootstrap, name="lat", topic_prefix=prefix,
                                             partitions=PARTITIONS, idempotence=broker.supports_idempotence))
            tasks.append(asyncio.create_task(relay.run(stop=stop)))
        runner = ProjectionRunner(store, AccountBalances, kafka=kafka, config=RunnerConfig())
        task = asyncio.create_task(runner.run(stop=stop))
        tasks.append(task)
        accounts = [f"lat-{i}" for i in range(LATENCY_ACCOUNTS)]
        versions: dict[str, int] = {}
        for acct in accounts:  # warm-up, not counted: also waits out a consumer group's join
            result = await store.append(acct, "account", [AccountOpened(owner="lat", currency="EUR")], expected_version=0)
            versions[acct] = result.last_version
        for acct in accounts:
            await _wait_visible(conn, acct, versions[acct], task, 60.0)
        rng = random.Random(7)
        out = Latency(source)
        for i in range(samples):
            acct = accounts[i % len(accounts)]
            result = await store.append(acct, "account", [Deposited(amount=100 + i)], expected_version=versions[acct])
            t0 = time.perf_counter()
            versions[acct] = result.last_version
            seen = await _wait_visible(conn, acct, result.last_version, task, 30.0)
            out.samples.append(seen - t0)
            await asyncio.sleep(rng.random() * 0.1)
        return out
    finally:
        stop.set()
        for t in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 30)
        await conn.close()
        await store.close()


def run_latency(source: str, samples: int, broker: Broker | None) -> Latency:
    fresh = fresh_database("postgresql", f"lat_{source}")
    try:
        return asyncio.run(latency_run(fresh, source, samples, broker))
    finally:
        fresh.drop()


# -- report --------------------------------------------------------------------------------------------


LABELS = {
    ("facta", "log"): "facta replay(position 0)",
    ("facta", "kafka"): "facta replay(offset 0, kafka)",
    ("raw", "log"): "raw asyncpg read + unnest upsert",
    ("raw", "kafka"): "raw aiokafka getmany + unnest upsert",
    ("eventsourcing", "log"): "eventsourcing 9.5 ProjectionRunner",
    ("eventsourcing", "kafka"): "eventsourcing 9.5 (its store; no Kafka source)",
}
TITLES = {"log": "(1) rebuild from the store log", "kafka": "(1) rebuild from Kafka"}


def _verdict(value: float, aim: float) -> str:
    return "met" if value >= aim else "missed"


def render_throughput(runs: dict[tuple[str, str], dict[str, list[Run]]], skipped: dict[str, str]) -> str:
    head = ("measure", "projection", "contender", "events", "events/s", "min-max events/s", "facta/raw", "facta/es", "aims")
    lines: list[tuple[str, ...]] = []
    first_of: set[str] = set()
    for source in SOURCES:
        if source in skipped:
            lines.append((TITLES[source], "", f"skipped: {skipped[source]}", "", "", "", "", "", ""))
            lines.append(("",) * len(head))
            continue
        for projection in PROJECTIONS:
            by = runs.get((source, projection.name))
            if not by or not by["facta"]:
                continue
            es = by["eventsourcing"] or runs[("log", projection.name)]["eventsourcing"]
            vs_raw = median([f.rate / r.rate for f, r in zip(by["facta"], by["raw"], strict=True)])
            vs_es = median([f.rate / e.rate for f, e in zip(by["facta"], es, strict=False)])
            for i, contender in enumerate(CONTENDERS):
                rs = by[contender] if contender != "eventsourcing" else es
                rates = [r.rate for r in rs]
                row = [
                    TITLES[source] if source not in first_of else "",
                    projection.name if i == 0 else "",
                    LABELS[(contender, source)],
                    f"{rs[0].events:,}",
                    f"{median(rates):,.0f}",
                    f"{min(rates):,.0f}-{max(rates):,.0f}",
                    "", "", "",
                ]
                first_of.add(source)
                if contender == "facta":
                    row[6:] = [
                        f"{vs_raw:.2f}x", f"{vs_es:.1f}x",
                        f">= {AIM_RAW}x raw: {_verdict(vs_raw, AIM_RAW)}; >= {AIM_ES:g}x es: {_verdict(vs_es, AIM_ES)}",
                    ]
                lines.append(tuple(row))
            lines.append(("",) * len(head))
    return render_table(head, lines, {3, 4, 5, 6, 7})


def render_latency(results: list[Latency]) -> str:
    head = ("measure", "source", "samples", "p50 ms", "p99 ms", "max ms", "runner")
    lines: list[tuple[str, ...]] = []
    for n, r in enumerate(results):
        title = "(2) append -> read model, account_balances" if n == 0 else ""
        if r.skipped:
            lines.append((title, r.source, f"skipped: {r.skipped}", "", "", "", ""))
            continue
        ms = [s * 1000 for s in r.samples]
        runner = ("ProjectionRunner, log polled every 50 ms" if r.source == "log"
                  else "ProjectionRunner(kafka=...) + Relay (20 ms poll)")
        lines.append((title, r.source, f"{len(ms):,}", f"{percentile(ms, 50):.1f}", f"{percentile(ms, 99):.1f}",
                      f"{max(ms):.1f}", runner))
    return render_table(head, lines, {2, 3, 4, 5})


# -- profile -------------------------------------------------------------------------------------------


STAGES = (
    "replay, wall time",
    "CPU time of this process (one thread: the event loop)",
    "read the log (store.read_log_window; read ahead, overlaps what follows)",
    "decode payloads (registry.decode: pydantic validate_json)",
    "batch transactions (database.write(Applier._commit))",
    "  of which ReadModel.flush (the upsert statements)",
    "  of which tracking.move_checkpoints",
    "  of which the rest: handlers + ReadModel.upsert, checkout, BEGIN, COMMIT",
    "garbage collection (all generations, wherever it struck)",
)


async def _profile_replay(fresh: Fresh, projection: type[Projection], batch: int) -> tuple[dict[str, float], int, str]:
    """Wall time by stage of one log replay (timers wrapped around facta's functions in
    this process only), with the upsert statements it sent."""
    from sqlalchemy import event

    from facta.domain import default_registry
    from facta.projections import _tracking as tracking
    from facta.projections import writer

    totals: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    store = await EventStore.open(fresh.url)
    statements: dict[str, int] = {}
    assert store.database.engine is not None

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        kind = " ".join(statement.split()[:3])
        statements[kind] = statements.get(kind, 0) + 1

    event.listen(store.database.engine.sync_engine, "before_cursor_execute", count)

    def timed_async(fn: Callable[..., Awaitable[Any]], stage: str) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                totals[stage] += time.perf_counter() - t0
        return wrapper

    def timed_sync(fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[stage] += time.perf_counter() - t0
        return wrapper

    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            totals[STAGES[8]] += time.perf_counter() - gc_started[0]

    originals = (writer.ReadModel.flush, tracking.move_checkpoints)
    store.read_log_window = timed_async(store.read_log_window, STAGES[2])  # type: ignore[method-assign]
    store.database.write = timed_async(store.database.write, STAGES[4])  # type: ignore[method-assign]
    default_registry.decode = timed_sync(default_registry.decode, STAGES[3])  # type: ignore[method-assign]
    writer.ReadModel.flush = timed_sync(writer.ReadModel.flush, STAGES[5])  # type: ignore[method-assign]
    tracking.move_checkpoints = timed_sync(tracking.move_checkpoints, STAGES[6])
    gc.collect()
    gc.callbacks.append(on_gc)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        result = await replay(store, projection, ReplayFrom(position=0), batch_size=batch)
        totals[STAGES[0]], totals[STAGES[1]] = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.callbacks.remove(on_gc)
        del default_registry.decode
        writer.ReadModel.flush, tracking.move_checkpoints = originals
        await store.close()
    totals[STAGES[7]] = totals[STAGES[4]] - totals[STAGES[5]] - totals[STAGES[6]]
    batches = max(1, -(-result.events // batch))
    upserts = sum(n for kind, n in statements.items() if kind.startswith("INSERT INTO") or kind.startswith("MERGE"))
    return totals, result.events, f"{upserts / batches:.1f} upsert statements per batch of {batch:,}"


async def _profiled_replay(fresh: Fresh, projection: type[Projection], batch: int, profiler: cProfile.Profile) -> float:
    store = await EventStore.open(fresh.url)
    try:
        t0 = time.perf_counter()
        profiler.enable()
        await replay(store, projection, ReplayFrom(position=0), batch_size=batch)
        profiler.disable()
        return time.perf_counter() - t0
    finally:
        await store.close()


def profile(setup: Setup, batch: int) -> None:
    for projection in PROJECTIONS:
        gc.collect()
        raw_events, raw_seconds = asyncio.run(raw_log(setup.facta, projection, batch))
        totals, events, statements = asyncio.run(_profile_replay(setup.facta, projection, batch))
        seconds = totals[STAGES[0]]
        print(f"\n== facta replay of {projection.name} from the log: {events:,} events in {seconds:.2f} s"
              f" ({events / seconds:,.0f} events/s); raw alongside: {raw_events / raw_seconds:,.0f} events/s"
              f" ({raw_seconds / raw_events * 1e6:.1f} us/event); {statements} ==")
        for stage in STAGES:
            spent = totals[stage]
            print(f"  {stage:<76} {spent * 1000:9.1f} ms  {spent / events * 1e6:6.1f} us/event  {spent / seconds:4.0%}")
        profiler = cProfile.Profile()
        gc.collect()
        under = asyncio.run(_profiled_replay(setup.facta, projection, batch, profiler))
        print(f"\n== cProfile, the same replay: {under:.2f} s under the profiler (the event loop's thread only) ==")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)


# -- --telemetry: the cost of facta's traces and metrics (issue 15) -------------------------------------

TELEMETRY_REPLAY_SLICES = 3
TELEMETRY_FOLLOW_SLICES = 6
TELEMETRY_CHUNK = 5_000  # events appended (untimed) before each timed catch-up of the runner

_TEL: dict[str, Any] = {}  # the worker's open store, the mix and where its streams stand


async def tel_open(url: str, events: int, extra: int) -> None:
    """In a telemetry worker: open the store at ``url`` (a copy of the base store, loaded
    with the first ``events`` events of ``build_mix(events + extra)``); keep the rest of
    the mix for :func:`tel_follow`."""
    key = (events, extra)
    if _TEL.get("key") != key:
        _TEL.update(key=key, mix=build_mix(events + extra))
    mix = _TEL["mix"]
    versions: dict[str, int] = {}
    for p in mix[:events]:
        versions[p.stream_id] = versions.get(p.stream_id, 0) + 1
    _TEL.update(store=await EventStore.open(url), rest=mix[events:], versions=versions, at=0)
    gc.collect()
    gc.freeze()  # the mix (every planned event) out of the collector's view, as `facta replay` does at start


async def tel_replay() -> tuple[int, float, float]:
    """In a telemetry worker: one ``replay`` of account_balances from position 0. Returns
    (events, wall seconds, CPU seconds of this process)."""
    gc.collect()  # each unit pays for the garbage it makes, not for an earlier unit's
    t0, c0 = time.perf_counter(), time.process_time()
    result = await replay(_TEL["store"], AccountBalances, ReplayFrom(position=0), batch_size=1000)
    return result.events, time.perf_counter() - t0, time.process_time() - c0


async def tel_grow(chunk: int) -> None:
    """In a telemetry worker: append the next ``chunk`` events of the mix (untimed)."""
    at = _TEL["at"]
    await load_store(_TEL["store"], _TEL["rest"][at : at + chunk], _TEL["versions"])
    _TEL["at"] = at + chunk


async def tel_catch_up() -> tuple[int, float, float]:
    """In a telemetry worker: time a ``ProjectionRunner(store, AccountBalances).run(once=True)``
    catching up with the log. Returns (events, wall seconds, CPU seconds)."""
    runner = ProjectionRunner(_TEL["store"], AccountBalances, config=RunnerConfig(batch_size=1000))
    gc.collect()  # each unit pays for the garbage it makes, not for the appends' or an earlier unit's
    t0, c0 = time.perf_counter(), time.process_time()
    applied = await runner.run(once=True)
    return applied, time.perf_counter() - t0, time.process_time() - c0


async def tel_close() -> None:
    await _TEL.pop("store").close()


def run_telemetry(args: argparse.Namespace) -> None:
    """``--telemetry``: the cost of facta's traces and metrics on the store log (the
    module docstring; ``_telemetry`` for the contenders and rounds)."""
    import _telemetry
    from _common import copy_database

    replay_slices, follow_slices = (1, 2) if args.quick else (TELEMETRY_REPLAY_SLICES, TELEMETRY_FOLLOW_SLICES)
    chunk = 500 if args.quick else TELEMETRY_CHUNK
    extra = follow_slices * chunk
    started = time.perf_counter()
    base = fresh_database("postgresql", "tel_base")
    workers: dict[str, Any] = {}
    try:
        mix = build_mix(args.events + extra)
        asyncio.run(_load_facta(base, mix[: args.events]))
        print(f"  base store loaded with {args.events:,} events in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
        for line in machine_facts(["postgresql"]):
            print(line)
        print(f"telemetry: {_telemetry.what_is_measured()}")
        print(f"log: {args.events:,} events of the account/ride mix, account_balances handles"
              f" {handled_count(mix[: args.events], AccountBalances):,}; each contender on its own copy of it"
              f" (CREATE DATABASE ... TEMPLATE), a fresh copy every round")
        print(f"rounds: {args.rounds}; (a) {replay_slices} slices of one replay each, (b) {follow_slices} slices of"
              f" one catch-up each after {chunk:,} more events are appended (untimed); in each slice every contender"
              " (a process of its own) runs one unit, in each of the 6 orders in turn. events/s: median (min-max) over"
              " rounds; time / none and cpu / none: median (min-max) of the per-round ratios of the contender's wall"
              " time and its process's CPU time over none's;"
              " every contender's read model checked against the others' (rows and md5) after each round\n",
              flush=True)
        workers = _telemetry.start_workers(["projections", "_telemetry"])
        rebuild = _telemetry.Tally("(a) replay account_balances from position 0")
        follow = _telemetry.Tally(f"(b) ProjectionRunner catch-up, {chunk:,} events appended")
        for r in range(args.rounds):
            copies = {mode: copy_database(base, f"tel_{mode}") for mode in _telemetry.MODES}
            try:
                for mode, w in workers.items():
                    w.call("projections:tel_open", copies[mode].url, args.events, extra)
                    w.call("projections:tel_replay")  # untimed warm-up: caches, first-call costs
                rebuild.run_round(r, replay_slices, lambda mode: workers[mode].call("projections:tel_replay"))
                for w in workers.values():
                    w.call("projections:tel_catch_up")  # untimed: the runner takes over from the replay

                def grow() -> None:  # every contender's log grows before any is timed
                    for w in workers.values():
                        w.call("projections:tel_grow", chunk)

                follow.run_round(r, follow_slices, lambda mode: workers[mode].call("projections:tel_catch_up"), grow)
                for w in workers.values():
                    w.call("projections:tel_close")
                found = {mode: asyncio.run(digest(copies[mode].dsn, AccountBalances, live_table(AccountBalances)))
                         for mode in _telemetry.MODES}
                if len(set(found.values())) != 1 or not found["none"][0]:
                    raise SystemExit(f"telemetry round {r + 1}: the read models differ: {found}")
            finally:
                for f in copies.values():
                    f.drop()
            print(f"  round {r + 1}: replay " + ", ".join(f"{m} {rebuild.seconds[m][-1]:.2f} s" for m in _telemetry.MODES)
                  + "; catch-up " + ", ".join(f"{m} {follow.seconds[m][-1]:.2f} s" for m in _telemetry.MODES)
                  + f"; read models alike ({found['none'][0]:,} rows)", file=sys.stderr, flush=True)
        recorded = _telemetry.describe(workers)
    finally:
        for w in workers.values():
            w.close()
        base.drop()
    print(_telemetry.render([rebuild, follow]))
    print("what each contender's SDK received over the run:")
    print("\n".join(recorded))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


# -- main ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=120_000, help="events in the log (default 120000)")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per contender, order rotated (default 3; with --telemetry 5)")
    p.add_argument("--batch", type=int, default=1000, help="events per batch for facta and raw (default 1000)")
    p.add_argument(
        "--es-events", type=int, default=5_000,
        help="eventsourcing catches up over the first N events each projection handles, 0 for all (default"
        " 5000: it commits every event, 300 to 1,300 a second here, so all of 120,000 take minutes a round)",
    )
    p.add_argument("--samples", type=int, default=200, help="latency samples per source (default 200)")
    p.add_argument("--no-kafka", action="store_true", help="the store log only: no broker, no Kafka rows")
    p.add_argument("--quick", action="store_true", help="smoke run: 3,000 events, one round, 20 latency samples")
    p.add_argument("--profile", action="store_true", help="instead of the comparison, profile facta's log replay")
    p.add_argument("--telemetry", action="store_true",
                   help="instead of the comparison, the cost of facta's traces and metrics on the store log: facta"
                        " alone with telemetry none (instrument(False)), off (no SDK) and on (SDK, no-op export)")
    args = p.parse_args(argv)
    if args.profile and args.telemetry:
        p.error("--profile and --telemetry are separate runs: give one")
    if args.rounds is None:
        args.rounds = 5 if args.telemetry else 3
    if args.quick:
        args.events, args.rounds, args.samples = 3_000, 1, 20
    if args.events < 100 or args.rounds < 1 or args.batch < 1 or args.samples < 1:
        p.error("--events must be >= 100, --rounds, --batch and --samples >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.telemetry:
        run_telemetry(args)
        return
    started = time.perf_counter()
    skipped: dict[str, str] = {}
    if args.no_kafka or args.profile:
        skipped["kafka"] = "--no-kafka" if args.no_kafka else "--profile"
    elif reason := kafka_unavailable():
        skipped["kafka"] = reason
    broker = None
    if "kafka" not in skipped:
        try:
            broker = start_broker(default_kind())
        except BrokerError as exc:
            skipped["kafka"] = f"no broker: {exc}"
    if broker is not None:
        print(f"  {broker.description} broker up on {broker.bootstrap} in {time.perf_counter() - started:.2f} s", file=sys.stderr,
              flush=True)
    setup: Setup | None = None
    try:
        setup = prepare(args.events, broker, skipped.get("kafka", ""))
        loads = ", ".join(f"{what} {s:.1f} s" for what, s in setup.load_seconds.items())
        print(f"  loaded {setup.mix_events:,} events ({loads})", file=sys.stderr, flush=True)
        if args.profile:
            profile(setup, args.batch)
            return
        for line in machine_facts(["postgresql"]):
            print(line)
        handled = ", ".join(f"{name} handles {n:,}" for name, n in setup.handled.items())
        print(f"log: {setup.mix_events:,} events of an account/ride mix ({handled}); batches of {args.batch:,};"
              f" eventsourcing {metadata.version('eventsourcing')} commits each event")
        if broker is not None:
            print(f"broker: {broker.description} on {broker.bootstrap}, topics of {PARTITIONS} partitions, aiokafka"
                  f" {metadata.version('aiokafka')}")
        print(f"rounds: {args.rounds} per contender, order rotated each round; figures are medians, ratios are"
              f" medians of per-round ratios; every read model checked against the others (rows and md5)\n",
              flush=True)
        runs: dict[tuple[str, str], dict[str, list[Run]]] = {}
        digests: dict[str, tuple[int, str]] = {}
        for r in range(args.rounds):
            for projection in PROJECTIONS:
                for source in SOURCES:
                    if source in skipped:
                        continue
                    by = runs.setdefault((source, projection.name), {c: [] for c in CONTENDERS})
                    # eventsourcing has one source (its own store): it runs with the log rows.
                    contenders = [c for c in CONTENDERS if source == "log" or c != "eventsourcing"]
                    order = contenders[r % len(contenders):] + contenders[: r % len(contenders)]
                    for contender in order:
                        if source in skipped:
                            break
                        t_job = time.perf_counter()
                        try:
                            run = run_one(setup, contender, projection, source, args.batch, digests, args.es_events)
                        except Exception as exc:
                            if source != "kafka" or contender != "facta":
                                raise
                            # facta's Kafka source is young: report it, do not lose the rest.
                            skipped["kafka"] = f"facta's Kafka rebuild failed: {type(exc).__name__}: {exc}"
                            print(f"  {skipped['kafka']}", file=sys.stderr, flush=True)
                            break
                        by[contender].append(run)
                        print(f"  round {r + 1}  {projection.name:<16} {source:<5} {contender:<13} {run.events:>8,} events"
                              f"  {run.seconds:7.2f} s  {run.rate:>9,.0f} events/s"
                              f"  (with checks {time.perf_counter() - t_job:.1f} s)", file=sys.stderr, flush=True)
        latencies: list[Latency] = []
        for source in SOURCES:
            if source in skipped:
                latencies.append(Latency(source, skipped=skipped[source]))
                continue
            try:
                result = run_latency(source, args.samples, broker)
            except Exception as exc:
                if source != "kafka":
                    raise
                latencies.append(Latency(source, skipped=f"failed: {type(exc).__name__}: {exc}"))
                continue
            ms = [s * 1000 for s in result.samples]
            print(f"  latency {source:<5} {len(ms)} samples  p50 {percentile(ms, 50):.1f}  p99 {percentile(ms, 99):.1f} ms",
                  file=sys.stderr, flush=True)
            latencies.append(result)
    finally:
        if setup is not None:
            setup.facta.drop()
            setup.es.drop()
        if broker is not None:
            broker.close()
    print(render_throughput(runs, skipped))
    print()
    print(render_latency(latencies))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


if __name__ == "__main__":
    main()
