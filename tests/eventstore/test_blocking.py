"""The blocking facade :class:`facta.eventstore.blocking.BlockingEventStore` (issue 13,
item 4), on SQLite and PostgreSQL: usable from many threads at once with no event loop,
refused (one line) inside a running loop and after close, and the store's errors cross
the bridge unchanged."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from facta.domain import DomainEvent
from facta.errors import ConcurrencyError, InvalidValue, RecordConflict, StoreError
from facta.eventstore import ByteEvent, EventStore
from facta.eventstore.blocking import BlockingEventStore

from ..conftest import migrate


class Counted(DomainEvent, name="blocking_test.counted"):
    n: int


@pytest.fixture
def blocking(backend_url: str) -> BlockingEventStore:
    asyncio.run(migrate(backend_url))
    store = BlockingEventStore.open(backend_url)
    yield store  # type: ignore[misc]
    store.close()


def test_eight_threads_at_once_without_a_running_loop(blocking: BlockingEventStore) -> None:
    def work(k: int) -> list[int]:
        positions = []
        for v in range(1, 11):
            positions += blocking.append_bytes("bank", [ByteEvent(f"t{k}", v, "T", bytes([k, v]))],
                                               tracking=(f"track-{k}", v))
            blocking.append(f"f{k}", "facta", [Counted(n=v)], expected_version=v - 1)
        return positions

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    byte_positions = [p for r in results for p in r]
    assert len(set(byte_positions)) == 80
    assert blocking.head_position() == max(r.position for r in blocking.read_log(0, 1000)) and len(
        blocking.read_log(0, 1000)) == 160
    for k in range(8):
        assert [e.payload for e in blocking.read_byte_stream(f"t{k}")] == [bytes([k, v]) for v in range(1, 11)]
        assert [r.event.n for r in blocking.read_stream(f"f{k}")] == list(range(1, 11))  # type: ignore[attr-defined]
        assert blocking.tracking_position(f"track-{k}") == 10
    assert len(blocking.read_byte_log(None, after=0, limit=1000)) == 160
    assert blocking.last_byte_position("bank") == max(byte_positions)
    assert blocking.call(lambda s: s.stream_version("f3")) == 10
    blocking.wait_for_append(0, 0.01)
    blocking.append_byte_snapshots("bank", [ByteEvent("t0", 10, "S", b"\x00")])
    assert [s.payload for s in blocking.read_byte_snapshots("t0")] == [b"\x00"]
    assert blocking.record_tracking("solo", 1, with_=lambda conn: "done") == "done"
    assert blocking.find_events(limit=2)[0].position == 1


def test_store_errors_cross_the_bridge_unchanged(blocking: BlockingEventStore) -> None:
    blocking.append_bytes("bank", [ByteEvent("a", 1, "T", b"")])
    with pytest.raises(RecordConflict) as caught:
        blocking.append_bytes("bank", [ByteEvent("a", 1, "T", b"")])
    assert type(caught.value) is RecordConflict
    assert str(caught.value) == "stream 'a' already has version 1: nothing was written"
    with pytest.raises(ConcurrencyError) as conflict:
        blocking.append("a", "bank", [Counted(n=1)], expected_version=0)
    assert str(conflict.value) == "concurrency conflict on stream 'a': expected version 0, actual version 1"
    with pytest.raises(InvalidValue, match="^limit 0 is out of range"):
        blocking.read_log(0, 0)
    with pytest.raises(ZeroDivisionError):  # a call's own error, as raised
        blocking.call(_divide_by_zero)


async def _divide_by_zero(store: EventStore) -> int:
    return 1 // 0


def test_refused_inside_a_running_loop_and_after_close(backend_url: str) -> None:
    asyncio.run(migrate(backend_url))
    store = BlockingEventStore.open(backend_url)

    async def inside() -> None:
        with pytest.raises(StoreError, match="^BlockingEventStore blocks, and was called inside a running event loop:"
                                             " use EventStore \\(async\\) there$"):
            store.head_position()
        with pytest.raises(StoreError, match="inside a running event loop"):
            BlockingEventStore.open(backend_url)

    asyncio.run(inside())
    assert store.head_position() == 0
    with store:
        pass
    assert store.closed
    store.close()  # again: nothing
    with pytest.raises(StoreError, match=r"^this BlockingEventStore \(.*\) is closed: open a new one$"):
        store.read_log()
    with pytest.raises(StoreError, match="is closed"):
        store.call(lambda s: s.head_position())
    assert not store._thread.is_alive(), "close() stops the loop's thread"


def test_open_errors_stop_the_loop_thread(tmp_path: object) -> None:
    before = {t.ident for t in threading.enumerate() if t.name == "facta-loop"}
    with pytest.raises(StoreError, match="no facta schema"):
        BlockingEventStore.open(f"sqlite:///{tmp_path}/empty.db")
    after = {t.ident for t in threading.enumerate() if t.name == "facta-loop" and t.is_alive()}
    assert after <= before


def test_a_timeout_cancels_the_call(blocking: BlockingEventStore) -> None:
    with pytest.raises(TimeoutError, match="did not finish within 0.05 s"):
        blocking.call(lambda s: asyncio.sleep(5), timeout_s=0.05)
    assert blocking.head_position() == 0


def test_a_call_running_when_another_thread_closes_gets_one_line(blocking: BlockingEventStore) -> None:
    started = threading.Event()

    async def slow(store: EventStore) -> int:
        started.set()
        await asyncio.sleep(30)
        return 1

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(blocking.call, slow)
        assert started.wait(10)
        blocking.close()
        with pytest.raises(StoreError, match=r"^this BlockingEventStore \(.*\) was closed while the call ran$"):
            running.result(30)
