"""The trace context an append records (revision 0013) and the store's database spans.

Each append call records one W3C trace context in every event it stores (columns
``traceparent`` / ``tracestate``): its own CLIENT span's when an OpenTelemetry SDK records
(the ``spans`` fixture, tests/tracing_fixtures.py), else the current span's when valid,
else none. Every read returns them. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from facta import migrations, tracing
from facta.domain.reference import Account
from facta.eventstore import ByteEvent, EventStore, Repository, StreamAppend
from facta.eventstore.database import Database
from facta.eventstore.schema import events
from facta.domain import DomainEvent

TRACEPARENT_LENGTH = 55


class Opened(DomainEvent, name="trace_test.opened"):
    owner: str


class Deposited(DomainEvent, name="trace_test.deposited"):
    amount: int


def _fields(span: Any) -> tuple[str, str | None]:
    """The W3C texts of a finished SDK span's context, as the store should hold them."""
    c = span.get_span_context()
    state = ",".join(f"{k}={v}" for k, v in c.trace_state.items()) or None
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}", state


async def _stored(store: EventStore) -> list[tuple[int, str | None, str | None]]:
    def read(conn: Any) -> list[tuple[int, str | None, str | None]]:
        c = events.c
        return [tuple(r) for r in conn.execute(select(c.position, c.traceparent, c.tracestate).order_by(c.position))]

    return await store.database.read(read)


def _app_tracer() -> Any:
    """The test's own tracer, from the provider the ``spans`` fixture gave facta."""
    assert tracing._override is not None
    return tracing._override.get_tracer("tests")


async def test_without_an_sdk_nothing_is_recorded_and_the_columns_stay_null(store: EventStore) -> None:
    assert tracing.tracer() is None  # no SDK provider anywhere in the test process's facta
    await store.append("acct-1", "account", [Opened(owner="ann")], expected_version=0)
    await store.append_many([StreamAppend("acct-2", "account", [Opened(owner="bob")], 0),
                             StreamAppend("acct-3", "account", [Opened(owner="cy")], 0)])
    await store.append_bytes("bytes", [ByteEvent("b-1", 1, "t", b"\x00\x01")])
    account = Account.open("acct-9", "dee", "EUR")
    await Repository(store).save(account)
    stored = await _stored(store)
    assert len(stored) == 5
    assert all(tp is None and ts is None for _, tp, ts in stored)
    assert all(r.traceparent is None and r.tracestate is None for r in await store.read_log())


async def test_every_append_path_records_its_span_context_and_every_read_returns_it(
    store: EventStore, spans: Any,
) -> None:
    from opentelemetry.trace import SpanKind, TraceState, set_span_in_context

    app = _app_tracer()
    with app.start_as_current_span("open accounts"):
        await store.append("acct-1", "account", [Opened(owner="ann"), Deposited(amount=5)], expected_version=0)
    # A tracestate set on the current trace is carried on (the W3C list-members text).
    with app.start_as_current_span("with state") as outer:
        parent = outer.get_span_context()
        stated = type(parent)(parent.trace_id, parent.span_id, parent.is_remote, parent.trace_flags,
                              TraceState([("vendor", "v1"), ("other", "x")]))
        from opentelemetry.trace import NonRecordingSpan

        with app.start_as_current_span("child", context=set_span_in_context(NonRecordingSpan(stated))):
            await store.append_many([StreamAppend("acct-2", "account", [Opened(owner="bob")], 0),
                                     StreamAppend("acct-3", "account", [Opened(owner="cy")], 0)])
    await store.append_bytes("bytes", [ByteEvent("b-1", 1, "t", b"\x00\x01"), ByteEvent("b-1", 2, "t", b"{}")])
    await Repository(store).save(Account.open("acct-9", "dee", "EUR"))

    finished = spans.get_finished_spans()
    appends = [s for s in finished if s.name in ("append facta_events", "append_bytes facta_events")]
    assert [s.name for s in appends] == ["append facta_events"] * 2 + ["append_bytes facta_events",
                                                                      "append facta_events"]
    dialect = store.database.dialect
    for span, size in zip(appends, (2, 2, 2, None), strict=True):
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["db.system.name"] == dialect
        assert span.attributes["db.collection.name"] == "facta_events"
        assert span.attributes.get("db.operation.batch.size") == size
    assert appends[0].attributes["db.operation.name"] == "append"
    assert appends[2].attributes["db.operation.name"] == "append_bytes"
    by_name = {s.name: s for s in finished}
    # An append inside the application's span is its child; one outside starts a trace.
    assert appends[0].parent.span_id == by_name["open accounts"].context.span_id
    assert appends[1].parent.span_id == by_name["child"].context.span_id
    assert appends[3].parent is None
    expected = [_fields(appends[0])] * 2 + [_fields(appends[1])] * 2 + [_fields(appends[2])] * 2 + [_fields(appends[3])]
    assert expected[2][1] == "vendor=v1,other=x"
    assert all(len(tp) == TRACEPARENT_LENGTH for tp, _ in expected)
    assert [(tp, ts) for _, tp, ts in await _stored(store)] == expected

    # Every read returns them: the log (records and raw rows), a stream, one event, a query.
    log = await store.read_log()
    assert [(r.traceparent, r.tracestate) for r in log] == expected
    assert [(row[13], row[14]) for row in await store.read_log_rows()] == expected
    window, _ = await store.read_log_window()
    assert [(r.traceparent, r.tracestate) for r in window] == expected
    assert [(r.traceparent, r.tracestate) for r in await store.read_stream("acct-2")] == [expected[2]]
    got = await store.get_event(log[0].event_id)
    assert got is not None and (got.traceparent, got.tracestate) == expected[0]
    found = await store.find_events(events.c.stream_id == "acct-3")
    assert [(r.traceparent, r.tracestate) for r in found] == [expected[3]]
    assert [(r.traceparent, r.tracestate) async for r in store.iter_log(page_size=2)] == expected


async def test_log_reads_are_database_client_spans(store: EventStore, spans: Any) -> None:
    from opentelemetry.trace import SpanKind

    await store.append("acct-1", "account", [Opened(owner="ann"), Deposited(amount=5)], expected_version=0)
    spans.clear()
    await store.read_log()
    await store.read_log_rows(0, 1)
    await store.read_log_window()
    reads = spans.get_finished_spans()
    assert [s.name for s in reads] == ["read_log facta_events"] * 3
    assert all(s.kind is SpanKind.CLIENT and s.attributes["db.operation.name"] == "read_log"
               and s.attributes["db.system.name"] == store.database.dialect for s in reads)
    # The batch size is the rows read, from 2 on (the conventions: never 1).
    assert [s.attributes.get("db.operation.batch.size") for s in reads] == [2, None, 2]
    # The polls (the relay's read_log_rows, the runners' read_log_window) of a store with
    # nothing new record no span: an idle relay or runner would otherwise start a trace
    # per poll, several a second, forever. A read_log the application asks for still does.
    spans.clear()
    head = await store.head_position()
    assert await store.read_log_rows(head, 10) == []
    assert await store.read_log_window(head) == ([], head)
    assert spans.get_finished_spans() == ()
    assert await store.read_log(head) == []
    assert [s.name for s in spans.get_finished_spans()] == ["read_log facta_events"]
    # A window that passed over events of other types read something: it has its span.
    spans.clear()
    assert await store.read_log_window(0, event_types=["nothing.of.this.type"]) == ([], head)
    (passed,) = spans.get_finished_spans()
    assert passed.kind is SpanKind.CLIENT and passed.start_time < passed.end_time


async def test_instrument_false_records_no_span_and_no_context(store: EventStore, spans: Any) -> None:
    tracing.instrument(False)
    try:
        with _app_tracer().start_as_current_span("app"):
            await store.append("acct-1", "account", [Opened(owner="ann")], expected_version=0)
    finally:
        tracing.instrument(True)
    assert [s.name for s in spans.get_finished_spans()] == ["app"]
    assert await _stored(store) == [(1, None, None)]


async def test_a_context_propagated_without_an_sdk_is_recorded(store: EventStore) -> None:
    """No SDK, but a valid context extracted from an incoming request (the API alone can
    do that): the append records it, facta makes no span of its own."""
    from opentelemetry import context as otel_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "congo=t61"}
    token = otel_context.attach(TraceContextTextMapPropagator().extract(incoming))
    try:
        assert tracing.tracer() is None
        await store.append("acct-1", "account", [Opened(owner="ann")], expected_version=0)
    finally:
        otel_context.detach(token)
    assert await _stored(store) == [(1, incoming["traceparent"], incoming["tracestate"])]


def test_a_long_tracestate_keeps_whole_members_up_to_512_characters() -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    members = [(f"k{i:02d}", "v" * 40) for i in range(20)]  # 20 members of 45 characters
    span = NonRecordingSpan(SpanContext(1, 2, False, TraceFlags(1), TraceState(members)))
    traceparent, tracestate = tracing.trace_fields(span)
    assert traceparent == "00-" + "0" * 31 + "1-" + "0" * 15 + "2-01"
    assert tracestate is not None and len(tracestate) <= 512
    assert tracestate == ",".join(f"{k}={v}" for k, v in members[:11])  # 11 * 46 - 1 = 505


def test_context_of_reads_back_what_trace_fields_wrote_and_ignores_garbage() -> None:
    assert tracing.context_of(None) is None
    assert tracing.context_of("not a traceparent") is None
    assert tracing.context_of("00-00000000000000000000000000000000-b7ad6b7169203331-01") is None  # invalid trace id
    found = tracing.context_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a=1")
    assert found is not None and found.is_remote
    assert (found.trace_id, found.span_id, found.trace_state.to_header()) == (
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, "a=1")


def test_importing_the_store_does_not_load_opentelemetry_trace() -> None:
    """facta imports ``opentelemetry.trace`` only when someone else did (28 ms otherwise),
    and the SDK never."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", "import sys, facta.eventstore, facta.tracing; facta.tracing.tracer();"
                               " print(any(m.split('.')[:2] in (['opentelemetry', 'trace'], ['opentelemetry', 'sdk'])"
                               " for m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


async def test_a_store_upgraded_from_0012_keeps_its_events_and_records_contexts(backend_url: str, spans: Any) -> None:
    await migrations.upgrade_url(backend_url, "0012")
    old_id = uuid.uuid4()
    database = Database.create(backend_url)
    try:
        def write_old(conn: Any) -> None:  # an event as revision 0012 stored it: no trace columns
            now = datetime(2026, 12, 1, tzinfo=UTC)
            conn.execute(insert(events).values(
                position=1, event_id=old_id, stream_id="acct-old", stream_type="account", version=1,
                event_type=Opened.event_type, schema_version=1, payload='{"owner":"old"}', occurred_at=now,
                recorded_at=now))

        await database.write(write_old)
    finally:
        await database.dispose()
    await migrations.upgrade_url(backend_url)
    async with await EventStore.open(backend_url) as store:
        with _app_tracer().start_as_current_span("after the upgrade"):
            await store.append("acct-old", "account", [Deposited(amount=3)], expected_version=1)
        await store.append_bytes("bytes", [ByteEvent("b-1", 1, "t", b"\x00")])
        log = await store.read_log()
        assert [r.event_id for r in log][:1] == [old_id]
        assert (log[0].traceparent, log[0].tracestate) == (None, None)
        appended = [s for s in spans.get_finished_spans() if s.name.endswith(" facta_events")
                    and s.attributes["db.operation.name"].startswith("append")]
        assert [(r.traceparent, r.tracestate) for r in log[1:]] == [_fields(s) for s in appended]
        # The columns can no more be changed than any other (the append-only triggers).
        with pytest.raises(Exception, match="append-only"):
            await store.database.write(lambda conn: conn.execute(
                text("UPDATE facta_events SET traceparent = NULL WHERE position = 2")))
    # Down to 0012 and up again: the events stay, the columns come back empty.
    database = Database.create(backend_url)
    try:
        await migrations.downgrade(database, "0012", drop_events=True)
        assert await migrations.current(database) == "0012"
    finally:
        await database.dispose()
    await migrations.upgrade_url(backend_url)
    async with await EventStore.open(backend_url) as store:
        assert [(r.position, r.traceparent) for r in await store.read_log()] == [(1, None), (2, None), (3, None)]
        await store.append("acct-new", "account", [Opened(owner="new")], expected_version=0)
        assert (await store.read_log(3))[0].stream_id == "acct-new"


def _traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def test_a_batch_of_one_context_is_its_child_and_of_several_a_new_trace_linked_to_each(spans: Any) -> None:
    chosen = tracing.tracer()
    assert chosen is not None
    one = [(_traceparent(7, 1), None)] * 3
    span = tracing.producer_span(chosen, "facta.ride", 2, [b"ride-1"] * 3, one)
    tracing.end_producer_span(span, 41, None)
    several = [(_traceparent(7, 1), None), (_traceparent(8, 2), "a=1"), (_traceparent(7, 1), None), (None, None)]
    other = tracing.producer_span(chosen, "facta.ride", 0, [b"ride-1", b"ride-2", b"ride-1", b"ride-3"], several)
    tracing.end_producer_span(other, None, None)  # abandoned: no offset
    first, second = spans.get_finished_spans()
    assert (first.parent.trace_id, first.parent.span_id, first.context.trace_id) == (7, 1, 7)
    assert [(link.context.trace_id, link.context.span_id) for link in first.links] == [(7, 1)]
    assert dict(first.attributes) == {
        "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.operation.name": "send",
        "messaging.destination.name": "facta.ride", "messaging.destination.partition.id": "2",
        "messaging.batch.message_count": 3, "messaging.kafka.message.key": "ride-1", "messaging.kafka.offset": 41,
    }
    assert second.parent is None and second.context.trace_id not in (7, 8)
    assert [(link.context.trace_id, link.context.span_id, link.context.trace_state.to_header())
            for link in second.links] == [(7, 1, ""), (8, 2, "a=1")]
    assert "messaging.kafka.message.key" not in second.attributes  # several keys
    assert "messaging.kafka.offset" not in second.attributes


def test_a_refused_batch_ends_its_span_as_an_error_and_links_are_bounded(spans: Any) -> None:
    chosen = tracing.tracer()
    assert chosen is not None
    many = [(_traceparent(9, n), None) for n in range(1, tracing.MAX_LINKS + 50)]
    span = tracing.producer_span(chosen, "facta.ride", 0, [b"k"] * len(many), many)
    tracing.end_producer_span(span, None, ValueError("record too large"))
    (done,) = spans.get_finished_spans()
    assert len(done.links) == tracing.MAX_LINKS
    assert done.status.status_code.name == "ERROR" and done.attributes["error.type"] == "ValueError"
    assert [e.name for e in done.events] == ["exception"]
