"""Replay: rebuild a projection into fresh tables from a position, an offset or a time,
then swap them in.

The live tables keep serving while the fresh ones (``<table>__rebuild``) fill from the
chosen start. When the rebuild has caught up, one transaction drops the live tables,
renames the fresh ones into their place, moves the rebuild's checkpoints to the live slot
and bumps the projection's generation: readers see the old model until that commits and
the new one after, never a half-built one. A live runner still working on the old
generation has its next batch refused, reloads, and goes on from the new checkpoints.

A process manager (:class:`~facta.projections.process.ProcessManager`) is refused before
any I/O: it has no read model to rebuild, and its commands must never be issued again.

Where a replay starts:
- ``position=P``: the store log after position P (0 = everything); on Kafka, each
  partition's events after P;
- ``offset=N`` (Kafka): every partition from offset N, or with ``partition=K`` partition
  K from N and the others from their beginning (offset 0);
- ``time=T``: exactly the events recorded at or after T (``recorded_at >= T``), in
  position order: on the store log, those after the position before the first such
  event; on Kafka, those of each partition from its first record with a timestamp at or
  after T (Kafka's ``offsets_for_times``, at its millisecond precision). recorded_at does
  not follow position order (concurrent appends interleave, and a writer whose clock
  stepped back records an earlier time at a later position, by any amount), so a later
  position, or a later offset, can hold an event recorded before T: the replay passes
  over it (its checkpoint moves past it, it is never applied), comparing each event's
  own recorded_at, at full precision. Such an event is outside the slice although it was
  appended after events inside it, so the rebuilt model holds a set of events that was
  never the log's state at any moment. After the swap the live runner applies every new
  event, whatever its recorded time.

A start that leaves out events the projection handles (a later position or time, an
offset past 0) builds a *slice*: a read model of the events from the start only, which
replaces the live one. That is refused unless asked for with ``slice=True`` (``--slice``);
:attr:`ReplayPlan.left_out` says how much a plan leaves out.

Kafka retention (:mod:`facta.projections.retention`): where Kafka deleted part of what a
replay from a position or a time reads, that part is read from the store first; a replay
from an offset Kafka deleted refuses, naming the store position to replay from instead.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from facta.errors import InvalidValue, ProjectionError
from facta.eventstore import EventStore
from facta.eventstore.audit import utc_text
from facta.eventstore.locks import active_lock
from facta.eventstore.schema import events, projections
from facta.eventstore.validation import check_int_arg, check_replay_from, got
from facta.settings import settings

from . import _tracking as tracking
from ._applier import Applier, Delivery, advance_over
from ._tracking import LOG, REBUILD, Coord
from .api import Projection, check_projection_class
from .process import ProcessManager
from .retention import StoreFill, describe_fills
from .runner import subscription_for
from .subscriptions import KafkaSettings, Range, count_log

__all__ = ["Progress", "ReplayFrom", "ReplayPlan", "ReplayResult", "plan_replay", "replay"]


@dataclass(frozen=True)
class ReplayFrom:
    """Where a replay starts: exactly one of ``position``, ``offset``, ``time``."""

    position: int | None = None
    offset: int | None = None
    partition: int | None = None
    time: datetime | None = None

    def __post_init__(self) -> None:
        check_replay_from(self.position, self.offset, self.partition, self.time)
        given = [n for n in ("position", "offset", "time") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ProjectionError("a replay starts from exactly one of a position, an offset or a time")
        if self.partition is not None and self.offset is None:
            raise ProjectionError("a partition is given only with an offset")
        for label, value in (("position", self.position), ("offset", self.offset), ("partition", self.partition)):
            if value is not None and value < 0:
                raise ProjectionError(f"{label} must be >= 0, got {value}")
        if self.time is not None and (self.time.tzinfo is None or self.time.utcoffset() is None):
            raise ProjectionError(f"time {self.time.isoformat()} has no time zone: give one, e.g. 2026-11-22T12:00Z")
        if self.time is not None:
            try:
                self.time.astimezone(UTC)
            except OverflowError:
                raise ProjectionError(
                    f"time {self.time.isoformat()} is outside the years 0001 to 9999 once converted to UTC"
                ) from None

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
    left_out: int = 0
    """How many of the projection's events (``left_out_unit``: ``events`` in the store, or
    Kafka ``records`` before a start offset) lie before the start: the rebuilt model will
    not hold them. 0: the replay rebuilds the whole history."""
    left_out_unit: str = "events"

    @property
    def is_slice(self) -> bool:
        """Whether the result is a slice (leaves out earlier events), not the whole history."""
        return self.left_out > 0

    def describe_result(self) -> str:
        """One line: what the read model will hold after this replay."""
        if not self.is_slice:
            return "every event from the beginning (nothing lies before the start)"
        unit = self.left_out_unit if self.left_out != 1 else self.left_out_unit[:-1]
        return (f"a slice: only the events from {self.start_from} on; it leaves out the {self.left_out:,}"
                f" earlier {unit} " + ("of the projection's topics" if self.left_out_unit == "records"
                                       else "of the types it handles"))

    def as_range(self) -> Range:
        """What the subscription reads: start, end, fill and floors."""
        return Range(self.start, self.end, self.events, self.first_position, self.last_position, fill=self.fill,
                     floors=self.floors)

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
            "slice": self.is_slice,
            "left_out": self.left_out,
            "left_out_unit": self.left_out_unit,
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
    """Work out what :func:`replay` would read; changes nothing (``--dry-run``).
    Raises :class:`~facta.eventstore.InvalidValue` before any I/O for a ``projection``
    that is not a declared Projection class or a ``start`` that is not a ReplayFrom."""
    check_replay_args(projection, start)
    info = await store.database.read(_projection_info, projection.name)
    subscription = subscription_for(store, projection, kafka)
    planned = await subscription.plan_range(start)
    plan = ReplayPlan(projection.name, subscription.source, start.describe(), planned.start, planned.end,
                      planned.events, planned.first_position, planned.last_position, fill=planned.fill,
                      floors=planned.floors)
    rate = info.get("events_per_second")
    if rate:
        plan.rate_basis = f"this projection's last measured rate, {rate:.0f} events/s"
    else:
        rate = _DEFAULT_RATE
        plan.rate_basis = f"no measured rate yet; assumed {rate:.0f} events/s"
    plan.estimated_seconds = plan.events / rate
    plan.left_out, plan.left_out_unit = await _left_out(store, projection, start, plan)
    return plan


async def _left_out(store: EventStore, projection: type[Projection], start: ReplayFrom,
                    plan: ReplayPlan) -> tuple[int, str]:
    """How much of the projection's history lies before ``start``: (count, unit)."""
    if start.offset is not None:
        # Kafka offsets count a partition's records from 0: the ones before the start.
        return sum(first for first in plan.start.values() if first > 0), "records"
    if start.time is not None:
        # Exactly the events recorded before the time are left out, wherever they lie in
        # the log (recorded_at does not follow position order).
        when = start.time
        count = await store.database.read(lambda conn: _count_recorded_before(conn, projection.event_types(), when))
        return count, "events"
    assert start.position is not None
    after = start.position
    if after <= 0:
        return 0, "events"
    count, _, _ = await store.database.read(count_log, projection.event_types(), 0, after)
    return count, "events"


def refuse_unasked_slice(plan: ReplayPlan) -> None:
    """Raise :class:`ProjectionError` if ``plan`` builds a slice (see ``slice=``)."""
    if plan.is_slice:
        unit = plan.left_out_unit if plan.left_out != 1 else plan.left_out_unit[:-1]
        whose = "of its topics" if plan.left_out_unit == "records" else "it handles"
        raise ProjectionError(
            f"a replay of projection {plan.projection!r} from {plan.start_from} would replace its read model with one"
            f" built from that point on, leaving out the {plan.left_out:,} earlier {unit} {whose}: replay from"
            " the beginning (--from-position 0), or give --slice to build that slice on purpose"
        )


def _projection_info(conn: Connection, name: str) -> dict[str, Any]:
    row = conn.execute(select(projections).where(projections.c.name == name)).mappings().first()
    info: dict[str, Any] = dict(row) if row is not None else {}
    return info


def _count_recorded_before(conn: Connection, types: list[str], when: datetime) -> int:
    """How many events of ``types`` were recorded before ``when``."""
    c = events.c
    return int(conn.execute(select(func.count()).where(c.recorded_at < when, c.event_type.in_(types))).scalar_one())


async def replay(
    store: EventStore,
    projection: type[Projection],
    start: ReplayFrom,
    *,
    kafka: KafkaSettings | None = None,
    batch_size: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
    slice: bool = False,
) -> ReplayResult:
    """Rebuild ``projection`` from ``start`` into fresh tables and swap them in.

    A start that leaves out earlier events of the projection (see
    :attr:`ReplayPlan.left_out`) builds a slice and is refused with
    :class:`ProjectionError` unless ``slice=True``; nothing is changed then. Wrong
    argument types (``batch_size`` not an int >= 1, ``start`` not a ReplayFrom) raise
    :class:`~facta.eventstore.InvalidValue` before any I/O. ``batch_size`` None: the
    settings' (``FACTA_BATCH_SIZE``, 1000 by default)."""
    if batch_size is None:
        batch_size = settings().batch_size
    check_replay_args(projection, start, batch_size)
    stop = stop or asyncio.Event()
    lock = active_lock(store, "projection-rebuild", projection.name, ProjectionError)
    if not await lock.acquire(stop, 0, wait=False):
        raise ProjectionError(f"a replay of projection {projection.name!r} is already running")
    try:
        plan = await plan_replay(store, projection, start, kafka=kafka)
        if not slice:
            refuse_unasked_slice(plan)
        applier = (
            Applier(store, projection, source=plan.source, slot=REBUILD) if start.time is None
            else _RecordedSince(store, projection, source=plan.source, slot=REBUILD, since=start.time)
        )
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
            await subscription_for(store, projection, kafka).read_range(
                applier, plan.as_range(), batch_size=batch_size, stop=stop, on_batch=batch_done)
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


class _RecordedSince(Applier):
    """The applier of a replay from a time: every source (the store log, Kafka, a fill
    from the store) hands it what lies after its start, and it applies only the events
    recorded at or after ``since``. The others move the checkpoints like any event."""

    def __init__(self, *args: Any, since: datetime, **options: Any) -> None:
        super().__init__(*args, **options)
        self.since = since

    async def apply(self, batch: Sequence[Delivery], advance: Mapping[Coord, int] | None = None) -> None:
        if advance is None:
            advance = advance_over(batch)
        await super().apply([d for d in batch if d.record.recorded_at >= self.since], advance)


def check_replay_args(projection: object, start: object, batch_size: object = 1) -> None:
    """:func:`~facta.projections.replay.replay`'s and ``plan_replay``'s arguments."""
    check_projection_class("projection", projection)
    if isinstance(projection, type) and issubclass(projection, ProcessManager):
        raise ProjectionError(
            f"{projection.name!r} is a process manager, not a projection: it has no read model to rebuild, and a"
            " replay never issues its commands again (a read model of what it did is a projection: replay that)"
        )
    if not isinstance(start, ReplayFrom):
        raise InvalidValue(f"start must be a ReplayFrom, got {got(start)}")
    check_int_arg("batch_size", batch_size, low=1)
