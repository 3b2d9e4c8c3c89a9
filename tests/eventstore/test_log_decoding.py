"""Pages decoded ahead (``iter_log``, the projections' log pages) with the collector
paused: what decodes is kept on the record, what does not raises at ``.event`` as
before, and the collector ends as it was."""

from __future__ import annotations

import gc

import pytest

from facta.domain import DomainEvent, EventDecodeError, EventRegistry, UnknownEventType
from facta.eventstore import EventStore
from facta.eventstore._rows import decode_records
from facta.eventstore.kafka_codec import collector_paused

WRITE, READ = EventRegistry(), EventRegistry()


class Moved(DomainEvent, name="dec.moved", registry=WRITE):
    metres: int


class Noted(DomainEvent, name="dec.noted", registry=WRITE):
    text: str


class Gone(DomainEvent, name="dec.gone", registry=WRITE):
    why: str


class MovedNow(DomainEvent, name="dec.moved", registry=READ):
    metres: int


class NotedNow(DomainEvent, name="dec.noted", registry=READ):  # today's class refuses old payloads
    text: int


@pytest.mark.parametrize("collector_on", [True, False], ids=["gc-on", "gc-off"])
async def test_iter_log_decodes_ahead_and_leaves_failures_to_event(migrated_url: str, collector_on: bool) -> None:
    async with await EventStore.open(migrated_url, registry=WRITE) as store:
        await store.append("s-1", "thing", [Moved(metres=5), Noted(text="hi"), Gone(why="x"), Moved(metres=7)],
                           expected_version=0)
    was = gc.isenabled()
    if not collector_on:
        gc.disable()
    try:
        async with await EventStore.open(migrated_url, registry=READ) as store:
            records = [r async for r in store.iter_log(page_size=3)]
            assert gc.isenabled() is collector_on
    finally:
        if was:
            gc.enable()
    assert [r.event_type for r in records] == ["dec.moved", "dec.noted", "dec.gone", "dec.moved"]
    assert [r._decoded for r in records] == [MovedNow(metres=5), None, None, MovedNow(metres=7)]
    with pytest.raises(EventDecodeError, match="'dec.noted' v1 at position 2: text: Input should be a valid integer"):
        records[1].event  # noqa: B018
    with pytest.raises(UnknownEventType, match="'dec.gone' at position 3"):
        records[2].event  # noqa: B018
    assert records[3].event == MovedNow(metres=7)


def test_collector_paused_restores_the_collector_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    decode_records([])
    assert gc.isenabled()


@pytest.mark.parametrize("text", [
    "0123456789abcdef0123456789ABCDEF", "01234567-89ab-cdef-0123-456789abcdef", "+123456789abcdef0123456789abcdef",
    "-123456789abcdef0123456789abcdef", "zz23456789abcdef0123456789abcdef", "abc", "{0123456789abcdef0123456789abcde}",
])
def test_sqlite_event_ids_read_as_uuid_reads_them(text: str) -> None:
    """SQLite's stored ids become UUIDs by a short cut for 32 hex digits: the same UUID, or
    the same refusal, as ``uuid.UUID(text)``."""
    import uuid

    from facta.eventstore._rows import _uuid_from_hex

    try:
        expected: uuid.UUID | None = uuid.UUID(text)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            _uuid_from_hex(text)
    else:
        got = _uuid_from_hex(text)
        assert (got, str(got), hash(got), got.is_safe) == (expected, str(expected), hash(expected), expected.is_safe)
