"""facta.eventsourcing's direct SQLite writes (``SQLiteWrites``: the recorders write in the
calling thread on a connection of its own) against the store's path (the blocking facade,
the store's loop and writer thread): the same rows, the same positions, the same errors,
the store's wake-up for a waiting subscription, contiguous positions for concurrent
writer processes, and the store writer's connection settings.

Each comparison runs one list of operations twice, on two fresh SQLite files: once with
the recorders' direct writer, once with it switched off (``_writes = None``: every write
through the store, as before). The direct run also counts the recorders' store calls, so
a direct path that quietly fell back to the store fails the test.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import Notification, StoredEvent, Tracking
from eventsourcing.utils import Environment

from facta.eventsourcing import FactaFactory, persistence
from facta.eventsourcing.persistence import FactaRecorder
from facta.eventstore import EventStore, integrity
from facta.eventstore import store as store_module
from facta.eventstore.validation import TEXT_LIMITS

A = UUID("00000000-0000-4000-8000-00000000000a")
B = UUID("00000000-0000-4000-8000-00000000000b")
C = UUID("00000000-0000-4000-8000-00000000000c")
LONG_TOPIC = "t" * (TEXT_LIMITS["event type"] + 1)


def _url(path: Path, **query: str) -> str:
    return f"sqlite+aiosqlite:///{path}" + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _factory(url: str, name: str, **env: str) -> FactaFactory:
    return FactaFactory(Environment(name, {"FACTA_DATABASE_URL": url, **env}))


class Counted:
    """Counts a recorder's calls through the store (``FactaRecorder.call``)."""

    def __init__(self, recorder: FactaRecorder) -> None:
        self.calls = 0
        call = recorder.call

        def counting(fn: Any) -> Any:
            self.calls += 1
            return call(fn)

        recorder.call = counting  # type: ignore[method-assign]


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # the class and the one line are what is compared
        return type(exc).__name__, str(exc)


def _ev(originator: UUID | str, version: int, state: bytes, topic: str = "bank:Deposited") -> StoredEvent:
    return StoredEvent(originator, version, topic, state)


JSON = b'{"amount":{"_type_":"decimal_str","_data_":"10.00"},"originator_topic":"bank:Account"}'
NAN = b'{"amount":NaN}'
OPAQUE = zlib.compress(JSON)


def _operations(url: str) -> Iterator[tuple[str, Callable[[], Any], list[FactaRecorder]]]:
    """(label, operation, the recorders it writes with) in order, on a fresh database."""
    bank = _factory(url, "Bank")
    other = _factory(url, "Other")
    texts = _factory(url, "Texts", ORIGINATOR_ID_TYPE="text")
    app = bank.process_recorder()
    snaps = bank.aggregate_recorder("snapshots")
    tracking = bank.tracking_recorder()
    foreign = other.application_recorder()
    text_ids = texts.application_recorder()
    recorders: list[Any] = [app, snaps, tracking, foreign, text_ids]
    yield "one event", lambda: app.insert_events([_ev(A, 1, JSON)]), recorders
    yield "three events, two streams, tracking", lambda: app.insert_events(
        [_ev(A, 2, NAN), _ev(B, 1, OPAQUE), _ev(B, 2, b" " + JSON)], tracking=Tracking("Up", 5)), recorders
    yield "conflict: a stored version", lambda: app.insert_events([_ev(C, 1, JSON), _ev(A, 2, JSON)]), recorders
    yield "conflict: given twice", lambda: app.insert_events([_ev(C, 1, JSON), _ev(C, 1, JSON)]), recorders
    yield "tracking not above", lambda: app.insert_events([_ev(C, 1, JSON)], tracking=Tracking("Up", 5)), recorders
    yield "tracking alone, above", lambda: app.insert_events([], tracking=Tracking("Up", 6)), recorders
    yield "stream type mismatch", lambda: foreign.insert_events([_ev(C, 1, JSON), _ev(A, 3, JSON)]), recorders
    yield "too-long topic", lambda: app.insert_events([_ev(C, 1, JSON, LONG_TOPIC)]), recorders
    yield "too-long originator id", lambda: text_ids.insert_events(
        [_ev("x" * (TEXT_LIMITS["stream id"] + 1), 1, JSON)]), recorders
    yield "NUL in an originator id", lambda: text_ids.insert_events([_ev("a\x00b", 1, JSON)]), recorders
    yield "too-long tracking name", lambda: app.insert_events(
        [_ev(C, 1, JSON)], tracking=Tracking("u" * TEXT_LIMITS["tracking name"], 1)), recorders
    yield "version outside int32", lambda: app.insert_events([_ev(C, 2**31, JSON)]), recorders
    yield "text originator ids", lambda: text_ids.insert_events([_ev("acc-1", 1, JSON), _ev("acc-1", 2, NAN)]), \
        recorders
    yield "snapshot", lambda: snaps.insert_events([_ev(A, 2, JSON, "bank:Account"), _ev(B, 2, OPAQUE)]), recorders
    yield "snapshot conflict", lambda: snaps.insert_events([_ev(C, 1, JSON), _ev(A, 2, JSON)]), recorders
    yield "snapshot too-long topic", lambda: snaps.insert_events([_ev(C, 1, JSON, LONG_TOPIC)]), recorders
    yield "tracking record", lambda: tracking.insert_tracking(Tracking("Other", 3)), recorders
    yield "tracking record not above", lambda: tracking.insert_tracking(Tracking("Other", 3)), recorders
    yield "tracking record too-long name", lambda: tracking.insert_tracking(
        Tracking("o" * TEXT_LIMITS["tracking name"], 1)), recorders
    yield "after the refusals", lambda: app.insert_events([_ev(C, 1, JSON), _ev(C, 2, JSON)]), recorders
    for factory in (bank, other, texts):
        factory.close()


def _run(url: str, direct: bool) -> tuple[list[tuple[str, str, Any]], int]:
    """Every operation's outcome on ``url``; and how many store calls the writes made."""
    outcomes, calls = [], 0
    counted: dict[int, Counted] = {}
    for label, operation, recorders in _operations(url):
        for recorder in recorders:
            if not direct:
                recorder._writes = None
            elif id(recorder) not in counted:
                counted[id(recorder)] = Counted(recorder)
        outcomes.append((label, *_outcome(operation)))
    calls = sum(c.calls for c in counted.values())
    persistence._close_all()
    return outcomes, calls


def _rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three tables, without event ids and times (and the event hashes,
    which cover both: both files' chains are checked by facta's verify instead)."""
    conn = sqlite3.connect(path)
    try:
        found = {}
        for table, order, times in (("facta_events", "position", ("event_id", "occurred_at", "recorded_at", "event_hash")),
                                    ("facta_snapshots", "stream_id, version", ("recorded_at",)),
                                    ("facta_tracking", "name", ("updated_at",))):
            cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")  # noqa: S608 (our names)
            names = [d[0] for d in cursor.description]
            found[table] = [{k: v for k, v in zip(names, row, strict=True) if k not in times} for row in cursor]
        return found
    finally:
        conn.close()


async def _verify(url: str) -> integrity.VerifyReport:
    store = await EventStore.open(url)
    try:
        return await integrity.verify(store)
    finally:
        await store.close()


def _times(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT event_id, occurred_at, recorded_at FROM facta_events").fetchall()
    finally:
        conn.close()


def test_direct_and_store_paths_write_the_same_rows_and_raise_the_same_errors(tmp_path: Path) -> None:
    direct_db, store_db = tmp_path / "direct.db", tmp_path / "store.db"
    direct, direct_calls = _run(_url(direct_db), direct=True)
    through_store, _ = _run(_url(store_db), direct=False)

    assert direct == through_store
    assert direct_calls == 0  # no write fell back to the store
    outcomes = {label: (kind, value) for label, kind, value in direct}
    assert outcomes["one event"] == ("ok", [1])
    assert outcomes["three events, two streams, tracking"] == ("ok", [2, 3, 4])
    assert outcomes["after the refusals"] == ("ok", [7, 8])
    assert outcomes["conflict: a stored version"][0] == "IntegrityError"
    assert "version 2" in outcomes["conflict: a stored version"][1]
    assert outcomes["tracking not above"][0] == "IntegrityError"
    assert outcomes["stream type mismatch"][0] == "IntegrityError"
    assert "Bank" in outcomes["stream type mismatch"][1]
    for label in ("too-long topic", "too-long originator id", "NUL in an originator id", "too-long tracking name",
                  "version outside int32", "snapshot too-long topic", "tracking record too-long name"):
        assert outcomes[label][0] == "DataError", label
    assert outcomes["snapshot conflict"][0] == "IntegrityError"
    assert outcomes["tracking record not above"][0] == "IntegrityError"

    rows = _rows(direct_db)
    assert rows == _rows(store_db)
    for path in (direct_db, store_db):  # each event's hash chains as the store's own appends do
        report = asyncio.run(_verify(_url(path)))
        assert report.intact and report.events == len(rows["facta_events"]), report
    events = rows["facta_events"]
    assert [(e["stream_id"], e["version"]) for e in events] == [
        (str(A), 1), (str(A), 2), (str(B), 1), (str(B), 2), ("acc-1", 1), ("acc-1", 2), (str(C), 1), (str(C), 2)]
    assert events[0]["payload"] == JSON.decode() and events[0]["payload_bytes"] == JSON
    assert events[1]["payload"].startswith('{"$opaque": {"length": 14,')  # NaN: not JSON facta stores
    assert events[2]["payload_bytes"] == OPAQUE
    assert rows["facta_tracking"] == [{"name": "Bank/Other", "position": 3}, {"name": "Bank/Up", "position": 6}]
    assert [(s["stream_id"], s["version"], s["state_schema"]) for s in rows["facta_snapshots"]] == [
        (str(A), 2, "bank:Account"), (str(B), 2, "bank:Deposited")]
    for event_id, occurred, recorded in _times(direct_db):
        assert len(event_id) == 32 and occurred == recorded and len(recorded) == len("2026-01-01 00:00:00.000000")


def test_a_busy_database_gives_the_same_one_line_on_both_paths(tmp_path: Path) -> None:
    found = []
    for direct in (True, False):
        path = tmp_path / f"busy-{direct}.db"
        factory = _factory(_url(path, timeout="0.05"), "Bank")
        recorder = factory.application_recorder()
        assert isinstance(recorder, FactaRecorder)
        if not direct:
            recorder._writes = None
        counted = Counted(recorder)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            found.append(_outcome(lambda: recorder.insert_events([_ev(A, 1, JSON)])))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (counted.calls == 0) == direct
        assert recorder.insert_events([_ev(A, 1, JSON)]) == [1]  # nothing was written by the refused one
        factory.close()
    assert found[0][0] == "OperationalError"
    assert found[0][1].replace("busy-True", "busy-False") == found[1][1]
    assert "is locked" in found[0][1] and "\n" not in found[0][1]


def test_a_subscription_wakes_at_once_for_a_direct_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No polling: the subscription's wait and the store's own polls last an hour, so only
    # the wake-up of the append can end the wait within the join below.
    monkeypatch.setattr(persistence, "SUBSCRIPTION_WAIT_S", 3600.0)
    monkeypatch.setattr(store_module, "_WAIT_POLL_S", 3600.0)
    monkeypatch.setattr(store_module, "_WAIT_POLL_MAX_S", 3600.0)
    url = _url(tmp_path / "wake.db")
    factory = _factory(url, "Bank")
    writer, reader = factory.application_recorder(), factory.application_recorder()
    assert isinstance(writer, FactaRecorder) and isinstance(reader, persistence.FactaApplicationRecorder)
    counted = Counted(writer)
    assert writer.insert_events([_ev(A, 1, JSON)]) == [1]
    got: list[Notification] = []
    subscription = reader.subscribe(gt=1)

    def follow() -> None:
        got.append(next(subscription))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    store = factory.store.store
    deadline = time.monotonic() + 60
    while not store._append_waiters and time.monotonic() < deadline:  # the follower waits at the head
        time.sleep(0.005)
    assert store._append_waiters
    assert writer.insert_events([_ev(A, 2, NAN)]) == [2]
    thread.join(60)
    assert not thread.is_alive(), "the subscription was not woken by the direct append"
    assert [(n.id, n.originator_id, n.originator_version, n.state) for n in got] == [(2, A, 2, NAN)]
    assert counted.calls == 0
    subscription.stop()
    factory.close()


def _writer(url: str, barrier: Any, index: int, inserts: int, results: Any) -> None:
    factory = _factory(url, "Bank")
    recorder = factory.application_recorder()
    assert isinstance(recorder, FactaRecorder) and recorder._writes is not None
    counted = Counted(recorder)
    stream = UUID(int=index + 1, version=4)
    barrier.wait()
    positions = []
    for k in range(inserts):
        base = 3 * k
        found = recorder.insert_events([_ev(stream, base + 1, JSON), _ev(stream, base + 2, NAN),
                                        _ev(stream, base + 3, OPAQUE)])
        positions.append(list(found or []))
    factory.close()
    results.put((index, positions, counted.calls))


def test_four_processes_writing_directly_get_contiguous_positions_and_lose_nothing(tmp_path: Path) -> None:
    url = _url(tmp_path / "four.db")
    factory = _factory(url, "Bank")  # migrates the file before the writers start
    factory.close()
    persistence._close_all()
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(4), spawn.Queue()
    inserts = 40
    workers = [spawn.Process(target=_writer, args=(url, barrier, i, inserts, results)) for i in range(4)]
    for worker in workers:
        worker.start()
    found = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    every = []
    for _index, positions, calls in found:
        assert calls == 0
        assert len(positions) == inserts
        for one in positions:
            assert one == list(range(one[0], one[0] + 3))  # one insert: one contiguous range
            every.extend(one)
    assert sorted(every) == list(range(1, 4 * inserts * 3 + 1))
    conn = sqlite3.connect(tmp_path / "four.db")
    try:
        rows = conn.execute("SELECT position, stream_id, version FROM facta_events ORDER BY position").fetchall()
    finally:
        conn.close()
    assert [r[0] for r in rows] == sorted(every)
    for index in range(4):
        stream = str(UUID(int=index + 1, version=4))
        assert [r[2] for r in rows if r[1] == stream] == list(range(1, inserts * 3 + 1))


def _pragmas(conn: sqlite3.Connection) -> tuple[Any, ...]:
    return tuple(conn.execute(f"PRAGMA {name}").fetchone()[0] for name in (
        "journal_mode", "synchronous", "busy_timeout", "wal_autocheckpoint", "cache_size", "temp_store",
        "foreign_keys"))


def test_a_direct_connection_has_the_store_writers_pragmas(tmp_path: Path) -> None:
    factory = _factory(_url(tmp_path / "pragmas.db", timeout="7.5"), "Bank")
    recorder = factory.application_recorder()
    assert isinstance(recorder, FactaRecorder) and recorder._writes is not None
    assert recorder.insert_events([_ev(A, 1, JSON)]) == [1]
    direct = recorder._writes.run(_pragmas)
    store = factory.store.call(lambda s: s.database.sqlite_write(_pragmas))
    # WAL, synchronous FULL, the URL's timeout, facta's checkpoint, cache and temp settings
    assert direct is not None and direct[0] == store == ("wal", 2, 7500, 10_000, -16_384, 2, 1)
    factory.close()
