"""Database URLs and engines: which URLs facta accepts and how it connects to each dialect.

facta's URLs name async drivers (``sqlite+aiosqlite``, ``postgresql+asyncpg``); plain
``sqlite://`` and ``postgresql://`` URLs are accepted and mapped to them.

A URL's query options are facta's to check, each with its type and range, before any
connection is made; any other option is refused (:data:`URL_OPTIONS` lists them):

- PostgreSQL: ``host`` and ``port`` (more hosts, or a socket folder), ``ssl`` (or
  ``sslmode``): disable, allow, prefer, require, verify-ca, verify-full;
  ``timeout`` (connecting, seconds) and ``command_timeout`` (each statement, seconds),
  above 0 and at most 86400; ``statement_cache_size`` (asyncpg's) and
  ``prepared_statement_cache_size`` (SQLAlchemy's), 0 (off) to 1000000;
  ``target_session_attrs``: any, primary, standby, prefer-standby, read-write, read-only.
- SQLite: ``timeout``, seconds a write waits for another connection's lock before
  :class:`~facta.eventstore.errors.DatabaseBusy`, 0 to 86400 (default 60).
"""

from __future__ import annotations

import asyncio
import math
import queue
import re
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

if TYPE_CHECKING:  # imported by Database.create for PostgreSQL only: it imports SQLAlchemy's ORM
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.pool import PoolProxiedConnection

from facta.errors import DatabaseBusy, DatabaseUnavailable, DatabaseURLError, StoreError

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "DEFAULT_DATABASE_URL",
    "URL_OPTIONS",
    "Database",
    "database_url_from_env",
    "driver_options",
    "resolve_url",
    "sqlite_append_connection",
    "sqlite_immediate",
    "translate_connect_errors",
]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./facta.db"
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_ASYNC = {"sqlite+aiosqlite", "postgresql+asyncpg"}


def database_url_from_env() -> str:
    """``FACTA_DATABASE_URL`` (:func:`facta.settings.settings`), unless unset or empty:
    then :data:`DEFAULT_DATABASE_URL`."""
    from facta.settings import settings  # pydantic-settings: loaded when first needed

    return settings().database_url or DEFAULT_DATABASE_URL


def resolve_url(url: str | URL) -> URL:
    """Parse ``url`` and pick facta's async driver for it; reject what facta cannot use."""
    text = url.render_as_string(hide_password=True) if isinstance(url, URL) else url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DatabaseURLError(f"invalid database URL {text!r}: expected e.g. sqlite+aiosqlite:///./facta.db") from None
    backend = parsed.get_backend_name()
    driver = f"{backend}+{parsed.get_driver_name()}" if "+" in parsed.drivername else None
    if backend not in _DRIVERS:
        raise DatabaseURLError(f"unsupported database {backend!r} in URL {text!r}: facta supports sqlite and postgresql")
    if driver is None:
        parsed = parsed.set(drivername=_DRIVERS[backend])
    elif parsed.drivername not in _ASYNC:
        raise DatabaseURLError(
            f"driver {parsed.get_driver_name()!r} in URL {text!r} is not supported: use {_DRIVERS[backend]}"
        )
    for port in _ports(parsed):
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise DatabaseURLError(f"invalid port {port!r} in database URL {text!r}: a port is 1 to 65535")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseURLError(f"in-memory SQLite ({text!r}) cannot be shared by connections: name a file")
    _check_options(parsed, text)
    return parsed


# -- query options ------------------------------------------------------------------------

MAX_URL_SECONDS = 86_400.0
"""The longest timeout a URL option takes: a day."""
MAX_CACHE_SIZE = 1_000_000
"""The largest statement cache a URL option asks for."""
SQLITE_DEFAULT_TIMEOUT_S = 60.0
"""How long a SQLite write waits for another connection's write lock, unless ``?timeout=``."""
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")


def _seconds(low: float, above: bool) -> Callable[[str], float]:
    limit = f"{'above' if above else 'from'} {low:g}{'' if above else ' up'} to {MAX_URL_SECONDS:g}"

    def parse(value: str) -> float:
        seconds = float(value) if _DECIMAL.fullmatch(value) else math.nan
        if not math.isfinite(seconds) or seconds > MAX_URL_SECONDS or seconds < low or (above and seconds == low):
            raise ValueError(f"give a number of seconds {limit}")
        return seconds

    return parse


def _count(value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 7 or int(value) > MAX_CACHE_SIZE:
        raise ValueError(f"give a whole number from 0 (no cache) to {MAX_CACHE_SIZE}")
    return int(value)


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"give one of {', '.join(choices)}")
        return value

    return parse


_PASSED_ON = object()
"""Options SQLAlchemy itself turns into the connection's address (checked above)."""

URL_OPTIONS: dict[str, dict[str, Any]] = {
    "postgresql": {
        "host": _PASSED_ON,
        "port": _PASSED_ON,
        "ssl": _choice(_SSL_MODES),
        "sslmode": _choice(_SSL_MODES),
        "timeout": _seconds(0.0, above=True),
        "command_timeout": _seconds(0.0, above=True),
        "statement_cache_size": _count,
        "prepared_statement_cache_size": _count,
        "target_session_attrs": _choice(_SESSION_ATTRS),
    },
    "sqlite": {
        "timeout": _seconds(0.0, above=False),
    },
}
"""The query options a database URL may carry, per dialect (each name maps to its parser)."""

_DRIVER_NAMES = {"sslmode": "ssl"}  # libpq's name for asyncpg's option


def _check_options(url: URL, text: str) -> None:
    backend = url.get_backend_name()
    accepted = URL_OPTIONS[backend]
    named = "PostgreSQL" if backend == "postgresql" else "SQLite"
    for key, value in url.query.items():
        parse = accepted.get(key)
        if parse is None:
            raise DatabaseURLError(
                f"unknown option {key!r} in database URL {text!r}: {named} URLs take {', '.join(accepted)}"
            )
        if parse is _PASSED_ON:
            continue
        if not isinstance(value, str):
            raise DatabaseURLError(f"option {key!r} is given {len(value)} times in database URL {text!r}: give it once")
        try:
            parse(value)
        except ValueError as exc:
            raise DatabaseURLError(f"invalid {key}={value!r} in database URL {text!r}: {exc}") from None
    if "ssl" in url.query and "sslmode" in url.query:
        raise DatabaseURLError(f"database URL {text!r} gives both ssl and sslmode: give one")


def driver_options(url: URL) -> dict[str, Any]:
    """The typed driver arguments of a resolved URL's query options (``host`` and
    ``port`` excepted, which stay in the URL): e.g. ``{"command_timeout": 5.0}``.
    ``sslmode`` is given to asyncpg as ``ssl``; a SQLite URL always has ``timeout``."""
    accepted = URL_OPTIONS[url.get_backend_name()]
    options: dict[str, Any] = {}
    for key, value in url.query.items():
        parse = accepted[key]
        if parse is not _PASSED_ON:
            assert isinstance(value, str)
            options[_DRIVER_NAMES.get(key, key)] = parse(value)
    if url.get_backend_name() == "sqlite":
        options.setdefault("timeout", SQLITE_DEFAULT_TIMEOUT_S)
    return options


def _without_options(url: URL) -> URL:
    """``url`` without the query options :func:`driver_options` hands to the driver."""
    accepted = URL_OPTIONS[url.get_backend_name()]
    return url.difference_update_query([key for key in url.query if accepted.get(key) is not _PASSED_ON])


def _ports(url: URL) -> list[str]:
    """Every port a URL names: in its authority, or as ``?port=`` or ``?host=host:port``."""
    ports = [] if url.port is None else [str(url.port)]
    for key, value in url.query.items():
        for item in (value,) if isinstance(value, str) else value:
            if key == "port":
                ports.append(item)
            elif key == "host" and ":" in item and not item.startswith("/"):
                ports.append(item.rsplit(":", 1)[1])
    return ports


_CONNECT_ERRORS: tuple[type[BaseException], ...] = (OSError, OperationalError, InterfaceError)


def _connect_errors() -> tuple[type[BaseException], ...]:
    """:data:`_CONNECT_ERRORS` and, once asyncpg is loaded (only a PostgreSQL engine loads
    it), the connection errors asyncpg raises on the driver-level hot path. Evaluated only
    when an exception is being matched."""
    asyncpg_errors = sys.modules.get("asyncpg.exceptions")
    if asyncpg_errors is None:
        return _CONNECT_ERRORS
    return (*_CONNECT_ERRORS, asyncpg_errors.InterfaceError, asyncpg_errors.PostgresConnectionError)


@contextmanager
def translate_connect_errors(url: URL) -> Iterator[None]:
    """Turn a failure to reach the database into one line naming the server."""
    try:
        yield
    except _connect_errors() as exc:
        raise DatabaseUnavailable(_describe_unavailable(url, exc)) from None
    except DBAPIError as exc:
        # An error raised while connecting carries no statement (a missing database,
        # a refused login); one raised by a statement is not ours to rename.
        if exc.statement is None or exc.connection_invalidated:
            raise DatabaseUnavailable(_describe_unavailable(url, exc)) from None
        raise


def _describe_unavailable(url: URL, exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = " ".join(str(cause).split()) or type(cause).__name__
    if url.get_backend_name() == "sqlite":
        return f"cannot open SQLite database {url.database!r}: {reason}"
    where = f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    return f"cannot reach PostgreSQL at {where}: {reason}"


@dataclass(eq=False)
class Database:
    """Runs facta's database work on one URL, one whole transaction at a time.

    Store code is written as plain functions of a SQLAlchemy :class:`Connection`;
    :meth:`write` and :meth:`read` run such a function inside a transaction:

    - PostgreSQL: on the asyncio engine (asyncpg) through ``AsyncConnection.run_sync``,
      so every statement still awaits the driver, with one greenlet per transaction.
    - SQLite: on the stdlib driver in one hop to a worker thread per transaction
      (writes on a single thread, beginning with ``BEGIN IMMEDIATE`` so writers queue
      for the file's write lock before reading; reads on a small pool, in WAL mode).
      aiosqlite would make every statement its own thread hop, about eight per append;
      ARCHITECTURE.md has the measurement behind this choice.
    """

    url: URL
    engine: AsyncEngine | None = None
    _sync_writer: Engine | None = None
    _sync_reader: Engine | None = None
    _write_thread: _WriterThread | None = None
    _read_threads: ThreadPoolExecutor | None = None
    _raw_writer: sqlite3.Connection | None = None
    _kept_driver: PoolProxiedConnection | None = None
    closed: bool = False
    """Set by :meth:`dispose`; every later call raises :class:`StoreError` (on SQLite a
    write would otherwise wait forever on the stopped writer thread, on PostgreSQL the
    engine would silently open a new pool)."""

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @classmethod
    def create(cls, url: str | URL, **engine_options: Any) -> Database:
        resolved = resolve_url(url)
        options = driver_options(resolved)
        if resolved.get_backend_name() == "sqlite":
            sync_url = _without_options(resolved).set(drivername="sqlite+pysqlite")
            timeout_s = options["timeout"]
            return cls(
                resolved,
                _sync_writer=_sqlite_engine(sync_url, "IMMEDIATE", timeout_s),
                _sync_reader=_sqlite_engine(sync_url, "DEFERRED", timeout_s),
                _write_thread=_WriterThread("facta-sqlite-write"),
                _read_threads=ThreadPoolExecutor(4, thread_name_prefix="facta-sqlite-read"),
            )
        from sqlalchemy.ext.asyncio import create_async_engine

        connect_args = {**options, **engine_options.pop("connect_args", {})}
        return cls(resolved, engine=create_async_engine(_without_options(resolved), connect_args=connect_args,
                                                         **engine_options))

    async def write(self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``work(connection, ...)`` in a write transaction; commit if it returns."""
        self._check_open()
        with translate_connect_errors(self.url):
            if self.engine is not None:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(work, *args, **kwargs)
            assert self._sync_writer is not None and self._write_thread is not None
            return await self._write_thread.run(partial(_in_transaction, self._sync_writer, work, *args, **kwargs))

    async def read(self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``work(connection, ...)`` in a read transaction (rolled back afterwards)."""
        self._check_open()
        with translate_connect_errors(self.url):
            if self.engine is not None:
                async with self.engine.connect() as conn:
                    return await conn.run_sync(work, *args, **kwargs)
            assert self._sync_reader is not None
            return await asyncio.get_running_loop().run_in_executor(
                self._read_threads, partial(_read_only, self._sync_reader, work, *args, **kwargs)
            )

    @asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[Any]:
        """PostgreSQL only: the asyncpg connection of a pooled SQLAlchemy connection, with
        no transaction open, for hot paths written as single statements.

        No SQLAlchemy ``Connection`` is made around it, and the last one used is kept
        for the next use instead of going back to the pool: every greenlet hop to the
        pool maps and unmaps a new frame stack (Python 3.11), and a SQLAlchemy
        ``Connection`` took three hops, about 45 us per use here; a kept connection takes
        none. One is kept at most; one whose work raised goes back to the pool."""
        self._check_open()
        assert self.engine is not None, "driver_connection is for PostgreSQL"
        with translate_connect_errors(self.url):
            pooled, self._kept_driver = self._kept_driver, None
            if pooled is None:
                pooled = await self.engine.raw_connection()
            try:
                yield pooled.driver_connection
            except BaseException:
                await _greenlet_spawn(pooled.close)  # closing may await the driver
                raise
            if self._kept_driver is None and self.engine is not None:
                self._kept_driver = pooled
            else:
                await _greenlet_spawn(pooled.close)

    async def sqlite_write(self, work: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """SQLite only: run ``work(connection, ...)`` inside ``BEGIN IMMEDIATE`` on the
        writer thread's own stdlib connection; commit if it returns, roll back if not."""
        self._check_open()
        assert self._write_thread is not None, "sqlite_write is for SQLite"
        with translate_connect_errors(self.url):
            return await self._write_thread.run(partial(self._raw_write, work, *args, **kwargs))

    def _raw_write(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._raw_writer is None:
            self._raw_writer = sqlite_append_connection(self.url.database or "", driver_options(self.url)["timeout"])
        return sqlite_immediate(self._raw_writer, self.url.database or "", work, *args, **kwargs)

    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"the store at {self.url.render_as_string(hide_password=True)} is closed:"
                             " open it again with EventStore.open")

    async def dispose(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._raw_writer is not None and self._write_thread is not None:
            await self._write_thread.run(self._raw_writer.close)
            self._raw_writer = None
        if self._kept_driver is not None:
            pooled, self._kept_driver = self._kept_driver, None
            await _greenlet_spawn(pooled.close)
        if self.engine is not None:
            await self.engine.dispose()
        for engine in (self._sync_writer, self._sync_reader):
            if engine is not None:
                engine.dispose()
        if self._write_thread is not None:
            self._write_thread.close()
        if self._read_threads is not None:
            self._read_threads.shutdown(wait=True)


class _WriterThread:
    """One thread that runs submitted calls in order and hands results back to asyncio.

    Leaner than ``run_in_executor`` (about 41 against 87 microseconds a round trip here),
    which matters when every SQLite append is one round trip.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[[], Any]] | None]
        self._calls = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, future, call))
        return await future

    def close(self) -> None:
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, future, call = item
            try:
                result = call()
            except BaseException as exc:
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)


async def _greenlet_spawn(work: Callable[[], Any]) -> Any:
    """Run ``work`` (which may await the driver) in SQLAlchemy's greenlet bridge; imported
    here, as PostgreSQL is the only user."""
    from sqlalchemy.util import greenlet_spawn

    return await greenlet_spawn(work)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller gave up; the call still ran to its end
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _in_transaction(engine: Engine, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with engine.begin() as conn:
        return work(conn, *args, **kwargs)


def _read_only(engine: Engine, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with engine.connect() as conn:
        return work(conn, *args, **kwargs)


def _sqlite_engine(url: URL, begin: str, timeout_s: float) -> Engine:
    path = Path(url.database or "")
    if not path.parent.exists():
        raise DatabaseURLError(f"cannot open SQLite database {str(path)!r}: folder {str(path.parent)!r} does not exist")
    engine = create_engine(
        url, connect_args={"timeout": timeout_s, "check_same_thread": False}, pool_size=5, max_overflow=10
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        _configure_sqlite(dbapi_connection, timeout_s)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(f"BEGIN {begin}")

    return engine


# Checkpoint the WAL into the database file once it holds this many pages (SQLite's
# default: 1,000; 10,000 pages of 4 KiB = 40 MiB of WAL at most between checkpoints).
# Every commit is still synced to the WAL first (synchronous=FULL, the default), so a
# commit is as durable as before; a crash leaves a longer WAL to replay on the next open.
# Fewer checkpoints write each hot index page back once instead of many times: 1.21x
# batch appends at 300,000 events (bench/sqlite_indexes.py, ARCHITECTURE.md).
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 10_000
# The append connection's page cache (negative: KiB): 16 MiB, allocated only as pages are
# read, holds the hot pages of facta_events' indexes (the random event-id index above
# all) of a log of a few hundred thousand events; SQLite's default is 2 MiB. With the
# checkpoint setting: 1.54x batch appends at 300,000 events. Memory only: no effect on
# durability.
SQLITE_APPEND_CACHE_KIB = 16_384
# The append connection keeps its temporary files (the statement journal SQLite opens for
# every INSERT into a table with a trigger, as facta_events has) in memory: 1.33x batch
# appends (1.21-1.39, 5 interleaved rounds of 30,000 events, ARCHITECTURE.md). A statement
# journal only undoes one statement inside its transaction; commits are as durable as before.
SQLITE_APPEND_TEMP_STORE = "MEMORY"


def _configure_sqlite(connection: sqlite3.Connection, timeout_s: float) -> None:
    # Take transaction control from the driver so BEGIN is ours to issue.
    connection.isolation_level = None
    connection.execute(f"PRAGMA busy_timeout={round(timeout_s * 1000)}")
    if _wal_allowed(connection):
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")


# A database with facta's tables (a store, or one being migrated into a store).
_FACTA_TABLE = r"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name LIKE 'facta\_%' ESCAPE '\' LIMIT 1"


def _wal_allowed(connection: sqlite3.Connection) -> bool:
    """Whether to put the file in WAL mode, which SQLite records in the file's header (a
    write): yes on a facta store and on a database with no table yet (a store about to be
    made), never on another program's database that the command is about to refuse ("has
    no facta schema"): a refused database is left byte for byte as it was."""
    if connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return False  # already
    if connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
        return True
    return connection.execute(_FACTA_TABLE).fetchone() is not None


def sqlite_append_connection(path: str, timeout_s: float, *, uri: bool = False) -> sqlite3.Connection:
    """An append connection to the SQLite file ``path`` (a ``file:`` URI when ``uri``):
    the store writer's own (:meth:`Database.sqlite_write`) and each direct writer's
    (``facta.eventsourcing``): WAL, ``busy_timeout`` of ``timeout_s`` seconds,
    ``wal_autocheckpoint``, ``cache_size`` and ``temp_store`` as set above; the driver
    leaves transaction control to :func:`sqlite_immediate`. Raises ``sqlite3.Error``."""
    connection = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False, uri=uri)
    try:
        _configure_sqlite(connection, timeout_s)
        connection.execute(f"PRAGMA cache_size=-{SQLITE_APPEND_CACHE_KIB}")
        connection.execute(f"PRAGMA temp_store={SQLITE_APPEND_TEMP_STORE}")
    except BaseException:
        connection.close()
        raise
    return connection


def sqlite_immediate(connection: sqlite3.Connection, name: str, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``work(connection, ...)`` inside ``BEGIN IMMEDIATE`` on an append connection
    (:func:`sqlite_append_connection`): committed if it returns, rolled back if it raises.
    :class:`~facta.errors.DatabaseBusy` (one line naming ``name``, the URL's database)
    when another connection holds the write lock past the busy timeout; nothing written.
    The one transaction of every SQLite append, on the store's writer thread and in a
    direct writer's thread alike."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise
        waited = int(connection.execute("PRAGMA busy_timeout").fetchone()[0]) / 1000
        raise DatabaseBusy(
            f"SQLite database {name!r} is locked: another connection held its write lock"
            f" for over {waited:g} s; nothing was written"
        ) from None
    try:
        result = work(connection, *args, **kwargs)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result
