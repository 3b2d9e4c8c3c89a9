"""Byte events, byte snapshots and tracking records (issue 13, revision 0009), on SQLite
and PostgreSQL: facta as the store of another library's events (``facta.eventsourcing``).

- bytes come back exactly, whatever they are (empty, NUL, invalid UTF-8, JSON facta
  refuses, 5 MB); the payload column holds their JSON text or the documented placeholder;
- a conflict (a taken or repeated (stream, version), a tracking position not above the
  stored one) writes nothing of the call, tracking included;
- tracking only moves up, and ``record_tracking(with_=...)`` commits a read model's
  change with it, or neither;
- facta's own events and byte events share one log without conflict;
- ``read_byte_log`` never passes the settled horizon (PostgreSQL);
- a stored byte event is as permanent as any event: UPDATE is refused on both dialects;
- audit, the relay's record encoding and a store-log projection read byte-event rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Column, String, select, text
from sqlalchemy.exc import DBAPIError

from facta import migrations
from facta.domain import DomainEvent
from facta.errors import ConcurrencyError, InvalidValue, MigrationRefused, RecordConflict, StreamTypeMismatch
from facta.eventstore import ByteEvent, EventStore, RecordedEvent
from facta.eventstore import audit
from facta.eventstore._bytes import _SUSPECT_BYTES, _suspect, event_id_hex
from facta.eventstore.kafka_codec import encode_rows
from facta.eventstore.locks import WRITER_MARKER
from facta.eventstore.schema import events as events_table
from facta.projections import Projection, ProjectionRunner, ReadModel, handles, read_model_table

from ..conftest import migrate

PAYLOADS = [
    b"",
    b"\x00\xff",
    b"\xc3\x28 not UTF-8",
    b'{"x": NaN}',  # JSON facta refuses (NaN): kept exactly, shown as a placeholder
    b'{"a": "\\u0000"}',  # a NUL in a string: PostgreSQL's jsonb cannot hold it
    b'{"lone": "\\ud800"}',  # a lone surrogate: not Unicode text
    b'{"pair": "\\ud83d\\ude00", "big": 1e400}',  # a surrogate pair, and a number JSON reads as infinity
    b'{"pair": "\\ud83d\\ude00"}',  # an escaped pair is Unicode text: shown as JSON
    b'{"amount": 5, "note": "caf\xc3\xa9"}',
    b"[1, 2, 3]",  # JSON, but not an object
    b'  {"spaced": true}',
    os.urandom(5 * 1024 * 1024),
]


def _placeholder(data: bytes) -> dict[str, Any]:
    return {"$opaque": {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


async def _payload_column(store: EventStore) -> dict[int, Any]:
    return {r.position: json.loads(r.payload) for r in await store.read_log(limit=1000)}


async def test_bytes_round_trip_exactly_and_the_payload_column_shows_json_or_a_placeholder(store: EventStore) -> None:
    events = [ByteEvent("acc-1", v, f"Type{v}", p) for v, p in enumerate(PAYLOADS, start=1)]
    positions = await store.append_bytes("bank", events)
    assert positions == list(range(1, len(PAYLOADS) + 1))
    read = await store.read_byte_stream("acc-1")
    assert [e.payload for e in read] == PAYLOADS
    assert [(e.stream_id, e.version, e.event_type, e.position) for e in read] == [
        ("acc-1", v, f"Type{v}", p) for v, p in zip(range(1, len(PAYLOADS) + 1), positions, strict=True)
    ]
    logged = await store.read_byte_log("bank", after=0, limit=100)
    assert [e.payload for e in logged] == PAYLOADS and [e.position for e in logged] == positions
    shown = await _payload_column(store)
    for position, data in zip(positions, PAYLOADS, strict=True):
        if data in (b'{"amount": 5, "note": "caf\xc3\xa9"}', b'  {"spaced": true}', b'{"pair": "\\ud83d\\ude00"}'):
            assert shown[position] == json.loads(data)
        else:
            assert shown[position] == _placeholder(data), data[:20]


async def test_stream_reads_honour_gt_lte_desc_and_limit(store: EventStore) -> None:
    await store.append_bytes("bank", [ByteEvent("s", v, "T", bytes([v])) for v in range(0, 6)])
    versions = lambda found: [e.version for e in found]  # noqa: E731
    assert versions(await store.read_byte_stream("s")) == [0, 1, 2, 3, 4, 5]
    assert versions(await store.read_byte_stream("s", gt=1, lte=4)) == [2, 3, 4]
    assert versions(await store.read_byte_stream("s", lte=4, desc=True, limit=1)) == [4]
    assert versions(await store.read_byte_stream("s", desc=True)) == [5, 4, 3, 2, 1, 0]
    assert await store.read_byte_stream("nobody") == []


async def test_a_conflict_writes_nothing_tracking_included(store: EventStore) -> None:
    await store.append_bytes("bank", [ByteEvent("a", 1, "T", b"1")])
    with pytest.raises(RecordConflict, match="^stream 'a' already has version 1: nothing was written$") as caught:
        await store.append_bytes("bank", [ByteEvent("b", 1, "T", b"x"), ByteEvent("b", 2, "T", b"y"),
                                          ByteEvent("a", 1, "T", b"z")], tracking=("proc", 10))
    assert (caught.value.stream_id, caught.value.version) == ("a", 1)
    assert await store.read_byte_stream("b") == []
    assert await store.tracking_position("proc") is None
    assert [e.payload for e in await store.read_byte_log(None, after=0, limit=10)] == [b"1"]
    with pytest.raises(RecordConflict, match="^stream 'c' version 3 is given twice in one call"):
        await store.append_bytes("bank", [ByteEvent("c", 3, "T", b""), ByteEvent("c", 3, "T", b"")])
    assert await store.read_byte_stream("c") == []
    # Positions stay shared and in order after the refused appends.
    later = await store.append_bytes("bank", [ByteEvent("b", 1, "T", b"x")])
    assert later[0] > 1 and [e.version for e in await store.read_byte_stream("b")] == [1]


async def test_tracking_only_moves_up(store: EventStore) -> None:
    assert await store.tracking_position("p") is None
    await store.record_tracking("p", 5)
    assert await store.tracking_position("p") == 5
    for stale in (5, 4):
        with pytest.raises(RecordConflict, match=f"^tracking 'p' is at position 5; position {stale} is not above it"):
            await store.record_tracking("p", stale)
    with pytest.raises(RecordConflict, match="^tracking 'p' is at position 5; position 5 is not above it"):
        await store.append_bytes("bank", [ByteEvent("x", 1, "T", b"")], tracking=("p", 5))
    assert await store.read_byte_stream("x") == []
    assert await store.append_bytes("bank", [], tracking=("p", 7)) == []
    assert await store.tracking_position("p") == 7
    positions = await store.append_bytes("bank", [ByteEvent("x", 1, "T", b"")], tracking=("p", 8))
    assert len(positions) == 1 and await store.tracking_position("p") == 8
    assert await store.append_bytes("bank", []) == []


async def test_record_tracking_with_commits_the_read_model_change_with_it_or_neither(store: EventStore) -> None:
    await store.database.write(lambda c: c.execute(text("CREATE TABLE rm_counts (name VARCHAR(20) PRIMARY KEY, n BIGINT)")))

    def insert(name: str) -> Any:
        def work(conn: Any) -> str:
            conn.execute(text("INSERT INTO rm_counts (name, n) VALUES (:name, 1)"), {"name": name})
            return f"inserted {name}"
        return work

    def rows() -> Any:
        return store.database.read(lambda c: sorted(c.execute(text("SELECT name FROM rm_counts")).scalars()))

    assert await store.record_tracking("view", 3, with_=insert("a")) == "inserted a"
    assert await rows() == ["a"] and await store.tracking_position("view") == 3
    with pytest.raises(DBAPIError):  # the read model's own error: a duplicate key
        await store.record_tracking("view", 4, with_=insert("a"))
    assert await store.tracking_position("view") == 3, "the failed read model change rolled the tracking back"
    ran: list[int] = []
    with pytest.raises(RecordConflict):
        await store.record_tracking("view", 2, with_=lambda c: ran.append(1))
    assert ran == [] and await rows() == ["a"]
    assert await store.record_tracking("view", 4) is None


async def test_facta_events_and_byte_events_share_one_log(store: EventStore) -> None:
    class Opened(DomainEvent, name="bytes_test.opened"):
        owner: str

    await store.append_bytes("bank", [ByteEvent("acc", 1, "Opened", b'{"owner": "ann"}')])
    facta_result = await store.append("facta-1", "bank", [Opened(owner="bo")], expected_version=0)
    assert facta_result.positions == (2,)
    with pytest.raises(ConcurrencyError, match="stream 'acc': expected version 0, actual version 1"):
        await store.append("acc", "bank", [Opened(owner="cy")], expected_version=0)
    with pytest.raises(StreamTypeMismatch, match="stream 'acc' is of stream type 'bank', not 'shop'"):
        await store.append("acc", "shop", [Opened(owner="cy")], expected_version=None)
    with pytest.raises(StreamTypeMismatch, match="stream 'facta-1' is of stream type 'bank', not 'shop'"):
        await store.append_bytes("shop", [ByteEvent("facta-1", 2, "X", b"")])
    with pytest.raises(RecordConflict, match="stream 'facta-1' already has version 1"):
        await store.append_bytes("bank", [ByteEvent("facta-1", 1, "X", b"")])
    # A facta append at the byte stream's next version, and a byte event after it.
    dee = await store.append("acc", "bank", [Opened(owner="dee")], expected_version=1)
    # (On PostgreSQL the refused byte append above took a position and left it unused: a gap.)
    (closed,) = await store.append_bytes("bank", [ByteEvent("acc", 3, "Closed", b"\x01")])
    log = [1, 2, dee.positions[0], closed]
    assert log == sorted(set(log))
    found = await store.read_byte_stream("acc")
    assert [(e.version, e.position) for e in found] == [(1, 1), (2, log[2]), (3, log[3])]
    assert json.loads(found[1].payload) == {"owner": "dee"}  # a facta event: its payload's JSON text
    assert [e.position for e in await store.read_byte_log(None, after=0, limit=10)] == log
    assert [e.position for e in await store.read_byte_log("bank", after=1, limit=2)] == log[1:3]
    assert [e.position for e in await store.read_byte_log("bank", after=0, limit=10, stop=log[2],
                                                          event_types=["Opened"])] == [1]
    assert await store.last_byte_position("bank") == log[3] and await store.last_byte_position("shop") is None
    assert await store.last_byte_position(None) == log[3]
    assert [e.version for e in await store.read_stream("acc")] == [1, 2, 3]


async def test_byte_snapshots_round_trip_and_refuse_a_taken_version(store: EventStore) -> None:
    await store.append_byte_snapshots("bank", [ByteEvent("acc", v, "Snap", bytes([v]) * v) for v in (1, 3, 5)])
    with pytest.raises(RecordConflict, match="^stream 'acc' already has a snapshot at version 3: nothing was written$"):
        await store.append_byte_snapshots("bank", [ByteEvent("acc", 7, "Snap", b""), ByteEvent("acc", 3, "Snap", b"!")])
    found = await store.read_byte_snapshots("acc")
    assert [(s.version, s.payload, s.event_type) for s in found] == [(v, bytes([v]) * v, "Snap") for v in (1, 3, 5)]
    assert [s.version for s in await store.read_byte_snapshots("acc", lte=4, desc=True, limit=1)] == [3]
    assert [s.version for s in await store.read_byte_snapshots("acc", gt=1)] == [3, 5]
    with pytest.raises(RecordConflict, match="given twice"):
        await store.append_byte_snapshots("bank", [ByteEvent("acc", 9, "S", b""), ByteEvent("acc", 9, "S", b"")])
    assert [s.version for s in await store.read_byte_snapshots("acc")] == [1, 3, 5]


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.append_bytes("bank", [ByteEvent("a", 1, "T", "text")]), "events[0].payload must be bytes, got str"),
    (lambda s: s.append_bytes("bank", ByteEvent("a", 1, "T", b"")), "events must be a list of ByteEvent"),
    (lambda s: s.append_bytes("", [ByteEvent("a", 1, "T", b"")]), "stream type must not be empty"),
    (lambda s: s.append_bytes("bank", [ByteEvent("a", 2**31, "T", b"")]), "events[0].version 2147483648 is out of range"),
    (lambda s: s.append_bytes("bank", [ByteEvent("a\x00", 1, "T", b"")]), "contains the NUL character"),
    (lambda s: s.append_bytes("bank", [], tracking=("t", -2**63 - 1)), "tracking position"),
    (lambda s: s.record_tracking("x" * 201, 1), "tracking name"),
    (lambda s: s.read_byte_log("bank", after=0, limit=0), "limit 0 is out of range"),
])
async def test_bad_input_is_one_line_before_any_io(store: EventStore, call: Any, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        await call(store)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert await store.read_byte_log(None, after=0, limit=10) == []


async def test_a_stored_byte_event_and_snapshot_refuse_update(store: EventStore) -> None:
    await store.append_bytes("bank", [ByteEvent("a", 1, "T", b"\x01")])
    await store.append_byte_snapshots("bank", [ByteEvent("a", 1, "S", b"\x02")])
    for statement in ("UPDATE facta_events SET payload_bytes = NULL",
                      "UPDATE facta_events SET payload_bytes = payload_bytes",
                      "UPDATE facta_snapshots SET state_bytes = NULL",
                      "DELETE FROM facta_events"):
        with pytest.raises(DBAPIError, match="append-only|keeps a snapshot"):
            await store.database.write(lambda c, s=statement: c.execute(text(s)))
    assert [e.payload for e in await store.read_byte_stream("a")] == [b"\x01"]
    assert [s.payload for s in await store.read_byte_snapshots("a")] == [b"\x02"]


async def test_wait_for_append_wakes_on_this_stores_appends_and_polls_for_others(migrated_url: str) -> None:
    async with await EventStore.open(migrated_url) as store, await EventStore.open(migrated_url) as other:
        await store.wait_for_append(0, 0.01)  # nothing stored: returns at the timeout
        waiter = asyncio.create_task(store.wait_for_append(0, 60))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await store.append_bytes("bank", [ByteEvent("a", 1, "T", b"")])
        await asyncio.wait_for(waiter, 30)
        waiter = asyncio.create_task(store.wait_for_append(1, 60))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await other.append_bytes("bank", [ByteEvent("a", 2, "T", b"")])  # another store object: polled
        await asyncio.wait_for(waiter, 30)
        await store.wait_for_append(0, 60)  # past already: returns at once


@pytest.mark.postgres
async def test_read_byte_log_never_passes_an_append_in_flight_postgres(postgres_url: str) -> None:
    """An append holding the writer marker has taken position 2 and not committed; byte
    appends after it committed 3 and 4. A log read returns nothing above 1 until it
    ends, then everything: a follower paging with read_byte_log never skips position 2."""
    await migrate(postgres_url)
    store = await EventStore.open(postgres_url)
    raw = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    reader: asyncio.Task[Any] | None = None
    try:
        await store.append_bytes("bank", [ByteEvent("a", 1, "T", b"1")])
        assert [e.position for e in await store.read_byte_log("bank", after=0, limit=10, stop=1)] == [1]
        tx = raw.transaction()
        await tx.start()
        await raw.execute("SELECT pg_advisory_xact_lock_shared($1, $2)", *WRITER_MARKER)
        held = await raw.fetchval("SELECT facta_take_positions(1)")
        assert held == 2
        await raw.execute(
            "INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,"
            " payload, occurred_at, recorded_at, payload_bytes) VALUES ($1, $2, 'held', 'bank', 1, 'T', 1, '{}', now(),"
            " now(), '\\x02'::bytea)", held, uuid.uuid4(),
        )
        assert await store.append_bytes("bank", [ByteEvent("b", 1, "T", b"3"), ByteEvent("b", 2, "T", b"4")]) == [3, 4]
        reader = asyncio.create_task(store.read_byte_log("bank", after=1, limit=10))
        await asyncio.wait({reader}, timeout=1.0)
        assert not reader.done(), f"read_byte_log read past an append in flight: {reader}"
        await tx.commit()
        found = await asyncio.wait_for(reader, 10)
        assert [(e.position, e.payload) for e in found] == [(2, b"\x02"), (3, b"3"), (4, b"4")]
        assert await store.last_byte_position("bank") == 4
    finally:
        await raw.close()
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await store.close()


async def test_the_downgrade_refuses_to_drop_stored_bytes(migrated_url: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        await store.append_bytes("bank", [ByteEvent("a", 0, "T", b"\xff")])
        with pytest.raises(MigrationRefused, match="drops facta_events.payload_bytes"):
            await migrations.downgrade(store.database, "0008")
        assert await migrations.known_current(store.database) == migrations.head()
        assert [e.payload for e in await store.read_byte_stream("a")] == [b"\xff"]
        # Asked to: the bytes go (the rows stay: events are never deleted), and the
        # upgrade after it works; the row then reads as its payload column.
        await migrations.downgrade(store.database, "0008", drop_events=True)
        await migrations.upgrade(store.database)
        assert [json.loads(e.payload) for e in await store.read_byte_stream("a")] == [_placeholder(b"\xff")]


async def test_down_and_up_again_keeps_facta_events_and_the_checks(migrated_url: str) -> None:
    class Noted(DomainEvent, name="bytes_test.noted"):
        text: str

    async with await EventStore.open(migrated_url, check_schema=False) as store:
        await store.append("n", "note", [Noted(text="kept")], expected_version=0)
        await migrations.downgrade(store.database, "0008")
        insert = ("INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,"
                  " payload, occurred_at, recorded_at) VALUES (:id, 'z', 't', 0, 'T', 1, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
        with pytest.raises(DBAPIError, match="ck_facta_events_version_positive|CHECK constraint"):
            await store.database.write(lambda c: c.execute(text(insert).bindparams(
                id=uuid.uuid4().hex if store.database.dialect == "sqlite" else uuid.uuid4())))
        await migrations.upgrade(store.database)
        await store.append_bytes("note", [ByteEvent("z", 0, "T", b"")])
        assert [json.loads(r.payload) for r in await store.read_stream("n")] == [{"text": "kept"}]
        assert [e.version for e in await store.read_byte_stream("z")] == [0]


# -- audit, the relay and projections read byte-event rows ----------------------------------------


class Deposited(DomainEvent, name="bytes_test.deposited"):
    amount: int


class ByteTotals(Projection, name="bytes_test_totals"):
    totals = read_model_table(
        "bytes_test_totals",
        Column("account", String(100), primary_key=True),
        Column("total", BigInteger, nullable=False),
    )

    @handles(Deposited)
    def _deposited(self, rm: ReadModel, event: Deposited, record: RecordedEvent) -> None:
        rm.upsert(self.totals, {"account": record.stream_id}, add={"total": event.amount})


async def test_audit_relay_encoding_and_a_store_log_projection_read_byte_events(store: EventStore) -> None:
    await store.append_bytes("bank", [
        ByteEvent("acc-1", 1, "bytes_test.deposited", b'{"amount": 5}'),
        ByteEvent("acc-1", 2, "cipher.Opaque", os.urandom(64)),
        ByteEvent("acc-2", 1, "bytes_test.deposited", b'{"amount": 7}'),
        ByteEvent("acc-1", 3, "bytes_test.deposited", b'{"amount": 11}'),
        ByteEvent("acc-2", 2, "zlib.Compressed", b"x\x9c\x03\x00\x00\x00\x00\x01"),
    ])
    history = await audit.history(store, "acc-1")
    assert [r.version for r in history] == [1, 2, 3]
    assert json.loads(history[1].payload)["$opaque"]["length"] == 64
    page = await audit.events(store, stream_types=["bank"], limit=10)
    assert [r.position for r in page.events] == [1, 2, 3, 4, 5]
    assert await audit.trace(store, "no-such-correlation") == []
    records = encode_rows(await store.read_log_rows(0, 10))
    assert len(records) == 5
    key, value, headers, _ = records[1]
    assert key == b"acc-1" and json.loads(value)["$opaque"]["length"] == 64
    assert dict(headers)["event-type"] == b"cipher.Opaque"
    assert await ProjectionRunner(store, ByteTotals).run(once=True) >= 3
    totals = await store.database.read(
        lambda c: dict(c.execute(select(ByteTotals.totals.c.account, ByteTotals.totals.c.total)).all()))
    assert totals == {"acc-1": 16, "acc-2": 7}


async def test_the_audit_cli_shows_byte_events(migrated_url: str) -> None:
    from ..cli.test_cli import facta

    async with await EventStore.open(migrated_url) as store:
        await store.append_bytes("bank", [ByteEvent("acc-9", 0, "Created", b"{}"),
                                          ByteEvent("acc-9", 1, "Opened", b'{"owner": "ann"}')])
        await store.append("dep-1", "deposit", [Deposited(amount=3)], expected_version=0, correlation_id="corr-1")
        await store.append_bytes("bank", [ByteEvent("acc-9", 2, "Sealed", b"\x00\x01")])
    db = ("--database-url", migrated_url)
    for args in (("audit", "history", "acc-9", "--json"), ("audit", "events", "--json"),
                 ("audit", "trace", "corr-1", "--json"), ("audit", "history", "acc-9")):
        result = facta(*args, *db)
        assert result.returncode == 0, (args, result.stderr)
    assert [e["position"] for e in json.loads(facta("audit", "events", "--json", *db).stdout)["events"]] == [1, 2, 3, 4]
    assert [e["position"] for e in json.loads(facta("audit", "trace", "corr-1", "--json", *db).stdout)] == [3]
    listed = json.loads(facta("audit", "history", "acc-9", "--json", *db).stdout)
    assert [(e["version"], e["payload"]) for e in listed] == [(0, {}), (1, {"owner": "ann"}),
                                                              (2, _placeholder(b"\x00\x01"))]


def test_events_table_lists_payload_bytes_but_log_reads_do_not() -> None:
    from facta.eventstore._rows import LOG_COLUMNS

    assert "payload_bytes" in events_table.c and "payload_bytes" not in LOG_COLUMNS
    assert LOG_COLUMNS[-3:] == ("causation_id", "traceparent", "tracestate")  # revision 0013


async def test_each_append_gets_one_contiguous_range_under_concurrent_writers(migrated_url: str) -> None:
    """Six store objects append at once (batches of 25 and single events, the log read
    back afterwards): every call's positions are one unbroken range holding exactly its
    own events in the order given (eventsourcing's non-interleaving notification ids)."""
    stores = [await EventStore.open(migrated_url) for _ in range(6)]
    try:
        async def writer(k: int) -> list[tuple[list[int], list[tuple[str, int]]]]:
            calls = []
            for j in range(8):
                size = 25 if k % 2 == 0 else 1
                batch = [ByteEvent(f"w{k}-{j}-{i % 3}", i, "T", f"{k}/{j}/{i}".encode()) for i in range(size)]
                positions = await stores[k].append_bytes("bank", batch)
                calls.append((positions, [(e.stream_id, e.version) for e in batch]))
            return calls

        results = [c for calls in await asyncio.gather(*(writer(k) for k in range(6))) for c in calls]
        log = {e.position: (e.stream_id, e.version) for e in await stores[0].read_byte_log("bank", after=0, limit=10_000)}
        assert len(log) == 3 * 8 * 25 + 3 * 8
        for positions, keys in results:
            assert positions == list(range(positions[0], positions[0] + len(keys)))
            assert [log[p] for p in positions] == keys
    finally:
        for s in stores:
            await s.close()


# -- the payload column's cheap suspect test ---------------------------------------------------

# Every character the suspect pattern names, and some it does not.
_SUSPECT_ALPHABET = '-0.\\u0000NaInfityeE+9dD8fA"{}:, x'


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_SUSPECT_ALPHABET, max_size=24))
def test_the_cheap_suspect_test_agrees_with_the_pattern(value: str) -> None:
    assert _suspect(value) == (_SUSPECT_BYTES.search(value) is not None)


@pytest.mark.parametrize("value", [
    "", "{}", '{"a":1}', '{"a":-0.0}', '{"a":"\\u0000"}', '{"a":NaN}', '{"a":Infinity}', '{"a":1e5}', '{"a":1E+5}',
    '{"a":1e-5}', '{"a":"e5"}', '{"a":"\\ud800"}', '{"a":"\\uD9ff"}', '{"a":"\\u00e9"}', '{"a":"\\ue000"}',
    '{"a":"-0.01"}', '{"a":"x9e"}',
])
def test_the_cheap_suspect_test_on_each_alternative(value: str) -> None:
    assert _suspect(value) == (_SUSPECT_BYTES.search(value) is not None)


def test_event_ids_of_sqlite_byte_appends_are_fresh_version_4_uuids() -> None:
    ids = [event_id_hex() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every bit outside the version and variant fields takes both values somewhere
    ored = 0
    anded = (1 << 128) - 1
    for value in ids:
        ored |= int(value, 16)
        anded &= int(value, 16)
    assert ored == (1 << 128) - 1 - (0xB << 76) - (0x4 << 60)  # version 0100, variant 10
    assert anded == (0x4 << 76) | (0x8 << 60)
