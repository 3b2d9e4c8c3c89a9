"""The Kafka record codec (:mod:`facta.eventstore.kafka_codec`): the one definition of the
record format the relay writes and the Kafka source reads.

- One record's exact bytes are pinned (key, value, every header in order, timestamp),
  from a :class:`RecordedEvent` and from the raw log rows of both dialects: the format
  the README documents cannot change unnoticed. (The bytes were taken from the relay's
  code before the codec existed.)
- A hypothesis round trip: encode then decode gives back the same event exactly, over
  Unicode ids, the longest values the store takes, times to the microsecond from year 1
  to 9999, optional metadata present and absent.
- On both dialects: every stored event, encoded from the row the relay reads, is the
  record encoded from the event as read, and decodes back to it.
- A page (:func:`encode_rows`, which shares what an append's events share) encodes each
  row as it encodes alone, in SQLite's and PostgreSQL's row forms alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from facta.domain import DomainEvent
from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore.kafka_codec import (
    OPTIONAL_HEADERS,
    REQUIRED_HEADERS,
    KafkaRecord,
    KafkaRecordError,
    decode,
    decode_id,
    encode,
    encode_id,
    encode_row,
    encode_rows,
    encode_time,
    peek,
    utc,
)
from facta.eventstore.relay import kafka_record
from facta.eventstore.validation import INT32, INT64, TEXT_LIMITS

FIELDS = ("position", "event_id", "stream_id", "stream_type", "version", "event_type", "schema_version", "payload",
          "occurred_at", "recorded_at", "actor", "correlation_id", "causation_id", "traceparent", "tracestate")


@dataclass
class Message:
    """A consumer record as aiokafka gives it (the attributes the codec reads)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def message(record: KafkaRecord, offset: int = 7) -> Message:
    return Message("facta.ride", 1, offset, record.key, record.value, list(record.headers))


def fields(record: RecordedEvent) -> list[Any]:
    return [getattr(record, name) for name in FIELDS]


# -- the exact bytes -----------------------------------------------------------------------------

PINNED_EVENT = RecordedEvent(
    9_223_372_036_854_775_807, uuid.UUID("0195f1c2-7d3a-7b4e-9a10-3c5d2e1f0a9b"), "rïde-🚕-42", "ride", 2_147_483_647,
    "ride.trip_ended", 3, '{"fare_minor":1250,"note":"«ü»"}',
    datetime(2026, 11, 22, 11, 0, 0, 123456, tzinfo=UTC), datetime(2026, 11, 22, 11, 0, 1, tzinfo=UTC),
    "zoë", "corr-1", None,
)
# What the relay published for PINNED_EVENT before the codec existed (its kafka_record and
# its hot path, run on the code of main at 4e3056a), byte for byte.
PINNED_RECORD = (
    b"r\xc3\xafde-\xf0\x9f\x9a\x95-42",
    b'{"fare_minor":1250,"note":"\xc2\xab\xc3\xbc\xc2\xbb"}',
    [
        ("event-type", b"ride.trip_ended"),
        ("schema-version", b"3"),
        ("event-id", b"0195f1c2-7d3a-7b4e-9a10-3c5d2e1f0a9b"),
        ("stream-id", b"r\xc3\xafde-\xf0\x9f\x9a\x95-42"),
        ("stream-type", b"ride"),
        ("stream-version", b"2147483647"),
        ("position", b"9223372036854775807"),
        ("occurred-at", b"2026-11-22T11:00:00.123456+00:00"),
        ("recorded-at", b"2026-11-22T11:00:01+00:00"),
        ("actor", b"zo\xc3\xab"),
        ("correlation-id", b"corr-1"),
    ],
    1_795_345_201_000,
)


def test_one_records_bytes_are_pinned() -> None:
    assert tuple(encode(PINNED_EVENT)) == PINNED_RECORD
    assert tuple(kafka_record(PINNED_EVENT)) == PINNED_RECORD, "the relay's public kafka_record is the codec's"
    key, _, headers, _ = encode(PINNED_EVENT)
    assert [name for name, _ in headers] == [*REQUIRED_HEADERS, "actor", "correlation-id"]
    assert key == dict(headers)["stream-id"], "the key (the partition key) is the stream id"


def test_the_raw_rows_of_both_dialects_encode_to_the_pinned_bytes() -> None:
    e = PINNED_EVENT
    common = (e.stream_id, e.stream_type, e.version, e.event_type, e.schema_version, e.payload)
    meta = (e.actor, e.correlation_id, e.causation_id, e.traceparent, e.tracestate)
    # SQLite's driver rows: the event id as 32 hex digits, the times as naive UTC text.
    sqlite_row = (e.position, e.event_id.hex, *common, "2026-11-22 11:00:00.123456", "2026-11-22 11:00:01.000000",
                  *meta)
    # asyncpg's: a UUID and aware datetimes.
    postgres_row = (e.position, e.event_id, *common, e.occurred_at, e.recorded_at, *meta)
    for row in (sqlite_row, postgres_row):
        assert tuple(encode_row(row, {})) == PINNED_RECORD, row


def test_the_pinned_record_decodes_to_its_event() -> None:
    decoded = decode(message(KafkaRecord(*PINNED_RECORD)))
    assert fields(decoded) == fields(PINNED_EVENT)
    assert decoded.occurred_at.tzinfo is UTC and decoded.recorded_at.tzinfo is UTC
    assert peek(message(KafkaRecord(*PINNED_RECORD))) == ("ride.trip_ended", 9_223_372_036_854_775_807)


# -- the round trip ---------------------------------------------------------------------------------

# What the store holds: text without NUL (PostgreSQL refuses it) and without lone
# surrogates (no UTF-8 for them), up to each column's length.
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def text(limit: int, min_size: int = 1) -> st.SearchStrategy[str]:
    return st.one_of(st.text(CHARS, min_size=min_size, max_size=12), st.text(CHARS, min_size=limit, max_size=limit))


times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
                     timezones=st.just(UTC))
optional = {name: st.none() | text(TEXT_LIMITS[name], min_size=0)
            for name in ("actor", "correlation id", "causation id")}
# A W3C trace context (revision 0013): a traceparent, with or without a tracestate (the
# relay sends a tracestate only beside a traceparent, as the store records them).
traceparents = st.builds(lambda t, s, f: f"00-{t:032x}-{s:016x}-{f:02x}", st.integers(1, 2**128 - 1),
                         st.integers(1, 2**64 - 1), st.integers(0, 255))
contexts = st.one_of(st.just((None, None)), st.tuples(traceparents, st.none() | st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=512)))
events = st.builds(
    lambda context, **kw: RecordedEvent(**kw, traceparent=context[0], tracestate=context[1]),
    context=contexts,
    position=st.integers(1, INT64[1]),
    event_id=st.uuids(),
    stream_id=text(TEXT_LIMITS["stream id"]),
    stream_type=text(TEXT_LIMITS["stream type"]),
    version=st.integers(1, INT32[1]),
    event_type=text(TEXT_LIMITS["event type"]),
    schema_version=st.integers(1, INT32[1]),
    payload=st.text(CHARS, max_size=200),
    occurred_at=times,
    recorded_at=times,
    actor=optional["actor"],
    correlation_id=optional["correlation id"],
    causation_id=optional["causation id"],
)

EDGE = RecordedEvent(
    1, uuid.UUID(int=0), "\U0010ffff" * TEXT_LIMITS["stream id"], "ü" * TEXT_LIMITS["stream type"], 1, "🚕", 1, "",
    datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "", "\u2028", "a:b\r\n",
)


@settings(max_examples=300, deadline=None)
@given(record=events)
@example(record=EDGE)
@example(record=PINNED_EVENT)
def test_encode_then_decode_gives_back_the_same_event(record: RecordedEvent) -> None:
    encoded = encode(record)
    decoded = decode(message(encoded))
    assert fields(decoded) == fields(record)
    for name in ("occurred_at", "recorded_at"):
        assert getattr(decoded, name).tzinfo is UTC
        assert getattr(decoded, name).microsecond == getattr(record, name).microsecond
    assert encoded.key == record.stream_id.encode() and encoded.value == record.payload.encode()
    assert encoded.timestamp_ms == int(record.recorded_at.timestamp() * 1000)
    assert [name for name, _ in encoded.headers] == [*REQUIRED_HEADERS] + [
        name for name, value in zip(OPTIONAL_HEADERS, (record.actor, record.correlation_id, record.causation_id,
                                                       record.traceparent, record.tracestate),
                                    strict=True) if value is not None]
    assert peek(message(encoded)) == (record.event_type, record.position)
    # The careful path (taken when a header repeats) decodes the same event.
    repeated = message(encoded)
    repeated.headers.append(("position", dict(encoded.headers)["position"]))
    assert fields(decode(repeated)) == fields(record)


def _row(record: RecordedEvent, dialect: str, offset_minutes: int) -> tuple[Any, ...]:
    """``record`` as ``read_log_rows`` gives it: SQLite's hex id and naive text times, or
    asyncpg's UUID and aware times (here at an offset: the same instant, another zone)."""
    if dialect == "sqlite":
        event_id: Any = record.event_id.hex
        occurred: Any = record.occurred_at.replace(tzinfo=None).isoformat(" ", "microseconds")
        recorded: Any = record.recorded_at.replace(tzinfo=None).isoformat(" ", "microseconds")
    else:
        zone = timezone(timedelta(minutes=offset_minutes))
        event_id = record.event_id
        try:
            occurred, recorded = record.occurred_at.astimezone(zone), record.recorded_at.astimezone(zone)
        except OverflowError:  # no such local time at the ends of the calendar
            occurred, recorded = record.occurred_at, record.recorded_at
    return tuple(getattr(record, name) for name in FIELDS[:1]) + (event_id,) + tuple(
        getattr(record, name) for name in FIELDS[2:8]) + (occurred, recorded) + tuple(
        getattr(record, name) for name in FIELDS[10:])


@settings(max_examples=150, deadline=None)
@given(page=st.lists(st.tuples(events, st.integers(0, 5), st.integers(-23 * 60 - 59, 23 * 60 + 59)), min_size=1,
                     max_size=12),
       dialect=st.sampled_from(["sqlite", "postgresql"]))
def test_a_page_encodes_each_row_as_it_encodes_alone(page: list[tuple[RecordedEvent, int, int]], dialect: str) -> None:
    # Rows that share what an append's events share (stream, types, times) with an earlier
    # row, or not: ``share`` picks how much of the first record each row takes over.
    first = page[0][0]
    records = []
    for record, share, _ in page:
        taken = {"stream_id": first.stream_id, "stream_type": first.stream_type, "event_type": first.event_type,
                 "schema_version": first.schema_version, "occurred_at": first.occurred_at,
                 "recorded_at": first.recorded_at}
        own = {name: getattr(record, name) for name in FIELDS}
        records.append(RecordedEvent(**(own | dict(list(taken.items())[: share + 1] if share else []))))
    rows = [_row(record, dialect, offset) for record, (_, _, offset) in zip(records, page, strict=True)]
    encoded = encode_rows(rows)
    assert encoded == [encode_row(row, {}) for row in rows]
    for record, one in zip(records, encoded, strict=True):
        assert KafkaRecord(*one) == encode(record)
        assert fields(decode(message(KafkaRecord(*one)))) == fields(record)


@given(moment=times, offset_minutes=st.integers(-23 * 60 - 59, 23 * 60 + 59))
def test_the_time_codec_keeps_the_instant_to_the_microsecond(moment: datetime, offset_minutes: int) -> None:
    text_, millis = encode_time(moment)
    back = utc(text_.decode())
    assert back == moment and back.tzinfo is UTC and back.microsecond == moment.microsecond
    assert millis == int(moment.timestamp() * 1000)
    # The other forms a stored time takes read back as the same instant, in UTC.
    naive = moment.replace(tzinfo=None)
    assert utc(naive) == moment and utc(naive.isoformat(" ", "microseconds")) == moment
    try:
        shifted = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    except OverflowError:  # no such local time at the ends of the calendar
        return
    assert utc(shifted) == moment and utc(shifted).tzinfo is UTC
    assert encode_time(shifted) == (text_, millis), "a time is written in UTC whatever its offset"


@given(value=st.uuids())
def test_the_id_codec_reads_back_every_form_of_an_event_id(value: uuid.UUID) -> None:
    text_ = str(value).encode()
    assert encode_id(value) == encode_id(value.hex) == text_
    assert decode_id(text_.decode()) == decode_id(value.hex) == decode_id(value) == value


def test_bad_records_are_one_line_errors_naming_the_record() -> None:
    good = encode(PINNED_EVENT)
    with pytest.raises(KafkaRecordError, match=r"^Kafka record facta\.ride\[1\] offset 7 is not a facta event: it"
                                               r" lacks the header 'event-id'$"):
        decode(Message("facta.ride", 1, 7, good.key, good.value, [h for h in good.headers if h[0] != "event-id"]))
    with pytest.raises(KafkaRecordError, match=r"offset 7 has a malformed 'occurred-at' header: 'soon'$"):
        decode(Message("facta.ride", 1, 7, good.key, good.value,
                       [(n, b"soon" if n == "occurred-at" else v) for n, v in good.headers]))
    with pytest.raises(KafkaRecordError, match=r"two different 'actor' headers$"):
        decode(Message("facta.ride", 1, 7, good.key, good.value, [*good.headers, ("actor", b"someone else")]))
    with pytest.raises(KafkaRecordError, match=r"its 'stream-id' header is not UTF-8 text$"):
        decode(Message("facta.ride", 1, 7, good.key, good.value,
                       [(n, b"\xff" if n == "stream-id" else v) for n, v in good.headers]))
    with pytest.raises(KafkaRecordError, match="it has no value"):
        decode(Message("facta.ride", 1, 7, good.key, None, good.headers))
    assert peek(Message("t", 0, 0, None, None, [("position", b"x"), ("event-type", b"\xff")])) == (None, None)
    with pytest.raises(TypeError, match="expected a datetime or ISO 8601 text, got int 5"):
        utc(5)  # type: ignore[arg-type]


# -- what the stores hold, on both dialects --------------------------------------------------------


class Noted(DomainEvent, name="codec.noted", version=2):
    text: str
    amount_minor: int


async def test_stored_events_encode_alike_from_their_rows_and_decode_back(store: EventStore) -> None:
    """The relay encodes the driver rows of ``read_log_rows`` (SQLite: hex ids and naive
    text times; PostgreSQL: UUIDs and aware times); the Kafka source decodes what it
    wrote. Both must give the event as the store reads it."""
    streams = ["n-1", "nöte-ümlaut", "笔记-3", "s" * TEXT_LIMITS["stream id"]]
    for i, stream in enumerate(streams):
        metadata: dict[str, Any] = ({"actor": "zoë", "correlation_id": "c" * TEXT_LIMITS["correlation id"]} if i % 2
                                    else {"causation_id": f"cause-{i}"})
        await store.append(stream, "note", [Noted(text=f"«{stream}» #{k}", amount_minor=k - 7) for k in range(2)],
                           expected_version=0, **metadata)
    stored = await store.read_log(limit=100)
    rows = await store.read_log_rows(0, 100)
    assert len(stored) == len(rows) == 2 * len(streams)
    times: dict[Any, tuple[bytes, int]] = {}
    for record, row in zip(stored, rows, strict=True):
        encoded = KafkaRecord(*encode_row(row, times))
        assert encoded == encode(record)
        decoded = decode(message(encoded, record.position), store.registry)
        assert fields(decoded) == fields(record)
        assert decoded.event == record.event
        assert dict(encoded.headers)["occurred-at"] == record.occurred_at.isoformat().encode()
