"""SQLite workers' lock files: out of the user's folders, one per database file and
worker, excluding each other however the database is reached (issue 10, item 15)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from facta.domain import DomainEvent
from facta.eventstore import EventStore
from facta.eventstore.locks import active_lock, lock_dir, lock_path
from facta.projections.reference import REFERENCE_PROCESSES, REFERENCE_PROJECTIONS
from facta.replay.demo import run_demo


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "locks"
    monkeypatch.setenv("FACTA_LOCK_DIR", str(folder))
    return folder


async def test_the_demo_leaves_nothing_beside_the_database(tmp_path: Path, private_lock_dir: Path) -> None:
    data = tmp_path / "city"
    data.mkdir()
    summary = await run_demo(f"sqlite:///{data / 'facta.db'}", rides=3, riders=2, drivers=2, telemetry=2, seed=1)
    assert set(summary.projected) == {p.name for p in (*REFERENCE_PROCESSES, *REFERENCE_PROJECTIONS)}
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith("facta.db")) == []
    assert not any(data.glob("*.lock")) and not any(Path.cwd().glob("*.lock"))
    # Released locks remove their files: nothing piles up in the lock folder either.
    assert list(private_lock_dir.glob("*.lock")) == []


async def test_one_holder_per_database_file_whatever_the_path(tmp_path: Path, private_lock_dir: Path) -> None:
    db = tmp_path / "facta.db"
    link = tmp_path / "other-name.db"
    async with await EventStore.open(f"sqlite:///{db}", migrate=True) as first:
        link.symlink_to(db)
        async with await EventStore.open(f"sqlite:///{link}") as second:
            stop = asyncio.Event()
            a = active_lock(first, "projection", "billing", RuntimeError)
            b = active_lock(second, "projection", "billing", RuntimeError)
            other = active_lock(second, "projection", "ride_board", RuntimeError)
            assert await a.acquire(stop, 0.01, wait=False)
            assert lock_path(db, "projection", "billing") == lock_path(link, "projection", "billing")
            assert lock_path(db, "projection", "billing").parent == lock_dir() == private_lock_dir
            assert not await b.acquire(stop, 0.01, wait=False), "the same file through a link is the same lock"
            assert await other.acquire(stop, 0.01, wait=False), "another worker name is another lock"
            waiter = asyncio.ensure_future(b.acquire(stop, 0.01))
            await asyncio.sleep(0.1)
            assert not waiter.done()
            await a.release()  # removes the file while holding it; the waiter locks the new one
            assert await asyncio.wait_for(waiter, 10)
            c = active_lock(first, "projection", "billing", RuntimeError)
            assert not await c.acquire(stop, 0.01, wait=False), "the waiter holds it now"
            await b.release()
            await other.release()
    assert list(private_lock_dir.glob("*.lock")) == []


async def test_a_lock_file_removed_by_a_tmp_cleaner_is_replaced(tmp_path: Path) -> None:
    async with await EventStore.open(f"sqlite:///{tmp_path / 'facta.db'}", migrate=True) as store:
        stop = asyncio.Event()
        lock = active_lock(store, "relay", "default", RuntimeError)
        assert await lock.acquire(stop, 0.01, wait=False)
        path = lock_path(tmp_path / "facta.db", "relay", "default")
        os.unlink(path)
        await lock.verify()
        assert path.exists()
        rival = active_lock(store, "relay", "default", RuntimeError)
        assert not await rival.acquire(stop, 0.01, wait=False)
        await lock.release()


async def test_an_unwritable_lock_folder_is_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("FACTA_LOCK_DIR", str(blocked / "locks"))
    async with await EventStore.open(f"sqlite:///{tmp_path / 'facta.db'}", migrate=True) as store:
        lock = active_lock(store, "projection", "billing", RuntimeError)
        with pytest.raises(RuntimeError) as error:
            await lock.acquire(asyncio.Event(), 0.01, wait=False)
    message = str(error.value)
    assert "\n" not in message and message.startswith("projection 'billing': cannot open its lock file ")
    assert message.endswith("set FACTA_LOCK_DIR to a folder you can write to")


_WAITERS = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = $1 AND objid = $2 AND objsubid = 2")


async def test_the_advisory_lock_keys_are_the_ones_facta_takes(postgres_url: str) -> None:
    """Issue 11, item 9: the keys are defined once (facta.eventstore.locks). A lock held
    under each definition makes the matching facta operation wait, so each definition is
    the key the code (and the migrations' SQL) really takes: a worker's lock, the stream
    lock of facta_append(), the projection DDL lock, the writer marker and the positions
    lock (held exclusively, it stops appends of one event and of many alike)."""
    from facta.eventstore.locks import POSITIONS_LOCK, STREAM_LOCK_CLASS, WRITER_MARKER, lock_key
    from facta.projections import ProjectionRunner
    from facta.projections.reference import AccountBalances

    from ..conftest import migrate
    from ..polling import wait_for

    await migrate(postgres_url)
    assert WRITER_MARKER == (0x66616374, 1) and STREAM_LOCK_CLASS == 0x66616375
    assert POSITIONS_LOCK == (0x66616374, 0)
    assert lock_key("relay:main") == lock_key("relay:main") != lock_key("relay:other")
    assert all(2 <= lock_key(name)[1] < 2**31 for name in ("", "relay:main", "projection-ddl:é" * 50))
    async with await EventStore.open(postgres_url) as store, store.database.driver_connection() as gate:
        stop = asyncio.Event()
        worker = active_lock(store, "relay", "main", RuntimeError)
        assert await worker.acquire(stop, 0.01, wait=False)
        held = await gate.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                                   " AND classid = $1 AND objid = $2 AND objsubid = 2", *lock_key("relay:main"))
        assert held == 1
        await worker.release()

        async def waiting(key: tuple[int, int]) -> int:
            return int(await gate.fetchval(_WAITERS, *key))

        # The stream lock: an append to the locked stream waits, one to another stream does not.
        async with gate.transaction():
            await gate.execute("SELECT pg_advisory_xact_lock($1, hashtext('s-1'))", STREAM_LOCK_CLASS)
            key = (STREAM_LOCK_CLASS, await gate.fetchval("SELECT hashtext('s-1')::bigint & 4294967295"))
            append = asyncio.ensure_future(store.append("s-1", "note", _noted(), expected_version=0))
            await wait_for(lambda: waiting(key), lambda n: n == 1, 30, "an append waiting for the stream lock")
            assert not append.done()
        assert (await append).last_version == 1
        # The projection DDL lock: a runner creating its tables waits for it.
        ddl = lock_key(f"projection-ddl:{AccountBalances.name}")
        async with gate.transaction():
            await gate.execute("SELECT pg_advisory_xact_lock($1, $2)", *ddl)
            run = asyncio.ensure_future(ProjectionRunner(store, AccountBalances).run(once=True))
            await wait_for(lambda: waiting(ddl), lambda n: n == 1, 30, "a runner waiting for the DDL lock")
            assert not run.done()
        await run
        # The writer marker: an append waits while it is held exclusively.
        await gate.execute("SELECT pg_advisory_lock($1, $2)", *WRITER_MARKER)
        try:
            append = asyncio.ensure_future(store.append("s-2", "note", _noted(), expected_version=0))
            await wait_for(lambda: waiting(WRITER_MARKER), lambda n: n == 1, 30, "an append waiting for the marker")
            assert not append.done()
        finally:
            await gate.execute("SELECT pg_advisory_unlock($1, $2)", *WRITER_MARKER)
        assert (await append).last_version == 1
        # The positions lock: appends of one event and of three wait while it is held exclusively.
        await gate.execute("SELECT pg_advisory_lock($1, $2)", *POSITIONS_LOCK)
        try:
            one = asyncio.ensure_future(store.append("s-3", "note", _noted(), expected_version=0))
            three = asyncio.ensure_future(store.append("s-4", "note", _noted() * 3, expected_version=0))
            await wait_for(lambda: waiting(POSITIONS_LOCK), lambda n: n == 2, 30, "two appends waiting for positions")
            assert not one.done() and not three.done()
        finally:
            await gate.execute("SELECT pg_advisory_unlock($1, $2)", *POSITIONS_LOCK)
        assert (await one).last_version == 1 and (await three).last_version == 3



class _Noted(DomainEvent, name="test_locks.noted", version=1):
    n: int


def _noted() -> list[DomainEvent]:
    return [_Noted(n=1)]
