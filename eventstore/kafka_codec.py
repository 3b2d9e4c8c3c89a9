"""The Kafka record format: one codec for what the relay writes and the Kafka source reads.

A stored event becomes one Kafka record (the README's table):

- key: the stream id, UTF-8. It is also the partition key: one aggregate's events share a
  partition, in version order.
- value: the event's JSON payload as stored, UTF-8.
- timestamp: recorded-at, in ms since the epoch (:func:`encode_time`).
- headers (UTF-8 text), in this order: :data:`REQUIRED_HEADERS`, then those of
  :data:`OPTIONAL_HEADERS` whose value is set. Times are ISO 8601 in UTC
  (``2026-11-22T11:00:00.123456+00:00``; no fraction when it is zero), the event id is
  the UUID's hyphenated text, numbers are decimal.

Encoding: :func:`encode` (from a :class:`RecordedEvent`), :func:`encode_row` (from a
row as :meth:`EventStore.read_log_rows` returns it) and :func:`encode_rows` (a page of
such rows: the relay's hot path, and the one definition the other two call). Decoding:
:func:`decode` (a consumer record back to the :class:`RecordedEvent`, or a one-line
:class:`KafkaRecordError` naming the record) and :func:`peek` (the ``event-type`` and
``position`` headers alone, which decide whether a record needs decoding at all).

The one time codec is :func:`encode_time` (a time to its header text and epoch ms) and
:func:`utc` (a stored or header time back to an aware UTC datetime; the store's column
type reads its times with it too). The one id codec is :func:`encode_id` and
:func:`decode_id`. Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from facta.domain import EventRegistry, default_registry
from facta.errors import KafkaRecordError

from .records import RecordedEvent

__all__ = [
    "OPTIONAL_HEADERS",
    "REQUIRED_HEADERS",
    "KafkaRecord",
    "KafkaRecordError",
    "decode",
    "decode_id",
    "describe",
    "encode",
    "encode_id",
    "encode_row",
    "encode_rows",
    "encode_time",
    "peek",
    "utc",
]

# The headers of every record the relay publishes, always present, then present when set.
REQUIRED_HEADERS = (
    "event-type", "schema-version", "event-id", "stream-id", "stream-type", "stream-version", "position",
    "occurred-at", "recorded-at",
)
OPTIONAL_HEADERS = ("actor", "correlation-id", "causation-id", "traceparent", "tracestate")

# A page's memo of encoded times: an append's events share their times.
TimeMemo = dict[Any, tuple[bytes, int]]


class KafkaRecord(NamedTuple):
    """A stored event as a Kafka record. ``key`` (the stream id) is also the partition key."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


# -- the time codec ---------------------------------------------------------------------------


def utc(value: datetime | str) -> datetime:
    """A stored or transmitted time as an aware UTC datetime: an aware datetime converted,
    a naive one (SQLite's columns) read as UTC, and ISO 8601 text (SQLite's raw rows,
    ``YYYY-MM-DD HH:MM:SS.ffffff``; the record headers) parsed, naive text read as UTC.
    Microseconds are kept. Raises ValueError for text that is no ISO 8601 time, TypeError
    for anything else."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        return _utc_text(value)
    raise TypeError(f"expected a datetime or ISO 8601 text, got {type(value).__name__} {value!r}")


@functools.lru_cache(maxsize=4096)  # an append's events share their times
def _utc_text(text: str) -> datetime:
    """:func:`utc` of text (memoised: the decoding hot path calls it directly)."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_time(value: datetime | str) -> tuple[bytes, int]:
    """A time's header text (ISO 8601 in UTC, ``datetime.isoformat``) and its record
    timestamp (ms since the epoch, truncated as ``int(seconds * 1000)``). ``value`` is
    read as :func:`utc` reads it."""
    moment = utc(value)
    return moment.isoformat().encode(), int(moment.timestamp() * 1000)


# -- the id codec -----------------------------------------------------------------------------


def encode_id(value: uuid.UUID | str) -> bytes:
    """An event id's header text, the hyphenated UUID; from a UUID or from SQLite's 32 hex digits."""
    if isinstance(value, str) and len(value) == 32:  # SQLite: hex digits
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}".encode()
    return str(value).encode()


def decode_id(value: uuid.UUID | str) -> uuid.UUID:
    """An event id from its header text, SQLite's hex digits or a driver's UUID. Raises
    ValueError for text that is no UUID."""
    return uuid.UUID(str(value))


# -- encoding -----------------------------------------------------------------------------------


def encode(record: RecordedEvent, times: TimeMemo | None = None) -> KafkaRecord:
    """The Kafka key, value, headers and timestamp (ms) of a stored event (the module's
    docstring). ``times`` memoises encoded times across a page (time -> (header text,
    epoch ms)); an append's events share them."""
    row = (record.position, record.event_id, record.stream_id, record.stream_type, record.version,
           record.event_type, record.schema_version, record.payload, record.occurred_at, record.recorded_at,
           record.actor, record.correlation_id, record.causation_id, record.traceparent, record.tracestate)
    return KafkaRecord(*encode_rows((row,), {} if times is None else times)[0])


def encode_row(row: Sequence[Any], times: TimeMemo) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    """:func:`encode` of a row as :meth:`EventStore.read_log_rows` returns it (columns in
    :class:`RecordedEvent`'s field order; on SQLite the event id as hex digits and the
    times as naive UTC text), without building the :class:`RecordedEvent`; as a plain
    tuple (key, value, headers, timestamp in ms). A page is faster through :func:`encode_rows`."""
    return encode_rows((row,), times)[0]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic garbage collector off (back on after it only if it
    was on), for a page's allocations, which form no cycles. Counted one by one, a page's
    tracked objects (a record, its UUID, an event and its field set per event) set off
    a young collection every 700 of them, each promoting the live page towards the old
    generation, so full collections, which walk every imported module's objects (about
    87,000), ran every 15-20 pages of 1,000; paused, a page adds one young collection
    (ARCHITECTURE.md, Reads and decoding). Defined here, below the row decoder, so that
    the relay's page encoder, the log readers and the appliers share it."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def encode_rows(
    rows: Iterable[Sequence[Any]], times: TimeMemo | None = None
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]:
    """:func:`encode_row` of every row of a page, in order: the relay's hot path, and the
    one definition of the record format (:func:`encode` and :func:`encode_row` call it).

    What an append's events share is encoded once per call: the key and ``stream-id``
    header of a stream, the ``event-type``, ``stream-type`` and ``schema-version`` headers,
    and the two time headers (``times`` memoises the encoded times across calls). The
    records then share those bytes and header pairs; aiokafka only reads them.

    The collector is paused while a page is built: its records cannot form cycles, and
    counted one by one they would set off a young collection every 700 objects, promoting
    the pages in flight until full collections (which walk every imported module's
    objects) ran every few pages."""
    with collector_paused():
        return _encode_rows(rows, {} if times is None else times)


def _encode_rows(rows: Iterable[Sequence[Any]], times: TimeMemo) -> list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]:
    keys: dict[str, tuple[bytes, tuple[str, bytes]]] = {}
    event_types: dict[str, tuple[str, bytes]] = {}  # value -> header pair, for each shared header
    schema_versions: dict[int, tuple[str, bytes]] = {}
    stream_types: dict[str, tuple[str, bytes]] = {}
    occurred_headers: dict[Any, tuple[str, bytes]] = {}
    recorded_headers: dict[Any, tuple[tuple[str, bytes], int]] = {}
    encoded = []
    for (position, event_id, stream_id, stream_type, version, event_type, schema_version, payload,
         occurred_at, recorded_at, actor, correlation_id, causation_id, traceparent, tracestate) in rows:
        stream = keys.get(stream_id)
        if stream is None:
            key = stream_id.encode()
            stream = keys[stream_id] = (key, ("stream-id", key))
        type_header = event_types.get(event_type)
        if type_header is None:
            type_header = event_types[event_type] = ("event-type", event_type.encode())
        schema_header = schema_versions.get(schema_version)
        if schema_header is None:
            schema_header = schema_versions[schema_version] = ("schema-version", str(schema_version).encode())
        stream_type_header = stream_types.get(stream_type)
        if stream_type_header is None:
            stream_type_header = stream_types[stream_type] = ("stream-type", stream_type.encode())
        occurred = occurred_headers.get(occurred_at)
        if occurred is None:
            occurred = occurred_headers[occurred_at] = ("occurred-at", _memo_time(times, occurred_at)[0])
        recorded = recorded_headers.get(recorded_at)
        if recorded is None:
            text, ms = _memo_time(times, recorded_at)
            recorded = recorded_headers[recorded_at] = (("recorded-at", text), ms)
        if isinstance(event_id, str) and len(event_id) == 32:  # SQLite: hex digits (encode_id, inlined)
            id_text = f"{event_id[:8]}-{event_id[8:12]}-{event_id[12:16]}-{event_id[16:20]}-{event_id[20:]}".encode()
        else:
            id_text = str(event_id).encode()
        # REQUIRED_HEADERS, in order, then OPTIONAL_HEADERS that are set.
        headers = [type_header, schema_header, ("event-id", id_text), stream[1], stream_type_header,
                   ("stream-version", str(version).encode()), ("position", str(position).encode()), occurred,
                   recorded[0]]
        if actor is not None:
            headers.append(("actor", actor.encode()))
        if correlation_id is not None:
            headers.append(("correlation-id", correlation_id.encode()))
        if causation_id is not None:
            headers.append(("causation-id", causation_id.encode()))
        if traceparent is not None:  # the W3C propagation format's own header names
            headers.append(("traceparent", traceparent.encode()))
            if tracestate is not None:
                headers.append(("tracestate", tracestate.encode()))
        encoded.append((stream[0], payload.encode(), headers, recorded[1]))
    return encoded


def _memo_time(times: TimeMemo, value: Any) -> tuple[bytes, int]:
    found = times.get(value)
    if found is None:
        found = times[value] = encode_time(value)
    return found


# -- decoding -----------------------------------------------------------------------------------


def describe(message: Any) -> str:
    """How errors name a consumer record: ``Kafka record <topic>[<partition>] offset <offset>``."""
    return f"Kafka record {message.topic}[{message.partition}] offset {message.offset}"


def peek(message: Any) -> tuple[str | None, int | None]:
    """The ``event-type`` and ``position`` headers of a consumer record, read without
    decoding anything else (None where absent or malformed: :func:`decode` then says what
    is wrong)."""
    event_type: str | None = None
    position: int | None = None
    for name, value in message.headers or ():
        if name == "event-type" and event_type is None:
            with contextlib.suppress(UnicodeDecodeError, TypeError):
                event_type = bytes(value).decode()
        elif name == "position" and position is None:
            with contextlib.suppress(ValueError, TypeError):
                position = int(bytes(value))
    return event_type, position


def decode(message: Any, registry: EventRegistry = default_registry) -> RecordedEvent:
    """The :class:`RecordedEvent` a relayed consumer record carries (anything with
    ``topic``, ``partition``, ``offset``, ``value`` and ``headers`` as aiokafka gives
    them): its metadata from the headers, its payload the record's value. Headers other
    than the relay's are ignored; a missing, repeated (with another value) or malformed
    one, or a missing value, is a :class:`KafkaRecordError` naming the record."""
    # The hot path (rebuilds): one pass, no checks beyond what building the record does.
    # Anything unusual (a missing, repeated or malformed header) takes the careful path,
    # which says what is wrong.
    try:
        raw = message.headers
        h = {name: bytes(value).decode() for name, value in raw}
        if len(h) == len(raw):
            return RecordedEvent(
                int(h["position"]), decode_id(h["event-id"]), h["stream-id"], h["stream-type"],
                int(h["stream-version"]), h["event-type"], int(h["schema-version"]), bytes(message.value).decode(),
                _utc_text(h["occurred-at"]), _utc_text(h["recorded-at"]),
                h.get("actor"), h.get("correlation-id"), h.get("causation-id"), h.get("traceparent"),
                h.get("tracestate"), registry,
            )
    except Exception:  # the careful path below names the problem
        pass
    return _decode_carefully(message, registry)


def _decode_carefully(message: Any, registry: EventRegistry) -> RecordedEvent:
    where = describe(message)
    headers: dict[str, str] = {}
    for name, value in message.headers or ():
        if name not in REQUIRED_HEADERS and name not in OPTIONAL_HEADERS:
            continue
        try:
            text = bytes(value).decode()
        except (UnicodeDecodeError, TypeError):
            raise KafkaRecordError(f"{where} is not a facta event: its {name!r} header is not UTF-8 text") from None
        if headers.setdefault(name, text) != text:
            raise KafkaRecordError(f"{where} is not a facta event: it has two different {name!r} headers")
    missing = [name for name in REQUIRED_HEADERS if name not in headers]
    if missing:
        raise KafkaRecordError(
            f"{where} is not a facta event: it lacks the header{'s' if len(missing) > 1 else ''}"
            f" {', '.join(repr(m) for m in missing)}"
        )
    if message.value is None:
        raise KafkaRecordError(f"{where} is not a facta event: it has no value (payload)")
    try:
        payload = bytes(message.value).decode()
    except UnicodeDecodeError:
        raise KafkaRecordError(f"{where} is not a facta event: its value is not UTF-8 JSON") from None

    def parsed(name: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(headers[name])
        except (ValueError, TypeError):
            raise KafkaRecordError(f"{where} has a malformed {name!r} header: {headers[name]!r}") from None

    return RecordedEvent(
        position=parsed("position", int),
        event_id=parsed("event-id", decode_id),
        stream_id=headers["stream-id"],
        stream_type=headers["stream-type"],
        version=parsed("stream-version", int),
        event_type=headers["event-type"],
        schema_version=parsed("schema-version", int),
        payload=payload,
        occurred_at=parsed("occurred-at", utc),
        recorded_at=parsed("recorded-at", utc),
        actor=headers.get("actor"),
        correlation_id=headers.get("correlation-id"),
        causation_id=headers.get("causation-id"),
        traceparent=headers.get("traceparent"),
        tracestate=headers.get("tracestate"),
        registry=registry,
    )
