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


def kafka_option(fn: F) -> F:
    return click.option(
        "--kafka-bootstrap",
        envvar="FACTA_KAFKA_BOOTSTRAP",
        default=None,
        help="Kafka bootstrap servers, host:port[,host:port] (env: FACTA_KAFKA_BOOTSTRAP).",
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
@click.option("--kafka", is_flag=True,
              help="Also stream the store to Kafka: FACTA_KAFKA_BOOTSTRAP / --kafka-bootstrap, "
                   "or a local broker started for the run (data in ./.facta-broker).")
@kafka_option
@click.option("--no-idempotence", is_flag=True, help="With --kafka: for brokers without the idempotent producer.")
@_async_command
async def demo(database_url: str, rides: int, riders: int, drivers: int, seed: int | None, as_json: bool,
               kafka: bool, kafka_bootstrap: str | None, no_idempotence: bool) -> None:
    """Run a small taxi city through the event store and summarise it.

    \b
    Examples:
      facta demo
      facta demo --rides 50 --seed 7
      facta demo --database-url postgresql+asyncpg://localhost/facta
      facta demo --kafka
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
    streamed = await _demo_kafka(database_url, kafka_bootstrap, as_json, not no_idempotence) if kafka else None
    if as_json:
        click.echo(json.dumps({
            "rides_completed": s.rides_completed, "rides_cancelled": s.rides_cancelled,
            "telemetry_points": s.telemetry_points, "fares_total_minor": s.fares_total,
            "events_appended": s.events_appended, "log_head": s.log_head,
            "elapsed_s": round(s.elapsed_s, 3), "driver_earnings_minor": s.earnings,
            "kafka": streamed,
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
    if streamed is not None:
        click.echo(f"kafka             {streamed['bootstrap']}: published {streamed['published']} events")
        for topic, count in streamed["topics"].items():
            click.echo(f"  {topic}  {count} records")


async def _demo_kafka(database_url: str, bootstrap: str | None, quiet: bool, idempotence: bool) -> dict[str, Any]:
    """Relay the demo's store to Kafka: the given cluster, or a local broker for the run."""
    from .demo import publish_to_kafka
    from .devbroker import start_broker

    if bootstrap:
        published, topics = await publish_to_kafka(database_url, bootstrap, idempotence=idempotence)
        return {"bootstrap": bootstrap, "published": published, "topics": topics}
    if not quiet:
        click.echo("starting a local Kafka-protocol broker (noida-db, data in ./.facta-broker)", err=True)
    broker = await asyncio.to_thread(start_broker, "noida", ".facta-broker")
    try:
        published, topics = await publish_to_kafka(database_url, broker.bootstrap)
    finally:
        await asyncio.to_thread(broker.stop)
    return {"bootstrap": broker.bootstrap, "published": published, "topics": topics}


# -- dev ------------------------------------------------------------------------------------


# -- relay ----------------------------------------------------------------------------------


@cli.group()
def relay() -> None:
    """Stream the store's events to Kafka (outbox relay)."""


def _relay_config(kafka_bootstrap: str | None, **options: Any) -> Any:
    from facta.eventstore.relay import RelayConfig, RelayError

    if not kafka_bootstrap:
        raise RelayError("no Kafka bootstrap address: set FACTA_KAFKA_BOOTSTRAP or pass --kafka-bootstrap")
    return RelayConfig(bootstrap=kafka_bootstrap, **options)


@relay.command("run")
@database_option
@kafka_option
@click.option("--once", is_flag=True, help="Publish until caught up, then exit 0.")
@click.option("--name", default="default", show_default=True, help="Relay name (one checkpoint and lock each).")
@click.option("--topic-prefix", default="facta", show_default=True, help="Topics are <prefix>.<stream type>.")
@click.option("--partitions", default=3, show_default=True, type=click.IntRange(1, 10_000),
              help="Partitions of topics the relay creates.")
@click.option("--replication-factor", default=1, show_default=True, type=click.IntRange(1, 100))
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--no-idempotence", is_flag=True, help="Turn off the idempotent producer (brokers that lack it).")
@click.option("--kafka-timeout", default=30.0, show_default=True, type=click.FloatRange(0.1),
              help="With --once: give up after Kafka was unreachable this many seconds.")
@click.option("-v", "--verbose", is_flag=True, help="With --once: log progress and retries too.")
@_async_command
async def relay_run(database_url: str, kafka_bootstrap: str | None, once: bool, name: str, topic_prefix: str,
                    partitions: int, replication_factor: int, batch_size: int, no_idempotence: bool,
                    kafka_timeout: float, verbose: bool) -> None:
    """Publish every stored event to Kafka, from the relay's checkpoint on.

    Runs until SIGINT or SIGTERM (finishing the page in flight), or with --once until
    caught up. A second relay on the same store waits and takes over when the first stops.

    \b
    Examples:
      facta relay run --kafka-bootstrap 127.0.0.1:9092
      FACTA_KAFKA_BOOTSTRAP=127.0.0.1:9092 facta relay run --once
    """
    import logging
    import signal

    from facta.eventstore import EventStore
    from facta.eventstore.relay import Relay

    config = _relay_config(kafka_bootstrap, name=name, topic_prefix=topic_prefix, partitions=partitions,
                           replication_factor=replication_factor, batch_size=batch_size,
                           idempotence=not no_idempotence)
    # A long-running relay logs what it does and waits for; --once stays quiet unless asked,
    # so a mistake ends in one line. aiokafka's connection noise repeats facta's own warning.
    logging.basicConfig(level=logging.INFO if verbose or not once else logging.ERROR,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await EventStore.open(database_url) as store:
        published = await Relay(store, config).run(
            once=once, stop=stop, give_up_after=kafka_timeout if once else None
        )
    click.echo(f"relay {name!r}: published {published} events", err=True)


@relay.command("status")
@database_option
@click.option("--name", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def relay_status(database_url: str, name: str, as_json: bool) -> None:
    """Show the relay's checkpoint, the log's head and the lag (events not yet published)."""
    from facta.eventstore import EventStore
    from facta.eventstore.relay import Relay, RelayConfig

    async with await EventStore.open(database_url) as store:
        status = await Relay(store, RelayConfig(bootstrap="unused:0", name=name)).status()
    if as_json:
        click.echo(json.dumps({
            "name": status.name, "checkpoint": status.checkpoint, "head": status.head, "lag": status.lag,
            "updated_at": status.updated_at.isoformat() if status.updated_at else None,
        }))
    else:
        updated = status.updated_at.isoformat() if status.updated_at else "never"
        click.echo(f"relay {status.name!r}: checkpoint {status.checkpoint}, head {status.head}, "
                   f"lag {status.lag} events, updated {updated}")


@cli.group()
def dev() -> None:
    """Tools for development: a local Kafka-protocol broker."""


@dev.command("broker")
@click.option("--kind", type=click.Choice(["noida", "tansu"]), default="noida", show_default=True,
              help="noida-db (keeps data on disk) or Tansu (memory only).")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True, help="Port on 127.0.0.1.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=".facta-broker", show_default=True,
              help="Where the broker keeps its data and its log.")
def dev_broker(kind: str, port: int, data_dir: str) -> None:
    """Run a Kafka-protocol broker in the foreground until Ctrl-C.

    \b
    Examples:
      facta dev broker
      facta dev broker --kind tansu --port 19092
    """
    import signal
    import threading

    from .devbroker import BrokerError, port_is_free, start_broker

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not port_is_free(port):
            raise BrokerError(f"port {port} on 127.0.0.1 is in use: pick another with --port")
        broker = start_broker("noida" if kind == "noida" else "tansu", data_dir=data_dir, port=port)
    except FactaError as exc:
        click.echo(f"facta: error: {exc}", err=True)
        sys.exit(1)
    try:
        keeps = "keeps data in" if broker.keeps_data else "keeps data in memory only; logs to"
        click.echo(f"{kind} broker listening on {broker.bootstrap} (pid {broker.pid}; {keeps} {data_dir})")
        click.echo(f"export FACTA_KAFKA_BOOTSTRAP={broker.bootstrap}")
        click.echo("press Ctrl-C to stop", err=True)
        while not stop.wait(0.2):
            if not broker.running:
                click.echo(f"facta: error: the {kind} broker exited with code {broker.returncode} "
                           f"(log: {broker.log_path})", err=True)
                sys.exit(1)
    finally:
        code = broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"{kind} broker stopped (exit code {code})", err=True)


def main() -> None:
    cli(prog_name="facta")


if __name__ == "__main__":
    main()
