"""Read-your-writes: wait until a projection has applied a position, or an append's events.

A web handler that saved a command and then reads a read model sees its own change only
once the projection's runner has applied the event. These calls wait for exactly that::

    result = await repository.save(ride)
    await wait_for_append(store, "ride_board", result, timeout_s=2.0)
    row = ...  # read ride_board: the change is there

- **Store log** projections: reached once the projection's live checkpoint (the last
  position it looked at) is at or past the position. An event the projection does not
  handle, or skips, counts once the checkpoint passes it.
- **Kafka** projections (``kafka=`` settings needed): the event's record is looked up in
  the partition the relay sends its stream to (its topic ``<prefix>.<stream type>``, the
  partition aiokafka's default partitioner picks for the stream id, as the relay does),
  from the projection's checkpoint of that partition on; reached once that checkpoint
  (the next offset to read) is past the first record whose ``position`` header is at
  least the position. So the wait covers the relay's lag too. An event of a stream type
  the projection does not read (when its class is given) counts as reached at once.

Waiting polls the projection's checkpoint rows (one indexed read each time) with a short
backoff: 5 ms, doubling to 100 ms at most; on Kafka one consumer also reads the
partition from the checkpoint up to the event's record, once. No LISTEN/NOTIFY: a
notifying transaction takes a database-wide lock at commit (ARCHITECTURE.md).

Errors: :class:`~facta.errors.ProjectionWaitTimeout` (a :class:`~facta.errors.ProjectionError`
and a :class:`TimeoutError`) naming the projection, the position wanted, where it is and
the timeout; :class:`~facta.errors.ProjectionError` for a projection that never ran on this
store or one that reads Kafka waited for without ``kafka``; :class:`~facta.errors.InvalidValue`
for a bad argument, before any I/O.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, select

from facta.display import quoted
from facta.errors import InvalidValue, ProjectionError, ProjectionWaitTimeout
from facta.eventstore import AppendResult, EventStore
from facta.eventstore.blocking import BlockingEventStore
from facta.eventstore.schema import events, projections

from . import _tracking as tracking
from ._tracking import LIVE, LOG, Coord
from .api import Projection
from .subscriptions import KafkaSettings

__all__ = ["wait_for_append", "wait_for_append_blocking", "wait_for_position", "wait_for_position_blocking"]

FIRST_POLL_S = 0.005
MAX_POLL_S = 0.1
MAX_POSITION = 2**63 - 1


async def wait_for_position(store: EventStore, projection: str | type[Projection], position: int, *,
                            timeout_s: float, kafka: KafkaSettings | None = None) -> dict[Coord, int]:
    """Wait until ``projection`` (its name, or its class) has applied store ``position``
    (1 or more), at most ``timeout_s`` seconds (0: look once). Returns the projection's
    live checkpoints when it has: ``{("", -1): position}`` on the store log,
    ``{(topic, partition): next offset}`` on Kafka. ``kafka``: where to read a projection
    that consumes Kafka. Raises as the module says."""
    return await wait_for_positions(store, projection, [position], timeout_s=timeout_s, kafka=kafka)


async def wait_for_append(store: EventStore, projection: str | type[Projection],
                          results: AppendResult | Iterable[AppendResult], *, timeout_s: float,
                          kafka: KafkaSettings | None = None) -> dict[Coord, int]:
    """Wait until ``projection`` has applied every event of ``results`` (one
    :class:`~facta.eventstore.AppendResult`, such as a repository's save returns, or
    several), at most ``timeout_s`` seconds; as :func:`wait_for_position` otherwise."""
    given: list[object] = [results] if isinstance(results, AppendResult) or not _iterable(results) else list(results)
    positions: list[int] = []
    for result in given:
        if not isinstance(result, AppendResult):
            raise InvalidValue(f"results must be an AppendResult or a list of them, got {type(result).__name__}")
        positions += result.positions
    return await wait_for_positions(store, projection, positions, timeout_s=timeout_s, kafka=kafka)


def wait_for_position_blocking(store: BlockingEventStore, projection: str | type[Projection], position: int, *,
                               timeout_s: float, kafka: KafkaSettings | None = None) -> dict[Coord, int]:
    """:func:`wait_for_position` for a :class:`~facta.eventstore.blocking.BlockingEventStore`
    (a thread without an event loop): blocks the calling thread."""
    return store.call(lambda s: wait_for_position(s, projection, position, timeout_s=timeout_s, kafka=kafka))


def wait_for_append_blocking(store: BlockingEventStore, projection: str | type[Projection],
                             results: AppendResult | Iterable[AppendResult], *, timeout_s: float,
                             kafka: KafkaSettings | None = None) -> dict[Coord, int]:
    """:func:`wait_for_append` for a :class:`~facta.eventstore.blocking.BlockingEventStore`."""
    return store.call(lambda s: wait_for_append(s, projection, results, timeout_s=timeout_s, kafka=kafka))


def _iterable(value: object) -> bool:
    return hasattr(value, "__iter__") and not isinstance(value, (str, bytes))


def _check(projection: object, positions: list[Any], timeout_s: object, kafka: object) -> str:
    if isinstance(projection, type) and issubclass(projection, Projection):
        name = projection.name
    elif isinstance(projection, str) and projection:
        name = projection
    else:
        raise InvalidValue(f"projection must be a projection name or class, got {projection!r:.60}")
    if not positions:
        raise InvalidValue("nothing to wait for: no position given")
    for position in positions:
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= MAX_POSITION:
            raise InvalidValue(f"invalid position {position!r:.40}: expected an integer from 1 to {MAX_POSITION}")
    if (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not math.isfinite(timeout_s)
            or timeout_s < 0):
        raise InvalidValue(f"invalid timeout_s {timeout_s!r:.40}: expected a finite number of seconds >= 0")
    if kafka is not None and not isinstance(kafka, KafkaSettings):
        raise InvalidValue(f"kafka must be a KafkaSettings or None, got {type(kafka).__name__}")
    return name


async def wait_for_positions(store: EventStore, projection: str | type[Projection], positions: list[int], *,
                             timeout_s: float, kafka: KafkaSettings | None = None) -> dict[Coord, int]:
    """Wait until ``projection`` has applied every one of ``positions``: the work of
    :func:`wait_for_position` and :func:`wait_for_append`."""
    name = _check(projection, positions, timeout_s, kafka)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    source, checkpoints = await store.database.read(_projection_state, name)
    if source == "log":
        return await _wait_log(store, name, max(positions), checkpoints, deadline, timeout_s)
    if kafka is None:
        raise ProjectionError(f"projection {quoted(name)} reads Kafka: give kafka=KafkaSettings(...) (the CLI:"
                              " --kafka-bootstrap or FACTA_KAFKA_BOOTSTRAP) to wait for it")
    cls = projection if isinstance(projection, type) else None
    return await _wait_kafka(store, name, cls, sorted(set(positions)), kafka, deadline, timeout_s)


def _projection_state(conn: Connection, name: str) -> tuple[str, dict[Coord, int]]:
    source = conn.execute(select(projections.c.source).where(projections.c.name == name)).scalar()
    if source is None:
        ran = sorted(str(n) for n in conn.execute(select(projections.c.name)).scalars())
        raise ProjectionError(f"projection {quoted(name)} has never run on this store, so nothing to wait for"
                              f" (projections that have: {', '.join(quoted(n) for n in ran) or 'none'})")
    return str(source), tracking.load_checkpoints(conn, name, LIVE)


class _Poll:
    """The backoff between two reads of the checkpoints."""

    def __init__(self, deadline: float) -> None:
        self.deadline, self.pause = deadline, FIRST_POLL_S

    async def wait(self) -> bool:
        """Sleep for the next pause (never past the deadline); False once it has passed."""
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        await asyncio.sleep(min(self.pause, left))
        self.pause = min(self.pause * 2, MAX_POLL_S)
        return True


async def _wait_log(store: EventStore, name: str, position: int, checkpoints: dict[Coord, int], deadline: float,
                    timeout_s: float) -> dict[Coord, int]:
    poll = _Poll(deadline)
    while checkpoints.get(LOG, 0) < position:
        if not await poll.wait():
            raise ProjectionWaitTimeout(name, position, f"it is at position {checkpoints.get(LOG, 0)}", timeout_s)
        checkpoints = await store.database.read(tracking.load_checkpoints, name, LIVE)
    return checkpoints


def _events_at(conn: Connection, positions: list[int]) -> dict[int, tuple[str, str]]:
    c = events.c
    rows = conn.execute(select(c.position, c.stream_id, c.stream_type).where(c.position.in_(positions)))
    return {int(r.position): (str(r.stream_id), str(r.stream_type)) for r in rows}


async def _wait_kafka(store: EventStore, name: str, cls: type[Projection] | None, positions: list[int],
                      kafka: KafkaSettings, deadline: float, timeout_s: float) -> dict[Coord, int]:
    from .kafka_source import offset_reaching, partition_of  # lazy: aiokafka

    poll = _Poll(deadline)
    loop = asyncio.get_running_loop()
    read_topics = set(kafka.topics(cls)) if cls is not None else None
    # 1. Each position's partition: its event's stream type and id, from the store.
    found: dict[int, tuple[str, str]] = {}
    while len(found) < len(positions):
        found.update(await store.database.read(_events_at, [p for p in positions if p not in found]))
        if len(found) < len(positions) and not await poll.wait():
            missing = min(p for p in positions if p not in found)
            raise ProjectionWaitTimeout(name, missing, "no event is at that position in the store yet", timeout_s)
    wanted: dict[Coord, int] = {}  # per partition: the highest position wanted there
    for position in positions:
        stream_id, stream_type = found[position]
        topic = f"{kafka.topic_prefix}.{stream_type}"
        if read_topics is not None and topic not in read_topics:
            continue  # a stream type the projection does not read: nothing to apply
        coord = await partition_of(kafka, topic, stream_id)
        while coord is None:
            if not await poll.wait():
                raise ProjectionWaitTimeout(name, position, f"Kafka has no topic {topic} yet", timeout_s)
            coord = await partition_of(kafka, topic, stream_id)
        wanted[coord] = max(wanted.get(coord, 0), position)
    checkpoints = await store.database.read(tracking.load_checkpoints, name, LIVE)
    # 2. Per partition: the offset of the record carrying the position (or a later one).
    targets: dict[Coord, int] = {}
    for coord, position in wanted.items():
        at = checkpoints.get(coord)
        offset = await offset_reaching(kafka, coord, None if at is None else max(at - 1, 0), position, deadline)
        if offset is None:
            raise ProjectionWaitTimeout(name, position, f"{_where(coord, at)}, and the relay has not sent the"
                                        f" event to {coord[0]}[{coord[1]}] yet", timeout_s)
        targets[coord] = offset
    # 3. Until every such checkpoint is past its record.
    while not all(checkpoints.get(coord, -1) > offset for coord, offset in targets.items()):
        if loop.time() >= deadline or not await poll.wait():
            coord = next(c for c, o in targets.items() if checkpoints.get(c, -1) <= o)
            raise ProjectionWaitTimeout(name, wanted[coord], f"{_where(coord, checkpoints.get(coord))}, the event's"
                                        f" record is at offset {targets[coord]}", timeout_s)
        checkpoints = await store.database.read(tracking.load_checkpoints, name, LIVE)
    return checkpoints


def _where(coord: Coord, at: int | None) -> str:
    topic, partition = coord
    return (f"its checkpoint of {topic}[{partition}] is offset {at}" if at is not None
            else f"it has not read {topic}[{partition}] yet")

