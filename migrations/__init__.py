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
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

if TYPE_CHECKING:
    from facta.eventstore.database import Database

__all__ = ["VERSION_TABLE", "alembic_config", "current", "downgrade", "head", "known_current", "revisions", "upgrade"]

VERSION_TABLE = "facta_alembic_version"
_HERE = Path(__file__).resolve().parent


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"facta migrations must have one head, found {heads}"
    return heads[0]


def revisions() -> list[str]:
    """facta's schema revisions, oldest first (``["0001", ..., head()]``)."""
    return [r.revision for r in reversed(list(ScriptDirectory.from_config(alembic_config()).walk_revisions()))]


def _known_current(connection: Connection, where: str) -> str | None:
    """The revision the database is at (None: no facta schema); raises
    :class:`UnknownSchemaRevision` for one this facta does not know."""
    from facta.errors import UnknownSchemaRevision

    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    heads = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_heads()
    known = revisions()
    for revision in heads:
        if revision not in known:
            raise UnknownSchemaRevision(where, revision, known)
    if len(heads) > 1:
        raise UnknownSchemaRevision(where, ", ".join(heads), known)
    return heads[0] if heads else None


def _upgrade(connection: Connection, revision: str, where: str) -> None:
    _known_current(connection, where)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _downgrade(
    connection: Connection, revision: str, drop_events: bool, projections: str | list[str] | None, where: str
) -> None:
    _known_current(connection, where)
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    cfg.attributes["drop_events"] = drop_events
    cfg.attributes["projections"] = projections
    command.downgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


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
    version table holds it, known to this facta or not: see :func:`known_current`)."""
    return await database.read(_current)


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
