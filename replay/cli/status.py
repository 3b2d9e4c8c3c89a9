"""`facta status`: the store's head, every relay's and projection's checkpoint, lag, rate
and last error; refreshed in place (rich Live), or one reading as JSON."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from facta.projections.status import Follower, StoreStatus, store_status

from .app import async_command, cli, quiet_logging, stop_on_signals
from .options import Seconds, database_option, open_store
from .output import coords_json, coords_text, duration, echo_json, iso, printable, shown, table_lines

Key = tuple[str, str]


def rates(before: tuple[float, StoreStatus] | None, now: tuple[float, StoreStatus]) -> dict[Key, float]:
    """Per (kind, name): how fast its checkpoints moved between two readings (positions
    or Kafka offsets per second, on the monotonic clock); absent without an earlier one."""
    if before is None or now[0] <= before[0]:
        return {}
    seconds = now[0] - before[0]
    old = {(f.kind, f.name): f.progress for f in before[1].relays + before[1].projections}
    return {(f.kind, f.name): max(f.progress - old[(f.kind, f.name)], 0) / seconds
            for f in now[1].relays + now[1].projections if (f.kind, f.name) in old}


def _entry(f: Follower, rate: float | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f.name}
    if f.kind == "projection":
        entry["source"] = f.source
    entry |= {
        "checkpoint": coords_json(f.checkpoints), "lag_events": f.lag_events,
        "lag_s": None if f.lag_s is None else round(f.lag_s, 3),
        "events_per_second": None if rate is None else round(rate, 1), "updated_at": iso(f.updated_at),
    }
    if f.kind == "projection":
        entry["last_error"] = f.last_error
    return entry


def status_json(status: StoreStatus, rate: dict[Key, float], interval_s: float) -> dict[str, Any]:
    """The document `facta status --json` prints (README, "### Status")."""
    return {
        "head": status.head, "taken_at": iso(status.taken_at), "interval_s": interval_s,
        "relays": [_entry(f, rate.get(("relay", f.name))) for f in status.relays],
        "projections": [_entry(f, rate.get(("projection", f.name))) for f in status.projections],
    }


def status_lines(status: StoreStatus, rate: dict[Key, float]) -> list[str]:
    """The view: a head line and one table row per relay and projection."""
    rows = []
    for f in status.relays + status.projections:
        r = rate.get((f.kind, f.name))
        rows.append([
            f.kind, shown(f.name), f.source, coords_text(f.checkpoints),
            "?" if f.lag_events is None else str(f.lag_events),
            "?" if f.lag_s is None else duration(f.lag_s) if f.lag_s else "0", "-" if r is None else f"{r:.0f}",
            iso(f.updated_at) or "-", printable(f.last_error) if f.last_error else "-",
        ])
    head = f"store head: position {status.head} (at {iso(status.taken_at)})"
    if not rows:
        return [head, "no relay or projection has run on this store"]
    return [head, *table_lines(["KIND", "NAME", "SOURCE", "CHECKPOINT", "LAG", "LAG TIME", "RATE/S", "UPDATED",
                                "LAST ERROR"], rows)]


@cli.command("status")
@database_option
@click.option("--interval", "interval_s", default=2.0, show_default=True, type=Seconds(0.0, 3600.0),
              metavar="SECONDS", help="Seconds between refreshes; with --json, between the two readings a rate is "
                                      "measured over (0: print one reading, no rates, and exit).")
@click.option("--json", "as_json", is_flag=True, help="Print one reading as JSON and exit.")
@async_command
async def status_command(database_url: str, interval_s: float, as_json: bool) -> None:
    """Show the store's head and where every relay and projection is: checkpoint, lag in
    events and in time, rate and last error, refreshed in place until Ctrl-C (exit 0).

    Read from the store alone: LAG is store positions after the checkpoint (events a
    projection does not handle included), LAG TIME how long ago the oldest of them was
    recorded; for a projection that reads Kafka both are '?' (its checkpoints are
    offsets: `facta projections list` with Kafka gives its lag). RATE/S is how fast the
    checkpoint moved since the previous refresh.

    \b
    Examples:
      facta status
      facta status --interval 5
      facta status --json --interval 0
    """
    quiet_logging(False)
    async with await open_store(database_url) as store:
        if as_json:
            before = None
            if interval_s > 0:
                before = (time.monotonic(), await store_status(store))
                await asyncio.sleep(interval_s)
            now = (time.monotonic(), await store_status(store))
            echo_json(status_json(now[1], rates(before, now), interval_s), indent=2)
            return
        if interval_s == 0:  # one reading, as with --json: no view to refresh, no rates
            click.echo("\n".join(status_lines(await store_status(store), {})))
            return
        await _live(store, interval_s)


async def _live(store: Any, interval_s: float) -> None:
    """Refresh the view in place on a terminal (rich Live); elsewhere (a pipe, a log) print
    each reading after the other, a blank line between."""
    from rich.console import Console  # lazy: see output.table_lines
    from rich.live import Live
    from rich.text import Text

    stop = stop_on_signals()  # SIGINT and SIGTERM end the view: exit 0
    console = Console(highlight=False, markup=False, emoji=False)
    previous: tuple[float, StoreStatus] | None = None
    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
    if live is not None:
        live.start()
    try:
        while not stop.is_set():
            now = (time.monotonic(), await store_status(store))
            lines = status_lines(now[1], rates(previous, now))
            if live is not None:
                # Each row one line, cut at the terminal's width, so Live redraws the same lines.
                live.update(Text("\n".join(lines), no_wrap=True, overflow="crop"), refresh=True)
            else:
                click.echo("\n".join(lines) + "\n")
            previous = now
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
    finally:
        if live is not None:
            live.stop()
