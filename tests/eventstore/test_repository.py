"""Repository: loads through snapshots, as-of-version loads, atomic saves. Both backends."""

from __future__ import annotations

import logging

import pytest

from facta.domain import Aggregate, AggregateState, DomainError, DomainEvent, applies
from facta.eventstore import (
    ConcurrencyError,
    EventStore,
    Repository,
    StreamNotFound,
    StreamTypeMismatch,
    VersionNotFound,
)
from facta.eventstore.errors import InvalidValue
from facta.eventstore.records import Snapshot


class Counted(DomainEvent, name="test.counted"):
    n: int


class Counter(Aggregate, stream_type="counter"):
    class State(AggregateState):
        total: int = 0
        count: int = 0

    @classmethod
    def create(cls, counter_id: str) -> Counter:
        return cls(counter_id)

    def add(self, n: int) -> None:
        if n <= 0:
            raise DomainError(f"counter {self.id}: cannot add {n}")
        self._emit(Counted(n=n))

    @applies(Counted)
    def _counted(self, event: Counted) -> None:
        self.state.total += event.n
        self.state.count += 1


class Spy:
    """Records how many events each stream read returned (``read_from_snapshot``, a
    load's one read, and ``read_stream``)."""

    def __init__(self, store: EventStore) -> None:
        self.reads: list[int] = []
        original_stream, original_load = store.read_stream, store.read_from_snapshot

        async def read_stream(*args: object, **kwargs: object) -> object:
            result = await original_stream(*args, **kwargs)  # type: ignore[arg-type]
            self.reads.append(len(result))
            return result

        async def read_from_snapshot(*args: object, **kwargs: object) -> object:
            snapshot, records = await original_load(*args, **kwargs)  # type: ignore[arg-type]
            self.reads.append(len(records))
            return snapshot, records

        store.read_stream = read_stream  # type: ignore[method-assign,assignment]
        store.read_from_snapshot = read_from_snapshot  # type: ignore[method-assign,assignment]


async def test_save_and_load_round_trip(store: EventStore) -> None:
    repo = Repository(store)
    counter = Counter.create("c-1")
    for n in (1, 2, 3):
        counter.add(n)
    await repo.save(counter, actor="tester")
    assert counter.pending_events == [] and counter.saved_version == 3
    loaded = await repo.get(Counter, "c-1")
    assert (loaded.version, loaded.state.total, loaded.state.count) == (3, 6, 3)
    loaded.add(4)
    await repo.save(loaded)
    assert (await repo.get(Counter, "c-1")).state.total == 10


async def test_stale_aggregate_save_conflicts_and_writes_nothing(store: EventStore) -> None:
    repo = Repository(store)
    counter = Counter.create("c-2")
    counter.add(1)
    await repo.save(counter)
    a, b = await repo.get(Counter, "c-2"), await repo.get(Counter, "c-2")
    a.add(5)
    await repo.save(a)
    b.add(7)
    with pytest.raises(ConcurrencyError, match="expected version 1, actual version 2"):
        await repo.save(b)
    assert (await repo.get(Counter, "c-2")).state.total == 6


async def test_saving_several_aggregates_is_atomic(store: EventStore) -> None:
    repo = Repository(store)
    first, second = Counter.create("c-a"), Counter.create("c-b")
    first.add(1)
    second.add(1)
    await repo.save(first, second)
    stale = await repo.get(Counter, "c-b")
    fresh = await repo.get(Counter, "c-b")
    fresh.add(1)
    await repo.save(fresh)
    one = await repo.get(Counter, "c-a")
    one.add(10)
    stale.add(10)
    with pytest.raises(ConcurrencyError):
        await repo.save(one, stale)
    assert (await repo.get(Counter, "c-a")).state.total == 1


async def test_load_missing_stream_and_wrong_type(store: EventStore) -> None:
    repo = Repository(store)
    with pytest.raises(StreamNotFound, match="'nope' does not exist"):
        await repo.get(Counter, "nope")

    class Other(Aggregate, stream_type="other"):
        @applies(Counted)
        def _c(self, event: Counted) -> None:
            pass

    counter = Counter.create("c-3")
    counter.add(1)
    await repo.save(counter)
    with pytest.raises(StreamTypeMismatch, match="is of stream type 'counter', not 'other'"):
        await repo.get(Other, "c-3")


async def test_load_as_of_version(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=4)
    counter = Counter.create("c-4")
    for n in range(1, 11):
        counter.add(n)
        await repo.save(counter)
    for version in (1, 3, 4, 5, 8, 10):
        past = await repo.get(Counter, "c-4", at_version=version)
        assert (past.version, past.state.total) == (version, sum(range(1, version + 1)))
    with pytest.raises(VersionNotFound, match="'c-4' has 10 events; there is no version 11"):
        await repo.get(Counter, "c-4", at_version=11)
    with pytest.raises(VersionNotFound):
        await repo.get(Counter, "c-4", at_version=0)


async def test_a_long_stream_loads_from_its_snapshot(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=1000)
    counter = Counter.create("c-long")
    for _batch in range(10):
        for _ in range(1000):
            counter.add(1)
        await repo.save(counter)
    counter.add(5)
    await repo.save(counter)
    snapshot = await store.latest_snapshot("c-long")
    assert snapshot is not None and snapshot.version == 10_000

    spy = Spy(store)
    loaded = await repo.get(Counter, "c-long")
    assert (loaded.version, loaded.state.total, loaded.state.count) == (10_001, 10_005, 10_001)
    assert spy.reads == [2], "only the snapshot's own event (to check it) and the one after it are read"

    spy.reads.clear()
    past = await repo.get(Counter, "c-long", at_version=9_500)
    assert (past.version, past.state.total) == (9_500, 9_500)
    assert spy.reads == [501], "an as-of load starts from the newest snapshot at or below it"


async def test_snapshot_of_another_state_version_is_ignored(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=2)
    counter = Counter.create("c-5")
    for n in (1, 2, 3):
        counter.add(n)
    await repo.save(counter)
    assert (await store.latest_snapshot("c-5")) is not None

    class CounterV2(Counter, stream_type="counter"):
        state_version = 2

    spy = Spy(store)
    loaded = await repo.get(CounterV2, "c-5")
    assert (loaded.version, loaded.state.total) == (3, 6)
    assert spy.reads == [3]


async def test_snapshot_is_written_with_the_events_or_not_at_all(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=2)
    counter = Counter.create("c-6")
    counter.add(1)
    await repo.save(counter)
    rival = await repo.get(Counter, "c-6")
    rival.add(1)
    await repo.save(rival)
    counter.add(1)
    counter.add(1)  # version 3 would snapshot at 3, but the stream moved on
    with pytest.raises(ConcurrencyError):
        await repo.save(counter)
    snapshot = await store.latest_snapshot("c-6")
    assert snapshot is not None and snapshot.version == 2
    assert Counter.State.model_validate_json(snapshot.state).total == 2


# -- snapshots that disagree with today's code: passed over, logged, never fatal --------------------

# Every snapshot below holds a state the events do not give (total 999), so a load that
# used it would show it. The stream: add 1, 2, 3 -> total 6, count 3 at version 3.
STALE_SNAPSHOTS = {
    # (state JSON, state_schema, stream_type, version) -> the reason logged (None: not logged)
    "a field State lost": ('{"total": 999, "count": 3, "label": "x"}', "counter.state/v1", "counter", 3,
                           "it does not validate against today's Counter.State: label: Extra inputs are not"
                           " permitted"),
    "a field State gained (with a default)": ('{"total": 999}', "counter.state/v1", "counter", 3,
                                              "it lacks field(s) count (added since?"),
    "a field whose type changed": ('{"total": "999", "count": 3}', "counter.state/v1", "counter", 3,
                                   "it does not validate against today's Counter.State: total: Input should be a"
                                   " valid integer"),
    "a float where an int is": ('{"total": 999.5, "count": 3}', "counter.state/v1", "counter", 3,
                                "it does not validate against today's Counter.State: total:"),
    "another state_version": ('{"total": 999, "count": 3}', "counter.state/v0", "counter", 3, None),
    "another stream type's schema": ('{"total": 999, "count": 3}', "other.state/v1", "counter", 3, None),
    "a row of another stream type": ('{"total": 999, "count": 3}', "counter.state/v1", "other", 3,
                                     "it was stored for stream type 'other', not 'counter'"),
    "ahead of the stream": ('{"total": 999, "count": 3}', "counter.state/v1", "counter", 50,
                            "the stream has no version 50 (its last version is 3)"),
    "JSON that is no object": ('[999, 3]', "counter.state/v1", "counter", 3,
                               "its state is a JSON list, not an object"),
    "JSON null": ('null', "counter.state/v1", "counter", 3, "its state is a JSON NoneType, not an object"),
}


@pytest.mark.parametrize("case", sorted(STALE_SNAPSHOTS))
async def test_a_snapshot_that_disagrees_with_todays_code_is_passed_over_and_logged(
    store: EventStore, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    state, schema, stream_type, version, reason = STALE_SNAPSHOTS[case]
    repo = Repository(store, snapshot_every=None)
    counter = Counter.create("c-stale")
    for n in (1, 2, 3):
        counter.add(n)
    await repo.save(counter)
    from_events = await repo.get(Counter, "c-stale")
    assert (from_events.version, from_events.state) == (3, Counter.State(total=6, count=3))
    await store.save_snapshot(Snapshot("c-stale", stream_type, version, state, schema))

    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="facta.repository"):
        loaded = await Repository(store).get(Counter, "c-stale")
    assert (loaded.version, loaded.state) == (3, from_events.state)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if reason is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warnings[0].startswith(
            f"stream 'c-stale': snapshot at version {version} ({schema}) is not usable and is passed over,"
            f" loading from events: {reason}"
        ), warnings[0]
    # The loaded aggregate saves on top of the stream, and as-of loads agree too.
    loaded.add(4)
    await repo.save(loaded)
    assert (await repo.get(Counter, "c-stale")).state == Counter.State(total=10, count=4)
    assert (await repo.get(Counter, "c-stale", at_version=3)).state == from_events.state


async def test_a_snapshot_that_is_not_json_is_passed_over(store: EventStore, migrated_url: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    repo = Repository(store, snapshot_every=None)
    counter = Counter.create("c-bad")
    counter.add(2)
    await repo.save(counter)
    broken = Snapshot("c-bad", "counter", 1, '{"total": 9', "counter.state/v1")
    # The store refuses to write it, before any I/O, on both dialects.
    with pytest.raises(InvalidValue, match=r"snapshot of 'c-bad' v1: is not valid JSON"):
        await store.save_snapshot(broken)
    assert await store.latest_snapshot("c-bad") is None
    if not migrated_url.startswith("postgresql"):
        # SQLite's text column can still hold it when written around facta (PostgreSQL's
        # jsonb cannot): a load passes it over.
        import sqlite3
        with sqlite3.connect(migrated_url.split("///", 1)[1]) as raw:
            raw.execute(
                "INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
                " VALUES ('c-bad', 1, 'counter', '{\"total\": 9', 'counter.state/v1', '2026-01-01 00:00:00.000000')"
            )
    with caplog.at_level(logging.WARNING, logger="facta.repository"):
        loaded = await repo.get(Counter, "c-bad")
    assert (loaded.version, loaded.state) == (1, Counter.State(total=2, count=1))
    if not migrated_url.startswith("postgresql"):
        assert "stream 'c-bad': snapshot at version 1 (counter.state/v1) is not usable" in caplog.text
        assert "its state is not JSON (Expecting ',' delimiter" in caplog.text


async def test_a_snapshot_of_the_right_schema_on_a_stream_of_another_type_does_not_hide_the_mismatch(
    store: EventStore,
) -> None:
    class Tally(Aggregate, stream_type="tally"):
        class State(AggregateState):
            total: int = 0
            count: int = 0

        @applies(Counted)
        def _c(self, event: Counted) -> None:
            self.state.total += event.n

    repo = Repository(store, snapshot_every=None)
    counter = Counter.create("c-typed")
    counter.add(1)
    await repo.save(counter)
    await store.save_snapshot(Snapshot("c-typed", "tally", 1, '{"total": 5, "count": 1}', "tally.state/v1"))
    with pytest.raises(StreamTypeMismatch, match="is of stream type 'counter', not 'tally'"):
        await repo.get(Tally, "c-typed")


async def test_a_sqlite_load_that_cannot_read_on_the_loop_thread_reads_on_the_read_threads(sqlite_url: str) -> None:
    # The loop thread's read (the snapshot and the first events) is only a shortcut: any
    # SQLite error there (here: a closed connection) hands the whole load to the read threads.
    import sqlite3

    from ..conftest import migrate

    await migrate(sqlite_url)
    async with await EventStore.open(sqlite_url) as store:
        repo = Repository(store, snapshot_every=2)
        counter = Counter.create("c-fallback")
        for n in (1, 2, 3):
            counter.add(n)
        await repo.save(counter)
        closed = sqlite3.connect(":memory:")
        closed.close()
        store._streams._inline = lambda: closed  # type: ignore[attr-defined]
        spy = Spy(store)
        loaded = await repo.get(Counter, "c-fallback")
        assert (loaded.version, loaded.state) == (3, Counter.State(total=6, count=3))
        assert spy.reads == [1], "the snapshot at 3 (the save crossed 2) and its own event"
        assert (await store.latest_snapshot("c-fallback")) is not None
