"""What facta can store and query, checked before any I/O, the same way on every dialect.

One table of limits (:data:`TEXT_LIMITS`, taken from the column lengths in
``schema.py``; :data:`INT32`, :data:`INT64`, :data:`MAX_DEPTH`, :data:`MAX_INT_DIGITS`)
and the checks that apply it. Every refusal is an :class:`InvalidValue` (a
:class:`~facta.eventstore.StoreError` and a :class:`ValueError`) whose message is one
line naming the field, the value and the limit.

- **Texts** (stream ids and types, event type names, actor, correlation and causation
  ids, snapshot tags, and the same names given to a query): a ``str`` within the column's
  length, without the NUL character (PostgreSQL cannot store it in text or jsonb) and
  without lone surrogates (not Unicode text; no driver can encode them).
- **Numbers**: versions within int32 and positions within int64 (the columns' ranges),
  limits and page sizes from 1; ``bool`` is not a number.
- **Payloads and snapshot states** are encoded with pydantic and must read back exactly:
  no NaN or infinity (pydantic writes them as ``null``), no ``-0.0`` (PostgreSQL's jsonb
  stores it as ``0.0``), no NUL or lone surrogate in any string or key, integers of at
  most :data:`MAX_INT_DIGITS` digits, nesting at most :data:`MAX_DEPTH` deep. Floats that
  pydantic writes with an exponent (``1e+20``) are written out in positional form with a
  fraction (``100000000000000000000.0``), because jsonb turns ``1e+20`` into the integer
  ``100000000000000000000``: every float then reads back as that float on both dialects.
  Finally the encoded text is decoded with the event's (or state's) own class and must
  equal the original, so a value that would come back different (a tuple or a datetime
  in an untyped field, an integer dict key, a UTC offset with seconds) is refused, naming
  the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from facta.domain import DomainEvent, PendingEvent
from facta.errors import InvalidValue

from .records import Snapshot, StreamAppend
from .schema import events, projection_skips, projections, relay_checkpoints, snapshots, tracking

__all__ = [
    "INT32",
    "INT64",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "TEXT_LIMITS",
    "check_append",
    "check_limit",
    "check_position",
    "check_snapshot",
    "check_text",
    "check_texts",
    "check_version",
    "encode_event",
    "encode_state",
]


def _length(column: Any) -> int:
    return int(column.type.length)


#: The longest text, in characters, that facta stores or queries in each field: the
#: column lengths of ``schema.py`` (PostgreSQL enforces them; SQLite would not).
TEXT_LIMITS: dict[str, int] = {
    "stream id": _length(events.c.stream_id),
    "stream type": _length(events.c.stream_type),
    "event type": _length(events.c.event_type),
    "actor": _length(events.c.actor),
    "correlation id": _length(events.c.correlation_id),
    "causation id": _length(events.c.causation_id),
    "state schema": _length(snapshots.c.state_schema),
    "relay name": _length(relay_checkpoints.c.name),
    "tracking name": _length(tracking.c.name),
    "projection name": _length(projections.c.name),
    "skipped by": _length(projection_skips.c.skipped_by),
    # A skip's reason (projections and relay) is a TEXT column; this limit is facta's own:
    # a sentence or a short paragraph, one line in `facta projections skipped`.
    "skip reason": 1000,
}
#: Versions (stream versions, schema versions) are INTEGER columns.
INT32 = (-(2**31), 2**31 - 1)
#: Positions are BIGINT columns; limits are bound as BIGINT.
INT64 = (-(2**63), 2**63 - 1)
#: The deepest nesting of lists and objects a payload or state may have, counting its own
#: object (pydantic reads JSON up to 200 levels deep; this leaves room for upcasters).
MAX_DEPTH = 100
#: The most digits an integer in a payload or state may have (pydantic reads integers of
#: up to 4,299 digits, Python's json module up to 4,300).
MAX_INT_DIGITS = 4000

_SHOWN = 40  # characters of a long value shown in a message


def _show(value: str) -> str:
    return repr(value if len(value) <= _SHOWN else value[:_SHOWN] + "…")


def _text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains the NUL character (\\x00), which PostgreSQL cannot store"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"contains a lone surrogate ({value[exc.start]!r}), which is not Unicode text"
    return None


# -- texts and numbers ------------------------------------------------------------------------


def check_text(field: str, value: object, *, optional: bool = False, empty: bool = False) -> None:
    """Raise :class:`InvalidValue` unless ``value`` is a ``str`` facta can store in
    ``field`` (a key of :data:`TEXT_LIMITS`): within the limit, no NUL, no lone
    surrogate, and non-empty unless ``empty``. ``None`` passes when ``optional``."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidValue(f"{field} must be a string, got {type(value).__name__} {value!r}")
    if not value and not empty:
        raise InvalidValue(f"{field} must not be empty")
    limit = TEXT_LIMITS[field]
    if len(value) > limit:
        raise InvalidValue(f"{field} {_show(value)} is {len(value)} characters long; facta stores at most {limit}")
    problem = _text_problem(value)
    if problem is not None:
        raise InvalidValue(f"{field} {_show(value)} {problem}")


def check_texts(field: str, values: Iterable[object] | None) -> None:
    """Check every name of a query's list (``None``: no filter). ``field`` names the
    parameter; its items are checked as ``field`` less its trailing ``s``."""
    if values is None:
        return
    if isinstance(values, (str, bytes)):
        raise InvalidValue(f"{field} must be a list of names, not a single {type(values).__name__} {values!r}")
    if not isinstance(values, Collection):  # an iterator would be used up by this check
        raise InvalidValue(f"{field} must be a list of names, got {type(values).__name__}")
    item = {"event_types": "event type", "types": "event type", "stream_types": "stream type"}[field]
    for value in values:
        check_text(item, value)


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidValue(f"{field} must be an integer, got {type(value).__name__} {value!r}")
    if not low <= value <= high:
        raise InvalidValue(f"{field} {value} is out of range: facta takes {low} to {high}")


def check_version(field: str, value: object, *, optional: bool = False, low: int = INT32[0]) -> None:
    """A stream or schema version: an int within the INTEGER column's range (and >= ``low``)."""
    if value is None and optional:
        return
    _check_int(field, value, low, INT32[1])


def check_position(field: str, value: object, *, optional: bool = False) -> None:
    """A log position: an int within the BIGINT column's range."""
    if value is None and optional:
        return
    _check_int(field, value, *INT64)


def check_limit(field: str, value: object, *, optional: bool = False) -> None:
    """A row count (limit, page size): an int from 1 to the BIGINT maximum."""
    if value is None and optional:
        return
    _check_int(field, value, 1, INT64[1])


def check_event_id(value: object) -> None:
    if not isinstance(value, uuid.UUID):
        raise InvalidValue(f"event id must be a uuid.UUID, got {type(value).__name__} {value!r}")


# -- appends ----------------------------------------------------------------------------------

_checked_classes: set[type[DomainEvent]] = set()
_UNCHECKED = object()


def _check_event_class(cls: type[DomainEvent]) -> None:
    if cls in _checked_classes:
        return
    name = vars(cls).get("event_type")
    if name is not None:  # an unregistered class is refused by the store itself
        check_text("event type", name)
        check_version(f"event {name!r}: schema version", cls.schema_version, low=1)
        _checked_classes.add(cls)


def _check_time(field: str, value: object) -> None:
    if not isinstance(value, datetime):
        raise InvalidValue(f"{field} must be a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidValue(f"{field} {value.isoformat()} is naive: give an aware time")
    problem = offset_problem(value)
    if problem is not None:
        raise InvalidValue(f"{field} {value.isoformat()} {problem}")
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise InvalidValue(f"{field} {value.isoformat()} is outside the years 1 to 9999 in UTC") from None


def offset_problem(value: datetime | time) -> str | None:
    """Why an aware time's UTC offset cannot be stored, or None: facta keeps offsets of
    whole minutes (ISO 8601, and so JSON text, writes no finer one). The same rule holds
    for occurred-at times (stored as the UTC instant) and payload or state values (stored
    with their offset)."""
    offset = value.utcoffset()
    if offset is None or offset % timedelta(minutes=1) == timedelta(0):
        return None
    return (f"has the UTC offset {_offset_text(offset)}, which is not a whole number of minutes;"
            " facta stores offsets of whole minutes only")


def _offset_text(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    offset = abs(offset)
    minutes, rest = divmod(offset, timedelta(minutes=1))
    text = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}:{rest.seconds:02d}"
    return text + (f".{rest.microseconds:06d}" if rest.microseconds else "")


def check_append(
    batch: Sequence[tuple[StreamAppend, Sequence[PendingEvent]]],
    actor: object,
    correlation_id: object,
    causation_id: object,
    snapshot_list: Sequence[Snapshot],
) -> list[Snapshot]:
    """Check everything of an append but its payloads (see :func:`encode_event`): the
    streams, expected versions, event ids, occurred-at times, event classes, metadata and
    snapshots. Returns the snapshots as they will be stored (see :func:`check_snapshot`)."""
    check_text("actor", actor, optional=True, empty=True)
    check_text("correlation id", correlation_id, optional=True, empty=True)
    check_text("causation id", causation_id, optional=True, empty=True)
    # The events of one call share their occurred-at time (the moment the store took
    # them), so a time object is checked once: the same object passes the same checks.
    checked_time: object = _UNCHECKED
    for append, pending in batch:
        check_text("stream id", append.stream_id)
        check_text("stream type", append.stream_type)
        where = f"stream {append.stream_id!r}"
        if append.expected_version is not None:
            check_version(f"{where}: expected version", append.expected_version, low=0)
            if append.expected_version + len(pending) > INT32[1]:
                raise InvalidValue(
                    f"{where}: expected version {append.expected_version} and {len(pending)} more would pass"
                    f" the largest version facta stores, {INT32[1]}"
                )
        for p in pending:
            if isinstance(p.event, DomainEvent):
                _check_event_class(type(p.event))
            check_event_id(p.event_id)
            if p.occurred_at is not checked_time:
                _check_time(f"{where}: occurred at", p.occurred_at)
                checked_time = p.occurred_at
    return [check_snapshot(s) for s in snapshot_list]


def check_snapshot(snapshot: Snapshot) -> Snapshot:
    """Check a snapshot's names, version and state JSON text; return it as it will be
    stored (floats written with an exponent rewritten, see the module docstring)."""
    if not isinstance(snapshot, Snapshot):
        raise InvalidValue(f"snapshot must be a Snapshot, got {_got(snapshot)}")
    check_text("stream id", snapshot.stream_id)
    check_text("stream type", snapshot.stream_type)
    check_text("state schema", snapshot.state_schema)
    label = f"snapshot of {snapshot.stream_id!r} v{snapshot.version}"
    check_version(f"{label}: version", snapshot.version, low=1)
    if not isinstance(snapshot.state, str):
        raise InvalidValue(f"{label}: state must be JSON text, got {type(snapshot.state).__name__}")
    _check_json_text(snapshot.state, label)
    state = _positional_floats(snapshot.state)
    return snapshot if state is snapshot.state else dataclasses.replace(snapshot, state=state)


# -- payloads and states ----------------------------------------------------------------------


def encode_event(event: DomainEvent) -> str:
    """The event's payload as the JSON text facta stores, or :class:`InvalidValue`
    naming the event type and the field that cannot be stored exactly."""
    return _encode(event, type(event).event_type)


def encode_state(state: BaseModel, label: str) -> str:
    """An aggregate state as the JSON text of a snapshot (the same rules as payloads);
    ``label`` names the aggregate in errors."""
    return _encode(state, label)


# Serialised text that needs a closer look: NaN/infinity as pydantic's "constants",
# -0.0, an escaped NUL, a number with an exponent. (Nesting depth and long integers are
# found by size: 100 levels take 200 characters.)
_SUSPECT = re.compile(r"-0\.0|\\u0000|NaN|Infinity|[0-9][eE][-+0-9]")
# A JSON string (skipped as it is) or a number written with an exponent.
_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+)')


def _encode(model: BaseModel, label: str) -> str:
    try:
        text = model.model_dump_json()
    except (PydanticSerializationError, ValueError, TypeError, RecursionError) as exc:
        _check_values(model, label)
        raise InvalidValue(f"{label}: cannot be encoded as JSON: {_first_line(exc)}") from None
    if _SUSPECT.search(text) is not None or (
        len(text) > 2 * MAX_DEPTH
        and (len(text) > MAX_INT_DIGITS or text.count("[") + text.count("{") > MAX_DEPTH)
    ):
        _check_values(model, label)
        _check_json_text(text, label)
        text = _positional_floats(text)
    cls = type(model)
    try:
        back = cls.model_validate_json(text)
    except ValidationError as exc:
        _check_values(model, label)
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "payload"
        raise InvalidValue(f"{label}: does not read back: {loc}: {first['msg']}") from None
    if back.__dict__ != model.__dict__ or back.__pydantic_extra__ != model.__pydantic_extra__:
        _check_values(model, label)
        raise InvalidValue(f"{label}: {_difference(model, back)}; facta stores only what reads back as written")
    return text


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _positional_floats(text: str) -> str:
    """``text`` with every number written with an exponent rewritten positionally with a
    fraction (``1e+20`` -> ``100000000000000000000.0``): the same value, which jsonb keeps
    a float."""
    changed = False

    def positional(match: re.Match[str]) -> str:
        nonlocal changed
        number = match.group(1)
        if number is None:
            return match.group(0)
        changed = True
        digits = format(Decimal(number), "f")
        return digits if "." in digits else digits + ".0"

    out = _EXPONENT.sub(positional, text)
    return out if changed else text


positional_floats = _positional_floats  # for payloads rewritten after encoding (personal data)


def _check_json_text(text: str, label: str) -> None:
    """Raise unless ``text`` is JSON facta can store and read back (see the module doc)."""
    problem = _text_problem(text)
    if problem is not None:
        raise InvalidValue(f"{label}: JSON text {problem}")
    try:
        data = json.loads(text, parse_constant=float)
    except RecursionError:
        raise InvalidValue(f"{label}: is nested deeper than {MAX_DEPTH} levels; facta stores at most {MAX_DEPTH}") from None
    except ValueError as exc:
        raise InvalidValue(f"{label}: is not valid JSON: {_first_line(exc)}") from None
    _check_values(data, label)


def _path(base: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{base}[{part}]"
    if part.isidentifier():
        return f"{base}.{part}" if base else part
    return f"{base}[{part!r}]"


def _check_values(value: Any, label: str, path: str = "", depth: int = 0) -> None:
    """Walk a model, a dataclass or JSON-like data and raise at the first value facta
    cannot store exactly, naming its path."""

    def fail(reason: str) -> InvalidValue:
        where = f"field {path!r}" if path else "payload"
        return InvalidValue(f"{label}: {where} {reason}")

    if isinstance(value, str):
        problem = _text_problem(value)
        if problem is not None:
            raise fail(problem)
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (datetime, time)):
        problem = offset_problem(value)
        if problem is not None:
            raise fail(problem)
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise fail(f"is {value!r}; facta stores only finite floats")
        if value == 0.0 and math.copysign(1.0, value) < 0:
            raise fail("is -0.0, which PostgreSQL's jsonb stores as 0.0; facta stores 0.0 only")
        return
    if isinstance(value, int):
        if abs(value) >= 10**MAX_INT_DIGITS:
            raise fail(f"is an integer of more than {MAX_INT_DIGITS} digits; facta stores at most {MAX_INT_DIGITS}")
        return
    if isinstance(value, (BaseModel, Mapping, list, tuple, set, frozenset)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        if depth >= MAX_DEPTH:
            raise fail(f"is nested deeper than {MAX_DEPTH} levels; facta stores at most {MAX_DEPTH}")
    else:
        return
    if isinstance(value, BaseModel):
        items: Iterable[tuple[str | int, Any]] = [(n, getattr(value, n, None)) for n in type(value).model_fields]
        items = [*items, *(value.__pydantic_extra__ or {}).items()]
    elif isinstance(value, Mapping):
        items = []
        for key in value:
            if isinstance(key, str):
                problem = _text_problem(key)
                if problem is not None:
                    raise InvalidValue(f"{label}: key {_show(key)} of {path or 'payload'!r} {problem}")
            items.append((key if isinstance(key, (str, int)) else repr(key), value[key]))
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(enumerate(value))
    else:
        items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    for part, item in items:
        _check_values(item, label, _path(path, part), depth + 1)


def _difference(original: Any, back: Any, path: str = "") -> str:
    """Say where ``back`` (decoded) first differs from ``original``."""
    where = f"field {path!r}" if path else "payload"
    if type(original) is not type(back) and not (isinstance(original, BaseModel) and isinstance(back, BaseModel)):
        return (
            f"{where} holds {type(original).__name__} {_short(original)}, which reads back as"
            f" {type(back).__name__} {_short(back)}"
        )
    if isinstance(original, BaseModel):
        for name in type(original).model_fields:
            a, b = getattr(original, name, None), getattr(back, name, None)
            if a != b or type(a) is not type(b):
                return _difference(a, b, _path(path, name))
        extra_a, extra_b = original.__pydantic_extra__ or {}, back.__pydantic_extra__ or {}
        for key in extra_a:
            if extra_a.get(key) != extra_b.get(key):
                return _difference(extra_a.get(key), extra_b.get(key), _path(path, key))
    elif isinstance(original, Mapping):
        for key in original:
            if key not in back:
                return f"key {key!r} of {where} does not read back as it is (its type is {type(key).__name__})"
            if original[key] != back[key] or type(original[key]) is not type(back[key]):
                return _difference(original[key], back[key], _path(path, key if isinstance(key, (str, int)) else repr(key)))
    elif isinstance(original, (list, tuple)) and len(original) == len(back):
        for i, (a, b) in enumerate(zip(original, back, strict=True)):
            if a != b or type(a) is not type(b):
                return _difference(a, b, _path(path, i))
    return f"{where} is {_short(original)}, which reads back as {_short(back)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


# -- arguments of the public API: Python types, checked before any I/O ------------------------
#
# Each public method calls one of these in its first line. A wrong type (a bool where a
# number goes, a str or a date where a datetime goes, one event where a list goes) is an
# InvalidValue naming the argument, the value's type and value, and what is expected.
# Sequences: any list, tuple or other ``collections.abc.Sequence`` except text (str,
# bytes) is accepted wherever facta takes a list; sets, dicts and iterators are refused
# (their order is not defined, or a check would use them up).


def _got(value: object) -> str:
    return f"{type(value).__name__} {_short(value)}"


got = _got  # "a <type> <value>" for messages of checks kept beside their classes (projections)


def check_int_arg(name: str, value: object, *, optional: bool = False, low: int | None = None) -> None:
    """An ``int`` argument (``bool`` is not one), at least ``low`` when given."""
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidValue(f"{name} must be an integer{' or None' if optional else ''}, got {_got(value)}")
    if low is not None and value < low:
        raise InvalidValue(f"{name} must be >= {low}, got {value}")


def check_bool_arg(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidValue(f"{name} must be True or False, got {_got(value)}")


def check_time_arg(name: str, value: object, *, optional: bool = False) -> None:
    """A ``datetime`` argument (not a ``date``, a text or a number). Whether it is aware
    and within range is checked by the function that takes it."""
    if value is None and optional:
        return
    if not isinstance(value, datetime):
        hint = " (parse text with datetime.fromisoformat)" if isinstance(value, str) else ""
        raise InvalidValue(
            f"{name} must be an aware datetime{' or None' if optional else ''}, got {_got(value)}{hint}"
        )


def check_sequence_arg(name: str, value: object, item_types: type | tuple[type, ...], what: str,
                       item: str) -> None:
    """A list (or tuple, or other Sequence but text) whose items are ``item_types``;
    ``what`` names the list's items in the plural, ``item`` one of them with its article."""
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        single = " (wrap a single one in a list)" if isinstance(value, item_types) else ""
        raise InvalidValue(f"{name} must be a list of {what}, got {_got(value)}{single}")
    for i in range(len(value)):
        if not isinstance(value[i], item_types):
            raise InvalidValue(f"{name}[{i}] must be {item}, got {_got(value[i])}")


def check_append_args(stream_id: object, stream_type: object, events: object, expected_version: object) -> None:
    """:meth:`EventStore.append`'s arguments (the rest, the expected version too, is
    checked as for ``append_many``, by :func:`check_append`)."""
    check_sequence_arg("events", events, (DomainEvent, PendingEvent), "events (DomainEvent or PendingEvent)",
                       "an event (DomainEvent or PendingEvent)")


def nothing_to_append(appends: object, snapshots: object) -> bool:
    """Check :meth:`EventStore.append_many`'s containers; True when ``appends`` is empty
    (then nothing is written and the result is ``[]``; snapshots without events are
    refused: they are written by :meth:`EventStore.save_snapshot`)."""
    check_sequence_arg("appends", appends, StreamAppend, "StreamAppends", "a StreamAppend")
    check_sequence_arg("snapshots", snapshots, Snapshot, "Snapshots", "a Snapshot")
    assert isinstance(appends, Sequence) and isinstance(snapshots, Sequence)
    append: StreamAppend
    for i, append in enumerate(appends):
        check_sequence_arg(f"appends[{i}].events", append.events, (DomainEvent, PendingEvent),
                           "events (DomainEvent or PendingEvent)", "an event (DomainEvent or PendingEvent)")
        if not append.events:
            raise InvalidValue(f"append to stream {append.stream_id!r} has no events: give at least one")
    if not appends and snapshots:
        raise InvalidValue(
            f"append_many got {len(snapshots)} snapshot(s) and no appends: write snapshots"
            " without events with save_snapshot"
        )
    return not appends


def check_window_args(**times: object) -> None:
    """Times of a query (``since``, ``until``, ``as_of``, ``when``): datetimes or None."""
    for name, value in times.items():
        check_time_arg(name, value, optional=True)


def check_replay_from(position: object, offset: object, partition: object, time: object) -> None:
    """:class:`~facta.projections.replay.ReplayFrom`'s fields."""
    for name, value in (("position", position), ("offset", offset), ("partition", partition)):
        check_int_arg(f"ReplayFrom {name}", value, optional=True)
    check_time_arg("ReplayFrom time", time, optional=True)


def check_aggregate_class(name: str, cls: object) -> None:
    from facta.domain import Aggregate

    if not (isinstance(cls, type) and issubclass(cls, Aggregate)) or not hasattr(cls, "stream_type"):
        raise InvalidValue(f"{name} must be an Aggregate subclass declared with stream_type=..., got {_got(cls)}")


def check_aggregates(name: str, values: Sequence[object]) -> None:
    from facta.domain import Aggregate

    for i, value in enumerate(values):
        if not isinstance(value, Aggregate):
            raise InvalidValue(f"{name}[{i}] must be an Aggregate, got {_got(value)}")


def check_seconds_arg(name: str, value: object, *, optional: bool = False) -> None:
    """A duration in seconds: an int or a finite float >= 0 (``bool`` is not one)."""
    if value is None and optional:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise InvalidValue(f"{name} must be a finite number of seconds >= 0, got {_got(value)}")


def check_settings(owner: str, ints: dict[str, object], seconds: dict[str, object] = {},  # noqa: B006
                   flags: dict[str, object] = {}) -> None:  # noqa: B006
    """The types of a settings object's fields (``owner`` names it): ints (``bool`` is
    not one), durations in seconds, flags."""
    for name, value in ints.items():
        check_int_arg(f"{owner} {name}", value, optional=name == "replication_factor")
    for name, value in seconds.items():
        check_seconds_arg(f"{owner} {name}", value)
    for name, value in flags.items():
        check_bool_arg(f"{owner} {name}", value)


def check_instance_arg(name: str, value: object, cls: type, what: str) -> None:
    """``value`` is an instance of ``cls`` (``what`` names it in the message, e.g. "an
    EventStore"); raises :class:`InvalidValue` naming ``name`` and the value otherwise.
    Callers pass their own class, so this module imports none of theirs."""
    if not isinstance(value, cls):
        raise InvalidValue(f"{name} must be {what}, got {_got(value)}")
