"""The event store for threads and scripts: :class:`BlockingEventStore`, blocking calls
with no event loop of the caller's.

facta's store is asyncio; a synchronous, thread-based program (a script, a web worker,
the ``eventsourcing`` library's recorders in ``facta.eventsourcing``) uses this facade
instead of calling ``asyncio.run`` per call (which would open a new loop, and so new
connections, every time). One :class:`BlockingEventStore` owns one private event loop
running in a daemon thread named ``facta-loop`` and one :class:`EventStore` opened on
it; each call is handed to that loop with ``asyncio.run_coroutine_threadsafe`` and the
calling thread waits for its result. Any number of threads may call at once: their
calls run concurrently on the loop, as concurrent tasks of one asyncio program would.

Errors cross unchanged: a call raises the store's own exception (same class, same
one-line message). Calling from inside a running event loop is refused (it would block
that loop: use :class:`EventStore` there), and so is any call after :meth:`close`.

Example::

    from facta.eventstore.blocking import BlockingEventStore

    with BlockingEventStore.open("sqlite:///./facta.db", migrate=True) as store:
        positions = store.append_bytes("bank", [ByteEvent("acc-1", 1, "Opened", b"{}")])
        store.call(lambda s: s.head_position())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Self, TypeVar

from sqlalchemy import ColumnElement, Connection

from facta.domain import DomainEvent, PendingEvent
from facta.errors import StoreError

from .records import AppendResult, ByteEvent, RecordedEvent, Snapshot, StreamAppend
from .store import EventStore

__all__ = ["BlockingEventStore"]

T = TypeVar("T")


class BlockingEventStore:
    """An :class:`EventStore` behind blocking calls, safe from many threads at once.

    Open one with :meth:`open`; close it with :meth:`close` (idempotent) or use it as a
    context manager. ``store`` is the :class:`EventStore` it drives (use it only through
    :meth:`call`: it belongs to the private loop). Every method raises what the store's
    method of the same name raises, and :class:`~facta.errors.StoreError` (one line)
    when called from inside a running event loop or after :meth:`close`.
    """

    def __init__(self, store: EventStore, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.store = store
        self._loop = loop
        self._thread = thread
        self._closed = False
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._pid = os.getpid()  # a forked child has no loop thread: it is refused, not hung

    @classmethod
    def open(cls, url: str | None = None, **open_kwargs: Any) -> BlockingEventStore:
        """Start the private loop's thread and open an :class:`EventStore` on it with
        ``EventStore.open(url, **open_kwargs)`` (same arguments, same errors; the thread
        is stopped again when opening fails)."""
        _refuse_running_loop("BlockingEventStore.open")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="facta-loop", daemon=True)
        thread.start()
        try:
            store = asyncio.run_coroutine_threadsafe(EventStore.open(url, **open_kwargs), loop).result()
        except BaseException:
            _stop_loop(loop, thread)
            raise
        return cls(store, loop, thread)

    # -- the bridge -----------------------------------------------------------------------

    def call(self, fn: Callable[[EventStore], Awaitable[T]], timeout_s: float | None = None) -> T:
        """Run ``fn(store)`` (a coroutine function of the :class:`EventStore`) on the
        private loop and return its result, or raise its error unchanged. ``timeout_s``
        (None: no limit) bounds the wait: past it the call is cancelled and
        :class:`TimeoutError` raised."""
        return self._run(_awaiting(fn, self.store), timeout_s)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        try:
            _refuse_running_loop("BlockingEventStore")
            self._refuse_forked()
            with self._lock:  # a call is handed over before close() stops the loop, or refused
                if self._closed:
                    raise StoreError(f"this BlockingEventStore ({self._where()}) is closed: open a new one")
                future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
                self._pending.add(future)
        except BaseException:
            coroutine.close()
            raise
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            if future.done():  # the call itself raised a TimeoutError (a wait's): it stands
                raise
            future.cancel()
            raise TimeoutError(f"store call did not finish within {timeout_s:g} s; it was cancelled") from None
        except concurrent.futures.CancelledError:
            if self._closed:
                raise StoreError(f"this BlockingEventStore ({self._where()}) was closed while the call ran") from None
            raise
        finally:
            with self._lock:
                self._pending.discard(future)

    def close(self) -> None:
        """Close the store and stop the loop's thread. Closing again does nothing. A call
        still running in another thread then raises :class:`~facta.errors.StoreError`
        (or the store's own error for the closed database). In a process forked after
        :meth:`open` it only marks the store closed: the loop's thread is the parent's."""
        if os.getpid() != self._pid:
            self._closed = True
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if threading.current_thread() is not self._thread:
                asyncio.run_coroutine_threadsafe(self.store.close(), self._loop).result()
        finally:
            _stop_loop(self._loop, self._thread)
            with self._lock:
                pending, self._pending = self._pending, set()
            for future in pending:
                future.cancel()

    def _refuse_forked(self) -> None:
        if os.getpid() != self._pid:
            raise StoreError(f"this BlockingEventStore ({self._where()}) was opened in process {self._pid}, and this is "
                             f"process {os.getpid()}, forked from it: its loop's thread did not come along; open a "
                             "new one after the fork (an eventsourcing application: make it after the fork)")

    @property
    def forked(self) -> bool:
        """True in a process forked after :meth:`open`, where every call is refused."""
        return os.getpid() != self._pid

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _where(self) -> str:
        return self.store.database.url.render_as_string(hide_password=True)

    # -- facta's own calls (see EventStore for each) -------------------------------------------

    def append(
        self, stream_id: str, stream_type: str, events: Sequence[DomainEvent | PendingEvent], *,
        expected_version: int | None, actor: str | None = None, correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> AppendResult:
        """:meth:`EventStore.append`."""
        return self._run(self.store.append(stream_id, stream_type, events, expected_version=expected_version,
                                           actor=actor, correlation_id=correlation_id, causation_id=causation_id))

    def append_many(
        self, appends: Sequence[StreamAppend], *, actor: str | None = None, correlation_id: str | None = None,
        causation_id: str | None = None, snapshots: Sequence[Snapshot] = (),
    ) -> list[AppendResult]:
        """:meth:`EventStore.append_many`."""
        return self._run(self.store.append_many(appends, actor=actor, correlation_id=correlation_id,
                                                causation_id=causation_id, snapshots=snapshots))

    def read_stream(
        self, stream_id: str, *, from_version: int = 1, to_version: int | None = None, backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """:meth:`EventStore.read_stream`."""
        return self._run(self.store.read_stream(stream_id, from_version=from_version, to_version=to_version,
                                                backwards=backwards, limit=limit))

    def read_log(
        self, after: int = 0, limit: int = 1000, *, event_types: Sequence[str] | None = None,
        stream_types: Sequence[str] | None = None,
    ) -> list[RecordedEvent]:
        """:meth:`EventStore.read_log`."""
        return self._run(self.store.read_log(after, limit, event_types=event_types, stream_types=stream_types))

    def head_position(self) -> int:
        """:meth:`EventStore.head_position`."""
        return self._run(self.store.head_position())

    def find_events(
        self, *where: ColumnElement[bool], order_by: ColumnElement[Any] | Sequence[ColumnElement[Any]] = (),
        limit: int | None = None, ranges: Sequence[tuple[int, int]] | None = None, settled: bool = False,
    ) -> list[RecordedEvent]:
        """:meth:`EventStore.find_events`."""
        return self._run(self.store.find_events(*where, order_by=order_by, limit=limit, ranges=ranges,
                                                settled=settled))

    def get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        """:meth:`EventStore.get_event`."""
        return self._run(self.store.get_event(event_id))

    # -- byte events, byte snapshots, tracking -----------------------------------------------

    def append_bytes(
        self, stream_type: str, events: Sequence[ByteEvent], *, tracking: tuple[str, int] | None = None
    ) -> list[int]:
        """:meth:`EventStore.append_bytes`."""
        return self._run(self.store.append_bytes(stream_type, events, tracking=tracking))

    def read_byte_stream(
        self, stream_id: str, *, gt: int | None = None, lte: int | None = None, desc: bool = False,
        limit: int | None = None, stream_type: str | None = None,
    ) -> list[ByteEvent]:
        """:meth:`EventStore.read_byte_stream`."""
        return self._run(self.store.read_byte_stream(stream_id, gt=gt, lte=lte, desc=desc, limit=limit,
                                                 stream_type=stream_type))

    def read_byte_log(
        self, stream_type: str | None, *, after: int, limit: int, stop: int | None = None,
        event_types: Sequence[str] = (),
    ) -> list[ByteEvent]:
        """:meth:`EventStore.read_byte_log`."""
        return self._run(self.store.read_byte_log(stream_type, after=after, limit=limit, stop=stop,
                                                  event_types=event_types))

    def last_byte_position(self, stream_type: str | None) -> int | None:
        """:meth:`EventStore.last_byte_position`."""
        return self._run(self.store.last_byte_position(stream_type))

    def notify_append(self) -> None:
        """After an append committed on another connection of this process: wake this
        store's :meth:`wait_for_append` callers at once (:meth:`EventStore.wake_append_waiters`
        on the loop). Thread-safe; does nothing when no one waits or the store is closed."""
        if self.store.append_waited_for and not self._closed:
            with contextlib.suppress(RuntimeError):  # the loop stopped: no one waits any more
                self._loop.call_soon_threadsafe(self.store.wake_append_waiters)

    def wait_for_append(self, after: int, timeout_s: float) -> None:
        """:meth:`EventStore.wait_for_append` (blocks the calling thread only)."""
        self._run(self.store.wait_for_append(after, timeout_s))

    def append_byte_snapshots(self, stream_type: str, snapshots: Sequence[ByteEvent]) -> None:
        """:meth:`EventStore.append_byte_snapshots`."""
        self._run(self.store.append_byte_snapshots(stream_type, snapshots))

    def read_byte_snapshots(
        self, stream_id: str, *, gt: int | None = None, lte: int | None = None, desc: bool = False,
        limit: int | None = None, stream_type: str | None = None,
    ) -> list[ByteEvent]:
        """:meth:`EventStore.read_byte_snapshots`."""
        return self._run(self.store.read_byte_snapshots(stream_id, gt=gt, lte=lte, desc=desc, limit=limit,
                                                 stream_type=stream_type))

    def record_tracking(
        self, name: str, position: int, *, with_: Callable[[Connection], T] | None = None
    ) -> T | None:
        """:meth:`EventStore.record_tracking` (``with_`` runs in the store's transaction,
        on the store's own thread, not the caller's)."""
        return self._run(self.store.record_tracking(name, position, with_=with_))

    def tracking_position(self, name: str) -> int | None:
        """:meth:`EventStore.tracking_position`."""
        return self._run(self.store.tracking_position(name))


async def _awaiting(fn: Callable[[EventStore], Awaitable[T]], store: EventStore) -> T:
    return await fn(store)


def _refuse_running_loop(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise StoreError(f"{what} blocks, and was called inside a running event loop: use EventStore (async) there")


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        # Calls still running when close() stopped the loop (a subscription waiting for an
        # append) end here, cancelled while the loop can still run them: their callers get
        # "closed while the call ran", and nothing is left pending on a closed loop (which
        # printed "Event loop is closed" and "Task was destroyed but it is pending!").
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    if threading.current_thread() is not thread:
        thread.join()
