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

Encoding: :func:`encode` (from a :class:`RecordedEvent`) and :func:`encode_row` (from a
row as :meth:`EventStore.read_log_rows` returns it: the relay's hot path). Decoding:
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
import uuid
from collections.abc import Callable, Sequence
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
    "encode_time",
    "peek",
    "utc",
]

# The headers of every record the relay publishes, always present, then present when set.
REQUIRED_HEADERS = (
    "event-type", "schema-version", "event-id", "stream-id", "stream-type", "stream-version", "position",
    "occurred-at", "recorded-at",
)
OPTIONAL_HEADERS = ("actor", "correlation-id", "causation-id")

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


def encode(record: RecordedEvent, times: TimeMemo | None = None) -> KafkaRecord:
    """The Kafka key, value, headers and timestamp (ms) of a stored event (the module's
    docstring). ``times`` memoises encoded times across a page (time -> (header text,
    epoch ms)); an append's events share them."""
    times = {} if times is None else times
    occurred = times.get(record.occurred_at)
    if occurred is None:
        occurred = times[record.occurred_at] = encode_time(record.occurred_at)
    recorded = times.get(record.recorded_at)
    if recorded is None:
        recorded = times[record.recorded_at] = encode_time(record.recorded_at)
    key = record.stream_id.encode()
    headers = _headers(
        record.event_type, record.schema_version, encode_id(record.event_id), key, record.stream_type,
        record.version, record.position, occurred[0], recorded[0], record.actor, record.correlation_id,
        record.causation_id,
    )
    return KafkaRecord(key, record.payload.encode(), headers, recorded[1])


def encode_row(row: Sequence[Any], times: TimeMemo) -> tuple[bytes, bytes, list[tuple[str, bytes]], int]:
    """:func:`encode` of a row as :meth:`EventStore.read_log_rows` returns it (columns in
    :class:`RecordedEvent`'s field order; on SQLite the event id as hex digits and the
    times as naive UTC text), without building the :class:`RecordedEvent`; as a plain
    tuple (key, value, headers, timestamp in ms): the relay's hot path unpacks it."""
    (position, event_id, stream_id, stream_type, version, event_type, schema_version, payload,
     occurred_at, recorded_at, actor, correlation_id, causation_id) = row
    occurred = times.get(occurred_at)
    if occurred is None:
        occurred = times[occurred_at] = encode_time(occurred_at)
    recorded = times.get(recorded_at)
    if recorded is None:
        recorded = times[recorded_at] = encode_time(recorded_at)
    key = stream_id.encode()
    headers = _headers(
        event_type, schema_version, encode_id(event_id), key, stream_type, version, position,
        occurred[0], recorded[0], actor, correlation_id, causation_id,
    )
    return key, payload.encode(), headers, recorded[1]


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
                h.get("actor"), h.get("correlation-id"), h.get("causation-id"), registry,
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
        registry=registry,
    )
