"""`facta projections`: list them with their lag (list), keep them up to date (run), wait
until one has applied a position (wait), and record or list the events they skip (skip,
skipped)."""

from __future__ import annotations

import asyncio
import time

import click

from facta.domain import FactaError
from facta.eventstore import EventStore
from facta.projections import (
    KafkaSettings,
    ProcessManager,
    Projection,
    ProjectionRunner,
    ProjectionWaitTimeout,
    RunnerConfig,
    wait_for_position,
)
from facta.projections._tracking import LOG
from facta.projections.catalog import load_catalog
from facta.projections.status import checkpoints, projection_status, skip_event, skipped_events

from .app import async_command, cli, freeze_heap, quiet_logging, stop_on_signals
from .options import (
    POSITION,
    TEXT,
    Seconds,
    WholeNumber,
    database_option,
    from_settings,
    kafka_option,
    kafka_settings,
    metrics_options,
    open_store,
    projections_option,
    serve_metrics,
    topic_prefix_option,
)
from .output import coords_json, coords_text, echo_json, iso, plural, printable, quoted, shown, table
from .progress import ProgressDisplay, ProgressTask
from .relay import login_name


@cli.group("projections")
def projections_group() -> None:
    """Run read-model projections and see where they are.

    \b
    Projections consume the store's log, or Kafka when FACTA_KAFKA_BOOTSTRAP is set.
    Rebuild one from any point with `facta replay`.
    """


def _kafka_warning(exc: FactaError) -> None:
    click.echo(f"facta: warning: cannot read Kafka's offsets, lag shown as '?': {printable(str(exc))}", err=True)


@projections_group.command("list")
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def projections_list(database_url: str, kafka_bootstrap: str | None, topic_prefix: str,
                           projection_modules: str | None, as_json: bool) -> None:
    """List every known projection: its source, live checkpoint, lag, last error and rows.

    The lag is the number of events (store log) or records (Kafka, when configured) not
    applied yet; '?' when it cannot be known. SOURCE '-' means the projection never ran.

    \b
    Examples:
      facta projections list
      FACTA_PROJECTIONS=shop.projections facta projections list --json
    """
    catalog = load_catalog(projection_modules)
    kafka = kafka_settings(kafka_bootstrap, topic_prefix)
    quiet_logging(False)
    async with await open_store(database_url) as store:
        statuses = await projection_status(store, list(catalog), kafka=kafka, on_kafka_error=_kafka_warning)
    if as_json:
        echo_json([
            {
                "name": s.name, "known": s.known, "source": s.source, "generation": s.generation,
                "checkpoint": coords_json(s.checkpoints), "lag": s.lag, "last_error": s.last_error,
                "rows": s.rows, "updated_at": iso(s.updated_at),
            }
            for s in statuses
        ], indent=2)
        return
    rows = []
    for s in statuses:
        counts = [n for n in s.rows.values() if n is not None]
        rows.append([
            shown(s.name) + ("" if s.known else " (not loaded)"), s.source or "-",
            str(s.generation or "-"), coords_text(s.checkpoints),
            "?" if s.lag is None else str(s.lag), str(sum(counts)) if counts else "-",
            s.last_error or "-",
        ])
    click.echo(table(["NAME", "SOURCE", "GEN", "CHECKPOINT", "LAG", "ROWS", "LAST ERROR"], rows))


@projections_group.command("run")
@click.argument("names", nargs=-1, required=True, metavar="NAME...", type=TEXT["projection"])
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--once", is_flag=True, help="Apply what is there when it starts, then exit 0.")
@click.option("--batch-size", **from_settings("batch_size"), type=WholeNumber(1, 100_000, "batch size"),
              help="Events applied per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="With --once: log what the runners do and wait for.")
@click.option("--kafka-timeout", **from_settings("kafka_timeout_s"), type=Seconds(0.1),
              help="With --once and Kafka: give up after Kafka was unreachable this many seconds, or after the "
                   "group gave no partitions for this long plus the session timeout.")
@click.option("--kafka-session-timeout", **from_settings("kafka_session_timeout_ms", 1000), type=Seconds(1.0, 3600.0),
              help="With Kafka: seconds the consumer group waits for a runner that stopped heartbeating (killed, "
                   "frozen) before its partitions go to the others; brokers accept 6 to 1800 by default.")
@click.option("--group-prefix", **from_settings("group_prefix"), type=TEXT["group_prefix"],
              help="With Kafka: each projection consumes in the consumer group <prefix><name>.")
@metrics_options
@async_command
async def projections_run(names: tuple[str, ...], database_url: str, kafka_bootstrap: str | None, topic_prefix: str,
                          projection_modules: str | None, once: bool, batch_size: int, as_json: bool,
                          verbose: bool, kafka_timeout: float, kafka_session_timeout: float,
                          group_prefix: str, metrics_port: int | None, metrics_host: str) -> None:
    """Keep the named projections up to date, side by side, from the store log or Kafka.

    Runs until SIGINT or SIGTERM (finishing the batch in flight, then exit 0), or with
    --once until caught up with what was there when it started (process managers first,
    then projections, so these see the events those stored), showing each one's progress
    on stderr (bars on a terminal, else a line each every FACTA_PROGRESS_INTERVAL_S seconds). On the store log a second
    runner of the same projection waits and takes over; on Kafka the runners of a
    projection share its partitions in one consumer group and take over each other's. A
    failing handler stops the run with one line naming the event.

    \b
    Examples:
      facta projections run account_balances ride_board --once
      FACTA_KAFKA_BOOTSTRAP=127.0.0.1:9092 facta projections run billing
      facta projections run billing --kafka-bootstrap 127.0.0.1:9092 --kafka-session-timeout 30 --group-prefix staging.
      facta projections run account_balances ride_board --metrics-port 9465
    """
    classes = load_catalog(projection_modules).resolve(names)
    kafka = kafka_settings(kafka_bootstrap, topic_prefix, kafka_timeout, group_prefix=group_prefix,
                           session_timeout_ms=round(kafka_session_timeout * 1000))
    quiet_logging(verbose or not once)
    serve_metrics(metrics_host, metrics_port)
    freeze_heap()
    stop = stop_on_signals()
    async with await open_store(database_url) as store:
        runners = [ProjectionRunner(store, cls, kafka=kafka, config=RunnerConfig(batch_size=batch_size))
                   for cls in classes]
        if not once:
            click.echo(f"running {', '.join(shown(cls.name) for cls in classes)} from "
                       f"{'Kafka at ' + kafka.bootstrap if kafka else 'the store log'}; SIGINT or SIGTERM stops",
                       err=True)

        async def run_one(runner: ProjectionRunner, task: ProgressTask | None = None) -> int:
            try:
                return await runner.run(once=once, stop=stop, on_progress=task)
            except BaseException:
                stop.set()  # one stopped: stop the others cleanly too
                raise

        if once:
            # Process managers first: the events they store (billing_process's charges) are
            # then there for the projections of the same run to apply (billing's table).
            first = [i for i, r in enumerate(runners) if issubclass(r.projection, ProcessManager)]
            results: list[int | BaseException] = [0] * len(runners)
            with ProgressDisplay() as display:
                for batch in (first, [i for i in range(len(runners)) if i not in first]):
                    # Each group's totals when it starts: what the process managers stored is in.
                    tasks = await _progress_tasks(display, store, [runners[i] for i in batch], kafka)
                    done = await asyncio.gather(
                        *(run_one(runners[i], task) for i, task in zip(batch, tasks, strict=True)),
                        return_exceptions=True)
                    for i, result in zip(batch, done, strict=True):
                        results[i] = result
        else:
            results = await asyncio.gather(*(run_one(r) for r in runners), return_exceptions=True)
        live = await checkpoints(store)
    summary = []
    for runner, result in zip(runners, results, strict=True):
        name = runner.projection.name
        summary.append({
            "name": name, "source": "kafka" if kafka else "log", "applied": runner.applied,
            "checkpoint": coords_json(live.get(name, {})),
            "error": str(result) if isinstance(result, BaseException) else None,
        })
    if as_json:
        echo_json(summary, indent=2)
    else:
        for runner, entry in zip(runners, summary, strict=True):
            where = "Kafka" if kafka else "the store log"
            checkpoint = coords_text(live.get(entry["name"], {}))
            state = "stopped on an error" if entry["error"] else f"checkpoint {checkpoint}"
            click.echo(f"{shown(entry['name'])}: applied {plural(runner.applied, 'event')} from {where} ({state})")
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


async def _progress_tasks(display: ProgressDisplay, store: EventStore, runners: list[ProjectionRunner],
                          kafka: KafkaSettings | None) -> list[ProgressTask]:
    """A progress task per runner, its total what its checkpoints lag: on the store log
    the head less the checkpoint (positions), on Kafka the end offsets less the
    checkpoints (records; unknown when Kafka's offsets cannot be read within the Kafka
    timeout, 5 s at most). Cheap reads, once."""
    if not runners:
        return []
    live = await checkpoints(store)
    head = await store.head_position()
    tasks = []
    for runner in runners:
        name = runner.projection.name
        at = live.get(name, {})
        total: int | None
        if kafka is None:
            total = max(head - at.get(LOG, 0), 0)
            unit = "events"
        else:
            from facta.projections.kafka_source import kafka_offsets  # lazy: aiokafka

            unit = "records"
            try:  # bounded: an unreachable Kafka is the runner's to report, within --kafka-timeout
                beginning, end = await asyncio.wait_for(kafka_offsets(kafka, kafka.topics(runner.projection)),
                                                        min(kafka.give_up_after, 5.0))
                total = sum(max(end[tp] - at.get(tp, beginning.get(tp, 0)), 0) for tp in end)
            except (FactaError, TimeoutError):
                total = None
        tasks.append(display.task(f"projection {quoted(name)}", unit, total))
    return tasks


@projections_group.command("wait")
@click.argument("name", type=TEXT["projection"])
@click.option("--position", required=True, type=POSITION, help="The store position to wait for.")
@click.option("--timeout", "timeout_s", required=True, type=Seconds(0.0), metavar="SECONDS",
              help="Give up after this many seconds (exit 1).")
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {projection, position, reached, checkpoint, waited_s} (also when it timed out).")
@async_command
async def projections_wait(name: str, position: int, timeout_s: float, database_url: str,
                           kafka_bootstrap: str | None, topic_prefix: str, projection_modules: str | None,
                           as_json: bool) -> None:
    """Wait until projection NAME has applied the event at a store position (read-your-writes).

    On the store log: until its checkpoint is at or past the position (an event it does
    not handle counts too). On Kafka (FACTA_KAFKA_BOOTSTRAP or --kafka-bootstrap): until
    its checkpoint of the partition the relay sends the event to is past the event's
    record. It polls the checkpoint with a backoff of 5 ms to 100 ms.

    Exit code 0: applied; 1: not within --timeout seconds (one line naming where the
    projection is), or a projection that never ran on this store; 2: usage.

    \b
    Examples:
      facta projections wait ride_board --position 1234 --timeout 5
      facta projections wait billing --position 1234 --timeout 30 --kafka-bootstrap 127.0.0.1:9092 --json
    """
    catalog = load_catalog(projection_modules)
    projection: str | type[Projection] = catalog.get(name) if name in catalog else name
    kafka = kafka_settings(kafka_bootstrap, topic_prefix)
    quiet_logging(False)
    started = time.monotonic()
    async with await open_store(database_url) as store:
        try:
            reached = await wait_for_position(store, projection, position, timeout_s=timeout_s, kafka=kafka)
        except ProjectionWaitTimeout:
            if as_json:
                echo_json({"projection": name, "position": position, "reached": False,
                           "checkpoint": coords_json((await checkpoints(store)).get(name, {})),
                           "waited_s": round(time.monotonic() - started, 3)})
            raise
    if as_json:
        echo_json({"projection": name, "position": position, "reached": True, "checkpoint": coords_json(reached),
                   "waited_s": round(time.monotonic() - started, 3)})
    else:
        click.echo(f"projection {quoted(name)} has applied position {position} ({coords_text(reached)})")


@projections_group.command("skip")
@click.argument("name", type=TEXT["projection"])
@click.option("--position", required=True, type=POSITION, help="The store position of the event to skip.")
@click.option("--reason", default="skipped by an operator", show_default=True, type=TEXT["reason"],
              help="Why, for the record (at most 1000 characters).")
@click.option("--actor", default=None, type=TEXT["skipped_by"], help="Who skips it (default: the login name).")
@database_option
@projections_option
@click.option("--json", "as_json", is_flag=True, help="Print what was recorded as JSON.")
@async_command
async def projections_skip(name: str, position: int, reason: str, actor: str | None, database_url: str,
                           projection_modules: str | None, as_json: bool) -> None:
    """Record that projection NAME skips the event at a store position (a poison event).

    The projection passes over it the next time it starts (restart a running one), and
    `facta projections skipped` lists it. Skipping an event already recorded changes nothing.
    An event the projection has applied already stays in its tables; the skip keeps it out
    of rebuilds (a note on stderr says so).

    \b
    Example:
      facta projections skip driver_earnings --position 1234 --reason "ride without a driver"
    """
    load_catalog(projection_modules).get(name)
    if actor is None:
        actor = login_name()
    async with await open_store(database_url) as store:
        recorded = await skip_event(store, name, position, reason, actor)
    if as_json:
        echo_json(recorded | {"skipped_by": actor})
    else:
        click.echo(f"projection {quoted(name)} will skip position {position} ({shown(recorded['event_type'])} "
                   f"event {recorded['event_id']}): {shown(recorded['reason'])}")
    if recorded["already_applied"]:
        click.echo(f"facta: note: projection {quoted(name)} has applied position {position} already; the skip "
                   f"keeps it out of rebuilds (`facta replay {shown(name)} --from-position 0` to take it out now)",
                   err=True)


@projections_group.command("skipped")
@click.argument("name", required=False, type=TEXT["projection"])
@database_option
@projections_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def projections_skipped(name: str | None, database_url: str, projection_modules: str | None,
                              as_json: bool) -> None:
    """List the events recorded as skipped (of projection NAME, or of all).

    APPLIED is when the projection passed over the event; '-' means not yet.

    \b
    Examples:
      facta projections skipped
      facta projections skipped driver_earnings --json
    """
    if name is not None:
        load_catalog(projection_modules).get(name)
    async with await open_store(database_url) as store:
        skips = await skipped_events(store, name)
    entries = [
        {
            "projection": s["projection"], "position": s["position"], "event_id": str(s["event_id"]),
            "event_type": s["event_type"], "reason": s["reason"], "skipped_by": s["skipped_by"],
            "skipped_at": iso(s["skipped_at"]), "applied_at": iso(s["applied_at"]),
        }
        for s in skips
    ]
    if as_json:
        echo_json(entries, indent=2)
    elif not entries:
        click.echo("no skipped events" + (f" for projection {quoted(name)}" if name else ""))
    else:
        click.echo(table(
            ["PROJECTION", "POSITION", "EVENT TYPE", "EVENT ID", "SKIPPED AT", "BY", "APPLIED AT", "REASON"],
            [[shown(e["projection"]), str(e["position"]), shown(e["event_type"] or "-"), e["event_id"],
              e["skipped_at"] or "-", shown(e["skipped_by"] or "-"), e["applied_at"] or "-", shown(e["reason"])]
             for e in entries],
        ))
