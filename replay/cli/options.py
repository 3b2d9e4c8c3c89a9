"""The options and option types the `facta` commands share.

Every number, time, name and URL an option or argument takes is checked by one of the
types here before any I/O: a value out of range, non-finite or malformed is a usage error
(exit 2) with one line naming the option, the value and the limit. The shared options
(``--database-url``, ``--kafka-bootstrap``, ``--projections``, ...) read their
``FACTA_*`` environment variables here too.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Table

from facta import migrations
from facta.domain import Aggregate
from facta.errors import InvalidSetting, InvalidValue
from facta.eventstore import EventStore, merkle, schema
from facta.eventstore.audit import AuditError
from facta.eventstore.database import DEFAULT_DATABASE_URL, resolve_url
from facta.eventstore.errors import DatabaseUnavailable, DatabaseURLError
from facta.eventstore.kafka_support import bootstrap_problem
from facta.eventstore.relay import RelayError, check_topic_prefix
from facta.eventstore.validation import TEXT_LIMITS, offset_problem
from facta.projections import KafkaSettings
from facta.settings import Settings, settings
from facta.user_modules import import_failure, import_user_module, is_module_name

from .app import usage_error
from .output import a as _a
from .output import clip as _clip
from .output import quoted

__all__ = [
    "MAX_PARTITION", "MAX_POSITION", "MAX_SECONDS", "MAX_VERSION", "MODULES", "OFFSET", "PARTITION", "POSITION",
    "POSITION_OR_ZERO", "TEXT", "UTC_TIME", "VERSION", "VERSION_OR_ZERO", "DatabaseURL", "Folder", "KafkaBootstrap",
    "Revision", "Seconds", "Text", "UtcTime", "WholeNumber", "aggregates_option", "database_option",
    "import_aggregates", "kafka_option", "kafka_settings", "metrics_options", "open_store", "projections_option",
    "require_database", "serve_metrics", "topic_prefix_option",
]

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
    0001-01-01T00:00:00Z or after 9999-12-31T23:59:59.999999Z once converted), with
    more than 6 fractional digits (a datetime holds microseconds), or with a UTC offset
    of seconds (``+05:30:30``, which Python reads and ISO 8601 has not), is refused."""
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
            if offset_problem(parsed) is not None:  # Python reads +05:30:30; ISO 8601 has no such offset
                self.fail(f"{_clip(text)!r} has a UTC offset with seconds, which ISO 8601 does not have: give hours"
                          " and minutes (+05:30)", param, ctx)
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


class MetricsHost(Text):
    """``--metrics-host``: a host name or address, an IPv6 one bare (``::1``) or in the
    brackets of URLs and of ``--kafka-bootstrap`` (``[::1]``, RFC 3986's IP-literal),
    given to the HTTP server bare."""

    def __init__(self) -> None:
        super().__init__("metrics host", 255)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        if text.startswith("[") and text.endswith("]") and ":" in text:
            text = text[1:-1]
        return text


class DatabaseURL(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """A database URL facta can use: not empty, a supported dialect and driver, ports 1 to
    65535, only the query options :func:`~facta.eventstore.database.resolve_url` accepts,
    each in range. Checked without connecting; whether the server answers is found out
    when the store is opened (exit 1)."""
    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
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


class FilePath(click.Path):
    """A file path (it need not exist yet) with no NUL character and valid UTF-8."""
    def __init__(self) -> None:
        super().__init__(dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(Text("file path", 4096).convert(value, param, ctx), param, ctx)


class Revision(click.ParamType):  # type: ignore[type-arg,unused-ignore]  # generic in newer click
    """One of facta's schema revisions: ``alias`` (``head`` for an upgrade, ``base`` for a
    downgrade), or a revision id alembic knows."""
    name = "revision"

    def __init__(self, alias: str = "head") -> None:
        self.alias = alias

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = Text("revision", 100).convert(value, param, ctx)
        if text == self.alias:
            return text
        known = migrations.revisions()
        if text not in known:
            self.fail(f"{text!r} is not a facta schema revision: give {self.alias} or one of {', '.join(sorted(known))}",
                      param, ctx)
        return text


def _column_length(table: Table, column: str) -> int | None:
    length = getattr(table.c[column].type, "length", None)
    return int(length) if length is not None else None


def _store_texts() -> dict[str, Text]:
    """The texts options and arguments take, each with the store's limit for it (the
    column lengths, and :data:`~facta.eventstore.validation.TEXT_LIMITS`)."""
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
        "prefix": Text("prefix", 249, empty=True),  # Kafka's longest topic name; empty: see topic_prefix_callback
        "group_prefix": Text("prefix", 249, empty=True),  # no prefix: groups named after the projections
        "event_id": Text("event id", 36),  # a UUID's text; the command parses it
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


def metrics_options(fn: F) -> F:
    """``--metrics-port`` and ``--metrics-host`` (issue 15): serve facta's metrics in
    Prometheus text format while the command runs (:func:`serve_metrics`)."""
    fn = click.option("--metrics-host", default="127.0.0.1", show_default=True, type=MetricsHost(),
                      help="With --metrics-port: the address to serve on (0.0.0.0: every interface; "
                           "IPv6 as ::1 or [::1]).")(fn)
    return click.option("--metrics-port", default=None, type=WholeNumber(1, 65_535, "metrics port"),
                        help="Serve metrics in Prometheus text format at http://HOST:PORT/metrics "
                             "(needs pip install 'facta[telemetry]').")(fn)


def serve_metrics(host: str, port: int | None) -> None:
    """With a ``--metrics-port``: serve the metrics there (:func:`facta.metrics.serve_prometheus`,
    which imports OpenTelemetry's SDK only then). Raises its one-line
    :class:`~facta.errors.FactaError` for a missing extra or a port it cannot serve."""
    if port is not None:
        from facta.metrics import serve_prometheus

        serve_prometheus(host, port)


def require_database(database_url: str) -> None:
    """Refuse a SQLite file that does not exist (commands other than `db upgrade` and
    `demo` never create one): one line naming the file and how to create it."""
    url = resolve_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database.startswith("file:"):
        return
    if not Path(url.database).exists():
        shown = database_url if database_url != DEFAULT_DATABASE_URL else url.database
        raise DatabaseUnavailable(
            f"no database file {url.database!r}: create it with `facta db upgrade"
            + ("" if database_url == DEFAULT_DATABASE_URL else f" --database-url {shown}") + "`"
        )


async def open_store(database_url: str) -> EventStore:
    """The event store at ``database_url``, which must exist and be at the newest schema."""
    require_database(database_url)
    return await EventStore.open(database_url)


def projections_option(fn: F) -> F:
    return click.option(
        "--projections", "projection_modules", envvar="FACTA_PROJECTIONS", default=None, metavar="MODULES",
        type=MODULES,
        help="Your projections: comma-separated package.module or package.module:ClassName, besides the "
             "reference ones (env: FACTA_PROJECTIONS).",
    )(fn)


def from_settings(field: str, per: float = 1) -> dict[str, Any]:
    """``default=`` and ``show_default=`` for an option whose default is a field of
    :func:`facta.settings.settings` (so ``FACTA_<FIELD>`` sets it), divided by ``per``
    (1000 for a ``_ms`` field shown in seconds). Read when the command runs."""
    def default() -> Any:
        try:
            value = getattr(settings(), field)
        except InvalidSetting as exc:  # a bad FACTA_* value is a usage error, like a bad option
            raise click.UsageError(str(exc)) from None
        return value / per if per != 1 else value

    fallback = Settings.model_fields[field].default
    shown = fallback / per if per != 1 else fallback
    return {"default": default, "show_default": f"{shown}, or FACTA_{field.upper()}{' / 1000' if per == 1000 else ''}"}


def topic_prefix_option(fn: F) -> F:
    return click.option("--topic-prefix", **from_settings("topic_prefix"), type=TEXT["prefix"], callback=topic_prefix_callback,
                        help="With Kafka: the relay's topics are <prefix>.<stream type>.")(fn)


def kafka_settings(bootstrap: str | None, topic_prefix: str, give_up_after: float | None = None,
                   **group: Any) -> KafkaSettings | None:
    """KafkaSettings when Kafka is configured, else None (projections use the store log).
    ``group``: a runner's consumer group options (group_prefix, session_timeout_ms)."""
    if not bootstrap:
        return None
    if "session_timeout_ms" in group:  # heartbeats well inside the session (Kafka's rule of thumb: a third)
        group["heartbeat_interval_ms"] = min(settings().kafka_heartbeat_interval_ms, group["session_timeout_ms"] // 3)
    if give_up_after is None:
        give_up_after = settings().kafka_timeout_s
    return KafkaSettings(bootstrap=bootstrap, topic_prefix=topic_prefix, give_up_after=give_up_after, **group)


def topic_prefix_callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A topic prefix topics ``<prefix>.<stream type>`` can be formed from (Kafka's rule)."""
    try:
        return check_topic_prefix(value)
    except RelayError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid topic prefix "), ctx, param) from None


def aggregates_option(fn: F) -> F:
    return click.option(
        "--aggregates", "aggregate_modules", envvar="FACTA_AGGREGATES", default=None, metavar="MODULES",
        type=MODULES,
        help="Comma-separated modules that declare your aggregate classes, besides the reference "
             "Account and Ride (env: FACTA_AGGREGATES).",
    )(fn)


def import_aggregates(modules: str | None) -> None:
    """Import the user's aggregate modules by the rule `--projections` follows
    (:mod:`facta.user_modules`: the current folder is on the path), after the reference
    domain's (``Account``, ``Ride``). Raises :class:`AuditError` (one line) for a module
    that cannot be imported or that holds no aggregate class declared with
    ``stream_type=...`` (its own or imported), as `--projections` refuses a module
    without projections."""
    import facta.domain.reference  # noqa: F401 (declares the reference Account and Ride)

    for name in (m.strip() for m in (modules or "").split(",")):
        if not name:
            continue
        if not is_module_name(name):
            raise AuditError(f"aggregate module {quoted(name)} is not of the form package.module")
        try:
            module = import_user_module(name)
        except Exception as exc:  # anything the module raises while it is imported
            raise AuditError(f"cannot import aggregate module {quoted(name)}: {import_failure(exc)}") from None
        if not any(isinstance(value, type) and issubclass(value, Aggregate) and "stream_type" in vars(value)
                   for value in vars(module).values()):
            raise AuditError(f"aggregate module {quoted(name)} declares no aggregate (no Aggregate subclass"
                             " declared with stream_type=...)")


# -- signing keys and documents (facta audit seal, verify, verify-proof) ----------------------

def key_file_option(fn: F) -> F:
    """``--key-file PEM_FILE``, default ``FACTA_SIGNING_KEY_FILE`` (settings)."""
    return click.option("--key-file", **from_settings("signing_key_file"), type=FilePath(), metavar="PEM_FILE",
                        help="The Ed25519 private key (PEM) that signs tree heads (env: FACTA_SIGNING_KEY_FILE).")(fn)


def private_key(key_file: str | None) -> Ed25519PrivateKey:
    """The signing key in ``key_file``; a usage error (exit 2, one line) when none is given or it cannot be used."""
    if not key_file:
        raise usage_error("no signing key: give --key-file PEM_FILE or set FACTA_SIGNING_KEY_FILE"
                          " (facta audit keygen FILE writes one)")
    try:
        return merkle.load_private_key(key_file)
    except InvalidValue as exc:
        raise usage_error(str(exc)) from None


def public_key(key_file: str | None, public_key_file: str | None) -> Ed25519PublicKey:
    """The key that checks signatures: ``public_key_file``, else the signing key's public half; a usage error otherwise."""
    if public_key_file:
        try:
            return merkle.load_public_key(public_key_file)
        except InvalidValue as exc:
            raise usage_error(str(exc)) from None
    if not key_file:
        raise usage_error("no key to check signatures with: give --public-key PEM_FILE or --key-file PEM_FILE"
                          " (or set FACTA_SIGNING_KEY_FILE)")
    return private_key(key_file).public_key()


def json_file(path: str, what: str) -> object:
    """The JSON document in ``path``; a usage error naming ``what`` and the file when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise usage_error(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise usage_error(f"{what} {path!r} is not JSON: {str(exc).splitlines()[0]}") from None
