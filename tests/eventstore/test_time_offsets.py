"""Issue 10 leftover 7, on SQLite and PostgreSQL: one rule for the UTC offsets of the
times facta stores. An aware time's instant is kept exactly; its offset must be a whole
number of minutes (what ISO 8601 writes) in occurred_at and in payloads alike, else one
line refuses it. A payload datetime comes back with the offset given (it is JSON text);
occurred_at is stored as the instant and always comes back in UTC. CLI times with more
than 6 fractional digits are refused rather than cut to microseconds."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from facta.domain import DomainEvent, PendingEvent
from facta.eventstore import EventStore, InvalidValue, StreamAppend

from ..cli.test_cli import facta

IST = timezone(timedelta(hours=5, minutes=30))
ODD = timezone(timedelta(seconds=30))


class Clocked(DomainEvent, name="offtest.clocked"):
    at: datetime


def sid() -> str:
    return f"o-{uuid.uuid4().hex[:10]}"


async def test_a_minutes_offset_keeps_its_instant_in_both_fields(store: EventStore) -> None:
    when = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=IST)
    stream = sid()
    await store.append(stream, "offtest", [PendingEvent(Clocked(at=when), uuid.uuid4(), when)], expected_version=0)
    (record,) = await store.read_stream(stream)
    # occurred_at: the same instant, always returned in UTC.
    assert record.occurred_at == when
    assert record.occurred_at.utcoffset() == timedelta(0)
    assert record.occurred_at == datetime(2026, 3, 1, 6, 30, 0, 123456, tzinfo=UTC)
    # The payload's datetime: the same instant with the offset given.
    at = record.event.at  # type: ignore[attr-defined]
    assert at == when and at.utcoffset() == timedelta(hours=5, minutes=30)
    assert (await store.get_event(record.event_id)).occurred_at.tzinfo == UTC  # type: ignore[union-attr]


@pytest.mark.parametrize("offset, shown", [
    (timedelta(seconds=30), "+00:00:30"),
    (timedelta(hours=5, minutes=30, seconds=17), "+05:30:17"),
    (-timedelta(microseconds=1), "-00:00:00.000001"),
])
async def test_an_offset_of_seconds_is_refused_in_both_fields(
    store: EventStore, offset: timedelta, shown: str
) -> None:
    odd = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(offset))
    fine = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    stream = sid()
    rule = f"has the UTC offset {shown}, which is not a whole number of minutes; facta stores offsets of whole minutes only"
    with pytest.raises(InvalidValue) as occurred:
        await store.append(stream, "offtest", [PendingEvent(Clocked(at=fine), uuid.uuid4(), odd)], expected_version=0)
    assert str(occurred.value) == f"stream {stream!r}: occurred at {odd.isoformat()} {rule}"
    with pytest.raises(InvalidValue) as payload:
        await store.append(stream, "offtest", [PendingEvent(Clocked(at=odd), uuid.uuid4(), fine)], expected_version=0)
    assert str(payload.value) == f"offtest.clocked: field 'at' {rule}"
    assert await store.stream_version(stream) == 0


async def test_cli_times_with_more_than_microseconds_are_refused(migrated_url: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        stream = sid()
        await store.append(stream, "offtest", [Clocked(at=datetime(2026, 1, 1, tzinfo=UTC))], expected_version=0)
    db = ("--database-url", migrated_url)
    for args in [
        ("audit", "state", stream, "--as-of", "2026-11-22T12:00:00.1234567Z"),
        ("audit", "events", "--since", "2026-11-22T12:00:00,12345678+01:00"),
        ("audit", "events", "--until", "2026-11-22T12:00:00.0000000Z"),
        ("replay", "ride_board", "--from-time", "2026-11-22T12:00:00.1234567Z", "--dry-run"),
    ]:
        result = facta(*args, *db)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert "has more than 6 fractional digits: give at most microseconds" in lines[0], lines
    # Six digits are a time.
    result = facta("audit", "events", "--since", "2026-01-01T00:00:00.000000Z", "--json", *db)
    assert result.returncode == 0 and stream in result.stdout, result.stderr


async def test_cli_times_with_an_offset_of_seconds_are_refused(migrated_url: str) -> None:
    """Python's fromisoformat reads ``+05:30:30``; ISO 8601 has no such offset, and the
    store keeps whole-minute offsets only: a usage error, as for a stored time."""
    async with await EventStore.open(migrated_url) as store:
        stream = sid()
        await store.append(stream, "offtest", [Clocked(at=datetime(2026, 1, 1, tzinfo=UTC))], expected_version=0)
    db = ("--database-url", migrated_url)
    for args, option, value in [
        (("audit", "state", stream, "--as-of"), "--as-of", "2026-11-22T12:00:00+05:30:30"),
        (("audit", "events", "--since"), "--since", "2026-11-22T12:00:00-00:00:01"),
        (("replay", "ride_board", "--dry-run", "--from-time"), "--from-time", "2026-11-22T12:00:00.5+01:00:00.5"),
    ]:
        result = facta(*args, value, *db)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(
            f"facta: error: Invalid value for '{option}': '{value}' has a UTC offset with seconds, which ISO 8601"
            " does not have: give hours and minutes (+05:30)"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    # A whole-minute offset is a time: the window up to now (given at +05:30) holds the event.
    now = datetime.now(UTC).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    result = facta("audit", "events", "--until", now, "--json", *db)
    assert result.returncode == 0, result.stderr
    assert [e["stream_id"] for e in json.loads(result.stdout)["events"]] == [stream]


async def test_every_distinct_occurred_at_is_checked_not_only_the_first(store: EventStore) -> None:
    # The store checks a shared occurred-at object once per append; a different, bad time
    # later in the same stream or in a later stream is still refused before any I/O.
    fine = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    odd = datetime(2026, 3, 1, 12, 0, tzinfo=ODD)
    naive = datetime(2026, 3, 1, 12, 0)
    first, second = sid(), sid()
    good = [PendingEvent(Clocked(at=fine), uuid.uuid4(), fine) for _ in range(3)]
    with pytest.raises(InvalidValue) as later_event:
        await store.append(first, "offtest", [*good, PendingEvent(Clocked(at=fine), uuid.uuid4(), odd)], expected_version=0)
    assert str(later_event.value).startswith(f"stream {first!r}: occurred at {odd.isoformat()} has the UTC offset +00:00:30")
    with pytest.raises(InvalidValue) as later_stream:
        await store.append_many([
            StreamAppend(first, "offtest", good, 0),
            StreamAppend(second, "offtest", [PendingEvent(Clocked(at=fine), uuid.uuid4(), naive)], 0),
        ])
    assert str(later_stream.value) == f"stream {second!r}: occurred at {naive.isoformat()} is naive: give an aware time"
    assert await store.stream_version(first) == 0 and await store.stream_version(second) == 0
