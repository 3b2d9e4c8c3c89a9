"""Replay: rebuild a projection into fresh tables from a position, an offset or a time,
then swap them in.

The live tables keep serving while the fresh ones (``<table>__rebuild``) fill from the
chosen start. When the rebuild has caught up, one transaction drops the live tables,
renames the fresh ones into their place, moves the rebuild's checkpoints to the live slot
and bumps the projection's generation: readers see the old model until that commits and
the new one after, never a half-built one. A live runner still working on the old
generation has its next batch refused, reloads, and goes on from the new checkpoints.

Effects (``@effect``) never run in a replay. For a projection with effects, the rebuild
stops at the live checkpoint, so the live runner, not the replay, reaches every later
event and runs its effects.

Where a replay starts:
- ``position=P``: the store log after position P (0 = everything); on Kafka, each
  partition's events after P;
- ``offset=N`` (Kafka): every partition from offset N, or with ``partition=K`` partition
  K from N and the others from their beginning (offset 0);
- ``time=T``: the store log from the first event recorded at or after T, or on Kafka each
  partition from its first record with a timestamp at or after T.

Kafka retention (:mod:`facta.projections.retention`): where Kafka deleted part of what a
replay from a position or a time reads, that part is read from the store first; a replay
from an offset Kafka deleted refuses, naming the store position to replay from instead.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from facta.eventstore import EventStore
from facta.eventstore.audit import utc_text
from facta.eventstore.locks import active_lock
from facta.eventstore.schema import events, projections

from . import tracking
from .api import Projection
from .applier import Applier, Delivery
from .errors import ProjectionError
from .retention import StoreFill, describe_fills
from .runner import KafkaSettings, LogPages
from .tracking import LOG, REBUILD, Coord

__all__ = ["Progress", "ReplayFrom", "ReplayPlan", "ReplayResult", "plan_replay", "replay"]


@dataclass(frozen=True)
class ReplayFrom:
    """Where a replay starts: exactly one of ``position``, ``offset``, ``time``."""

    position: int | None = None
    offset: int | None = None
    partition: int | None = None
    time: datetime | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("position", "offset", "time") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ProjectionError("a replay starts from exactly one of a position, an offset or a time")
        if self.partition is not None and self.offset is None:
            raise ProjectionError("a partition is given only with an offset")
        for label, value in (("position", self.position), ("offset", self.offset), ("partition", self.partition)):
            if value is not None and value < 0:
                raise ProjectionError(f"{label} must be >= 0, got {value}")
        if self.time is not None and self.time.tzinfo is None:
            raise ProjectionError(f"time {self.time.isoformat()} has no time zone: give one, e.g. 2026-11-22T12:00Z")

    def describe(self) -> str:
        if self.position is not None:
            return f"position {self.position}"
        if self.offset is not None:
            return f"offset {self.offset}" + (f" of partition {self.partition}" if self.partition is not None else "")
        assert self.time is not None
        return f"time {utc_text(self.time)}"


@dataclass
class ReplayPlan:
    """What a replay will read: the start and end checkpoint of every coordinate, and how
    many events that is (for Kafka, records of the projection's topics)."""

    projection: str
    source: str
    start_from: str
    start: dict[Coord, int]
    end: dict[Coord, int]
    events: int
    first_position: int | None = None
    last_position: int | None = None
    estimated_seconds: float | None = None
    rate_basis: str = ""
    fill: dict[Coord, StoreFill] = field(default_factory=dict)
    """Kafka: per partition whose records Kafka deleted, the events read from the store
    before the partition's earliest retained offset (``start``)."""
    floors: dict[Coord, int] = field(default_factory=dict)
    """Kafka: per partition, the store position at or below which records are passed over
    (read from the store, or before the replayed slice)."""

    def as_dict(self) -> dict[str, Any]:
        def coords(values: dict[Coord, int]) -> Any:
            if set(values) == {LOG}:
                return values[LOG]
            return {f"{t}[{p}]": v for (t, p), v in sorted(values.items())}

        return {
            "projection": self.projection,
            "source": self.source,
            "from": self.start_from,
            "start": coords(self.start),
            "end": coords(self.end),
            "events": self.events,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "estimated_seconds": None if self.estimated_seconds is None else round(self.estimated_seconds, 1),
            "estimate_basis": self.rate_basis,
            "from_store": describe_fills(self.fill),
        }


@dataclass
class Progress:
    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


@dataclass
class ReplayResult:
    plan: ReplayPlan
    events: int
    seconds: float
    generation: int
    checkpoints: dict[Coord, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# Used for the estimate until a projection has a recorded rate of its own.
_DEFAULT_RATE = 5_000.0


async def plan_replay(
    store: EventStore, projection: type[Projection], start: ReplayFrom, *, kafka: KafkaSettings | None = None
) -> ReplayPlan:
    """Work out what :func:`replay` would read; changes nothing (``--dry-run``)."""
    info = await store.database.read(_projection_info, projection.name)
    if kafka is None:
        plan = await _plan_log(store, projection, start, info)
    else:
        plan = await _plan_kafka(store, projection, start, kafka, info)
    rate = info.get("events_per_second")
    if rate:
        plan.rate_basis = f"this projection's last measured rate, {rate:.0f} events/s"
    else:
        rate = _DEFAULT_RATE
        plan.rate_basis = f"no measured rate yet; assumed {rate:.0f} events/s"
    plan.estimated_seconds = plan.events / rate
    return plan


def _projection_info(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(select(projections).where(projections.c.name == name)).mappings().first()
    info: dict[str, Any] = dict(row) if row is not None else {}
    info["live"] = tracking.load_checkpoints(conn, name, tracking.LIVE)
    return info


async def _plan_log(
    store: EventStore, projection: type[Projection], start: ReplayFrom, info: dict[str, Any]
) -> ReplayPlan:
    if start.offset is not None:
        raise ProjectionError(
            f"--from-offset replays from Kafka, and projection {projection.name!r} is running without it:"
            " set FACTA_KAFKA_BOOTSTRAP (or --kafka-bootstrap), or replay from a position or a time"
        )
    head = await store.head_position()
    if start.time is not None:
        if start.time > datetime.now(UTC):
            raise ProjectionError(f"time {utc_text(start.time)} is in the future")
        after = await store.first_position_at(start.time)
    else:
        assert start.position is not None
        after = start.position
        if after > head:
            raise ProjectionError(f"position {after} is beyond the end of the log (the last position is {head})")
    end = head
    live = info.get("live", {})
    if projection.has_effects() and LOG in live and info.get("source") == "log":
        end = min(end, max(live[LOG], after))  # the live runner runs the effects after this
    count, first, last = await store.database.read(_count_log, projection.event_types(), after, end)
    return ReplayPlan(
        projection.name, "log", start.describe(), {LOG: after}, {LOG: end}, count, first, last,
    )


def _count_log(conn: Connection, types: list[str], after: int, end: int) -> tuple[int, int | None, int | None]:
    c = events.c
    row = conn.execute(
        select(func.count(), func.min(c.position), func.max(c.position)).where(
            c.position > after, c.position <= end, c.event_type.in_(types)
        )
    ).one()
    return int(row[0]), row[1], row[2]


async def _plan_kafka(
    store: EventStore, projection: type[Projection], start: ReplayFrom, kafka: KafkaSettings, info: dict[str, Any]
) -> ReplayPlan:
    from .kafka_source import kafka_offsets, kafka_offsets_for_time
    from .retention import plan_fill, refuse_deleted_offsets

    topics = kafka.topics(projection)
    beginning, end = await kafka_offsets(kafka, topics)
    fill: dict[Coord, StoreFill] = {}
    floors: dict[Coord, int] = {}
    if start.offset is not None:
        first = dict.fromkeys(end, 0)  # the other partitions from their beginning
        chosen = [tp for tp in end if start.partition is None or tp[1] == start.partition]
        if not chosen:
            known = sorted({p for _, p in end})
            raise ProjectionError(f"partition {start.partition} does not exist: {', '.join(topics)} have {known}")
        for tp in chosen:
            if start.offset > end[tp]:
                raise ProjectionError(
                    f"offset {start.offset} is beyond the end of {tp[0]}[{tp[1]}] (its end offset is {end[tp]})"
                )
            first[tp] = start.offset
        await refuse_deleted_offsets(store, projection, kafka, start.describe(), first, beginning, end)
    elif start.time is not None:
        if start.time > datetime.now(UTC):
            raise ProjectionError(f"time {utc_text(start.time)} is in the future")
        first = await kafka_offsets_for_time(kafka, topics, start.time)
        first, fill, floors = await plan_fill(store, projection, kafka, first, beginning, end, since=start.time)
    else:
        assert start.position is not None
        head = await store.head_position()
        if start.position > head:
            raise ProjectionError(f"position {start.position} is beyond the end of the log (the last position is {head})")
        first, fill, floors = await plan_fill(store, projection, kafka, dict(beginning), beginning, end,
                                              after=start.position)
    last = dict(end)
    live = info.get("live", {})
    if projection.has_effects() and info.get("source") == "kafka":
        _refuse_unrun_effects(projection, live, fill)
        for tp in last:
            if tp in live:
                last[tp] = min(last[tp], max(live[tp], first[tp]))
    count = sum(max(last[tp] - first[tp], 0) for tp in last) + sum(f.events for f in fill.values())
    return ReplayPlan(projection.name, "kafka", start.describe(), first, last, count, fill=fill, floors=floors)


def _refuse_unrun_effects(projection: type[Projection], live: dict[Coord, int], fill: dict[Coord, StoreFill]) -> None:
    """A replay runs no effects: for a projection with effects, the live runner must have
    passed every event the replay reads from the store (it did, where its checkpoint is
    at or past the earliest retained offset)."""
    if not live:
        return  # never run live: a replay builds it without effects, as from the store log
    for (topic, partition), f in sorted(fill.items()):
        checkpoint = live.get((topic, partition))
        if checkpoint is None or checkpoint < f.retained_from:
            at = "has no live checkpoint" if checkpoint is None else f"has its live checkpoint at offset {checkpoint}"
            raise ProjectionError(
                f"projection {projection.name!r} runs effects and {at} on {topic}[{partition}], before the earliest"
                f" retained offset {f.retained_from}: the effects of the events Kafka deleted there never ran, and a"
                " replay runs no effects, so it would pass over them; run them first (they are among the partition's"
                f" events in the store after position {f.after} through {f.through})"
            )


async def replay(
    store: EventStore,
    projection: type[Projection],
    start: ReplayFrom,
    *,
    kafka: KafkaSettings | None = None,
    batch_size: int = 1000,
    progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
) -> ReplayResult:
    """Rebuild ``projection`` from ``start`` into fresh tables and swap them in."""
    stop = stop or asyncio.Event()
    lock = active_lock(store, "projection-rebuild", projection.name, ProjectionError)
    if not await lock.acquire(stop, 0, wait=False):
        raise ProjectionError(f"a replay of projection {projection.name!r} is already running")
    try:
        plan = await plan_replay(store, projection, start, kafka=kafka)
        applier = Applier(store, projection, source=plan.source, slot=REBUILD, replay=True)
        await store.database.write(tracking.start_rebuild, applier.projection, plan.start, plan.floors)
        await applier.open()
        started = _time.perf_counter()
        done = 0

        def batch_done(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(Progress(done, plan.events, _time.perf_counter() - started))

        try:
            if plan.source == "log":
                await _replay_log(store, projection, applier, plan, batch_size, stop, batch_done)
            else:
                assert kafka is not None
                await _replay_kafka(store, projection, applier, plan, kafka, batch_size, stop, batch_done)
            if stop.is_set():
                raise ProjectionError(f"replay of projection {projection.name!r} stopped before it finished")
            generation = await store.database.write(tracking.swap, applier.projection, plan.source)
        except BaseException:
            await store.database.write(tracking.drop_rebuild, applier.projection)
            raise
        seconds = _time.perf_counter() - started
        if applier.applied >= 1000 and seconds > 0:
            await store.database.write(tracking.record_rate, projection.name, applier.applied / seconds)
        return ReplayResult(plan, applier.applied, seconds, generation, dict(applier.checkpoints))
    finally:
        await lock.release()


async def _replay_log(
    store: EventStore,
    projection: type[Projection],
    applier: Applier,
    plan: ReplayPlan,
    batch_size: int,
    stop: asyncio.Event,
    batch_done: Callable[[int], None],
) -> None:
    after = plan.start[LOG]
    fixed_end = projection.has_effects()
    end = plan.end[LOG]
    pages = LogPages(store, projection.event_types(), batch_size)
    try:
        while not stop.is_set():
            records, covered = await pages.next(after)
            if fixed_end:
                records = [r for r in records if r.position <= end]
                covered = min(covered, end)
            if covered <= after:
                return  # caught up
            await applier.apply([Delivery(r, LOG, r.position) for r in records], {LOG: covered})
            after = covered
            batch_done(len(records))
            if fixed_end and after >= end:
                return
    finally:
        await pages.close()


async def _replay_kafka(
    store: EventStore,
    projection: type[Projection],
    applier: Applier,
    plan: ReplayPlan,
    kafka: KafkaSettings,
    batch_size: int,
    stop: asyncio.Event,
    batch_done: Callable[[int], None],
) -> None:
    from .kafka_source import consume_range, kafka_offsets
    from .retention import fill_from_store

    topics = kafka.topics(projection)
    # What Kafka deleted first, from the store: every stream's earlier events come before
    # the first of its partition's records read below.
    await fill_from_store(store, applier, kafka, plan.fill, plan.end, batch_size=batch_size, stop=stop,
                          on_batch=batch_done)
    start, end = dict(plan.start), dict(plan.end)
    while not stop.is_set():
        if any(end[tp] > start.get(tp, 0) for tp in end):
            await consume_range(applier, kafka, topics, start, end, batch_size=batch_size, stop=stop,
                                on_batch=batch_done)
        if projection.has_effects():
            return
        start = dict(end)
        _, newer = await kafka_offsets(kafka, topics)
        if all(newer[tp] <= end.get(tp, 0) for tp in newer):
            return  # caught up
        end = newer
