"""Time windows are exact whatever the writers' clocks did (issue 10, item 2).

recorded_at is one time per append, but it does not follow position (or version) order:
a writer whose clock stepped back records an earlier time at a later position, by any
amount. Each test writes rows with chosen recorded_at times straight into facta_events
(the store's triggers forbid changing a row, so the times are chosen at insert), hours
and days out of order, far more than any fixed margin, and checks that every query that
turns a time into events returns exactly the events recorded inside the window:
``audit.events`` with since/until (both orders, paged), ``audit.state_at`` with as_of,
``EventStore.first_position_at`` and a replay from a time (plan and result).

Each test runs on SQLite and PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select

from facta.domain.reference import AccountOpened, Deposited
from facta.eventstore import EventStore, Snapshot, audit
from facta.eventstore import store as store_module
from facta.eventstore.audit import AuditError, events, state_at, utc_text
from facta.eventstore.schema import events as events_table
from facta.projections import ProjectionError
from facta.projections.reference import AccountBalances
from facta.projections.replay import ReplayFrom, plan_replay, replay

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PLUS_FIVE = timezone(timedelta(hours=5))
H = timedelta(hours=1)
S = timedelta(seconds=1)

# Position n (1-based) of the log, as (recorded_at, stream): one writer's clock ran an
# hour ahead (position 1), others stepped back by hours or a day after later times were
# recorded. Each event deposits 2**(n-1), so a balance names exactly the events applied.
LOG = [
    (T + H, "acct-a"),  # 1: in every window from T on, before everything recorded earlier
    (T - H, "acct-b"),  # 2
    (T + S, "acct-a"),  # 3
    (T - 3 * H, "acct-b"),  # 4: three hours back, after a later time
    (T + 2 * S, "acct-a"),  # 5
    (T - timedelta(days=1), "acct-b"),  # 6: a day back
    (T, "acct-a"),  # 7: exactly T
    (T + 3 * S, "acct-b"),  # 8
]


def _row(stream_id: str, version: int, recorded_at: datetime, payload: dict[str, Any],
         event_type: str = "account.deposited") -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4(), "stream_id": stream_id, "stream_type": "account", "version": version,
        "event_type": event_type, "schema_version": 1, "payload": json.dumps(payload),
        "occurred_at": recorded_at, "recorded_at": recorded_at, "actor": None, "correlation_id": None,
        "causation_id": None,
    }


async def _write(store: EventStore, rows: list[dict[str, Any]]) -> None:
    def write(conn: Connection) -> None:
        for row in rows:  # one statement each: positions follow the list
            conn.execute(insert(events_table), [row])

    await store.database.write(write)


async def _log(store: EventStore) -> dict[int, datetime]:
    """Write LOG; returns recorded_at by position."""
    versions: dict[str, int] = {}
    rows = []
    for n, (at, stream) in enumerate(LOG, start=1):
        versions[stream] = versions.get(stream, 0) + 1
        rows.append(_row(stream, versions[stream], at, {"amount": 2 ** (n - 1), "reference": None}))
    await _write(store, rows)
    recorded = {r.position: r.recorded_at for r in await store.read_log(limit=100)}
    assert recorded == {n: at for n, (at, _) in enumerate(LOG, start=1)}
    return recorded


def _inside(recorded: dict[int, datetime], since: datetime | None, until: datetime | None) -> list[int]:
    return sorted(p for p, at in recorded.items() if (since is None or at >= since) and (until is None or at <= until))


@pytest.mark.parametrize("first_walk", [4.0, 0.01])
async def test_audit_events_return_exactly_the_events_recorded_in_the_window(
    store: EventStore, first_walk: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How far a window query first walks the log per event wanted: by default past this
    # small log; at 0.01 one position, and then it takes turns between counting the
    # window in its index (reading it there once it is small enough) and walking on.
    monkeypatch.setattr(audit, "_FIRST_WALK", first_walk)
    recorded = await _log(store)
    cases = {
        (T, None): [1, 3, 5, 7, 8],
        (None, T): [2, 4, 6, 7],
        (T - 2 * H, T): [2, 7],
        (T + S, T + 3 * S): [3, 5, 8],
        (T - 2 * timedelta(days=1), T - 2 * H): [4, 6],
        (T + 2 * H, None): [],
        (None, T - 2 * timedelta(days=1)): [],
    }
    for (since, until), expected in cases.items():
        assert _inside(recorded, since, until) == expected  # the table above is right
        given = [None if t is None else t.astimezone(PLUS_FIVE) for t in (since, until)]
        for newest_first in (False, True):
            page = await events(store, since=given[0], until=given[1], newest_first=newest_first, limit=100)
            want = expected[::-1] if newest_first else expected
            assert [r.position for r in page.events] == want, (since, until, newest_first)
            assert page.cursor is None
            # Paged two at a time with the cursor: the same events, in the same order.
            got: list[int] = []
            cursor: int | None = None
            while True:
                page = await events(store, since=given[0], until=given[1], newest_first=newest_first, limit=2,
                                    **({} if cursor is None else
                                       {"before_position" if newest_first else "after_position": cursor}))
                got += [r.position for r in page.events]
                if page.cursor is None:
                    break
                cursor = page.cursor
            assert got == want, (since, until, newest_first)
    # With the other filters and position bounds too.
    page = await events(store, since=T, stream_types=["account"], types=["account.deposited"], after_position=1,
                        before_position=8)
    assert [r.position for r in page.events] == [3, 5, 7]


@pytest.mark.parametrize("first_walk", [4096, 2, 0])
async def test_first_position_at_is_before_the_first_event_recorded_at_or_after_the_time(
    store: EventStore, first_walk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How many positions it first walks from the log's start before it reads the
    # (recorded_at, position) index: past this log, two of them, none.
    monkeypatch.setattr(store_module, "_FIRST_WALK", first_walk)
    await _log(store)
    assert await store.first_position_at(T) == 0  # position 1 was recorded an hour after T
    assert await store.first_position_at(T + 2 * S) == 0
    assert await store.first_position_at(T + H + S) == 8  # nothing recorded that late: the head
    await _write(store, [_row("acct-c", 1, T + 2 * H, {"amount": 1, "reference": None})])
    assert await store.first_position_at(T + H + S) == 8  # position 9 is the first
    assert await store.first_position_at(T + 2 * H) == 8
    assert await store.first_position_at(T + 2 * H + S) == 9


async def test_replay_from_a_time_applies_exactly_the_events_recorded_since(store: EventStore) -> None:
    await _log(store)
    plan = await plan_replay(store, AccountBalances, ReplayFrom(time=T.astimezone(PLUS_FIVE)))
    assert (plan.start, plan.events, plan.first_position, plan.last_position) == ({("", -1): 0}, 5, 1, 8)
    # Positions 2, 4 and 6 were recorded before T: a slice, refused unless asked for.
    assert plan.left_out == 3
    with pytest.raises(ProjectionError, match="leaving out the 3 earlier events it handles"):
        await replay(store, AccountBalances, ReplayFrom(time=T))
    result = await replay(store, AccountBalances, ReplayFrom(time=T), slice=True)
    assert result.events == 5
    rows = await store.database.read(
        lambda conn: conn.execute(
            select(AccountBalances.balances.c.account_id, AccountBalances.balances.c.balance)
        ).all()
    )
    # acct-a: positions 1, 3, 5, 7; acct-b: position 8 (2, 4 and 6 were recorded before T).
    assert sorted(tuple(r) for r in rows) == [("acct-a", 1 + 4 + 16 + 64), ("acct-b", 128)]

    # A time after the last event recorded: a plan and a replay of nothing.
    later = T + 2 * H
    plan = await plan_replay(store, AccountBalances, ReplayFrom(time=later))
    assert (plan.start, plan.end, plan.events, plan.first_position) == ({("", -1): 8}, {("", -1): 8}, 0, None)
    # It leaves out every event, so it is a slice: refused unless asked for.
    assert plan.left_out == 8
    with pytest.raises(ProjectionError, match="leaving out the 8 earlier events it handles"):
        await replay(store, AccountBalances, ReplayFrom(time=later))
    assert (await replay(store, AccountBalances, ReplayFrom(time=later), slice=True)).events == 0


async def test_state_as_of_a_time_is_built_from_exactly_the_events_recorded_by_then(store: EventStore) -> None:
    stream = "acct-s"
    # Versions and their recorded times: version 3's writer had a clock 70 minutes behind.
    times = {1: T, 2: T + 10 * 60 * S, 3: T - 60 * 60 * S, 4: T + 20 * 60 * S}
    rows = [_row(stream, 1, times[1], {"owner": "sam", "currency": "EUR"}, "account.opened")]
    rows += [_row(stream, v, times[v], {"amount": amount, "reference": None}) for v, amount in ((2, 100), (3, 10),
                                                                                              (4, 1))]
    await _write(store, rows)
    assert [type(r.event) for r in await store.read_stream(stream)] == [AccountOpened, Deposited, Deposited, Deposited]
    # Snapshots of the prefixes (as a repository writes them): usable only where every
    # version up to them was recorded by the time asked.
    for version, balance in ((2, 100), (3, 110)):
        state = json.dumps({"owner": "sam", "currency": "EUR", "balance": balance, "status": "open"})
        await store.save_snapshot(Snapshot(stream, "account", version, state, "account.state/v1"))

    def check(as_of: datetime, version: int, balance: int, left_out: tuple[int, ...], owner: str | None = "sam") -> None:
        assert (found.version, found.state.balance, found.left_out, found.state.owner) == (
            version, balance, left_out, owner), as_of
        assert found.recorded_at == times[version]
        assert found.aggregate.version == version

    # Only version 3 recorded by then: its deposit on an empty state, versions 1-2 left out.
    found = await state_at(store, stream, as_of=T - 30 * 60 * S)
    check(T - 30 * 60 * S, 3, 10, (1, 2), owner=None)
    # Versions 1 and 3: opened and the 10 deposit, without version 2's 100.
    found = await state_at(store, stream, as_of=(T + 5 * 60 * S).astimezone(PLUS_FIVE))
    check(T + 5 * 60 * S, 3, 10, (2,))
    assert found.as_dict()["left_out_versions"] == [2]
    # Exactly version 2's time: versions 1-3, a prefix (the snapshot at 3 may serve).
    found = await state_at(store, stream, as_of=times[2])
    check(times[2], 3, 110, ())
    assert "left_out_versions" not in found.as_dict()
    found = await state_at(store, stream, as_of=times[4])
    check(times[4], 4, 111, ())
    # Before anything of the stream was recorded: the earliest time is version 3's.
    with pytest.raises(AuditError) as exc:
        await state_at(store, stream, as_of=times[3] - S)
    assert str(exc.value) == (
        f"stream 'acct-s' did not exist at {utc_text(times[3] - S)}: its first event was recorded at"
        f" {utc_text(times[3])}"
    )


async def test_times_outside_the_years_utc_can_hold_are_one_line_errors(store: EventStore) -> None:
    await _log(store)
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(AuditError) as exc:
        await events(store, since=early)
    assert str(exc.value) == "since: time 0001-01-01T00:00:00+01:00 is outside the years 0001 to 9999 once converted to UTC"
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12)))
    with pytest.raises(AuditError, match="as_of: time 9999-12-31T23:59:59-12:00 is outside the years"):
        await state_at(store, "acct-a", as_of=late)
    # The earliest time UTC can hold is a valid bound: everything was recorded after it.
    page = await events(store, since=datetime(1, 1, 1, tzinfo=UTC))
    assert [r.position for r in page.events] == list(range(1, 9))


async def test_replay_times_at_the_ends_of_the_calendar(store: EventStore) -> None:
    await _log(store)
    # The earliest time UTC can hold: every event was recorded after it.
    plan = await plan_replay(store, AccountBalances, ReplayFrom(time=datetime(1, 1, 1, tzinfo=UTC)))
    assert (plan.start, plan.events, plan.first_position, plan.last_position) == ({("", -1): 0}, 8, 1, 8)
    with pytest.raises(ProjectionError) as exc:
        ReplayFrom(time=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    assert str(exc.value) == "time 0001-01-01T00:00:00+01:00 is outside the years 0001 to 9999 once converted to UTC"
