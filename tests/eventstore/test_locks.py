"""SQLite workers' lock files: out of the user's folders, one per database file and
worker, excluding each other however the database is reached (issue 10, item 15)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

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
