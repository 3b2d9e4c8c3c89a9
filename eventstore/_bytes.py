"""Byte events, byte snapshots and tracking records: the store side of facta as another
library's persistence backend (eventsourcing's recorders, ``facta.eventsourcing``).

A *byte event* (:class:`~facta.eventstore.records.ByteEvent`) is an event written by
another library: its payload is bytes that facta stores and returns exactly, in the new
column ``facta_events.payload_bytes`` (revision 0009). It is otherwise an ordinary row of
the log: a fresh version-4 event id, the caller's stream type, schema version 1,
``occurred_at`` = ``recorded_at`` = the append's one clock read, no actor, correlation or
causation id. So that audit, the relay and projections read it like any event, its
``payload`` column holds (:func:`payload_text`):

- the bytes' JSON text, when they are UTF-8 JSON of an object that facta's payload rules
  accept (:mod:`facta.eventstore.validation`: no NaN or infinity, no ``-0.0``, no NUL or
  lone surrogate, integers of at most 4,000 digits, nesting at most 100 deep);
- otherwise (ciphered or compressed bytes, another encoding, JSON facta cannot store
  exactly) the placeholder object ``{"$opaque": {"length": <bytes>, "sha256": "<hex>"}}``,
  which names the bytes without holding them. ``facta audit`` shows it, the relay
  publishes it as the record's payload, a projection sees it.

The cost is what the rule needs: a first-byte test, a UTF-8 decode, a test for suspect
text (four substring searches and one short pattern, :func:`_suspect`) and one
``json.loads`` per JSON payload (the full value walk only when the text holds something
suspect, as :func:`facta.eventstore.validation.encode_event` does); a SHA-256 of opaque
bytes.

The hot paths (appends, the log and stream reads) are hand-written SQL on the driver, as
the appenders (:mod:`._appenders`) and the readers (:mod:`._readers`) are: on PostgreSQL
one autocommit call of ``facta_append_bytes()`` (revision 0009: the writer marker first,
one clock read, the stream-type check, the tracking record, the events) on the store's
asyncpg connection; on SQLite the same steps (:func:`append_bytes_sqlite`,
:func:`insert_byte_snapshots_sqlite`, :func:`record_tracking_sqlite`) inside
:func:`facta.eventstore.database.sqlite_immediate`'s ``BEGIN IMMEDIATE`` on an append
connection (:func:`~facta.eventstore.database.sqlite_append_connection`): the store writer
thread's own, or a ``facta.eventsourcing`` recorder's in the caller's thread
(``SQLiteWrites``). One implementation, so both write the same rows and raise the same
errors.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from facta.errors import InvalidValue, RecordConflict, StreamTypeMismatch

from ._appenders import sqlite_time
from .integrity import Chainer, micros, state_hash
from .records import ByteEvent
from .schema import UTCDateTime
from .validation import MAX_DEPTH, MAX_INT_DIGITS, _SUSPECT, _check_json_text, check_position, check_text, check_version

__all__ = [
    "OPAQUE_KEY",
    "append_bytes_postgres",
    "append_bytes_sqlite",
    "check_byte_events",
    "check_tracking",
    "opaque_placeholder",
    "payload_text",
    "record_tracking_sqlite",
]

# Text that needs the full check before it goes into the payload column: what facta's own
# encoding looks closer at (NaN/infinity, -0.0, an escaped NUL, an exponent), and an
# escaped UTF-16 surrogate (a lone one is not Unicode text: PostgreSQL's jsonb refuses it).
_SUSPECT_BYTES = re.compile(_SUSPECT.pattern + r"|\\u[dD][89a-fA-F]")

# The cheap test in front of _SUSPECT_BYTES, with the same answer (tests/eventstore/
# test_byte_events.py checks both agree): every alternative of the pattern holds one of
# these substrings or a digit, e or E and a sign or digit in a row. Four substring tests
# (memchr-fast) and one short pattern take 1.2 us on a 168-byte eventsourcing payload
# where the whole pattern took 2.4 us (timeit, development machine).
_SUSPECT_PARTS = ("-0.0", "\\u", "NaN", "Infinity")
_EXPONENT_BYTES = re.compile(r"[0-9][eE][-+0-9]")


def _suspect(value: str) -> bool:
    """Whether ``_SUSPECT_BYTES`` finds anything in ``value`` (the text needs the full check)."""
    for part in _SUSPECT_PARTS:
        if part in value:
            return _SUSPECT_BYTES.search(value) is not None
    return _EXPONENT_BYTES.search(value) is not None


#: The key of the placeholder object stored in the payload column for bytes that are not
#: JSON facta accepts.
OPAQUE_KEY = "$opaque"


def opaque_placeholder(data: bytes) -> str:
    """The payload column's text for bytes that are not JSON facta accepts:
    ``{"$opaque": {"length": <len(data)>, "sha256": "<64 hex digits>"}}``."""
    return f'{{"{OPAQUE_KEY}": {{"length": {len(data)}, "sha256": "{hashlib.sha256(data).hexdigest()}"}}}}'


def payload_text(data: bytes) -> str:
    """What the ``payload`` column (JSON) holds for the exact bytes ``data``: their text
    when they are UTF-8 JSON of an object facta's payload rules accept, else
    :func:`opaque_placeholder`. Never raises."""
    head = data[:1]
    if head != b"{" and not (head.isspace() and data.lstrip()[:1] == b"{"):
        return opaque_placeholder(data)
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError:
        return opaque_placeholder(data)
    try:
        if _suspect(value) or (
            len(value) > 2 * MAX_DEPTH
            and (len(value) > MAX_INT_DIGITS or value.count("[") + value.count("{") > MAX_DEPTH)
        ):
            _check_json_text(value, "payload")  # NaN, -0.0, NUL, depth, long integers
        else:
            json.loads(value)  # no NaN/Infinity token (not suspect): plain JSON or an error
    except (InvalidValue, ValueError, RecursionError):
        return opaque_placeholder(data)
    return value


def check_byte_events(stream_type: object, events: object, what: str = "events") -> list[ByteEvent]:
    """Check an append's byte events before any I/O: :class:`InvalidValue` (one line) for a
    stream type, stream id or event type facta cannot store, a version outside int32 or a
    payload that is not bytes; :class:`RecordConflict` for a (stream id, version) given
    twice. Returns them as a list."""
    check_text("stream type", stream_type)
    if isinstance(events, (str, bytes, bytearray)) or not isinstance(events, Sequence):
        raise InvalidValue(f"{what} must be a list of ByteEvent, got {type(events).__name__}")
    items = list(events)
    seen: set[tuple[str, int]] = set()
    for i, event in enumerate(items):
        if not isinstance(event, ByteEvent):
            raise InvalidValue(f"{what}[{i}] must be a ByteEvent, got {type(event).__name__} {event!r:.80}")
        check_text("stream id", event.stream_id)
        check_version(f"{what}[{i}].version", event.version)
        check_text("event type", event.event_type)
        if not isinstance(event.payload, bytes):
            raise InvalidValue(f"{what}[{i}].payload must be bytes, got {type(event.payload).__name__}")
        key = (event.stream_id, event.version)
        if key in seen:
            raise RecordConflict(
                f"stream {event.stream_id!r} version {event.version} is given twice in one call: nothing was written",
                stream_id=event.stream_id, version=event.version,
            )
        seen.add(key)
    return items


def check_tracking(tracking: object) -> tuple[str, int] | None:
    """A tracking record (name, position) or None; :class:`InvalidValue` otherwise."""
    if tracking is None:
        return None
    if not isinstance(tracking, tuple) or len(tracking) != 2:
        raise InvalidValue(f"tracking must be a (name, position) tuple or None, got {tracking!r:.80}")
    name, position = tracking
    check_text("tracking name", name)
    check_position("tracking position", position)
    return name, position


def _taken(stream_id: str, version: int) -> RecordConflict:
    return RecordConflict(
        f"stream {stream_id!r} already has version {version}: nothing was written",
        stream_id=stream_id, version=version,
    )


def _tracking_behind(name: str, position: int, stored: int) -> RecordConflict:
    return RecordConflict(
        f"tracking {name!r} is at position {stored}; position {position} is not above it: nothing was written",
        tracking=name, position=position,
    )


# -- appends: PostgreSQL -----------------------------------------------------------------------

_PG_APPEND_BYTES = "SELECT * FROM facta_append_bytes($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
_PG_TAKEN = (
    "SELECT e.stream_id, e.version FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS c(stream_id, version, k)"
    " JOIN facta_events e ON e.stream_id = c.stream_id AND e.version = c.version ORDER BY c.k LIMIT 1"
)


async def append_bytes_postgres(
    connection: Any, stream_type: str, events: Sequence[ByteEvent], tracking: tuple[str, int] | None,
    context: tuple[str | None, str | None] = (None, None),
) -> tuple[list[int], datetime]:
    """One autocommit ``facta_append_bytes()`` call on an asyncpg connection: the
    positions in the order given and the recorded time, or an error with nothing written.
    ``context``: the ``(traceparent, tracestate)`` every event records (revision 0013)."""
    from asyncpg.exceptions import UniqueViolationError

    stream_ids = [e.stream_id for e in events]
    versions = [e.version for e in events]
    blobs = [e.payload for e in events]
    name, position = tracking if tracking is not None else (None, None)
    try:
        row = await connection.fetchrow(
            _PG_APPEND_BYTES, stream_type, stream_ids, versions, [uuid.uuid4() for _ in events],
            [e.event_type for e in events], [payload_text(b) for b in blobs], blobs, name, position, *context,
        )
    except UniqueViolationError:
        found = await connection.fetchrow(_PG_TAKEN, stream_ids, versions)
        if found is None:  # pragma: no cover (the key was taken and is stored: it cannot vanish)
            raise
        raise _taken(found[0], found[1]) from None
    if row["mismatch_stream"] is not None:
        raise StreamTypeMismatch(row["mismatch_stream"], stream_type, row["mismatch_type"])
    if row["tracking_stored"] is not None:
        assert name is not None and position is not None
        raise _tracking_behind(name, position, row["tracking_stored"])
    return list(row["positions"]), row["recorded_at"]


# -- appends: SQLite -------------------------------------------------------------------------

# The stream's newest row: its type, and the hash its next event chains from.
_SQLITE_TYPE_OF = (
    "SELECT stream_type, version, event_hash FROM facta_events WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
)
_SQLITE_INSERT_BYTES = (
    "INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
    " payload, occurred_at, recorded_at, payload_bytes, event_hash, traceparent, tracestate)"
    " VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_TRACK = (
    "INSERT INTO facta_tracking (name, position, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
    " WHERE facta_tracking.position < excluded.position"
)
_SQLITE_TRACKED = "SELECT position FROM facta_tracking WHERE name = ?"
_SQLITE_HAS_VERSION = "SELECT event_id FROM facta_events WHERE stream_id = ? AND version = ?"


def append_bytes_sqlite(
    connection: sqlite3.Connection, stream_type: str, events: Sequence[ByteEvent], tracking: tuple[str, int] | None,
    context: tuple[str | None, str | None] = (None, None),
) -> tuple[list[int], datetime]:
    """The byte append inside the caller's ``BEGIN IMMEDIATE`` (the writer thread's own
    connection): the same steps as ``facta_append_bytes()``; raising rolls it all back.
    ``context``: the ``(traceparent, tracestate)`` every event records (revision 0013)."""
    chain = Chainer()
    bases = {}
    for stream_id in dict.fromkeys(e.stream_id for e in events):
        head = connection.execute(_SQLITE_TYPE_OF, (stream_id,)).fetchone()
        if head is not None and head[0] != stream_type:
            raise StreamTypeMismatch(stream_id, stream_type, head[0])
        bases[stream_id] = chain.start(stream_id, stream_type, None, None, None,
                                       None if head is None else (head[1], head[2]))
    now = datetime.now(UTC)
    recorded = sqlite_time(now)
    if tracking is not None:
        _track_sqlite(connection, tracking[0], tracking[1], recorded)
    if not events:
        return [], now
    us = micros(now)
    rows = []
    for e in events:
        event_id = _fresh_event_id()
        text = payload_text(e.payload)
        rows.append((
            event_id.hex(), e.stream_id, stream_type, e.version, e.event_type, text, recorded, recorded, e.payload,
            chain.next(bases[e.stream_id], e.stream_id, event_id, e.version, e.event_type, 1, us, text, e.payload),
            *context,
        ))
    try:
        if len(rows) == 1:
            last = connection.execute(_SQLITE_INSERT_BYTES, rows[0]).lastrowid
        else:
            connection.executemany(_SQLITE_INSERT_BYTES, rows)
            last = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
    except sqlite3.IntegrityError:
        # The rows executemany wrote before the one that failed are still there (until the
        # rollback): the taken key is one stored under another event id than ours.
        for row in rows:
            stored = connection.execute(_SQLITE_HAS_VERSION, (row[1], row[3])).fetchone()
            if stored is not None and stored[0] != row[0]:
                raise _taken(row[1], row[3]) from None
        raise  # pragma: no cover (no other constraint can fire: event ids are fresh)
    assert last is not None
    return list(range(last - len(rows) + 1, last + 1)), now


# A version-4 (random) UUID's 32 hex digits, as uuid.uuid4().hex gives them (16 bytes of
# os.urandom, the version nibble 4, the variant bits 10): 0.96 us against 2.05 us
# (timeit, development machine), for every event of a SQLite byte append.
_V4_KEEP = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_V4_SET = 0x00000000_0000_4000_8000_000000000000


def _fresh_event_id() -> bytes:
    """A fresh version-4 event id's 16 bytes (uuid4's version and variant bits on
    os.urandom; about half the cost of ``uuid.uuid4()``)."""
    return ((int.from_bytes(os.urandom(16)) & _V4_KEEP) | _V4_SET).to_bytes(16)


def event_id_hex() -> str:
    """A fresh version-4 event id as 32 lowercase hex digits (SQLite's ``event_id`` text)."""
    return _fresh_event_id().hex()


def _track_sqlite(connection: sqlite3.Connection, name: str, position: int, recorded: str) -> None:
    if connection.execute(_SQLITE_TRACK, (name, position, recorded)).rowcount == 0:
        raise _tracking_behind(name, position, connection.execute(_SQLITE_TRACKED, (name,)).fetchone()[0])


def record_tracking_sqlite(connection: sqlite3.Connection, name: str, position: int) -> None:
    """The tracking record alone inside the caller's ``BEGIN IMMEDIATE`` (the step of
    :func:`append_bytes_sqlite`): :class:`RecordConflict` when the stored position is not
    below ``position``."""
    _track_sqlite(connection, name, position, sqlite_time(datetime.now(UTC)))


# -- snapshots --------------------------------------------------------------------------------

_PG_INSERT_SNAPSHOTS = (
    "INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at, state_bytes)"
    " SELECT x.stream_id, x.version, $1, x.state::jsonb, x.state_schema, clock_timestamp(), x.state_bytes"
    " FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::bytea[])"
    " AS x(stream_id, version, state, state_schema, state_bytes)"
)
_PG_SNAPSHOT_TAKEN = (
    "SELECT s.stream_id, s.version FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS c(stream_id, version, k)"
    " JOIN facta_snapshots s ON s.stream_id = c.stream_id AND s.version = c.version ORDER BY c.k LIMIT 1"
)


# The first of the streams (in the order given) whose newest event is of another stream type.
_PG_OTHER_TYPE = (
    "SELECT c.stream_id, h.stream_type FROM unnest($1::text[]) WITH ORDINALITY AS c(stream_id, k)"
    " CROSS JOIN LATERAL (SELECT e.stream_type FROM facta_events e WHERE e.stream_id = c.stream_id"
    " ORDER BY e.version DESC LIMIT 1) h WHERE h.stream_type <> $2 ORDER BY c.k LIMIT 1"
)


def _snapshot_taken(stream_id: str, version: int) -> RecordConflict:
    return RecordConflict(
        f"stream {stream_id!r} already has a snapshot at version {version}: nothing was written",
        stream_id=stream_id, version=version,
    )


async def insert_byte_snapshots_postgres(connection: Any, stream_type: str, snaps: Sequence[ByteEvent]) -> None:
    from asyncpg.exceptions import UniqueViolationError

    ids, versions = [s.stream_id for s in snaps], [s.version for s in snaps]
    other = await connection.fetchrow(_PG_OTHER_TYPE, list(dict.fromkeys(ids)), stream_type)
    if other is not None:  # a stream of another type: refused, as events are
        raise StreamTypeMismatch(other[0], stream_type, other[1])
    try:
        await connection.execute(
            _PG_INSERT_SNAPSHOTS, stream_type, ids, versions, [payload_text(s.payload) for s in snaps],
            [s.event_type for s in snaps], [s.payload for s in snaps],
        )
    except UniqueViolationError:
        found = await connection.fetchrow(_PG_SNAPSHOT_TAKEN, ids, versions)
        if found is None:  # pragma: no cover
            raise
        raise _snapshot_taken(found[0], found[1]) from None


_SQLITE_SNAPSHOT_EXISTS = "SELECT 1 FROM facta_snapshots WHERE stream_id = ? AND version = ?"
_SQLITE_INSERT_SNAPSHOT = (
    "INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at, state_bytes,"
    " state_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_byte_snapshots_sqlite(connection: sqlite3.Connection, stream_type: str, snaps: Sequence[ByteEvent]) -> None:
    """Inside ``BEGIN IMMEDIATE``: the write lock is held, so a snapshot found absent here
    stays absent until the insert (SQLite's trigger of revision 0004 would skip a stored
    one silently; this raises instead)."""
    for stream_id in dict.fromkeys(s.stream_id for s in snaps):  # a stream of another type: refused, as events are
        head = connection.execute(_SQLITE_TYPE_OF, (stream_id,)).fetchone()
        if head is not None and head[0] != stream_type:
            raise StreamTypeMismatch(stream_id, stream_type, head[0])
    for s in snaps:
        if connection.execute(_SQLITE_SNAPSHOT_EXISTS, (s.stream_id, s.version)).fetchone() is not None:
            raise _snapshot_taken(s.stream_id, s.version)
    recorded = sqlite_time(datetime.now(UTC))
    connection.executemany(
        _SQLITE_INSERT_SNAPSHOT,
        [(s.stream_id, s.version, stream_type, payload_text(s.payload), s.event_type, recorded, s.payload,
          state_hash(stream_id=s.stream_id, version=s.version, stream_type=stream_type, state_schema=s.event_type,
                     state=None, state_bytes=s.payload))
         for s in snaps],
    )


# -- reads ---------------------------------------------------------------------------------------
#
# Rows: (position, stream_id, version, event_type, payload bytes). facta's own events have
# no payload_bytes: their payload column's text, encoded UTF-8 (on PostgreSQL jsonb's text).

_PG_BYTES = "coalesce(payload_bytes, convert_to(payload::text, 'UTF8'))"
_SQLITE_BYTES = "coalesce(payload_bytes, CAST(payload AS BLOB))"


def _bounded(postgres: bool, typed: bool, gt: bool, lte: bool, desc: bool, limit: bool) -> str:
    """The stream type, version bounds, order and limit of a stream or snapshot read;
    parameters after the stream id: [stream type,] [gt,] [lte,] [limit]."""
    names = iter(f"${k}" for k in range(2, 7)) if postgres else iter("????")
    sql = ""
    if typed:
        sql += f" AND stream_type = {next(names)}"
    if gt:
        sql += f" AND version > {next(names)}"
    if lte:
        sql += f" AND version <= {next(names)}"
    sql += " ORDER BY version" + (" DESC" if desc else "")
    if limit:
        sql += f" LIMIT {next(names)}"
    return sql


@functools.lru_cache(maxsize=64)
def stream_sql(postgres: bool, typed: bool, gt: bool, lte: bool, desc: bool, limit: bool) -> str:
    """A stream read's statement for these bounds, built once. Parameters: stream id,
    [stream type,] [gt,] [lte,] [limit]. With a stream type, a stream of another type
    reads as empty (every row of a stream has its type: appends refuse another)."""
    return (f"SELECT position, stream_id, version, event_type, {_PG_BYTES if postgres else _SQLITE_BYTES}"
            f" FROM facta_events WHERE stream_id = {'$1' if postgres else '?'}"
            + _bounded(postgres, typed, gt, lte, desc, limit))


@functools.lru_cache(maxsize=64)
def snapshot_sql(postgres: bool, typed: bool, gt: bool, lte: bool, desc: bool, limit: bool) -> str:
    """A snapshot read's statement (rows: stream id, version, state schema, bytes)."""
    state = ("coalesce(state_bytes, convert_to(state::text, 'UTF8'))" if postgres
             else "coalesce(state_bytes, CAST(state AS BLOB))")
    return (f"SELECT stream_id, version, state_schema, {state} FROM facta_snapshots"
            f" WHERE stream_id = {'$1' if postgres else '?'}" + _bounded(postgres, typed, gt, lte, desc, limit))


@functools.lru_cache(maxsize=256)
def log_sql(postgres: bool, by_stream_type: bool, event_types: int) -> str:
    """A log page's statement. Parameters: after, upto, [stream type,] [event types...,]
    limit on SQLite; on PostgreSQL $1 after, $2 upto, $3 limit, then the stream type and
    the event types as text[]. With a stream type the page is a range of the
    (stream_type, position) index."""
    if postgres:
        sql = f"SELECT position, stream_id, version, event_type, {_PG_BYTES} FROM facta_events WHERE position > $1 AND position <= $2"
        k = 4
        if by_stream_type:
            sql += f" AND stream_type = ${k}"
            k += 1
        if event_types:
            sql += f" AND event_type = ANY(${k}::text[])"
        return sql + " ORDER BY position LIMIT $3"
    sql = f"SELECT position, stream_id, version, event_type, {_SQLITE_BYTES} FROM facta_events WHERE position > ? AND position <= ?"
    if by_stream_type:
        sql += " AND stream_type = ?"
    if event_types:
        sql += f" AND +event_type IN ({', '.join('?' * event_types)})"
    return sql + " ORDER BY position LIMIT ?"


def byte_events(rows: Sequence[Sequence[Any]]) -> list[ByteEvent]:
    """Rows of (position, stream id, version, event type, bytes) as ByteEvents."""
    return [ByteEvent(row[1], row[2], row[3], bytes(row[4]), row[0]) for row in rows]


def driver(conn: Connection) -> Any:
    found = conn.connection.driver_connection
    assert found is not None
    return found


def sqlite_fetch(conn: Connection, sql: str, args: Sequence[Any]) -> list[Any]:
    """``sql`` on the read connection's sqlite3 driver connection (no Core per call)."""
    return list(driver(conn).execute(sql, args).fetchall())


# -- tracking --------------------------------------------------------------------------------

_TRACK = text(
    "INSERT INTO facta_tracking (name, position, updated_at) VALUES (:name, :position, :updated_at)"
    " ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at"
    " WHERE facta_tracking.position < excluded.position RETURNING position"
).bindparams(bindparam("updated_at", type_=UTCDateTime()))
_TRACKED = text("SELECT position FROM facta_tracking WHERE name = :name")


def record_tracking_tx(conn: Connection, name: str, position: int) -> None:
    """The tracking upsert in ``conn``'s transaction; :class:`RecordConflict` when the
    stored position is not below ``position`` (nothing changed)."""
    if conn.execute(_TRACK, {"name": name, "position": position, "updated_at": datetime.now(UTC)}).first() is None:
        stored = conn.execute(_TRACKED, {"name": name}).scalar_one()
        raise _tracking_behind(name, position, int(stored))


def tracking_position_tx(conn: Connection, name: str) -> int | None:
    found = conn.execute(_TRACKED, {"name": name}).scalar()
    return None if found is None else int(found)
