"""Kafka retention never hides a gap.

Kafka deletes old records (retention by time or size, DeleteRecords): a partition's *log
start offset*, the earliest offset it retains, moves forward. facta's store keeps every
event. So where a Kafka-source projection meets a deleted range:

- **A runner** whose checkpoint on a partition lies before the earliest retained offset,
  or that has no checkpoint on a partition whose first records were deleted (a new
  projection), stops with one line naming the partition, the checkpoint and the earliest
  offset (:func:`check_retained`). It never jumps ahead as a consumer's offset reset
  would; the consumer is built with ``auto_offset_reset="none"``, so Kafka deleting what
  a running consumer was about to read surfaces too, and is checked the same way.
- **A replay from a store position or a time** reads the deleted range from the store,
  then goes on in Kafka from the earliest retained offset (:func:`plan_fill`,
  :func:`fill_from_store`). Its checkpoints stay Kafka offsets, so the live runner goes on
  from them.
- **A replay from an offset** that lies in a deleted range refuses, naming the store
  position to replay from instead (:func:`refuse_deleted_offsets`): an offset names a
  Kafka record, and which event a deleted offset held cannot be known.

Which store events a partition's deleted range held: the relay keys each record by its
stream id, puts it in the partition aiokafka's default partitioner picks (murmur2 of the
key over the topic's sorted partitions, as Java clients do: :func:`partition_of`), and
publishes every partition in log order. So the records deleted from partition p of topic
``<prefix>.<stream type>`` are the events of that stream type whose stream maps to p and
whose position is below the first retained record's (its ``position`` header); a copy the
relay republished after a crash repeats positions, never adds one below. A partition
Kafka emptied has no first record: there the range is every event that maps to it up to
the store's head, read after the offsets.

Each filled partition gets a *position floor*, the last position read from the store for
it: Kafka records at or below it are passed over (the relay may still publish events the
store gave already). The replay's floors become the live ones when its tables are
swapped in, so the live runner passes over them too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import Connection, func, select

from facta.errors import ProjectionError, RetentionGap
from facta.eventstore import EventStore
from facta.eventstore.schema import events

from . import _tracking as tracking
from ._applier import Applier, Delivery
from ._tracking import LOG, Coord
from .api import Projection
from .subscriptions import KafkaSettings

__all__ = [
    "FirstRecord", "FirstRecords", "RetentionGap", "StoreFill", "check_retained", "describe_fills", "fill_from_store", "overtaken", "partition_of",
    "plan_fill", "refuse_deleted_offsets",
]

log = logging.getLogger("facta.projections")

_partitioner = DefaultPartitioner()


def partition_of(stream_id: str, partitions: Sequence[int]) -> int:
    """The partition the relay publishes a stream's events to, among a topic's
    ``partitions``: aiokafka's default partitioner (murmur2 of the key, the stream id, over
    the sorted partitions), as ``Relay._send_page`` uses it."""
    ordered = sorted(partitions)
    return int(_partitioner(stream_id.encode(), ordered, ordered))


class _Router:
    """:func:`partition_of` for the partitions of some topics, remembered per stream."""

    def __init__(self, coords: Sequence[Coord]) -> None:
        self.partitions: dict[str, list[int]] = {}
        for topic, partition in coords:
            self.partitions.setdefault(topic, []).append(partition)
        for parts in self.partitions.values():
            parts.sort()
        self.known: dict[tuple[str, str], int] = {}

    def coord(self, topic: str, stream_id: str) -> Coord:
        partition = self.known.get((topic, stream_id))
        if partition is None:
            partition = self.known[(topic, stream_id)] = partition_of(stream_id, self.partitions[topic])
        return (topic, partition)


def _name(coord: Coord) -> str:
    return f"{coord[0]}[{coord[1]}]"


def _more(gaps: Sequence[Coord]) -> str:
    return f" (likewise in {', '.join(map(_name, gaps[1:]))})" if len(gaps) > 1 else ""


# -- the live runner --------------------------------------------------------------------------


def check_retained(name: str, checkpoints: Mapping[Coord, int], retained_from: Mapping[Coord, int]) -> None:
    """Raise :class:`RetentionGap` if a partition's earliest retained offset
    (``retained_from``) lies past its checkpoint, or past 0 where it has none: the
    records in between are gone, and starting after them would skip events."""
    gaps = sorted(coord for coord, begin in retained_from.items() if begin > checkpoints.get(coord, 0))
    if not gaps:
        return
    coord = gaps[0]
    if coord in checkpoints:
        where = f"projection {name!r} cannot go on from its checkpoint, offset {checkpoints[coord]} of {_name(coord)}"
        build = "rebuild"
    else:
        where, build = f"projection {name!r} has no checkpoint on {_name(coord)} yet", "build"
    raise RetentionGap(
        f"{where}: Kafka deleted the records before offset {retained_from[coord]}, the earliest it retains{_more(gaps)},"
        f" and starting there would skip events; {build} it with `facta replay {name} --from-position 0`,"
        " which reads the deleted events from the store"
    )


def overtaken(name: str, coord: Coord, at: int, retained_from: int) -> RetentionGap:
    """A replay whose next offset Kafka deleted while it ran."""
    return RetentionGap(
        f"replay of projection {name!r}: Kafka deleted the records of {_name(coord)} before offset {retained_from}"
        f" while the replay was at offset {at}, and going on would skip events; run the replay again"
    )


# -- what a deleted range held ---------------------------------------------------------------


@dataclass(frozen=True)
class FirstRecord:
    """A partition's first record at or after some offset: its offset, its ``position``
    header and its key (the stream id)."""

    offset: int
    position: int
    stream_id: str


#: Per partition, the first record at or after the given offset (which lies below the
#: partition's end offset); the Kafka subscription reads them
#: (:meth:`~facta.projections.kafka_source.KafkaSubscription.first_records`).
FirstRecords = Callable[[Mapping[Coord, int]], Awaitable[dict[Coord, FirstRecord]]]


def _routed(
    conn: Connection, stream_type: str, after: int, through: int, event_types: Sequence[str] | None,
    since: datetime | None,
) -> list[tuple[str, int, int]]:
    """Per stream of ``stream_type``: how many events lie in ``after < position <= through``
    (of ``event_types``, recorded at or after ``since``, where given), and the first one."""
    c = events.c
    query = select(c.stream_id, func.count(), func.min(c.position)).where(
        c.stream_type == stream_type, c.position > after, c.position <= through
    )
    if event_types is not None:
        query = query.where(c.event_type.in_(list(event_types)))
    if since is not None:
        query = query.where(c.recorded_at >= since)
    return [(str(r[0]), int(r[1]), int(r[2])) for r in conn.execute(query.group_by(c.stream_id))]


@dataclass(frozen=True)
class StoreFill:
    """The part of one partition's replay read from the store: the events of the
    projection's types whose stream maps to the partition, with ``after < position <=
    through``. Kafka deleted the partition's records before offset ``retained_from``."""

    after: int
    through: int
    events: int
    retained_from: int


class _DeletedRanges:
    """What the deleted ranges of some partitions held, in store terms."""

    def __init__(self, store: EventStore, projection: type[Projection], settings: KafkaSettings,
                 ends: Mapping[Coord, int]) -> None:
        self.store = store
        self.projection = projection
        self.router = _Router(sorted(ends))
        self.stream_type = dict(zip(settings.topics(projection), projection.stream_types(), strict=True))

    async def bounds(self, first_records: FirstRecords, deleted: Mapping[Coord, int],
                     ends: Mapping[Coord, int]) -> dict[Coord, int]:
        """Per partition whose records before ``deleted[coord]`` are gone: the last store
        position they can hold (just below the first retained record's, or the store's
        head where Kafka retains nothing). Read after the offsets, the head is past
        every record they held."""
        head = await self.store.head_position()
        firsts = await first_records({coord: begin for coord, begin in deleted.items() if begin < ends[coord]})
        out: dict[Coord, int] = {}
        for coord in sorted(deleted):
            first = firsts.get(coord)
            if first is None:
                out[coord] = head
                continue
            belongs = self.router.coord(coord[0], first.stream_id)
            if belongs != coord:
                raise ProjectionError(
                    f"the first record {_name(coord)} retains (offset {first.offset}, stream {first.stream_id}) maps"
                    f" to {_name(belongs)} by its key: the topic's partitions changed after it was published, so"
                    " the store cannot tell which events Kafka deleted from which partition"
                )
            out[coord] = first.position - 1
        return out

    async def streams(self, coord: Coord, after: int, through: int, *, handled: bool = False,
                      since: datetime | None = None) -> tuple[int, int | None]:
        """How many events of the partition's range ``after < position <= through`` there
        are (of the projection's types, with ``handled``; recorded at or after ``since``,
        where given), and the first one's position."""
        types = self.projection.event_types() if handled else None
        rows = await self.store.database.read(_routed, self.stream_type[coord[0]], after, through, types, since)
        mine = [(n, first) for stream_id, n, first in rows if self.router.coord(coord[0], stream_id) == coord]
        return sum(n for n, _ in mine), min((first for _, first in mine), default=None)


# -- replays ------------------------------------------------------------------------------------


async def plan_fill(
    store: EventStore, projection: type[Projection], settings: KafkaSettings, start: dict[Coord, int],
    begins: Mapping[Coord, int], ends: Mapping[Coord, int], *, first_records: FirstRecords, after: int | None = None,
    since: datetime | None = None,
) -> tuple[dict[Coord, int], dict[Coord, StoreFill], dict[Coord, int]]:
    """For a Kafka replay from store position ``after`` or from time ``since`` whose
    Kafka start offsets would be ``start``: the start offsets, what each partition reads
    from the store first, and the position floors.

    From a position, a partition's events after it are read; from a time, a partition's
    events from its first one recorded at or after the time, of which the replay applies
    only those recorded at or after it (recorded_at does not follow position order; the
    counts here are of those). Where Kafka deleted part of that, the deleted part is read
    from the store and Kafka is read from the earliest retained offset. ``first_records``
    reads the first retained record of a partition whose earliest records Kafka deleted."""
    start = dict(start)
    floors = dict.fromkeys(ends, after) if after else {}
    deleted = {coord: begin for coord, begin in begins.items() if begin > 0 and coord in ends}
    if not deleted:
        return start, {}, floors
    ranges = _DeletedRanges(store, projection, settings, ends)
    bounds = await ranges.bounds(first_records, deleted, ends)
    fills: dict[Coord, StoreFill] = {}
    # Every event recorded at or after the time lies after this position (exact, through
    # the log blocks): the deleted ranges are searched from there, not from the start.
    before = await store.first_position_at(since) if since is not None else 0
    for coord, through in bounds.items():
        floors[coord] = max(after or 0, through)
        if since is not None:
            _, first = await ranges.streams(coord, min(before, through), through, since=since)
            if first is None:
                continue  # Kafka's first record at or after the time is a retained one
            low = first - 1
        else:
            assert after is not None
            low = after
        if through > low:  # Kafka deleted part of the partition's slice: read from its earliest retained offset
            start[coord] = deleted[coord]
            count, _ = await ranges.streams(coord, low, through, handled=True, since=since)
            if count:
                fills[coord] = StoreFill(low, through, count, deleted[coord])
    return start, fills, {coord: floor for coord, floor in floors.items() if floor > 0}


async def refuse_deleted_offsets(
    store: EventStore, projection: type[Projection], settings: KafkaSettings, what: str, start: Mapping[Coord, int],
    begins: Mapping[Coord, int], ends: Mapping[Coord, int], *, first_records: FirstRecords,
) -> None:
    """For a replay from Kafka offsets ``start`` (``what``: "offset N" ...): raise
    :class:`RetentionGap` if one lies before its partition's earliest retained offset,
    naming the store position to replay from instead: the one before the first event the
    replay would read in any partition, taking the first event Kafka deleted where the
    start is gone. ``first_records`` reads a partition's first record at an offset."""
    gone = sorted(coord for coord, offset in start.items() if offset < begins[coord])
    if not gone:
        return
    ranges = _DeletedRanges(store, projection, settings, ends)
    bounds = await ranges.bounds(first_records, {coord: begins[coord] for coord in gone}, ends)
    kept = {coord: offset for coord, offset in start.items() if coord not in bounds and offset < ends[coord]}
    firsts = [record.position for record in (await first_records(kept)).values()]
    first_deleted: int | None = None
    for coord, through in bounds.items():
        _, first = await ranges.streams(coord, 0, through)
        if first is not None:
            firsts.append(first)
            if coord == gone[0]:
                first_deleted = first
    instead = max(min(firsts, default=1) - 1, 0)
    coord = gone[0]
    deleted = "" if first_deleted is None else f"; the first event deleted there is at position {first_deleted}"
    raise RetentionGap(
        f"offset {start[coord]} of {_name(coord)} is gone: Kafka deleted the records before offset {begins[coord]},"
        f" the earliest it retains{_more(gone)}, so a replay from {what} would skip events; replay from store position"
        f" {instead} instead (--from-position {instead}), which reads the deleted events from the store{deleted}"
    )


async def fill_from_store(
    store: EventStore, applier: Applier, settings: KafkaSettings, fills: Mapping[Coord, StoreFill],
    ends: Mapping[Coord, int], *, batch_size: int, stop: asyncio.Event, on_batch: Callable[[int], None],
) -> None:
    """Apply the events of ``fills`` from the store, in position order (so each stream's
    in version order, all before any Kafka record of its partition). Progress is kept in
    the rebuild slot's store-log checkpoint, dropped at the end: the replay's checkpoints
    are Kafka offsets."""
    if not fills:
        return
    projection = type(applier.projection)
    router = _Router(sorted(ends))
    topic_of = {stream_type: topic for topic, stream_type in
                zip(settings.topics(projection), projection.stream_types(), strict=True)}
    stream_types = sorted({stream_type for stream_type, topic in topic_of.items() if any(t == topic for t, _ in fills)})
    after, last = min(f.after for f in fills.values()), max(f.through for f in fills.values())
    while not stop.is_set():
        page = await store.read_log(after, batch_size, event_types=projection.event_types(), stream_types=stream_types)
        batch: list[Delivery] = []
        for record in page:
            if record.position > last:
                break
            fill = fills.get(router.coord(topic_of[record.stream_type], record.stream_id))
            if fill is not None and fill.after < record.position <= fill.through:
                batch.append(Delivery(record, LOG, record.position))
        done = len(page) < batch_size or page[-1].position >= last
        covered = last if done else page[-1].position
        await applier.apply(batch, {LOG: covered})
        on_batch(len(batch))
        if done:
            break
        after = covered
    await store.database.write(tracking.drop_checkpoint, applier.name, applier.slot, LOG)
    await applier.open()


def describe_fills(fills: Mapping[Coord, StoreFill]) -> dict[str, dict[str, Any]]:
    """``fills`` for ``--json``: by ``"topic[partition]"``."""
    return {
        _name(coord): {"after_position": f.after, "through_position": f.through, "events": f.events,
                       "deleted_before_offset": f.retained_from}
        for coord, f in sorted(fills.items())
    }
