"""facta's schema, managed by alembic: the only way any facta table is created or changed.

``upgrade``, ``downgrade`` and ``current`` run alembic on a connection of a
:class:`Database`, so they work from inside a running event loop (the CLI, the demo,
test fixtures).

Downgrades leave a schema that upgrades cleanly: going below 0003 drops the read-model
tables of the registered projections (found through the projection catalog), and going
below 0001 drops the events themselves, which is refused unless asked for explicitly
(``drop_events=True``, or ``alembic -x drop-events=yes downgrade ...``).

A database at a revision this facta does not know (written by a newer facta) is never
migrated: ``upgrade``, ``downgrade`` and ``known_current`` raise
:class:`~facta.eventstore.errors.UnknownSchemaRevision`, changing nothing.

alembic is imported only by ``upgrade``, ``downgrade`` and ``alembic_config``: it (with
mako and SQLAlchemy's ORM) is a third of an importing process's memory, and opening a
store only checks the revision. ``revisions``, ``head``, ``current`` and
``known_current`` read the revision scripts' ``revision``/``down_revision`` lines and the
version table directly (``tests/test_import_cost.py`` checks both against alembic's).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

    from facta.eventstore.database import Database

__all__ = [
    "VERSION_TABLE", "alembic_config", "current", "downgrade", "head", "known_current", "revisions", "upgrade",
    "upgrade_url",
]

VERSION_TABLE = "facta_alembic_version"
_HERE = Path(__file__).resolve().parent
_SELECT_VERSIONS = text(f"SELECT version_num FROM {VERSION_TABLE}")  # alembic's column


def alembic_config() -> Config:
    """alembic's configuration for facta's revision scripts (imports alembic)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head() -> str:
    """The newest of facta's schema revisions (``revisions()[-1]``)."""
    return _chain()[-1]


def revisions() -> list[str]:
    """facta's schema revisions, oldest first (``["0001", ..., head()]``)."""
    return list(_chain())


@functools.cache
def _chain() -> tuple[str, ...]:
    """The revision ids of ``versions/*.py``, oldest first, read from each script's
    module-level ``revision = "..."`` and ``down_revision = "..."`` (or ``None``), as
    alembic reads them. The scripts must form one line from one base to one head."""
    down: dict[str, str | None] = {}
    for path in sorted((_HERE / "versions").glob("*.py")):
        if path.name != "__init__.py":
            revision, down_revision = _script_ids(path)
            assert revision not in down, f"facta migrations: revision {revision} is in two scripts"
            down[revision] = down_revision
    up = {parent: child for child, parent in down.items()}
    assert len(up) == len(down), f"facta migrations must form one line, found branches in {down}"
    chain: list[str] = []
    child = up.get(None)
    while child is not None:
        chain.append(child)
        child = up.get(child)
    assert chain and len(chain) == len(down), f"facta migrations must form one line from one base, found {down}"
    return tuple(chain)


def _script_ids(path: Path) -> tuple[str, str | None]:
    ids: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in ("revision", "down_revision") and isinstance(node.value, ast.Constant)):
            ids[node.targets[0].id] = node.value.value
    revision, down_revision = ids.get("revision"), ids.get("down_revision")
    assert isinstance(revision, str) and (down_revision is None or isinstance(down_revision, str)), (
        f"{path.name}: a facta revision script sets revision and down_revision to string literals (or None)"
    )
    return revision, down_revision


def _version_rows(connection: Connection) -> list[str] | None:
    """The revisions the version table holds, as alembic would read them (None: no table)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return [row[0] for row in connection.execute(_SELECT_VERSIONS)]


def _known_current(connection: Connection, where: str) -> str | None:
    """The revision the database is at (None: no facta schema); raises
    :class:`UnknownSchemaRevision` for one this facta does not know."""
    from facta.errors import UnknownSchemaRevision

    heads = _version_rows(connection)
    if heads is None:
        return None
    known = revisions()
    for revision in heads:
        if revision not in known:
            raise UnknownSchemaRevision(where, revision, known)
    if len(heads) > 1:
        raise UnknownSchemaRevision(where, ", ".join(heads), known)
    return heads[0] if heads else None


def _upgrade(connection: Connection, revision: str, where: str) -> None:
    from alembic import command

    from facta.eventstore.locks import lock_key

    if connection.dialect.name == "postgresql":
        # Upgrades from several processes at once (applications starting together, each
        # opening the store with migrate=True) queue here, for the transaction, instead of
        # racing on the same CREATE statements; the next one then finds the schema at head.
        # (SQLite's write transaction already queues them.)
        classid, objid = lock_key("migrations")
        connection.execute(text("SELECT pg_advisory_xact_lock(:classid, :objid)"), {"classid": classid, "objid": objid})
    _known_current(connection, where)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade(
    connection: Connection, revision: str, drop_events: bool, projections: str | list[str] | None, where: str
) -> None:
    from alembic import command

    _known_current(connection, where)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    cfg.attributes["drop_events"] = drop_events
    cfg.attributes["projections"] = projections
    command.downgrade(cfg, revision)


def _current(connection: Connection, where: str) -> str | None:
    from facta.errors import UnknownSchemaRevision

    heads = _version_rows(connection)
    if not heads:
        return None
    if len(heads) > 1:  # several at once: no one revision to name
        raise UnknownSchemaRevision(where, ", ".join(heads), revisions())
    return heads[0]


def _where(database: Database) -> str:
    return database.url.render_as_string(hide_password=True)


async def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the database's facta schema to ``revision`` (default: the newest).

    Raises :class:`~facta.eventstore.errors.UnknownSchemaRevision`, changing nothing, when
    the database is at a revision this facta does not know (a newer facta's)."""
    await database.write(_upgrade, revision, _where(database))


async def downgrade(
    database: Database, revision: str, *, drop_events: bool = False, projections: str | list[str] | None = None
) -> None:
    """Take the database's facta schema down to ``revision``: a revision id, or ``"base"``
    for no facta schema at all.

    Below 0003 the read-model tables of every registered projection are dropped with
    their checkpoints; ``projections`` names the modules of the user's own projections
    (as ``FACTA_PROJECTIONS`` does, which is read when it is None). Raises
    :class:`~facta.eventstore.errors.MigrationRefused`, changing nothing, when a
    registered projection is not in the catalog (its tables could not be dropped), or
    when the downgrade would drop stored events or snapshots and ``drop_events`` is False;
    :class:`~facta.eventstore.errors.UnknownSchemaRevision` when the database is at a
    revision this facta does not know.
    """
    from alembic.util import CommandError

    from facta.errors import MigrationRefused

    known = revisions()
    if revision not in ("base", *known):
        raise MigrationRefused(f"cannot downgrade to revision {revision!r}: give base or one of {', '.join(known)}")
    try:
        await database.write(_downgrade, revision, drop_events, projections, _where(database))
    except CommandError as exc:
        raise MigrationRefused(f"cannot downgrade to revision {revision!r}: {' '.join(str(exc).split())}") from None


async def current(database: Database) -> str | None:
    """The revision the database is at, or None when facta's schema is not there (as the
    version table holds it, known to this facta or not: see :func:`known_current`).
    Raises :class:`~facta.eventstore.errors.UnknownSchemaRevision` when the table holds
    several revisions at once."""
    return await database.read(_current, _where(database))


async def known_current(database: Database) -> str | None:
    """The revision the database is at, or None when facta's schema is not there; raises
    :class:`~facta.eventstore.errors.UnknownSchemaRevision` for a revision this facta does
    not know (or several at once)."""
    return await database.read(_known_current, _where(database))


async def upgrade_url(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``, connecting just for that."""
    from facta.eventstore.database import Database  # the store imports this package

    database = Database.create(url)
    try:
        await upgrade(database, revision)
    finally:
        await database.dispose()
