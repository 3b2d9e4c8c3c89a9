"""Database URLs and engines: which URLs facta accepts and how it connects to each dialect.

SQLite gets two engines on one file: writers begin with ``BEGIN IMMEDIATE`` so they queue
for the file's single write lock before reading anything, readers begin a plain deferred
transaction and run beside them in WAL mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .errors import DatabaseUnavailable, DatabaseURLError

__all__ = ["DEFAULT_DATABASE_URL", "Database", "database_url_from_env", "resolve_url", "translate_connect_errors"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./facta.db"
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
_ASYNC = {"sqlite+aiosqlite", "postgresql+asyncpg"}


def database_url_from_env() -> str:
    return os.environ.get("FACTA_DATABASE_URL") or DEFAULT_DATABASE_URL


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
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseURLError(f"in-memory SQLite ({text!r}) cannot be shared by connections: name a file")
    return parsed


@contextmanager
def translate_connect_errors(url: URL) -> Iterator[None]:
    """Turn a failure to reach the database into one line naming the server."""
    try:
        yield
    except (OSError, OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(_describe_unavailable(url, exc)) from None
    except DBAPIError as exc:
        if exc.connection_invalidated or "connect" in str(exc.orig).lower():
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
    """The engines facta uses for one database URL."""

    url: URL
    writer: AsyncEngine
    reader: AsyncEngine

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @classmethod
    def create(cls, url: str | URL, **engine_options: Any) -> Database:
        resolved = resolve_url(url)
        if resolved.get_backend_name() == "sqlite":
            return cls(resolved, _sqlite_engine(resolved, "IMMEDIATE"), _sqlite_engine(resolved, "DEFERRED"))
        engine = create_async_engine(resolved, pool_pre_ping=False, **engine_options)
        return cls(resolved, engine, engine)

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _sqlite_engine(url: URL, begin: str) -> AsyncEngine:
    path = Path(url.database or "")
    if not path.parent.exists():
        raise DatabaseURLError(f"cannot open SQLite database {str(path)!r}: folder {str(path.parent)!r} does not exist")
    engine = create_async_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(f"BEGIN {begin}")

    return engine
