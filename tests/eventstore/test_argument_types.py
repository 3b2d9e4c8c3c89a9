"""Issue 10 leftovers 4 and 6, on SQLite and PostgreSQL: empty batches are the right
empty answer with no I/O, and a wrong Python type given to the public API is one
InvalidValue line naming the argument, the value and what is expected, before any I/O."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from facta.domain import Aggregate, AggregateState, DomainEvent, EventRegistryError, applies, default_registry
from facta.eventstore import EventStore, InvalidValue, Repository, Snapshot, StreamAppend, audit
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import ProjectionRunner, handles, reacts_to
from facta.projections.replay import ReplayFrom, plan_replay, replay
from facta.projections.runner import KafkaSettings, RunnerConfig


class Ticked(DomainEvent, name="argtest.ticked"):
    n: int = 1


class Ticker(Aggregate, stream_type="argtest_ticker"):
    class State(AggregateState):
        ticks: int = 0

    def tick(self) -> None:
        self._emit(Ticked())

    @applies(Ticked)
    def _ticked(self, event: Ticked) -> None:
        self.state.ticks += event.n


def sid() -> str:
    return f"a-{uuid.uuid4().hex[:10]}"


class NoIO:
    """Makes every database call of ``store`` fail; ``calls`` counts the attempts."""

    def __init__(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise AssertionError("I/O attempted")

        for name in ("read", "write", "driver_connection", "sqlite_write"):
            monkeypatch.setattr(store.database, name, fail)


@pytest.fixture
def no_io(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> NoIO:
    return NoIO(store, monkeypatch)


async def refused(call: Any, *parts: str) -> str:
    """``call()`` raises one line of InvalidValue holding every part."""
    with pytest.raises(InvalidValue) as caught:
        result = call()
        if hasattr(result, "__await__"):
            await result
    message = str(caught.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


# -- item 4: empty batches ----------------------------------------------------------------------


async def test_append_many_of_nothing_is_an_empty_list_without_io(store: EventStore, no_io: NoIO) -> None:
    assert await store.append_many([]) == []
    assert await store.append_many(()) == []
    assert no_io.calls == 0


async def test_append_many_of_only_snapshots_is_refused(store: EventStore, no_io: NoIO) -> None:
    snap = Snapshot("s", 1, "argtest_ticker", "{}", "argtest_ticker@1")
    await refused(lambda: store.append_many([], snapshots=[snap]), "1 snapshot(s) and no appends", "save_snapshot")
    assert no_io.calls == 0


async def test_an_append_with_no_events_is_refused(store: EventStore) -> None:
    stream = sid()
    await refused(lambda: store.append(stream, "argtest_ticker", [], expected_version=0), f"{stream!r} has no events")
    await refused(lambda: store.append_many([StreamAppend(stream, "argtest_ticker", (), None)]), "has no events")
    assert await store.stream_version(stream) == 0


async def test_saving_nothing_and_empty_filters(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "argtest_ticker", [Ticked()], expected_version=0)
    assert await Repository(store).save() == []
    # An empty list of names matches no event, the same on both dialects.
    assert (await audit.events(store, types=[])).events == []
    assert (await audit.events(store, stream_types=())).events == []
    assert await store.read_log(0, 10, event_types=[]) == []
    assert [r.stream_id for r in await store.read_log(0, 10)] == [stream]


# -- item 6: wrong Python types ------------------------------------------------------------------


async def test_append_takes_a_list_of_events(store: EventStore, no_io: NoIO) -> None:
    await refused(lambda: store.append(sid(), "argtest_ticker", Ticked(), expected_version=0),  # type: ignore[arg-type]
                  "events must be a list of events", "got Ticked", "wrap a single one in a list")
    await refused(lambda: store.append(sid(), "argtest_ticker", [Ticked(), "x"], expected_version=0),  # type: ignore[list-item]
                  "events[1] must be an event (DomainEvent or PendingEvent)", "got str 'x'")
    await refused(lambda: store.append(sid(), "argtest_ticker", [Ticked()], expected_version=True),
                  ": expected version must be an integer, got bool True")
    await refused(lambda: store.append(sid(), "argtest_ticker", [Ticked()], expected_version=1.0),  # type: ignore[arg-type]
                  ": expected version must be an integer, got float 1.0")
    assert no_io.calls == 0


async def test_append_many_takes_stream_appends(store: EventStore, no_io: NoIO) -> None:
    await refused(lambda: store.append_many([(sid(), "argtest_ticker", [Ticked()], 0)]),  # type: ignore[list-item]
                  "appends[0] must be a StreamAppend, got tuple")
    await refused(lambda: store.append_many(StreamAppend(sid(), "argtest_ticker", [Ticked()], 0)),  # type: ignore[arg-type]
                  "appends must be a list of StreamAppends, got StreamAppend")
    await refused(lambda: store.append_many({StreamAppend(sid(), "argtest_ticker", (Ticked(),), 0)}),  # type: ignore[arg-type]
                  "appends must be a list of StreamAppends, got set")
    await refused(lambda: store.append_many([StreamAppend(sid(), "argtest_ticker", Ticked(), 0)]),  # type: ignore[arg-type]
                  "appends[0].events must be a list of events")
    await refused(lambda: store.append_many([StreamAppend(sid(), "argtest_ticker", [Ticked()], False)]),
                  ": expected version must be an integer, got bool False")
    assert no_io.calls == 0


async def test_tuples_are_accepted_as_sequences(store: EventStore) -> None:
    a, b = sid(), sid()
    results = await store.append_many((StreamAppend(a, "argtest_ticker", (Ticked(n=2), Ticked(n=3)), 0),
                                       StreamAppend(b, "argtest_ticker", (Ticked(n=5),), 0)))
    assert [(r.stream_id, r.first_version, r.last_version) for r in results] == [(a, 1, 2), (b, 1, 1)]
    await store.append(a, "argtest_ticker", (Ticked(n=7),), expected_version=2)
    assert [r.event.n for r in await store.read_stream(a)] == [2, 3, 7]  # type: ignore[attr-defined]
    assert (await Repository(store).get(Ticker, a)).state.ticks == 12


@pytest.mark.parametrize("as_of, says", [
    ("2026-01-01T00:00:00Z", "as_of must be an aware datetime or None, got str '2026-01-01T00:00:00Z'"),
    (date(2026, 1, 1), "as_of must be an aware datetime or None, got date datetime.date(2026, 1, 1)"),
    (0, "as_of must be an aware datetime or None, got int 0"),
])
async def test_state_at_takes_a_datetime(store: EventStore, no_io: NoIO, as_of: Any, says: str) -> None:
    await refused(lambda: audit.state_at(store, "s", as_of=as_of), says)
    assert no_io.calls == 0


async def test_audit_events_takes_datetimes(store: EventStore, no_io: NoIO) -> None:
    await refused(lambda: audit.events(store, since="2026-01-01"),  # type: ignore[arg-type]
                  "since must be an aware datetime or None, got str '2026-01-01'", "fromisoformat")
    await refused(lambda: audit.events(store, until=1_700_000_000),  # type: ignore[arg-type]
                  "until must be an aware datetime or None, got int 1700000000")
    await refused(lambda: store.first_position_at("2026-01-01"),  # type: ignore[arg-type]
                  "when must be an aware datetime, got str")
    assert no_io.calls == 0


async def test_repository_arguments(store: EventStore, no_io: NoIO) -> None:
    await refused(lambda: Repository(store, snapshot_every=1.5),  # type: ignore[arg-type]
                  "snapshot_every must be an integer or None, got float 1.5")
    await refused(lambda: Repository(store, snapshot_every=True), "snapshot_every must be an integer or None, got bool True")
    await refused(lambda: Repository("sqlite:///x.db"), "store must be an EventStore, got str")  # type: ignore[arg-type]
    repo = Repository(store)
    await refused(lambda: repo.get(dict, "x"),  # type: ignore[type-var]
                  "cls must be an Aggregate subclass declared with stream_type=..., got type <class 'dict'>")
    await refused(lambda: repo.get(Aggregate, "x"), "cls must be an Aggregate subclass")
    await refused(lambda: repo.save("x"), "aggregates[0] must be an Aggregate, got str 'x'")  # type: ignore[arg-type]
    await refused(lambda: repo.snapshot(None), "aggregate[0] must be an Aggregate, got NoneType None")  # type: ignore[arg-type]
    assert no_io.calls == 0


async def test_repository_with_an_int_snapshot_every_works(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=2)
    ticker = Ticker(sid())
    for _ in range(3):
        ticker.tick()
    await repo.save(ticker)
    assert (await repo.get(Ticker, ticker.id)).state.ticks == 3


@pytest.mark.parametrize("kwargs, says", [
    ({"position": True}, "ReplayFrom position must be an integer or None, got bool True"),
    ({"position": 1.0}, "ReplayFrom position must be an integer or None, got float 1.0"),
    ({"offset": "3"}, "ReplayFrom offset must be an integer or None, got str '3'"),
    ({"offset": 3, "partition": False}, "ReplayFrom partition must be an integer or None, got bool False"),
    ({"time": "2026-01-01T00:00:00Z"}, "ReplayFrom time must be an aware datetime or None, got str"),
    ({"time": date(2026, 1, 1)}, "ReplayFrom time must be an aware datetime or None, got date"),
])
def test_replay_from_types(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        ReplayFrom(**kwargs)
    assert says in str(caught.value) and "\n" not in str(caught.value)


async def test_replay_arguments(store: EventStore, no_io: NoIO) -> None:
    from facta.projections.reference import RideBoard

    await refused(lambda: plan_replay(store, RideBoard, 0), "start must be a ReplayFrom, got int 0")  # type: ignore[arg-type]
    await refused(lambda: replay(store, RideBoard, ReplayFrom(position=0), batch_size=True),
                  "batch_size must be an integer, got bool True")
    await refused(lambda: replay(store, "ride_board", ReplayFrom(position=0)),  # type: ignore[arg-type]
                  "projection must be a Projection subclass declared with name=..., got str 'ride_board'")
    assert no_io.calls == 0


def test_settings_objects_check_their_types() -> None:
    for make, says in [
        (lambda: RelayConfig("127.0.0.1:9092", batch_size=True), "RelayConfig batch_size must be an integer, got bool True"),
        (lambda: RelayConfig("127.0.0.1:9092", partitions=3.0), "RelayConfig partitions must be an integer, got float 3.0"),
        (lambda: RelayConfig("127.0.0.1:9092", poll_interval="1"),
         "RelayConfig poll_interval must be a finite number of seconds >= 0, got str '1'"),
        (lambda: RelayConfig("127.0.0.1:9092", idempotence=1), "RelayConfig idempotence must be True or False, got int 1"),
        (lambda: RunnerConfig(batch_size=True), "RunnerConfig batch_size must be an integer, got bool True"),
        (lambda: RunnerConfig(poll_interval=float("nan")),
         "RunnerConfig poll_interval must be a finite number of seconds >= 0, got float nan"),
        (lambda: KafkaSettings("127.0.0.1:9092", give_up_after="30"),
         "KafkaSettings give_up_after must be a finite number of seconds >= 0, got str '30'"),
        (lambda: KafkaSettings("127.0.0.1:9092", session_timeout_ms=6000.0),
         "KafkaSettings session_timeout_ms must be an integer, got float 6000.0"),
    ]:
        with pytest.raises(InvalidValue) as caught:
            make()  # type: ignore[no-untyped-call]
        assert str(caught.value) == says
    assert RelayConfig("127.0.0.1:9092", batch_size=5).batch_size == 5
    assert RunnerConfig(batch_size=7, poll_interval=0).batch_size == 7
    assert KafkaSettings("127.0.0.1:9092", give_up_after=5).give_up_after == 5


async def test_store_runner_and_relay_arguments(store: EventStore, no_io: NoIO) -> None:
    from facta.projections.reference import RideBoard

    await refused(lambda: store.save_snapshot("x"), "snapshot must be a Snapshot, got str 'x'")  # type: ignore[arg-type]
    await refused(lambda: ProjectionRunner(store, "ride_board"),  # type: ignore[arg-type]
                  "projection must be a Projection subclass declared with name=..., got str 'ride_board'")
    await refused(lambda: ProjectionRunner(store, RideBoard, config={"batch_size": 5}),  # type: ignore[arg-type]
                  "config must be a RunnerConfig or None, got dict")
    await refused(lambda: ProjectionRunner("sqlite:///x.db", RideBoard),  # type: ignore[arg-type]
                  "store must be an EventStore, got str")
    await refused(lambda: Relay(store, "127.0.0.1:9092"),  # type: ignore[arg-type]
                  "config must be a RelayConfig, got str '127.0.0.1:9092'")
    # A truthy text is not a bool: once="no" would have run once.
    await refused(lambda: ProjectionRunner(store, RideBoard).run(once="no"),  # type: ignore[arg-type]
                  "once must be True or False, got str 'no'")
    await refused(lambda: ProjectionRunner(store, RideBoard).run(once=True, wait=1),  # type: ignore[arg-type]
                  "wait must be True or False, got int 1")
    await refused(lambda: Relay(store, RelayConfig("127.0.0.1:9092")).run(once="yes"),  # type: ignore[arg-type]
                  "once must be True or False, got str 'yes'")
    assert no_io.calls == 0


async def test_open_checks_its_arguments_before_connecting(migrated_url: str, tmp_path: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit empty URL is refused (it used to open ./facta.db, as the CLI's empty
    --database-url once did); migrate and check_schema are bools. Nothing is created."""
    from facta.eventstore import DatabaseURLError

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    for url in ("", "   "):
        with pytest.raises(DatabaseURLError) as caught:
            await EventStore.open(url)
        assert str(caught.value) == (f"database URL {url!r} is empty: give one, or None for FACTA_DATABASE_URL or"
                                     " ./facta.db")
    for kwargs, says in [({"migrate": "yes"}, "migrate must be True or False, got str 'yes'"),
                         ({"check_schema": 0}, "check_schema must be True or False, got int 0")]:
        with pytest.raises(InvalidValue) as refused_open:
            await EventStore.open(migrated_url, **kwargs)
        assert str(refused_open.value) == says
    assert list(here.iterdir()) == []
    # The right types still open the store.
    async with await EventStore.open(migrated_url, migrate=False, check_schema=True) as store:
        assert await store.stream_version("nobody") == 0


def test_declaration_decorators_take_event_classes() -> None:
    for call, says in [
        (lambda: applies("argtest.ticked"), "@applies takes an event class declared with name=..., got str 'argtest.ticked'"),
        (lambda: handles(Ticked()), "@handles takes an event class declared with name=..., got Ticked"),
        (lambda: reacts_to(DomainEvent), "@reacts_to takes an event class declared with name=..., got DomainEvent"),
        (lambda: default_registry.upcaster("argtest.ticked", True), "upcaster from_version must be an integer >= 1, got bool True"),
        (lambda: default_registry.upcaster("argtest.ticked", "1"), "upcaster from_version must be an integer >= 1, got str '1'"),
    ]:
        with pytest.raises(EventRegistryError) as caught:
            call()  # type: ignore[no-untyped-call]
        assert str(caught.value).startswith(says), str(caught.value)


async def test_right_types_still_work(store: EventStore) -> None:
    stream = sid()
    result = await store.append(stream, "argtest_ticker", [Ticked(n=4)], expected_version=0)
    (record,) = await store.read_stream(stream)
    state = await audit.state_at(store, stream, as_of=datetime.now(UTC))
    assert state.state.ticks == 4 and state.version == 1
    page = await audit.events(store, since=record.recorded_at, until=record.recorded_at)
    assert [e.position for e in page.events] == list(result.positions)
    assert ReplayFrom(position=0).position == 0


async def test_a_closed_store_refuses_every_call_in_one_line(store: EventStore, migrated_url: str) -> None:
    """After close(), a SQLite append used to wait forever on the stopped writer thread and
    a read raised a raw RuntimeError; PostgreSQL silently opened a new pool."""
    from facta.errors import StoreError

    closed = await EventStore.open(migrated_url)
    await closed.close()
    await closed.close()  # closing twice is harmless
    says = f"the store at {closed.database.url.render_as_string(hide_password=True)} is closed: open it again with" \
           " EventStore.open"
    for call in [
        lambda: closed.append(sid(), "argtest", [Ticked()], expected_version=0),
        lambda: closed.stream_version("s"),
        lambda: closed.read_log(),
        lambda: closed.read_stream("s"),
        lambda: Repository(closed).get(Ticker, "s"),
    ]:
        with pytest.raises(StoreError) as caught:
            await asyncio.wait_for(call(), 10)  # type: ignore[no-untyped-call]
        assert str(caught.value) == says
    assert await store.read_log() == []  # nothing was written through the closed store
