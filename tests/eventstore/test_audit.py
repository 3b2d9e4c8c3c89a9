"""History queries (facta.eventstore.audit) on SQLite and PostgreSQL: every query, time
zones, and the boundaries (as of exactly an event's time, before the first event, after
the last, a version past the end).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from facta.domain import UnknownAggregateType, aggregate_class
from facta.domain.reference import Account, AccountOpened, Ride, TransferredIn, TransferredOut
from facta.eventstore import EventStore, RecordedEvent, StreamNotFound, VersionNotFound
from facta.eventstore.audit import AuditError, diff, events, history, state_at, trace, utc_text

from ._audit_scenario import ACCOUNT, DRIVER_ACCOUNT, RIDE, RIDER_ACCOUNT, build

PLUS_FIVE = timezone(timedelta(hours=5))
MICRO = timedelta(microseconds=1)


def _one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)


async def test_history_is_every_event_of_the_stream_with_its_metadata(store: EventStore) -> None:
    await build(store)
    records = await history(store, ACCOUNT)
    assert [r.version for r in records] == [1, 2, 3, 4]
    assert [r.event_type for r in records] == ["account.opened", "account.deposited", "account.withdrawn",
                                               "account.deposited"]
    assert [r.actor for r in records] == ["alice", "alice", "bob", "alice"]
    assert [r.correlation_id for r in records] == ["open-alice", "alice-2", "bob-3", "alice-4"]
    assert all(r.recorded_at.tzinfo is UTC for r in records)
    assert records == await store.read_stream(ACCOUNT)
    with pytest.raises(StreamNotFound) as exc:
        await history(store, "no-such-stream")
    _one_line(exc, "stream 'no-such-stream' does not exist")


async def test_state_at_a_version_uses_the_aggregate_of_the_stream_type(store: EventStore) -> None:
    await build(store)
    balances = [(await state_at(store, ACCOUNT, at_version=v)).state.balance for v in (1, 2, 3, 4)]
    assert balances == [0, 1000, 700, 750]
    now = await state_at(store, ACCOUNT)
    assert (now.version, now.stream_type, now.state.balance, now.state.status) == (4, "account", 750, "open")
    assert isinstance(now.aggregate, Account) and now.recorded_at.tzinfo is UTC
    assert now.as_dict()["state"] == {"owner": "alice", "currency": "EUR", "balance": 750, "status": "open"}
    ride = await state_at(store, RIDE, at_version=3)
    assert isinstance(ride.aggregate, Ride)
    assert (ride.state.status, ride.state.driver_id, ride.state.eta_seconds) == ("accepted", "driver-1", 240)
    with pytest.raises(VersionNotFound) as exc:
        await state_at(store, ACCOUNT, at_version=5)
    _one_line(exc, "stream 'acct-alice' has 4 events; there is no version 5")
    with pytest.raises(StreamNotFound):
        await state_at(store, "no-such-stream", at_version=1)
    with pytest.raises(AuditError):
        await state_at(store, ACCOUNT, at_version=1, as_of=datetime.now(UTC))


async def test_state_as_of_a_time_in_any_zone_and_its_boundaries(store: EventStore) -> None:
    await build(store)
    records = await store.read_stream(ACCOUNT)
    assert len({r.recorded_at for r in records}) == 4
    for record in records:
        # Exactly at an event's time (given in +05:00): that event is included.
        exact = await state_at(store, ACCOUNT, as_of=record.recorded_at.astimezone(PLUS_FIVE))
        assert (exact.version, exact.recorded_at) == (record.version, record.recorded_at)
        assert exact.recorded_at.tzinfo is UTC
        # A microsecond before: the state before it (or no stream yet).
        if record.version > 1:
            earlier = await state_at(store, ACCOUNT, as_of=record.recorded_at - MICRO)
            assert earlier.version == record.version - 1
    assert (await state_at(store, ACCOUNT, as_of=records[2].recorded_at.astimezone(PLUS_FIVE))).state.balance == 700

    with pytest.raises(AuditError) as exc:
        await state_at(store, ACCOUNT, as_of=records[0].recorded_at - MICRO)
    _one_line(exc, "stream 'acct-alice' did not exist at", f"first event was recorded at {utc_text(records[0].recorded_at)}")

    after_last = await state_at(store, ACCOUNT, as_of=datetime.now(PLUS_FIVE))
    assert (after_last.version, after_last.state.balance) == (4, 750)

    future = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(AuditError) as exc:
        await state_at(store, ACCOUNT, as_of=future.astimezone(PLUS_FIVE))
    _one_line(exc, f"time {utc_text(future)} is in the future")
    with pytest.raises(AuditError) as exc:
        await state_at(store, ACCOUNT, as_of=datetime(2026, 1, 1, 12, 0))
    _one_line(exc, "naive time")
    with pytest.raises(StreamNotFound):
        await state_at(store, "no-such-stream", as_of=datetime.now(UTC))


async def test_state_of_a_stream_type_without_a_class_is_one_line(store: EventStore) -> None:
    assert aggregate_class("account") is Account and aggregate_class("ride") is Ride
    await store.append("odd-1", "mystery", [AccountOpened(owner="x", currency="EUR")], expected_version=0)
    with pytest.raises(UnknownAggregateType) as exc:
        await state_at(store, "odd-1")
    _one_line(exc, "no aggregate class for stream type 'mystery'", "account", "ride")


async def test_diff_names_each_changed_field_and_the_events_that_changed_it(store: EventStore) -> None:
    await build(store)
    money = await diff(store, ACCOUNT, 1, 4)
    assert [(c.field, c.old, c.new) for c in money.changes] == [("balance", 0, 750)]
    assert money.changes[0].changed_by == ((2, "account.deposited"), (3, "account.withdrawn"), (4, "account.deposited"))
    assert [e.version for e in money.events] == [2, 3, 4]

    opened = await diff(store, ACCOUNT, 0, 1)
    assert {c.field: (c.old, c.new) for c in opened.changes} == {
        "owner": (None, "alice"), "currency": (None, "EUR"), "status": ("new", "open"),
    }
    assert all(c.changed_by == ((1, "account.opened"),) for c in opened.changes)

    ride = await diff(store, RIDE, 2, 5)
    changes = {c.field: c for c in ride.changes}
    assert set(changes) == {"status", "driver_id", "eta_seconds"}
    assert (changes["status"].old, changes["status"].new) == ("offered", "in_progress")
    assert [t for _, t in changes["status"].changed_by] == ["ride.accepted", "ride.driver_arrived", "ride.trip_started"]
    assert changes["driver_id"].changed_by == ((3, "ride.accepted"),)
    assert ride.as_dict()["changes"][0]["changed_by"][0] == {"version": 3, "event_type": "ride.accepted"}

    with pytest.raises(VersionNotFound) as exc:
        await diff(store, ACCOUNT, 2, 9)
    _one_line(exc, "there is no version 9")
    with pytest.raises(AuditError) as exc2:
        await diff(store, ACCOUNT, 3, 3)
    _one_line(exc2, "to_version (3) must be greater than from_version (3)")
    with pytest.raises(StreamNotFound):
        await diff(store, "no-such-stream", 1, 2)


async def test_events_filters_combine(store: EventStore) -> None:
    await build(store)
    alice = await store.read_stream(ACCOUNT)

    page = await events(store, types=["account.deposited"], actor="alice")
    assert [(r.stream_id, r.version) for r in page.events] == [(ACCOUNT, 2), (ACCOUNT, 4)]
    assert page.cursor is None

    deposits = await events(store, types=["account.deposited", "account.opened"], stream_types=["account"])
    assert {r.stream_id for r in deposits.events} == {ACCOUNT, RIDER_ACCOUNT, DRIVER_ACCOUNT}
    assert [r.position for r in deposits.events] == sorted(r.position for r in deposits.events)

    billed = await events(store, stream_types=["account"], correlation_id=RIDE)
    assert [(r.stream_id, r.actor) for r in billed.events] == [(RIDER_ACCOUNT, "billing"), (DRIVER_ACCOUNT, "billing")]

    # since <= recorded_at <= until, given in +05:00, both ends included.
    window = await events(store, since=alice[1].recorded_at.astimezone(PLUS_FIVE),
                          until=alice[2].recorded_at.astimezone(PLUS_FIVE))
    assert [(r.stream_id, r.version) for r in window.events] == [(ACCOUNT, 2), (ACCOUNT, 3)]
    assert all(r.recorded_at.tzinfo is UTC for r in window.events)
    narrow = await events(store, since=alice[1].recorded_at + MICRO, until=alice[2].recorded_at - MICRO)
    assert narrow.events == []
    by_bob = await events(store, actor="bob", since=alice[0].recorded_at, stream_types=["account"],
                          types=["account.withdrawn"], newest_first=True)
    assert [(r.stream_id, r.version) for r in by_bob.events] == [(ACCOUNT, 3)]
    assert (await events(store, types=["no.such_type"])).events == []
    assert (await events(store, actor="alice", since=datetime.now(UTC))).events == []

    with pytest.raises(AuditError) as exc:
        await events(store, since=alice[2].recorded_at, until=alice[1].recorded_at)
    _one_line(exc, "is after until")
    with pytest.raises(AuditError):
        await events(store, limit=0)
    with pytest.raises(AuditError):
        await events(store, until=datetime(2026, 1, 1))


async def _pages(store: EventStore, newest_first: bool, **filters: object) -> list[list[RecordedEvent]]:
    pages: list[list[RecordedEvent]] = []
    cursor: int | None = None
    while True:
        bound = {"before_position" if newest_first else "after_position": cursor}
        page = await events(store, limit=3, newest_first=newest_first, **bound, **filters)  # type: ignore[arg-type]
        pages.append(page.events)
        if page.cursor is None:
            return pages
        assert page.cursor == page.events[-1].position
        cursor = page.cursor


async def test_events_page_oldest_and_newest_first(store: EventStore) -> None:
    await build(store)
    everything = await store.read_log(limit=1000)
    assert len(everything) > 12
    forward = await _pages(store, newest_first=False)
    assert [r.position for p in forward for r in p] == [r.position for r in everything]
    assert all(len(p) == 3 for p in forward[:-1]) and 1 <= len(forward[-1]) <= 3
    backward = await _pages(store, newest_first=True)
    assert [r.position for p in backward for r in p] == [r.position for r in reversed(everything)]

    rides = [r.position for r in everything if r.stream_type == "ride"]
    assert [r.position for p in await _pages(store, False, stream_types=["ride"]) for r in p] == rides
    assert [r.position for p in await _pages(store, True, stream_types=["ride"]) for r in p] == rides[::-1]
    # Both bounds: the events strictly between two positions.
    middle = await events(store, after_position=rides[1], before_position=rides[5], stream_types=["ride"])
    assert [r.position for r in middle.events] == rides[2:5]


async def test_trace_follows_a_ride_into_the_account_movements_billing_caused(store: EventStore) -> None:
    scenario = await build(store)
    traced = await trace(store, RIDE)
    assert [r.position for r in traced] == sorted(r.position for r in traced)
    ride_events = [r for r in traced if r.stream_id == RIDE]
    assert [r.version for r in ride_events] == list(range(1, 9))
    money = [r for r in traced if r.stream_type == "account"]
    assert [(r.stream_id, type(r.event)) for r in money] == [(RIDER_ACCOUNT, TransferredOut),
                                                             (DRIVER_ACCOUNT, TransferredIn)]
    trip_ended = ride_events[-1]
    assert trip_ended.event_type == "ride.trip_ended"
    assert all(r.causation_id == str(trip_ended.event_id) and r.actor == "billing" for r in money)
    out = money[0].event
    assert isinstance(out, TransferredOut) and out.amount == scenario.fare and out.transfer_id == RIDE
    assert traced[-1].position > trip_ended.position
    assert await trace(store, "no-such-correlation") == []


async def test_time_windows_hold_when_recorded_at_is_out_of_order_along_the_log(store: EventStore) -> None:
    """Concurrent appends make recorded_at interleave along the log by their overlap: a
    window's position bounds must still include every event recorded inside it."""
    import json
    import uuid

    from sqlalchemy import insert

    from facta.eventstore.schema import events as events_table

    t = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    # Positions 1..40 one second apart, except that pairs swap their times around t.
    times = [t - timedelta(seconds=20) + timedelta(seconds=i) for i in range(40)]
    times[19], times[20] = times[20], times[19]  # position 20 recorded after position 21
    rows = [
        {"event_id": uuid.uuid4(), "stream_id": f"acct-{i % 4}", "stream_type": "account", "version": i // 4 + 1,
         "event_type": "account.deposited", "schema_version": 1, "payload": json.dumps({"amount": 1}),
         "occurred_at": at, "recorded_at": at, "actor": None, "correlation_id": None, "causation_id": None}
        for i, at in enumerate(times)
    ]
    await store.database.write(lambda conn: conn.execute(insert(events_table), rows))
    recorded = {r.position: r.recorded_at for r in await store.read_log(limit=100)}
    for since, until in ((t, None), (None, t), (t - timedelta(seconds=1), t + timedelta(seconds=1))):
        expected = sorted(p for p, at in recorded.items()
                          if (since is None or at >= since) and (until is None or at <= until))
        for newest_first in (False, True):
            page = await events(store, since=since, until=until, newest_first=newest_first, limit=1000)
            got = [r.position for r in page.events]
            assert sorted(got) == expected, (since, until, newest_first)
