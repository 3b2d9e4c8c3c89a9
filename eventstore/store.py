"""The permanent event store: appends with optimistic concurrency, stream and log reads.

Global order. Every event gets an integer ``position``, and a reader that tails the log
with :meth:`EventStore.read_log` never skips one.

On PostgreSQL a sequence value is taken at insert time but becomes visible at commit
time: writer A takes 10, writer B takes 11 and commits first, and a naive reader sees 11,
moves past 10, and never sees it. facta lets writers commit concurrently and makes the
reader wait instead. Every append holds a shared advisory lock, the writer marker, from
before it takes positions until it ends. ``read_log`` only returns positions up to a
*settled horizon*: it reads ``max(position)`` = M, lists the transactions holding the
marker at that moment, waits until exactly those have ended, and then reads with a new
snapshot. Any position below M was taken before M's writer took M (a sequence only goes
up), so its writer held the marker before M committed: it had ended by the time the
marker was listed, or it was listed and waited for. Either way it is committed (and
visible to the new snapshot) or rolled back (a gap that can never fill). The wait is
bounded by the appends in flight at that moment; nothing else holds the marker.

On SQLite, writers queue for the file's write lock with ``BEGIN IMMEDIATE``, so positions
are taken and made visible in one order and no horizon is needed.

ARCHITECTURE.md explains the choice; tests/eventstore/test_log_torture.py (a torture
test with 8 writer processes and a deterministic in-flight-writer test) proves it.

:class:`EventStore` is a facade over three parts: its dialect's appender
(:mod:`._appenders`: the append hot path, finding stored events, writing snapshots), its
dialect's log reader (:mod:`._readers`: the settled horizon above on PostgreSQL, plain
reads on SQLite) and the one row decoder (:func:`._rows.records_from_rows`). It picks the
appender and the reader once, when it is made; what is left here is dialect-free: the
checks before any I/O, telling a retry from a conflict, and the Core queries of streams,
snapshots and :meth:`EventStore.find_events`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Select, bindparam, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from facta import metrics, migrations, tracing
from facta.domain import DomainEvent, EventRegistry, EventRegistryError, PendingEvent, default_registry
from facta.errors import (
    ConcurrencyError,
    DatabaseURLError,
    DuplicateEventError,
    InvalidValue,
    SchemaNotReady,
    StoreError,
)
from facta.errors import StreamTypeMismatch as _StreamTypeMismatch

from . import _blocks as blocks
from . import _bytes
from ._appenders import Appender, AppendPlan, LostRace, PostgresAppender, Rejected, SQLiteAppender
from ._loads import LAST_VERSION, PostgresStreamReader, SQLiteStreamReader, StreamReader
from ._readers import LogReader, PostgresLogReader, SQLiteLogReader
from ._rows import decode_records, records_from_rows, stored_time
from .database import Database, database_url_from_env
from .personal_data import KeyStore, Shredder, SqlKeyStore, check_key_store, key_store_from_settings
from .records import AppendResult, ByteEvent, RecordedEvent, Snapshot, StreamAppend, pending_events
from .schema import events
from .validation import (
    check_append,
    check_bool_arg,
    check_append_args,
    check_event_id,
    check_limit,
    check_position,
    check_seconds_arg,
    check_snapshot,
    check_text,
    check_texts,
    check_time_arg,
    check_version,
    encode_event,
    nothing_to_append,
)

__all__ = ["EventStore"]

T = TypeVar("T")

# wait_for_append polls the database for other processes' appends: first after this long,
# doubling up to _WAIT_POLL_MAX_S (an append of this store object wakes it at once).
_WAIT_POLL_S = 0.002
_WAIT_POLL_MAX_S = 0.1

# An append without an expected version that loses the race for a stream's next version
# (another writer took it between facta_append's head read and its insert) tries again
# after a short random pause, for up to this long: every lost race means another append
# committed, so a hot stream keeps moving, and the pause spreads the losers apart.
_LOST_RACE_BUDGET = 10.0
_LOST_RACE_PAUSE = 0.002  # doubled per attempt, up to _LOST_RACE_PAUSE_MAX, then jittered
_LOST_RACE_PAUSE_MAX = 0.1


class EventStore:
    """An asyncio event store on SQLAlchemy 2 (SQLite via aiosqlite, PostgreSQL via asyncpg).

    Open one with :meth:`open` (it checks the schema is migrated), use it as an async
    context manager or call :meth:`close`.

    Attributes: ``database`` (:class:`Database`), ``registry`` (decodes payloads),
    ``key_store`` (the :class:`~facta.eventstore.personal_data.KeyStore` of personal data;
    default: :class:`~facta.eventstore.personal_data.SqlKeyStore` on ``database``) and
    ``block_summaries`` (:class:`facta.eventstore._blocks.Summaries`: which log blocks
    this store object knows are summarised for time windows).
    """

    def __init__(self, database: Database, registry: EventRegistry = default_registry,
                 key_store: KeyStore | None = None) -> None:
        self.database = database
        self.registry = registry
        self.key_store: KeyStore = SqlKeyStore(database) if key_store is None else check_key_store(key_store)
        from facta.settings import settings  # not at import: pydantic-settings loads with the first store

        self._shredder = Shredder(self.key_store, settings().key_cache_s)
        # The one place the dialect is asked: the appender and the log reader to use.
        self._appender: Appender
        self._reader: LogReader
        self._streams: StreamReader
        if database.dialect == "postgresql":
            self._appender, self._reader = PostgresAppender(database), PostgresLogReader(database)
            self._streams = PostgresStreamReader(database)
        else:
            self._appender, self._reader = SQLiteAppender(database), SQLiteLogReader(database)
            self._streams = SQLiteStreamReader(database)
        self.block_summaries = blocks.Summaries()
        # Waiters of wait_for_append, woken by every append of this store object.
        self._append_waiters: set[asyncio.Future[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        registry: EventRegistry = default_registry,
        migrate: bool = False,
        check_schema: bool = True,
        key_store: KeyStore | None = None,
        **engine_options: Any,
    ) -> EventStore:
        """Connect to ``url`` (default: ``FACTA_DATABASE_URL`` or the embedded SQLite file).

        ``migrate=True`` first brings the schema to the newest revision (what
        ``facta db upgrade`` does); otherwise an unmigrated database is an error. An empty
        ``url`` (``""``) is a :class:`DatabaseURLError`, and ``migrate`` or
        ``check_schema`` other than a bool an :class:`InvalidValue`, before connecting.
        ``key_store``: where the data keys of personal data live (None: what
        ``FACTA_KEY_STORE`` names, else the table ``facta_subject_keys`` of this
        database, see :func:`~facta.eventstore.personal_data.key_store_from_settings`,
        whose :class:`~facta.errors.InvalidSetting` it raises); anything that is not a
        :class:`~facta.eventstore.personal_data.KeyStore` is an :class:`InvalidValue`.
        """
        if isinstance(url, str) and not url.strip():
            raise DatabaseURLError(f"database URL {url!r} is empty: give one, or None for FACTA_DATABASE_URL or"
                                   " ./facta.db")
        check_bool_arg("migrate", migrate)
        check_bool_arg("check_schema", check_schema)
        if key_store is not None:
            check_key_store(key_store)
        database = Database.create(url or database_url_from_env(), **engine_options)
        try:
            keys = key_store if key_store is not None else key_store_from_settings(database)
        except BaseException:
            await database.dispose()
            raise
        store = cls(database, registry, keys)
        if migrate or check_schema:
            try:
                if migrate:
                    await migrations.upgrade(store.database)
                await store.check_schema()
            except BaseException:
                await store.close()
                raise
        return store

    async def check_schema(self) -> None:
        """Raise :class:`SchemaNotReady` unless the database is at facta's newest revision
        (:class:`~facta.eventstore.errors.UnknownSchemaRevision` when it is at one this facta
        does not know)."""
        revision = await migrations.known_current(self.database)
        where = self.database.url.render_as_string(hide_password=True)
        if revision is None:
            raise SchemaNotReady(f"{where} has no facta schema: run `facta db upgrade`")
        if revision != migrations.head():
            raise SchemaNotReady(
                f"{where} is at schema revision {revision}, this facta needs {migrations.head()}: run `facta db upgrade`"
            )

    async def close(self) -> None:
        self._streams.close()
        await self.database.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- appends --------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        stream_type: str,
        events: Sequence[DomainEvent | PendingEvent],
        *,
        expected_version: int | None,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> AppendResult:
        """Append ``events`` to one stream if it is at ``expected_version`` (0: new stream,
        None: any). Raises :class:`ConcurrencyError` and writes nothing on a conflict, and
        :class:`InvalidValue` before any I/O for wrong types (``events`` not a list or
        tuple of events, a bool or float expected version) or a list with no events."""
        check_append_args(stream_id, stream_type, events, expected_version)
        (result,) = await self.append_many(
            [StreamAppend(stream_id, stream_type, events, expected_version)],
            actor=actor,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        return result

    async def append_many(
        self,
        appends: Sequence[StreamAppend],
        *,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        snapshots: Sequence[Snapshot] = (),
    ) -> list[AppendResult]:
        """Append to several streams in one transaction: all of it is written, or none.

        Snapshots given here are written in the same transaction. Every row of the
        append gets one ``recorded_at`` (the results' ``recorded_at``). Repeating an
        append whose events are all stored already, as this append would store them (a
        retry), writes nothing and returns the original positions.

        Raises, writing nothing: :class:`ConcurrencyError` (a stream is not at its
        expected version), :class:`StreamTypeMismatch`, :class:`DuplicateEventError` (an
        event id is stored already and this is not an identical retry: the message names
        what differs), :class:`StoreError` before any I/O for a malformed append (one
        event id given twice, a stream named twice, no events), and on SQLite
        :class:`~facta.eventstore.errors.DatabaseBusy` when another connection holds the
        write lock past the busy timeout.

        ``appends`` (and each one's events, and ``snapshots``) may be any list or tuple.
        An empty ``appends`` returns ``[]`` and does no I/O; with snapshots it is refused
        (:meth:`save_snapshot` writes snapshots alone). Wrong types raise
        :class:`InvalidValue` before any I/O, naming the argument.
        """
        if nothing_to_append(appends, snapshots):
            return []
        started = metrics.clock()
        now = datetime.now(UTC)
        batch = [(a, pending_events(a.events, now)) for a in appends]
        snapshots = check_append(batch, actor, correlation_id, causation_id, snapshots)
        _validate(batch)
        plain = [[encode_event(p.event) for p in pending] for _, pending in batch]
        payloads, keys = await self._shredder.seal(batch, plain)
        # One database span per append call (facta.tracing: none without an SDK); its
        # context, or the current one, is the trace context every event records.
        with tracing.db_span(tracing.tracer(), "append", self.database.dialect,
                             sum(len(pending) for _, pending in batch)) as span:
            traceparent, tracestate = tracing.trace_fields(span)
            plan = AppendPlan(
                streams=[a for a, _ in batch],
                pending=[pending for _, pending in batch],
                payloads=payloads,
                actor=actor,
                correlation_id=correlation_id,
                causation_id=causation_id,
                snapshots=snapshots,
                traceparent=traceparent,
                tracestate=tracestate,
            )
            return await self._run_append(batch, plan, keys, plain, started)

    async def _run_append(self, batch: list[tuple[StreamAppend, list[PendingEvent]]], plan: AppendPlan, keys: Any,
                          plain: Sequence[Sequence[str]], started: float) -> list[AppendResult]:
        """Run ``plan``: its results, the original results of an identical earlier append
        (a retry), or the conflict error; lost races are tried again (with a pause)."""
        deadline = time.monotonic() + _LOST_RACE_BUDGET
        attempts = 0
        while True:
            attempts += 1
            try:
                results = await self._appender.append(plan)
                if self._append_waiters:
                    self._wake()
                metrics.appended(plan.streams, started)
                return results
            except Rejected as rejected:
                # Nothing was written. An identical earlier append explains it (a retry);
                # otherwise a stream has another type or moved on.
                retried = await self.database.read(self._original_results, batch, plan.payloads, keys, plain)
                if retried is not None:
                    return retried
                _check_types(batch, rejected.heads)
                raise _conflict(batch, rejected.heads) from None
            except LostRace:
                # A concurrent writer won a version or an event id between our check and
                # our insert; find out which case this is.
                settled = await self.database.read(self._settle_tx, batch, plan.payloads, keys, plain)
                if settled is not None:
                    return settled
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"append to {[a.stream_id for a, _ in batch]} lost {attempts} races in a row"
                        f" over {_LOST_RACE_BUDGET:g} s"
                    ) from None
                pause = min(_LOST_RACE_PAUSE * 2 ** min(attempts - 1, 10), _LOST_RACE_PAUSE_MAX)
                await asyncio.sleep(pause * random.random())

    def _settle_tx(
        self, conn: Connection, batch: list[tuple[StreamAppend, list[PendingEvent]]], payloads: Sequence[Sequence[str]],
        keys: Any = None, plain: Sequence[Sequence[str]] = (),
    ) -> list[AppendResult] | None:
        """After a lost race: the original results (a retry), a conflict error, or None to try again."""
        retried = self._original_results(conn, batch, payloads, keys, plain)
        if retried is not None:
            return retried
        current = self._stream_heads(conn, [a.stream_id for a, _ in batch])
        if _conflicting(batch, current):
            raise _conflict(batch, current)
        return None

    def _original_results(
        self, conn: Connection, batch: list[tuple[StreamAppend, list[PendingEvent]]], payloads: Sequence[Sequence[str]],
        keys: Any = None, plain: Sequence[Sequence[str]] = (),
    ) -> list[AppendResult] | None:
        """If every event of the batch is stored already, as this batch, return where.

        None when none of its event ids is stored. Raises :class:`DuplicateEventError`
        when some are stored but the batch is not an identical retry: an event stored in
        another stream, at another version (when the append names one), with another
        stream type, event type, schema version or payload (compared as stored: the exact
        JSON text on SQLite, the JSONB value's text on PostgreSQL), or only some events
        stored. The events' occurred-at times and the append's metadata are not compared.
        An event with personal data (``keys``: the append's keys) is sealed with a fresh
        nonce each time, so its stored payload is opened with ``keys`` and compared, as
        JSON values, with its ``plain`` payload.
        """
        ids = [p.event_id for _, pending in batch for p in pending]
        texts = [t for encoded in payloads for t in encoded]
        found = self._appender.stored(conn, ids, texts)
        if not found:
            return None
        if keys is not None:
            self._same_personal_payloads(conn, batch, found, keys, plain)
        results = []
        for append, pending in batch:
            rows_of = [found.get(p.event_id) for p in pending]
            start = append.expected_version + 1 if append.expected_version is not None else None
            for offset, (p, row) in enumerate(zip(pending, rows_of, strict=True)):
                differs = _retry_difference(append, p, offset, row, rows_of[0], start)
                if differs:
                    known = row or rows_of[0] or next(iter(found.values()))
                    raise DuplicateEventError(known.event_id, known.stream_id, known.version, known.position, differs)
            first = rows_of[0]
            assert first is not None
            results.append(
                AppendResult(append.stream_id, tuple(r.position for r in rows_of if r is not None), first.version,
                             first.version + len(rows_of) - 1, first.recorded_at)
            )
        return results

    def _same_personal_payloads(self, conn: Connection, batch: list[tuple[StreamAppend, list[PendingEvent]]],
                                found: dict[uuid.UUID, Any], keys: Any, plain: Sequence[Sequence[str]]) -> None:
        """Set ``same_payload`` of the found events with personal data by their opened payloads."""
        ours = {p.event_id: (p, text, a.stream_id) for (a, pending), texts in zip(batch, plain, strict=True)
                for p, text in zip(pending, texts, strict=True)
                if p.event_id in found and type(p.event).__personal_data__ and not found[p.event_id].same_payload}
        if not ours:
            return
        rows = conn.execute(select(events.c.event_id, events.c.payload).where(events.c.event_id.in_(list(ours))))
        for event_id, payload in rows:
            p, text, stream_id = ours[event_id]
            stored = payload if isinstance(payload, str) else json.dumps(payload)
            opened = self._shredder.reveal_with(keys, event_id, type(p.event), stored, stream_id)
            found[event_id].same_payload = json.loads(opened) == json.loads(text)

    @staticmethod
    def _stream_heads(conn: Connection, stream_ids: list[str]) -> dict[str, tuple[str, int]]:
        """(stream type, version) of each stream in ``stream_ids`` that has events: one
        index descent per stream."""
        heads: dict[str, tuple[str, int]] = {}
        for stream_id in stream_ids:
            row = conn.execute(_HEAD_OF_ONE, {"stream_id": stream_id}).first()
            if row is not None:
                heads[stream_id] = (row[1], row[2])
        return heads

    # -- reads ----------------------------------------------------------------------------

    async def _records(self, rows: Sequence[Sequence[Any]]) -> list[RecordedEvent]:
        """The records of ``rows``, their personal data opened (or erased)."""
        return await self._shredder.reveal(records_from_rows(rows, self.registry))

    async def find_events(
        self,
        *where: ColumnElement[bool],
        order_by: ColumnElement[Any] | Sequence[ColumnElement[Any]] = (),
        limit: int | None = None,
        ranges: Sequence[tuple[int, int]] | None = None,
        settled: bool = False,
    ) -> list[RecordedEvent]:
        """The events of ``facta_events`` that meet every condition in ``where`` (SQLAlchemy
        expressions on the columns of :data:`facta.eventstore.schema.events`, e.g.
        ``events.c.actor == "ops"``), in the order ``order_by`` gives (column expressions;
        none: the database's), at most ``limit`` of them.

        ``ranges``: inclusive position ranges ``(first, last)``, read one after another in
        the order given (each sorted by ``order_by``) until ``limit`` events are found, all
        in one read transaction; None: the whole log in one statement. ``settled=True``
        shows no event that a reader tailing the log could still miss (on PostgreSQL only
        positions up to the settled horizon, see :meth:`head_position`; on SQLite every
        committed event).

        This is the store's one general query (the audit queries use it); a filter is as
        fast as the index that serves it. Raises :class:`InvalidValue` (before any I/O)
        for a limit below 1 or a range bound that is no position (an int within int64).
        """
        check_limit("limit", limit, optional=True)
        for first, last in ranges or ():
            check_position("ranges", first)
            check_position("ranges", last)
        query = select(*self._reader.columns).where(*where)
        if settled:
            bound = await self._reader.bound()
            if bound is not None:
                query = query.where(events.c.position <= bound)
        query = query.order_by(*([order_by] if isinstance(order_by, ColumnElement) else order_by))
        rows = await self.database.read(_find, query, limit, ranges)
        return await self._records(rows)

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with ``from_version <= version <= to_version``, in version
        order (or reverse order with ``backwards``), at most ``limit`` of them.

        Raises :class:`InvalidValue` (before any I/O) for a stream id facta cannot store,
        a version outside int32 or a limit below 1."""
        check_text("stream id", stream_id)
        check_version("from_version", from_version)
        check_version("to_version", to_version, optional=True)
        check_limit("limit", limit, optional=True)
        last = LAST_VERSION if to_version is None else to_version
        return await self._records(await self._streams.stream(stream_id, from_version, last, backwards, limit))

    async def read_from_snapshot(
        self, stream_id: str, *, state_schema: str, to_version: int | None = None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """What a load of an aggregate reads, in one read: the stream's newest snapshot
        at or below ``to_version`` (None when it has none), and the stream's events up to
        ``to_version`` in version order, from that snapshot's own version when the
        snapshot was written for ``state_schema`` (``<stream type>.state/v<n>``), else
        from version 1. The snapshot is not checked here: a load decides whether it is
        usable (:meth:`facta.eventstore.Repository.get`).

        Raises :class:`InvalidValue` (before any I/O) for a stream id or state schema
        facta cannot store, or a version outside int32."""
        check_text("stream id", stream_id)
        check_text("state schema", state_schema)
        check_version("to_version", to_version, optional=True)
        last = LAST_VERSION if to_version is None else to_version
        snapshot, rows = await self._streams.from_snapshot(stream_id, last, state_schema)
        return _snapshot(snapshot), await self._records(rows)

    async def read_log(
        self,
        after: int = 0,
        limit: int = 1000,
        *,
        event_types: Sequence[str] | None = None,
        stream_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``limit`` events of the global log with position > ``after``, in order,
        optionally only those of some event types or stream types.

        Tailing the log with this never skips an event: a later call returns nothing
        that sorts before what an earlier call returned. Raises :class:`InvalidValue`
        for a position outside int64, a limit below 1 or a type name facta cannot store.
        """
        check_position("after", after)
        check_limit("limit", limit)
        check_texts("event_types", event_types)
        check_texts("stream_types", stream_types)
        chosen = tracing.tracer()
        if chosen is None:
            return await self._records(await self._reader.read(after, limit, event_types, stream_types))
        with tracing.db_span(chosen, "read_log", self.database.dialect, 0) as span:
            rows = await self._reader.read(after, limit, event_types, stream_types)
            tracing.set_batch_size(span, len(rows))
        return await self._records(rows)

    async def read_log_window(
        self, after: int = 0, limit: int = 1000, *, event_types: Sequence[str] | None = None
    ) -> tuple[list[RecordedEvent], int]:
        """Like :meth:`read_log`, and also how far the read looked: every event of the
        given types with ``after < position <= covered`` is in the list. A consumer that
        handles only some types moves its checkpoint to ``covered``, past the rest."""
        check_position("after", after)
        check_limit("limit", limit)
        check_texts("event_types", event_types)
        chosen = tracing.tracer()
        if chosen is None:
            rows, covered = await self._reader.window(after, limit, event_types)
        else:  # a poll: a span only when it read or passed over events (tracing.poll_span)
            started = time.time_ns()
            rows, covered = await self._reader.window(after, limit, event_types)
            if rows or covered > after:
                tracing.poll_span(chosen, "read_log", self.database.dialect, started, len(rows))
        return await self._records(rows), covered

    async def first_position_at(self, when: datetime) -> int:
        """The position just before the first event recorded at or after ``when`` (the
        store's head when there is none): a replay "from a time" reads the log after it.

        recorded_at is not in position order: concurrent appends interleave by their
        overlap, and a writer whose clock stepped back records an earlier time at a later
        position, by any amount. So this is exact, never estimated from a margin: the
        smallest position with ``recorded_at >= when``: the first event recorded since
        in the log blocks that can hold one (:mod:`facta.eventstore._blocks`: a summarised
        block whose latest time is before ``when`` is skipped), or, where a long stretch
        has no summaries, on the (recorded_at, position) index. Later positions can still hold events recorded before ``when``;
        a replay from a time passes over those (see :mod:`facta.projections.replay`).
        On PostgreSQL it looks only up to the settled horizon, which it returns when no
        event there was recorded at or after ``when``: every event at or below it is
        committed, so none recorded later can appear before the position returned.

        Raises :class:`InvalidValue` for a naive ``when`` or one that is not a datetime.
        """
        check_time_arg("when", when)
        if when.tzinfo is None:
            raise InvalidValue(f"naive datetime {when.isoformat()} given: use an aware time")
        upto = await self.head_position()
        ranges = await blocks.window_ranges(self, when, None, 0, upto + 1)
        first = await self.database.read(_first_recorded_since, when, ranges)
        return upto if first is None else first - 1

    async def read_log_rows(self, after: int = 0, limit: int = 1000) -> list[Sequence[Any]]:
        """Like :meth:`read_log` (same order, same settled horizon, never skips an event),
        but the rows as the database driver returns them, for hot paths that build their
        own output (the relay). Columns in :class:`RecordedEvent`'s field order, the payload
        as JSON text. On SQLite ``event_id`` is 32 hex digits and the two times are naive
        UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``); on PostgreSQL ``event_id`` is a UUID and
        the times are aware datetimes."""
        check_position("after", after)
        check_limit("limit", limit)
        chosen = tracing.tracer()
        if chosen is None:
            return await self._reader.rows(after, limit)
        started = time.time_ns()  # a poll: a span only when it read events (tracing.poll_span)
        rows = await self._reader.rows(after, limit)
        if rows:
            tracing.poll_span(chosen, "read_log", self.database.dialect, started, len(rows))
        return rows

    async def iter_log(
        self,
        after: int = 0,
        *,
        page_size: int = 1000,
        until: int | None = None,
        event_types: Sequence[str] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Every event after ``after`` (up to position ``until``), read in pages of
        ``page_size`` (at least 1), each page's events decoded as it arrives (the
        collector paused, see :func:`._rows.decode_records`; an event that does not
        decode raises at its ``.event``). Raises :class:`InvalidValue` for a bad argument."""
        check_position("after", after)
        check_limit("page_size", page_size)
        check_position("until", until, optional=True)
        check_texts("event_types", event_types)
        while True:
            page = await self.read_log(after, page_size, event_types=event_types)
            decode_records(page)
            for record in page:
                if until is not None and record.position > until:
                    return
                yield record
            if len(page) < page_size:
                return
            after = page[-1].position

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it has no events."""
        check_text("stream id", stream_id)
        head = await self.database.read(self._stream_heads, [stream_id])
        return head.get(stream_id, ("", 0))[1]

    async def stream_type(self, stream_id: str) -> str | None:
        """The type of the stream's aggregate, or None when the stream has no events."""
        check_text("stream id", stream_id)
        head = await self.database.read(self._stream_heads, [stream_id])
        return head[stream_id][0] if stream_id in head else None

    async def head_position(self) -> int:
        """The highest position a reader can read up to now; 0 when the log is empty. On
        PostgreSQL this is the settled horizon: it first waits for the appends in flight."""
        return await self._reader.head()

    async def get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        """The event with this id, or None."""
        check_event_id(event_id)
        found = await self.find_events(events.c.event_id == event_id)
        return found[0] if found else None

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot (a cache: one at the same stream version is kept as it is).
        Raises :class:`InvalidValue` for a snapshot facta cannot store exactly."""
        await self.database.write(self._appender.insert_snapshots, [check_snapshot(snapshot)])

    async def latest_snapshot(self, stream_id: str, *, max_version: int | None = None) -> Snapshot | None:
        """The newest snapshot of a stream, or the newest at or below ``max_version``."""
        check_text("stream id", stream_id)
        check_version("max_version", max_version, optional=True)
        last = LAST_VERSION if max_version is None else max_version
        return _snapshot(await self._streams.snapshot(stream_id, last))

    # -- byte events, byte snapshots and tracking (another library's records) ----------------
    #
    # See facta.eventstore._bytes: the payload column rule, the SQL, the costs.

    async def append_bytes(
        self, stream_type: str, events: Sequence[ByteEvent], *, tracking: tuple[str, int] | None = None
    ) -> list[int]:
        """Append byte events (:class:`ByteEvent`, written by another library and stored
        exactly) and, if given, the tracking record ``(name, position)``, in one
        transaction. Returns the events' positions, in the order given: contiguous, one
        range per call. The events' own ``position`` is ignored.

        There is no expected-version check: the unique (stream id, version) key decides.
        Raises, writing nothing: :class:`~facta.errors.RecordConflict` when a (stream id,
        version) is stored already or given twice, or the tracking position is not above
        the stored one; :class:`~facta.errors.StreamTypeMismatch` when a stream holds
        events of another stream type; :class:`InvalidValue` (before any I/O) for a text
        facta cannot store, a version outside int32 or a payload that is not ``bytes``.
        No events and no tracking: ``[]``, no I/O; no events with tracking: only the
        tracking record."""
        items = _bytes.check_byte_events(stream_type, events)
        track = _bytes.check_tracking(tracking)
        if not items and track is None:
            return []
        started = metrics.clock()
        with tracing.db_span(tracing.tracer(), "append_bytes", self.database.dialect, len(items)) as span:
            context = tracing.trace_fields(span)
            if self.database.dialect == "postgresql":
                async with self.database.driver_connection() as conn:
                    positions, _ = await _bytes.append_bytes_postgres(conn, stream_type, items, track, context)
            else:
                positions, _ = await self.database.sqlite_write(_bytes.append_bytes_sqlite, stream_type, items, track,
                                                                context)
        if self._append_waiters and positions:
            self._wake()
        metrics.appended_bytes(stream_type, len(positions), started)
        return positions

    async def read_byte_stream(
        self, stream_id: str, *, gt: int | None = None, lte: int | None = None, desc: bool = False,
        limit: int | None = None, stream_type: str | None = None,
    ) -> list[ByteEvent]:
        """A stream's events as :class:`ByteEvent` (with their positions), in version
        order (``desc``: newest first), versions > ``gt`` and <= ``lte``, at most
        ``limit``; with ``stream_type``, nothing when the stream is of another type (an
        application reads only its own streams). The payload is the stored bytes; a facta
        event's is its payload's JSON text encoded UTF-8. Raises :class:`InvalidValue` for
        a bad argument."""
        return _bytes.byte_events(
            await self._byte_fetch(_bytes.stream_sql, stream_id, gt, lte, desc, limit, stream_type))

    async def read_byte_log(
        self, stream_type: str | None, *, after: int, limit: int, stop: int | None = None,
        event_types: Sequence[str] = (),
    ) -> list[ByteEvent]:
        """Up to ``limit`` events of the log with ``after < position <= stop`` (no upper
        bound when ``stop`` is None), in position order, as :class:`ByteEvent`; only those
        of ``stream_type`` (None: every stream type) and, when given, of ``event_types``.

        On PostgreSQL it reads only up to the settled horizon, as :meth:`read_log` does,
        so a follower paging with it never skips an event. Raises :class:`InvalidValue`
        for a bad argument."""
        check_text("stream type", stream_type, optional=True)
        check_position("after", after)
        check_limit("limit", limit)
        check_position("stop", stop, optional=True)
        check_texts("event_types", event_types)
        types = list(event_types)
        postgres = self.database.dialect == "postgresql"
        sql = _bytes.log_sql(postgres, stream_type is not None, len(types))
        if not postgres:
            args = [after, stop if stop is not None else _bytes_max_position(), *(() if stream_type is None else (stream_type,)),
                    *types, limit]
            return _bytes.byte_events(await self.database.read(_bytes.sqlite_fetch, sql, args))
        extra: list[Any] = [*(() if stream_type is None else (stream_type,)), *((types,) if types else ())]

        async def fetch(start: int, upto: int, n: int) -> list[Any]:
            if stop is not None:
                upto = min(upto, stop)
            if upto <= start:
                return []
            async with self.database.driver_connection() as conn:
                return list(await conn.fetch(sql, start, upto, n, *extra))

        reader = self._reader
        assert isinstance(reader, PostgresLogReader)
        if stop is not None and stop <= reader.horizon:  # settled already: no wait
            return _bytes.byte_events(await fetch(after, stop, limit))
        rows, _ = await reader._settled(after, limit, fetch, None)
        return _bytes.byte_events(rows)

    async def last_byte_position(self, stream_type: str | None) -> int | None:
        """The highest position of an event of ``stream_type`` (None: of any), or None
        when there is none; on PostgreSQL the highest at or below the settled horizon
        (it first waits for the appends in flight, as :meth:`head_position`)."""
        check_text("stream type", stream_type, optional=True)
        upto = await self._reader.head()
        if stream_type is None or upto == 0:
            return upto or None
        if self.database.dialect == "postgresql":
            async with self.database.driver_connection() as conn:
                found = await conn.fetchval(_PG_LAST_OF_TYPE, stream_type, upto)
        else:
            found = (await self.database.read(_bytes.sqlite_fetch, _SQLITE_LAST_OF_TYPE, [stream_type]))[0][0]
        return None if found is None else int(found)

    async def wait_for_append(self, after: int, timeout_s: float) -> None:
        """Return once an event past position ``after`` may be stored, or after
        ``timeout_s`` seconds (raising nothing either way). An append of this store
        object wakes it at once; appends of other store objects and processes are seen
        by polling the log's head, every 2 ms at first, doubling up to every 100 ms.
        Raises :class:`InvalidValue` for a bad argument."""
        check_position("after", after)
        check_seconds_arg("timeout_s", timeout_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause = _WAIT_POLL_S
        while True:
            # The waiter is registered before the head is read: an append committed after
            # that read (on the store or on another connection of this process, which
            # calls wake_append_waiters after its commit) finds it and wakes it.
            waiter: asyncio.Future[None] = loop.create_future()
            self._append_waiters.add(waiter)
            try:
                if await self._latest_position() > after:
                    return
                left = deadline - loop.time()
                if left <= 0:
                    return
                await asyncio.wait_for(asyncio.shield(waiter), min(pause, left))
                return
            except TimeoutError:
                pause = min(pause * 2, _WAIT_POLL_MAX_S)
            finally:
                self._append_waiters.discard(waiter)

    async def _latest_position(self) -> int:
        """The log's highest committed position now (not waiting for the horizon)."""
        if self.database.dialect == "postgresql":
            async with self.database.driver_connection() as conn:
                return int(await conn.fetchval(_PG_LATEST))
        return int((await self.database.read(_bytes.sqlite_fetch, _SQLITE_LATEST, []))[0][0])

    @property
    def shredder(self) -> Shredder:
        """The store's personal-data sealer and opener (:mod:`facta.eventstore.personal_data`),
        which the repository, the Kafka source and ``forget_subject`` use with this store's
        key store and key cache."""
        return self._shredder

    @property
    def append_waited_for(self) -> bool:
        """True while a :meth:`wait_for_append` call of this store object is waiting."""
        return bool(self._append_waiters)

    def wake_append_waiters(self) -> None:
        """Wake every :meth:`wait_for_append` of this store at once, for an append made on
        another connection of this process (``facta.eventsourcing``'s direct SQLite
        writers). Call it on the store's loop, after the append's commit."""
        if self._append_waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._append_waiters = self._append_waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def append_byte_snapshots(self, stream_type: str, snapshots: Sequence[ByteEvent]) -> None:
        """Store byte snapshots (:class:`ByteEvent`: ``event_type`` is the snapshot's
        type, kept as its ``state_schema``; ``payload`` its exact bytes) in one
        transaction. Raises :class:`~facta.errors.RecordConflict` when a snapshot at
        that (stream id, version) is stored already or given twice, writing nothing, and
        :class:`InvalidValue` before any I/O for a bad value."""
        items = _bytes.check_byte_events(stream_type, snapshots, "snapshots")
        if not items:
            return
        if self.database.dialect == "postgresql":
            async with self.database.driver_connection() as conn:
                await _bytes.insert_byte_snapshots_postgres(conn, stream_type, items)
        else:
            await self.database.sqlite_write(_bytes.insert_byte_snapshots_sqlite, stream_type, items)

    async def read_byte_snapshots(
        self, stream_id: str, *, gt: int | None = None, lte: int | None = None, desc: bool = False,
        limit: int | None = None, stream_type: str | None = None,
    ) -> list[ByteEvent]:
        """A stream's snapshots as :class:`ByteEvent` (``event_type``: the snapshot's
        ``state_schema``; ``payload``: its exact bytes, or a facta snapshot's state as
        JSON text encoded UTF-8; ``position`` 0), in version order (``desc``: newest
        first), versions > ``gt`` and <= ``lte``, at most ``limit``; with ``stream_type``,
        only snapshots stored with that stream type."""
        rows = await self._byte_fetch(_bytes.snapshot_sql, stream_id, gt, lte, desc, limit, stream_type)
        return [ByteEvent(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    async def record_tracking(
        self, name: str, position: int, *, with_: Callable[[Connection], T] | None = None
    ) -> T | None:
        """Record that the consumer ``name`` has processed the log up to ``position``
        (a tracking record: one row per name, which only moves up). ``with_``, if given,
        is a synchronous function of a SQLAlchemy :class:`~sqlalchemy.engine.Connection`
        run in the same transaction after the record is written (PostgreSQL: through
        ``AsyncConnection.run_sync``; SQLite: on the writer thread), e.g. a read model's
        update: both are committed or neither. Returns its result (None without it).

        Raises :class:`~facta.errors.RecordConflict` when ``position`` is not above the
        stored one (``with_`` is not run, nothing is written); an error of ``with_``
        rolls the record back too. :class:`InvalidValue` for a bad argument."""
        check_text("tracking name", name)
        check_position("tracking position", position)
        if with_ is not None and not callable(with_):
            raise InvalidValue(f"with_ must be a function of a Connection or None, got {type(with_).__name__}")
        if with_ is None and self.database.dialect == "sqlite":  # the byte append's step, on its connection
            await self.database.sqlite_write(_bytes.record_tracking_sqlite, name, position)
            return None
        return await self.database.write(_tracking_then, name, position, with_)

    async def tracking_position(self, name: str) -> int | None:
        """The tracking record's position for ``name``, or None when there is none."""
        check_text("tracking name", name)
        return await self.database.read(_bytes.tracking_position_tx, name)

    async def _byte_fetch(self, statement: Callable[[bool, bool, bool, bool, bool, bool], str], stream_id: str,
                          gt: int | None, lte: int | None, desc: bool, limit: int | None,
                          stream_type: str | None) -> list[Any]:
        """The rows of a stream's byte events or snapshots (``statement``: which, for
        these bounds), the arguments checked first."""
        check_text("stream id", stream_id)
        check_text("stream type", stream_type, optional=True)
        check_version("gt", gt, optional=True)
        check_version("lte", lte, optional=True)
        check_bool_arg("desc", desc)
        check_limit("limit", limit, optional=True)
        args = [stream_id, *(v for v in (stream_type, gt, lte, limit) if v is not None)]
        postgres = self.database.dialect == "postgresql"
        sql = statement(postgres, stream_type is not None, gt is not None, lte is not None, desc, limit is not None)
        if postgres:
            async with self.database.driver_connection() as conn:
                return list(await conn.fetch(sql, *args))
        return await self.database.read(_bytes.sqlite_fetch, sql, args)


# Built once: statement construction costs more than executing these small queries. The
# head is the stream's newest row, one descent of the (stream_id, version) unique index on
# both dialects (an aggregate such as max(version) beside min(stream_type) reads every row
# of the stream); every row of a stream has its type, as appends refuse another.
_HEAD_OF_ONE = (
    select(events.c.stream_id, events.c.stream_type, events.c.version)
    .where(events.c.stream_id == bindparam("stream_id"))
    .order_by(events.c.version.desc())
    .limit(1)
)


_PG_LAST_OF_TYPE = "SELECT max(position) FROM facta_events WHERE stream_type = $1 AND position <= $2"
_SQLITE_LAST_OF_TYPE = "SELECT max(position) FROM facta_events WHERE stream_type = ?"
_PG_LATEST = "SELECT coalesce(max(position), 0) FROM facta_events"
_SQLITE_LATEST = _PG_LATEST


def _bytes_max_position() -> int:
    return 2**63 - 1


def _tracking_then(conn: Connection, name: str, position: int, with_: Callable[[Connection], T] | None) -> T | None:
    _bytes.record_tracking_tx(conn, name, position)
    return None if with_ is None else with_(conn)


def _find(
    conn: Connection, query: Select[Any], limit: int | None, ranges: Sequence[tuple[int, int]] | None
) -> list[Sequence[Any]]:
    """Up to ``limit`` rows of ``query``, or of its rows in each of the inclusive position
    ``ranges`` in turn (see :meth:`EventStore.find_events`)."""
    if ranges is None:
        return list(conn.execute(query if limit is None else query.limit(limit)).all())
    rows: list[Sequence[Any]] = []
    for first, last in ranges:
        if limit is not None and len(rows) >= limit:
            break
        part = query.where(events.c.position >= first, events.c.position <= last)
        rows += conn.execute(part if limit is None else part.limit(limit - len(rows))).all()
    return rows


def _snapshot(row: Sequence[Any] | None) -> Snapshot | None:
    """A snapshot row of the stream reader (:data:`._loads.SNAPSHOT_COLUMNS`) as a
    :class:`Snapshot`; its ``recorded_at`` as an aware UTC datetime on both dialects."""
    if row is None:
        return None
    stream_id, stream_type, version, state, state_schema, recorded_at = row
    return Snapshot(stream_id, stream_type, version, state, state_schema, stored_time(recorded_at))


# first_position_at walks this many positions of a range of candidate positions by the
# primary key before it reads the rest of the range through the (recorded_at, position)
# index: four log blocks.
_FIRST_WALK = 4 * blocks.BLOCK


def _first_recorded_since(conn: Connection, when: datetime, ranges: list[tuple[int, int]]) -> int | None:
    """The smallest position in the inclusive position ``ranges`` (ascending) of an
    event recorded at or after ``when``.

    Range by range, in order: the first _FIRST_WALK positions (4 blocks) of a range are walked by the primary
    key (a summarised block left in the ranges holds such an event, so the search
    usually ends in the first block walked); the rest of a longer range (no summaries
    there) is searched through the (recorded_at, position) index, taking
    min(position + 0) so the database does not walk the primary key instead: about as
    many events as a replay from there reads."""
    c = events.c
    for low, high in ranges:
        walk_to = min(high, low + _FIRST_WALK - 1)
        found = conn.execute(
            select(c.position).where(c.position >= low, c.position <= walk_to, c.recorded_at >= when)
            .order_by(c.position).limit(1)
        ).scalar()
        if found is None and walk_to < high:
            found = conn.execute(
                select(func.min(c.position + literal_column("0"))).where(
                    c.recorded_at >= when, c.position > walk_to, c.position <= high
                )
            ).scalar()
        if found is not None:
            return int(found)
    return None


def _conflicting(batch: list[tuple[StreamAppend, list[PendingEvent]]], current: dict[str, tuple[str, int]]) -> bool:
    return any(
        a.expected_version is not None and current.get(a.stream_id, ("", 0))[1] != a.expected_version
        for a, _ in batch
    )


def _validate(batch: list[tuple[StreamAppend, list[PendingEvent]]]) -> None:
    seen: set[str] = set()
    ids: dict[uuid.UUID, str] = {}  # event id -> the stream it was given for
    classes: set[type[object]] = set()
    for append, pending in batch:
        if not isinstance(append.stream_id, str) or not append.stream_id or len(append.stream_id) > 255:
            raise StoreError(f"invalid stream id {append.stream_id!r}: need a non-empty string of at most 255 characters")
        if not append.stream_type:
            raise StoreError(f"stream {append.stream_id!r}: stream type must be a non-empty string")
        if append.stream_id in seen:
            raise StoreError(f"stream {append.stream_id!r} appears twice in one append")
        seen.add(append.stream_id)
        if not pending:
            raise StoreError(f"append to stream {append.stream_id!r} has no events")
        if append.expected_version is not None and (
            not isinstance(append.expected_version, int) or append.expected_version < 0
        ):
            raise StoreError(f"stream {append.stream_id!r}: invalid expected version {append.expected_version!r}")
        for p in pending:
            cls = type(p.event)
            if cls not in classes:  # one check per event class and append
                if not issubclass(cls, DomainEvent) or "event_type" not in vars(cls):
                    raise EventRegistryError(f"{cls.__qualname__} is not a registered event class: declare it with name=...")
                classes.add(cls)
            first = ids.get(p.event_id)
            if first is not None:
                where = f"stream {first!r}" if first == append.stream_id else f"streams {first!r} and {append.stream_id!r}"
                raise StoreError(f"event id {p.event_id} is given twice in one append ({where}): every event needs its own id")
            ids[p.event_id] = append.stream_id


def _retry_difference(
    append: StreamAppend, pending: PendingEvent, offset: int, row: Any, first: Any, start: int | None
) -> str:
    """What makes ``pending`` (the ``offset``-th event of ``append``) differ from its stored
    ``row``; "" when it is stored as this append would have stored it."""
    if row is None:
        return f"its event {pending.event_id} is not stored"
    if row.stream_id != append.stream_id:
        return f"it is given for stream {append.stream_id!r}"
    version = (start if start is not None else first.version) + offset
    if row.version != version:
        return f"it is given at version {version}"
    if row.stream_type != append.stream_type:
        return f"it is given with stream type {append.stream_type!r}, stored with {row.stream_type!r}"
    event = pending.event
    if (row.event_type, row.schema_version) != (event.event_type, event.schema_version):
        return (f"it is given as {event.event_type!r} v{event.schema_version},"
                f" stored as {row.event_type!r} v{row.schema_version}")
    if not row.same_payload:
        return "its payload differs from the stored one"
    return ""


def _check_types(batch: list[tuple[StreamAppend, list[PendingEvent]]], current: dict[str, tuple[str, int]]) -> None:
    for append, _ in batch:
        if append.stream_id in current and current[append.stream_id][0] != append.stream_type:
            raise _StreamTypeMismatch(append.stream_id, append.stream_type, current[append.stream_id][0])


def _conflict(
    batch: list[tuple[StreamAppend, list[PendingEvent]]], current: dict[str, tuple[str, int]]
) -> ConcurrencyError:
    for append, _ in batch:
        actual = current.get(append.stream_id, ("", 0))[1]
        if append.expected_version is not None and actual != append.expected_version:
            return ConcurrencyError(append.stream_id, append.expected_version, actual)
    raise AssertionError("no conflicting stream in batch")  # pragma: no cover


