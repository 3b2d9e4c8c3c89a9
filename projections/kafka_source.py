"""Kafka as a projection's subscription: the relay's topics, consumed into an :class:`Applier`.

:class:`KafkaSubscription` is the Kafka implementation of
:class:`~facta.projections.subscriptions.Subscription` (the store log's is
:class:`~facta.projections.subscriptions.StoreLogSubscription`): ``follow`` is
:func:`run_kafka`, ``read_range`` is :func:`consume_range` after what the store fills in.

The database is the only source of truth for where a projection stands. Each Kafka
partition ``(topic, partition)`` has a checkpoint row holding the *next* offset to read,
moved in the same transaction as the read-model rows. So:

- **Group consumption** (:func:`run_kafka`): a consumer group per projection, auto-commit
  off. On every assignment the runner reloads its checkpoints and seeks each assigned
  partition to its checkpoint (or to the beginning when it has none); it never resumes
  from the offsets committed to Kafka, which it writes only so that lag tools work. On
  revocation it waits until the batch in flight has committed. A batch that finds a
  checkpoint moved under it (:class:`Stale`: another member committed first, or the
  tables were swapped by a rebuild) commits nothing; the runner reloads and seeks again.
- **Ranges** (:func:`consume_range`), for replays and rebuilds: no group, partitions
  assigned by hand, from given start offsets to given end offsets.

Messages are filtered by their ``event-type`` header before anything is decoded: a type
the projection does not consume only moves the checkpoint. The others become
:class:`RecordedEvent` objects rebuilt from the headers the relay writes, their payload
the record's value (:mod:`facta.eventstore.kafka_codec` encodes and decodes both).

The relay delivers at least once: a copy it republished after a crash is recognised by
its ``position`` header, which is not above the positions before it in its partition,
and passed over (see :class:`_Seen`); so are records at or below a partition's position
floor (events a replay read from the store).

Kafka retention: the consumers never reset an offset by themselves
(``auto_offset_reset="none"``). A checkpoint before a partition's earliest retained
offset, found on an assignment or when Kafka deleted what a consumer was about to read,
stops the runner or the replay with one line (:mod:`facta.projections.retention`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    IllegalStateError,
    InvalidSessionTimeoutError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

from facta import metrics
from facta.domain import EventRegistry, default_registry
from facta.errors import KafkaRecordError, ProjectionError, RetentionGap
from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore._diagnostics import describe as _describe
from facta.eventstore.audit import utc_text
from facta.eventstore.kafka_codec import decode, encode_time, peek, utc
from facta.eventstore.kafka_support import is_transient, partition_for, pause
from facta.eventstore.kafka_support import stop_quietly as _stop_quietly
from facta.eventstore.schema import events

from . import _tracking as tracking
from ._applier import Applier, Delivery
from ._tracking import LIVE, Coord, Stale
from .api import Projection
from .retention import (
    FirstRecord,
    StoreFill,
    check_retained,
    fill_from_store,
    overtaken,
    plan_fill,
    refuse_deleted_offsets,
)
from .subscriptions import KafkaSettings, Range

if TYPE_CHECKING:
    from .replay import ReplayFrom

__all__ = [
    "KafkaSubscription", "check_routing", "consume_range", "first_records", "kafka_offsets", "kafka_offsets_for_time",
    "record_from_message", "run_kafka",
]

log = logging.getLogger("facta.projections")

_POLL_MS = 200
# While the group rebalances, aiokafka's getmany waits for the new assignment however long
# the join takes (for a member that died: until its session timeout). The consuming loop
# gives it this long, then looks at its stop event (and, with once, its patience) again.
_FETCH_WAIT = 0.5
_LEAVE_WITHIN = 3.0  # how long a stopping group member may take to leave (see _stop_quietly)
_METADATA_MAX_AGE_MS = 5_000  # how soon a topic created after the runner started is consumed
_KAFKA_COMMIT_TIMEOUT = 5.0
_FIRST_BACKOFF, _MAX_BACKOFF = 0.2, 5.0
# How far before a checkpoint a consumer looks for the positions a republished copy would
# repeat: the relay republishes at most the two pages it had in flight (RelayConfig's
# batch_size, 1000 by default, events each).
_DUPLICATE_WINDOW = 2_000


# -- records --------------------------------------------------------------------------------


def record_from_message(message: Any, registry: EventRegistry = default_registry) -> RecordedEvent:
    """The :class:`RecordedEvent` a relayed Kafka record carries: its metadata from the
    headers, its payload the record's value (:func:`facta.eventstore.kafka_codec.decode`).
    Headers other than the relay's are ignored; a missing or malformed one is a
    :class:`ProjectionError` naming the record."""
    try:
        return decode(message, registry)
    except KafkaRecordError as exc:
        raise ProjectionError(str(exc)) from None


def _coord(tp: Any) -> Coord:
    return (str(tp.topic), int(tp.partition))


class _Seen:
    """Per partition, the highest store position among the records before some offset.

    The relay delivers at least once: after a crash it republishes the pages it had in
    flight, so a partition can hold an event twice, the copy later. Positions only grow
    within a partition (the relay publishes in log order), so a record whose position is
    not above every position before it is such a copy, and is passed over. To know the
    positions before a checkpoint, a consumer that did not read up to it itself starts
    :data:`_DUPLICATE_WINDOW` records earlier and only looks at those.
    """

    def __init__(self) -> None:
        self.known: dict[Coord, tuple[int, int]] = {}  # coord -> (highest position, up to offset)

    def start(self, coord: Coord, checkpoint: int | None, begin: int) -> int:
        """Where to seek a partition whose checkpoint is ``checkpoint``."""
        known = self.known.get(coord)
        if checkpoint is None or checkpoint <= begin:
            self.known.pop(coord, None)
            return begin if checkpoint is None else checkpoint
        if known is not None and known[1] == checkpoint:
            return checkpoint
        self.known.pop(coord, None)
        return max(begin, checkpoint - _DUPLICATE_WINDOW)


@dataclass(slots=True)
class _Walk:
    """What one fetch gives the applier."""

    batch: list[Delivery]  # the messages of handled types, as deliveries
    advance: dict[Coord, int]  # the checkpoints past every message looked at
    messages: int  # how many messages that was (not counting those below the checkpoints)
    highest: dict[Coord, tuple[int, int]]  # what _Seen knows once this walk is committed
    duplicates: int
    failure: ProjectionError | None = None


def _walk(
    applier: Applier, fetched: Mapping[Any, Sequence[Any]], types: frozenset[str], floors: Mapping[Coord, int],
    seen: _Seen, limits: Mapping[Coord, int] | None = None,
) -> _Walk:
    """Walk the messages of ``fetched``: those below a partition's floor (its checkpoint)
    were applied already and only teach their positions; republished copies and
    unhandled types are passed over; the rest become deliveries, built from their
    headers. Messages at or past a partition's limit are left out. A message that is not
    a facta event stops the walk: what came before it is returned with the error."""
    registry = applier.store.registry
    walk = _Walk([], {}, 0, {}, 0)
    for tp, messages in fetched.items():
        if not messages:
            continue
        coord = _coord(tp)
        floor = floors.get(coord)
        limit = None if limits is None else limits.get(coord)
        known = seen.known.get(coord)
        if known is not None and known[1] > int(messages[0].offset):
            known = None  # not a continuation of what was seen: learn afresh
        highest = max(applier.position_floors.get(coord, -1), -1 if known is None else known[0])
        looked = None
        for message in messages:
            offset = int(message.offset)
            if limit is not None and offset >= limit:
                break
            event_type, position = peek(message)
            looked = offset + 1
            if floor is not None and offset < floor:
                if position is not None:
                    highest = max(highest, position)
                continue
            if position is not None and position <= highest:
                walk.duplicates += 1
            elif event_type is None or event_type in types:
                try:
                    record = record_from_message(message, registry)
                except ProjectionError as exc:
                    walk.failure = ProjectionError(
                        f"projection {applier.name!r} stopped: {exc}; its checkpoint stays before this record"
                    )
                    return walk
                walk.batch.append(Delivery(record, coord, offset + 1, offset))
            if position is not None:
                highest = max(highest, position)
            walk.advance[coord] = offset + 1
            walk.messages += 1
        if looked is not None and highest >= 0:
            walk.highest[coord] = (highest, looked)
    return walk


async def _reveal(applier: Applier, walk: _Walk) -> None:
    """Open the personal data of the batch's records (Kafka carries the stored ciphertext
    only; see :mod:`facta.eventstore.personal_data`): one key store call per batch, and
    a forgotten subject's fields read as "[erased]", as from the store."""
    if walk.batch:
        await applier.store.shredder.reveal([d.record for d in walk.batch])


def _learn(seen: _Seen, walk: _Walk) -> None:
    """Once ``walk`` is committed (or had nothing to commit): remember its positions."""
    seen.known.update(walk.highest)
    if walk.duplicates:
        log.info("passed over %d republished cop%s of events applied already", walk.duplicates,
                 "y" if walk.duplicates == 1 else "ies")


# -- Kafka errors -----------------------------------------------------------------------------


async def _start(consumer: Any) -> None:
    """Start ``consumer``; if that fails, close what it opened before raising."""
    try:
        await consumer.start()
    except BaseException:
        await _stop_quietly(consumer)
        raise


def _consumer(settings: KafkaSettings, **options: Any) -> Any:
    options.setdefault("request_timeout_ms", settings.request_timeout_ms)
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="none",  # never skip ahead past records Kafka deleted (retention)
        isolation_level="read_committed",
        **options,
    )


async def _retrying(
    what: str, stop: asyncio.Event, attempt: Callable[[], Any], give_up_after: float | None = None
) -> None:
    """Run ``attempt()`` until it returns without a transient Kafka error (or ``stop`` is
    set), backing off between tries; any other Kafka error is a :class:`ProjectionError`,
    and so is Kafka staying unreachable for ``give_up_after`` seconds, if given."""
    backoff = _FIRST_BACKOFF
    failing_since: float | None = None
    while not stop.is_set():
        try:
            await attempt()
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            if not is_transient(exc):
                raise ProjectionError(f"{what}: Kafka failed: {_describe(exc)}") from None
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if give_up_after is not None and now - failing_since >= give_up_after:
                raise ProjectionError(
                    f"{what}: Kafka unreachable for {give_up_after:g} s ({_describe(exc)})"
                ) from None
            log.warning("%s: Kafka unavailable (%s); retrying in %.1fs", what, _describe(exc), backoff)
        await pause(stop, backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF)


# -- group consumption --------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, session: _GroupSession) -> None:
        self.session = session

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Wait for the batch in flight: the partitions' next owner must find its commit.
        async with self.session.lock:
            self.session.ready = False
            self.session.assigned = set()
            self.session.may_commit = False

    async def on_partitions_assigned(self, assigned: Any) -> None:
        # aiokafka logs and drops what a listener raises: hand it to the consuming loop.
        try:
            async with self.session.lock:
                await self.session.assign(set(assigned))
        except Exception as exc:
            self.session.failure = exc


class _GroupSession:
    """One consumer's life in the projection's group: from start to stop or a Kafka error."""

    def __init__(self, applier: Applier, settings: KafkaSettings, *, batch_size: int, once: bool, stop: asyncio.Event) -> None:
        projection = type(applier.projection)
        self.applier = applier
        self.settings = settings
        self.topics = settings.topics(projection)
        self.group = settings.group(projection)
        applier.consumer_group = self.group  # its spans name the group
        self.types = frozenset(projection.event_types())
        self.batch_size = batch_size
        self.once = once
        self.stop = stop
        self.lock = asyncio.Lock()
        self.consumer: Any = None
        self.assigned: set[Any] = set()
        self.ready = False
        self.may_commit = False  # Kafka commits: only between an assignment and a failed commit
        self.assignments = 0
        self.begins: dict[Any, int] = {}
        self.ends: dict[Any, int] = {}
        self.failure: BaseException | None = None
        self.seen = _Seen()
        self.epoch = 0  # counts assignments: a fetch begun before the last one is stale
        self.targets: dict[Any, int] = {}  # where the last assignment sought each partition
        self.unassigned_since: float | None = None  # with once: since when it waits for partitions
        self.lag = applier.metrics.follow()

    async def run(self) -> None:
        settings = self.settings
        consumer = self.consumer = _consumer(
            settings,
            group_id=self.group,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            # A join waits up to the rebalance timeout (aiokafka's default: the session
            # timeout) for the other members; the request must outlast that wait.
            request_timeout_ms=max(settings.request_timeout_ms, settings.session_timeout_ms + 5_000),
            metadata_max_age_ms=_METADATA_MAX_AGE_MS,
        )
        await _start(consumer)
        try:
            if self.once:
                existing = await consumer.topics()
                if not any(topic in existing for topic in self.topics):
                    log.info("projection %r: no topic of %s exists yet; nothing to consume",
                             self.applier.name, ", ".join(self.topics))
                    return
            # By pattern: a subscription by name asks for the topics' metadata in a way that
            # makes a broker auto-create a missing one (with its default partition count,
            # before the relay creates it with the configured one). A pattern reads the
            # metadata of all topics, creates nothing, and picks up a topic the relay
            # creates later (within the metadata refresh interval).
            pattern = "^(" + "|".join(re.escape(topic) for topic in self.topics) + ")$"
            consumer.subscribe(pattern=pattern, listener=_Listener(self))
            log.info("projection %r joining consumer group %s", self.applier.name, self.group)
            await self._consume()
        except InvalidSessionTimeoutError:
            raise ProjectionError(
                f"Kafka at {settings.bootstrap} refused the session timeout of {settings.session_timeout_ms / 1000:g} s"
                f" for consumer group {self.group!r}: brokers accept group.min.session.timeout.ms to"
                " group.max.session.timeout.ms, 6 to 1800 s by default"
            ) from None
        finally:
            await _stop_quietly(consumer, _LEAVE_WITHIN)

    async def _consume(self) -> None:
        consumer = self.consumer
        while not self.stop.is_set():
            self._raise_failure()
            if self.once:
                if await self._caught_up():
                    return
                self._check_patience()
            epoch = self.epoch
            try:
                fetched = await self._fetch()
            except (OffsetOutOfRangeError, NoOffsetForPartitionError) as exc:
                async with self.lock:
                    await self._out_of_range(exc)
                continue
            if not fetched:
                self._lag({}, applied=True)
                continue
            async with self.lock:
                self._raise_failure()
                if epoch != self.epoch:
                    # Partitions were assigned while this fetch ran: it may have read from
                    # positions of before the assignment's seeks (such as the offsets
                    # committed to Kafka). Drop it and read again from the seeks.
                    for tp in consumer.assignment():
                        if tp in self.targets:
                            consumer.seek(tp, self.targets[tp])
                    continue
                self._lag(fetched, applied=False)
                try:
                    committed = await self._apply(fetched)
                except ProjectionError:
                    self._lag(fetched, applied=False)  # stopped: behind from its checkpoints
                    raise
                self._lag(fetched, applied=True)
            if committed and self.settings.commit_to_kafka:
                await self._commit_to_kafka(committed)

    def _lag(self, fetched: Mapping[Any, Sequence[Any]], *, applied: bool) -> None:
        """The lag gauges' figures, before and after a fetch is applied: per assigned
        partition, Kafka's high watermark (as of the last fetch) less the checkpoint. The
        oldest record not applied is the first one fetched (before), or taken as recorded
        no earlier than the last one fetched of a partition (after); a record's timestamp
        is its event's ``recorded_at``."""
        if not metrics.instrumented():
            return
        consumer, done = self.consumer, self.applier.checkpoints
        behind = 0
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is not None:
                behind += max(end - done.get(_coord(tp), self.begins.get(tp, 0)), 0)
        stamps = [messages[-1 if applied else 0].timestamp for messages in fetched.values() if messages]
        self.lag.set(behind, min(stamps) / 1000 if stamps else None)

    async def _fetch(self) -> Mapping[Any, Sequence[Any]]:
        """The next messages; none if there were none within :data:`_FETCH_WAIT` seconds
        (aiokafka's own timeout does not hold while the group rebalances)."""
        fetching = asyncio.ensure_future(self.consumer.getmany(timeout_ms=_POLL_MS, max_records=self.batch_size))
        try:
            done, _ = await asyncio.wait({fetching}, timeout=_FETCH_WAIT)
            if not done:
                fetching.cancel()
                await asyncio.wait({fetching})
                if fetching.cancelled():
                    return {}
        except BaseException:
            fetching.cancel()
            raise
        result: Mapping[Any, Sequence[Any]] = fetching.result()  # (done as it was cancelled: kept)
        return result

    def _check_patience(self) -> None:
        """With once: stop if the group has given this runner no partitions for longer than
        ``give_up_after`` plus the session timeout (a member that died holds its
        partitions until its session timeout; one that never comes means the group is stuck)."""
        if self.ready:
            self.unassigned_since = None
            return
        now = time.monotonic()
        if self.unassigned_since is None:
            self.unassigned_since = now
            return
        settings = self.settings
        limit = settings.give_up_after + settings.session_timeout_ms / 1000
        if now - self.unassigned_since > limit:
            raise ProjectionError(
                f"projection {self.applier.name!r}: consumer group {self.group!r} on Kafka at {settings.bootstrap}"
                f" gave it no partitions within {limit:g} s (the Kafka timeout {settings.give_up_after:g} s plus the"
                f" session timeout {settings.session_timeout_ms / 1000:g} s): does a member that died hold them"
                " with a longer session timeout?"
            )

    def _raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    async def assign(self, assigned: set[Any]) -> None:
        """Under the lock: reload the checkpoints and seek every assigned partition to its
        own (never to Kafka's committed offset), or to the beginning if it has none."""
        consumer, applier = self.consumer, self.applier
        checkpoints = await applier.open()
        partitions = sorted(assigned)
        if partitions:
            self.begins.update(await consumer.beginning_offsets(partitions))
            check_retained(applier.name, checkpoints, {_coord(tp): self.begins[tp] for tp in partitions})
            if self.once:
                new = [tp for tp in partitions if tp not in self.ends]
                if new:
                    self.ends.update(await consumer.end_offsets(new))
        self.targets = {
            tp: self.seen.start(_coord(tp), checkpoints.get(_coord(tp)), self.begins[tp]) for tp in partitions
        }
        for tp, offset in self.targets.items():
            consumer.seek(tp, offset)
        self.epoch += 1
        self.assigned = set(assigned)
        self.ready = True
        self.may_commit = True
        self.assignments += 1
        log.info("projection %r assigned %s", applier.name,
                 ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "no partitions")

    async def _reload(self) -> None:
        """Under the lock, after :class:`Stale`: the checkpoints again, and seek to them."""
        consumer = self.consumer
        checkpoints = await self.applier.open()
        partitions = sorted(consumer.assignment())
        if partitions:
            self.begins.update(await consumer.beginning_offsets(partitions))
            check_retained(self.applier.name, checkpoints, {_coord(tp): self.begins[tp] for tp in partitions})
        self.targets = {
            tp: self.seen.start(_coord(tp), checkpoints.get(_coord(tp)), self.begins[tp]) for tp in partitions
        }
        for tp, offset in self.targets.items():
            consumer.seek(tp, offset)

    async def _out_of_range(self, exc: OffsetOutOfRangeError | NoOffsetForPartitionError) -> None:
        """Under the lock: Kafka has no record at a partition's fetch position (it deleted
        the records there) or the partition had no position yet. Seek that partition to its
        checkpoint again, if Kafka still retains it; the others keep what they fetched."""
        consumer, applier = self.consumer, self.applier
        stray = exc.args[0] if isinstance(exc, OffsetOutOfRangeError) else {exc.args[0]: None}
        partitions = sorted(tp for tp in stray if tp in self.assigned and tp in consumer.assignment())
        if not partitions:
            return  # not (or no longer) this member's: the next assignment seeks it
        checkpoints = await applier.open()
        self.begins.update(await consumer.beginning_offsets(partitions))
        check_retained(applier.name, checkpoints, {_coord(tp): self.begins[tp] for tp in partitions})
        for tp in partitions:
            self.targets[tp] = self.seen.start(_coord(tp), checkpoints.get(_coord(tp)), self.begins[tp])
            consumer.seek(tp, self.targets[tp])

    async def _apply(self, fetched: Mapping[Any, Sequence[Any]]) -> dict[Any, int] | None:
        """Under the lock: apply what was fetched for partitions still assigned, past the
        checkpoints. Returns the offsets committed, by partition (None if nothing was)."""
        applier = self.applier
        assignment = self.consumer.assignment()
        fetched = {tp: messages for tp, messages in fetched.items() if tp in assignment and tp in self.assigned}
        if not fetched:
            return None
        walk = _walk(applier, fetched, self.types, applier.checkpoints, self.seen)
        try:
            if walk.advance:
                await _reveal(applier, walk)
                await applier.apply(walk.batch, walk.advance)
        except Stale:
            log.info("projection %r: a checkpoint moved or the tables were swapped; reloading (its batch of %d"
                     " records, %d of them events it handles, committed nothing)", applier.name, walk.messages,
                     len(walk.batch))
            await self._reload()
            return None
        if walk.failure is not None:
            applier.metrics.failed()
            if applier.slot == LIVE:
                with contextlib.suppress(SQLAlchemyError):
                    await applier.store.database.write(tracking.record_error, applier.name, str(walk.failure))
            raise walk.failure
        _learn(self.seen, walk)
        by_tp = {tp: walk.advance[_coord(tp)] for tp in fetched if _coord(tp) in walk.advance}
        return by_tp or None

    async def _commit_to_kafka(self, offsets: dict[Any, int]) -> None:
        """Best effort: so that lag tools see the group's progress. Never read back."""
        consumer = self.consumer
        owned = {tp: offset for tp, offset in offsets.items() if tp in consumer.assignment()}
        if not owned or not self.may_commit:
            return
        try:
            await asyncio.wait_for(consumer.commit(owned), _KAFKA_COMMIT_TIMEOUT)
        except (KafkaError, OSError, TimeoutError) as exc:
            # A failed commit makes aiokafka rejoin the group; another one before the
            # rejoin ends would send a second JoinGroup, which leaves a phantom member on
            # some brokers (noida-db) and the group stuck. The next assignment resumes.
            self.may_commit = False
            log.debug("projection %r: offsets not committed to Kafka (%s)", self.applier.name, _describe(exc))

    async def _caught_up(self) -> bool:
        """With ``once``: every assigned partition has reached the end offset it had when
        it was assigned (after at least one assignment)."""
        if not self.ready or self.assignments == 0:
            return False
        for tp in self.assigned:
            try:
                position = await self.consumer.position(tp)
            except IllegalStateError:
                return False
            done = max(self.applier.checkpoints.get(_coord(tp), self.begins.get(tp, 0)), position)
            if done < self.ends.get(tp, 0):
                return False
        return True


async def _first_open(applier: Applier) -> None:
    """``applier.open()``, which creates the projection's row and tables the first time.
    Several runners of one group may start together on a fresh database: the ones that
    lose the race to create them see an integrity error, and the next try finds them."""
    for attempt in range(5):
        try:
            await applier.open()
            return
        except (IntegrityError, ProgrammingError):  # the table or row made meanwhile
            if attempt == 4:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))


async def run_kafka(applier: Applier, settings: KafkaSettings, *, batch_size: int, once: bool, stop: asyncio.Event) -> None:
    """Keep ``applier``'s projection current from the relay's topics, as one member of
    its consumer group, until ``stop`` is set (or, with ``once``, until the partitions it
    was assigned are caught up with what they held when assigned)."""
    settings.topics(type(applier.projection))  # a topic name Kafka cannot have: refused before any I/O
    await _first_open(applier)  # a wrong source or table shape stops here, before joining
    await check_routing(applier.store, type(applier.projection), settings)
    what = f"projection {applier.name!r} on Kafka at {settings.bootstrap}"

    async def attempt() -> None:
        await _GroupSession(applier, settings, batch_size=batch_size, once=once, stop=stop).run()

    try:
        await _retrying(what, stop, attempt, settings.give_up_after if once else None)
    except RetentionGap as gap:  # kept for `facta projections list`, like a handler's failure
        applier.metrics.failed()
        with contextlib.suppress(SQLAlchemyError):
            await applier.store.database.write(tracking.record_error, applier.name, str(gap))
        raise


async def check_routing(store: Any, projection: type[Any], settings: KafkaSettings) -> None:
    """Refuse (:class:`ProjectionError`) a projection whose topics are a guess the store
    contradicts: the relay publishes each event to its stream type's topic, and an event
    type routed by its name's prefix (no ``streams``, no imported aggregate applies it) is
    refused once the store holds it in streams of another type. Reads the distinct stream
    types of those event types only (nothing when the code routes every type)."""
    guessed = projection.guessed_event_types()
    if not guessed:
        return
    c = events.c
    pairs = await store.database.read(lambda conn: conn.execute(
        select(c.event_type, c.stream_type).where(c.event_type.in_(guessed)).distinct()).all())
    missed = sorted((event_type, stream_type) for event_type, stream_type in pairs
                    if stream_type != event_type.split(".", 1)[0])
    if missed:
        event_type, stream_type = missed[0]
        more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        raise ProjectionError(
            f"projection {projection.name!r} handles {event_type}, which the store holds in streams of type"
            f" {stream_type!r} (topic {settings.topic_prefix}.{stream_type}){more}, but it reads"
            f" {', '.join(settings.topics(projection))}, guessed from the event name since no imported aggregate"
            f" applies {event_type}: import the module that declares that aggregate, or declare"
            f" streams = ({stream_type!r},) on the projection"
        )


# -- offsets and ranges ----------------------------------------------------------------------


async def _partitions(settings: KafkaSettings, topics: Sequence[str]) -> list[Any]:
    """Every partition of ``topics``; a missing topic is a :class:`ProjectionError`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, request_timeout_ms=settings.request_timeout_ms)
    try:
        await admin.start()
        # Every topic's metadata: asking for the named ones would create a missing one on
        # a broker that auto-creates topics.
        described = await admin.describe_topics(None)
    except (KafkaError, OSError) as exc:
        raise ProjectionError(f"cannot read the topics {', '.join(topics)} from Kafka at {settings.bootstrap}:"
                              f" {_describe(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    found: dict[str, list[int]] = {}
    for entry in described:
        if entry.get("error_code", 0) == 0:
            found[entry["topic"]] = sorted(int(p["partition"]) for p in entry.get("partitions", ()))
    missing = [topic for topic in topics if not found.get(topic)]
    if missing:
        raise ProjectionError(
            f"Kafka at {settings.bootstrap} has no topic {', '.join(missing)}: has the relay published"
            f" with topic prefix {settings.topic_prefix!r}?"
        )
    return [TopicPartition(topic, partition) for topic in topics for partition in found[topic]]


async def kafka_offsets(settings: KafkaSettings, topics: Sequence[str]) -> tuple[dict[Coord, int], dict[Coord, int]]:
    """The beginning and end offsets of every partition of ``topics``."""
    partitions = await _partitions(settings, topics)
    consumer = _consumer(settings, group_id=None)
    try:
        await consumer.start()
        begins = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
    except (KafkaError, OSError) as exc:
        raise ProjectionError(f"cannot read the offsets of {', '.join(topics)} from Kafka at {settings.bootstrap}:"
                              f" {_describe(exc)}") from None
    finally:
        await _stop_quietly(consumer)
    return ({_coord(tp): int(o) for tp, o in begins.items()}, {_coord(tp): int(o) for tp, o in ends.items()})


async def kafka_offsets_for_time(settings: KafkaSettings, topics: Sequence[str], when: datetime) -> dict[Coord, int]:
    """Per partition of ``topics``, the first offset whose record was recorded at or after
    ``when`` (the relay's record timestamp is the event's recorded-at); the end offset for
    a partition with no such record."""
    if when.tzinfo is None:
        when = utc(when)  # naive: UTC
    millis = max(0, encode_time(when)[1])
    partitions = await _partitions(settings, topics)
    consumer = _consumer(settings, group_id=None)
    try:
        await consumer.start()
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, millis))
        ends = await consumer.end_offsets(partitions)
    except (KafkaError, OSError) as exc:
        raise ProjectionError(f"cannot look up offsets at {when.isoformat()} in {', '.join(topics)} on Kafka at"
                              f" {settings.bootstrap}: {_describe(exc)}") from None
    finally:
        await _stop_quietly(consumer)
    out: dict[Coord, int] = {}
    for tp in partitions:
        hit = found.get(tp)
        out[_coord(tp)] = int(ends[tp]) if hit is None else int(hit.offset)
    return out


async def consume_range(
    applier: Applier,
    settings: KafkaSettings,
    topics: Sequence[str],
    start: dict[Coord, int],
    end: dict[Coord, int],
    *,
    batch_size: int,
    stop: asyncio.Event,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Apply every record from ``start`` (inclusive) to ``end`` (exclusive) of each
    partition of ``topics`` named in ``end``, without a consumer group (for replays and
    rebuilds). Calls ``on_batch(number of messages)`` after each batch committed. A
    retry after a Kafka outage resumes from the applier's checkpoints."""
    wanted = {coord for coord in end if coord[0] in set(topics)}
    what = f"replay of projection {applier.name!r} from Kafka at {settings.bootstrap}"
    types = frozenset(type(applier.projection).event_types())
    seen = _Seen()

    async def attempt() -> None:
        begin = {coord: max(start.get(coord, 0), applier.checkpoints.get(coord, 0)) for coord in wanted}
        todo = {TopicPartition(*coord) for coord in wanted if begin[coord] < end[coord]}
        if not todo:
            return
        consumer = _consumer(settings, group_id=None)
        await _start(consumer)

        async def seek(partitions: Sequence[Any]) -> None:
            """Seek to where the range goes on, unless Kafka deleted it meanwhile."""
            retained = await consumer.beginning_offsets(partitions)
            for tp in partitions:
                coord = _coord(tp)
                if begin[coord] < retained[tp]:
                    raise overtaken(applier.name, coord, begin[coord], int(retained[tp]))
                consumer.seek(tp, seen.start(coord, begin[coord], int(retained[tp])))

        try:
            consumer.assign(sorted(todo))
            await seek(sorted(todo))
            while todo and not stop.is_set():
                try:
                    fetched = await consumer.getmany(*sorted(todo), timeout_ms=_POLL_MS, max_records=batch_size)
                except OffsetOutOfRangeError as exc:
                    await seek(sorted(tp for tp in exc.args[0] if tp in todo))
                    continue
                walk = _walk(applier, fetched, types, begin, seen, end)
                done = []
                for tp in todo:
                    coord = _coord(tp)
                    position = int(await consumer.position(tp))
                    if position >= end[coord]:  # past the range (control records and gaps too)
                        if walk.failure is None:
                            walk.advance[coord] = end[coord]
                        done.append(tp)
                if walk.advance:
                    try:
                        await _reveal(applier, walk)
                        await applier.apply(walk.batch, walk.advance)
                    except Stale:
                        raise ProjectionError(
                            f"projection {applier.name!r}: its {applier.slot} checkpoints moved during this replay:"
                            " is another replay of it running?"
                        ) from None
                    begin.update(walk.advance)
                if walk.failure is not None:
                    raise walk.failure
                _learn(seen, walk)
                if walk.messages and on_batch is not None:
                    on_batch(walk.messages)
                for tp in done:
                    consumer.pause(tp)
                    todo.discard(tp)
        finally:
            await _stop_quietly(consumer)

    await _retrying(what, stop, attempt, settings.give_up_after)


async def first_records(settings: KafkaSettings, offsets: Mapping[Coord, int]) -> dict[Coord, FirstRecord]:
    """Per partition, the first record at or after the given offset (which must lie below
    its end offset): its offset, ``position`` header and key (the stream id). Raises
    :class:`ProjectionError` for a record that is not a facta event, and
    :class:`RetentionGap` if Kafka deleted an offset meanwhile."""
    if not offsets:
        return {}
    wanted = {TopicPartition(*coord): offset for coord, offset in offsets.items()}
    found: dict[Coord, FirstRecord] = {}
    consumer = _consumer(settings, group_id=None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.give_up_after
    try:
        await consumer.start()
        consumer.assign(sorted(wanted))
        for tp, offset in wanted.items():
            consumer.seek(tp, offset)
        while len(found) < len(wanted):
            pending = sorted(tp for tp in wanted if (tp.topic, tp.partition) not in found)
            if loop.time() > deadline:
                tp = pending[0]
                raise ProjectionError(
                    f"cannot read the record at offset {wanted[tp]} of {tp.topic}[{tp.partition}] from Kafka at"
                    f" {settings.bootstrap} within {settings.give_up_after:g} s"
                )
            fetched = await consumer.getmany(*pending, timeout_ms=200, max_records=len(pending))
            for tp, messages in fetched.items():
                coord = (tp.topic, tp.partition)
                if not messages or coord in found:
                    continue
                message = messages[0]
                _, position = peek(message)
                if position is None or message.key is None:
                    raise ProjectionError(
                        f"Kafka record {tp.topic}[{tp.partition}] offset {message.offset} is not a facta event:"
                        " it lacks a key or a 'position' header"
                    )
                found[coord] = FirstRecord(int(message.offset), position, bytes(message.key).decode())
                consumer.pause(tp)
    except OffsetOutOfRangeError as exc:
        tp, offset = next(iter(exc.args[0].items()))
        raise RetentionGap(
            f"Kafka deleted offset {offset} of {tp.topic}[{tp.partition}] while the replay was planned: run it again"
        ) from None
    except (KafkaError, OSError) as exc:
        raise ProjectionError(f"cannot read records from Kafka at {settings.bootstrap}: {_describe(exc)}") from None
    finally:
        await _stop_quietly(consumer)
    return found


async def partition_of(settings: KafkaSettings, topic: str, stream_id: str) -> Coord | None:
    """The partition of ``topic`` the relay sends the events of ``stream_id`` to (aiokafka's
    default partitioner over the topic's partitions, as the relay picks it; right while
    the topic's partition count is what it was when they were sent); None while Kafka has
    no such topic."""
    try:
        partitions = await _partitions(settings, [topic])
    except ProjectionError:
        return None
    return (topic, partition_for(stream_id.encode(), sorted(tp.partition for tp in partitions)))


async def offset_reaching(settings: KafkaSettings, coord: Coord, start: int | None, position: int,
                          deadline: float) -> int | None:
    """The offset of the first record of partition ``coord``, from offset ``start`` on (None:
    its beginning), whose ``position`` header is at least ``position``: once a runner's
    checkpoint is past it, every event up to ``position`` of that partition is applied
    (the relay sends a partition's events in log order; a republished copy comes after
    the first). None if no such record arrived by ``deadline`` (the event loop's clock).
    An offset Kafka deleted starts the search at the partition's beginning."""
    consumer = _consumer(settings, group_id=None)
    tp = TopicPartition(*coord)
    loop = asyncio.get_running_loop()
    try:
        await consumer.start()
        consumer.assign([tp])
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        while (left := deadline - loop.time()) > 0:
            try:
                fetched = await consumer.getmany(tp, timeout_ms=max(1, int(min(left, _FETCH_WAIT) * 1000)),
                                                 max_records=1000)
            except OffsetOutOfRangeError:
                await consumer.seek_to_beginning(tp)
                continue
            for message in fetched.get(tp, ()):
                _, found = peek(message)
                if found is not None and found >= position:
                    return int(message.offset)
    except (KafkaError, OSError) as exc:
        raise ProjectionError(f"cannot read {coord[0]}[{coord[1]}] from Kafka at {settings.bootstrap}:"
                              f" {_describe(exc)}") from None
    finally:
        await _stop_quietly(consumer)
    return None


# -- the subscription ---------------------------------------------------------------------------


class KafkaSubscription:
    """The relay's topics as a :class:`~facta.projections.subscriptions.Subscription` of
    ``projection``: its coordinates are ``(topic, partition)``, its checkpoints the next
    offset to read. Building one does no I/O."""

    source: ClassVar[str] = "kafka"

    def __init__(self, store: EventStore, projection: type[Projection], settings: KafkaSettings) -> None:
        self.store = store
        self.projection = projection
        self.settings = settings

    async def follow(self, applier: Applier, *, batch_size: int, once: bool, stop: asyncio.Event,
                     wait: bool = True) -> bool:
        """As one member of the projection's consumer group (:func:`run_kafka`); several
        runners share the partitions, so ``wait`` changes nothing and it returns True."""
        await run_kafka(applier, self.settings, batch_size=batch_size, once=once, stop=stop)
        return True

    async def first_records(self, offsets: Mapping[Coord, int]) -> dict[Coord, FirstRecord]:
        """:func:`first_records` with these settings."""
        return await first_records(self.settings, offsets)

    async def plan_range(self, start: ReplayFrom) -> Range:
        """From ``start`` (a :class:`~facta.projections.replay.ReplayFrom`): ``offset``
        (every partition from it, or with ``partition`` that one and the others from 0),
        ``time`` (each partition's first record at or after it) or store ``position``;
        what Kafka deleted of it is planned from the store (``fill``)."""
        store, projection, kafka = self.store, self.projection, self.settings
        topics = kafka.topics(projection)
        await check_routing(store, projection, kafka)
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
            await refuse_deleted_offsets(store, projection, kafka, start.describe(), first, beginning, end,
                                         first_records=self.first_records)
        elif start.time is not None:
            if start.time > datetime.now(UTC):
                raise ProjectionError(f"time {utc_text(start.time)} is in the future")
            first = await kafka_offsets_for_time(kafka, topics, start.time)
            first, fill, floors = await plan_fill(store, projection, kafka, first, beginning, end,
                                                  first_records=self.first_records, since=start.time)
        else:
            assert start.position is not None
            head = await store.head_position()
            if start.position > head:
                raise ProjectionError(
                    f"position {start.position} is beyond the end of the log (the last position is {head})"
                )
            first, fill, floors = await plan_fill(store, projection, kafka, dict(beginning), beginning, end,
                                                  first_records=self.first_records, after=start.position)
        last = dict(end)
        count = sum(max(last[tp] - first[tp], 0) for tp in last) + sum(f.events for f in fill.values())
        return Range(first, last, count, fill=fill, floors=floors)

    async def read_range(self, applier: Applier, planned: Range, *, batch_size: int, stop: asyncio.Event,
                         on_batch: Callable[[int], None]) -> None:
        """What Kafka deleted of the range from the store first (``planned.fill``), then
        each partition's records from ``planned.start`` to ``planned.end`` and on to the
        end offsets found then, until caught up."""
        store, projection, kafka = self.store, self.projection, self.settings
        topics = kafka.topics(projection)
        # What Kafka deleted first, from the store: every stream's earlier events come before
        # the first of its partition's records read below.
        await fill_from_store(store, applier, kafka, planned.fill, planned.end, batch_size=batch_size, stop=stop,
                              on_batch=on_batch)
        start, end = dict(planned.start), dict(planned.end)
        while not stop.is_set():
            if any(end[tp] > start.get(tp, 0) for tp in end):
                await consume_range(applier, kafka, topics, start, end, batch_size=batch_size, stop=stop,
                                    on_batch=on_batch)
            start = dict(end)
            _, newer = await kafka_offsets(kafka, topics)
            if all(newer[tp] <= end.get(tp, 0) for tp in newer):
                return  # caught up
            end = newer

