"""Fresh facta databases for eventsourcing's unittest cases (which take no pytest fixtures).

Each test gets its own database at facta's newest schema:

- SQLite: a copy of a template file migrated once per process, in a temporary folder
  removed after the test;
- PostgreSQL: ``CREATE DATABASE ... TEMPLATE`` of a template database migrated once per
  process (at ``FACTA_TEST_POSTGRES``, like ``tests/conftest.py``), dropped after the test
  (``WITH (FORCE)``); the template is dropped at exit. Without a reachable server the
  PostgreSQL cases are skipped (an error under ``CI``, as in conftest).

:class:`FreshDatabase` is the mixin: ``self.url`` is the test's URL, ``self.es_env()`` the
environment naming it, and the cleanup closes
every store the module still shares (applications the cases never close) before the
database goes.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import threading
import unittest
import uuid
from pathlib import Path
from typing import ClassVar

from facta import migrations
from facta.eventsourcing import persistence

from ..conftest import POSTGRES_ADMIN, _admin, postgres_reachable

_lock = threading.Lock()
_templates: dict[str, str] = {}
_sqlite_dir: Path | None = None


def _postgres_base() -> str:
    return POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")


def _sqlite_template() -> Path:
    global _sqlite_dir
    with _lock:
        if "sqlite" not in _templates:
            _sqlite_dir = Path(tempfile.mkdtemp(prefix="facta-es-template-"))
            path = _sqlite_dir / "template.db"
            asyncio.run(migrations.upgrade_url(f"sqlite+aiosqlite:///{path}"))
            _templates["sqlite"] = str(path)
            atexit.register(shutil.rmtree, _sqlite_dir, True)
        return Path(_templates["sqlite"])


def _postgres_template() -> str:
    with _lock:
        if "postgresql" not in _templates:
            name = f"facta_es_template_{uuid.uuid4().hex[:12]}"
            with _admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            asyncio.run(migrations.upgrade_url(f"{_postgres_base()}/{name}"))
            _templates["postgresql"] = name
            atexit.register(_drop_postgres, name)
        return _templates["postgresql"]


def _drop_postgres(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class FreshDatabase(unittest.TestCase):
    """Gives each test a fresh migrated database of :attr:`dialect` at ``self.url``."""

    dialect: ClassVar[str] = "sqlite"
    url: str

    def setUp(self) -> None:
        if self.dialect == "postgresql":
            if not postgres_reachable():
                self.skipTest("PostgreSQL is not reachable at FACTA_TEST_POSTGRES")
            template = _postgres_template()
            name = f"facta_es_{uuid.uuid4().hex[:12]}"
            with _admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            self.url = f"{_postgres_base()}/{name}"
            self.addCleanup(_drop_postgres, name)
        else:
            folder = Path(tempfile.mkdtemp(prefix="facta-es-"))
            self.addCleanup(shutil.rmtree, folder, True)
            shutil.copyfile(_sqlite_template(), folder / "facta.db")
            self.url = f"sqlite+aiosqlite:///{folder / 'facta.db'}"
        # Cleanups run last in, first out: the stores close before the database goes.
        self.addCleanup(persistence._close_all)
        self.database_ready()
        super().setUp()

    def database_ready(self) -> None:
        """Called with ``self.url`` set, before the case's own setUp."""

    def es_env(self, **more: str) -> dict[str, str]:
        """The environment that points eventsourcing at this test's database."""
        return {"PERSISTENCE_MODULE": "facta.eventsourcing", "FACTA_DATABASE_URL": self.url, **more}
