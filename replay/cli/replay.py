"""`facta replay`: rebuild a projection from a position, an offset or a time (or plan it
with --dry-run)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from facta.projections._tracking import LOG
from facta.projections.catalog import load_catalog

from .app import async_command, cli, freeze_heap, quiet_logging, stop_on_signals, usage_error
from .options import (
    OFFSET,
    PARTITION,
    POSITION_OR_ZERO,
    TEXT,
    UTC_TIME,
    Seconds,
    WholeNumber,
    database_option,
    from_settings,
    kafka_option,
    kafka_settings,
    open_store,
    projections_option,
    topic_prefix_option,
)

if TYPE_CHECKING:
    from facta.projections.replay import ReplayPlan

from .output import coords_json, duration, echo_json, plural, printable, shown, table_lines
from .progress import ProgressDisplay


@cli.command("replay")
@click.argument("name", type=TEXT["projection"])
@click.option("--from-position", type=POSITION_OR_ZERO, default=None, metavar="P",
              help="Rebuild from the events after store position P (0: everything); on Kafka, the events "
                   "Kafka deleted are read from the store.")
@click.option("--from-offset", type=OFFSET, default=None, metavar="N",
              help="Rebuild from Kafka offset N of every partition (or of --partition K).")
@click.option("--partition", type=PARTITION, default=None, metavar="K",
              help="With --from-offset: only partition K starts at N, the others at their beginning.")
@click.option("--from-time", type=UTC_TIME, default=None, metavar="TIME",
              help="Rebuild from the first event recorded at or after TIME (ISO 8601 with a time zone, "
                   "e.g. 2026-11-22T12:00:00+01:00); on Kafka, the events Kafka deleted are read from the store.")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed and how long it may take; change nothing.")
@click.option("--slice", "as_slice", is_flag=True,
              help="A start after the projection's first event builds a read model of the events from there on "
                   "only, replacing the live one: refused unless this is given.")
@click.option("--batch-size", **from_settings("batch_size"), type=WholeNumber(1, 100_000, "batch size"),
              help="Events applied per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan or the summary as JSON.")
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--kafka-timeout", **from_settings("kafka_timeout_s"), type=Seconds(0.1),
              help="With Kafka: give up after Kafka was unreachable this many seconds.")
@async_command
async def replay_command(name: str, from_position: int | None, from_offset: int | None, partition: int | None,
                         from_time: datetime | None, dry_run: bool, as_slice: bool, batch_size: int, as_json: bool,
                         database_url: str, kafka_bootstrap: str | None, topic_prefix: str,
                         projection_modules: str | None, kafka_timeout: float) -> None:
    """Rebuild projection NAME into fresh tables from a position, an offset or a time,
    then swap them in: readers see the old read model until the new one is complete.

    Give exactly one of --from-position, --from-offset, --from-time. Offsets are Kafka's,
    so --from-offset needs FACTA_KAFKA_BOOTSTRAP (or --kafka-bootstrap). Where Kafka's
    retention deleted records a replay from a position or a time needs, they are read
    from the store; an offset Kafka deleted is refused, naming the position to replay
    from instead. Progress goes to stderr; SIGINT or SIGTERM stops the replay and leaves
    the live tables as they were. A start that leaves out earlier events of the projection
    builds a slice (the read model of the events from there on only) and needs --slice;
    --dry-run says what the result will hold.

    \b
    Examples:
      facta replay account_balances --from-position 0 --dry-run
      facta replay ride_board --from-time 2026-11-22T12:00:00+01:00
      FACTA_KAFKA_BOOTSTRAP=127.0.0.1:9092 facta replay billing --from-offset 0 --partition 2
    """
    # Lazy: facta.projections.replay imports aiokafka (through projections.retention), a
    # tenth of a second of start-up that every other command would pay.
    from facta.projections.replay import ReplayFrom, plan_replay, replay

    freeze_heap()
    given = [flag for flag, value in (("--from-position", from_position), ("--from-offset", from_offset),
                                      ("--from-time", from_time)) if value is not None]
    if len(given) != 1:
        raise usage_error(
            "give exactly one of --from-position, --from-offset, --from-time"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if partition is not None and from_offset is None:
        raise usage_error("--partition goes with --from-offset")
    projection = load_catalog(projection_modules).get(name)
    start = ReplayFrom(position=from_position, offset=from_offset, partition=partition, time=from_time)
    kafka = kafka_settings(kafka_bootstrap, topic_prefix, kafka_timeout)
    quiet_logging(False)
    async with await open_store(database_url) as store:
        if dry_run:
            plan = await plan_replay(store, projection, start, kafka=kafka)
            _print_plan(plan, as_json, as_slice)
            return
        stop = stop_on_signals()
        with ProgressDisplay() as display:
            # The plan's count of events (records on Kafka) is the total: the library's
            # first progress call gives it.
            task = display.task(f"replay {shown(name)}", "records" if kafka else "events")
            result = await replay(store, projection, start, kafka=kafka, batch_size=batch_size,
                                  progress=lambda p: task.update(p.done, p.total), stop=stop, slice=as_slice)
            task.update(task.done, result.plan.events)
            task.finish(line=True)
    where = "Kafka" if result.plan.source == "kafka" else "the store log"
    if as_json:
        echo_json({
            "projection": name, "source": result.plan.source, "from": result.plan.start_from,
            "events": result.events, "seconds": round(result.seconds, 3),
            "events_per_second": round(result.rate, 1), "generation": result.generation,
            "checkpoint": coords_json(result.checkpoints),
        })
        return
    click.echo(f"replayed {shown(name)} from {result.plan.start_from} ({where}): {plural(result.events, 'event')} in "
               f"{duration(result.seconds)} ({result.rate:.0f} events/s); the rebuilt tables are live, "
               f"generation {result.generation}")


def _print_plan(plan: ReplayPlan, as_json: bool, as_slice: bool = False) -> None:
    if as_json:
        echo_json(plan.as_dict() | {"dry_run": True})
        return
    where = "Kafka" if plan.source == "kafka" else "the store log"
    click.echo(f"replay {shown(plan.projection)} from {plan.start_from}, reading {where} (dry run: nothing changed)")
    if plan.source == "log":
        span = (f" (positions {plan.first_position} to {plan.last_position})"
                if plan.first_position is not None else "")
        click.echo(f"  events    {plan.events}{span}")
        click.echo(f"  range     after position {plan.start[LOG]} up to position {plan.end[LOG]}")
    else:
        click.echo(f"  records   {plan.events}")
        rows = [[f"{t}[{p}]", str(plan.start.get((t, p), 0)), str(end), str(max(end - plan.start.get((t, p), 0), 0))]
                for (t, p), end in sorted(plan.end.items())]
        for line in table_lines(["PARTITION", "START", "END", "RECORDS"], rows):
            click.echo(f"  {line}")
        for (t, p), fill in sorted(plan.fill.items()):
            click.echo(f"  store     {t}[{p}]: {plural(fill.events, 'event')} after position {fill.after} through"
                       f" {fill.through}, which Kafka deleted (offsets before {fill.retained_from})")
    click.echo(f"  estimate  {duration(plan.estimated_seconds)} ({plan.rate_basis})")
    needs = " (refused without --slice)" if plan.is_slice and not as_slice else ""
    click.echo(f"  result    {printable(plan.describe_result())}{needs}")
