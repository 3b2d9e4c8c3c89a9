"""The `facta` command line.

User mistakes (a bad URL, an unreachable server, a conflict) print one line on stderr and
exit 1; usage errors exit 2; tracebacks are kept for bugs.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import click

from facta import __version__, migrations
from facta.domain import FactaError
from facta.eventstore.database import DEFAULT_DATABASE_URL, Database, translate_connect_errors

__all__ = ["cli", "main"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar="FACTA_DATABASE_URL",
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help="SQLAlchemy URL of the event store (env: FACTA_DATABASE_URL).",
    )(fn)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn facta's errors into one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except FactaError as exc:
        click.echo(f"facta: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("facta: interrupted", err=True)
        sys.exit(130)


def _async_command(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run(fn(*args, **kwargs))

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facta")
def cli() -> None:
    """facta: event sourcing with a permanent SQL event store.

    \b
    Start here:
      facta demo                      run a small taxi city on ./facta.db
      facta db upgrade                create or upgrade the schema
    """


# -- db -------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the store's schema (alembic migrations)."""


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@_async_command
async def db_upgrade(database_url: str, revision: str) -> None:
    """Create the schema or bring it to the newest revision.

    \b
    Example:
      facta db upgrade --database-url postgresql+asyncpg://localhost/facta
    """
    database = Database.create(database_url)
    try:
        with translate_connect_errors(database.url):
            before = await migrations.current(database)
            await migrations.upgrade(database, revision)
            after = await migrations.current(database)
    finally:
        await database.dispose()
    where = database.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"{where}: schema already at revision {after}")
    else:
        click.echo(f"{where}: schema upgraded from {before or 'nothing'} to revision {after}")


@db.command("current")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def db_current(database_url: str, as_json: bool) -> None:
    """Show the schema revision the database is at, and the newest one."""
    database = Database.create(database_url)
    try:
        with translate_connect_errors(database.url):
            revision = await migrations.current(database)
    finally:
        await database.dispose()
    head = migrations.head()
    if as_json:
        click.echo(json.dumps({"current": revision, "head": head, "up_to_date": revision == head}))
    else:
        state = "up to date" if revision == head else "run `facta db upgrade`"
        click.echo(f"current: {revision or 'none'}  head: {head}  ({state})")


# -- demo -----------------------------------------------------------------------------------


@cli.command()
@database_option
@click.option("--rides", default=300, show_default=True, type=click.IntRange(1, 1_000_000), help="Rides to run.")
@click.option("--riders", default=40, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--drivers", default=12, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--seed", type=int, default=None, help="Fix the random choices for a reproducible run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_async_command
async def demo(database_url: str, rides: int, riders: int, drivers: int, seed: int | None, as_json: bool) -> None:
    """Run a small taxi city through the event store and summarise it.

    \b
    Examples:
      facta demo
      facta demo --rides 50 --seed 7
      facta demo --database-url postgresql+asyncpg://localhost/facta
    """
    from .demo import run_demo

    last_shown = [0]

    def progress(done: int, total: int) -> None:
        if not as_json and (done - last_shown[0] >= max(1, total // 10) or done == total):
            last_shown[0] = done
            click.echo(f"  rides {done}/{total}", err=True)

    if not as_json:
        click.echo(f"facta demo: {rides} rides, {riders} riders, {drivers} drivers", err=True)
    s = await run_demo(database_url, rides=rides, riders=riders, drivers=drivers, seed=seed, progress=progress)
    if as_json:
        click.echo(json.dumps({
            "rides_completed": s.rides_completed, "rides_cancelled": s.rides_cancelled,
            "telemetry_points": s.telemetry_points, "fares_total_minor": s.fares_total,
            "events_appended": s.events_appended, "log_head": s.log_head,
            "elapsed_s": round(s.elapsed_s, 3), "driver_earnings_minor": s.earnings,
        }, sort_keys=True))
        return
    click.echo(f"rides completed   {s.rides_completed}")
    click.echo(f"rides cancelled   {s.rides_cancelled}")
    click.echo(f"telemetry points  {s.telemetry_points}")
    click.echo(f"fares charged     EUR {s.fares_total / 100:,.2f}")
    click.echo(f"events appended   {s.events_appended} in {s.elapsed_s:.1f} s ({s.events_per_second:,.0f} events/s)")
    click.echo(f"log head          position {s.log_head}")
    if s.earnings:
        click.echo("top drivers")
        for driver, amount in sorted(s.earnings.items(), key=lambda kv: -kv[1])[:5]:
            click.echo(f"  {driver}  EUR {amount / 100:,.2f}")


def main() -> None:
    cli(prog_name="facta")


if __name__ == "__main__":
    main()
