"""The relay: streams every stored event to Kafka, with outbox semantics.

The store is the outbox. The relay reads the global log from its own checkpoint (kept in
``facta_relay_checkpoints``), publishes a page of events, waits until the broker has
acknowledged every record of it, and only then moves the checkpoint past the page. So an
event reaches Kafka if and only if it committed in the store (the log holds nothing
else), delivery is at least once (a crash between the acknowledgements and the
checkpoint republishes that page; the event id header is the dedupe key), and a broker
outage delays publishing but never loses anything.

Pages are pipelined: the next page is read while one is sent, and page k+1 is sent
before page k's acknowledgements are awaited, with at most two pages in flight.
Checkpoints are saved strictly in log order, each only after every record up to it was
acknowledged, and before a further page is sent; so a crash republishes at most two
pages.

Records: key = stream id (so one aggregate's events share a partition, in order), value =
the event's JSON payload, headers = the metadata (see :func:`kafka_record`), timestamp =
recorded-at. Topics: one per stream type under a prefix (``facta.ride``), created with the
configured partitions when missing, and the configured replication factor or, by default,
the cluster's own ``default.replication.factor``; a custom router may map a record to any
topic.

Kafka errors: a transient one (Kafka unreachable or slow) and one that says the producer's
idempotence session is broken (a sequence or producer-id error, see
:func:`~facta.eventstore.kafka_support.needs_new_producer`) both make the relay drop its
producer, start a new one and publish again from its checkpoint; any other error (a record
Kafka rejects) stops it, naming the event.

One relay is active per store and relay name: the others wait on a lock (a PostgreSQL
session advisory lock, or a file lock beside a SQLite database) and take over when the
active one dies, from its last checkpoint.

Waking up: the relay polls the log every ``poll_interval`` seconds when idle. It does
not use LISTEN/NOTIFY: a notifying transaction takes a database-wide lock at commit,
which would serialise every append's commit again (ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from .errors import StoreError
from .kafka_support import is_transient, needs_new_producer, pause
from .locks import active_lock
from .records import RecordedEvent
from .schema import events, relay_checkpoints
from .store import EventStore

__all__ = [
    "OPTIONAL_HEADERS", "REQUIRED_HEADERS", "Relay", "RelayConfig", "RelayError", "RelayStatus", "kafka_record", "new_topic",
    "topic_per_stream_type",
]

log = logging.getLogger("facta.relay")

# How long a stopping relay waits for acknowledgements in flight and for its producer's
# flush before it leaves them to the next run (which republishes from the checkpoint): a
# broker that is down answers nothing until the request timeout (15 s by default).
STOP_GRACE_S = 5.0

Router = Callable[[RecordedEvent], str]


class RelayError(StoreError):
    """The relay cannot go on: a record was rejected, or its configuration is wrong."""


def topic_per_stream_type(prefix: str) -> Router:
    """The default router: ``<prefix>.<stream type>``, e.g. ``facta.ride``."""

    def route(record: RecordedEvent) -> str:
        return f"{prefix}.{record.stream_type}"

    return route


@dataclass(frozen=True)
class RelayConfig:
    """How a relay publishes. ``idempotence`` turns on the idempotent producer (and with
    it acks=all); turn it off only for brokers that lack it. ``replication_factor`` None
    (the default) creates topics with the cluster's ``default.replication.factor``.
    ``request_timeout_ms`` bounds each Kafka request, and is also how long aiokafka keeps a
    batch whose partition has no leader before it fails it (the relay then publishes
    again from its checkpoint)."""

    bootstrap: str
    name: str = "default"
    topic_prefix: str = "facta"
    partitions: int = 3
    replication_factor: int | None = None
    router: Router | None = None
    batch_size: int = 1000
    idempotence: bool = True
    acks: str = "all"
    compression: str | None = None
    poll_interval: float = 0.02
    max_backoff: float = 5.0
    request_timeout_ms: int = 15_000
    lock_poll_interval: float = 0.5

    def __post_init__(self) -> None:
        if not self.bootstrap or not isinstance(self.bootstrap, str):
            raise RelayError(f"invalid Kafka bootstrap address {self.bootstrap!r}: expected host:port[,host:port]")
        for part in self.bootstrap.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise RelayError(f"invalid Kafka bootstrap address {self.bootstrap!r}: expected host:port[,host:port]")
        for what, value in (("batch size", self.batch_size), ("partitions", self.partitions),
                            ("replication factor", self.replication_factor)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise RelayError(f"relay {self.name!r}: invalid {what} {value!r}: expected an integer >= 1")
        if not isinstance(self.request_timeout_ms, int) or self.request_timeout_ms < 1:
            raise RelayError(f"relay {self.name!r}: invalid request timeout {self.request_timeout_ms!r} ms:"
                             " expected an integer >= 1")

    def route(self, record: RecordedEvent) -> str:
        if self.router is not None:
            return self.router(record)
        return f"{self.topic_prefix}.{record.stream_type}"


@dataclass(frozen=True)
class RelayStatus:
    name: str
    checkpoint: int
    head: int
    lag: int
    updated_at: datetime | None


def kafka_record(
    record: RecordedEvent, times: dict[datetime, bytes] | None = None
) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    """The Kafka key, value, headers and timestamp (ms) of a stored event.

    Headers (UTF-8 text): ``event-type``, ``schema-version``, ``event-id``, ``stream-id``,
    ``stream-type``, ``stream-version``, ``position``, ``occurred-at``, ``recorded-at``
    (ISO 8601, UTC), and ``actor``, ``correlation-id``, ``causation-id`` when present.
    ``times`` memoises encoded timestamps across a page (an append's events share them).
    """
    times = {} if times is None else times
    occurred = times.get(record.occurred_at)
    if occurred is None:
        occurred = times[record.occurred_at] = record.occurred_at.isoformat().encode()
    recorded = times.get(record.recorded_at)
    if recorded is None:
        recorded = times[record.recorded_at] = record.recorded_at.isoformat().encode()
    key = record.stream_id.encode()
    headers = _headers(
        record.event_type, record.schema_version, str(record.event_id).encode(), key, record.stream_type,
        record.version, record.position, occurred, recorded, record.actor, record.correlation_id, record.causation_id,
    )
    timestamp_ms = int(record.recorded_at.timestamp() * 1000)
    return key, record.payload.encode(), headers, timestamp_ms


# The headers of every record the relay publishes, always present, then present when set.
REQUIRED_HEADERS = (
    "event-type", "schema-version", "event-id", "stream-id", "stream-type", "stream-version", "position",
    "occurred-at", "recorded-at",
)
OPTIONAL_HEADERS = ("actor", "correlation-id", "causation-id")


def _headers(
    event_type: str, schema_version: int, event_id: bytes, stream_id: bytes, stream_type: str, version: int,
    position: int, occurred: bytes, recorded: bytes,
    actor: str | None, correlation_id: str | None, causation_id: str | None,
) -> list[tuple[str, bytes]]:
    """The record headers: the one definition of the format the README documents (the
    names in :data:`REQUIRED_HEADERS` and :data:`OPTIONAL_HEADERS`, in that order)."""
    headers = list(zip(REQUIRED_HEADERS, (
        event_type.encode(), str(schema_version).encode(), event_id, stream_id, stream_type.encode(),
        str(version).encode(), str(position).encode(), occurred, recorded,
    ), strict=True))
    for name, value in zip(OPTIONAL_HEADERS, (actor, correlation_id, causation_id), strict=True):
        if value is not None:
            headers.append((name, value.encode()))
    return headers


class _Stopping(Exception):
    """A stop was requested and Kafka did not acknowledge what is in flight within
    :data:`STOP_GRACE_S`: leave it to the next run."""


class _Transient(Exception):
    """Kafka is unreachable or slow: back off and publish the page again."""


class _SessionBroken(_Transient):
    """The producer's idempotence session is broken (a sequence or producer-id error):
    drop the producer and publish again from the checkpoint with a new one."""


class Relay:
    """Publishes the store's log to Kafka. ``run()`` until stopped, or ``run(once=True)``
    to publish until caught up."""

    def __init__(self, store: EventStore, config: RelayConfig) -> None:
        self.store = store
        self.config = config
        self._lock = active_lock(store, "relay", config.name, RelayError)
        self._topics: set[str] = set()
        self._topic_names: dict[str, str] = {}
        self._partition_cache: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        self._saving: asyncio.Future[None] | None = None  # the checkpoint save in progress
        self._leave_at: float | None = None  # once stopping: when to leave what Kafka has not acknowledged

    # -- status -------------------------------------------------------------------------

    async def status(self) -> RelayStatus:
        row = await self.store.database.read(_checkpoint_row, self.config.name)
        checkpoint, updated = (row[0], row[1]) if row is not None else (0, None)
        head = await self.store.head_position()
        lag = int(await self.store.database.read(_count_after, checkpoint))
        return RelayStatus(self.config.name, checkpoint, head, lag, updated)

    # -- running ------------------------------------------------------------------------

    async def run(
        self, *, once: bool = False, stop: asyncio.Event | None = None, give_up_after: float | None = None
    ) -> int:
        """Publish until ``stop`` is set (or, with ``once``, until caught up). Returns the
        number of events published. Raises :class:`RelayError` when Kafka rejects a record,
        or when Kafka stays unreachable for ``give_up_after`` seconds (default: never).

        Pages are pipelined: page k+1 is read and sent before page k's acknowledgements
        are awaited, with at most two pages in flight. Checkpoints still move strictly in
        log order, each only after every record up to it was acknowledged."""
        stop = stop or asyncio.Event()
        self._leave_at = None
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        if not await self._lock.acquire(stop, self.config.lock_poll_interval):
            return 0
        producer: Any = None
        published = 0
        backoff = 0.1
        in_flight: deque[_Page] = deque()
        reading: asyncio.Future[list[Sequence[Any]]] | None = None  # the next page's read
        try:
            checkpoint = await self._checkpoint()
            after = checkpoint  # the read cursor: ahead of the checkpoint by the pages in flight
            log.info("relay %r publishing from position %d to %s", self.config.name, checkpoint, self.config.bootstrap)
            while not stop.is_set():
                try:
                    if producer is None:  # connect first, so a bad broker shows before any work
                        producer = await self._start_producer()
                    if reading is None:
                        reading = asyncio.ensure_future(self.store.read_log_rows(after, self.config.batch_size))
                    rows, reading = await reading, None
                    if rows:
                        after = rows[-1][0]
                        # Read the next page while this one is built and sent.
                        reading = asyncio.ensure_future(self.store.read_log_rows(after, self.config.batch_size))
                        # The previous page's checkpoint is saved before another page goes out,
                        # so a crash republishes at most the two pages sent since it.
                        await self._saved()
                        in_flight.append(await self._send_page(producer, rows))
                    # Settle the oldest page once two are in flight, or all when caught up.
                    while in_flight and (len(in_flight) >= _MAX_PAGES_IN_FLIGHT or not rows):
                        checkpoint = await self._settle(in_flight[0], checkpoint, stop)
                        published += len(in_flight.popleft().rows)
                    if not rows:
                        if once:
                            break
                        await pause(stop, self.config.poll_interval)
                        continue
                except _Transient as exc:
                    # Both kinds drop the producer and publish again from the checkpoint:
                    # what was sent but not acknowledged may be on Kafka already, so this
                    # repeats it (at least once; the event id is the dedupe key).
                    _abandon(in_flight)
                    await _cancel(reading)
                    reading = None
                    after = checkpoint
                    broken = isinstance(exc, _SessionBroken)
                    failing_since = failing_since if failing_since is not None else loop.time()
                    if give_up_after is not None and loop.time() - failing_since >= give_up_after:
                        what = "Kafka kept failing the producer" if broken else "cannot reach Kafka"
                        raise RelayError(
                            f"{what} at {self.config.bootstrap} for {give_up_after:g} s: {exc}"
                        ) from None
                    if broken:
                        log.warning("relay %r: producer session error from Kafka at %s (%s); starting a new"
                                    " producer and republishing from position %d in %.1f s",
                                    self.config.name, self.config.bootstrap, exc, checkpoint, backoff)
                    else:
                        log.warning("relay %r: Kafka at %s unavailable (%s); retrying from position %d in %.1f s",
                                    self.config.name, self.config.bootstrap, exc, checkpoint, backoff)
                    await _stop_quietly(producer, stop)
                    producer = None
                    await pause(stop, backoff)
                    backoff = min(backoff * 2, self.config.max_backoff)
                    continue
                except _Stopping:
                    break
                backoff, failing_since = 0.1, None
            await _cancel(reading)
            reading = None
            # Stopped: settle what is in flight if Kafka acknowledges it within the grace
            # period (else it is republished by the next run).
            with contextlib.suppress(_Transient, _Stopping):
                while in_flight:
                    checkpoint = await self._settle(in_flight[0], checkpoint, stop)
                    published += len(in_flight.popleft().rows)
            await self._saved()
            return published
        finally:
            _abandon(in_flight)
            await _cancel(reading)
            if self._saving is not None:  # let a save in progress end (an error is already raised)
                await asyncio.wait([self._saving])
                if not self._saving.cancelled():
                    self._saving.exception()
                self._saving = None
            # Leaving: what the producer still holds gets what is left of the grace period.
            left = STOP_GRACE_S if self._leave_at is None else self._leave_at - asyncio.get_running_loop().time()
            await _stop_quietly(producer, within=max(0.5, left))
            await self._lock.release()

    async def _settle(self, page: _Page, checkpoint: int, stop: asyncio.Event) -> int:
        """Wait for every acknowledgement of ``page`` (raise on the first failure), then
        move the checkpoint past it. Returns the new checkpoint. Once ``stop`` is set it
        waits :data:`STOP_GRACE_S` at most, then raises :class:`_Stopping` (the page stays
        unacknowledged: the next run republishes it)."""
        from aiokafka.errors import KafkaError

        for index, future in enumerate(page.futures):
            if not future.done():
                await self._acknowledged(future, stop)
            try:
                future.result()
            except KafkaError as exc:
                raise self._failure(page.rows[page.firsts[index]], exc) from None
        await self._lock.verify()
        # Save in the background, strictly in order: the previous save has ended first.
        await self._saved()
        self._saving = asyncio.ensure_future(
            self.store.database.write(_save_checkpoint, self.config.name, page.last)
        )
        return max(checkpoint, page.last)

    async def _acknowledged(self, future: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Wait until ``future`` is done, or :class:`_Stopping` once ``stop`` has been set
        for :data:`STOP_GRACE_S`. A broker that is down answers nothing until the request
        timeout, and a stop request must not wait that long."""
        loop = asyncio.get_running_loop()
        if not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({future, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if future.done():
                return
        if self._leave_at is None:
            self._leave_at = loop.time() + STOP_GRACE_S
        await asyncio.wait({future}, timeout=max(0.0, self._leave_at - loop.time()))
        if not future.done():
            raise _Stopping

    async def _saved(self) -> None:
        """Wait for the checkpoint save in progress, if any (raise what it raised)."""
        saving, self._saving = self._saving, None
        if saving is not None:
            await saving

    async def _checkpoint(self) -> int:
        row = await self.store.database.read(_checkpoint_row, self.config.name)
        if row is not None:
            return int(row[0])
        await self.store.database.write(_save_checkpoint, self.config.name, 0)
        return 0

    async def _start_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap,
            acks=self.config.acks,
            enable_idempotence=self.config.idempotence,
            compression_type=self.config.compression,
            linger_ms=5,
            max_batch_size=1 << 20,
            request_timeout_ms=self.config.request_timeout_ms,
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            await _stop_quietly(producer)
            if is_transient(exc):
                raise _Transient(_describe(exc)) from None
            if needs_new_producer(exc):
                raise _SessionBroken(_describe(exc)) from None
            hint = "; if the broker lacks the idempotent producer, turn idempotence off" if self.config.idempotence else ""
            raise RelayError(f"Kafka at {self.config.bootstrap} refused the producer: {_describe(exc)}{hint}") from None
        return producer

    async def _ensure_topics(self, wanted: set[str]) -> None:
        wanted = wanted - self._topics
        if not wanted:
            return
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.bootstrap,
                                    request_timeout_ms=self.config.request_timeout_ms)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = sorted(wanted - existing)
            if missing:
                response = await admin.create_topics([
                    new_topic(name, self.config.partitions, self.config.replication_factor) for name in missing
                ])
                created = self._created(response)
                if created:
                    log.info("relay %r created topics %s", self.config.name, ", ".join(created))
        except (KafkaError, OSError) as exc:
            raise _Transient(_describe(exc)) from None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        self._topics |= wanted

    def _created(self, response: Any) -> list[str]:
        """The topics a CreateTopics response says were created. aiokafka returns the
        per-topic errors rather than raising them: one that already exists (another relay
        or a broker's auto-creation made it meanwhile) is fine, a retriable error is
        transient, and any other (e.g. a replication factor larger than the cluster) stops
        the relay, naming the topic."""
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        created = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            message = entry[2] if len(entry) > 2 and entry[2] else ""
            if code == 0:
                created.append(name)
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError:
                continue
            detail = f"{error.__name__}" + (f": {' '.join(message.split())}" if message else "")
            if getattr(error, "retriable", False):
                raise _Transient(f"creating topic {name!r}: {detail}")
            factor = self.config.replication_factor
            wanted = f"replication factor {factor}" if factor is not None else "the cluster's default replication factor"
            hint = ("; brokers older than Kafka 2.4 need an explicit replication factor"
                    if factor is None and "REPLICATION" in error.__name__.upper() else "")
            raise RelayError(
                f"Kafka at {self.config.bootstrap} refused to create topic {name!r} ({self.config.partitions}"
                f" partitions, {wanted}): {detail}{hint}; relay {self.config.name!r} stopped"
            )
        return created

    def _topics_of(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """The topic of every row, in order (the default router memoised per stream type)."""
        if self.config.router is not None:
            router = self.config.router
            return [router(_recorded(row, self.store)) for row in rows]
        names = self._topic_names
        prefix = self.config.topic_prefix
        topics = []
        for row in rows:
            stream_type = row[3]
            topic = names.get(stream_type)
            if topic is None:
                topic = names[stream_type] = f"{prefix}.{stream_type}"
            topics.append(topic)
        return topics

    async def _partitions(self, producer: Any, topics: set[str]) -> dict[str, tuple[list[int], dict[bytes, int]]]:
        """Per topic: its sorted partitions and the key -> partition cache, which is
        emptied when the topic's partition count changes."""
        from aiokafka.errors import KafkaError

        cluster = producer.client.cluster
        result = {}
        for topic in topics:
            current = cluster.partitions_for_topic(topic)
            if not current:
                try:
                    current = await producer.partitions_for(topic)
                except (KafkaError, OSError) as exc:
                    raise _Transient(_describe(exc)) from None
            cached = self._partition_cache.get(topic)
            if cached is None or len(cached[0]) != len(current):
                cached = self._partition_cache[topic] = (sorted(current), {})
            result[topic] = cached
        return result

    async def _send_page(self, producer: Any, rows: Sequence[Sequence[Any]]) -> _Page:
        """Build and send every record of a page, one batch per partition at a time; the
        acknowledgements are awaited later (:meth:`_settle`). A record refused at send
        time raises at once.

        Each key goes to the partition aiokafka's own partitioner picks for it, and a
        partition's batches are queued in log order, so one stream's events reach the
        topic in version order, as with ``send()`` per record."""
        from aiokafka.errors import KafkaError
        from aiokafka.partitioner import DefaultPartitioner

        topics = self._topics_of(rows)
        wanted = set(topics)
        await self._ensure_topics(wanted)
        partitions = await self._partitions(producer, wanted)
        partitioner = DefaultPartitioner()  # the producer's own, so keys land where they always did
        times: dict[Any, tuple[bytes, int]] = {}
        # (topic, partition) -> [open batch, index of its first row, records in it]
        open_batches: dict[tuple[str, int], list[Any]] = {}
        sent: list[tuple[int, asyncio.Future[Any]]] = []  # (index of the first row carried, future)

        async def flush(where: tuple[str, int]) -> None:
            batch, first, count = open_batches.pop(where)
            batch.close()
            if count:
                try:
                    sent.append((first, await producer.send_batch(batch, where[0], partition=where[1])))
                except KafkaError as exc:
                    raise self._failure(rows[first], exc) from None

        try:
            for index, (row, topic) in enumerate(zip(rows, topics, strict=True)):
                (position, event_id, stream_id, stream_type, version, event_type, schema_version, payload,
                 occurred_at, recorded_at, actor, correlation_id, causation_id) = row
                occurred = times.get(occurred_at)
                if occurred is None:
                    occurred = times[occurred_at] = _encode_time(occurred_at)
                recorded = times.get(recorded_at)
                if recorded is None:
                    recorded = times[recorded_at] = _encode_time(recorded_at)
                key = stream_id.encode()
                value = payload.encode()
                headers = _headers(
                    event_type, schema_version, _encode_event_id(event_id), key, stream_type, version, position,
                    occurred[0], recorded[0], actor, correlation_id, causation_id,
                )
                ordered, by_key = partitions[topic]
                partition = by_key.get(key)
                if partition is None:
                    partition = by_key[key] = partitioner(key, ordered, ordered)
                where = (topic, partition)
                if len(value) + len(key) > _SOLO_BYTES:
                    # A big record goes alone through send(), which checks its size and
                    # so names it if it is too large; the partition's batch goes first.
                    if where in open_batches:
                        await flush(where)
                    try:
                        future = await producer.send(topic, value=value, key=key, headers=headers,
                                                     timestamp_ms=recorded[1], partition=partition)
                    except KafkaError as exc:
                        raise self._failure(row, exc) from None
                    sent.append((index, future))
                    continue
                entry = open_batches.get(where)
                if entry is None:
                    entry = open_batches[where] = [producer.create_batch(), index, 0]
                if entry[0].append(key=key, value=value, timestamp=recorded[1], headers=headers) is None:
                    await flush(where)  # full: queue it and start the next one
                    entry = open_batches[where] = [producer.create_batch(), index, 0]
                    if entry[0].append(key=key, value=value, timestamp=recorded[1], headers=headers) is None:
                        raise RelayError(f"relay {self.config.name!r}: event at position {position} does not fit"
                                         " in an empty batch")
                entry[2] += 1
            for where in list(open_batches):
                await flush(where)
        except BaseException:
            _abandon([_Page(rows, [future for _, future in sent], rows[-1][0])])
            raise
        sent.sort(key=lambda item: item[0])  # settle in log order: a failure names the earliest record
        return _Page(rows, [future for _, future in sent], rows[-1][0], [first for first, _ in sent])

    def _failure(self, row: Sequence[Any], exc: BaseException) -> Exception:
        if is_transient(exc):
            return _Transient(_describe(exc))
        if needs_new_producer(exc):
            return _SessionBroken(_describe(exc))
        record = _recorded(row, self.store)
        return RelayError(
            f"Kafka rejected event {record.event_id} ({record.event_type}, stream {record.stream_id!r}"
            f" version {record.version}) at position {record.position}: {_describe(exc)};"
            f" relay {self.config.name!r} stopped, checkpoint not moved"
        )


def new_topic(name: str, partitions: int, replication_factor: int | None) -> Any:
    """The aiokafka ``NewTopic`` the relay creates a topic with. A ``replication_factor`` of
    None asks for -1, which a broker (Kafka 2.4+, KIP-464) replaces with its own
    ``default.replication.factor``."""
    from aiokafka.admin import NewTopic

    # aiokafka's NewTopic refuses a replication factor of -1 together with a partition count
    # (it reads -1 as "replicas assigned by hand", which we do not do), yet the request it
    # builds carries the two numbers as they are. So the topic is built with a placeholder
    # factor of 1 and the attribute is then set to -1, which goes into the request as is.
    topic = NewTopic(name, partitions, replication_factor if replication_factor is not None else 1)
    if replication_factor is None:
        topic.replication_factor = -1
    return topic


@dataclass
class _Page:
    """A page sent to Kafka: its rows (as :meth:`EventStore.read_log_rows` returns them),
    the futures of its batches, and its last position."""

    rows: Sequence[Sequence[Any]]
    futures: list[asyncio.Future[Any]]
    last: int
    firsts: list[int] = field(default_factory=list)  # per future, the index of the first row it carries


_MAX_PAGES_IN_FLIGHT = 2
_SOLO_BYTES = 256 * 1024  # records larger than this are sent alone, by send()


def _abandon(pages: Iterable[_Page]) -> None:
    """Give up on the acknowledgements of ``pages``: cancel those still pending, and mark
    the failures of those already failed as seen (the first one was raised; asyncio would
    otherwise log each of the others as "never retrieved")."""
    for page in pages:
        for future in page.futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()
    if isinstance(pages, deque):
        pages.clear()


async def _cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel a pending read and wait until it has ended (its result or error is dropped)."""
    if task is not None:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it


def _as_datetime(value: Any) -> datetime:
    """A stored time as an aware UTC datetime (SQLite gives naive UTC text)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _encode_time(value: Any) -> tuple[bytes, int]:
    """A stored time's header text (as :func:`kafka_record` writes it) and epoch ms."""
    moment = _as_datetime(value)
    return moment.isoformat().encode(), int(moment.timestamp() * 1000)


def _encode_event_id(value: Any) -> bytes:
    if isinstance(value, str) and len(value) == 32:  # SQLite: hex digits
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}".encode()
    return str(value).encode()


def _recorded(row: Sequence[Any], store: EventStore) -> RecordedEvent:
    """The :class:`RecordedEvent` of a raw log row (for custom routers and error messages)."""
    (position, event_id, stream_id, stream_type, version, event_type, schema_version, payload,
     occurred_at, recorded_at, actor, correlation_id, causation_id) = row
    return RecordedEvent(
        position, uuid.UUID(str(event_id)), stream_id, stream_type, version, event_type, schema_version, payload,
        _as_datetime(occurred_at), _as_datetime(recorded_at), actor, correlation_id, causation_id,
        registry=store.registry,
    )


# -- Kafka errors ---------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _stop_quietly(producer: Any, stop: asyncio.Event | None = None, within: float = STOP_GRACE_S) -> None:
    """Stop ``producer``. aiokafka's ``stop()`` first waits until every record the producer
    holds is acknowledged or has expired (the request timeout): that keeps a request of an
    abandoned producer from landing after a new producer's, which could put a stream's
    events out of order. Once ``stop`` is set (at once without one), it gets ``within``
    seconds; then its records are left (the next run republishes them from
    the checkpoint) and its connections closed."""
    if producer is None:
        return
    stopping = asyncio.ensure_future(producer.stop())
    if stop is not None and not stop.is_set():
        waiting = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({stopping, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
    if not stopping.done():
        await asyncio.wait({stopping}, timeout=within)
    if not stopping.done():
        stopping.cancel()  # leaves the flush; what it held is republished by the next run
        await asyncio.wait({stopping}, timeout=1.0)
        # What stop() does after its flush (aiokafka has no public way to skip the flush):
        # end the sender task and close the connections.
        for part in (getattr(producer, "_sender", None), getattr(producer, "client", None)):
            if part is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(part.close(), 5.0)
    if stopping.done() and not stopping.cancelled():
        stopping.exception()  # retrieved: a failure to stop changes nothing here


# -- checkpoints ------------------------------------------------------------------------------


def _checkpoint_row(conn: Connection, name: str) -> Any:
    return conn.execute(
        select(relay_checkpoints.c.position, relay_checkpoints.c.updated_at).where(relay_checkpoints.c.name == name)
    ).first()


def _save_checkpoint(conn: Connection, name: str, position: int) -> None:
    now = datetime.now(UTC)
    updated = conn.execute(
        relay_checkpoints.update().where(relay_checkpoints.c.name == name).values(position=position, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(relay_checkpoints.insert().values(name=name, position=position, updated_at=now))


def _count_after(conn: Connection, position: int) -> int:
    return int(conn.execute(select(func.count()).select_from(events).where(events.c.position > position)).scalar_one())
