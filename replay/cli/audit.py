"""`facta audit`: what happened to a stream (history, state, diff), which events match
(events) and what one business transaction did (trace)."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from facta.errors import InvalidValue
from facta.eventstore import integrity, sealer
from facta.eventstore.merkle import TreeHead
from facta.eventstore.sealer import TreeReport
from facta.eventstore.audit import (
    FILTER_COLUMNS,
    AuditError,
    diff,
    events,
    history,
    state_at,
    trace,
    unknown_filter_values,
)

from .app import async_command, cli, stop_on_signals, usage_error
from .options import (
    POSITION,
    POSITION_OR_ZERO,
    TEXT,
    UTC_TIME,
    VERSION,
    VERSION_OR_ZERO,
    FilePath,
    Seconds,
    WholeNumber,
    aggregates_option,
    database_option,
    import_aggregates,
    json_file,
    key_file_option,
    open_store,
    private_key,
    public_key,
)
from .output import (
    EVENT_COLUMNS,
    compact,
    compact_json,
    echo_json,
    event_json,
    event_row,
    iso,
    plural,
    quoted,
    shown,
    table,
    write_csv,
)
from .progress import ProgressDisplay


@cli.group("audit")
def audit_group() -> None:
    """Answer questions about history: what happened to a stream, who did it, and what
    it looked like at a version or at a moment; prove it was not changed since.

    \b
    TIME is ISO 8601 with a time zone (2026-11-22T12:00:00+01:00, 2026-11-22T11:00:00Z);
    every time shown is UTC.

    \b
    Examples:
      facta audit history ride-00042
      facta audit state acct-rider-001 --as-of 2026-11-22T12:00:00+01:00
      facta audit diff ride-00042 --from-version 1 --to-version 3
      facta audit events --type account.transferred_out --actor billing --newest-first
      facta audit trace ride-00042
      facta audit verify
    """


@audit_group.command("history")
@click.argument("stream_id", type=TEXT["stream_id"])
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def audit_history(stream_id: str, database_url: str, as_json: bool) -> None:
    """Every event of stream STREAM_ID: version, type, time, actor, correlation and
    causation ids, and the payload.

    \b
    Examples:
      facta audit history ride-00042
      facta audit history acct-rider-001 --json
    """
    async with await open_store(database_url) as store:
        records = [event_json(r) for r in await history(store, stream_id)]
    if as_json:
        echo_json(records, indent=2)
        return
    click.echo(f"{shown(records[0]['stream_type'])} {shown(stream_id)}: {plural(len(records), 'event')}")
    click.echo(table(
        ["VERSION", "POSITION", "RECORDED AT (UTC)", "TYPE", "ACTOR", "CORRELATION", "CAUSATION", "PAYLOAD"],
        [[str(e["version"]), str(e["position"]), e["recorded_at"], shown(e["event_type"]), compact(e["actor"]),
          compact(e["correlation_id"]), compact(e["causation_id"]), compact(e["payload"])] for e in records],
    ))


@audit_group.command("state")
@click.argument("stream_id", type=TEXT["stream_id"])
@click.option("--at-version", type=VERSION, default=None, metavar="N", help="The state after event N.")
@click.option("--as-of", type=UTC_TIME, default=None, metavar="TIME",
              help="The state after the last event recorded at or before TIME (ISO 8601 with a time zone).")
@database_option
@aggregates_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def audit_state(stream_id: str, at_version: int | None, as_of: datetime | None, database_url: str,
                      aggregate_modules: str | None, as_json: bool) -> None:
    """The state of STREAM_ID's aggregate as it was at a version or a time (now when
    neither is given). Loads start from the newest snapshot at or below that version.

    \b
    Examples:
      facta audit state ride-00042 --at-version 3
      facta audit state acct-rider-001 --as-of 2026-11-22T12:00:00+01:00 --json
    """
    if at_version is not None and as_of is not None:
        raise usage_error("give --at-version or --as-of, not both")
    import_aggregates(aggregate_modules)
    async with await open_store(database_url) as store:
        found = await state_at(store, stream_id, at_version=at_version, as_of=as_of)
    data = found.as_dict()
    if as_json:
        echo_json(data, indent=2)
        return
    click.echo(f"{shown(found.stream_type)} {shown(stream_id)} at version {found.version} (recorded {data['recorded_at']})")
    if found.left_out:
        click.echo(f"without version{'s' if len(found.left_out) > 1 else ''} {', '.join(map(str, found.left_out))},"
                   " recorded after that time: a state no reader of the stream saw")
    click.echo(table(["FIELD", "VALUE"], [[shown(name), compact(value)] for name, value in data["state"].items()]))


@audit_group.command("diff")
@click.argument("stream_id", type=TEXT["stream_id"])
@click.option("--from-version", type=VERSION_OR_ZERO, required=True, metavar="A",
              help="The state after event A (0: before the first event).")
@click.option("--to-version", type=VERSION, required=True, metavar="B", help="The state after event B.")
@database_option
@aggregates_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def audit_diff(stream_id: str, from_version: int, to_version: int, database_url: str,
                     aggregate_modules: str | None, as_json: bool) -> None:
    """Which fields of STREAM_ID's state changed between versions A and B (old -> new),
    and the events (version and type) that changed each.

    \b
    Examples:
      facta audit diff ride-00042 --from-version 1 --to-version 3
      facta audit diff acct-rider-001 --from-version 0 --to-version 3 --json
    """
    if to_version <= from_version:
        raise usage_error(f"--to-version ({to_version}) must be greater than --from-version ({from_version})")
    import_aggregates(aggregate_modules)
    async with await open_store(database_url) as store:
        result = await diff(store, stream_id, from_version, to_version)
    if as_json:
        echo_json(result.as_dict(), indent=2)
        return
    click.echo(f"{shown(result.stream_type)} {shown(stream_id)}: version {from_version} -> {to_version}, "
               f"{plural(len(result.events), 'event')}, {plural(len(result.changes), 'field')} changed")
    if result.changes:
        click.echo(table(
            ["FIELD", "OLD", "NEW", "CHANGED BY"],
            [[shown(c.field), compact(c.old), compact(c.new), ", ".join(f"{v} {shown(t)}" for v, t in c.changed_by)]
             for c in result.changes],
        ))


@audit_group.command("events")
@click.option("--type", "types", multiple=True, metavar="T", type=TEXT["event_type"], help="Only events of type T (repeat for several).")
@click.option("--stream-type", "stream_types", multiple=True, metavar="S", type=TEXT["stream_type"],
              help="Only events of streams of type S (repeat for several).")
@click.option("--since", type=UTC_TIME, default=None, metavar="TIME", help="Recorded at or after TIME.")
@click.option("--until", type=UTC_TIME, default=None, metavar="TIME", help="Recorded at or before TIME.")
@click.option("--actor", default=None, type=TEXT["actor"], help="Only events appended by this actor.")
@click.option("--correlation-id", default=None, type=TEXT["correlation_id"],
              help="Only events with this correlation id.")
@click.option("--newest-first", is_flag=True, help="Newest first (default: oldest first).")
@click.option("--limit", type=WholeNumber(1, 10_000, "page size"), default=100, show_default=True, help="Events per page.")
@click.option("--after-position", type=POSITION_OR_ZERO, default=None, metavar="P",
              help="Only events after position P (the next page, oldest first).")
@click.option("--before-position", type=POSITION, default=None, metavar="P",
              help="Only events before position P (the next page, newest first).")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {events, cursor}.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@async_command
async def audit_events(types: tuple[str, ...], stream_types: tuple[str, ...], since: datetime | None,
                       until: datetime | None, actor: str | None, correlation_id: str | None, newest_first: bool,
                       limit: int, after_position: int | None, before_position: int | None, database_url: str,
                       as_json: bool, as_csv: bool) -> None:
    """A page of the log's events matching every filter given, oldest or newest first.

    When there are more, the next page's option is printed on stderr (--after-position P
    oldest first, --before-position P newest first); --json gives it as "cursor".

    \b
    Examples:
      facta audit events --stream-type account --since 2026-11-22T00:00:00+01:00
      facta audit events --type ride.trip_ended --type ride.cancelled --newest-first --limit 20
      facta audit events --actor billing --csv > billing.csv
    """
    if as_json and as_csv:
        raise usage_error("give --json or --csv, not both")
    if since is not None and until is not None and since > until:
        raise usage_error(f"--since ({iso(since)}) is after --until ({iso(until)})")
    async with await open_store(database_url) as store:
        page = await events(store, types=types or None, stream_types=stream_types or None, since=since,
                            until=until, actor=actor, correlation_id=correlation_id, newest_first=newest_first,
                            limit=limit, after_position=after_position, before_position=before_position)
        unknown = await unknown_filter_values(store, {
            "event_type": list(types), "stream_type": list(stream_types), "actor": [actor] if actor is not None else [],
            "correlation_id": [correlation_id] if correlation_id is not None else []})
    for found in unknown:
        hint = f"; did you mean {' or '.join(quoted(c) for c in found.close)}?" if found.close else ""
        click.echo(f"facta: note: no stored event has {FILTER_COLUMNS[found.column]} {quoted(found.value)}{hint}",
                   err=True)
    records = [event_json(r) for r in page.events]
    if as_json:
        echo_json({"events": records, "cursor": page.cursor}, indent=2)
        return
    if as_csv:
        columns = ["position", "recorded_at", "occurred_at", "stream_id", "stream_type", "version", "event_type",
                   "schema_version", "event_id", "actor", "correlation_id", "causation_id", "payload"]
        write_csv(columns, ([compact_json(e[c]) if c == "payload" else ("" if e[c] is None else e[c]) for c in columns]
                            for e in records))
    elif not records:
        click.echo("no events match")
    else:
        click.echo(table(EVENT_COLUMNS, [event_row(e) for e in records]))
    if page.cursor is not None:
        option = "--before-position" if newest_first else "--after-position"
        click.echo(f"more events: add {option} {page.cursor}", err=True)


@audit_group.command("trace")
@click.argument("correlation_id", type=TEXT["correlation_id"])
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@async_command
async def audit_trace(correlation_id: str, database_url: str, as_json: bool) -> None:
    """Every event of one business transaction (CORRELATION_ID) across streams, in the
    order they were stored: a ride and the account movements its billing caused.

    \b
    Examples:
      facta audit trace ride-00042
      facta audit trace ride-00042 --json
    """
    async with await open_store(database_url) as store:
        records = [event_json(r) for r in await trace(store, correlation_id)]
    if not records:
        raise AuditError(f"no event has correlation id {quoted(correlation_id)}")
    if as_json:
        echo_json(records, indent=2)
        return
    streams = sorted({e["stream_id"] for e in records})
    click.echo(f"correlation {shown(correlation_id)}: {plural(len(records), 'event')} in {plural(len(streams), 'stream')}")
    click.echo(table(EVENT_COLUMNS, [event_row(e) for e in records]))




@audit_group.command("verify")
@click.option("--against", "digest_file", type=FilePath(), default=None, metavar="DIGEST_FILE",
              help="A digest saved earlier by facta audit digest: prove the log still extends it.")
@click.option("--public-key", "public_key_file", type=FilePath(), default=None, metavar="PEM_FILE",
              help="The public key that checks the tree heads (default: the signing key's public half).")
@key_file_option
@database_option
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {intact, events, streams, snapshots, differences, first, tree}.")
@async_command
async def audit_verify(digest_file: str | None, public_key_file: str | None, key_file: str | None,
                       database_url: str, as_json: bool) -> None:
    """Recompute every stream's hash chain and every snapshot's hash, and report the first
    place where anything differs: position, stream, version and what differs. With a key
    (--key-file, FACTA_SIGNING_KEY_FILE or --public-key) and once the chains are intact,
    also recompute the Merkle log from the event hashes and check it against the sealed
    leaves, the stored nodes and every signed head; with --against, prove the log extends
    the tree a digest saved earlier committed to.

    Progress goes to stderr (a bar on a terminal, else a line every
    FACTA_PROGRESS_INTERVAL_S seconds). Exit code 0: intact; 1: something differs, a
    head or digest another key signed (or the database could not be read); 2: usage.
    Events stored before revision 0010 count as differences until `facta audit seal` gave
    them their hash.

    \b
    Examples:
      facta audit verify
      facta audit verify --json
      facta audit verify --against digest-2026-12-01.json --public-key signing.pub.pem
    """
    key: Ed25519PublicKey | None = None
    if public_key_file or key_file or digest_file is not None:
        key = public_key(key_file, public_key_file)
    against: TreeHead | None = None
    if digest_file is not None:
        try:
            against = TreeHead.from_json(json_file(digest_file, "digest file"), source=f"digest file {digest_file!r}")
        except InvalidValue as exc:
            raise usage_error(str(exc)) from None
    tree: TreeReport | None = None
    async with await open_store(database_url) as store:
        # Progress on stderr, out of the log's head (the log is gap-free: one event per position).
        with ProgressDisplay() as display:
            task = display.task("audit verify", "events", await store.head_position())
            report = await integrity.verify(store, progress=task)
        if key is not None and report.intact and (against is not None or await sealer.latest_head(store) is not None):
            tree = await sealer.verify_tree(store, key, against=against)
    first = report.first
    intact = report.intact and (tree is None or tree.intact)
    if as_json:
        first_json = None if first is None else {"position": first.position, "stream_id": first.stream_id,
                                                 "version": first.version, "kind": first.kind, "what": first.what}
        if first_json is None and tree is not None and tree.problem is not None:
            first_json = {"position": tree.position, "stream_id": None, "version": None, "kind": "tree",
                          "what": tree.problem}
        echo_json({
            "intact": intact, "events": report.events, "streams": report.streams,
            "snapshots": report.snapshots, "differences": report.differences,
            "first": first_json,
            "tree": None if tree is None or tree.head is None else {
                "intact": tree.intact, "leaves": tree.leaves, "heads": tree.heads, "tree_size": tree.head.tree_size,
                "last_position": tree.head.last_position, "unsealed_events": tree.unsealed,
                "against_tree_size": None if against is None else against.tree_size},
        }, indent=2)
    else:
        checked = (f"{plural(report.events, 'event')} in {plural(report.streams, 'stream')},"
                   f" {plural(report.snapshots, 'snapshot')}")
        if first is not None:
            where = "snapshot" if first.position is None else f"position {first.position}"
            click.echo(f"{checked}: {plural(report.differences, 'difference')}")
            click.echo(f"first: {where}, stream {shown(first.stream_id)} version {first.version} ({first.kind}):"
                       f" {first.what}")
        elif tree is not None and tree.head is not None:
            click.echo(f"{checked}: chains intact")
            extends = f", extends the saved digest's tree of {against.tree_size}" if against is not None else ""
            sealed = (f"tree: {plural(tree.heads, 'signed head')}, the newest over {plural(tree.head.tree_size, 'event')}"
                      f" to position {tree.head.last_position}{extends}")
            click.echo(f"{sealed}: intact ({plural(tree.unsealed, 'event')} not sealed yet)" if tree.problem is None
                       else f"{sealed}: TAMPERED")
            if tree.problem is not None:
                click.echo(f"first: {tree.problem}")
        else:
            click.echo(f"{checked}: intact")
            why = "no signed tree head yet (facta audit seal --key-file)" if key is not None else \
                "give --key-file or --public-key (or set FACTA_SIGNING_KEY_FILE)"
            click.echo(f"facta: note: the Merkle log was not checked: {why}", err=True)
    if not intact:
        sys.exit(1)


@audit_group.command("seal")
@click.option("--interval", type=Seconds(0.1), default=None, metavar="SECONDS",
              help="With a key: keep sealing every SECONDS until Ctrl-C or SIGTERM (default: once).")
@key_file_option
@database_option
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON per run: {events, snapshots} (hashes written), and tree {added, tree_size, head}.")
@async_command
async def audit_seal(interval: float | None, key_file: str | None, database_url: str, as_json: bool) -> None:
    """Give the events stored before revision 0010, and snapshots without one, their
    hash (once: the only change the permanent history allows), chained per stream from
    32 zero bytes. Safe to run again: it then writes nothing.

    With a signing key (--key-file or FACTA_SIGNING_KEY_FILE), then fold the settled
    events into the Merkle log, in position order, continuing where the last run
    stopped, and sign a tree head when the tree grew. --interval repeats the whole run.

    \b
    Examples:
      facta audit seal
      facta audit seal --key-file signing.pem
      facta audit seal --interval 60
    """
    key = private_key(key_file) if key_file or interval is not None else None
    async with await open_store(database_url) as store:
        stop = None if interval is None else stop_on_signals()
        while True:
            sealed = await integrity.seal_backfill(store)
            tree = None if key is None else await sealer.seal(store, key)
            if as_json:
                doc: dict[str, Any] = {"events": sealed.events, "snapshots": sealed.snapshots}
                if tree is not None:
                    doc["tree"] = {"added": tree.added, "tree_size": tree.tree_size,
                                   "head": None if tree.head is None else tree.head.as_json()}
                echo_json(doc, indent=None if stop is not None else 2)
            else:
                click.echo(f"backfilled: {plural(sealed.events, 'event')}, {plural(sealed.snapshots, 'snapshot')}")
                if tree is not None:
                    signed = (f"signed head {tree.head.tree_size} (root {tree.head.root_hash.hex()[:16]}..)"
                              if tree.head is not None else "no new head")
                    click.echo(f"sealed {plural(tree.added, 'event')}: tree of {tree.tree_size}, {signed}")
            if stop is None or interval is None:
                return
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
