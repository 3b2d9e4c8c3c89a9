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
the event's JSON payload, headers = the metadata, timestamp = recorded-at; the format is
:mod:`facta.eventstore.kafka_codec`'s, which the Kafka source decodes. Topics: one per stream type under a prefix (``facta.ride``), created with the
configured partitions when missing, and the configured replication factor or, by default,
the cluster's own ``default.replication.factor``; a custom router may map a record to any
topic.

Topic names follow Kafka's rule (:mod:`facta.domain.names`): the prefix is checked when
the relay is configured, and every topic before it is used. An event whose topic is not a
legal name, or collides with another in '.' versus '_', stops the relay before it, as a
record Kafka refuses does.

Kafka errors: a transient one (Kafka unreachable or slow) and one that says the producer's
idempotence session is broken (a sequence or producer-id error, see
:func:`~facta.eventstore.kafka_support.needs_new_producer`) both make the relay drop its
producer, start a new one and publish again from its checkpoint; any other error (a record
Kafka rejects) stops it before that event (:class:`RecordRefused`), with everything before
it published and the checkpoint just before it.

Skips: ``facta relay skip --position P`` records (in ``facta_relay_skips``: who, when,
why) that the relay passes over the event at P without publishing it; never automatic.

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
import math
import shlex
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, func, insert, select, update

from facta import metrics, tracing
from facta.domain.names import KAFKA_TOPIC_MAX_LENGTH, kafka_topic_problem
from facta.errors import RecordRefused, RelayError
from facta.settings import settings

from ._diagnostics import describe
from ._rows import records_from_rows
from .kafka_codec import (
    OPTIONAL_HEADERS,
    REQUIRED_HEADERS,
    KafkaRecord,
    TimeMemo,
    decode_id,
    encode,
    encode_rows,
    utc,
)
from .kafka_support import bootstrap_problem, is_transient, needs_new_producer, partition_for, pause, stop_quietly
from .locks import active_lock
from .records import RecordedEvent
from .schema import events, relay_checkpoints, relay_skips
from .store import EventStore
from .validation import TEXT_LIMITS, check_bool_arg, check_instance_arg, check_settings

__all__ = [
    "OPTIONAL_HEADERS", "REQUIRED_HEADERS", "RecordRefused", "Relay", "RelayConfig", "RelayError", "RelaySkip",
    "RelayStatus", "check_topic_prefix", "kafka_record", "new_topic", "topic_name", "topic_per_stream_type",
]

T = TypeVar("T")

log = logging.getLogger("facta.relay")

# How long a stopping relay waits for acknowledgements in flight and for its producer's
# flush before it leaves them to the next run (which republishes from the checkpoint): a
# broker that is down answers nothing until the request timeout (15 s by default).
STOP_GRACE_S = 5.0
# How long a relay that gives up (Kafka unanswered for ``give_up_after`` seconds) lets its
# producer close: its records are unacknowledged anyway, and the next run republishes them.
GIVE_UP_GRACE_S = 0.5
# The largest store position (BIGINT), for a skip's position.
MAX_POSITION = 2**63 - 1

Router = Callable[[RecordedEvent], str]


def topic_name(prefix: str, stream_type: str) -> str:
    """The topic of a stream type's events: ``<prefix>.<stream type>`` (``facta.ride``). The
    one rule the relay routes by; it does not check the result (see :func:`check_topic_prefix`
    and :func:`facta.domain.names.kafka_topic_problem`)."""
    return f"{prefix}.{stream_type}"


def _clip(value: object, width: int = 40) -> str:
    """``value``'s repr in a message, long texts cut."""
    if isinstance(value, str) and len(value) > width:
        return repr(value[:width]) + f"...({len(value)} characters)"
    return repr(value)


def check_topic_prefix(prefix: object) -> str:
    """``prefix`` if topics ``<prefix>.<stream type>`` can be formed from it, else a one-line
    :class:`RelayError` naming it. A prefix is 1 to 247 of Kafka's topic characters (ASCII
    letters, digits, ``.``, ``_``, ``-``): an empty one is refused (it would make topics
    ``.ride``), and a topic needs room for the dot and a stream type."""
    problem = kafka_topic_problem(prefix)
    if problem is None and isinstance(prefix, str) and len(prefix) > KAFKA_TOPIC_MAX_LENGTH - 2:
        problem = (f"is {len(prefix)} characters long: a topic <prefix>.<stream type> is at most"
                   f" {KAFKA_TOPIC_MAX_LENGTH}, so a prefix at most {KAFKA_TOPIC_MAX_LENGTH - 2}")
    if problem == "is empty":
        problem = "is empty: topics are <prefix>.<stream type>; give one, e.g. 'facta'"
    if problem is not None:
        raise RelayError(f"invalid topic prefix {prefix!r}: it {problem}")
    assert isinstance(prefix, str)
    return prefix


def topic_per_stream_type(prefix: str) -> Router:
    """The default router: ``<prefix>.<stream type>``, e.g. ``facta.ride``. Raises
    :class:`RelayError` for a prefix no topic can be formed from."""
    check_topic_prefix(prefix)

    def route(record: RecordedEvent) -> str:
        return topic_name(prefix, record.stream_type)

    return route


@dataclass(frozen=True)
class RelayConfig:
    """How a relay publishes. ``idempotence`` turns on the idempotent producer (and with
    it acks=all); turn it off only for brokers that lack it. ``replication_factor`` None
    (the default) creates topics with the cluster's ``default.replication.factor``.
    ``request_timeout_ms`` bounds each Kafka request, and is also how long aiokafka keeps a
    batch whose partition has no leader before it fails it (the relay then publishes
    again from its checkpoint). ``topic_prefix``: see :func:`check_topic_prefix` (checked
    here, even with a custom ``router``). Raises :class:`RelayError` for a bad setting.
    The defaults are :func:`facta.settings.settings`' (``FACTA_TOPIC_PREFIX``,
    ``FACTA_BATCH_SIZE``, ``FACTA_RELAY_POLL_INTERVAL_S``, ...; seconds where no unit is named)."""

    bootstrap: str
    name: str = "default"
    topic_prefix: str = field(default_factory=lambda: settings().topic_prefix)
    partitions: int = field(default_factory=lambda: settings().relay_partitions)
    replication_factor: int | None = None
    router: Router | None = None
    batch_size: int = field(default_factory=lambda: settings().batch_size)
    idempotence: bool = True
    acks: str = "all"
    compression: str | None = None
    poll_interval: float = field(default_factory=lambda: settings().relay_poll_interval_s)
    max_backoff: float = field(default_factory=lambda: settings().relay_max_backoff_s)
    request_timeout_ms: int = field(default_factory=lambda: settings().kafka_request_timeout_ms)
    lock_poll_interval: float = field(default_factory=lambda: settings().lock_poll_interval_s)

    def __post_init__(self) -> None:
        check_settings("RelayConfig", {"batch_size": self.batch_size, "partitions": self.partitions, "replication_factor": self.replication_factor, "request_timeout_ms": self.request_timeout_ms}, {"poll_interval": self.poll_interval, "max_backoff": self.max_backoff, "lock_poll_interval": self.lock_poll_interval}, {"idempotence": self.idempotence})
        problem = bootstrap_problem(self.bootstrap)
        if problem is not None:
            raise RelayError(problem)
        for what, value in (("batch size", self.batch_size), ("partitions", self.partitions),
                            ("replication factor", self.replication_factor)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise RelayError(f"relay {self.name!r}: invalid {what} {value!r}: expected an integer >= 1")
        if not isinstance(self.request_timeout_ms, int) or self.request_timeout_ms < 1:
            raise RelayError(f"relay {self.name!r}: invalid request timeout {self.request_timeout_ms!r} ms:"
                             " expected an integer >= 1")
        check_topic_prefix(self.topic_prefix)

    def route(self, record: RecordedEvent) -> str:
        if self.router is not None:
            return self.router(record)
        return topic_name(self.topic_prefix, record.stream_type)


@dataclass(frozen=True)
class RelaySkip:
    """An event an operator let the relay pass over (``facta relay skip``): who (``skipped_by``,
    may be None), when and why; ``passed_at`` is when the relay's checkpoint moved past it
    without publishing it (None: not yet)."""

    relay: str
    position: int
    event_id: uuid.UUID
    event_type: str
    reason: str
    skipped_by: str | None
    skipped_at: datetime
    passed_at: datetime | None


@dataclass(frozen=True)
class RelayStatus:
    """A relay's checkpoint (the last position published), the log's head, the lag (events
    after the checkpoint), when the checkpoint was last written (None: the relay never ran
    on this store) and its recorded skips, by position."""

    name: str
    checkpoint: int
    head: int
    lag: int
    updated_at: datetime | None
    skips: tuple[RelaySkip, ...] = ()


def kafka_record(record: RecordedEvent, times: TimeMemo | None = None) -> KafkaRecord:
    """The Kafka key, value, headers and timestamp (ms) of a stored event: the record
    format of :mod:`facta.eventstore.kafka_codec` (:func:`~facta.eventstore.kafka_codec.encode`).

    Headers (UTF-8 text): ``event-type``, ``schema-version``, ``event-id``, ``stream-id``,
    ``stream-type``, ``stream-version``, ``position``, ``occurred-at``, ``recorded-at``
    (ISO 8601, UTC), and ``actor``, ``correlation-id``, ``causation-id`` when present.
    ``times`` memoises encoded times across a page (an append's events share them).
    """
    return encode(record, times)


class _Stopping(Exception):
    """A stop was requested and Kafka did not acknowledge what is in flight within
    :data:`STOP_GRACE_S`: leave it to the next run."""


class _Transient(Exception):
    """Kafka is unreachable or slow: back off and publish the page again."""


class _SessionBroken(_Transient):
    """The producer's idempotence session is broken (a sequence or producer-id error):
    drop the producer and publish again from the checkpoint with a new one."""


class _NoAnswer(_Transient):
    """Kafka did not answer before the relay's give-up deadline."""


class _Refused(Exception):
    """The event of ``row`` cannot be published (``why``): the relay stops before it.
    ``checkpoint``: the checkpoint saved up to just before it, when that moved it."""

    def __init__(self, row: Sequence[Any], why: str) -> None:
        super().__init__(why)
        self.row, self.why = row, why
        self.checkpoint: int | None = None


class Relay:
    """Publishes the store's log to Kafka. ``run()`` until stopped, or ``run(once=True)``
    to publish until caught up."""

    def __init__(self, store: EventStore, config: RelayConfig) -> None:
        check_instance_arg("store", store, EventStore, "an EventStore")
        check_instance_arg("config", config, RelayConfig, "a RelayConfig")
        self.store = store
        self.config = config
        self._lock = active_lock(store, "relay", config.name, RelayError)
        self._topics: set[str] = set()
        self._topic_names: dict[str, str] = {}
        # Per topic seen: why it cannot be used (None: it can); and the topics by their
        # name with '.' read as '_', which Kafka holds must be unique.
        self._topic_problems: dict[str, str | None] = {}
        self._topics_by_collision_key: dict[str, str] = {}
        self._partition_cache: dict[str, tuple[list[int], dict[bytes, int]]] = {}
        self._saving: asyncio.Future[None] | None = None  # the checkpoint save in progress
        self._leave_at: float | None = None  # once stopping: when to leave what Kafka has not acknowledged
        self._give_up_after: float | None = None
        self._deadline: float | None = None  # with give_up_after: give up unless Kafka answers by then
        self._catching_up = True  # the last page read was full: read the next one's skips beside it
        self._metrics = metrics.relay(config.name)

    # -- status and skips -------------------------------------------------------------------

    async def status(self) -> RelayStatus:
        """The relay's checkpoint, the log's head, the lag and the recorded skips."""
        row = await self.store.database.read(_checkpoint_row, self.config.name)
        checkpoint, updated = (row[0], row[1]) if row is not None else (0, None)
        head = await self.store.head_position()
        lag = int(await self.store.database.read(_count_after, checkpoint))
        return RelayStatus(self.config.name, checkpoint, head, lag, updated, tuple(await self.skips()))

    async def skips(self) -> list[RelaySkip]:
        """The events recorded as skipped by this relay, by position."""
        rows = await self.store.database.read(_skip_rows, self.config.name)
        return [_skip(row) for row in rows]

    async def skip(self, position: int, reason: str, actor: str | None = None) -> tuple[RelaySkip, bool]:
        """Record that this relay passes over the event at ``position`` without publishing
        it (the next time it reads that position: restart a relay that stopped on it).
        Returns the skip and whether it is new (a position skipped already keeps its first
        record). Raises :class:`RelayError`, one line, when the relay never ran on this
        store, when no event is at ``position``, or when the relay has published it
        already (``position`` at or before its checkpoint)."""
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= MAX_POSITION:
            raise RelayError(f"invalid position {position!r}: expected an integer from 1 to {MAX_POSITION}")
        reason_limit, actor_limit = TEXT_LIMITS["skip reason"], TEXT_LIMITS["skipped by"]
        if not isinstance(reason, str) or not reason.strip() or "\x00" in reason or len(reason) > reason_limit:
            raise RelayError(f"invalid reason {_clip(reason)}: give 1 to {reason_limit} characters without NUL")
        if actor is not None and (not isinstance(actor, str) or not actor or len(actor) > actor_limit
                                  or "\x00" in actor):
            raise RelayError(f"invalid actor {_clip(actor)}: expected 1 to {actor_limit} characters without NUL")
        row, new = await self.store.database.write(_add_skip, self.config.name, position, reason, actor)
        return _skip(row), new

    # -- running ------------------------------------------------------------------------

    async def run(
        self, *, once: bool = False, stop: asyncio.Event | None = None, give_up_after: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Publish until ``stop`` is set (or, with ``once``, until caught up). Returns the
        number of events published (skipped events are not counted). ``on_progress``, if
        given, is called with the number published so far each time a page is
        acknowledged (once per page, never per event; ``facta relay run --once`` draws its
        progress with it).

        Raises :class:`RecordRefused` before an event that cannot be published (Kafka
        refused its record, or its topic name is not one Kafka allows), after publishing
        every event before it; and :class:`RelayError` when Kafka leaves the relay without
        an answer for ``give_up_after`` seconds (default: never give up). Every wait on
        Kafka is then bounded by that time, so the relay gives up within ``give_up_after``
        plus :data:`GIVE_UP_GRACE_S` and the time to close its connections.

        Pages are pipelined: page k+1 is read and sent before page k's acknowledgements
        are awaited, with at most two pages in flight. Checkpoints still move strictly in
        log order, each only after every record up to it was acknowledged."""
        if give_up_after is not None and (isinstance(give_up_after, bool) or not isinstance(give_up_after, (int, float))
                                          or not math.isfinite(give_up_after) or give_up_after <= 0):
            raise RelayError(f"relay {self.config.name!r}: invalid Kafka timeout {give_up_after!r} s:"
                             " expected a finite number of seconds > 0")
        check_bool_arg("once", once)
        stop = stop or asyncio.Event()
        self._leave_at = None
        if not await self._lock.acquire(stop, self.config.lock_poll_interval):
            return 0
        self._give_up_after, self._deadline = give_up_after, None
        producer: Any = None
        published = 0
        backoff = 0.1
        in_flight: deque[_Page] = deque()
        reading: asyncio.Future[tuple[list[Sequence[Any]], set[int]]] | None = None  # the next page's read
        last_failure: _Transient | None = None
        try:
            checkpoint = await self._checkpoint()
            after = checkpoint  # the read cursor: ahead of the checkpoint by the pages in flight
            self._metrics.follow().at(checkpoint, checkpoint, None)
            await self._lag(checkpoint, after, in_flight, caught_up=False)
            log.info("relay %r publishing from position %d to %s", self.config.name, checkpoint, self.config.bootstrap)
            self._answered()
            while not stop.is_set():
                try:
                    if producer is None:  # connect first, so a bad broker shows before any work
                        producer = await self._start_producer()
                        self._answered()
                    if reading is None:
                        reading = asyncio.ensure_future(self._read_page(after))
                    (rows, skipped), reading = await reading, None
                    page = None
                    if rows:
                        after = rows[-1][0]
                        page = self._plan(rows, skipped)
                        if page.refused is None:  # read the next page while this one is sent
                            reading = asyncio.ensure_future(self._read_page(after))
                        # The previous page's checkpoint is saved before another page goes out,
                        # so a crash republishes at most the two pages sent since it.
                        await self._saved()
                        in_flight.append(await self._send_page(producer, page))
                    refused = page.refused if page is not None else None
                    # Settle the oldest page once two are in flight, or all when caught up
                    # or stopping before an event.
                    while in_flight and (len(in_flight) >= _MAX_PAGES_IN_FLIGHT or not rows or refused):
                        checkpoint = await self._settle(in_flight[0], checkpoint, stop)
                        published += self._published(in_flight.popleft())
                        self._answered()
                        if on_progress is not None:
                            on_progress(published)
                    await self._lag(checkpoint, after, in_flight, caught_up=not rows)
                    if refused is not None:
                        raise refused
                    if not rows:
                        self._answered()  # idle: nothing waits on Kafka
                        if once:
                            break
                        await pause(stop, self.config.poll_interval)
                        continue
                except _Refused as refused:
                    await self._saved()
                    if refused.checkpoint is not None:
                        checkpoint = max(checkpoint, refused.checkpoint)
                    raise self._stopped_before(refused, checkpoint) from None
                except _Transient as exc:
                    # Both kinds drop the producer and publish again from the checkpoint:
                    # what was sent but not acknowledged may be on Kafka already, so this
                    # repeats it (at least once; the event id is the dedupe key).
                    _abandon(in_flight)
                    await _cancel(reading)
                    reading = None
                    after = checkpoint
                    broken = isinstance(exc, _SessionBroken)
                    if not isinstance(exc, _NoAnswer) or last_failure is None:
                        last_failure = exc  # what the one-line error names when the relay gives up
                    self._give_up_if_late(last_failure, broken)
                    if broken:
                        log.warning("relay %r: producer session error from Kafka at %s (%s); starting a new"
                                    " producer and republishing from position %d in %.1f s",
                                    self.config.name, self.config.bootstrap, exc, checkpoint, backoff)
                    else:
                        log.warning("relay %r: Kafka at %s unavailable (%s); retrying from position %d in %.1f s",
                                    self.config.name, self.config.bootstrap, exc, checkpoint, backoff)
                    await stop_quietly(producer, STOP_GRACE_S, stop=stop, until=self._deadline,
                                       past_until_s=GIVE_UP_GRACE_S, unwind_s=1.0)
                    producer = None
                    self._give_up_if_late(last_failure, broken)
                    await self._lag(checkpoint, checkpoint, in_flight, caught_up=False)
                    left = self._remaining()
                    await pause(stop, backoff if left is None else min(backoff, left))
                    backoff = min(backoff * 2, self.config.max_backoff)
                    continue
                except _Stopping:
                    break
                backoff, last_failure = 0.1, None
            await _cancel(reading)
            reading = None
            # Stopped: settle what is in flight if Kafka acknowledges it within the grace
            # period (else it is republished by the next run).
            with contextlib.suppress(_Transient, _Stopping, _Refused):
                while in_flight:
                    checkpoint = await self._settle(in_flight[0], checkpoint, stop)
                    published += self._published(in_flight.popleft())
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
            await stop_quietly(producer, max(GIVE_UP_GRACE_S, left), unwind_s=1.0)
            await self._lock.release()

    # -- metrics (facta.metrics: once per page) ---------------------------------------------------

    def _published(self, page: _Page) -> int:
        """The records of ``page``, acknowledged: counted (``facta.relay.published``)."""
        self._metrics.published(len(page.rows))
        return len(page.rows)

    async def _lag(self, checkpoint: int, after: int, in_flight: deque[_Page], caught_up: bool) -> None:
        """Per page (and per retry while Kafka fails): the lag gauges' figures. Caught up
        (an empty page read, nothing in flight): 0. Else the events after ``checkpoint`` up
        to the head, the last position read (``after``), and the oldest of them the first
        one in flight. While an SDK records, at most every :data:`facta.metrics.HEAD_REFRESH_S`
        while catching up or with nothing in flight (starting, Kafka down), the head and the
        first event after the checkpoint are read from the store instead."""
        if not metrics.instrumented():
            return
        lag = self._metrics.lag
        if caught_up and not in_flight:
            lag.caught_up(after)
            return
        oldest = next((page.rows[0] for page in in_flight if page.rows), None)
        if (self._catching_up or oldest is None) and lag.head_due():
            lag.head_read(await self.store.head_position())
            if oldest is None:
                first = await self.store.read_log_rows(checkpoint, 1)
                oldest = first[0] if first else None
        lag.at(checkpoint, after, None if oldest is None else utc(oldest[9]).timestamp())  # column 9: recorded_at

    # -- the Kafka timeout (give_up_after) ------------------------------------------------------

    def _answered(self) -> None:
        """Kafka answered (or nothing waits on it): the give-up clock starts again."""
        if self._give_up_after is not None:
            self._deadline = asyncio.get_running_loop().time() + self._give_up_after

    def _remaining(self) -> float | None:
        """Seconds left before the relay gives up on Kafka (None: it never does)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        """Await a Kafka call, no longer than the time left before giving up."""
        remaining = self._remaining()
        if remaining is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, remaining)
        except TimeoutError:
            raise self._no_answer() from None

    def _no_answer(self) -> _Transient:
        return _NoAnswer("Kafka did not answer")

    def _give_up_if_late(self, exc: Exception, broken: bool) -> None:
        """Raise the one-line :class:`RelayError` once the Kafka timeout has run out."""
        if self._deadline is None or asyncio.get_running_loop().time() < self._deadline:
            return
        self._leave_at = asyncio.get_running_loop().time() + GIVE_UP_GRACE_S
        what = "Kafka kept failing the producer" if broken else "cannot reach Kafka"
        raise RelayError(
            f"{what} at {self.config.bootstrap}: gave up after the Kafka timeout of {self._give_up_after:g} s"
            f" (last error: {exc}); relay {self.config.name!r} stopped"
        ) from None

    # -- pages ------------------------------------------------------------------------------

    async def _read_page(self, after: int) -> tuple[list[Sequence[Any]], set[int]]:
        """The next page of the log after ``after``, and the positions in it this relay skips.

        While catching up (the previous page was full) the skips are read beside the rows,
        as the first ``batch_size`` skipped positions after ``after``: the page holds at
        most that many events, so every skip up to its last position is among them. An idle
        relay reads the skips only when the log has something new."""
        limit = self.config.batch_size
        if self._catching_up:
            found, skips = await asyncio.gather(
                self.store.read_log_rows(after, limit),
                self.store.database.read(_skipped_after, self.config.name, after, limit),
            )
            rows = list(found)
            self._catching_up = len(rows) == limit
            return rows, {p for p in skips if rows and p <= rows[-1][0]}
        rows = list(await self.store.read_log_rows(after, limit))
        self._catching_up = len(rows) == limit
        if not rows:
            return rows, set()
        return rows, set(await self.store.database.read(_skipped_after, self.config.name, after, limit, rows[-1][0]))

    def _plan(self, rows: Sequence[Sequence[Any]], skipped: set[int]) -> _Page:
        """The page to send for ``rows``: without the skipped events, and cut before the
        first event whose topic cannot be used (the page then carries the refusal)."""
        send = [row for row in rows if row[0] not in skipped] if skipped else list(rows)
        page = _Page(send, [], rows[-1][0], topics=self._topics_of(send), skipped=sorted(skipped))
        self._cut_at_bad_topic(page)
        return page

    def _cut_at_bad_topic(self, page: _Page) -> None:
        """Cut ``page`` before its first event whose topic cannot be used, if any."""
        problems = {topic: self._topic_problem(topic) for topic in dict.fromkeys(page.topics)}  # in log order
        if not any(problems.values()):
            return
        index = next(i for i, topic in enumerate(page.topics) if problems[topic])
        page.cut(index, _Refused(page.rows[index], f"its topic {page.topics[index]!r} {problems[page.topics[index]]}"))

    def _topic_problem(self, topic: Any) -> str | None:
        """Why ``topic`` cannot be used (memoised): not a Kafka topic name, a name that
        collides with another topic's in '.' versus '_', or a topic Kafka refused to create."""
        if isinstance(topic, str) and topic in self._topic_problems:
            return self._topic_problems[topic]
        problem = kafka_topic_problem(topic)
        if problem is None:
            key = topic.replace(".", "_")
            other = self._topics_by_collision_key.setdefault(key, topic)
            if other != topic:
                problem = (f"collides with topic {other!r}: Kafka refuses two topics whose names differ only in"
                           " '.' versus '_'")
        if isinstance(topic, str):
            self._topic_problems[topic] = problem
        return problem

    async def _settle(self, page: _Page, checkpoint: int, stop: asyncio.Event) -> int:
        """Wait for every acknowledgement of ``page`` (raise on the first failure), then
        move the checkpoint past it. Returns the new checkpoint. Once ``stop`` is set it
        waits :data:`STOP_GRACE_S` at most, then raises :class:`_Stopping` (the page stays
        unacknowledged: the next run republishes it).

        A record Kafka refused raises :class:`_Refused` once the checkpoint is saved just
        before it: the page's futures are settled in the order of their first records, so
        every record before the refused one is acknowledged by then."""
        from aiokafka.errors import KafkaError

        for index, future in enumerate(page.futures):
            if not future.done():
                await self._acknowledged(future, stop)
            try:
                sent = future.result()
            except KafkaError as exc:
                tracing.end_producer_span(page.spans.pop(future, None), None, exc)
                failure = self._failure(page.rows[page.firsts[index]], exc)
                if isinstance(failure, _Refused):
                    before = failure.row[0] - 1
                    if before > checkpoint:
                        await self._saved()
                        await self._lock.verify()
                        await self.store.database.write(
                            _save_checkpoint, self.config.name, before, [p for p in page.skipped if p <= before]
                        )
                        failure.checkpoint = before
                raise failure from None
            if page.spans:
                tracing.end_producer_span(page.spans.pop(future, None), getattr(sent, "offset", None), None)
        # Save in the background, strictly in order: the previous save has ended first. The
        # save checks the lock first (a round trip on PostgreSQL), off the send's path too.
        await self._saved()
        if page.last > checkpoint or page.skipped:
            self._saving = asyncio.ensure_future(self._save_checkpoint(page.last, page.skipped))
        else:
            await self._lock.verify()
        return max(checkpoint, page.last)

    async def _save_checkpoint(self, position: int, passed: Sequence[int]) -> None:
        """Check the lock is still held, then move the checkpoint to ``position`` and stamp
        the skips ``passed``. On PostgreSQL a move alone is one autocommitted statement on
        the driver (one round trip, not SQLAlchemy's three: begin, update, commit)."""
        await self._lock.verify()
        database = self.store.database
        if not passed and database.dialect == "postgresql":
            async with database.driver_connection() as conn:
                status = await conn.execute(_PG_SAVE_CHECKPOINT, position, datetime.now(UTC), self.config.name)
            if status == "UPDATE 1":
                return
        await database.write(_save_checkpoint, self.config.name, position, passed)

    async def _acknowledged(self, future: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Wait until ``future`` is done, or :class:`_Stopping` once ``stop`` has been set
        for :data:`STOP_GRACE_S`, or :class:`_Transient` once the Kafka timeout has run out.
        A broker that is down answers nothing until the request timeout, and a stop
        request must not wait that long."""
        loop = asyncio.get_running_loop()
        if not stop.is_set():
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({future, stopping}, timeout=self._remaining(), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if future.done():
                return
            if not stop.is_set():
                raise self._no_answer()
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
            await self._bounded(producer.start())
        except _Transient:
            await stop_quietly(producer, GIVE_UP_GRACE_S, unwind_s=1.0)
            raise
        except (KafkaError, OSError) as exc:
            await stop_quietly(producer, STOP_GRACE_S, unwind_s=1.0)
            if is_transient(exc):
                raise _Transient(describe(exc)) from None
            if needs_new_producer(exc):
                raise _SessionBroken(describe(exc)) from None
            hint = "; if the broker lacks the idempotent producer, turn idempotence off" if self.config.idempotence else ""
            raise RelayError(f"Kafka at {self.config.bootstrap} refused the producer: {describe(exc)}{hint}") from None
        return producer

    async def _ensure_topics(self, wanted: set[str]) -> None:
        """Create the topics of ``wanted`` that do not exist. A topic Kafka refuses to
        create as a bad name (InvalidTopic, e.g. one colliding with an existing topic in
        '.' versus '_') is remembered as a topic problem, so the events routed to it stop
        the relay; any other refusal stops it at once (see :meth:`_created`)."""
        wanted = wanted - self._topics
        if not wanted:
            return
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.config.bootstrap,
                                    request_timeout_ms=self.config.request_timeout_ms)
        try:
            await self._bounded(admin.start())
            existing = set(await self._bounded(admin.list_topics()))
            missing = sorted(wanted - existing)
            if missing:
                response = await self._bounded(admin.create_topics([
                    new_topic(name, self.config.partitions, self.config.replication_factor) for name in missing
                ]))
                created = self._created(response)
                if created:
                    log.info("relay %r created topics %s", self.config.name, ", ".join(created))
        except (KafkaError, OSError) as exc:
            raise _Transient(describe(exc)) from None
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        self._topics |= {topic for topic in wanted if self._topic_problems.get(topic) is None}

    def _created(self, response: Any) -> list[str]:
        """The topics a CreateTopics response says were created. aiokafka returns the
        per-topic errors rather than raising them: one that already exists (another relay
        or a broker's auto-creation made it meanwhile) is fine, a retriable error is
        transient, a name Kafka refuses (InvalidTopic) becomes that topic's problem, and
        any other (e.g. a replication factor larger than the cluster) stops the relay,
        naming the topic."""
        from aiokafka.errors import InvalidTopicError, TopicAlreadyExistsError, for_code

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
            if error is InvalidTopicError:
                self._topic_problems[name] = f"was refused by Kafka: {detail}"
                continue
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
                topic = names[stream_type] = topic_name(prefix, stream_type)
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
                    current = await self._bounded(producer.partitions_for(topic))
                except (KafkaError, OSError) as exc:
                    raise _Transient(describe(exc)) from None
            cached = self._partition_cache.get(topic)
            if cached is None or len(cached[0]) != len(current):
                cached = self._partition_cache[topic] = (sorted(current), {})
            result[topic] = cached
        return result

    async def _send_page(self, producer: Any, page: _Page) -> _Page:
        """Build and send every record of ``page``, one batch per partition at a time; the
        acknowledgements are awaited later (:meth:`_settle`). A record Kafka refuses at send
        time (too large) cuts the page before it: the records before it are sent, and the
        page carries the refusal.

        Each key goes to the partition aiokafka's own partitioner picks for it, and a
        partition's batches are queued in log order, so one stream's events reach the
        topic in version order, as with ``send()`` per record."""
        from aiokafka.errors import KafkaError

        if not page.rows:
            return page
        await self._ensure_topics(set(page.topics))
        self._cut_at_bad_topic(page)  # a topic Kafka refused to create
        if not page.rows:
            return page
        rows, topics = page.rows, page.topics
        wanted = set(topics)
        partitions = await self._partitions(producer, wanted)
        # With an SDK recording, a PRODUCER span per batch sent (facta.tracing.producer_span),
        # ended by _settle with the batch's offset: the rows each batch carries are noted.
        chosen = tracing.tracer()
        spans = page.spans
        # (topic, partition) -> [open batch, index of its first row, records in it, rows in it when traced]
        open_batches: dict[tuple[str, int], list[Any]] = {}
        sent: list[tuple[int, asyncio.Future[Any]]] = []  # (index of the first row carried, future)
        refused: tuple[int, _Refused] | None = None
        # The batch the previous record went to, while the next ones share its key and topic
        # (an append's events are consecutive in the log); None once that batch is closed.
        last: tuple[bytes, str, list[Any]] | None = None

        async def flush(where: tuple[str, int]) -> None:
            nonlocal last
            batch, first, count, traced = open_batches.pop(where)
            batch.close()
            last = None
            if count:
                try:
                    sent.append((first, await self._bounded(producer.send_batch(batch, where[0], partition=where[1]))))
                except KafkaError as exc:
                    raise self._failure(rows[first], exc) from None
                if chosen is not None:
                    spans[sent[-1][1]] = self._producer_span(chosen, where, encoded, rows, traced)

        try:
            encoded = encode_rows(rows, {})
            for index, topic in enumerate(topics):
                key, value, headers, timestamp_ms = encoded[index]
                if len(value) + len(key) <= _SOLO_BYTES and last is not None and last[0] is key and last[1] is topic:
                    same = last[2]  # the same stream's batch: its partition is known
                    if same[0].append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is not None:
                        same[2] += 1
                        if chosen is not None:
                            same[3].append(index)
                        continue
                ordered, by_key = partitions[topic]
                partition = by_key.get(key)
                if partition is None:
                    partition = by_key[key] = partition_for(key, ordered)  # the producer's own choice
                where = (topic, partition)
                if len(value) + len(key) > _SOLO_BYTES:
                    # A big record goes alone through send(), which checks its size and
                    # so names it if it is too large; the partition's batch goes first.
                    if where in open_batches:
                        await flush(where)
                    try:
                        future = await self._bounded(producer.send(
                            topic, value=value, key=key, headers=headers, timestamp_ms=timestamp_ms,
                            partition=partition,
                        ))
                    except KafkaError as exc:
                        failure = self._failure(rows[index], exc)
                        if not isinstance(failure, _Refused):
                            raise failure from None
                        refused = (index, failure)  # the records before it still go out
                        break
                    sent.append((index, future))
                    if chosen is not None:
                        spans[future] = self._producer_span(chosen, where, encoded, rows, [index])
                    continue
                entry = open_batches.get(where)
                if entry is None:
                    entry = open_batches[where] = [producer.create_batch(), index, 0, []]
                if entry[0].append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is None:
                    await flush(where)  # full: queue it and start the next one
                    entry = open_batches[where] = [producer.create_batch(), index, 0, []]
                    if entry[0].append(key=key, value=value, timestamp=timestamp_ms, headers=headers) is None:
                        raise RelayError(f"relay {self.config.name!r}: event at position {rows[index][0]} does not"
                                         " fit in an empty batch")
                entry[2] += 1
                if chosen is not None:
                    entry[3].append(index)
                last = (key, topic, entry)
            for where in list(open_batches):
                await flush(where)
        except BaseException:
            _abandon([_Page(rows, [future for _, future in sent], page.last, spans=spans)])
            raise
        if refused is not None:
            page.cut(*refused)
        sent.sort(key=lambda item: item[0])  # settle in log order: a failure names the earliest record
        page.futures = [future for _, future in sent]
        page.firsts = [first for first, _ in sent]
        return page

    @staticmethod
    def _producer_span(chosen: Any, where: tuple[str, int], encoded: Sequence[Any], rows: Sequence[Sequence[Any]],
                       traced: Sequence[int]) -> Any:
        """The PRODUCER span of a batch sent to ``where`` carrying the rows ``traced``."""
        return tracing.producer_span(chosen, where[0], where[1], [encoded[i][0] for i in traced],
                                     [(rows[i][13], rows[i][14]) for i in traced])

    def _failure(self, row: Sequence[Any], exc: BaseException) -> Exception:
        if is_transient(exc):
            return _Transient(describe(exc))
        if needs_new_producer(exc):
            return _SessionBroken(describe(exc))
        return _Refused(row, f"Kafka rejected its record: {describe(exc)}")

    def _stopped_before(self, refused: _Refused, checkpoint: int) -> RecordRefused:
        """The one-line error of a relay stopped before an event, with the skip command."""
        record = _recorded(refused.row, self.store)
        name = self.config.name
        option = "" if name == "default" else f" --name {shlex.quote(name)}"
        return RecordRefused(
            f"relay {name!r} stopped before event {record.event_id} at position {record.position}"
            f" ({record.event_type}, stream {record.stream_id!r} version {record.version}, stream type"
            f" {record.stream_type!r}): {refused.why}; published up to position {checkpoint}; to publish past it:"
            f" facta relay skip --position {record.position}{option} --reason TEXT",
            relay=name, position=record.position, event_id=record.event_id, checkpoint=checkpoint,
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
    """A page sent to Kafka: the rows it publishes (as :meth:`EventStore.read_log_rows`
    returns them), the futures of its batches, and the position the checkpoint moves to
    once they are acknowledged; the positions it skips (``facta relay skip``), and, when
    it stops before an event, the refusal."""

    rows: Sequence[Sequence[Any]]
    futures: list[asyncio.Future[Any]]
    last: int
    firsts: list[int] = field(default_factory=list)  # per future, the index of the first row it carries
    topics: list[str] = field(default_factory=list)  # per row, its topic
    skipped: list[int] = field(default_factory=list)  # skipped positions at or before ``last``
    refused: _Refused | None = None
    spans: dict[asyncio.Future[Any], Any] = field(default_factory=dict)  # per future, its PRODUCER span (traced)

    def cut(self, index: int, refused: _Refused) -> None:
        """Stop the page before its row ``index``, which cannot be published."""
        self.last = refused.row[0] - 1
        self.rows, self.topics = self.rows[:index], self.topics[:index]
        self.skipped = [p for p in self.skipped if p <= self.last]
        self.refused = refused


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
        for span in page.spans.values():
            tracing.end_producer_span(span, None, None)
        page.spans.clear()
    if isinstance(pages, deque):
        pages.clear()


async def _cancel(task: asyncio.Future[Any] | None) -> None:
    """Cancel a pending read and wait until it has ended (its result or error is dropped)."""
    if task is not None:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it


def _recorded(row: Sequence[Any], store: EventStore) -> RecordedEvent:
    """The :class:`RecordedEvent` of a raw log row (for custom routers and error messages)."""
    return records_from_rows((row,), store.registry)[0]


# -- checkpoints ------------------------------------------------------------------------------


def _checkpoint_row(conn: Connection, name: str) -> Any:
    return conn.execute(
        select(relay_checkpoints.c.position, relay_checkpoints.c.updated_at).where(relay_checkpoints.c.name == name)
    ).first()


_PG_SAVE_CHECKPOINT = "UPDATE facta_relay_checkpoints SET position = $1, updated_at = $2 WHERE name = $3"


def _save_checkpoint(conn: Connection, name: str, position: int, passed: Sequence[int] = ()) -> None:
    """Move relay ``name``'s checkpoint to ``position``, and stamp the skips it ``passed``."""
    now = datetime.now(UTC)
    updated = conn.execute(
        relay_checkpoints.update().where(relay_checkpoints.c.name == name).values(position=position, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(relay_checkpoints.insert().values(name=name, position=position, updated_at=now))
    if passed:
        c = relay_skips.c
        conn.execute(
            update(relay_skips)
            .where(c.relay == name, c.position.in_(list(passed)), c.passed_at.is_(None))
            .values(passed_at=now)
        )


# -- skips ------------------------------------------------------------------------------------


def _skipped_after(conn: Connection, name: str, after: int, limit: int, last: int | None = None) -> list[int]:
    """The first ``limit`` positions after ``after`` (up to ``last``, if given) relay ``name`` skips."""
    c = relay_skips.c
    query = select(c.position).where(c.relay == name, c.position > after)
    if last is not None:
        query = query.where(c.position <= last)
    return [int(p) for p in conn.execute(query.order_by(c.position).limit(limit)).scalars()]


def _skip_rows(conn: Connection, name: str) -> list[Any]:
    return list(conn.execute(select(relay_skips).where(relay_skips.c.relay == name).order_by(relay_skips.c.position)))


def _skip(row: Any) -> RelaySkip:
    return RelaySkip(row.relay, int(row.position), decode_id(row.event_id), row.event_type, row.reason,
                     row.skipped_by, row.skipped_at, row.passed_at)


def _add_skip(conn: Connection, name: str, position: int, reason: str, actor: str | None) -> tuple[Any, bool]:
    """Record that relay ``name`` skips ``position``; returns the skip's row and whether it is new."""
    checkpoint = conn.execute(
        select(relay_checkpoints.c.position).where(relay_checkpoints.c.name == name).with_for_update()
    ).scalar()
    if checkpoint is None:
        known = ", ".join(repr(n) for n in conn.execute(
            select(relay_checkpoints.c.name).order_by(relay_checkpoints.c.name)).scalars()) or "none"
        raise RelayError(f"no relay named {name!r} has run on this store (relays: {known}): nothing to skip")
    c = relay_skips.c
    existing = conn.execute(select(relay_skips).where(c.relay == name, c.position == position)).first()
    if existing is not None:
        return existing, False
    found = conn.execute(select(events.c.event_id, events.c.event_type).where(events.c.position == position)).first()
    if found is None:
        head = conn.execute(select(func.max(events.c.position))).scalar() or 0
        raise RelayError(f"no event at position {position} (the log's head is {head}): nothing to skip")
    if position <= checkpoint:
        raise RelayError(f"relay {name!r} has published position {position} already (its checkpoint is"
                         f" {checkpoint}): only an event after the checkpoint can be skipped")
    conn.execute(insert(relay_skips).values(
        relay=name, position=position, event_id=found.event_id, event_type=found.event_type, reason=reason,
        skipped_by=actor, skipped_at=datetime.now(UTC),
    ))
    return conn.execute(select(relay_skips).where(c.relay == name, c.position == position)).one(), True


def _count_after(conn: Connection, position: int) -> int:
    return int(conn.execute(select(func.count()).select_from(events).where(events.c.position > position)).scalar_one())
