"""`facta db`: the store's schema (alembic migrations): upgrade, downgrade, current."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import click

from facta import migrations
from facta.eventstore.database import Database, translate_connect_errors

from .app import async_command, cli
from .options import MODULES, Revision, database_option, require_database
from .output import echo_json, shown


@cli.group()
def db() -> None:
    """Manage the store's schema (alembic migrations)."""


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True, type=Revision(), help="Revision to upgrade to.")
@click.option("--json", "as_json", is_flag=True, help="Print the revisions before and after as JSON.")
@async_command
async def db_upgrade(database_url: str, revision: str, as_json: bool) -> None:
    """Create the schema or bring it to the newest revision.

    \b
    Examples:
      facta db upgrade
      facta db upgrade --database-url postgresql+asyncpg://localhost/facta
    """
    where, before, after = await _migrate(database_url, lambda database: migrations.upgrade(database, revision))
    if as_json:
        echo_json({"database": where, "before": before, "after": after, "upgraded": before != after})
    elif before == after:
        click.echo(f"{shown(where)}: schema already at revision {after}")
    else:
        click.echo(f"{shown(where)}: schema upgraded from {before or 'nothing'} to revision {after}")


async def _migrate(
    database_url: str, step: Callable[[Database], Awaitable[Any]]
) -> tuple[str, str | None, str | None]:
    """Run one migration ``step`` on the database: (URL without password, revision
    before, revision after)."""
    database = Database.create(database_url)
    try:
        with translate_connect_errors(database.url):
            before = await migrations.known_current(database)
            await step(database)
            after = await migrations.known_current(database)
    finally:
        await database.dispose()
    return database.url.render_as_string(hide_password=True), before, after


@db.command("downgrade")
@database_option
@click.argument("revision", type=Revision("base"))
@click.option("--drop-events", is_flag=True,
              help="Allow going below revision 0001, which drops every stored event and snapshot.")
@click.option("--projections", "projection_modules", envvar="FACTA_PROJECTIONS", default=None, metavar="MODULES",
              type=MODULES,
              help="Modules of your own projections, whose read models a downgrade below 0003 drops"
                   " (env: FACTA_PROJECTIONS).")
@click.option("--json", "as_json", is_flag=True, help="Print the revisions before and after as JSON.")
@async_command
async def db_downgrade(
    database_url: str, revision: str, drop_events: bool, projection_modules: str | None, as_json: bool
) -> None:
    """Take the schema down to REVISION ("base": no facta schema at all).

    Below 0003 the read models of every registered projection are dropped with their
    checkpoints, so an upgrade afterwards rebuilds them from the log. Going below 0001
    drops the events themselves and is refused without --drop-events.

    \b
    Examples:
      facta db downgrade 0002
      facta db downgrade base --drop-events
    """
    require_database(database_url)
    where, before, after = await _migrate(database_url, lambda database: migrations.downgrade(
        database, revision, drop_events=drop_events, projections=projection_modules))
    if as_json:
        echo_json({"database": where, "before": before, "after": after, "downgraded": before != after})
    elif before == after:
        click.echo(f"{shown(where)}: schema already at revision {after}" if after else f"{shown(where)}: no facta schema")
    else:
        click.echo(f"{shown(where)}: schema downgraded from {before} to {after or 'nothing (no facta schema)'}")


@db.command("current")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def db_current(database_url: str, as_json: bool) -> None:
    """Show the schema revision the database is at, and the newest one.

    \b
    Examples:
      facta db current
      facta db current --json --database-url postgresql+asyncpg://localhost/facta
    """
    require_database(database_url)
    database = Database.create(database_url)
    try:
        with translate_connect_errors(database.url):
            revision = await migrations.known_current(database)
    finally:
        await database.dispose()
    head = migrations.head()
    if as_json:
        echo_json({"current": revision, "head": head, "up_to_date": revision == head})
    else:
        state = "up to date" if revision == head else "run `facta db upgrade`"
        click.echo(f"current: {revision or 'none'}  head: {head}  ({state})")
