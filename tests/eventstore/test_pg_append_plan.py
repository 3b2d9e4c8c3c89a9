"""Issue 12: a PostgreSQL append reads as many rows of ``facta_events`` at a stream length
of 8,000 as at 1,000 (O(log n) in stream and log length), counted, never timed.

The count is PostgreSQL's own for the current transaction (the functions behind
``pg_stat_xact_user_tables``; PostgreSQL 15 has no ``pg_stat_xact_user_indexes``): rows
of ``facta_events`` read by sequential scans, heap rows fetched by index scans, and index
entries read from each of its indexes, taken just
before and just after the ``facta_append()`` call inside one transaction. The appends go
through :meth:`EventStore.append` / :meth:`EventStore.append_many` as an application
makes them; only the appender is wrapped, to open that transaction around the very call
the store sends (:func:`facta.eventstore._appenders.append_postgres`).

The last test proves the count can fail: with a head read that walks the stream
(``max(version)``, ``min(stream_type)``, the query shape issue 12 found on SQLite) put
into ``facta_append``, the same count grows with the stream. And each downgrade puts back
the function body before it, as stored (below 0008: 0007's and no
``facta_take_positions``; below 0007: 0004's), and an upgrade the newest again.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from facta.domain import DomainEvent, PendingEvent
from facta.eventstore import ConcurrencyError, EventStore, StreamAppend
from facta.eventstore._appenders import AppendPlan, PostgresAppender, append_postgres
from facta.eventstore.records import AppendResult

SHORT, LONG = 1_000, 8_000
# What one append may read: the stream's head (one index entry, one heap row) per stream.
# A head read that walks the stream reads thousands.
MOST_ROWS_PER_STREAM = 2

_ROWS_READ = """
SELECT pg_stat_get_xact_tuples_returned('facta_events'::regclass)
     + pg_stat_get_xact_tuples_fetched('facta_events'::regclass)
     + (SELECT coalesce(sum(pg_stat_get_xact_tuples_returned(i.indexrelid)), 0)
        FROM pg_index i WHERE i.indrelid = 'facta_events'::regclass)
"""


class Ticked(DomainEvent, name="pgplan.ticked"):
    n: int


class CountingAppender(PostgresAppender):
    """The store's PostgreSQL appender, each call inside a transaction that records how
    many rows of facta_events the call read (``reads``, one entry per call)."""

    def __init__(self, inner: PostgresAppender) -> None:
        super().__init__(inner.database)
        self.reads: list[int] = []

    async def append(self, plan: AppendPlan) -> list[AppendResult]:
        async with self.database.driver_connection() as conn, conn.transaction():
            before = int(await conn.fetchval(_ROWS_READ))
            try:
                return await append_postgres(conn, plan)
            finally:
                self.reads.append(int(await conn.fetchval(_ROWS_READ)) - before)


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[EventStore]:
    store = await EventStore.open(postgres_url, migrate=True)
    try:
        yield store
    finally:
        await store.close()


def ticks(n: int, start: int = 0) -> list[PendingEvent]:
    return [PendingEvent(Ticked(n=start + i)) for i in range(n)]


async def grow(store: EventStore, stream: str, to: int) -> None:
    """Append to ``stream`` until it has ``to`` events, and as many to a neighbour
    stream, so the log grows with the stream."""
    for name in (stream, f"{stream}-neighbour"):
        have = await store.stream_version(name)
        while have < to:
            n = min(1_000, to - have)
            await store.append(name, "ticker", ticks(n, have), expected_version=have)
            have += n


async def reads_of(store: EventStore, call: Any) -> int:
    counting = CountingAppender(store._appender)  # type: ignore[arg-type]
    store._appender, kept = counting, store._appender
    try:
        await call()
    finally:
        store._appender = kept
    assert counting.reads, "the append did not reach facta_append"
    return counting.reads[-1]


async def one_event(store: EventStore, stream: str) -> int:
    version = await store.stream_version(stream)
    return await reads_of(store, lambda: store.append(stream, "ticker", ticks(1, version), expected_version=version))


async def two_streams(store: EventStore, stream: str, other: str) -> int:
    appends = [
        StreamAppend(stream, "ticker", ticks(5), await store.stream_version(stream)),
        StreamAppend(other, "ticker", ticks(5), await store.stream_version(other)),
    ]
    return await reads_of(store, lambda: store.append_many(appends))


async def refused(store: EventStore, stream: str) -> int:
    async def stale() -> None:
        with pytest.raises(ConcurrencyError):
            await store.append(stream, "ticker", ticks(1), expected_version=1)

    return await reads_of(store, stale)


async def at_both_lengths(store: EventStore, measure: Any) -> tuple[int, int]:
    await grow(store, "long", SHORT)
    short = await measure(store)
    await grow(store, "long", LONG)
    return short, await measure(store)


@pytest.mark.parametrize(
    ("case", "streams"),
    [
        ("one event, one stream", 1),
        ("five events to each of two streams, one of them long", 2),
        ("refused: the stream is not at the expected version", 1),
    ],
)
async def test_an_append_reads_no_more_rows_on_a_long_stream(pg_store: EventStore, case: str, streams: int) -> None:
    measure = {
        "one event, one stream": lambda s: one_event(s, "long"),
        "five events to each of two streams, one of them long": lambda s: two_streams(s, "long", "long-neighbour"),
        "refused: the stream is not at the expected version": lambda s: refused(s, "long"),
    }[case]
    short, long = await at_both_lengths(pg_store, measure)
    assert (short, long) == (short, short), f"{case}: {short} rows read at {SHORT:,} events, {long} at {LONG:,}"
    assert 1 <= long <= MOST_ROWS_PER_STREAM * streams, f"{case}: {long} rows read"


async def test_a_first_append_to_a_new_stream_in_a_long_log_reads_no_rows(pg_store: EventStore) -> None:
    await grow(pg_store, "long", LONG)
    assert await one_event(pg_store, "new") == 0


# A head read of the shape issue 12 found: two aggregates read every row of the stream
# (the head's hash left out: only the rows read are counted).
_GOOD_HEAD = (
    "SELECT e.version, e.stream_type, e.event_hash INTO head_version, head_type, head_hash\n"
    "        FROM facta_events e WHERE e.stream_id = stream_ids[1] ORDER BY e.version DESC LIMIT 1;"
)
_BAD_HEAD = (
    "SELECT max(e.version), min(e.stream_type), NULL::bytea INTO head_version, head_type, head_hash\n"
    "        FROM facta_events e WHERE e.stream_id = stream_ids[1];"
)


async def test_the_count_catches_a_head_read_that_walks_the_stream(pg_store: EventStore) -> None:
    function = importlib.import_module("facta.migrations.versions.0013_trace_context")._FACTA_APPEND
    assert _GOOD_HEAD in function, "facta_append's head read changed: update this test's copy of it"
    async with pg_store.database.driver_connection() as conn:
        await conn.execute(function.replace(_GOOD_HEAD, _BAD_HEAD))
    short, long = await at_both_lengths(pg_store, lambda s: one_event(s, "long"))
    assert short >= SHORT and long >= LONG, (short, long)


def _body(function_sql: str) -> str:
    return function_sql.split("$fn$")[1]


async def test_each_downgrade_puts_back_the_function_before_it(pg_store: EventStore) -> None:
    from facta import migrations

    def revision(name: str) -> Any:
        return importlib.import_module(f"facta.migrations.versions.{name}")

    async def stored_body(function: str = "facta_append") -> str | None:
        async with pg_store.database.driver_connection() as conn:
            body = await conn.fetchval("SELECT prosrc FROM pg_proc WHERE proname = $1", function)
            return None if body is None else str(body)

    chains, positions = revision("0010_hash_chains"), revision("0008_contiguous_positions")
    traced = revision("0013_trace_context")
    assert await stored_body() == _body(traced._FACTA_APPEND)
    assert await stored_body("facta_append_bytes") == _body(traced._FACTA_APPEND_BYTES)
    await migrations.downgrade(pg_store.database, "0012")
    assert await stored_body() == _body(chains._FACTA_APPEND)
    assert await stored_body("facta_append_bytes") == _body(chains._FACTA_APPEND_BYTES)
    await migrations.downgrade(pg_store.database, "0009")
    assert await stored_body() == _body(positions._FACTA_APPEND)
    assert await stored_body("facta_append_bytes") == _body(revision("0009_byte_events")._FACTA_APPEND_BYTES)
    assert await stored_body("facta_event_digest") is None
    newest = positions
    assert await stored_body("facta_take_positions") == _body(newest._TAKE_POSITIONS)
    revisions = migrations.revisions()
    await migrations.downgrade(pg_store.database, "0007")
    assert await stored_body() == _body(revision("0007_append_fast_path")._FACTA_APPEND)
    assert await stored_body("facta_take_positions") is None
    await migrations.downgrade(pg_store.database, revisions[revisions.index("0007") - 1])
    assert await stored_body() == _body(revision("0004_append_integrity")._FACTA_APPEND)
    await migrations.upgrade(pg_store.database)
    assert await stored_body() == _body(traced._FACTA_APPEND)
    assert await stored_body("facta_take_positions") == _body(newest._TAKE_POSITIONS)
    assert (await pg_store.append("after", "ticker", ticks(2), expected_version=0)).last_version == 2
