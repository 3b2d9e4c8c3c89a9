"""What ``import facta.eventstore`` and a store's everyday use load (issue 12, import cost).

Each check runs a fresh interpreter and reads its ``sys.modules``: heavy libraries stay out
until the code that needs them runs (alembic only when migrating, SQLAlchemy's ORM only
with a PostgreSQL engine, Kafka's client only in the relay and the runners). No timing or
memory thresholds here: the figures are in ARCHITECTURE.md ("Import cost").
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facta import migrations
from facta.eventstore import EventStore
from facta.eventstore.database import Database, resolve_url

#: Libraries (or parts of them) a plain ``import facta.eventstore`` must not load, and why.
NOT_AT_IMPORT = {
    "alembic": "migrations only (with mako)",
    "mako": "alembic's templates",
    "sqlalchemy.orm": "facta uses SQLAlchemy Core; the ORM comes with sqlalchemy.ext.asyncio",
    "sqlalchemy.ext.asyncio": "PostgreSQL engines only (it imports the ORM)",
    "sqlalchemy.dialects.postgresql": "PostgreSQL stores only",
    "asyncpg": "PostgreSQL stores only",
    "aiokafka": "the relay and the runners, when they connect",
    "pydantic_settings": "FACTA_* settings, read when a default is needed",
    "rich": "the CLI's output",
    "click": "the CLI",
    "facta.migrations.versions": "alembic loads the revision scripts",
    "facta.eventstore.relay": "a public module, imported by who relays",
    "facta.projections": "the layer above",
    "opentelemetry.trace": "the application's tracing: facta looks for it in sys.modules (README, Traces)",
    "opentelemetry.sdk": "the application's, or --metrics-port",
}
#: What opening, appending to and reading a migrated SQLite store must not load either.
NOT_ON_SQLITE_USE = sorted(set(NOT_AT_IMPORT) - {"pydantic_settings"})


def _loaded(code: str, watch: list[str]) -> list[str]:
    """Run ``code`` in a fresh interpreter; the names of ``watch`` it left in sys.modules
    (a name counts when the module or any submodule of it is loaded)."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        watch = {watch!r}
        print(json.dumps(sorted(w for w in watch if any(m == w or m.startswith(w + ".") for m in sys.modules))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_store_loads_none_of_the_heavy_modules() -> None:
    assert _loaded("import facta.eventstore", list(NOT_AT_IMPORT)) == []


def test_the_check_reports_a_heavy_module_that_comes_back() -> None:
    # The same check on an interpreter that did load two of them: the test above can fail.
    assert _loaded("import facta.eventstore, sqlalchemy.orm, click", list(NOT_AT_IMPORT)) == ["click", "sqlalchemy.orm"]


def test_a_sqlite_store_opens_appends_and_reads_without_alembic_or_the_orm(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'facta.db'}"
    done = subprocess.run([sys.executable, "-c", f"import asyncio; from facta import migrations;"
                           f" asyncio.run(migrations.upgrade_url({url!r}))"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code = f"""
        import asyncio
        from facta.domain.reference import Account
        from facta.eventstore import EventStore, Repository

        async def main():
            async with await EventStore.open({url!r}) as store:
                accounts = Repository(store)
                account = Account.open("a-1", "ada", "EUR")
                account.deposit(5)
                await accounts.save(account)
                assert (await accounts.get(Account, "a-1")).version == 2
                assert [e.version for e in await store.read_stream("a-1")] == [1, 2]
                assert [e.position for e in await store.read_log()] == [1, 2]

        asyncio.run(main())
    """
    assert _loaded(code, NOT_ON_SQLITE_USE) == []


def test_revisions_and_head_are_alembics() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert migrations.revisions() == [r.revision for r in reversed(list(script.walk_revisions()))]
    assert [migrations.head()] == list(script.get_heads())


async def test_current_reads_the_version_table_as_alembic_does(sqlite_url: str) -> None:
    from alembic.runtime.migration import MigrationContext

    database = Database.create(sqlite_url)
    try:
        assert await migrations.current(database) is None
        assert await migrations.known_current(database) is None
        for revision in ("0002", migrations.head()):
            await migrations.upgrade(database, revision)

            def alembics(conn: object) -> str | None:
                context = MigrationContext.configure(conn, opts={"version_table": migrations.VERSION_TABLE})
                return context.get_current_revision()  # type: ignore[no-any-return]

            assert await database.read(alembics) == revision
            assert await migrations.current(database) == revision
            assert await migrations.known_current(database) == revision
    finally:
        await database.dispose()


async def test_a_store_opened_without_migrating_names_the_revision_it_found(sqlite_url: str) -> None:
    from facta.eventstore import SchemaNotReady

    database = Database.create(sqlite_url)
    try:
        await migrations.upgrade(database, "0004")
    finally:
        await database.dispose()
    with pytest.raises(SchemaNotReady) as caught:
        await EventStore.open(sqlite_url)
    assert str(caught.value) == (f"{resolve_url(sqlite_url).render_as_string(hide_password=True)} is at schema"
                                 f" revision 0004, this facta needs {migrations.head()}: run `facta db upgrade`")
