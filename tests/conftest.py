"""Shared fixtures: fresh databases on every backend the store claims.

``backend_url`` is parametrised over SQLite (a file in tmp_path) and PostgreSQL (a new
database on the server at ``FACTA_TEST_POSTGRES``, default 127.0.0.1:5432, dropped
afterwards), so a test that takes it is one contract test run on both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from facta import migrations
from facta.eventstore.store import EventStore

# The Kafka fixtures (kafka_broker, managed_kafka_broker, kafka_cluster, ...), defined once.
pytest_plugins = ["tests.kafka_fixtures", "tests.tracing_fixtures"]

POSTGRES_ADMIN = os.environ.get("FACTA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(POSTGRES_ADMIN.replace("postgresql+asyncpg", "postgresql"), autocommit=True)


def postgres_reachable() -> bool:
    """Whether the server at FACTA_TEST_POSTGRES answers (under CI an unreachable one raises)."""
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            raise
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return postgres_reachable()


@pytest.fixture
def postgres_url(postgres_available: bool) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    if not postgres_available:
        pytest.skip("PostgreSQL is not reachable at FACTA_TEST_POSTGRES")
    name = f"facta_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'facta.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """An empty database URL, once per backend."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


async def migrate(url: str) -> None:
    await migrations.upgrade_url(url)


@pytest.fixture
async def migrated_url(backend_url: str) -> str:
    """A database URL at facta's newest schema, once per backend."""
    await migrate(backend_url)
    return backend_url


@pytest.fixture
async def store(migrated_url: str) -> AsyncIterator[EventStore]:
    """An open event store on a fresh migrated database, once per backend."""
    s = await EventStore.open(migrated_url)
    try:
        yield s
    finally:
        await s.close()
