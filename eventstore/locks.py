"""One active worker per store and name: a relay, a projection runner.

PostgreSQL: a session advisory lock on a connection held for the worker's life; the
server drops it when the session ends, however the worker died. SQLite: ``flock`` on a
lock file; the kernel drops it when the process dies. Others wait and take over.

SQLite's lock files live in one folder for the whole machine, :func:`lock_dir` (the
system temp folder's ``facta-locks``, shared by every user like ``/tmp`` itself;
``FACTA_LOCK_DIR`` names another), never beside the database in the user's working
folder. A file is named after the database file's device and inode (the same file
whatever path reaches it), the worker kind and its name; a worker removes its file as it
lets go, while still holding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import stat
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._diagnostics import describe
from .kafka_support import pause

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["LOCK_CLASS", "POSITIONS_LOCK", "STREAM_LOCK_CLASS", "WRITER_MARKER", "ActiveLock", "active_lock", "lock_dir", "lock_key",
           "lock_path"]

log = logging.getLogger("facta.locks")

# PostgreSQL's advisory locks, the one definition of their keys (the migrations' SQL too).
#: The first key of facta's two-key advisory locks: "fact" in ASCII. The second key is 0
#: for :data:`POSITIONS_LOCK`, 1 for :data:`WRITER_MARKER`, 2 and up for a named lock
#: (:func:`lock_key`).
LOCK_CLASS = 0x66616374
#: The lock every append holds, shared, from before it takes sequence values until it
#: commits: the "writer in flight" marker that log readers wait on (``_readers.py``). In
#: ``pg_locks``: classid ``LOCK_CLASS``, objid 1, objsubid 2 (the two-key form).
WRITER_MARKER = (LOCK_CLASS, 1)
#: The session lock ``facta_take_positions(n)`` (revision 0008) holds only while it takes
#: sequence values, never to commit: exclusive to take n > 1 contiguous values, shared to
#: take one, so one append's positions form one unbroken range however many write at
#: once. In ``pg_locks``: classid ``LOCK_CLASS``, objid 0, objsubid 2.
POSITIONS_LOCK = (LOCK_CLASS, 0)
#: The first key of the transaction lock ``facta_append()`` takes per stream (revision
#: 0004), in ascending order of the second key, ``hashtext(stream_id)``: "facu" in ASCII.
STREAM_LOCK_CLASS = 0x66616375


def lock_key(name: str) -> tuple[int, int]:
    """The two keys of facta's advisory lock named ``name`` (``"relay:NAME"``,
    ``"projection-ddl:NAME"``): :data:`LOCK_CLASS` and 2 plus the name's CRC-32 modulo
    0x7FFFFFF0, so never the writer marker's 1 and always a positive int32."""
    return LOCK_CLASS, 2 + zlib.crc32(name.encode()) % 0x7FFFFFF0



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
    # (In-memory SQLite is refused when a store opens: every store has a file.)
    return _FileLock(lock_path(store.database.url.database or "", kind, name), label, error)


def lock_dir() -> Path:
    """The folder that holds SQLite workers' lock files: ``FACTA_LOCK_DIR``, else
    ``facta-locks`` in the system temp folder (created sticky and writable by all)."""
    from facta.settings import settings  # pydantic-settings: loaded when first needed

    configured = (settings().lock_dir or "").strip()
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "facta-locks"


def lock_path(database: str | os.PathLike[str], kind: str, name: str) -> Path:
    """The lock file of the ``kind`` worker ``name`` on the SQLite file ``database``."""
    where = Path(database)
    try:
        info = os.stat(where)
        identity = f"{info.st_dev:x}-{info.st_ino:x}"
    except OSError:  # not created yet: its resolved path, hashed
        identity = hashlib.sha256(str(where.resolve()).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{kind}-{name}")[:80]
    digest = hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:12]
    return lock_dir() / f"{identity}.{readable}.{digest}.lock"


def _ensure_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        return
    from facta.settings import settings

    if settings().lock_dir is None:  # the shared folder: every user may add files, like /tmp
        with contextlib.suppress(OSError):
            os.chmod(folder, stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO | stat.S_ISVTX)


class _PostgresLock(ActiveLock):
    """A session advisory lock held on a connection of its own for the relay's life; the
    server drops it when that session ends, however the relay died."""

    def __init__(self, store: EventStore, key: str, label: str, error: type[Exception]) -> None:
        self._store, self._label, self._error = store, label, error
        self._key = lock_key(key)
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
            await pause(stop, poll)
        await self.release()
        return False

    async def verify(self) -> None:
        raw = (await self._conn.get_raw_connection()).driver_connection
        try:
            await raw.fetchval("SELECT 1")
        except Exception as exc:
            raise self._error(f"{self._label} lost its lock connection ({describe(exc)}); stopping") from None

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                raw = (await self._conn.get_raw_connection()).driver_connection
                await raw.fetchval("SELECT pg_advisory_unlock($1, $2)", *self._key)
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class _FileLock(ActiveLock):
    """flock on a file in :func:`lock_dir`; the kernel drops it when the process dies."""

    def __init__(self, path: Path, label: str, error: type[Exception]) -> None:
        self._path, self._label, self._error = path, label, error
        self._fd: int | None = None
        self._locked = False

    async def acquire(self, stop: asyncio.Event, poll: float, *, wait: bool = True) -> bool:
        try:
            _ensure_dir(self._path.parent)
            # Read-only is enough for flock, and works on a file another user created.
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError as exc:
            raise self._error(f"{self._label}: cannot open its lock file {self._path} ({exc.strerror}): "
                              f"set FACTA_LOCK_DIR to a folder you can write to") from None
        with contextlib.suppress(OSError):
            os.fchmod(self._fd, 0o666)  # others may take over after this process
        waited = False
        while not stop.is_set():
            if self._try():
                if waited:
                    log.info("%s: the previous one is gone; taking over", self._label)
                return True
            if not wait:
                break
            if not waited:
                log.info("%s: another holds %s; waiting to take over", self._label, self._path)
                waited = True
            await pause(stop, poll)
        await self.release()
        return False

    def _try(self) -> bool:
        assert self._fd is not None
        for _ in range(100):
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                if os.path.samestat(os.fstat(self._fd), os.stat(self._path)):
                    self._locked = True
                    return True
            except FileNotFoundError:
                pass
            # The holder before us removed the file as it let go: lock the one at the path now.
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o666)
        return False

    async def verify(self) -> None:
        """Keep the lock file from being aged out of the temp folder (tmp cleaners go by
        modification time); if it was removed anyway, lock a new one in its place."""
        if self._fd is None:
            return
        try:
            same = os.path.samestat(os.fstat(self._fd), os.stat(self._path))
        except OSError:
            same = False
        if same:
            with contextlib.suppress(OSError):
                os.utime(self._path)
            return
        _ensure_dir(self._path.parent)
        fd = os.open(self._path, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._error(f"{self._label}: its lock file {self._path} was replaced and is held by another") from None
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = fd
    async def release(self) -> None:
        if self._fd is not None:
            if self._locked:
                # Removed while still held, so no lock files pile up; a waiter that then
                # gets the removed file's lock sees that and locks the path's new file.
                with contextlib.suppress(OSError):
                    if os.path.samestat(os.fstat(self._fd), os.stat(self._path)):
                        os.unlink(self._path)
            self._locked = False
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
