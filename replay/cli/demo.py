"""`facta demo`: run the taxi city of :mod:`facta.replay.demo` and show its read models."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from facta.dev.apache_kafka import KAFKA_VERSION
from facta.dev.devbroker import default_kind, start_broker
from facta.eventstore import EventStore, database_url_from_env
from facta.replay.demo import CityView, check_demo_database, city_view, next_commands, publish_to_kafka, run_demo

from .app import async_command, cli
from .options import MAX_POSITION, WholeNumber, database_option, kafka_option
from .output import echo_json, plural, printable, shown, table_lines
from .progress import ProgressDisplay


@cli.command()
@database_option
@click.option("--rides", default=300, show_default=True, type=WholeNumber(1, 1_000_000, "number of rides"), help="Rides to run.")
@click.option("--riders", default=40, show_default=True, type=WholeNumber(1, 100_000, "number of riders"),
              help="Riders in the city (each with an account).")
@click.option("--drivers", default=12, show_default=True, type=WholeNumber(1, 100_000, "number of drivers"),
              help="Drivers in the city (each with an account).")
@click.option("--seed", type=WholeNumber(0, MAX_POSITION, "seed"), default=None, help="Fix the random choices for a reproducible run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--kafka", is_flag=True,
              help="Also stream the store to Kafka: FACTA_KAFKA_BOOTSTRAP / --kafka-bootstrap, "
                   "or a local broker started for the run (Apache Kafka where java is on PATH; data in ./.facta-broker).")
@kafka_option
@click.option("--no-idempotence", is_flag=True, help="With --kafka: for brokers without the idempotent producer.")
@click.option("--no-projections", is_flag=True,
              help="Only append the city's events: leave billing and the read models to `facta projections run`.")
@click.option("--force", is_flag=True,
              help="Run in a database that holds other tables or events (a store no demo made) too; without it "
                   "the demo runs only on a new database or a previous demo's.")
@async_command
async def demo(database_url: str, rides: int, riders: int, drivers: int, seed: int | None, as_json: bool,
               kafka: bool, kafka_bootstrap: str | None, no_idempotence: bool, no_projections: bool,
               force: bool) -> None:
    """Run a small taxi city through the event store and summarise it.

    \b
    Examples:
      facta demo
      facta demo --rides 50 --seed 7
      facta demo --database-url postgresql+asyncpg://localhost/facta
      facta demo --kafka
    """
    if not force:  # before the first line, so a refusal is the only one
        await check_demo_database(database_url)
    if not as_json:
        click.echo(f"facta demo: {plural(rides, 'ride')}, {plural(riders, 'rider')}, {plural(drivers, 'driver')}", err=True)
    with ProgressDisplay(quiet=as_json) as display:
        # A line each tenth of the rides too (and every FACTA_PROGRESS_INTERVAL_S seconds).
        task = display.task("  rides", "rides", rides, steps=10)
        s = await run_demo(database_url, rides=rides, riders=riders, drivers=drivers, seed=seed,
                           progress=lambda done, total: task.update(done, total),
                           project=not no_projections, force=True,  # checked above
                           notice=None if as_json else lambda line: click.echo(printable(line), err=True))
    streamed = await _demo_kafka(database_url, kafka_bootstrap, as_json, not no_idempotence) if kafka else None
    if as_json:
        echo_json({
            "rides_completed": s.rides_completed, "rides_cancelled": s.rides_cancelled,
            "telemetry_points": s.telemetry_points, "fares_total_minor": s.fares_total,
            "events_appended": s.events_appended, "log_head": s.log_head,
            "elapsed_s": round(s.elapsed_s, 3), "driver_earnings_minor": s.earnings,
            "projected": s.projected, "kafka": streamed, "run": s.run, "resumed_at_ride": s.resumed_at_ride,
            "next_commands": next_commands(s, None if database_url == database_url_from_env() else database_url),
        }, sort_keys=True)
        return
    click.echo(f"rides completed   {s.rides_completed}")
    click.echo(f"rides cancelled   {s.rides_cancelled}")
    click.echo(f"telemetry points  {s.telemetry_points}")
    click.echo(f"fares charged     EUR {s.fares_total / 100:.2f}")
    click.echo(f"events appended   {s.events_appended} in {s.elapsed_s:.1f} s ({s.events_per_second:.0f} events/s)")
    click.echo(f"log head          position {s.log_head}")
    if s.projected:
        click.echo("projections       " + ", ".join(f"{name} {plural(n, 'event')}" for name, n in s.projected.items()))
    if streamed is not None:
        click.echo(f"kafka             {shown(streamed['bootstrap'])}: published {plural(streamed['published'], 'event')}")
        for topic, count in streamed["topics"].items():
            click.echo(f"  {topic}  {plural(count, 'record')}")
    if s.projected:
        # What the read models say now: the tables any reader of them sees.
        async with await EventStore.open(database_url) as store:
            view = await city_view(store)
        click.echo()
        for line in render_city(view):
            click.echo(line)
    click.echo()
    click.echo("try next:")
    for command in next_commands(s, None if database_url == database_url_from_env() else database_url):
        click.echo(f"  {printable(command)}")


def money(minor: int | None, currency: str | None) -> str:
    """An amount in minor units as ``EUR 12.50`` (``-`` when there is none)."""
    return "-" if minor is None else f"{currency or ''} {minor / 100:,.2f}".strip()


def render_city(view: CityView) -> list[str]:
    """The demo's read models as the lines it prints: the ride board, the balances and the
    drivers' earnings, each a table (whose cells :func:`table_lines` escapes)."""
    out = [printable("ride board (newest first; "
                     + ", ".join(f"{n} {s}" for s, n in sorted(view.ride_statuses.items())) + ")")]
    out += ["  " + s for s in table_lines(
        ["RIDE", "STATUS", "DRIVER", "ETA", "FARE"],
        [[r["ride_id"], r["status"], r["driver_id"] or "-",
          f"{r['eta_seconds']}s" if r["status"] == "accepted" and r["eta_seconds"] is not None else "-",
          money(r["fare"], r["currency"])] for r in view.rides],
    )]
    out.append("account balances (largest first)")
    out += ["  " + s for s in table_lines(
        ["ACCOUNT", "OWNER", "BALANCE", "LAST ACTIVITY (UTC)"],
        [[b["account_id"], b["owner"] or "-", money(b["balance"], b["currency"]),
          b["last_activity"].strftime("%Y-%m-%d %H:%M:%S") if b["last_activity"] else "-"] for b in view.balances],
    )]
    out.append("driver earnings (best first)")
    out += ["  " + s for s in table_lines(
        ["DRIVER", "DAY", "TRIPS", "EARNINGS"],
        [[e["driver_id"], e["day"], str(e["trips"]), money(e["earnings"], e["currency"])] for e in view.earnings],
    )]
    return out


async def _demo_kafka(database_url: str, bootstrap: str | None, quiet: bool, idempotence: bool) -> dict[str, Any]:
    """Relay the demo's store to Kafka: the given cluster, or a local broker for the run."""
    if bootstrap:
        published, topics = await publish_to_kafka(database_url, bootstrap, idempotence=idempotence)
        return {"bootstrap": bootstrap, "published": published, "topics": topics}
    kind = default_kind()
    if not quiet:
        what = f"Apache Kafka {KAFKA_VERSION}" if kind == "apache" else f"the {kind} stand-in"
        click.echo(f"starting a local Kafka broker ({what}, data in ./.facta-broker)", err=True)

    def progress(line: str) -> None:
        if not quiet:
            click.echo(printable(line), err=True)

    broker = await asyncio.to_thread(start_broker, kind, ".facta-broker", progress=progress)
    try:
        published, topics = await publish_to_kafka(database_url, broker.bootstrap)
    finally:
        await asyncio.to_thread(broker.stop)
    return {"bootstrap": broker.bootstrap, "published": published, "topics": topics}
