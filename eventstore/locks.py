"""One active worker per store and name: a relay, a projection runner.

PostgreSQL: a session advisory lock on a connection held for the worker's life; the
server drops it when the session ends, however the worker died. SQLite: ``flock`` on a
file beside the database; the kernel drops it when the process dies. Others wait and
take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["ActiveLock", "active_lock"]

log = logging.getLogger("facta.locks")



class ActiveLock:
    async def acquire(self, stop: asyncio.Event, poll: float, *, wait: bool = True) -> bool:
        raise NotImplementedError

    async def verify(self) -> None:
        """Raise if the lock was lost (another worker may be active now)."""

    async def release(self) -> None:
        raise NotImplementedError


def active_lock(store: EventStore, kind: str, name: str, error: type[Exception]) -> ActiveLock:
    """The lock that makes one ``kind`` worker (a relay, a projection) named ``name``
    active on ``store``; ``error`` is raised if the lock is lost."""
    label = f"{kind} {name!r}"
    if store.database.dialect == "postgresql":
        return _PostgresLock(store, f"{kind}:{name}", label, error)
    return _FileLock(Path(f"{store.database.url.database}.{kind}-{name}.lock"), label)


class _PostgresLock(ActiveLock):
    """A session advisory lock held on a connection of its own for the relay's life; the
    server drops it when that session ends, however the relay died."""

    def __init__(self, store: EventStore, key: str, label: str, error: type[Exception]) -> None:
        self._store, self._label, self._error = store, label, error
        self._key = (0x66616374, 2 + zlib.crc32(key.encode()) % 0x7FFFFFF0)
        self._conn: Any = None

    async def acquire(self, stop: asyncio.Event, poll: float, *, wait: bool = True) -> bool:
        engine = self._store.database.engine
        assert engine is not None
        self._conn = await engine.connect()
        raw = (await self._conn.get_raw_connection()).driver_connection
        waited = False
        while not stop.is_set():
            if await raw.fetchval("SELECT pg_try_advisory_lock($1, $2)", *self._key):
                if waited:
                    log.info("%s: the previous one is gone; taking over", self._label)
                return True
            if not wait:
                break
            if not waited:
                log.info("%s: another is active on this store; waiting to take over", self._label)
                waited = True
            await _sleep(stop, poll)
        await self.release()
        return False

    async def verify(self) -> None:
        raw = (await self._conn.get_raw_connection()).driver_connection
        try:
            await raw.fetchval("SELECT 1")
        except Exception as exc:
            raise self._error(f"{self._label} lost its lock connection ({_describe(exc)}); stopping") from None

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                raw = (await self._conn.get_raw_connection()).driver_connection
                await raw.fetchval("SELECT pg_advisory_unlock($1, $2)", *self._key)
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class _FileLock(ActiveLock):
    """flock on a file beside the SQLite database; the kernel drops it when the process dies."""

    def __init__(self, path: Path, label: str) -> None:
        self._path, self._label = path, label
        self._fd: int | None = None

    async def acquire(self, stop: asyncio.Event, poll: float, *, wait: bool = True) -> bool:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        waited = False
        while not stop.is_set():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    break
                if not waited:
                    log.info("%s: another holds %s; waiting to take over", self._label, self._path)
                    waited = True
                await _sleep(stop, poll)
                continue
            if waited:
                log.info("%s: the previous one is gone; taking over", self._label)
            return True
        await self.release()
        return False

    async def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
