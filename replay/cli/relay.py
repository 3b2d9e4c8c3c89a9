"""`facta relay`: stream the store's events to Kafka (run), see where a relay is (status),
let it past an event Kafka refuses (skip)."""

from __future__ import annotations

import getpass
from typing import Any

import click

from facta.eventstore.relay import Relay, RelayConfig, RelayError, RelaySkip
from facta.eventstore.relay_status import relay_checkpoint, relay_status

from .app import async_command, cli, quiet_logging, stop_on_signals
from .options import (
    POSITION,
    TEXT,
    Seconds,
    WholeNumber,
    database_option,
    from_settings,
    kafka_option,
    metrics_options,
    open_store,
    serve_metrics,
    topic_prefix_callback,
)
from .output import echo_json, iso, plural, quoted, shown
from .progress import ProgressDisplay


@cli.group()
def relay() -> None:
    """Stream the store's events to Kafka (outbox relay)."""


def _relay_config(kafka_bootstrap: str | None, **options: Any) -> RelayConfig:
    if not kafka_bootstrap:
        raise RelayError("no Kafka bootstrap address: set FACTA_KAFKA_BOOTSTRAP or pass --kafka-bootstrap")
    return RelayConfig(bootstrap=kafka_bootstrap, **options)


def _skip_json(skip: RelaySkip) -> dict[str, Any]:
    return {
        "position": skip.position, "event_id": str(skip.event_id), "event_type": skip.event_type,
        "reason": skip.reason, "skipped_by": skip.skipped_by, "skipped_at": iso(skip.skipped_at),
        "passed_at": iso(skip.passed_at),
    }


def login_name() -> str | None:
    """Who runs the command, for a skip's record (None when the system cannot tell)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@relay.command("run")
@database_option
@kafka_option
@click.option("--once", is_flag=True, help="Publish until caught up, then exit 0.")
@click.option("--name", default="default", show_default=True, type=TEXT["relay"],
              help="Relay name (one checkpoint and lock each).")
@click.option("--topic-prefix", **from_settings("topic_prefix"), type=TEXT["prefix"], callback=topic_prefix_callback,
              help="Topics are <prefix>.<stream type>: ASCII letters, digits, '.', '_' and '-'.")
@click.option("--partitions", **from_settings("relay_partitions"), type=WholeNumber(1, 10_000, "partition count"),
              help="Partitions of topics the relay creates.")
@click.option("--replication-factor", default=None, type=WholeNumber(1, 100, "replication factor"),
              show_default="the cluster's default.replication.factor",
              help="Replication factor of topics the relay creates.")
@click.option("--batch-size", **from_settings("batch_size"), type=WholeNumber(1, 100_000, "batch size"),
              help="Events read and published per page.")
@click.option("--no-idempotence", is_flag=True, help="Turn off the idempotent producer (brokers that lack it).")
@click.option("--kafka-timeout", **from_settings("kafka_timeout_s"), type=Seconds(0.1),
              help="With --once: give up after Kafka was unreachable this many seconds.")
@click.option("--kafka-request-timeout", **from_settings("kafka_request_timeout_ms", 1000), type=Seconds(1.0, 3600.0),
              help="Seconds a Kafka request may take, and a batch may wait for a partition leader, before "
                   "it fails and the relay publishes again from its checkpoint.")
@click.option("-v", "--verbose", is_flag=True, help="With --once: log progress and retries too.")
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON when it ends.")
@metrics_options
@async_command
async def relay_run(database_url: str, kafka_bootstrap: str | None, once: bool, name: str, topic_prefix: str,
                    partitions: int, replication_factor: int | None, batch_size: int, no_idempotence: bool,
                    kafka_timeout: float, kafka_request_timeout: float, verbose: bool, as_json: bool,
                    metrics_port: int | None, metrics_host: str) -> None:
    """Publish every stored event to Kafka, from the relay's checkpoint on.

    Runs until SIGINT or SIGTERM (finishing the page in flight), or with --once until
    caught up, showing its progress on stderr (a bar on a terminal, else a line every
    FACTA_PROGRESS_INTERVAL_S seconds). A second relay on the same store waits and takes over when the first stops.
    An event Kafka refuses (too large, say) or whose topic is not a legal Kafka name stops
    it before that event, everything before it published; `facta relay skip` lets it past.

    \b
    Examples:
      facta relay run --kafka-bootstrap 127.0.0.1:9092
      FACTA_KAFKA_BOOTSTRAP=127.0.0.1:9092 facta relay run --once
      facta relay run --kafka-bootstrap 127.0.0.1:9092 --metrics-port 9464
    """
    config = _relay_config(kafka_bootstrap, name=name, topic_prefix=topic_prefix, partitions=partitions,
                           replication_factor=replication_factor, batch_size=batch_size,
                           idempotence=not no_idempotence,
                           request_timeout_ms=round(kafka_request_timeout * 1000))
    # A long-running relay logs what it does and waits for; --once stays quiet unless asked.
    quiet_logging(verbose or not once)
    serve_metrics(metrics_host, metrics_port)
    stop = stop_on_signals()
    async with await open_store(database_url) as store:
        # --once: progress on stderr, out of the log's head less the relay's checkpoint
        # (two indexed reads, once). A long-running relay logs instead.
        with ProgressDisplay(quiet=not once) as display:
            task = None
            if once:
                total = max(await store.head_position() - await relay_checkpoint(store, name), 0)
                task = display.task(f"relay {quoted(name)}", "events", total)
            published = await Relay(store, config).run(
                once=once, stop=stop, give_up_after=kafka_timeout if once else None, on_progress=task,
            )
    if as_json:
        echo_json({"name": name, "published": published})
    else:
        click.echo(f"relay {quoted(name)}: published {plural(published, 'event')}")


@relay.command("status")
@database_option
@click.option("--name", default="default", show_default=True, type=TEXT["relay"],
              help="Relay name (one checkpoint each).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def relay_status_command(database_url: str, name: str, as_json: bool) -> None:
    """Show the relay's checkpoint, the log's head, the lag (events not yet published) and
    the events it was told to skip. A relay name that never ran on this store is an
    error, except the default relay's (its lag is then the whole log).

    \b
    Examples:
      facta relay status
      facta relay status --name audit-feed --json
    """
    async with await open_store(database_url) as store:
        _, status = await relay_status(store, name, or_default=True)
    if as_json:
        echo_json({
            "name": status.name, "checkpoint": status.checkpoint, "head": status.head, "lag": status.lag,
            "updated_at": iso(status.updated_at),
            "skips": [_skip_json(skip) for skip in status.skips],
        })
        return
    updated = iso(status.updated_at) or "never"
    click.echo(f"relay {quoted(status.name)}: checkpoint {status.checkpoint}, head {status.head}, "
               f"lag {plural(status.lag, 'event')}, updated {updated}")
    for skip in status.skips:
        if skip.passed_at is not None:
            state = f"passed over at {iso(skip.passed_at)}"
        elif skip.position <= status.checkpoint:
            state = "published before the skip was recorded"
        else:
            state = "not reached yet"
        click.echo(f"  skip position {skip.position} ({shown(skip.event_type)} event {skip.event_id}), recorded "
                   f"{iso(skip.skipped_at)} by {shown(skip.skipped_by or '-')}: {shown(skip.reason)}; {state}")


@relay.command("skip")
@click.option("--position", required=True, type=POSITION,
              help="The store position of the event to pass over without publishing it.")
@click.option("--name", default="default", show_default=True, type=TEXT["relay"], help="Relay name.")
@click.option("--reason", default="skipped by an operator", show_default=True, type=TEXT["reason"],
              help="Why, for the record (at most 1000 characters).")
@click.option("--actor", default=None, type=TEXT["skipped_by"], help="Who skips it (default: the login name).")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print what was recorded as JSON.")
@async_command
async def relay_skip(position: int, name: str, reason: str, actor: str | None, database_url: str,
                     as_json: bool) -> None:
    """Record that the relay passes over the event at a store position without publishing
    it: the way past a record Kafka refuses, never taken automatically.

    The position must hold an event the relay has not published (after its checkpoint).
    The relay passes over it the next time it reads it (restart a relay that stopped on
    it); `facta relay status` lists the skip, with who recorded it, when and why.
    Skipping a position already recorded changes nothing.

    \b
    Example:
      facta relay skip --position 1234 --reason "a 5 MB event over the broker's limit"
    """
    if actor is None:
        actor = login_name()
    async with await open_store(database_url) as store:
        found, _ = await relay_status(store, name)
        skip, new = await found.skip(position, reason, actor)
    if as_json:
        echo_json({"relay": name, "new": new, **_skip_json(skip)})
    elif new:
        click.echo(f"relay {quoted(name)} will pass over position {position} ({shown(skip.event_type)} event "
                   f"{skip.event_id}) without publishing it: {shown(skip.reason)}")
    else:
        click.echo(f"relay {quoted(name)} skips position {position} already (recorded {iso(skip.skipped_at)} by "
                   f"{shown(skip.skipped_by or '-')}: {shown(skip.reason)}); nothing changed")
