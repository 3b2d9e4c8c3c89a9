"""The recorders and the infrastructure factory of ``PERSISTENCE_MODULE=facta.eventsourcing``.

eventsourcing's ``InfrastructureFactory.construct`` imports the module named by
``PERSISTENCE_MODULE`` and takes the one ``InfrastructureFactory`` subclass it finds in its
namespace: :class:`FactaFactory` (``facta.eventsourcing:FactaFactory`` names it as a class
topic too). It builds every recorder eventsourcing defines:

==========================================  ===================================================
``aggregate_recorder("events")``            :class:`FactaAggregateRecorder`: rows of ``facta_events``
``aggregate_recorder("snapshots")``         :class:`FactaSnapshotRecorder`: rows of ``facta_snapshots``
``application_recorder()``                  :class:`FactaApplicationRecorder`: notification ids are
                                            facta's global positions
``tracking_recorder(cls=None)``             :class:`FactaTrackingRecorder` (or ``cls``, or
                                            ``TRACKING_RECORDER_TOPIC``): rows of ``facta_tracking``
``process_recorder()``                      :class:`FactaProcessRecorder`: new events and the tracking
                                            record in one transaction
==========================================  ===================================================

**Settings**, read through eventsourcing's ``Environment`` (so an application-prefixed name,
``BANKACCOUNTS_FACTA_DATABASE_URL``, wins over the plain one):

- ``FACTA_DATABASE_URL``: the store; unset or empty: facta's own setting (``FACTA_DATABASE_URL`` in
  the process environment, else ``sqlite+aiosqlite:///./facta.db``). One
  :class:`~facta.eventstore.blocking.BlockingEventStore` per URL per process is shared by
  every factory naming it, counted, and closed when the last factory closes
  (``Application.close()`` closes its factory).
- ``CREATE_TABLE`` (eventsourcing's convention, default yes): yes migrates the database to
  facta's newest revision when the store is opened (what ``facta db upgrade`` does); no
  refuses a database without facta's schema or at an older revision, in one line naming
  the URL (password hidden) and ``facta db upgrade`` (a SQLite file that does not exist is
  refused before opening, so none is left behind). facta's schema is one schema for all
  recorders, so the setting counts when a factory opens the store, not per recorder.
- ``ORIGINATOR_ID_TYPE`` (eventsourcing's, ``uuid`` by default, or ``text``): with ``uuid``
  an originator id must be a UUID (stored as its canonical text, read back as a ``UUID``);
  with ``text`` any string (read back as ``str``).

**Stream type.** An application's events have the stream type of the application's name
(``Environment.name``, the class name unless the class sets ``name``); a factory built
from an environment without a name (``InfrastructureFactory.construct()`` in a script)
uses :data:`UNNAMED_STREAM_TYPE`, ``"eventsourcing"``. Notification ids are facta's
global positions of that stream type only: when several applications (or facta's own
aggregates) write to one database, each application's notification ids are increasing
but not consecutive, since the others' events sit between them.

**Tracking records** are rows of ``facta_tracking`` named
``"<this recorder's application>/<upstream application>"``
(:meth:`FactaTrackingRecorder.tracking_name`): a checkpoint per pair that only moves up,
so a position at or below the stored one is an ``IntegrityError``, as eventsourcing's own
recorders refuse a tracking record at a notification id already recorded or below it.

**A materialised view** (eventsourcing's ``TrackingRecorder`` subclassed by a user, as
its ``ProjectionRunner`` wants) subclasses :class:`FactaTrackingRecorder` and keeps its own
table in the same database. :meth:`FactaTrackingRecorder.record_tracking` takes
``with_=fn``, a synchronous function of a SQLAlchemy ``Connection`` that runs in the
transaction that moves the checkpoint (the store's ``record_tracking(name, position,
with_=fn)``): both are committed or neither, and a position at or below the stored one
runs nothing. :meth:`~FactaTrackingRecorder.read` and :meth:`~FactaTrackingRecorder.write`
run a function of a ``Connection`` in a read or write transaction::

    counters = Table("bank_counters", MetaData(), Column("name", String(50), primary_key=True),
                     Column("n", Integer, nullable=False))

    class Counters(FactaTrackingRecorder):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.write(self._create)

        @staticmethod
        def _create(conn: Connection) -> None:
            counters.create(conn, checkfirst=True)
            if conn.execute(select(counters.c.n)).first() is None:
                conn.execute(counters.insert().values(name="all", n=0))

        def count(self, tracking: Tracking) -> None:
            self.record_tracking(tracking, with_=lambda conn: conn.execute(
                update(counters).where(counters.c.name == "all").values(n=counters.c.n + 1)))

        def total(self) -> int:
            return self.read(lambda conn: conn.execute(select(counters.c.n)).scalar_one())

``tests/eventsourcing/test_projections.py`` holds a complete one (eventsourcing's
``EventCountersView``).

**Reads and writes on SQLite** run in the calling thread: reads on a read-only sqlite3
connection per thread (:class:`SQLiteReads`), writes (events with or without a tracking
record, snapshots, tracking records without ``with_``) on an append connection per
thread (:class:`SQLiteWrites`), with the store's own statements, transaction, checks and
errors, waking the store's ``wait_for_append`` in this process. Whatever SQLite refuses
there, a materialised view's ``with_`` and ``write``, and every call on PostgreSQL, go
through the shared store.

**Errors.** facta's errors reach eventsourcing's code as eventsourcing's exception classes
(PEP 249's names), each with facta's one-line message naming the bad value (never a
password): a stored (originator id, version), an originator id that is another stream
type's stream (another application's, or facta's own aggregates') or a tracking record at
or below the stored one -> ``IntegrityError``; a value facta refuses (a topic or originator id longer than
facta's columns, a NUL, a version outside int32, state that is not bytes; a stored stream id that is not a UUID
read with ``ORIGINATOR_ID_TYPE=uuid``) -> ``DataError``;
an unreachable database, a database URL facta cannot use, SQLite's write lock held too
long, a call inside a running event loop (make and call the application in a thread
there: ``await asyncio.to_thread(app.save, aggregate)``) -> ``OperationalError``; no facta schema or an older one (``CREATE_TABLE=no``) ->
``ProgrammingError``; any other error of the store -> ``DatabaseError``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    Notification,
    OperationalError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, resolve_topic, strtobool
from sqlalchemy import Connection

from facta import metrics, tracing
from facta.errors import (
    DatabaseBusy,
    DatabaseUnavailable,
    DatabaseURLError,
    InvalidValue,
    RecordConflict,
    SchemaNotReady,
    StoreError,
    StreamTypeMismatch,
    UnknownSchemaRevision,
)
from facta.eventstore import _bytes
from facta.eventstore.blocking import BlockingEventStore
from facta.eventstore.database import (
    database_url_from_env,
    driver_options,
    resolve_url,
    sqlite_append_connection,
    sqlite_immediate,
)
from facta.eventstore.records import ByteEvent
from facta.eventstore.store import EventStore
from facta.eventstore.validation import TEXT_LIMITS, check_text

__all__ = [
    "UNNAMED_STREAM_TYPE",
    "FactaAggregateRecorder",
    "FactaApplicationRecorder",
    "FactaFactory",
    "FactaProcessRecorder",
    "FactaRecorder",
    "FactaSnapshotRecorder",
    "FactaSubscription",
    "FactaTrackingRecorder",
    "SQLiteReads",
    "SQLiteWrites",
    "eventsourcing_error",
    "eventsourcing_errors",
]

#: The stream type of events written through a factory whose environment has no name.
UNNAMED_STREAM_TYPE = "eventsourcing"

#: Notifications a subscription reads per query.
SUBSCRIPTION_PAGE = 500
#: How long a subscription at the head waits for an append before it looks at its stop flag
#: again: the longest a ``stop()`` from another thread takes to end a blocked iteration.
SUBSCRIPTION_WAIT_S = 0.1

T = TypeVar("T")


# -- errors -----------------------------------------------------------------------------------


@contextlib.contextmanager
def eventsourcing_errors() -> Iterator[None]:
    """Raise facta's errors as eventsourcing's exception classes (table in the module docstring),
    with facta's one-line message; the facta error is the new one's ``__context__``."""
    try:
        yield
    except StoreError as exc:
        raise eventsourcing_error(exc) from None


def eventsourcing_error(exc: StoreError) -> DatabaseError:
    """facta's error as eventsourcing's exception class, with its one-line message (the
    table in the module docstring); for hot paths that catch ``StoreError`` themselves
    instead of entering :func:`eventsourcing_errors`."""
    if isinstance(exc, (RecordConflict, StreamTypeMismatch)):  # StreamTypeMismatch: the id is another stream type's
        return IntegrityError(str(exc))
    if isinstance(exc, InvalidValue):
        return DataError(str(exc))
    if isinstance(exc, (DatabaseUnavailable, DatabaseURLError, DatabaseBusy)):
        return OperationalError(str(exc))
    if isinstance(exc, (SchemaNotReady, UnknownSchemaRevision)):
        return ProgrammingError(str(exc))
    return DatabaseError(str(exc))


# -- reads on SQLite: in the caller's thread -------------------------------------------------------

_SQLITE_LAST_OF_TYPE = "SELECT max(position) FROM facta_events WHERE stream_type = ?"
_SQLITE_TRACKED = "SELECT position FROM facta_tracking WHERE name = ?"


class SQLiteReads:
    """Read-only sqlite3 connections to a SQLite store's file, one per calling thread.

    eventsourcing calls a recorder from its own threads; a read through the blocking
    facade hops to the store's loop and on to its read threads and back (about 130 us for
    a short stream, against 8 us for the statement itself; measured on the development
    machine). Reads on SQLite are plain snapshots of the WAL, so a recorder runs them
    here, in the caller's thread, with the store's own statements (``_bytes``); writes
    go through :class:`SQLiteWrites`. Any sqlite3 error (a file that cannot be
    opened read-only, a busy database) returns None: the caller then reads through the
    store, whose errors are the usual ones.
    """

    def __init__(self, path: str, timeout_s: float) -> None:
        self._uri = f"{Path(path).resolve().as_uri()}?mode=ro"
        self._timeout_s = timeout_s
        self._local = threading.local()

    def fetch(self, sql: str, args: Sequence[Any]) -> list[Any] | None:
        """The rows of ``sql``, or None when SQLite refused (read through the store then)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout_s, isolation_level=None)
                conn.execute("PRAGMA query_only=1")
                self._local.conn = conn
            return conn.execute(sql, args).fetchall()
        except sqlite3.Error:
            return None


class SQLiteWrites:
    """Direct SQLite writes: an append connection to a SQLite store's file per calling thread.

    A write through the blocking facade hops from the caller to the store's loop thread,
    on to its writer thread and back (a ``BlockingEventStore.call`` that does nothing
    takes 54 us, against about 60 us for a 1-event save's own statements; bench/README.md).
    So a recorder writes here, in the caller's thread, with the store's own code: the
    connection is made as the store's writer makes its own
    (:func:`~facta.eventstore.database.sqlite_append_connection`: WAL, synchronous FULL,
    the busy timeout of the URL's ``timeout``, ``wal_autocheckpoint``, ``cache_size``,
    ``temp_store``), the transaction is the store writer's
    (:func:`~facta.eventstore.database.sqlite_immediate`: ``BEGIN IMMEDIATE``,
    :class:`~facta.errors.DatabaseBusy` past the busy timeout) and the work the store
    writer's functions (:mod:`facta.eventstore._bytes`: ``append_bytes_sqlite``,
    ``insert_byte_snapshots_sqlite``, ``record_tracking_sqlite``), after the store's own
    value checks. So rows, positions and errors are the store's. After an append the
    store's ``wait_for_append`` callers in this process are woken
    (:meth:`BlockingEventStore.notify_append`), as the store's own appends wake them.

    :meth:`run` returns None when SQLite refused the connection or the statements with an
    error of its own (a file it cannot open for writing, an I/O error): nothing was
    written (rolled back) and the caller writes through the store, whose errors are the
    usual ones. The file is opened ``mode=rw``: a file deleted since never comes back empty.
    """

    def __init__(self, store: BlockingEventStore, path: str, name: str, timeout_s: float) -> None:
        self._store = store
        self._uri = f"{Path(path).resolve().as_uri()}?mode=rw"
        self._name = name  # the URL's database, as the store's DatabaseBusy message names it
        self._timeout_s = timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: dict[int, sqlite3.Connection] = {}  # by thread id
        self._closed = False

    def run(self, work: Callable[..., T], *args: Any) -> tuple[T] | None:
        """``(work(connection, *args),)`` run in ``BEGIN IMMEDIATE`` on this thread's append
        connection, committed; or None (nothing written) when SQLite refused."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid != os.getpid():
            conn = None  # a forked child never uses its parent's connection (SQLite's rule)
        if conn is None:
            try:
                conn = sqlite_append_connection(self._uri, self._timeout_s, uri=True)
            except sqlite3.Error:
                return None
            with self._lock:
                if self._closed:
                    conn.close()
                    return None
                # A thread that ended left its connection here: close it (its local is gone).
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._open if i not in alive]:
                    with contextlib.suppress(sqlite3.Error):
                        self._open.pop(ident).close()
                self._open[threading.get_ident()] = conn
            self._local.conn, self._local.pid = conn, os.getpid()
        try:
            return (sqlite_immediate(conn, self._name, work, *args),)
        except sqlite3.Error:
            self._drop(conn)
            return None

    def append(self, stream_type: str, events: Sequence[ByteEvent], tracking: tuple[str, int] | None
               ) -> list[int] | None:
        """:meth:`EventStore.append_bytes` in this thread (the same checks first, the same
        errors), waking the store's waiters; None: write through the store."""
        items = _bytes.check_byte_events(stream_type, events)
        track = _bytes.check_tracking(tracking)
        if not items and track is None:
            return []
        started = metrics.clock()
        done = self.run(_bytes.append_bytes_sqlite, stream_type, items, track, tracing.trace_fields())
        if done is None:
            return None
        positions = done[0][0]
        if positions:
            self._store.notify_append()
        metrics.appended_bytes(stream_type, len(positions), started)
        return positions

    def _drop(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        with self._lock:
            if self._open.get(threading.get_ident()) is conn:
                del self._open[threading.get_ident()]
        self._local.conn = None
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def close(self) -> None:
        """Close every thread's connection (the store is being closed); later runs return None."""
        with self._lock:
            self._closed = True
            conns, self._open = list(self._open.values()), {}
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def _sqlite_writes(store: BlockingEventStore) -> SQLiteWrites | None:
    database = store.store.database
    name = database.url.database
    if database.dialect != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        return None
    return SQLiteWrites(store, name, name, float(driver_options(database.url)["timeout"]))


def _sqlite_reads(store: BlockingEventStore) -> SQLiteReads | None:
    database = store.store.database
    if database.dialect != "sqlite" or not database.url.database:
        return None
    return SQLiteReads(database.url.database, float(driver_options(database.url)["timeout"]))


# -- the shared stores --------------------------------------------------------------------------

_stores_lock = threading.Lock()
_stores: dict[str, tuple[BlockingEventStore, int]] = {}
#: The direct SQLite reads and writes of each shared SQLite store, by store key.
_reads: dict[str, tuple[SQLiteReads | None, SQLiteWrites | None]] = {}
#: Releases that could not take the lock at once (a factory closed by the garbage collector
#: while its thread held the lock): counted down by the next acquire or a helper thread.
_pending: list[tuple[str, BlockingEventStore]] = []
#: Stores a forked child found open in its parent's table: never used, closed nor collected.
_forked_away: list[BlockingEventStore] = []


def _acquire(url: str, *, migrate: bool
             ) -> tuple[str, BlockingEventStore, tuple[SQLiteReads | None, SQLiteWrites | None]]:
    """The process's store for ``url`` (opened, and migrated when ``migrate``, on first use),
    counted once more, and its direct SQLite reads and writes (None on PostgreSQL). Returns the key to
    :func:`_release` it with first."""
    with eventsourcing_errors():
        parsed = resolve_url(url)
    key = parsed.render_as_string(hide_password=False)
    if not migrate and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # Opening would create an empty file: refuse first, leaving no file behind.
        if not os.path.exists(parsed.database):
            raise ProgrammingError(f"{parsed.render_as_string(hide_password=True)} has no facta schema (the file "
                                   "does not exist): run `facta db upgrade`")
    done: list[BlockingEventStore] = []
    try:
        with _stores_lock:
            done = _count_down_pending()
            held = _stores.get(key)
            if held is not None and held[0].forked:  # the parent's, before a fork: not ours to use or close
                _forked_away.append(held[0])  # kept: collecting it could touch the parent's connections
                held = None
                _reads.pop(key, None)
            if held is None:
                with eventsourcing_errors():
                    store = BlockingEventStore.open(url, migrate=migrate)
                _stores[key] = (store, 1)
                _reads[key] = (_sqlite_reads(store), _sqlite_writes(store))
            else:
                store, count = held
                _stores[key] = (store, count + 1)
            reads = _reads.get(key, (None, None))
    finally:
        _close_stores(done)
    return key, store, reads


def _release(key: str, store: BlockingEventStore) -> None:
    """Count the store of ``key`` down; close it when no factory holds it any more.

    Safe from a garbage collector's finaliser (``Application.__del__`` closes its factory)
    whatever the thread holds: when the lock is taken, the release is queued and counted by
    a helper thread, and a store is never closed on its own loop's thread."""
    _pending.append((key, store))
    if not _stores_lock.acquire(blocking=False):
        with contextlib.suppress(RuntimeError):  # no new threads at interpreter shutdown
            threading.Thread(target=_release_pending, name="facta-es-release", daemon=True).start()
        return
    try:
        done = _count_down_pending()
    finally:
        _stores_lock.release()
    _close_stores(done)


def _release_pending() -> None:
    with _stores_lock:
        done = _count_down_pending()
    _close_stores(done)


def _count_down_pending() -> list[BlockingEventStore]:
    """With the lock held: apply the queued releases; returns the stores no one holds."""
    done = []
    while _pending:
        key, released = _pending.pop()
        held = _stores.get(key)
        if held is None or held[0] is not released:  # closed already, or the parent's before a fork
            continue
        store, count = held
        if count > 1:
            _stores[key] = (store, count - 1)
        else:
            del _stores[key]
            _close_writes(_reads.pop(key, None))
            done.append(store)
    return done


def _close_writes(direct: tuple[SQLiteReads | None, SQLiteWrites | None] | None) -> None:
    if direct is not None and direct[1] is not None:
        direct[1].close()


def _close_stores(stores: list[BlockingEventStore]) -> None:
    for store in stores:
        if store.forked:  # the parent's, before a fork: kept, collecting it could touch its connections
            _forked_away.append(store)
        elif threading.current_thread().name == "facta-loop":  # a finaliser on a store's own loop
            threading.Thread(target=store.close, name="facta-es-release", daemon=True).start()
        else:
            store.close()


def _close_all() -> None:
    """Close every shared store, counted or not (for test teardown: an application a test
    never closed keeps its store open until garbage collection)."""
    with _stores_lock:
        _pending.clear()
        held = list(_stores.values())
        _stores.clear()
        for direct in _reads.values():
            _close_writes(direct)
        _reads.clear()
    _close_stores([store for store, _ in held])


# An application never closed is closed by its __del__ at interpreter shutdown, when the
# stores' loop threads (daemon threads) no longer run: closing a store then would wait for
# its loop forever. So the stores close at exit, while those threads still run, and the
# applications' later close() finds nothing to release.
atexit.register(_close_all)


# -- recorders ---------------------------------------------------------------------------------


class FactaRecorder:
    """What every recorder of this module holds: the shared blocking store (``store``) and
    the stream type of its application's events (``stream_type``).

    ``originator_id_type`` is ``"uuid"`` (ids are UUIDs, read back as ``UUID``) or
    ``"text"`` (any string, read back as ``str``). ``owner`` (the factory that made the
    recorder) is kept so that the shared store stays counted while the recorder lives,
    even when no one keeps the factory (eventsourcing's ``ProjectionRunner`` drops the one
    that made its view).
    """

    def __init__(self, store: BlockingEventStore, stream_type: str, *, originator_id_type: str = "uuid",
                 owner: object = None, sqlite_reads: SQLiteReads | None = None,
                 sqlite_writes: SQLiteWrites | None = None) -> None:
        self.store = store
        self.stream_type = stream_type
        self.originator_id_type = originator_id_type
        self._owner = owner
        self._direct = sqlite_reads
        self._writes = sqlite_writes

    def _fetch(self, sql: str, args: Sequence[Any]) -> list[Any] | None:
        """Rows read in this thread on SQLite (:class:`SQLiteReads`), or None: read through the store."""
        if self._direct is None or not self._direct_ok():
            return None
        return self._direct.fetch(sql, args)

    def _direct_ok(self) -> bool:
        """Whether this thread may use the direct SQLite reads or writes: not when the
        store's own calls refuse (closed, forked after open:
        those raise their one line through :meth:`call`); never inside a running event loop
        (``OperationalError``, as on PostgreSQL)."""
        _refuse_running_loop()
        return not (self.store.closed or self.store.forked)

    def call(self, fn: Callable[[EventStore], Awaitable[T]]) -> T:
        """Run ``fn(event_store)`` on the store's loop, facta's errors raised as eventsourcing's;
        ``OperationalError`` (one line, saying what to do) inside a running event loop."""
        _refuse_running_loop()
        with eventsourcing_errors():
            return self.store.call(fn)

    def tracking_name(self, application_name: str) -> str:
        """The ``facta_tracking`` name of this application's position in ``application_name``'s
        notification log: ``"<stream type>/<application_name>"``."""
        return f"{self.stream_type}/{application_name}"

    def _stream_id(self, originator_id: object) -> str:
        if isinstance(originator_id, UUID):
            return str(originator_id)
        if self.originator_id_type == "uuid":
            try:
                return str(UUID(str(originator_id)))
            except ValueError:
                raise DataError(
                    f"originator id {originator_id!r} is not a UUID: set ORIGINATOR_ID_TYPE=text for string ids"
                ) from None
        if not isinstance(originator_id, str):
            raise DataError(f"originator id {originator_id!r} is not a str or UUID")
        return originator_id

    def _originator_id(self, stream_id: str) -> UUID | str:
        if self.originator_id_type != "uuid":
            return stream_id
        try:
            return UUID(stream_id)
        except ValueError:  # a stream of this stream type written by text ids or by facta's own aggregates
            raise DataError(
                f"stream id {stream_id!r} of stream type {self.stream_type!r} is not a UUID: it was written with "
                "ORIGINATOR_ID_TYPE=text or by facta's own aggregates of that stream type (set "
                "ORIGINATOR_ID_TYPE=text, or give the application a name of its own)") from None

    def _byte_events(self, stored_events: Sequence[StoredEvent]) -> list[ByteEvent]:
        events = []
        for s in stored_events:
            if not isinstance(s.state, bytes):
                raise DataError(f"state of {s.topic!r} at version {s.originator_version!r} is "
                                f"{type(s.state).__name__}, not bytes")
            events.append(ByteEvent(self._stream_id(s.originator_id), s.originator_version, s.topic, s.state))
        return events

    def _stored(self, events: Sequence[ByteEvent]) -> list[StoredEvent]:
        return [StoredEvent(self._originator_id(e.stream_id), e.version, e.event_type, e.payload) for e in events]

    def _select(self, kind: str, originator_id: UUID | str, gt: int | None, lte: int | None, desc: bool,
                limit: int | None) -> list[StoredEvent]:
        stream_id = self._stream_id(originator_id)
        if self._direct is not None and _plain_version(gt) and _plain_version(lte) and _plain_int(limit, 1) and (
                type(desc) is bool and len(stream_id) <= TEXT_LIMITS["stream id"]):
            build = _bytes.snapshot_sql if kind == "snapshots" else _bytes.stream_sql
            sql = build(False, True, gt is not None, lte is not None, desc, limit is not None)
            rows = self._fetch(sql, [stream_id, self.stream_type, *(v for v in (gt, lte, limit) if v is not None)])
            if rows is not None:
                if kind == "snapshots":
                    return [StoredEvent(self._originator_id(r[0]), r[1], r[2], bytes(r[3])) for r in rows]
                return [StoredEvent(self._originator_id(r[1]), r[2], r[3], bytes(r[4])) for r in rows]
        if kind == "snapshots":
            events = self.call(lambda s: s.read_byte_snapshots(stream_id, gt=gt, lte=lte, desc=desc, limit=limit,
                                                               stream_type=self.stream_type))
        else:
            events = self.call(lambda s: s.read_byte_stream(stream_id, gt=gt, lte=lte, desc=desc, limit=limit,
                                                            stream_type=self.stream_type))
        return self._stored(events)


class FactaAggregateRecorder(FactaRecorder, AggregateRecorder):
    """Events of an aggregate sequence as rows of ``facta_events`` (no notification ids)."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Store ``stored_events`` in one transaction; ``IntegrityError`` (nothing stored)
        when an (originator id, version) is stored already or given twice."""
        self._insert(stored_events, kwargs.get("tracking"))
        return None

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        events = self._byte_events(stored_events)
        checkpoint = None if tracking is None else (self.tracking_name(tracking.application_name),
                                                    tracking.notification_id)
        if not events and checkpoint is None:
            return []
        stream_type = self.stream_type
        if self._writes is not None and self._direct_ok():
            try:
                positions = self._writes.append(stream_type, events, checkpoint)
            except StoreError as exc:
                raise eventsourcing_error(exc) from None
            if positions is not None:
                return positions
        return self.call(lambda s: s.append_bytes(stream_type, events, tracking=checkpoint))

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        """An aggregate sequence's events, versions in (gt, lte], oldest first (``desc``: newest first)."""
        return self._select("events", originator_id, gt, lte, desc, limit)


class FactaSnapshotRecorder(FactaRecorder, AggregateRecorder):
    """Snapshots as rows of ``facta_snapshots`` (state kept as the exact bytes, the topic as
    ``state_schema``); eventsourcing's ``aggregate_recorder("snapshots")``."""

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Store snapshots in one transaction; ``IntegrityError`` (nothing stored) when an
        (originator id, version) is stored already or given twice."""
        snapshots = self._byte_events(stored_events)
        if snapshots:
            stream_type = self.stream_type
            if self._writes is not None and self._direct_ok():
                with eventsourcing_errors():
                    items = _bytes.check_byte_events(stream_type, snapshots, "snapshots")  # the store's checks
                    if self._writes.run(_bytes.insert_byte_snapshots_sqlite, stream_type, items) is not None:
                        return None
            self.call(lambda s: s.append_byte_snapshots(stream_type, snapshots))
        return None

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        """An aggregate's snapshots, versions in (gt, lte], oldest first (``desc``: newest first)."""
        return self._select("snapshots", originator_id, gt, lte, desc, limit)


class FactaApplicationRecorder(FactaAggregateRecorder, ApplicationRecorder):
    """Events as rows of ``facta_events``; notification ids are their global positions.

    ``insert_events`` returns the positions (contiguous for one call). Reads of the
    notification log stop at the settled horizon on PostgreSQL (no position below it can
    still commit), so a follower never skips an event. A ``tracking=Tracking(...)`` keyword
    is recorded in the events' transaction (what :class:`FactaProcessRecorder` relies on).
    """

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Store ``stored_events`` (and a ``tracking`` keyword's record) in one transaction;
        returns their positions. ``IntegrityError`` (nothing stored) on a stored
        (originator id, version) or a tracking record not above the stored one."""
        return self._insert(stored_events, kwargs.get("tracking"))

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None, topics: Sequence[str] = (),
                             *, inclusive_of_start: bool = True) -> Sequence[Notification]:
        """This application's events with positions from ``start`` (after it, unless
        ``inclusive_of_start``) to ``stop``, at most ``limit``, only ``topics`` when given."""
        if start is None:
            after = 0
        else:
            after = max(0, start - 1 if inclusive_of_start else start)
        stream_type, kinds = self.stream_type, list(topics)
        if self._direct is not None and _plain_int(after) and _plain_int(limit, 1) and _plain_int(stop) and all(
                isinstance(k, str) for k in kinds):
            sql = _bytes.log_sql(False, True, len(kinds))
            upto = stop if stop is not None else 2**63 - 1
            rows = self._fetch(sql, [after, upto, stream_type, *kinds, limit])
            if rows is not None:
                return [Notification(self._originator_id(r[1]), r[2], r[3], bytes(r[4]), r[0]) for r in rows]
        events = self.call(lambda s: s.read_byte_log(stream_type, after=after, limit=limit, stop=stop,
                                                       event_types=kinds))
        return [Notification(self._originator_id(e.stream_id), e.version, e.event_type, e.payload, e.position)
                for e in events]

    def max_notification_id(self) -> int | None:
        """The highest settled position of this application's events, or None."""
        stream_type = self.stream_type
        rows = self._fetch(_SQLITE_LAST_OF_TYPE, [stream_type])
        if rows is not None:
            return None if rows[0][0] is None else int(rows[0][0])
        return self.call(lambda s: s.last_byte_position(stream_type))

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> FactaSubscription:
        """Notifications after ``gt``, blocking at the head until new ones are recorded
        (see :class:`FactaSubscription`)."""
        return FactaSubscription(self, gt=gt, topics=topics)


class FactaSubscription(Subscription[FactaApplicationRecorder]):
    """An iterator of an application's notifications after ``gt``: it reads pages of
    :data:`SUBSCRIPTION_PAGE` and, at the head, waits for an append (``wait_for_append``,
    woken at once by this process's appends to the shared store, polling for other
    processes'). ``stop()`` from any thread ends the iteration within
    :data:`SUBSCRIPTION_WAIT_S`; as a context manager it stops on exit.
    """

    def __init__(self, recorder: FactaApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._buffer: deque[Notification] = deque()
        self._catching_up = False  # the last page was full: more is stored, no need to note the head

    def __next__(self) -> Notification:
        while not self._has_been_stopped:
            if self._buffer:
                notification = self._buffer.popleft()
                self._last_notification_id = notification.id
                return notification
            # Near the head, the log's head first, then the page: an append after the head
            # read has a higher position, so the wait below returns for it.
            head = None if self._catching_up else self._recorder.call(lambda s: s.last_byte_position(None)) or 0
            page = self._recorder.select_notifications(self._last_notification_id or 0, SUBSCRIPTION_PAGE,
                                                        topics=self._topics, inclusive_of_start=False)
            self._catching_up = len(page) == SUBSCRIPTION_PAGE
            if page:
                self._buffer.extend(page)
            elif head is not None:
                self._recorder.call(lambda s: s.wait_for_append(head, SUBSCRIPTION_WAIT_S))
        raise StopIteration


class FactaTrackingRecorder(FactaRecorder, TrackingRecorder):
    """Tracking records as rows of ``facta_tracking``, one checkpoint per (this application,
    upstream application) that only moves up. Subclass it for a materialised view (module
    docstring); :meth:`record_tracking` writes a view's rows in the tracking record's
    transaction."""

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record ``tracking``; ``IntegrityError`` when its notification id is not above the
        one stored for its application."""
        self.record_tracking(tracking)

    def record_tracking(self, tracking: Tracking, with_: Callable[[Connection], object] | None = None) -> None:
        """Record ``tracking`` and, in the same transaction, run ``with_(connection)`` (a
        view's own writes, on a SQLAlchemy ``Connection``). ``IntegrityError`` and nothing
        written (``with_`` not run) when the notification id is not above the stored one;
        an error of ``with_`` rolls the tracking record back and propagates."""
        name, position = self.tracking_name(tracking.application_name), tracking.notification_id
        if with_ is None and self._writes is not None and self._direct_ok():
            with eventsourcing_errors():
                checked = _bytes.check_tracking((name, position))  # the store's checks
                assert checked is not None
                if self._writes.run(_bytes.record_tracking_sqlite, *checked) is not None:
                    return
        self.call(lambda s: s.record_tracking(name, position, with_=with_))

    def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in a read transaction of the store's database (a view's queries)."""
        return self.call(lambda s: s.database.read(fn))

    def write(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` in a write transaction of the store's database, committed when it
        returns (a view's DDL, or writes that move no checkpoint)."""
        return self.call(lambda s: s.database.write(fn))

    def max_tracking_id(self, application_name: str) -> int | None:
        """The notification id recorded last for ``application_name``, or None."""
        name = self.tracking_name(application_name)
        rows = self._fetch(_SQLITE_TRACKED, [name]) if len(name) <= TEXT_LIMITS["tracking name"] else None
        if rows is not None:
            return int(rows[0][0]) if rows else None
        return self.call(lambda s: s.tracking_position(name))


class FactaProcessRecorder(FactaTrackingRecorder, FactaApplicationRecorder, ProcessRecorder):
    """An application recorder that is also a tracking recorder: ``insert_events(events,
    tracking=...)`` writes the events and the tracking record in one transaction."""


# -- the factory ------------------------------------------------------------------------------


class FactaFactory(InfrastructureFactory[FactaTrackingRecorder]):
    """eventsourcing's infrastructure factory for facta's store (settings in the module docstring).

    Opening it opens (or shares) the store: ``OperationalError`` when the database cannot be
    reached or its URL is not one facta uses, ``ProgrammingError`` when ``CREATE_TABLE=no``
    and the schema is missing or old, ``ValueError`` for a ``CREATE_TABLE`` or
    ``ORIGINATOR_ID_TYPE`` value it does not know. :meth:`close` (idempotent) releases the store.
    """

    FACTA_DATABASE_URL = "FACTA_DATABASE_URL"
    CREATE_TABLE = "CREATE_TABLE"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    def __init__(self, env: Environment | dict[str, str] | None) -> None:
        super().__init__(env)
        self._key: str | None = None
        _refuse_running_loop()
        # Unset or empty: facta's own setting, as facta reads FACTA_DATABASE_URL itself.
        url = self.env.get(self.FACTA_DATABASE_URL) or database_url_from_env()
        create = self.env.get(self.CREATE_TABLE) or "yes"
        try:
            migrate = strtobool(create)
        except ValueError:
            raise ValueError(f"CREATE_TABLE={create!r}: expected yes or no (y, true, 1 / n, false, 0)") from None
        id_type = (self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower()
        if id_type not in ("uuid", "text"):
            raise ValueError(f"ORIGINATOR_ID_TYPE={id_type!r}: expected uuid or text")
        self.originator_id_type = id_type
        self._key, self.store, (self._sqlite_reads, self._sqlite_writes) = _acquire(url, migrate=migrate)

    @property
    def stream_type(self) -> str:
        """The stream type of this application's events: its name, or :data:`UNNAMED_STREAM_TYPE`."""
        return self.env.name or UNNAMED_STREAM_TYPE

    def _recorder(self, cls: type[FactaRecorderT]) -> FactaRecorderT:
        with eventsourcing_errors():  # an application name facta cannot store as a stream type
            check_text("stream type", self.stream_type)
        return cls(self.store, self.stream_type, originator_id_type=self.originator_id_type, owner=self,
                   sqlite_reads=self._sqlite_reads, sqlite_writes=self._sqlite_writes)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """``"events"``: a :class:`FactaAggregateRecorder`; ``"snapshots"``: a
        :class:`FactaSnapshotRecorder`; any other purpose is a ``ProgrammingError``."""
        if purpose == "snapshots":
            return self._recorder(FactaSnapshotRecorder)
        if purpose == "events":
            return self._recorder(FactaAggregateRecorder)
        raise ProgrammingError(f"aggregate recorder purpose {purpose!r}: facta records 'events' and 'snapshots'")

    def application_recorder(self) -> ApplicationRecorder:
        """A :class:`FactaApplicationRecorder` (or ``APPLICATION_RECORDER_TOPIC``'s subclass)."""
        return self._recorder(self._topic_class(self.APPLICATION_RECORDER_TOPIC, FactaApplicationRecorder))

    def tracking_recorder(self, tracking_recorder_class: type[FactaTrackingRecorder] | None = None
                          ) -> FactaTrackingRecorder:
        """``tracking_recorder_class``, else ``TRACKING_RECORDER_TOPIC``'s class, else
        :class:`FactaTrackingRecorder`, made with ``(store, stream_type, originator_id_type=, owner=)``."""
        cls = tracking_recorder_class or self._topic_class(self.TRACKING_RECORDER_TOPIC, FactaTrackingRecorder)
        return self._recorder(cls)

    def process_recorder(self) -> ProcessRecorder:
        """A :class:`FactaProcessRecorder` (or ``PROCESS_RECORDER_TOPIC``'s subclass)."""
        return self._recorder(self._topic_class(self.PROCESS_RECORDER_TOPIC, FactaProcessRecorder))

    def _topic_class(self, variable: str, default: type[FactaRecorderT]) -> type[FactaRecorderT]:
        topic = self.env.get(variable)
        if not topic:
            return default
        cls = resolve_topic(topic)
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise ProgrammingError(f"{variable}={topic!r} is not a subclass of {default.__qualname__}")
        return cls

    def close(self) -> None:
        """Release the shared store (closed when no other factory holds it); idempotent."""
        key, self._key = self._key, None
        if key is not None:
            _release(key, self.store)

    def __del__(self) -> None:
        # The factory and every recorder it made are gone (recorders keep their factory).
        # No module global here: at interpreter shutdown they may already be None
        # (``contextlib.suppress`` was, printing "Exception ignored" after a clean run).
        try:
            self.close()
        except Exception:  # noqa: S110 - a finaliser reports nothing; atexit closed the stores
            pass


FactaRecorderT = TypeVar("FactaRecorderT", bound=FactaRecorder)


def _refuse_running_loop() -> None:
    """An eventsourcing application blocks; inside a coroutine it would block the caller's
    event loop, which the blocking facade refuses. Say what an eventsourcing user does
    instead (the facade's own advice, ``EventStore``, is for facta's API)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise OperationalError("facta.eventsourcing blocks, and was called inside a running event loop: make and call the "
                           "application in a thread there, e.g. `await asyncio.to_thread(app.save, aggregate)`")


def _plain_int(value: object, low: int = 0, high: int = 2**63 - 1) -> bool:
    """None or an int in [low, high]: what a direct SQLite read binds. Anything else reads
    through the store, which refuses it naming it, as on PostgreSQL."""
    return value is None or (type(value) is int and low <= value <= high)


def _plain_version(value: object) -> bool:
    return _plain_int(value, -(2**31), 2**31 - 1)
