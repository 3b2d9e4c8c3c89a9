"""Hash chains over the event log (issue 14): what is hashed, how, and the checks.

Every event stored since revision 0010 carries ``event_hash`` (32 bytes)::

    content_digest = SHA-256(content_bytes(event))
    event_hash     = SHA-256(CHAIN_TAG || prev || content_digest)

where ``prev`` is the ``event_hash`` of the event appended to the same stream just before
it (the stream's head when it was appended: its highest version), or :data:`ZERO` (32
zero bytes) for a stream's first event, and for the first event appended after revision
0010 to a stream whose earlier events were stored before it and not sealed yet (their
hash was NULL then; see :func:`seal_backfill`). Within a stream, positions follow
versions, so the chain runs in version and in position order alike.

:func:`content_bytes` is the one definition of the canonical bytes, field by field::

    EVENT_TAG || T(stream_id) || T(stream_type) || N(actor) || N(correlation_id)
    || N(causation_id) || event_id (16 bytes) || I32(version) || T(event_type)
    || I32(schema_version) || I64(occurred_at: microseconds since 2000-01-01 UTC)
    || b"b" || I32(len) || payload_bytes          (byte events, revision 0009)
     | b"j" || I32(len) || UTF-8 of the payload's JSON text as the database returns it

``T(s)`` is ``I32(len(UTF-8)) || UTF-8``; ``N(s)`` is ``T(s)``, or ``I32(-1)`` for NULL;
``I32``/``I64`` are big-endian two's complement. The payload's text is what the store's
own column gives back: on SQLite the exact text facta wrote, on PostgreSQL jsonb's text
(jsonb reorders keys, normalises spacing and rewrites numbers, so only the database can
produce it: ``facta_append`` computes the hash in SQL with ``facta_event_digest``,
revision 0010, which must give these bytes; ``tests/eventstore/test_integrity.py``
checks both against this module). A store's hashes are therefore tied to its dialect;
they are never compared across stores.

Snapshots carry ``state_hash`` = SHA-256(:data:`SNAPSHOT_TAG` || T(stream_id) ||
I32(version) || T(stream_type) || T(state_schema) || the state as the payload above):
not chained (facta may delete snapshots), but a changed snapshot no longer matches.

SHA-256 (FIPS 180-4) through :mod:`hashlib`.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from facta.errors import InvalidValue

if TYPE_CHECKING:
    from .store import EventStore

__all__ = [
    "CHAIN_TAG",
    "KINDS",
    "Difference",
    "SealReport",
    "VerifyReport",
    "EVENT_TAG",
    "SNAPSHOT_TAG",
    "ZERO",
    "content_bytes",
    "content_digest",
    "event_hash",
    "micros",
    "seal_backfill",
    "state_hash",
    "verify",
]

#: Domain tags: no content, chain step or snapshot can hash to another's input.
EVENT_TAG = b"facta.event.1\x00"
CHAIN_TAG = b"facta.chain.1\x00"
SNAPSHOT_TAG = b"facta.snapshot.1\x00"
#: The predecessor of a stream's first event.
ZERO = bytes(32)

# PostgreSQL's timestamp epoch: timestamptz_send gives these microseconds as an int64.
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_I32 = struct.Struct(">i")
_NULL = _I32.pack(-1)
_MIDDLE = struct.Struct(">16si")  # event id, version
_TAIL = struct.Struct(">iq")  # schema version, occurred-at
_TAIL_BODY = struct.Struct(">iqci")  # the same, then the payload's kind and length


def micros(value: datetime) -> int:
    """Microseconds since 2000-01-01 UTC (PostgreSQL's timestamp epoch) of an aware
    datetime (naive: taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _US


def _t(value: str) -> bytes:
    data = value.encode("utf-8")
    return _I32.pack(len(data)) + data


def _n(value: str | None) -> bytes:
    return _NULL if value is None else _t(value)


def _body(text: str | None, data: bytes | None) -> bytes:
    if data is not None:
        return b"b" + _I32.pack(len(data)) + data
    if text is None:
        raise InvalidValue("a payload needs its JSON text or its bytes, got neither")
    encoded = text.encode("utf-8")
    return b"j" + _I32.pack(len(encoded)) + encoded


def _prefix(stream_id: str, stream_type: str, actor: str | None, correlation_id: str | None,
            causation_id: str | None) -> bytes:
    return EVENT_TAG + _t(stream_id) + _t(stream_type) + _n(actor) + _n(correlation_id) + _n(causation_id)


def content_bytes(
    *, event_id: uuid.UUID, stream_id: str, stream_type: str, version: int, event_type: str,
    schema_version: int, payload: str | None, payload_bytes: bytes | None = None, occurred_at: datetime | int,
    actor: str | None, correlation_id: str | None, causation_id: str | None,
) -> bytes:
    """The canonical bytes of one event (module docstring). ``payload`` is the JSON text
    as the store's column returns it; ``payload_bytes`` (byte events) replaces it when
    given. ``occurred_at`` is a datetime or :func:`micros` of one."""
    us = occurred_at if isinstance(occurred_at, int) else micros(occurred_at)
    return (
        _prefix(stream_id, stream_type, actor, correlation_id, causation_id)
        + _MIDDLE.pack(event_id.bytes, version) + _t(event_type) + _TAIL.pack(schema_version, us)
        + _body(payload, payload_bytes)
    )


def content_digest(**fields: object) -> bytes:
    """SHA-256 of :func:`content_bytes` (same keyword arguments), 32 bytes."""
    return hashlib.sha256(content_bytes(**fields)).digest()  # type: ignore[arg-type]


def event_hash(prev: bytes | None, digest: bytes) -> bytes:
    """One chain step: SHA-256(CHAIN_TAG || prev || digest); ``prev`` None means
    :data:`ZERO`. Raises :class:`~facta.errors.InvalidValue` unless both are 32 bytes."""
    prev = ZERO if prev is None else prev
    if len(prev) != 32 or len(digest) != 32:
        raise InvalidValue(f"prev and digest must be 32 bytes each, got {len(prev)} and {len(digest)}")
    return hashlib.sha256(CHAIN_TAG + prev + digest).digest()


def state_hash(*, stream_id: str, version: int, stream_type: str, state_schema: str, state: str | None,
               state_bytes: bytes | None = None) -> bytes:
    """A snapshot's hash (module docstring), 32 bytes."""
    return hashlib.sha256(
        SNAPSHOT_TAG + _t(stream_id) + _I32.pack(version) + _t(stream_type) + _t(state_schema)
        + _body(state, state_bytes)
    ).digest()


class Chainer:
    """The hashes of one append's events, stream by stream, in the order given (the
    SQLite appenders' hot path: the fields an append shares are encoded once per stream,
    the event type once per type)."""

    __slots__ = ("_types", "_prefixes", "heads")

    def __init__(self) -> None:
        self._types: dict[str, bytes] = {}
        self._prefixes: dict[tuple[str, str], hashlib._Hash] = {}
        #: stream id -> the hash the stream's next event chains from (None: ZERO).
        self.heads: dict[str, bytes | None] = {}

    def start(self, stream_id: str, stream_type: str, actor: str | None, correlation_id: str | None,
              causation_id: str | None, head: bytes | None) -> hashlib._Hash:
        """Begin a stream's part of the append: its shared prefix, hashed once."""
        self.heads[stream_id] = head
        base = hashlib.sha256(_prefix(stream_id, stream_type, actor, correlation_id, causation_id))
        self._prefixes[(stream_id, stream_type)] = base
        return base

    def next(self, base: hashlib._Hash, stream_id: str, event_id: bytes, version: int, event_type: str,
             schema_version: int, occurred_us: int, payload: str | None, payload_bytes: bytes | None) -> bytes:
        """The next event of ``stream_id`` (whose prefix ``base`` is): its event_hash."""
        et = self._types.get(event_type)
        if et is None:
            et = self._types[event_type] = _t(event_type)
        h = base.copy()
        h.update(_MIDDLE.pack(event_id, version) + et + _TAIL.pack(schema_version, occurred_us)
                 + _body(payload, payload_bytes))
        prev = self.heads[stream_id]
        chained = hashlib.sha256(CHAIN_TAG + (ZERO if prev is None else prev) + h.digest()).digest()
        self.heads[stream_id] = chained
        return chained


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """Where a chain or a snapshot stops matching: ``position`` (None for a snapshot),
    ``stream_id``, ``version``, ``kind`` (one of :data:`KINDS`) and ``what`` (one line)."""

    position: int | None
    stream_id: str
    version: int
    kind: str
    what: str


#: The kinds of :class:`Difference`: an event whose hash does not match its content and
#: its predecessor's hash (``hash``), a version at or below one seen before in its stream
#: (``order``), versions missing before it (``gap``), a NULL hash above the backfill start
#: (``missing``), one at or below it not sealed yet (``unsealed``), a snapshot (``snapshot``).
KINDS = ("hash", "order", "gap", "missing", "unsealed", "snapshot")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :func:`verify` found: events, streams and snapshots checked, the number of
    differences and the first one (lowest position; snapshots after events)."""

    events: int
    streams: int
    snapshots: int
    differences: int
    first: Difference | None

    @property
    def intact(self) -> bool:
        return self.differences == 0


# Rows: position, event id (16 bytes), stream id, stream type, version, event type, schema
# version, payload text, payload bytes, occurred-at in microseconds, actor, correlation id,
# causation id, event hash.
_PG_EVENTS = (
    "SELECT position, uuid_send(event_id), stream_id, stream_type, version, event_type, schema_version,"
    " CASE WHEN payload_bytes IS NULL THEN payload::text END, payload_bytes,"
    " (extract(epoch FROM occurred_at) * 1000000)::bigint - 946684800000000, actor, correlation_id, causation_id, event_hash"
    " FROM facta_events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3"
)
_SQLITE_EVENTS = (
    "SELECT position, event_id, stream_id, stream_type, version, event_type, schema_version,"
    " CASE WHEN payload_bytes IS NULL THEN payload END, CAST(payload_bytes AS BLOB),"
    " (CAST(strftime('%s', occurred_at) AS INTEGER) - 946684800) * 1000000 + CAST(substr(occurred_at, 21, 6) AS INTEGER),"
    " actor, correlation_id, causation_id, event_hash"
    " FROM facta_events WHERE position > ? AND position <= ? ORDER BY position LIMIT ?"
)

def _pg_t(column: str) -> str:
    return f"int4send(octet_length(convert_to({column}, 'UTF8'))) || convert_to({column}, 'UTF8')"


def _pg_n(column: str) -> str:
    return f"coalesce({_pg_t(column)}, '\\xffffffff'::bytea)"


# PostgreSQL: the content digest recomputed by the database from the stored columns with
# built-in functions only (the expression of content_bytes, as revision 0010's
# facta_event_digest, which this does not call), so that the server's core works while
# this process checks the chain; the payload's text made once per row (OFFSET 0).
# Rows: position, stream id, version, content digest, event hash.
_PG_DIGESTS = (
    "SELECT position, stream_id, version, sha256('\\x" + EVENT_TAG.hex() + "'::bytea"
    f" || {_pg_t('stream_id')} || {_pg_t('stream_type')} || {_pg_n('actor')} || {_pg_n('correlation_id')}"
    f" || {_pg_n('causation_id')} || uuid_send(event_id) || int4send(version) || {_pg_t('event_type')}"
    " || int4send(schema_version) || timestamptz_send(occurred_at)"
    " || CASE WHEN payload_bytes IS NOT NULL THEN '\\x62'::bytea || int4send(octet_length(payload_bytes)) || payload_bytes"
    " ELSE '\\x6a'::bytea || int4send(octet_length(pt)) || pt END), event_hash"
    " FROM (SELECT position, event_id, stream_id, stream_type, version, event_type, schema_version, occurred_at, actor,"
    " correlation_id, causation_id, payload_bytes, event_hash,"
    " CASE WHEN payload_bytes IS NULL THEN convert_to(payload::text, 'UTF8') END AS pt"
    " FROM facta_events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3 OFFSET 0) e"
    " ORDER BY position"
)
_PG_SNAPSHOTS = (
    "SELECT stream_id, version, stream_type, state_schema, CASE WHEN state_bytes IS NULL THEN state::text END,"
    " state_bytes, state_hash FROM facta_snapshots WHERE (stream_id, version) > ($1, $2)"
    " ORDER BY stream_id, version LIMIT $3"
)
_SQLITE_SNAPSHOTS = (
    "SELECT stream_id, version, stream_type, state_schema, CASE WHEN state_bytes IS NULL THEN state END,"
    " CAST(state_bytes AS BLOB), state_hash FROM facta_snapshots WHERE stream_id > ? OR (stream_id = ? AND version > ?)"
    " ORDER BY stream_id, version LIMIT ?"
)
_START = "SELECT position FROM facta_hash_start"
_HEAD = "SELECT coalesce(max(position), 0) FROM facta_events"


class _Checker:
    """Checks pages of event rows in position order, keeping per stream only its last
    version, position and hash (memory grows with streams, not events)."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.last: dict[str, tuple[int, int, bytes | None]] = {}
        self.events = 0
        self.differences = 0
        self.first: Difference | None = None
        self._prefixes: dict[tuple[str, str, str | None, str | None, str | None], bytes] = {}
        self._types: dict[str, bytes] = {}

    def _note(self, position: int | None, stream_id: str, version: int, kind: str, what: str) -> None:
        self.differences += 1
        if self.first is None:
            self.first = Difference(position, stream_id, version, kind, what)

    def page(self, rows: Sequence[Sequence[Any]], hex_ids: bool) -> None:
        """Rows of the full event (SQLite): each content digest computed here, then
        :meth:`chain`. Per event one dict lookup for the fields it shares with others
        (stream, type, actor, ids), one join, one SHA-256."""
        prefixes = self._prefixes
        types = self._types
        sha = hashlib.sha256
        middle, tail = _MIDDLE.pack, _TAIL_BODY.pack
        join = b"".join
        digested = []
        for position, event_id, sid, stype, version, etype, sv, payload, data, us, actor, corr, caus, stored in rows:
            key = (sid, stype, actor, corr, caus)
            pre = prefixes.get(key)
            if pre is None:
                pre = _prefix(sid, stype, actor, corr, caus)
                if len(prefixes) < 200_000:
                    prefixes[key] = pre
            et = types.get(etype)
            if et is None:
                et = types[etype] = _t(etype)
            if data is None:
                body = payload.encode()
                kind = b"j"
            else:
                body = data
                kind = b"b"
            digest = sha(join((pre, middle(bytes.fromhex(event_id) if hex_ids else event_id, version), et,
                               tail(sv, us, kind, len(body)), body))).digest()
            digested.append((position, sid, version, digest, stored))
        self.chain(digested)

    def chain(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows of (position, stream id, version, content digest, stored event_hash) in
        position order: each chain step checked (one SHA-256 per event)."""
        last = self.last
        sha = hashlib.sha256
        start = self.start
        chain_tag = CHAIN_TAG
        for position, sid, version, digest, stored in rows:
            before = last.get(sid)
            if stored is None:
                if position <= start:
                    self._note(position, sid, version, "unsealed",
                               "no event_hash yet (stored before revision 0010): run `facta audit seal`")
                else:
                    self._note(position, sid, version, "missing", "event_hash is NULL")
                last[sid] = (version, position, None)
                continue
            if before is None:
                expected = sha(chain_tag + ZERO + digest).digest()
            elif version <= before[0]:
                self._note(position, sid, version, "order",
                           f"version {version} comes after version {before[0]} (position {before[1]})")
                last[sid] = (version, position, stored)
                continue
            else:
                expected = sha(chain_tag + (before[2] or ZERO) + digest).digest()
            if expected != stored and not (
                before is not None and before[1] <= start < position
                and sha(chain_tag + ZERO + digest).digest() == stored
            ):
                self._mismatch(position, sid, version, before)
            last[sid] = (version, position, stored)
        self.events += len(rows)

    def _mismatch(self, position: int, sid: str, version: int, before: tuple[int, int, bytes | None] | None) -> None:
        if before is not None and version > before[0] + 1:
            low, high = before[0] + 1, version - 1
            missing = f"version {low} is" if low == high else f"versions {low} to {high} are"
            self._note(position, sid, version, "gap",
                       f"{missing} missing before it, deleted or moved (the stream's previous event is"
                       f" version {before[0]} at position {before[1]})")
        elif before is not None and before[2] is None:
            self._note(position, sid, version, "hash",
                       "event_hash does not match: its predecessor has no hash to chain from")
        else:
            self._note(position, sid, version, "hash",
                       "event_hash does not match the event's content and its predecessor's hash"
                       f" ({'the first event of its stream' if before is None else f'version {before[0]} at position {before[1]}'})")

    def snapshot(self, row: Sequence[Any]) -> None:
        sid, version, stype, schema, state, data, stored = row
        expected = state_hash(stream_id=sid, version=version, stream_type=stype, state_schema=schema, state=state,
                              state_bytes=None if data is None else bytes(data))
        if stored is None:
            self._note(None, sid, version, "snapshot", "snapshot has no state_hash: run `facta audit seal`")
        elif bytes(stored) != expected:
            self._note(None, sid, version, "snapshot", "state_hash does not match the snapshot's stream type, tag and state")


async def verify(store: EventStore, *, progress: Callable[[int], None] | None = None,
                 page_size: int = 10_000) -> VerifyReport:
    """Recompute every stream's chain and every snapshot's hash, in one read snapshot of
    the database (a REPEATABLE READ transaction on PostgreSQL, one read transaction on
    SQLite), reading ``page_size`` events at a time in position order. ``progress`` is
    called with the number of events checked after each page. Differences are counted and
    the first one kept; raises only for database errors."""
    database = store.database
    if database.dialect == "sqlite":
        return await database.read(_verify_sqlite, page_size, progress)
    async with database.driver_connection() as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            start = await conn.fetchval(_START)
            head = await conn.fetchval(_HEAD)
            checker = _Checker(start)
            # The next page is asked for before this one is checked: the server computes
            # its digests while this process checks the chain.
            pending = asyncio.ensure_future(conn.fetch(_PG_DIGESTS, 0, head, page_size))
            while True:
                rows = await pending
                if not rows:
                    break
                pending = asyncio.ensure_future(conn.fetch(_PG_DIGESTS, rows[-1][0], head, page_size))
                await asyncio.sleep(0)  # let the request go out
                checker.chain(rows)
                if progress is not None:
                    progress(checker.events)
            snapshots = 0
            key: tuple[str, int] = ("", -(2**31))
            while True:
                srows = await conn.fetch(_PG_SNAPSHOTS, key[0], key[1], page_size)
                if not srows:
                    break
                for row in srows:
                    checker.snapshot(row)
                snapshots += len(srows)
                key = (srows[-1][0], srows[-1][1])
    return VerifyReport(checker.events, len(checker.last), snapshots, checker.differences, checker.first)


def _verify_sqlite(conn: Connection, page_size: int, progress: Callable[[int], None] | None) -> VerifyReport:
    raw = conn.connection.driver_connection
    assert raw is not None
    start = raw.execute(_START).fetchone()[0]
    head = raw.execute(_HEAD).fetchone()[0]
    checker = _Checker(start)
    after = 0
    while True:
        rows = raw.execute(_SQLITE_EVENTS, (after, head, page_size)).fetchall()
        if not rows:
            break
        checker.page(rows, hex_ids=True)
        after = rows[-1][0]
        if progress is not None:
            progress(checker.events)
    snapshots = 0
    key: tuple[str, int] = ("", -(2**31))
    while True:
        srows = raw.execute(_SQLITE_SNAPSHOTS, (key[0], key[0], key[1], page_size)).fetchall()
        if not srows:
            break
        for row in srows:
            checker.snapshot(row)
        snapshots += len(srows)
        key = (srows[-1][0], srows[-1][1])
    return VerifyReport(checker.events, len(checker.last), snapshots, checker.differences, checker.first)


# -- backfill (facta audit seal) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealReport:
    """What :func:`seal_backfill` wrote: events and snapshots given their first hash."""

    events: int
    snapshots: int


_PG_SET_EVENT_HASHES = (
    "UPDATE facta_events e SET event_hash = u.h FROM unnest($1::bigint[], $2::bytea[]) AS u(p, h)"
    " WHERE e.position = u.p AND e.event_hash IS NULL"
)
_SQLITE_SET_EVENT_HASH = "UPDATE facta_events SET event_hash = ? WHERE position = ? AND event_hash IS NULL"
_PG_SET_STATE_HASHES = (
    "UPDATE facta_snapshots s SET state_hash = u.h FROM unnest($1::text[], $2::int[], $3::bytea[]) AS u(s, v, h)"
    " WHERE s.stream_id = u.s AND s.version = u.v AND s.state_hash IS NULL"
)
_SQLITE_SET_STATE_HASH = "UPDATE facta_snapshots SET state_hash = ? WHERE stream_id = ? AND version = ? AND state_hash IS NULL"
_PG_UNHASHED_SNAPSHOTS = _PG_SNAPSHOTS.replace("WHERE", "WHERE state_hash IS NULL AND")
_SQLITE_UNHASHED_SNAPSHOTS = _SQLITE_SNAPSHOTS.replace("WHERE", "WHERE state_hash IS NULL AND (", 1).replace(
    " ORDER BY", ") ORDER BY", 1)


class _Backfill:
    """The hashes of events stored before revision 0010, in position order: each chains
    from its stream's previous event (ZERO for a stream's first)."""

    def __init__(self) -> None:
        self.last: dict[str, bytes] = {}

    def page(self, rows: Sequence[Sequence[Any]], hex_ids: bool) -> list[tuple[int, bytes]]:
        todo = []
        for position, event_id, sid, stype, version, etype, sv, payload, data, us, actor, corr, caus, stored in rows:
            if stored is None:
                digest = hashlib.sha256(content_bytes(
                    event_id=uuid.UUID(hex=event_id) if hex_ids else uuid.UUID(bytes=bytes(event_id)),
                    stream_id=sid, stream_type=stype, version=version, event_type=etype, schema_version=sv,
                    payload=payload, payload_bytes=None if data is None else bytes(data), occurred_at=us,
                    actor=actor, correlation_id=corr, causation_id=caus,
                )).digest()
                stored = event_hash(self.last.get(sid), digest)
                todo.append((position, stored))
            self.last[sid] = bytes(stored)
        return todo


def _state_row_hash(row: Sequence[Any]) -> bytes:
    sid, version, stype, schema, state, data, _ = row
    return state_hash(stream_id=sid, version=version, stream_type=stype, state_schema=schema, state=state,
                      state_bytes=None if data is None else bytes(data))


async def seal_backfill(store: EventStore, *, page_size: int = 10_000,
                        progress: Callable[[int], None] | None = None) -> SealReport:
    """Give the events stored before revision 0010 (positions at or below
    ``facta_hash_start``) and every snapshot without one their hash, once (the one
    UPDATE the permanent-history triggers allow). Events above the start are never
    touched: a NULL hash there is a difference for :func:`verify`, not something to fill.
    Idempotent: a second run writes nothing. Each page of ``page_size`` events is its own
    transaction; ``progress`` gets the events written so far."""
    database = store.database
    if database.dialect == "sqlite":
        return await database.write(_seal_sqlite, page_size, progress)  # one write transaction
    backfill = _Backfill()
    written = 0
    async with database.driver_connection() as conn:
        start = await conn.fetchval(_START)
        after = 0
        while after < start:
            rows = await conn.fetch(_PG_EVENTS, after, start, page_size)
            if not rows:
                break
            todo = backfill.page(rows, hex_ids=False)
            if todo:
                await conn.execute(_PG_SET_EVENT_HASHES, [p for p, _ in todo], [h for _, h in todo])
                written += len(todo)
                if progress is not None:
                    progress(written)
            after = rows[-1][0]
        snapshots = 0
        while True:
            srows = await conn.fetch(_PG_UNHASHED_SNAPSHOTS, "", -(2**31), page_size)
            if not srows:
                break
            await conn.execute(_PG_SET_STATE_HASHES, [r[0] for r in srows], [r[1] for r in srows],
                               [_state_row_hash(r) for r in srows])
            snapshots += len(srows)
    return SealReport(written, snapshots)


def _seal_sqlite(conn: Connection, page_size: int, progress: Callable[[int], None] | None) -> SealReport:
    raw = conn.connection.driver_connection
    assert raw is not None
    backfill = _Backfill()
    start = raw.execute(_START).fetchone()[0]
    written = 0
    after = 0
    while after < start:
        rows = raw.execute(_SQLITE_EVENTS, (after, start, page_size)).fetchall()
        if not rows:
            break
        todo = backfill.page(rows, hex_ids=True)
        raw.executemany(_SQLITE_SET_EVENT_HASH, [(h, p) for p, h in todo])
        written += len(todo)
        if todo and progress is not None:
            progress(written)
        after = rows[-1][0]
    srows = raw.execute(_SQLITE_UNHASHED_SNAPSHOTS, ("", "", -(2**31), 2**62)).fetchall()
    raw.executemany(_SQLITE_SET_STATE_HASH, [(_state_row_hash(r), r[0], r[1]) for r in srows])
    return SealReport(written, len(srows))
