"""Issue 10, store integrity: retries that differ, one id twice in one append, one
recorded time per append, opposite-order multi-stream appends, stored rows that no SQL
statement can change, and migration round trips. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from facta.domain import DomainEvent, PendingEvent
from facta.eventstore import DuplicateEventError, EventStore, StoreError, StreamAppend
from facta.eventstore.records import Snapshot


class Noted(DomainEvent, name="integrity.noted"):
    text: str
    amount: int = 0


class Other(DomainEvent, name="integrity.other"):
    text: str
    amount: int = 0


def sid() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def noted(n: int, prefix: str = "note") -> list[PendingEvent]:
    return [PendingEvent(Noted(text=f"{prefix} {i}", amount=i)) for i in range(n)]


async def scalar(store: EventStore, sql: str, **params: Any) -> Any:
    return await store.database.read(lambda conn: conn.execute(text(sql), params).scalar())


async def count_events(store: EventStore) -> int:
    return int(await scalar(store, "SELECT count(*) FROM facta_events"))


# -- 4. a retry that differs ---------------------------------------------------------------


async def test_an_identical_retry_returns_the_original_positions(store: EventStore) -> None:
    a, b = sid(), sid()
    first, second = noted(3), noted(2)
    appends = [StreamAppend(a, "note", first, 0), StreamAppend(b, "note", second, 0)]
    original = await store.append_many(appends)
    for expected in (0, None):  # the stored version, or "any version"
        again = await store.append_many([StreamAppend(a, "note", first, expected), StreamAppend(b, "note", second, expected)])
        assert again == original
    # A retry built anew from the same ids and events (a new occurred-at) is still a retry.
    rebuilt = [PendingEvent(p.event, p.event_id) for p in first]
    assert await store.append(a, "note", rebuilt, expected_version=0) == original[0]
    assert await count_events(store) == 5


async def test_a_retry_with_other_metadata_returns_the_original_positions_and_the_first_values_stand(
    store: EventStore,
) -> None:
    # What a retry re-stamps (occurred-at, actor, correlation and causation ids) is not
    # compared (README, "Idempotent appends"): the retry is the same event, stored once.
    stream = sid()
    events = noted(2)
    original = await store.append(stream, "note", events, expected_version=0, actor="ana",
                                  correlation_id="corr-1", causation_id="cause-1")
    stored = await store.read_stream(stream)
    later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    retry = [PendingEvent(p.event, p.event_id, later) for p in events]
    again = await store.append(stream, "note", retry, expected_version=0, actor="bob",
                               correlation_id="corr-2", causation_id="cause-2")
    assert again == original
    after = await store.read_stream(stream)
    assert [(e.event_id, e.occurred_at, e.actor, e.correlation_id, e.causation_id) for e in after] == [
        (p.event_id, s.occurred_at, "ana", "corr-1", "cause-1") for p, s in zip(events, stored, strict=True)
    ]
    assert all(s.occurred_at != later for s in after)
    assert await count_events(store) == 2


@pytest.mark.parametrize("expected_version", [0, None])
@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ("payload", "its payload differs from the stored one"),
        ("type", "it is given as 'integrity.other' v1, stored as 'integrity.noted' v1"),
        ("stream", "it is given for stream "),
        ("stream_type", "it is given with stream type 'other', stored with 'note'"),
        ("version", "it is given at version 5"),
        ("partial", "its event {new} is not stored"),
    ],
)
async def test_a_retry_that_differs_names_the_event_and_the_difference(
    store: EventStore, change: str, differs: str, expected_version: int | None
) -> None:
    stream = sid()
    events = noted(2)
    stored = await store.append(stream, "note", events, expected_version=0)
    target, stream_type, retry, expected = stream, "note", list(events), expected_version
    if change == "payload":
        retry[1] = PendingEvent(Noted(text="note 1", amount=99), events[1].event_id)
    elif change == "type":
        retry[1] = PendingEvent(Other(text="note 1", amount=1), events[1].event_id)
    elif change == "stream":
        target = sid()
    elif change == "stream_type":
        stream_type = "other"
    elif change == "version":
        if expected_version is None:
            pytest.skip("an append at any version names no version to differ")
        expected = 4  # the events would land at versions 5 and 6
    elif change == "partial":
        retry.append(PendingEvent(Noted(text="new")))
        differs = differs.format(new=retry[-1].event_id)
    with pytest.raises(DuplicateEventError) as info:
        await store.append(target, stream_type, retry, expected_version=expected)
    message = str(info.value)
    failing = 1 if change in ("payload", "type") else 0
    assert message.startswith(
        f"event {events[failing].event_id} is already stored as {stream!r} version {failing + 1}"
        f" at position {stored.positions[failing]} and this append is not an identical retry: {differs}"
    ), message
    assert "\n" not in message
    assert await count_events(store) == 2
    assert [r.event for r in await store.read_stream(stream)] == [e.event for e in events]


async def test_a_retry_that_differs_in_one_stream_of_many_writes_nothing(store: EventStore) -> None:
    a, b = sid(), sid()
    first, second = noted(2), noted(2)
    await store.append_many([StreamAppend(a, "note", first, 0), StreamAppend(b, "note", second, 0)])
    changed = [second[0], PendingEvent(Noted(text="forged", amount=1), second[1].event_id)]
    with pytest.raises(DuplicateEventError, match=rf"event {second[1].event_id} .*: its payload differs"):
        await store.append_many([StreamAppend(a, "note", first, None), StreamAppend(b, "note", changed, None)])
    assert await count_events(store) == 4


async def test_payloads_compare_as_stored_not_as_python_values(store: EventStore) -> None:
    """1 and 1.0 are different JSON texts (and JSONB values keep their scale)."""

    class Loose(DomainEvent, name="integrity.loose"):
        value: Any

    stream = sid()
    event_id = uuid.uuid4()
    await store.append(stream, "loose", [PendingEvent(Loose(value=1), event_id)], expected_version=0)
    with pytest.raises(DuplicateEventError, match="payload differs"):
        await store.append(stream, "loose", [PendingEvent(Loose(value=1.0), event_id)], expected_version=0)
    again = await store.append(stream, "loose", [PendingEvent(Loose(value=1), event_id)], expected_version=0)
    assert again.first_version == 1



async def test_a_repository_save_whose_reply_was_lost_is_an_identical_retry(store: EventStore) -> None:
    """Repository.save has no retry of its own: saving again after a lost reply (the
    events committed, the aggregate still holds them as pending) returns the original
    positions through append_many's retry detection."""
    from facta.domain.reference import Account
    from facta.eventstore import Repository

    repo = Repository(store, snapshot_every=None)
    account = Account.open("acct-lost-reply", "ada", "EUR")
    account.deposit(500)
    committed = await store.append_many([StreamAppend(account.id, account.stream_type, account.pending_events, 0)])
    assert await repo.save(account) == committed
    assert not account.pending_events
    assert (await repo.get(Account, account.id)).state.balance == 500
    assert await count_events(store) == 2

# -- 20. one event id twice in one append ---------------------------------------------------


async def test_one_event_id_twice_in_one_stream_is_refused_before_io(store: EventStore) -> None:
    stream = sid()
    event_id = uuid.uuid4()
    events = [PendingEvent(Noted(text="a"), event_id), PendingEvent(Noted(text="b"), event_id)]
    with pytest.raises(StoreError) as info:
        await store.append(stream, "note", events, expected_version=0)
    assert str(info.value) == (
        f"event id {event_id} is given twice in one append (stream {stream!r}): every event needs its own id"
    )
    assert await count_events(store) == 0


async def test_one_event_id_in_two_streams_of_one_append_is_refused_before_io(store: EventStore) -> None:
    a, b = sid(), sid()
    shared = PendingEvent(Noted(text="shared"))
    with pytest.raises(StoreError) as info:
        await store.append_many([
            StreamAppend(a, "note", [*noted(2), shared], 0),
            StreamAppend(b, "note", [shared], None),
        ])
    assert str(info.value) == (
        f"event id {shared.event_id} is given twice in one append (streams {a!r} and {b!r}):"
        " every event needs its own id"
    )
    assert await count_events(store) == 0
    assert await store.stream_version(a) == 0


async def test_snapshots_given_with_an_append_are_kept(store: EventStore) -> None:
    stream = sid()
    snap = Snapshot(stream, "note", 2, '{"n": 2}', "note.state/v1")
    await store.append_many([StreamAppend(stream, "note", noted(2), 0)], snapshots=[snap, snap])
    kept = await store.latest_snapshot(stream)
    assert kept is not None and (kept.version, kept.state) == (2, '{"n": 2}')


# -- 1. opposite-order multi-stream appends -------------------------------------------------


async def test_opposite_order_multi_stream_appends_never_deadlock(store: EventStore) -> None:
    """Two appends naming the same two streams in opposite order, 3,000 events each,
    started together, several rounds: both succeed, at contiguous versions."""
    a, b = sid(), sid()
    rounds, half = 3, 1500
    for round_ in range(rounds):
        one = [StreamAppend(a, "note", noted(half, f"one-a-{round_}"), None),
               StreamAppend(b, "note", noted(half, f"one-b-{round_}"), None)]
        two = [StreamAppend(b, "note", noted(half, f"two-b-{round_}"), None),
               StreamAppend(a, "note", noted(half, f"two-a-{round_}"), None)]
        results = await _together(store, store.append_many(one), store.append_many(two))
        assert not [r for r in results if isinstance(r, BaseException)], results
        for result in (r for pair in results for r in pair):
            assert result.last_version - result.first_version + 1 == half
            assert len(result.positions) == half
    assert await store.stream_version(a) == await store.stream_version(b) == rounds * 2 * half
    for stream in (a, b):
        records = await store.read_stream(stream)
        assert [r.version for r in records] == list(range(1, rounds * 2 * half + 1))
        texts = [r.event.text for r in records]  # every event decodes
        assert len(set(texts)) == len(texts)
    assert await count_events(store) == rounds * 4 * half


async def test_opposite_order_appends_at_a_named_version_let_exactly_one_win(store: EventStore) -> None:
    from facta.eventstore import ConcurrencyError

    a, b = sid(), sid()
    one = [StreamAppend(a, "note", noted(1500), 0), StreamAppend(b, "note", noted(1500), 0)]
    two = [StreamAppend(b, "note", noted(1500), 0), StreamAppend(a, "note", noted(1500), 0)]
    outcomes = await _together(store, store.append_many(one), store.append_many(two))
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], ConcurrencyError), outcomes
    assert str(errors[0]).endswith("expected version 0, actual version 1500")
    assert await store.stream_version(a) == await store.stream_version(b) == 1500
    assert await count_events(store) == 3000



async def test_one_set_of_ids_appended_to_two_streams_in_opposite_order_at_once(store: EventStore) -> None:
    """No stream lock is shared, so on PostgreSQL the two inserts can wait for each other
    on the event-id index: the deadlock is settled like a lost race, and the loser learns
    the ids are stored in another stream."""
    a, b = sid(), sid()
    events = noted(1500)
    one = store.append(a, "note", events, expected_version=0)
    two = store.append(b, "note", list(reversed(events)), expected_version=0)
    outcomes = await _together(store, one, two)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], DuplicateEventError), outcomes
    assert "this append is not an identical retry: it is given for stream" in str(errors[0])
    assert await count_events(store) == 1500
    assert {await store.stream_version(a), await store.stream_version(b)} == {0, 1500}


async def _together(store: EventStore, *appends: Any) -> list[Any]:
    """Run appends started together; their results or errors. On PostgreSQL they start
    inserting at the same moment: the writer marker (which an append takes with its
    positions, after its stream locks, revision 0008) is held exclusively until every
    append waits, for it or for a stream lock another waiting append holds, then let go."""
    from facta.eventstore.locks import STREAM_LOCK_CLASS, WRITER_MARKER

    if store.database.dialect != "postgresql":
        return list(await asyncio.gather(*appends, return_exceptions=True))

    async with store.database.driver_connection() as gate:
        await gate.execute("SELECT pg_advisory_lock($1, $2)", *WRITER_MARKER)
        try:
            tasks = [asyncio.ensure_future(a) for a in appends]
            while await gate.fetchval(  # noqa: ASYNC110 - polling the server's lock table
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2"
                " AND (classid = $1 AND objid = $2 OR classid = $3)", *WRITER_MARKER, STREAM_LOCK_CLASS
            ) < len(appends):
                await asyncio.sleep(0.01)
        finally:
            await gate.execute("SELECT pg_advisory_unlock($1, $2)", *WRITER_MARKER)
    return list(await asyncio.gather(*tasks, return_exceptions=True))

async def test_sqlite_writer_locked_out_is_one_line_and_writes_nothing(store: EventStore, tmp_path: Any) -> None:
    if store.database.dialect != "sqlite":
        pytest.skip("PostgreSQL has no database-wide write lock")
    import sqlite3

    from facta.eventstore.errors import DatabaseBusy

    await store.append(sid(), "note", noted(1), expected_version=0)
    database = store.database
    assert database._write_thread is not None and database._raw_writer is not None
    raw_writer = database._raw_writer
    await database._write_thread.run(lambda: raw_writer.execute("PRAGMA busy_timeout=100"))
    other = sqlite3.connect(database.url.database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseBusy) as info:
            await store.append(sid(), "note", noted(2), expected_version=0)
        assert str(info.value) == (
            f"SQLite database {database.url.database!r} is locked: another connection held its write lock"
            " for over 0.1 s; nothing was written"
        )
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await count_events(store) == 1
    result = await store.append(sid(), "note", noted(2), expected_version=0)  # and the store goes on
    assert result.positions == (2, 3)


# -- 2a. one append, one recorded time -----------------------------------------------------


async def test_one_append_records_one_time_for_all_its_rows(store: EventStore) -> None:
    a, b = sid(), sid()
    snap = Snapshot(a, "note", 1000, '{"n": 1000}', "note.state/v1")
    results = await store.append_many(
        [StreamAppend(a, "note", noted(1000), 0), StreamAppend(b, "note", noted(1000), 0)], snapshots=[snap]
    )
    times = await store.database.read(
        lambda conn: conn.execute(text("SELECT DISTINCT recorded_at FROM facta_events")).all()
    )
    assert len(times) == 1
    recorded = {r.recorded_at for r in await store.read_log(limit=5000)}
    assert recorded == {results[0].recorded_at} == {results[1].recorded_at}
    kept = await store.latest_snapshot(a)
    assert kept is not None and kept.recorded_at == results[0].recorded_at
    # The next append records a later (or equal) time of its own.
    later = await store.append(b, "note", noted(1), expected_version=1000)
    assert later.recorded_at is not None and results[0].recorded_at is not None
    assert later.recorded_at >= results[0].recorded_at


# -- 19. no SQL statement changes a stored event or snapshot ----------------------------------

_FORGED = '{"text": "forged", "amount": 666}'
_EVENT_COLUMNS = ("event_id, stream_id, stream_type, version, event_type, schema_version, payload,"
                  " occurred_at, recorded_at, actor")

# (statement, what must happen: "refused" raises, "unchanged" may pass but changes nothing)
_SQLITE_EVENT_ATTACKS = [
    ("UPDATE facta_events SET payload = :forged WHERE position = :p", "refused"),
    ("UPDATE OR REPLACE facta_events SET payload = :forged WHERE position = :p", "refused"),
    ("UPDATE OR IGNORE facta_events SET payload = :forged WHERE position = :p", "refused"),
    ("DELETE FROM facta_events WHERE position = :p", "refused"),
    ("DELETE FROM facta_events", "refused"),
    # the same position, a new event id
    ("INSERT OR REPLACE INTO facta_events (position, {cols}) VALUES"
     " (:p, :new_id, :s, :t, :v, :et, :sv, :forged, :oa, :ra, 'mallory')", "refused"),
    # the same event id, a new position (REPLACE INTO is INSERT OR REPLACE)
    ("REPLACE INTO facta_events ({cols}) VALUES (:id, :s, :t, :v, :et, :sv, :forged, :oa, :ra, 'mallory')",
     "refused"),
    # the same stream version, a new event id
    ("INSERT OR REPLACE INTO facta_events ({cols}) VALUES"
     " (:new_id, :s, :t, :v, :et, :sv, :forged, :oa, :ra, 'mallory')", "refused"),
    ("INSERT INTO facta_events ({cols}) VALUES (:id, :s, :t, :v, :et, :sv, :forged, :oa, :ra, 'mallory')"
     " ON CONFLICT (event_id) DO UPDATE SET payload = excluded.payload, actor = excluded.actor", "refused"),
    ("INSERT INTO facta_events ({cols}) VALUES (:new_id, :s, :t, :v, :et, :sv, :forged, :oa, :ra, 'mallory')"
     " ON CONFLICT (stream_id, version) DO UPDATE SET payload = excluded.payload", "refused"),
    ("INSERT OR IGNORE INTO facta_events ({cols}) VALUES (:id, :s, :t, :v, :et, :sv, :forged, :oa, :ra, 'x')",
     "unchanged"),
]
_POSTGRES_EVENT_ATTACKS = [
    ("UPDATE facta_events SET payload = CAST(:forged AS jsonb) WHERE position = :p", "refused"),
    ("DELETE FROM facta_events WHERE position = :p", "refused"),
    ("DELETE FROM facta_events", "refused"),
    ("TRUNCATE facta_events", "refused"),
    ("TRUNCATE facta_events RESTART IDENTITY CASCADE", "refused"),
    ("INSERT INTO facta_events (position, {cols}) VALUES"
     " (:p, :new_id, :s, :t, :v, :et, :sv, CAST(:forged AS jsonb), :oa, :ra, 'mallory')", "refused"),
    ("INSERT INTO facta_events ({cols}) VALUES (:id, :s, :t, :v, :et, :sv, CAST(:forged AS jsonb), :oa, :ra, 'm')"
     " ON CONFLICT (event_id) DO UPDATE SET payload = excluded.payload, actor = excluded.actor", "refused"),
    ("INSERT INTO facta_events (position, {cols}) VALUES"
     " (:p, :new_id, :s, :t, :v, :et, :sv, CAST(:forged AS jsonb), :oa, :ra, 'm')"
     " ON CONFLICT (position) DO UPDATE SET payload = excluded.payload", "refused"),
    ("MERGE INTO facta_events e USING (SELECT CAST(:p AS bigint) AS p) x ON e.position = x.p"
     " WHEN MATCHED THEN UPDATE SET payload = CAST(:forged AS jsonb)", "refused"),
    ("MERGE INTO facta_events e USING (SELECT CAST(:p AS bigint) AS p) x ON e.position = x.p"
     " WHEN MATCHED THEN DELETE", "refused"),
    ("INSERT INTO facta_events ({cols}) VALUES (:id, :s, :t, :v, :et, :sv, CAST(:forged AS jsonb), :oa, :ra, 'x')"
     " ON CONFLICT DO NOTHING", "unchanged"),
]
_SQLITE_SNAPSHOT_ATTACKS = [
    ("UPDATE facta_snapshots SET state = :forged WHERE stream_id = :s", "refused"),
    ("UPDATE OR REPLACE facta_snapshots SET state = :forged WHERE stream_id = :s", "refused"),
    ("INSERT OR REPLACE INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
     " VALUES (:s, :sv_version, :t, :forged, 'x', :ra)", "unchanged"),
    ("REPLACE INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
     " VALUES (:s, :sv_version, :t, :forged, 'x', :ra)", "unchanged"),
    ("INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
     " VALUES (:s, :sv_version, :t, :forged, 'x', :ra) ON CONFLICT DO UPDATE SET state = excluded.state",
     "unchanged"),
    ("INSERT OR IGNORE INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
     " VALUES (:s, :sv_version, :t, :forged, 'x', :ra)", "unchanged"),
]
_POSTGRES_SNAPSHOT_ATTACKS = [
    ("UPDATE facta_snapshots SET state = CAST(:forged AS jsonb) WHERE stream_id = :s", "refused"),
    ("INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
     " VALUES (:s, :sv_version, :t, CAST(:forged AS jsonb), 'x', :ra)"
     " ON CONFLICT (stream_id, version) DO UPDATE SET state = excluded.state", "refused"),
    ("MERGE INTO facta_snapshots x USING (SELECT CAST(:s AS text) AS s) y ON x.stream_id = y.s"
     " WHEN MATCHED THEN UPDATE SET state = CAST(:forged AS jsonb)", "refused"),
    ("INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)"
     " VALUES (:s, :sv_version, :t, CAST(:forged AS jsonb), 'x', :ra)", "refused"),
]


async def test_no_sql_statement_changes_a_stored_event_or_snapshot(store: EventStore) -> None:
    from sqlalchemy.exc import DBAPIError

    postgres = store.database.dialect == "postgresql"
    stream = sid()
    event = PendingEvent(Noted(text="original", amount=1))
    await store.append_many([StreamAppend(stream, "note", [event], 0)],
                            snapshots=[Snapshot(stream, "note", 1, '{"n": 1}', "note.state/v1")])
    (stored,) = await store.read_log()
    payload = "payload::text" if postgres else "payload"
    cols = _EVENT_COLUMNS.replace("payload", payload)
    state = "state::text" if postgres else "state"

    async def rows() -> tuple[Any, ...]:
        def read(conn: Any) -> tuple[Any, ...]:
            return (
                [tuple(r) for r in conn.execute(text(f"SELECT position, {cols} FROM facta_events ORDER BY position"))],
                [tuple(r) for r in conn.execute(text(f"SELECT stream_id, version, stream_type, {state}, state_schema,"
                                                     " recorded_at FROM facta_snapshots"))],
            )
        return await store.database.read(read)

    before = await rows()
    assert len(before[0]) == 1 and len(before[1]) == 1
    params = {
        "p": stored.position, "id": stored.event_id if postgres else stored.event_id.hex,
        "new_id": uuid.uuid4() if postgres else uuid.uuid4().hex, "s": stream, "t": "note", "v": 1,
        "et": stored.event_type, "sv": 1, "forged": _FORGED, "sv_version": 1,
        "oa": stored.occurred_at if postgres else stored.occurred_at.replace(tzinfo=None).isoformat(" "),
        "ra": stored.recorded_at if postgres else stored.recorded_at.replace(tzinfo=None).isoformat(" "),
    }
    attacks = (_POSTGRES_EVENT_ATTACKS + _POSTGRES_SNAPSHOT_ATTACKS) if postgres else (
        _SQLITE_EVENT_ATTACKS + _SQLITE_SNAPSHOT_ATTACKS)
    outcomes = {}
    for statement, expected in attacks:
        sql = statement.format(cols=_EVENT_COLUMNS)
        try:
            await store.database.write(lambda conn, sql=sql: conn.execute(text(sql), params))
            outcomes[sql] = "unchanged"
        except DBAPIError as exc:
            message = str(exc.orig)
            assert any(reason in message for reason in (
                "append-only", "keeps a snapshot as first written", "duplicate key", "UNIQUE constraint",
            )), (sql, message)
            outcomes[sql] = "refused"
        assert await rows() == before, sql
        if expected == "refused":
            assert outcomes[sql] == "refused", sql
    assert (await store.read_log())[0].event == Noted(text="original", amount=1)
    # facta's own writes still work: a new event, and a snapshot at a version already kept.
    await store.append_many([StreamAppend(stream, "note", noted(1), 1)],
                            snapshots=[Snapshot(stream, "note", 1, '{"n": "again"}', "note.state/v1")])
    kept = await store.latest_snapshot(stream)
    assert kept is not None and kept.state.replace(" ", "") == '{"n":1}'
    await store.save_snapshot(Snapshot(stream, "note", 1, '{"n": "again"}', "note.state/v1"))
    assert await store.stream_version(stream) == 2


# -- 22. migration round trips --------------------------------------------------------------


async def _bank(store: EventStore) -> dict[str, int]:
    from facta.domain.reference import Account
    from facta.eventstore import Repository

    repo = Repository(store, snapshot_every=None)
    expected = {}
    for i in range(6):
        account = Account.open(f"acct-{i}", f"owner-{i}", "EUR")
        for amount in (1_000, 25, i):
            if amount:
                account.deposit(amount)
        await repo.save(account)
        expected[account.id] = 1_025 + i
    return expected


async def _balances(store: EventStore) -> dict[str, int]:
    from facta.projections.reference import AccountBalances

    rows = await store.database.read(
        lambda conn: conn.execute(AccountBalances.balances.select()).mappings().all()
    )
    return {r["account_id"]: r["balance"] for r in rows}


async def test_a_downgrade_and_upgrade_round_trip_keeps_read_models_exact(store: EventStore) -> None:
    from facta import migrations
    from facta.projections import ProjectionRunner
    from facta.projections.reference import AccountBalances

    expected = await _bank(store)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    assert await _balances(store) == expected
    await migrations.downgrade(store.database, "0002")
    assert await migrations.current(store.database) == "0002"
    assert not await store.database.read(lambda conn: conn.dialect.has_table(conn, "account_balances"))
    await migrations.upgrade(store.database)
    await ProjectionRunner(store, AccountBalances).run(once=True)
    assert await _balances(store) == expected  # 1,025 (not 2,050) for acct-0
    assert expected["acct-0"] == 1_025


async def test_a_downgrade_that_cannot_name_a_read_model_is_refused(store: EventStore) -> None:
    from sqlalchemy import insert

    from facta import migrations
    from facta.eventstore.errors import MigrationRefused
    from facta.eventstore.schema import projections

    await store.database.write(lambda conn: conn.execute(insert(projections).values(
        name="somebody_elses", generation=1, source="log", schema_hash="x" * 32, updated_at=datetime.now(UTC))))
    with pytest.raises(MigrationRefused) as info:
        await migrations.downgrade(store.database, "0002")
    assert str(info.value) == (
        "downgrading below revision 0003 drops the read models of projections 'somebody_elses', which are not in"
        " the projection catalog: name their modules with --projections (or FACTA_PROJECTIONS;"
        " alembic: -x projections=MODULES)"
    )
    assert await migrations.current(store.database) == migrations.head()  # nothing changed


async def test_a_downgrade_that_drops_events_needs_the_flag(store: EventStore) -> None:
    from facta import migrations
    from facta.eventstore.errors import MigrationRefused

    await store.append(sid(), "note", noted(3), expected_version=0)
    triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger'" if store.database.dialect == "sqlite" else (
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    before = await store.database.read(lambda conn: sorted(conn.execute(text(triggers)).scalars()))
    assert len(before) >= 3
    with pytest.raises(MigrationRefused) as info:
        await migrations.downgrade(store.database, "base")
    # Refused as a whole: the steps above 0001 (0004 drops triggers) were rolled back too.
    assert await store.database.read(lambda conn: sorted(conn.execute(text(triggers)).scalars())) == before
    assert str(info.value) == (
        "downgrading below revision 0001 drops facta_events and every row in it:"
        " pass --drop-events (alembic: -x drop-events=yes) to do that"
    )
    assert await migrations.current(store.database) == migrations.head()
    assert await count_events(store) == 3
    for bad in ("nonsense", "", "@", "0001:0002"):
        with pytest.raises(MigrationRefused) as refused:
            await migrations.downgrade(store.database, bad)
        assert str(refused.value) == f"cannot downgrade to revision {bad!r}: give base or one of {', '.join(migrations.revisions())}"
    await migrations.downgrade(store.database, "base", drop_events=True)
    assert await migrations.current(store.database) is None
    await migrations.upgrade(store.database)
    assert await count_events(store) == 0
    assert (await store.append(sid(), "note", noted(1), expected_version=0)).positions == (1,)


def test_db_downgrade_command(migrated_url: str) -> None:
    from click.testing import CliRunner

    from facta.replay.cli import cli

    async def fill() -> None:
        async with await EventStore.open(migrated_url) as store:
            await store.append(sid(), "note", noted(2), expected_version=0)

    asyncio.run(fill())
    runner = CliRunner()
    refused = runner.invoke(cli, ["db", "downgrade", "base", "--database-url", migrated_url])
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines() == [
        "facta: error: downgrading below revision 0001 drops facta_events and every row in it:"
        " pass --drop-events (alembic: -x drop-events=yes) to do that"
    ]
    done = runner.invoke(cli, ["db", "downgrade", "0002", "--json", "--database-url", migrated_url])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["after"] == "0002"
    gone = runner.invoke(cli, ["db", "downgrade", "base", "--drop-events", "--json", "--database-url", migrated_url])
    assert gone.exit_code == 0, gone.output
    assert json.loads(gone.output) | {"database": ""} == {"database": "", "before": "0002", "after": None,
                                                         "downgraded": True}
