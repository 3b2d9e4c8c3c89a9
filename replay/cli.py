"""The `facta` command line.

User mistakes (a bad URL, an unreachable server, a conflict) print one line on stderr and
exit 1; usage errors exit 2; tracebacks are kept for bugs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from facta import __version__, migrations
from facta.domain import FactaError
from facta.eventstore.database import DEFAULT_DATABASE_URL, Database, translate_connect_errors

__all__ = ["cli", "main"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


# -- option types -----------------------------------------------------------------------------
#
# Every number, time, name and URL an option or argument takes is checked by one of these
# types before any I/O: a value out of range, non-finite or malformed is a usage error
# (exit 2) with one line naming the option, the value and the limit.

MAX_POSITION = 2**63 - 1
"""The largest store position or Kafka offset (64-bit signed, BIGINT)."""
MAX_VERSION = 2**31 - 1
"""The largest stream version (32-bit signed, INTEGER on PostgreSQL)."""
MAX_PARTITION = 2**31 - 1
"""The largest Kafka partition number (32-bit signed)."""
MAX_SECONDS = 86_400.0
"""The longest timeout or interval an option takes: a day."""

_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


class WholeNumber(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """A whole number in ``low..high`` written in ASCII digits: positions, offsets,
    versions, partitions, counts. ``what`` names it in errors ("stream version")."""

    name = "integer"

    def __init__(self, low: int, high: int, what: str) -> None:
        self.low, self.high, self.what = low, high, what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not _WHOLE_NUMBER.fullmatch(text):
                self.fail(f"{_clip(str(value))!r} is not a whole number ({_a(self.what)}, {self.low} to {self.high})",
                          param, ctx)
            digits = text.lstrip("+-").lstrip("0")
            if len(digits) > 30:  # far beyond any limit; int() of thousands of digits is refused anyway
                self.fail(f"{_clip(text)} is not {_a(self.what)}: give {self.low} to {self.high}", param, ctx)
            number = int(text)
        if number < self.low:
            self.fail(f"{number} is below {self.low}, the smallest {self.what}", param, ctx)
        if number > self.high:
            self.fail(f"{number} is above {self.high}, the largest {self.what}", param, ctx)
        return number


class Seconds(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """A finite number of seconds in ``low..high`` (timeouts and intervals)."""

    name = "seconds"

    def __init__(self, low: float, high: float = MAX_SECONDS) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{_clip(str(value))!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{_clip(str(value))!r} is not a finite number of seconds: give {self.low:g} to {self.high:g}",
                      param, ctx)
        if not self.low <= seconds <= self.high:
            self.fail(f"{_clip(str(value).strip())} seconds is outside {self.low:g} to {self.high:g}", param, ctx)
        return seconds


class UtcTime(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """An ISO 8601 time with a time zone (``2026-11-22T12:00:00+01:00``, ``...Z``), as an
    aware UTC datetime. A time that has no UTC equivalent a datetime can hold (before
    0001-01-01T00:00:00Z or after 9999-12-31T23:59:59.999999Z once converted), or with
    more than 6 fractional digits (a datetime holds microseconds), is refused."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            text = str(value).strip()
            if re.search(r"[.,][0-9]{7,}", text):  # datetime keeps 6 digits and silently drops the rest
                self.fail(f"{_clip(text)!r} has more than 6 fractional digits: give at most microseconds", param, ctx)
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                self.fail(f"{_clip(text)!r} is not an ISO 8601 time: give e.g. 2026-11-22T12:00:00+01:00 or "
                          "2026-11-22T11:00:00Z", param, ctx)
            if parsed.tzinfo is None or parsed.utcoffset() is None:
                self.fail(f"{text!r} has no time zone: add one, e.g. {text}Z or {text}+01:00", param, ctx)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            edge = "before 0001-01-01T00:00:00Z" if parsed.year == 1 else "after 9999-12-31T23:59:59.999999Z"
            self.fail(f"{str(value).strip()!r} is {edge} in UTC, outside the times facta can handle", param, ctx)


class Text(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """A name or id as the store holds it: at most ``max_length`` characters (None: no
    limit), no NUL character (PostgreSQL cannot store one), valid Unicode (no bytes that
    are not UTF-8) and, unless ``empty``, not empty (nor only spaces)."""

    name = "text"

    def __init__(self, what: str, max_length: int | None, *, empty: bool = False) -> None:
        self.what, self.max_length, self.empty = what, max_length, empty

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not self.empty and not text.strip():
            self.fail(f"{text!r} is empty: give {_a(self.what)}", param, ctx)
        if "\x00" in text:
            self.fail(f"{_clip(text)!r} holds a NUL character, which no {self.what} can hold", param, ctx)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(f"{_clip(text)!r} is not valid UTF-8 text", param, ctx)
        if self.max_length is not None and len(text) > self.max_length:
            self.fail(f"{_clip(text)!r} has {len(text)} characters; {_a(self.what)} has at most {self.max_length}",
                      param, ctx)
        return text


class DatabaseURL(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """A database URL facta can use: not empty, a supported dialect and driver, ports 1 to
    65535, only the query options :func:`~facta.eventstore.database.resolve_url` accepts,
    each in range. Checked without connecting; whether the server answers is found out
    when the store is opened (exit 1)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from facta.eventstore.database import resolve_url
        from facta.eventstore.errors import DatabaseURLError

        text = str(value)
        if not text.strip():
            self.fail(f"{text!r} is empty: give a URL such as {DEFAULT_DATABASE_URL} or "
                      "postgresql+asyncpg://localhost/facta", param, ctx)
        text = Text("database URL", 10_000).convert(text, param, ctx)
        try:
            resolve_url(text)
        except DatabaseURLError as exc:
            self.fail(str(exc), param, ctx)
        return text


class KafkaBootstrap(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """A Kafka bootstrap list ``host:port[,host:port]``: ports 1 to 65535, hosts not
    empty, IPv6 addresses in brackets (the rule of
    :func:`~facta.eventstore.kafka_support.parse_bootstrap`)."""

    name = "host:port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from facta.eventstore.kafka_support import bootstrap_problem

        text = Text("Kafka bootstrap address", 10_000, empty=True).convert(value, param, ctx)
        if not text:  # empty: no Kafka, as documented for FACTA_KAFKA_BOOTSTRAP=
            return text
        problem = bootstrap_problem(text)
        if problem is not None:
            self.fail(problem, param, ctx)
        return text


class Folder(click.Path):
    """A folder path (it need not exist yet) with no NUL character and valid UTF-8."""

    def __init__(self) -> None:
        super().__init__(file_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(Text("folder path", 4096).convert(value, param, ctx), param, ctx)


class Revision(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """One of facta's schema revisions: ``alias`` (``head`` for an upgrade, ``base`` for a
    downgrade), or a revision id alembic knows."""

    name = "revision"

    def __init__(self, alias: str = "head") -> None:
        self.alias = alias

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from alembic.script import ScriptDirectory

        text = Text("revision", 100).convert(value, param, ctx)
        if text == self.alias:
            return text
        script = ScriptDirectory.from_config(migrations.alembic_config())
        known = [r.revision for r in script.walk_revisions()]
        if text not in known:
            self.fail(f"{text!r} is not a facta schema revision: give {self.alias} or one of {', '.join(sorted(known))}",
                      param, ctx)
        return text


def _clip(text: str, width: int = 60) -> str:
    """A value as shown in an error: long ones cut, so the error stays one readable line."""
    return text if len(text) <= width else f"{text[:width]}...({len(text)} characters)"


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: "an event type", "a stream id", "a URL"."""
    first = noun.split()[0] if noun.split() else noun
    vowel_sound = first[:1].lower() in "aeio" or (first[:1].lower() == "u" and not first.lower().startswith(
        ("uni", "use", "usu", "utf", "url", "uuid")))
    return f"{'an' if vowel_sound or first in ('8', '11', '18') else 'a'} {noun}"


# -- what the user sees ---------------------------------------------------------------------
#
# Names, ids, reasons and messages reach the terminal through these three functions only.
# A character that is not printable (C0 and C1 controls, DEL, bidi overrides such as
# U+202E, zero-width and other invisible format characters, line and paragraph separators,
# spaces other than ' ') is never printed raw: it would move the cursor, recolour or
# reorder the line, or make a value that cannot be pasted back. It is written as an
# escape: \n, \t, \r, \xHH (ASCII), \uHHHH or \UHHHHHHHH. A value holding one is shown
# whole in bash's $'...' quoting (backslash and ' escaped too), which bash, zsh and ksh
# read back as the exact value: `facta audit history $'ride-\x1b[31m'` finds that
# stream. --json (JSON escapes every control character) and --csv keep exact values.


def _escape(text: str, quote: bool) -> str:
    """``text`` with every character that is not printable escaped; with ``quote``,
    backslash and ' are escaped too (the inside of a $'...' string)."""
    out = []
    for ch in text:
        if quote and ch in "\\'":
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def _shown(value: str) -> str:
    """A name, id or reason as a table cell or a word of a line: as it is when every
    character is printable, else ``$'...'`` with escapes (see above), pasteable as is."""
    if value.isprintable() and not value.startswith("$'"):
        return value
    return "$'" + _escape(value, quote=True) + "'"


def _quoted(value: str) -> str:
    """A name, id or reason quoted in a line: ``'ride-1'``, or ``$'...'`` with escapes
    when it holds a ' or a character that is not printable (pasteable as is either way)."""
    if value.isprintable() and "'" not in value:
        return f"'{value}'"
    return "$'" + _escape(value, quote=True) + "'"


def _printable(line: str) -> str:
    """A whole message (an error, a note, a stored last error) with every character that
    is not printable escaped; the values inside it are quoted by whoever wrote it."""
    return line if line.isprintable() else _escape(line, quote=False)


def _plural(count: int, noun: str, plural: str | None = None) -> str:
    """``1 event``, ``2 events``, ``0 events``."""
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


def _column_length(table: Any, column: str) -> int | None:
    length = table.c[column].type.length
    return int(length) if length is not None else None


def _store_texts() -> dict[str, Text]:
    """The texts options and arguments take, each with the store's limit for it (the
    column lengths, and :data:`~facta.eventstore.validation.TEXT_LIMITS`)."""
    from facta.eventstore import schema
    from facta.eventstore.validation import TEXT_LIMITS

    ev = schema.events
    return {
        "stream_id": Text("stream id", _column_length(ev, "stream_id")),
        "stream_type": Text("stream type", _column_length(ev, "stream_type")),
        "event_type": Text("event type", _column_length(ev, "event_type")),
        "actor": Text("actor", _column_length(ev, "actor")),
        "correlation_id": Text("correlation id", _column_length(ev, "correlation_id")),
        "projection": Text("projection name", _column_length(schema.projections, "name")),
        "relay": Text("relay name", _column_length(schema.relay_checkpoints, "name")),
        "reason": Text("reason", TEXT_LIMITS["skip reason"]),
        "skipped_by": Text("actor", TEXT_LIMITS["skipped by"]),
        "prefix": Text("prefix", 249, empty=True),  # Kafka's longest topic name; empty: see _topic_prefix
        "group_prefix": Text("prefix", 249, empty=True),  # no prefix: groups named after the projections
    }


TEXT = _store_texts()
POSITION = WholeNumber(1, MAX_POSITION, "store position")
POSITION_OR_ZERO = WholeNumber(0, MAX_POSITION, "store position")
VERSION = WholeNumber(1, MAX_VERSION, "stream version")
VERSION_OR_ZERO = WholeNumber(0, MAX_VERSION, "stream version")
OFFSET = WholeNumber(0, MAX_POSITION, "Kafka offset")
PARTITION = WholeNumber(0, MAX_PARTITION, "Kafka partition")
UTC_TIME = UtcTime()
MODULES = Text("module list", 10_000, empty=True)  # empty: none of the user's own


def _database_url_given(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The URL given, or the default. Refuses FACTA_DATABASE_URL set to nothing: click
    reads an empty variable as unset, which would silently fall back to the default file."""
    if value is not None:
        return value
    if os.environ.get("FACTA_DATABASE_URL") == "":
        raise click.BadParameter("FACTA_DATABASE_URL is set but empty: give a URL, or unset it for "
                                 f"{DEFAULT_DATABASE_URL}", ctx, param)
    return DEFAULT_DATABASE_URL


def database_option(fn: F) -> F:
    return click.option(
        "--database-url",
        envvar="FACTA_DATABASE_URL",
        default=None,
        show_default=DEFAULT_DATABASE_URL,
        type=DatabaseURL(),
        callback=_database_url_given,
        help="SQLAlchemy URL of the event store (env: FACTA_DATABASE_URL).",
    )(fn)


def kafka_option(fn: F) -> F:
    return click.option(
        "--kafka-bootstrap",
        envvar="FACTA_KAFKA_BOOTSTRAP",
        default=None,
        type=KafkaBootstrap(),
        help="Kafka bootstrap servers, host:port[,host:port] (IPv6 as [::1]:9092; env: FACTA_KAFKA_BOOTSTRAP).",
    )(fn)


def _require_database(database_url: str) -> None:
    """Refuse a SQLite file that does not exist (commands other than `db upgrade` and
    `demo` never create one): one line naming the file and how to create it."""
    from facta.eventstore.database import resolve_url
    from facta.eventstore.errors import DatabaseUnavailable

    url = resolve_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database.startswith("file:"):
        return
    if not Path(url.database).exists():
        shown = database_url if database_url != DEFAULT_DATABASE_URL else url.database
        raise DatabaseUnavailable(
            f"no database file {url.database!r}: create it with `facta db upgrade"
            + ("" if database_url == DEFAULT_DATABASE_URL else f" --database-url {shown}") + "`"
        )


async def _open_store(database_url: str) -> Any:
    """The event store at ``database_url``, which must exist and be at the newest schema."""
    from facta.eventstore import EventStore

    _require_database(database_url)
    return await EventStore.open(database_url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; turn facta's errors into one line on stderr and exit code 1."""
    try:
        return asyncio.run(coro)
    except FactaError as exc:
        click.echo(f"facta: error: {_printable(str(exc))}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("facta: interrupted", err=True)
        sys.exit(130)


def _async_command(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        run(fn(*args, **kwargs))

    return wrapper


def _stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set: the work in flight finishes, then the command ends."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _quiet_logging(verbose: bool) -> None:
    """Log what a long-running command does and waits for (``verbose``); otherwise only
    errors, so a mistake ends in one line. aiokafka's connection noise repeats facta's own
    warnings, so it stays quiet either way."""
    import logging

    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class _OneLineUsageError(click.UsageError):
    """A usage mistake, shown as one line (exit 2) like facta's other errors."""

    def show(self, file: Any = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(_printable(f"facta: error: {self.format_message()}{hint}"), err=True)


def _one_line(exc: click.UsageError, ctx: click.Context) -> _OneLineUsageError:
    if isinstance(exc, _OneLineUsageError):
        return exc
    return _OneLineUsageError(exc.format_message(), exc.ctx or ctx)


class _OneLineCommand(click.Command):
    """A command whose usage errors (bad option values, missing arguments) are one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc


class _OneLineGroup(click.Group):
    """A group whose usage errors (an unknown command or option) are one line, as are
    those of every command and group under it."""

    command_class = _OneLineCommand
    group_class = type  # subgroups are _OneLineGroups too

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            # `facta` or `facta GROUP` alone: its help (the commands it has), exit 0.
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(0)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc, ctx) from exc


def _usage_error(message: str) -> _OneLineUsageError:
    return _OneLineUsageError(message, click.get_current_context(silent=True))


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facta")
def cli() -> None:
    """facta: event sourcing with a permanent SQL event store.

    \b
    Start here:
      facta demo                      run a small taxi city on ./facta.db
      facta db upgrade                create or upgrade the schema
      facta projections list          read models: checkpoints and lag
      facta replay NAME --from-position 0 --dry-run
      facta audit history STREAM_ID   every event of a stream
    """


# -- db -------------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the store's schema (alembic migrations)."""


@db.command("upgrade")
@database_option
@click.option("--revision", default="head", show_default=True, type=Revision(), help="Revision to upgrade to.")
@click.option("--json", "as_json", is_flag=True, help="Print the revisions before and after as JSON.")
@_async_command
async def db_upgrade(database_url: str, revision: str, as_json: bool) -> None:
    """Create the schema or bring it to the newest revision.

    \b
    Examples:
      facta db upgrade
      facta db upgrade --database-url postgresql+asyncpg://localhost/facta
    """
    where, before, after = await _migrate(database_url, lambda database: migrations.upgrade(database, revision))
    if as_json:
        click.echo(json.dumps({"database": where, "before": before, "after": after, "upgraded": before != after}))
    elif before == after:
        click.echo(f"{_shown(where)}: schema already at revision {after}")
    else:
        click.echo(f"{_shown(where)}: schema upgraded from {before or 'nothing'} to revision {after}")


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
@_async_command
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
    _require_database(database_url)
    where, before, after = await _migrate(database_url, lambda database: migrations.downgrade(
        database, revision, drop_events=drop_events, projections=projection_modules))
    if as_json:
        click.echo(json.dumps({"database": where, "before": before, "after": after, "downgraded": before != after}))
    elif before == after:
        click.echo(f"{_shown(where)}: schema already at revision {after}" if after else f"{_shown(where)}: no facta schema")
    else:
        click.echo(f"{_shown(where)}: schema downgraded from {before} to {after or 'nothing (no facta schema)'}")


@db.command("current")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def db_current(database_url: str, as_json: bool) -> None:
    """Show the schema revision the database is at, and the newest one.

    \b
    Examples:
      facta db current
      facta db current --json --database-url postgresql+asyncpg://localhost/facta
    """
    _require_database(database_url)
    database = Database.create(database_url)
    try:
        with translate_connect_errors(database.url):
            revision = await migrations.known_current(database)
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
@_async_command
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
    from facta.eventstore import EventStore, database_url_from_env

    from .demo import check_demo_database, city_view, next_commands, render_city, run_demo

    last_shown = [0]

    def progress(done: int, total: int) -> None:
        if not as_json and (done - last_shown[0] >= max(1, total // 10) or done == total):
            last_shown[0] = done
            click.echo(f"  rides {done}/{total}", err=True)

    if not force:  # before the first line, so a refusal is the only one
        await check_demo_database(database_url)
    if not as_json:
        click.echo(f"facta demo: {_plural(rides, 'ride')}, {_plural(riders, 'rider')}, {_plural(drivers, 'driver')}", err=True)
    s = await run_demo(database_url, rides=rides, riders=riders, drivers=drivers, seed=seed, progress=progress,
                       project=not no_projections, force=True,  # checked above
                       notice=None if as_json else lambda line: click.echo(_printable(line), err=True))
    streamed = await _demo_kafka(database_url, kafka_bootstrap, as_json, not no_idempotence) if kafka else None
    if as_json:
        click.echo(json.dumps({
            "rides_completed": s.rides_completed, "rides_cancelled": s.rides_cancelled,
            "telemetry_points": s.telemetry_points, "fares_total_minor": s.fares_total,
            "events_appended": s.events_appended, "log_head": s.log_head,
            "elapsed_s": round(s.elapsed_s, 3), "driver_earnings_minor": s.earnings,
            "projected": s.projected, "kafka": streamed, "run": s.run, "resumed_at_ride": s.resumed_at_ride,
            "next_commands": next_commands(s, None if database_url == database_url_from_env() else database_url),
        }, sort_keys=True))
        return
    click.echo(f"rides completed   {s.rides_completed}")
    click.echo(f"rides cancelled   {s.rides_cancelled}")
    click.echo(f"telemetry points  {s.telemetry_points}")
    click.echo(f"fares charged     EUR {s.fares_total / 100:.2f}")
    click.echo(f"events appended   {s.events_appended} in {s.elapsed_s:.1f} s ({s.events_per_second:.0f} events/s)")
    click.echo(f"log head          position {s.log_head}")
    if s.projected:
        click.echo("projections       " + ", ".join(f"{name} {_plural(n, 'event')}" for name, n in s.projected.items()))
    if streamed is not None:
        click.echo(f"kafka             {_shown(streamed['bootstrap'])}: published {_plural(streamed['published'], 'event')}")
        for topic, count in streamed["topics"].items():
            click.echo(f"  {topic}  {_plural(count, 'record')}")
    if s.projected:
        # What the read models say now: the tables any reader of them sees.
        async with await EventStore.open(database_url) as store:
            view = await city_view(store)
        click.echo()
        for line in render_city(view):
            click.echo(_printable(line))
    click.echo()
    click.echo("try next:")
    for command in next_commands(s, None if database_url == database_url_from_env() else database_url):
        click.echo(f"  {_printable(command)}")


async def _demo_kafka(database_url: str, bootstrap: str | None, quiet: bool, idempotence: bool) -> dict[str, Any]:
    """Relay the demo's store to Kafka: the given cluster, or a local broker for the run."""
    from .apache_kafka import KAFKA_VERSION
    from .demo import publish_to_kafka
    from .devbroker import default_kind, start_broker

    if bootstrap:
        published, topics = await publish_to_kafka(database_url, bootstrap, idempotence=idempotence)
        return {"bootstrap": bootstrap, "published": published, "topics": topics}
    kind = default_kind()
    if not quiet:
        what = f"Apache Kafka {KAFKA_VERSION}" if kind == "apache" else f"the {kind} stand-in"
        click.echo(f"starting a local Kafka broker ({what}, data in ./.facta-broker)", err=True)

    def progress(line: str) -> None:
        if not quiet:
            click.echo(_printable(line), err=True)

    broker = await asyncio.to_thread(start_broker, kind, ".facta-broker", progress=progress)
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


def _topic_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A topic prefix topics ``<prefix>.<stream type>`` can be formed from (Kafka's rule)."""
    from facta.eventstore.relay import RelayError, check_topic_prefix

    try:
        return check_topic_prefix(value)
    except RelayError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid topic prefix "), ctx, param) from None


async def _relay_that_ran(store: Any, name: str, *, or_default: bool = False) -> Any:
    """The :class:`Relay` of ``name`` and its status, if it has run on this store (else a
    one-line error naming the relays that have). With ``or_default``, the default relay
    is shown even before it first ran (its lag is then the whole log)."""
    from facta.eventstore.relay import Relay, RelayConfig, RelayError

    relay = Relay(store, RelayConfig(bootstrap="unused:9092", name=name))
    status = await relay.status()
    if status.updated_at is None and not (or_default and name == "default"):
        known = ", ".join(_quoted(n) for n in await store.database.read(_relay_names)) or "none"
        raise RelayError(f"no relay named {_quoted(name)} has run on this store (relays: {known})")
    return relay, status


def _relay_names(conn: Any) -> list[str]:
    from sqlalchemy import select

    from facta.eventstore.schema import relay_checkpoints

    return list(conn.execute(select(relay_checkpoints.c.name).order_by(relay_checkpoints.c.name)).scalars())


def _skip_json(skip: Any) -> dict[str, Any]:
    return {
        "position": skip.position, "event_id": str(skip.event_id), "event_type": skip.event_type,
        "reason": skip.reason, "skipped_by": skip.skipped_by, "skipped_at": _iso(skip.skipped_at),
        "passed_at": _iso(skip.passed_at),
    }


@relay.command("run")
@database_option
@kafka_option
@click.option("--once", is_flag=True, help="Publish until caught up, then exit 0.")
@click.option("--name", default="default", show_default=True, type=TEXT["relay"],
              help="Relay name (one checkpoint and lock each).")
@click.option("--topic-prefix", default="facta", show_default=True, type=TEXT["prefix"], callback=_topic_prefix,
              help="Topics are <prefix>.<stream type>: ASCII letters, digits, '.', '_' and '-'.")
@click.option("--partitions", default=3, show_default=True, type=WholeNumber(1, 10_000, "partition count"),
              help="Partitions of topics the relay creates.")
@click.option("--replication-factor", default=None, type=WholeNumber(1, 100, "replication factor"),
              show_default="the cluster's default.replication.factor",
              help="Replication factor of topics the relay creates.")
@click.option("--batch-size", default=1000, show_default=True, type=WholeNumber(1, 100_000, "batch size"),
              help="Events read and published per page.")
@click.option("--no-idempotence", is_flag=True, help="Turn off the idempotent producer (brokers that lack it).")
@click.option("--kafka-timeout", default=30.0, show_default=True, type=Seconds(0.1),
              help="With --once: give up after Kafka was unreachable this many seconds.")
@click.option("--kafka-request-timeout", default=15.0, show_default=True, type=Seconds(1.0, 3600.0),
              help="Seconds a Kafka request may take, and a batch may wait for a partition leader, before "
                   "it fails and the relay publishes again from its checkpoint.")
@click.option("-v", "--verbose", is_flag=True, help="With --once: log progress and retries too.")
@click.option("--json", "as_json", is_flag=True, help="Print what was published as JSON when it ends.")
@_async_command
async def relay_run(database_url: str, kafka_bootstrap: str | None, once: bool, name: str, topic_prefix: str,
                    partitions: int, replication_factor: int | None, batch_size: int, no_idempotence: bool,
                    kafka_timeout: float, kafka_request_timeout: float, verbose: bool, as_json: bool) -> None:
    """Publish every stored event to Kafka, from the relay's checkpoint on.

    Runs until SIGINT or SIGTERM (finishing the page in flight), or with --once until
    caught up. A second relay on the same store waits and takes over when the first stops.
    An event Kafka refuses (too large, say) or whose topic is not a legal Kafka name stops
    it before that event, everything before it published; `facta relay skip` lets it past.

    \b
    Examples:
      facta relay run --kafka-bootstrap 127.0.0.1:9092
      FACTA_KAFKA_BOOTSTRAP=127.0.0.1:9092 facta relay run --once
    """
    from facta.eventstore.relay import Relay

    config = _relay_config(kafka_bootstrap, name=name, topic_prefix=topic_prefix, partitions=partitions,
                           replication_factor=replication_factor, batch_size=batch_size,
                           idempotence=not no_idempotence,
                           request_timeout_ms=round(kafka_request_timeout * 1000))
    # A long-running relay logs what it does and waits for; --once stays quiet unless asked.
    _quiet_logging(verbose or not once)
    stop = _stop_on_signals()
    async with await _open_store(database_url) as store:
        published = await Relay(store, config).run(
            once=once, stop=stop, give_up_after=kafka_timeout if once else None
        )
    if as_json:
        click.echo(json.dumps({"name": name, "published": published}))
    else:
        click.echo(f"relay {_quoted(name)}: published {_plural(published, 'event')}")


@relay.command("status")
@database_option
@click.option("--name", default="default", show_default=True, type=TEXT["relay"],
              help="Relay name (one checkpoint each).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def relay_status(database_url: str, name: str, as_json: bool) -> None:
    """Show the relay's checkpoint, the log's head, the lag (events not yet published) and
    the events it was told to skip. A relay name that never ran on this store is an
    error, except the default relay's (its lag is then the whole log).

    \b
    Examples:
      facta relay status
      facta relay status --name audit-feed --json
    """
    async with await _open_store(database_url) as store:
        _, status = await _relay_that_ran(store, name, or_default=True)
    if as_json:
        click.echo(json.dumps({
            "name": status.name, "checkpoint": status.checkpoint, "head": status.head, "lag": status.lag,
            "updated_at": _iso(status.updated_at),
            "skips": [_skip_json(skip) for skip in status.skips],
        }))
        return
    updated = _iso(status.updated_at) or "never"
    click.echo(f"relay {_quoted(status.name)}: checkpoint {status.checkpoint}, head {status.head}, "
               f"lag {_plural(status.lag, 'event')}, updated {updated}")
    for skip in status.skips:
        if skip.passed_at is not None:
            state = f"passed over at {_iso(skip.passed_at)}"
        elif skip.position <= status.checkpoint:
            state = "published before the skip was recorded"
        else:
            state = "not reached yet"
        click.echo(f"  skip position {skip.position} ({_shown(skip.event_type)} event {skip.event_id}), recorded "
                   f"{_iso(skip.skipped_at)} by {_shown(skip.skipped_by or '-')}: {_shown(skip.reason)}; {state}")


@relay.command("skip")
@click.option("--position", required=True, type=POSITION,
              help="The store position of the event to pass over without publishing it.")
@click.option("--name", default="default", show_default=True, type=TEXT["relay"], help="Relay name.")
@click.option("--reason", default="skipped by an operator", show_default=True, type=TEXT["reason"],
              help="Why, for the record (at most 1000 characters).")
@click.option("--actor", default=None, type=TEXT["skipped_by"], help="Who skips it (default: the login name).")
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print what was recorded as JSON.")
@_async_command
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
    import getpass


    if actor is None:
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            actor = None
    async with await _open_store(database_url) as store:
        relay, _ = await _relay_that_ran(store, name)
        skip, new = await relay.skip(position, reason, actor)
    if as_json:
        click.echo(json.dumps({"relay": name, "new": new, **_skip_json(skip)}))
    elif new:
        click.echo(f"relay {_quoted(name)} will pass over position {position} ({_shown(skip.event_type)} event "
                   f"{skip.event_id}) without publishing it: {_shown(skip.reason)}")
    else:
        click.echo(f"relay {_quoted(name)} skips position {position} already (recorded {_iso(skip.skipped_at)} by "
                   f"{_shown(skip.skipped_by or '-')}: {_shown(skip.reason)}); nothing changed")


# -- projections and replay -------------------------------------------------------------------


def projections_option(fn: F) -> F:
    return click.option(
        "--projections", "projection_modules", envvar="FACTA_PROJECTIONS", default=None, metavar="MODULES",
        type=MODULES,
        help="Your projections: comma-separated package.module or package.module:ClassName, besides the "
             "reference ones (env: FACTA_PROJECTIONS).",
    )(fn)


def topic_prefix_option(fn: F) -> F:
    return click.option("--topic-prefix", default="facta", show_default=True, type=TEXT["prefix"], callback=_topic_prefix,
                        help="With Kafka: the relay's topics are <prefix>.<stream type>.")(fn)


def _kafka_settings(bootstrap: str | None, topic_prefix: str, give_up_after: float = 30.0, **group: Any) -> Any:
    """KafkaSettings when Kafka is configured, else None (projections use the store log).
    ``group``: a runner's consumer group options (group_prefix, session_timeout_ms)."""
    from facta.projections import KafkaSettings

    if not bootstrap:
        return None
    if "session_timeout_ms" in group:  # heartbeats well inside the session (Kafka's rule of thumb: a third)
        group["heartbeat_interval_ms"] = min(1_000, group["session_timeout_ms"] // 3)
    return KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix, give_up_after=give_up_after, **group)


def _coords_json(values: dict[tuple[str, int], int]) -> Any:
    """A log checkpoint as its position, Kafka checkpoints as {"topic[partition]": offset}."""
    from facta.projections.tracking import LOG

    if not values:
        return None
    if set(values) == {LOG}:
        return values[LOG]
    return {f"{t}[{p}]": v for (t, p), v in sorted(values.items())}


def _coords_text(values: dict[tuple[str, int], int]) -> str:
    from facta.projections.tracking import LOG

    if not values:
        return "-"
    if set(values) == {LOG}:
        return f"position {values[LOG]}"
    return " ".join(f"{t}[{p}]={v}" for (t, p), v in sorted(values.items()))


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Rows padded into columns under ``headers``. Cells holding names, ids or reasons
    are passed through :func:`_shown` by the caller; any character that is still not
    printable is escaped here (:func:`_printable`), so no cell reaches the terminal raw."""
    rows = [[_printable(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 0.05:
        return "under 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _iso(value: Any) -> str | None:
    """A time as every command prints it: ISO 8601 in UTC with a Z (None stays None)."""
    from facta.eventstore.audit import utc_text

    return utc_text(value) if isinstance(value, datetime) else None


@cli.group("projections")
def projections_group() -> None:
    """Run read-model projections and see where they are.

    \b
    Projections consume the store's log, or Kafka when FACTA_KAFKA_BOOTSTRAP is set.
    Rebuild one from any point with `facta replay`.
    """


def _describe_projections(conn: Any, classes: list[Any], default_source: str) -> list[dict[str, Any]]:
    """Each projection's row, live checkpoints, tables' row counts and (store log) lag."""
    from sqlalchemy import func, select

    from facta.eventstore.schema import events
    from facta.projections import tracking

    described = tracking.describe(conn)
    out: list[dict[str, Any]] = []
    for cls in classes:
        row = described.get(cls.name, {})
        checkpoints: dict[tuple[str, int], int] = row.get("checkpoints", {})
        source = row.get("source") or default_source
        lag: int | None = None
        if source == "log":
            after = checkpoints.get(tracking.LOG, 0)
            lag = int(conn.execute(
                select(func.count()).where(events.c.position > after, events.c.event_type.in_(cls.event_types()))
            ).scalar_one())
        tables = {
            t.name: tracking.count_rows(conn, t) if tracking.table_exists(conn, t.name) else None
            for t in cls.live_tables()
        }
        out.append({
            "name": cls.name, "known": True, "source": row.get("source"), "consumes": source,
            "generation": row.get("generation"), "checkpoints": checkpoints, "lag": lag,
            "last_error": row.get("last_error"), "rows": tables, "updated_at": row.get("updated_at"),
        })
    known = {cls.name for cls in classes}
    for name, row in sorted(described.items()):
        if name not in known:  # built before, but its module is not loaded now
            out.append({
                "name": name, "known": False, "source": row["source"], "consumes": row["source"],
                "generation": row["generation"], "checkpoints": row["checkpoints"], "lag": None,
                "last_error": row["last_error"], "rows": {}, "updated_at": row["updated_at"],
            })
    return out


async def _kafka_lag(kafka: Any, catalog: Any, entries: list[dict[str, Any]]) -> None:
    """Fill in the lag of Kafka projections: end offset - checkpoint, summed over partitions."""
    from facta.projections.kafka_source import kafka_offsets

    offsets: dict[tuple[str, ...], tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]] = {}
    for entry in entries:
        if entry["consumes"] != "kafka" or not entry["known"]:
            continue
        topics = tuple(kafka.topics(catalog.get(entry["name"])))
        try:
            if topics not in offsets:
                offsets[topics] = await kafka_offsets(kafka, list(topics))
        except FactaError as exc:
            click.echo(f"facta: warning: cannot read Kafka's offsets, lag shown as '?': {_printable(str(exc))}",
                       err=True)
            return
        beginning, end = offsets[topics]
        checkpoints = entry["checkpoints"]
        entry["lag"] = sum(max(end[tp] - checkpoints.get(tp, beginning.get(tp, 0)), 0) for tp in end)


@projections_group.command("list")
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
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
    from facta.projections.catalog import load_catalog

    catalog = load_catalog(projection_modules)
    kafka = _kafka_settings(kafka_bootstrap, topic_prefix)
    _quiet_logging(False)
    async with await _open_store(database_url) as store:
        entries = await store.database.read(_describe_projections, list(catalog), "kafka" if kafka else "log")
    if kafka is not None:
        await _kafka_lag(kafka, catalog, entries)
    if as_json:
        click.echo(json.dumps([
            {
                "name": e["name"], "known": e["known"], "source": e["source"], "generation": e["generation"],
                "checkpoint": _coords_json(e["checkpoints"]), "lag": e["lag"], "last_error": e["last_error"],
                "rows": e["rows"], "updated_at": _iso(e["updated_at"]),
            }
            for e in entries
        ], indent=2))
        return
    rows = []
    for e in entries:
        counts = [n for n in e["rows"].values() if n is not None]
        rows.append([
            _shown(e["name"]) + ("" if e["known"] else " (not loaded)"), e["source"] or "-",
            str(e["generation"] or "-"), _coords_text(e["checkpoints"]),
            "?" if e["lag"] is None else str(e["lag"]), str(sum(counts)) if counts else "-",
            e["last_error"] or "-",
        ])
    click.echo(_table(["NAME", "SOURCE", "GEN", "CHECKPOINT", "LAG", "ROWS", "LAST ERROR"], rows))


@projections_group.command("run")
@click.argument("names", nargs=-1, required=True, metavar="NAME...", type=TEXT["projection"])
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--once", is_flag=True, help="Apply what is there when it starts, then exit 0.")
@click.option("--batch-size", default=1000, show_default=True, type=WholeNumber(1, 100_000, "batch size"),
              help="Events applied per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="With --once: log what the runners do and wait for.")
@click.option("--kafka-timeout", default=30.0, show_default=True, type=Seconds(0.1),
              help="With --once and Kafka: give up after Kafka was unreachable this many seconds, or after the "
                   "group gave no partitions for this long plus the session timeout.")
@click.option("--kafka-session-timeout", default=10.0, show_default=True, type=Seconds(1.0, 3600.0),
              help="With Kafka: seconds the consumer group waits for a runner that stopped heartbeating (killed, "
                   "frozen) before its partitions go to the others; brokers accept 6 to 1800 by default.")
@click.option("--group-prefix", default="facta.projection.", show_default=True, type=TEXT["group_prefix"],
              help="With Kafka: each projection consumes in the consumer group <prefix><name>.")
@_async_command
async def projections_run(names: tuple[str, ...], database_url: str, kafka_bootstrap: str | None, topic_prefix: str,
                          projection_modules: str | None, once: bool, batch_size: int, as_json: bool,
                          verbose: bool, kafka_timeout: float, kafka_session_timeout: float,
                          group_prefix: str) -> None:
    """Keep the named projections up to date, side by side, from the store log or Kafka.

    Runs until SIGINT or SIGTERM (finishing the batch in flight, then exit 0), or with
    --once until caught up with what was there when it started. On the store log a second
    runner of the same projection waits and takes over; on Kafka the runners of a
    projection share its partitions in one consumer group and take over each other's. A
    failing handler stops the run with one line naming the event.

    \b
    Examples:
      facta projections run account_balances ride_board --once
      FACTA_KAFKA_BOOTSTRAP=127.0.0.1:9092 facta projections run billing
      facta projections run billing --kafka-bootstrap 127.0.0.1:9092 --kafka-session-timeout 30 --group-prefix staging.
    """
    from facta.projections import ProjectionRunner, RunnerConfig, tracking
    from facta.projections.catalog import load_catalog

    classes = load_catalog(projection_modules).resolve(names)
    kafka = _kafka_settings(kafka_bootstrap, topic_prefix, kafka_timeout, group_prefix=group_prefix,
                            session_timeout_ms=round(kafka_session_timeout * 1000))
    _quiet_logging(verbose or not once)
    _freeze_heap()
    stop = _stop_on_signals()
    async with await _open_store(database_url) as store:
        runners = [ProjectionRunner(store, cls, kafka=kafka, config=RunnerConfig(batch_size=batch_size))
                   for cls in classes]
        if not once:
            click.echo(f"running {', '.join(_shown(cls.name) for cls in classes)} from "
                       f"{'Kafka at ' + kafka.bootstrap if kafka else 'the store log'}; SIGINT or SIGTERM stops",
                       err=True)

        async def run_one(runner: ProjectionRunner) -> int:
            try:
                return await runner.run(once=once, stop=stop)
            except BaseException:
                stop.set()  # one stopped: stop the others cleanly too
                raise

        results = await asyncio.gather(*(run_one(r) for r in runners), return_exceptions=True)
        described = await store.database.read(tracking.describe)
    summary = []
    for runner, result in zip(runners, results, strict=True):
        name = runner.projection.name
        summary.append({
            "name": name, "source": "kafka" if kafka else "log", "applied": runner.applied,
            "checkpoint": _coords_json(described.get(name, {}).get("checkpoints", {})),
            "error": str(result) if isinstance(result, BaseException) else None,
        })
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        for runner, entry in zip(runners, summary, strict=True):
            where = "Kafka" if kafka else "the store log"
            checkpoint = _coords_text(described.get(entry["name"], {}).get("checkpoints", {}))
            state = "stopped on an error" if entry["error"] else f"checkpoint {checkpoint}"
            click.echo(f"{_shown(entry['name'])}: applied {_plural(runner.applied, 'event')} from {where} ({state})")
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


@projections_group.command("skip")
@click.argument("name", type=TEXT["projection"])
@click.option("--position", required=True, type=POSITION, help="The store position of the event to skip.")
@click.option("--reason", default="skipped by an operator", show_default=True, type=TEXT["reason"],
              help="Why, for the record (at most 1000 characters).")
@click.option("--actor", default=None, type=TEXT["skipped_by"], help="Who skips it (default: the login name).")
@database_option
@projections_option
@click.option("--json", "as_json", is_flag=True, help="Print what was recorded as JSON.")
@_async_command
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
    import getpass

    from facta.projections import tracking
    from facta.projections.catalog import load_catalog

    load_catalog(projection_modules).get(name)
    if actor is None:
        try:
            actor = getpass.getuser()
        except (KeyError, OSError):
            actor = None
    async with await _open_store(database_url) as store:
        recorded = await store.database.write(tracking.add_skip, name, position, reason, actor)
    if as_json:
        click.echo(json.dumps(recorded | {"skipped_by": actor}))
    else:
        click.echo(f"projection {_quoted(name)} will skip position {position} ({_shown(recorded['event_type'])} "
                   f"event {recorded['event_id']}): {_shown(recorded['reason'])}")
    if recorded["already_applied"]:
        click.echo(f"facta: note: projection {_quoted(name)} has applied position {position} already; the skip "
                   f"keeps it out of rebuilds (`facta replay {_shown(name)} --from-position 0` to take it out now)",
                   err=True)


@projections_group.command("skipped")
@click.argument("name", required=False, type=TEXT["projection"])
@database_option
@projections_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def projections_skipped(name: str | None, database_url: str, projection_modules: str | None,
                              as_json: bool) -> None:
    """List the events recorded as skipped (of projection NAME, or of all).

    APPLIED is when the projection passed over the event; '-' means not yet.

    \b
    Examples:
      facta projections skipped
      facta projections skipped driver_earnings --json
    """
    from facta.projections import tracking
    from facta.projections.catalog import load_catalog

    if name is not None:
        load_catalog(projection_modules).get(name)
    async with await _open_store(database_url) as store:
        skips = await store.database.read(tracking.list_skips, name)
    entries = [
        {
            "projection": s["projection"], "position": s["position"], "event_id": str(s["event_id"]),
            "event_type": s["event_type"], "reason": s["reason"], "skipped_by": s["skipped_by"],
            "skipped_at": _iso(s["skipped_at"]), "applied_at": _iso(s["applied_at"]),
        }
        for s in skips
    ]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    elif not entries:
        click.echo("no skipped events" + (f" for projection {_quoted(name)}" if name else ""))
    else:
        click.echo(_table(
            ["PROJECTION", "POSITION", "EVENT TYPE", "EVENT ID", "SKIPPED AT", "BY", "APPLIED AT", "REASON"],
            [[_shown(e["projection"]), str(e["position"]), _shown(e["event_type"] or "-"), e["event_id"],
              e["skipped_at"] or "-", _shown(e["skipped_by"] or "-"), e["applied_at"] or "-", _shown(e["reason"])]
             for e in entries],
        ))


class _ProgressLine:
    """A replay's progress on stderr: rewritten in place on a terminal (at most every
    0.5 s), otherwise a line every few seconds, and always a final one."""

    def __init__(self, label: str, unit: str) -> None:
        self.label, self.unit = label, unit
        self.tty = sys.stderr.isatty()
        self.interval = 0.5 if self.tty else 5.0
        # A terminal shows progress at once; a log gets a line every few seconds, and the final one.
        self.last_shown = float("-inf") if self.tty else time.monotonic()
        self.latest: Any = None
        self.shown: Any = None
        self.width = 0

    def __call__(self, progress: Any) -> None:
        self.latest = progress
        now = time.monotonic()
        if now - self.last_shown >= self.interval:
            self.last_shown = now
            self._show(progress)

    def _show(self, progress: Any, *, final: bool = False) -> None:
        done, total = progress.done, progress.total
        share = f" ({100 * done / total:.0f}%)" if total and done <= total else ""
        eta = f", ETA {_duration(progress.eta_seconds)}" if done < total else ""
        tail = ", done" if final else eta
        text = (f"replay {_shown(self.label)}: {done}/{total} {self.unit}{share}, "
                f"{progress.rate:.0f} {self.unit}/s{tail}")
        if self.tty:
            sys.stderr.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self.shown = progress

    def finish(self, total: int | None) -> None:
        """After a replay of ``total`` planned events (None: it failed): show the final
        state, and end a terminal's line."""
        if total is not None:
            from facta.projections.replay import Progress

            last = self.latest or Progress(0, total, 0.0)
            self._show(last, final=True)
        if self.tty and self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.width = 0


def _freeze_heap() -> None:
    """Move what start-up allocated out of the garbage collector's view. Applying a batch
    makes thousands of short-lived objects, and every full collection would otherwise
    walk the whole heap of imported modules: about a fifth of a rebuild's time."""
    gc.collect()
    gc.freeze()


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
@click.option("--batch-size", default=1000, show_default=True, type=WholeNumber(1, 100_000, "batch size"),
              help="Events applied per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan or the summary as JSON.")
@database_option
@kafka_option
@topic_prefix_option
@projections_option
@click.option("--kafka-timeout", default=30.0, show_default=True, type=Seconds(0.1),
              help="With Kafka: give up after Kafka was unreachable this many seconds.")
@_async_command
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
    from facta.projections.catalog import load_catalog
    from facta.projections.replay import ReplayFrom, plan_replay, replay

    _freeze_heap()
    given = [flag for flag, value in (("--from-position", from_position), ("--from-offset", from_offset),
                                      ("--from-time", from_time)) if value is not None]
    if len(given) != 1:
        raise _usage_error(
            "give exactly one of --from-position, --from-offset, --from-time"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if partition is not None and from_offset is None:
        raise _usage_error("--partition goes with --from-offset")
    projection = load_catalog(projection_modules).get(name)
    start = ReplayFrom(position=from_position, offset=from_offset, partition=partition, time=from_time)
    kafka = _kafka_settings(kafka_bootstrap, topic_prefix, kafka_timeout)
    _quiet_logging(False)
    async with await _open_store(database_url) as store:
        if dry_run:
            plan = await plan_replay(store, projection, start, kafka=kafka)
            _print_plan(plan, as_json, as_slice)
            return
        stop = _stop_on_signals()
        line = _ProgressLine(name, "records" if kafka else "events")
        result = None
        try:
            result = await replay(store, projection, start, kafka=kafka, batch_size=batch_size, progress=line,
                                  stop=stop, slice=as_slice)
        finally:
            line.finish(None if result is None else result.plan.events)
    where = "Kafka" if result.plan.source == "kafka" else "the store log"
    if as_json:
        click.echo(json.dumps({
            "projection": name, "source": result.plan.source, "from": result.plan.start_from,
            "events": result.events, "seconds": round(result.seconds, 3),
            "events_per_second": round(result.rate, 1), "generation": result.generation,
            "checkpoint": _coords_json(result.checkpoints),
        }))
        return
    click.echo(f"replayed {_shown(name)} from {result.plan.start_from} ({where}): {_plural(result.events, 'event')} in "
               f"{_duration(result.seconds)} ({result.rate:.0f} events/s); the rebuilt tables are live, "
               f"generation {result.generation}")


def _print_plan(plan: Any, as_json: bool, as_slice: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(plan.as_dict() | {"dry_run": True}))
        return
    where = "Kafka" if plan.source == "kafka" else "the store log"
    click.echo(f"replay {_shown(plan.projection)} from {plan.start_from}, reading {where} (dry run: nothing changed)")
    if plan.source == "log":
        from facta.projections.tracking import LOG

        span = (f" (positions {plan.first_position} to {plan.last_position})"
                if plan.first_position is not None else "")
        click.echo(f"  events    {plan.events}{span}")
        click.echo(f"  range     after position {plan.start[LOG]} up to position {plan.end[LOG]}")
    else:
        click.echo(f"  records   {plan.events}")
        rows = [[f"{t}[{p}]", str(plan.start.get((t, p), 0)), str(end), str(max(end - plan.start.get((t, p), 0), 0))]
                for (t, p), end in sorted(plan.end.items())]
        for line in _table(["PARTITION", "START", "END", "RECORDS"], rows).splitlines():
            click.echo(f"  {line}")
        for (t, p), fill in sorted(plan.fill.items()):
            click.echo(f"  store     {t}[{p}]: {_plural(fill.events, 'event')} after position {fill.after} through"
                       f" {fill.through}, which Kafka deleted (offsets before {fill.retained_from})")
    click.echo(f"  estimate  {_duration(plan.estimated_seconds)} ({plan.rate_basis})")
    needs = " (refused without --slice)" if plan.is_slice and not as_slice else ""
    click.echo(f"  result    {_printable(plan.describe_result())}{needs}")


# -- audit ----------------------------------------------------------------------------------


@cli.group("audit")
def audit_group() -> None:
    """Answer questions about history: what happened to a stream, who did it, and what
    it looked like at a version or at a moment.

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
    """


def aggregates_option(fn: F) -> F:
    return click.option(
        "--aggregates", "aggregate_modules", envvar="FACTA_AGGREGATES", default=None, metavar="MODULES",
        type=MODULES,
        help="Comma-separated modules that declare your aggregate classes, besides the reference "
             "Account and Ride (env: FACTA_AGGREGATES).",
    )(fn)


def _import_aggregates(modules: str | None) -> None:
    """Import the user's aggregate modules by the rule `--projections` follows
    (:mod:`facta.user_modules`: the current folder is on the path)."""
    import facta.domain.reference  # noqa: F401 (declares the reference Account and Ride)
    from facta.eventstore.audit import AuditError
    from facta.user_modules import import_failure, import_user_module, is_module_name

    for name in (m.strip() for m in (modules or "").split(",")):
        if not name:
            continue
        if not is_module_name(name):
            raise AuditError(f"aggregate module {_quoted(name)} is not of the form package.module")
        try:
            import_user_module(name)
        except Exception as exc:  # anything the module raises while it is imported
            raise AuditError(f"cannot import aggregate module {_quoted(name)}: {import_failure(exc)}") from None


_FILTER_COLUMNS = {"event_type": "type", "stream_type": "stream type", "actor": "actor",
                   "correlation_id": "correlation id"}
_SUGGESTED = {"event_type", "stream_type", "actor"}  # few distinct values: close names are cheap to list


def _stored_values(conn: Any, column: str, values: list[str]) -> set[str]:
    """Which of ``values`` some event holds in ``column`` (one index lookup each)."""
    from sqlalchemy import select

    from facta.eventstore.schema import events

    col = events.c[column]
    return {v for v in values if conn.execute(select(col).where(col == v).limit(1)).first() is not None}


def _distinct_values(conn: Any, column: str, limit: int = 2000) -> list[str]:
    """The distinct values of an indexed ``column``, by a skip scan over its index (one
    lookup per value, not a walk of the log)."""
    from sqlalchemy import text

    assert column in _FILTER_COLUMNS
    query = text(
        f"WITH RECURSIVE t(v) AS (SELECT MIN({column}) FROM facta_events UNION ALL "
        f"SELECT (SELECT MIN({column}) FROM facta_events WHERE {column} > t.v) FROM t WHERE t.v IS NOT NULL) "
        f"SELECT v FROM t WHERE v IS NOT NULL LIMIT {int(limit)}"
    )
    return [row[0] for row in conn.execute(query)]


async def _warn_never_stored(store: Any, filters: dict[str, list[str]]) -> None:
    """A note on stderr for each filter value no stored event has (a typo, most likely),
    with the closest stored values when there are some."""
    import difflib

    for column, values in filters.items():
        if not values:
            continue
        found = await store.database.read(_stored_values, column, values)
        missing = [v for v in values if v not in found]
        if not missing:
            continue
        known = await store.database.read(_distinct_values, column) if column in _SUGGESTED else []
        for value in missing:
            close = difflib.get_close_matches(value, known, n=3, cutoff=0.8)
            hint = f"; did you mean {' or '.join(_quoted(c) for c in close)}?" if close else ""
            click.echo(f"facta: note: no stored event has {_FILTER_COLUMNS[column]} {_quoted(value)}{hint}", err=True)


def _event_json(record: Any) -> dict[str, Any]:
    from facta.eventstore.audit import utc_text

    return {
        "position": record.position, "event_id": str(record.event_id), "stream_id": record.stream_id,
        "stream_type": record.stream_type, "version": record.version, "event_type": record.event_type,
        "schema_version": record.schema_version, "recorded_at": utc_text(record.recorded_at),
        "occurred_at": utc_text(record.occurred_at), "actor": record.actor,
        "correlation_id": record.correlation_id, "causation_id": record.causation_id,
        "payload": json.loads(record.payload),
    }


def _compact(value: Any) -> str:
    """A value in a table cell: text as it is, None as '-', the rest as compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return _shown(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


_EVENT_COLUMNS = ["POSITION", "RECORDED AT (UTC)", "STREAM", "VERSION", "TYPE", "ACTOR", "CORRELATION", "CAUSATION",
                  "PAYLOAD"]


def _event_row(e: dict[str, Any]) -> list[str]:
    return [str(e["position"]), e["recorded_at"], _shown(e["stream_id"]), str(e["version"]), _shown(e["event_type"]),
            _compact(e["actor"]), _compact(e["correlation_id"]), _compact(e["causation_id"]), _compact(e["payload"])]


@audit_group.command("history")
@click.argument("stream_id", type=TEXT["stream_id"])
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def audit_history(stream_id: str, database_url: str, as_json: bool) -> None:
    """Every event of stream STREAM_ID: version, type, time, actor, correlation and
    causation ids, and the payload.

    \b
    Examples:
      facta audit history ride-00042
      facta audit history acct-rider-001 --json
    """
    from facta.eventstore.audit import history

    async with await _open_store(database_url) as store:
        records = [_event_json(r) for r in await history(store, stream_id)]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    click.echo(f"{_shown(records[0]['stream_type'])} {_shown(stream_id)}: {_plural(len(records), 'event')}")
    click.echo(_table(
        ["VERSION", "POSITION", "RECORDED AT (UTC)", "TYPE", "ACTOR", "CORRELATION", "CAUSATION", "PAYLOAD"],
        [[str(e["version"]), str(e["position"]), e["recorded_at"], _shown(e["event_type"]), _compact(e["actor"]),
          _compact(e["correlation_id"]), _compact(e["causation_id"]), _compact(e["payload"])] for e in records],
    ))


@audit_group.command("state")
@click.argument("stream_id", type=TEXT["stream_id"])
@click.option("--at-version", type=VERSION, default=None, metavar="N", help="The state after event N.")
@click.option("--as-of", type=UTC_TIME, default=None, metavar="TIME",
              help="The state after the last event recorded at or before TIME (ISO 8601 with a time zone).")
@database_option
@aggregates_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def audit_state(stream_id: str, at_version: int | None, as_of: datetime | None, database_url: str,
                      aggregate_modules: str | None, as_json: bool) -> None:
    """The state of STREAM_ID's aggregate as it was at a version or a time (now when
    neither is given). Loads start from the newest snapshot at or below that version.

    \b
    Examples:
      facta audit state ride-00042 --at-version 3
      facta audit state acct-rider-001 --as-of 2026-11-22T12:00:00+01:00 --json
    """
    from facta.eventstore.audit import state_at

    if at_version is not None and as_of is not None:
        raise _usage_error("give --at-version or --as-of, not both")
    _import_aggregates(aggregate_modules)
    async with await _open_store(database_url) as store:
        found = await state_at(store, stream_id, at_version=at_version, as_of=as_of)
    data = found.as_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{_shown(found.stream_type)} {_shown(stream_id)} at version {found.version} (recorded {data['recorded_at']})")
    if found.left_out:
        click.echo(f"without version{'s' if len(found.left_out) > 1 else ''} {', '.join(map(str, found.left_out))},"
                   " recorded after that time: a state no reader of the stream saw")
    click.echo(_table(["FIELD", "VALUE"], [[_shown(name), _compact(value)] for name, value in data["state"].items()]))


@audit_group.command("diff")
@click.argument("stream_id", type=TEXT["stream_id"])
@click.option("--from-version", type=VERSION_OR_ZERO, required=True, metavar="A",
              help="The state after event A (0: before the first event).")
@click.option("--to-version", type=VERSION, required=True, metavar="B", help="The state after event B.")
@database_option
@aggregates_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def audit_diff(stream_id: str, from_version: int, to_version: int, database_url: str,
                     aggregate_modules: str | None, as_json: bool) -> None:
    """Which fields of STREAM_ID's state changed between versions A and B (old -> new),
    and the events (version and type) that changed each.

    \b
    Examples:
      facta audit diff ride-00042 --from-version 1 --to-version 3
      facta audit diff acct-rider-001 --from-version 0 --to-version 3 --json
    """
    from facta.eventstore.audit import diff

    if to_version <= from_version:
        raise _usage_error(f"--to-version ({to_version}) must be greater than --from-version ({from_version})")
    _import_aggregates(aggregate_modules)
    async with await _open_store(database_url) as store:
        result = await diff(store, stream_id, from_version, to_version)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    click.echo(f"{_shown(result.stream_type)} {_shown(stream_id)}: version {from_version} -> {to_version}, "
               f"{_plural(len(result.events), 'event')}, {_plural(len(result.changes), 'field')} changed")
    if result.changes:
        click.echo(_table(
            ["FIELD", "OLD", "NEW", "CHANGED BY"],
            [[_shown(c.field), _compact(c.old), _compact(c.new), ", ".join(f"{v} {_shown(t)}" for v, t in c.changed_by)]
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
@_async_command
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
    import csv

    from facta.eventstore.audit import events

    if as_json and as_csv:
        raise _usage_error("give --json or --csv, not both")
    if since is not None and until is not None and since > until:
        raise _usage_error(f"--since ({_iso(since)}) is after --until ({_iso(until)})")
    async with await _open_store(database_url) as store:
        page = await events(store, types=types or None, stream_types=stream_types or None, since=since,
                            until=until, actor=actor, correlation_id=correlation_id, newest_first=newest_first,
                            limit=limit, after_position=after_position, before_position=before_position)
        await _warn_never_stored(store, {"event_type": list(types), "stream_type": list(stream_types),
                                         "actor": [actor] if actor is not None else [],
                                         "correlation_id": [correlation_id] if correlation_id is not None else []})
    records = [_event_json(r) for r in page.events]
    if as_json:
        click.echo(json.dumps({"events": records, "cursor": page.cursor}, indent=2))
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        columns = ["position", "recorded_at", "occurred_at", "stream_id", "stream_type", "version", "event_type",
                   "schema_version", "event_id", "actor", "correlation_id", "causation_id", "payload"]
        writer.writerow(columns)
        for e in records:
            writer.writerow([json.dumps(e[c], separators=(",", ":"), sort_keys=True) if c == "payload"
                             else ("" if e[c] is None else e[c]) for c in columns])
    elif not records:
        click.echo("no events match")
    else:
        click.echo(_table(_EVENT_COLUMNS, [_event_row(e) for e in records]))
    if page.cursor is not None:
        option = "--before-position" if newest_first else "--after-position"
        click.echo(f"more events: add {option} {page.cursor}", err=True)


@audit_group.command("trace")
@click.argument("correlation_id", type=TEXT["correlation_id"])
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_async_command
async def audit_trace(correlation_id: str, database_url: str, as_json: bool) -> None:
    """Every event of one business transaction (CORRELATION_ID) across streams, in the
    order they were stored: a ride and the account movements its billing caused.

    \b
    Examples:
      facta audit trace ride-00042
      facta audit trace ride-00042 --json
    """
    from facta.eventstore.audit import AuditError, trace

    async with await _open_store(database_url) as store:
        records = [_event_json(r) for r in await trace(store, correlation_id)]
    if not records:
        raise AuditError(f"no event has correlation id {_quoted(correlation_id)}")
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    streams = sorted({e["stream_id"] for e in records})
    click.echo(f"correlation {_shown(correlation_id)}: {_plural(len(records), 'event')} in {_plural(len(streams), 'stream')}")
    click.echo(_table(_EVENT_COLUMNS, [_event_row(e) for e in records]))


@cli.group()
def dev() -> None:
    """Tools for development: a local Kafka broker or cluster."""


def _default_broker_kind() -> str:
    from .devbroker import default_kind

    return default_kind()


@dev.command("broker")
@click.option("--kind", type=click.Choice(["apache", "noida", "tansu"]), default=None,
              help="apache: Apache Kafka itself, fetched from Maven Central once (needs Java 17+ and Maven; "
                   "the default when java is on PATH). noida (keeps data on disk) and tansu (memory only) are "
                   "stand-ins from PyPI for quick runs.")
@click.option("--nodes", type=WholeNumber(1, 9, "node count"), default=1, show_default=True,
              help="apache only: KRaft nodes, each broker and controller, on consecutive ports from --port; "
                   "3 gives replication factor 3 and min.insync.replicas 2.")
@click.option("--port", type=WholeNumber(0, 65535, "TCP port"), default=9092, show_default=True,
              help="Port on 127.0.0.1 (the first node's with --nodes); 0 picks a free one.")
@click.option("--data-dir", type=Folder(), default=".facta-broker", show_default=True,
              help="Where the broker keeps its data and its log (a cluster: one folder per node).")
@click.option("--json", "as_json", is_flag=True, help="Print where it listens as one JSON line once it answers.")
def dev_broker(kind: str | None, nodes: int, port: int, data_dir: str, as_json: bool) -> None:
    """Run a Kafka broker (or a cluster) in the foreground until Ctrl-C or SIGTERM.

    The first apache run fetches Apache Kafka with Maven into the user's cache
    (~/.cache/facta, or FACTA_CACHE_DIR) and later runs start offline from there. A data
    folder started before keeps its topics and records.

    \b
    Examples:
      facta dev broker
      facta dev broker --nodes 3 --port 19092
      facta dev broker --kind noida --port 0
    """
    import signal
    import threading
    import time

    from .devbroker import BrokerCluster, BrokerError, port_is_free, start_broker, start_cluster

    chosen = kind or _default_broker_kind()
    if nodes > 1 and chosen != "apache":
        raise _usage_error(f"--nodes {nodes} needs --kind apache: the {chosen} stand-in runs a single node")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def progress(line: str) -> None:
        click.echo(_printable(line), err=True)

    started = time.monotonic()
    try:
        if port and not port_is_free(port):
            raise BrokerError(f"port {port} on 127.0.0.1 is in use: pick another with --port")
        target: Any
        if chosen == "apache":
            target = start_cluster(nodes, data_dir, port or None, progress=progress)
        else:
            target = start_broker(chosen, data_dir=data_dir, port=port or None)  # type: ignore[arg-type]
    except FactaError as exc:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        click.echo(f"facta: error: {_printable(str(exc))}", err=True)
        sys.exit(1)
    startup_s = time.monotonic() - started
    members = target.nodes if isinstance(target, BrokerCluster) else [target]
    try:
        what = (f"Apache Kafka {target.distribution.version}" if isinstance(target, BrokerCluster) and
                target.distribution is not None else chosen)
        shape = f"{nodes}-node cluster" if nodes > 1 else "broker"
        keeps = "keeps data in" if target.keeps_data else "keeps data in memory only; logs to"
        pids = ", ".join(str(m.pid) for m in members)
        if as_json:
            click.echo(json.dumps({
                "kind": chosen, "version": what.removeprefix("Apache Kafka ") if chosen == "apache" else None,
                "nodes": [{"node_id": m.node_id, "bootstrap": m.bootstrap, "pid": m.pid, "data_dir": str(m.data_dir),
                           "log": str(m.log_path)} for m in members],
                "bootstrap": target.bootstrap, "startup_s": round(startup_s, 2), "data_dir": data_dir,
            }), nl=True)
        else:
            click.echo(f"{what} {shape} listening on {target.bootstrap} (pid {pids}; {keeps} {_shown(data_dir)}); "
                       f"started in {startup_s:.1f} s")
            click.echo(f"export FACTA_KAFKA_BOOTSTRAP={target.bootstrap}")
        sys.stdout.flush()
        click.echo("press Ctrl-C to stop", err=True)
        while not stop.wait(0.2):
            dead = [m for m in members if not m.running]
            if dead:
                click.echo(_printable(f"facta: error: the {dead[0].description} broker exited with code "
                                      f"{dead[0].returncode} (log: {dead[0].log_path})"), err=True)
                target.stop()
                sys.exit(1)
    finally:
        codes = target.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if isinstance(codes, dict) and len(codes) > 1:
        code_text = ", ".join(f"node {node}: {code}" for node, code in codes.items())
    else:
        code_text = str(next(iter(codes.values())) if isinstance(codes, dict) else codes)
    click.echo(f"{what} {shape} stopped (exit code {code_text})", err=True)


def main() -> None:
    cli(prog_name="facta")


if __name__ == "__main__":
    main()
