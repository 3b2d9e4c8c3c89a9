"""Pages decoded ahead (``iter_log``, the projections' log pages) with the collector
paused: what decodes is kept on the record, what does not raises at ``.event`` as
before, and the collector ends as it was."""

from __future__ import annotations

import gc

import pytest

from facta.domain import DomainEvent, EventDecodeError, EventRegistry, UnknownEventType
from facta.eventstore import EventStore
from facta.eventstore._rows import collector_paused, decode_records

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
