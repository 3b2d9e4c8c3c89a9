"""One ride's trace, command to read model (issue 15): the whole span tree, asserted.

A rider's trip ends inside the application's span ``end trip``; the save's CLIENT span
``append facta_events`` is the context the ride's events store (revision 0013). From
there, on the store-log source and on the Kafka source (the relay's PRODUCER ``send``
spans carry it as the records' ``traceparent`` header, the runners read it back):

    end trip                                  (the application's span)
    └── append facta_events        CLIENT     (the save; its context is stored)
        ├── send <prefix>.ride     PRODUCER   (Kafka only: the relay's batch)
        ├── process <destination>  CONSUMER   (ride_board's batch)
        └── process <destination>  CONSUMER   (billing_process's batch)
            └── process <dest.>    CONSUMER   (billing_process handling TripEnded)
                └── append facta_events CLIENT (its charges; their stored context)
                    └── send <prefix>.account PRODUCER x2 (Kafka only: each account's charge)

against real Apache Kafka (tests/kafka_fixtures.py), on SQLite and PostgreSQL, with the
OpenTelemetry SDK's in-memory exporter (the ``spans`` fixture). Then a replay of
ride_board links its batch to the stored context: it survives a rebuild. On Kafka the
ride's records carry the stored context as their ``traceparent`` header. Without an SDK
the same ride stores no context and the relay sends no such header.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from facta import tracing
from facta.domain.reference import Account, Location, Ride, Tariff
from facta.eventstore import EventStore, Repository
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import ProjectionRunner, RunnerConfig
from facta.projections.kafka_source import KafkaSettings
from facta.projections.reference import Billing, BillingProcess, RideBoard
from facta.projections.replay import ReplayFrom, replay
from tests.projections.test_source_contract import consume_all

TARIFF = Tariff(currency="EUR", base=250, per_km=120, per_minute=30, minimum=700)
RIDE = "ride-7f1c"
DRIVER = "driver-1"


@dataclass
class Source:
    kind: str  # "log" | "kafka"
    prefix: str
    broker: Any = None

    def settings(self) -> KafkaSettings | None:
        if self.kind != "kafka":
            return None
        return KafkaSettings(bootstrap=self.broker.bootstrap, topic_prefix=self.prefix, group_prefix=f"g-{self.prefix}",
                             session_timeout_ms=6_000, heartbeat_interval_ms=500, request_timeout_ms=10_000)

    async def relay(self, store: EventStore) -> None:
        if self.kind == "kafka":
            config = RelayConfig(bootstrap=self.broker.bootstrap, topic_prefix=self.prefix, partitions=2,
                                 idempotence=self.broker.supports_idempotence, poll_interval=0.01, max_backoff=0.5,
                                 request_timeout_ms=5_000)
            await Relay(store, config).run(once=True)

    async def run(self, store: EventStore, projection: Any) -> int:
        runner = ProjectionRunner(store, projection, kafka=self.settings(),
                                  config=RunnerConfig(batch_size=100, poll_interval=0.01))
        return await asyncio.wait_for(runner.run(once=True), 60)

    def destination(self, stream_type: str) -> str:
        return f"{self.prefix}.{stream_type}" if self.kind == "kafka" else "facta_events"


@pytest.fixture(params=["log", "kafka"])
def source(request: pytest.FixtureRequest, prefix: str) -> Source:
    if request.param == "kafka":
        return Source("kafka", prefix, request.getfixturevalue("kafka_broker"))
    return Source("log", prefix)


@pytest.fixture
async def store(migrated_url: str) -> Any:
    async with await EventStore.open(migrated_url) as s:
        yield s


async def _ride_until_the_trip(store: EventStore) -> tuple[Repository, Ride]:
    """Accounts opened, a ride requested, accepted and started (no trace of interest)."""
    repo = Repository(store, snapshot_every=None)
    rider = Account.open("acct-rider", "rider", "EUR")
    rider.deposit(100_00, reference="opening deposit")
    await repo.save(rider, Account.open(Billing.driver_account(DRIVER), DRIVER, "EUR"))
    here, there = Location(lat=38.71, lon=-9.14), Location(lat=38.75, lon=-9.12)
    ride = Ride.request(RIDE, "rider", here, there, rider_account="acct-rider")
    ride.offer([DRIVER])
    ride.accept(DRIVER, eta_seconds=120)
    ride.driver_arrived()
    ride.start_trip()
    await repo.save(ride, actor=DRIVER, correlation_id=RIDE)
    return repo, ride


def _one(spans: list[Any], **match: Any) -> Any:
    found = [s for s in spans if all((s.attributes or {}).get(k.replace("__", "."), None) == v
                                     if k not in ("name", "kind") else getattr(s, k) == v
                                     for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} spans match {match}: {[(s.name, dict(s.attributes or {})) for s in spans]}"
    return found[0]


def _fields(span: Any) -> str:
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"


async def test_a_rides_trace_runs_from_the_command_to_the_read_models(
    source: Source, store: EventStore, spans: Any,
) -> None:
    from opentelemetry.trace import SpanKind

    repo, ride = await _ride_until_the_trip(store)
    await source.relay(store)
    for projection in (RideBoard, BillingProcess):  # caught up: the next batches are the trip's end
        await source.run(store, projection)
    spans.clear()

    app = tracing._override.get_tracer("tests")  # type: ignore[union-attr]
    with app.start_as_current_span("end trip"):
        ride.record_telemetry(Location(lat=38.74, lon=-9.13), speed_kmh=31.0)
        ride.end_trip(TARIFF, duration_s=900)
        await repo.save(ride, actor=DRIVER, correlation_id=RIDE)
    await source.relay(store)
    assert await source.run(store, RideBoard) >= 1
    assert await source.run(store, BillingProcess) == 1
    await source.relay(store)  # the charges billing stored go out too

    finished = [s for s in spans.get_finished_spans() if s.name != "read_log facta_events"]
    root = _one(finished, name="end trip")
    trace_id = root.context.trace_id
    kafka = source.kind == "kafka"
    dialect = store.database.dialect

    appends = [s for s in finished if s.name == "append facta_events"]
    save = next(s for s in appends if s.parent is not None and s.parent.span_id == root.context.span_id)
    assert save.kind is SpanKind.CLIENT
    assert dict(save.attributes) == {"db.system.name": dialect, "db.operation.name": "append",
                                     "db.collection.name": "facta_events", "db.operation.batch.size": 2}
    stored = [r for r in await store.read_log() if r.stream_id == RIDE][-2:]
    assert [r.traceparent for r in stored] == [_fields(save)] * 2

    def children(parent: Any) -> list[Any]:
        return [s for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id]

    under_save = children(save)
    board = _one(under_save, facta__projection=RideBoard.name)
    billing_batch = _one(under_save, facta__projection=BillingProcess.name)
    for span in (board, billing_batch):
        assert span.kind is SpanKind.CONSUMER
        assert span.name == f"process {source.destination('ride')}"
        assert span.attributes["messaging.system"] == ("kafka" if kafka else "facta")
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["messaging.destination.name"] == source.destination("ride")
        assert [link.context.span_id for link in span.links] == [save.context.span_id]
        # Kafka: the consumer group the batch came through (messaging.consumer.group.name,
        # the messaging conventions' consumer attribute); the store log has no group.
        group = f"g-{source.prefix}{span.attributes['facta.projection']}" if kafka else None
        assert span.attributes.get("messaging.consumer.group.name") == group
    expected_under_save = {board.context.span_id, billing_batch.context.span_id}
    if kafka:
        send = _one(under_save, name=f"send {source.prefix}.ride")
        assert send.kind is SpanKind.PRODUCER
        attributes = dict(send.attributes)
        offset = attributes.pop("messaging.kafka.offset")
        assert isinstance(offset, int) and offset >= 0
        partition = attributes.pop("messaging.destination.partition.id")
        assert partition in ("0", "1")
        assert attributes == {
            "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.operation.name": "send",
            "messaging.destination.name": f"{source.prefix}.ride", "messaging.kafka.message.key": RIDE,
            "messaging.batch.message_count": 2,
        }
        # The Kafka source read the stored context back from the records' headers.
        assert board.attributes["messaging.destination.partition.id"] == partition
        expected_under_save.add(send.context.span_id)
        # On Kafka, each of the ride's records carries the stored context as its header.
        on_kafka = await consume_all(source.broker.bootstrap, [f"{source.prefix}.ride"],
                                     len([r for r in await store.read_log() if r.stream_id == RIDE]))
        last_two = sorted(on_kafka, key=lambda m: int(dict(m.headers)["position"]))[-2:]
        assert [dict(m.headers).get("traceparent") for m in last_two] == [_fields(save).encode()] * 2
    assert {s.context.span_id for s in under_save} == expected_under_save

    trip_ended = stored[-1]
    handling = _one(children(billing_batch), name=f"process {source.destination('ride')}")
    assert handling.kind is SpanKind.CONSUMER
    assert handling.attributes["messaging.message.id"] == str(trip_ended.event_id)
    assert handling.attributes["facta.event_type"] == "ride.trip_ended"
    assert handling.attributes["facta.projection"] == BillingProcess.name
    assert handling.attributes.get("messaging.consumer.group.name") == (
        f"g-{source.prefix}{BillingProcess.name}" if kafka else None)
    charge = _one(children(handling), name="append facta_events")
    assert charge.kind is SpanKind.CLIENT and charge.attributes["db.operation.batch.size"] == 2
    charges = [r for r in await store.read_log() if r.stream_type == "account"][-2:]
    assert [r.event_type for r in charges] == ["account.transferred_out", "account.transferred_in"]
    assert [r.traceparent for r in charges] == [_fields(charge)] * 2
    if kafka:
        # One batch per account stream (each its own key, whichever partitions they take).
        relayed = [s for s in children(charge) if s.name == f"send {source.prefix}.account"]
        assert len(relayed) == len(children(charge)) == 2
        assert all(s.kind is SpanKind.PRODUCER for s in relayed)
        assert sorted(s.attributes["messaging.kafka.message.key"] for s in relayed) == sorted(
            ["acct-rider", Billing.driver_account(DRIVER)])
    # Everything but the log reads is one trace: the application's.
    assert {s.context.trace_id for s in finished} == {trace_id}

    # A replay rebuilds ride_board from the same events: its batch links the stored context.
    spans.clear()
    await replay(store, RideBoard, ReplayFrom(position=0) if not kafka else ReplayFrom(offset=0),
                 kafka=source.settings())
    rebuilt = [s for s in spans.get_finished_spans() if s.attributes.get("facta.projection") == RideBoard.name]
    assert rebuilt and all(s.kind is SpanKind.CONSUMER for s in rebuilt)
    linked = {link.context.span_id for s in rebuilt for link in s.links}
    assert save.context.span_id in linked
    assert {s.attributes["facta.slot"] for s in rebuilt} != {"live"}


async def test_without_an_sdk_the_ride_records_no_context_anywhere(source: Source, store: EventStore) -> None:
    """No SDK (no ``spans`` fixture): the same ride, relayed and billed, stores no trace
    context, and the relay sends no ``traceparent`` header."""
    assert tracing.tracer() is None
    repo, ride = await _ride_until_the_trip(store)
    ride.end_trip(TARIFF, duration_s=900)
    await repo.save(ride, actor=DRIVER, correlation_id=RIDE)
    await source.relay(store)
    await source.run(store, RideBoard)
    assert await source.run(store, BillingProcess) == 1
    await source.relay(store)
    log = await store.read_log()
    assert [r.event_type for r in log][-2:] == ["account.transferred_out", "account.transferred_in"]
    assert {(r.traceparent, r.tracestate) for r in log} == {(None, None)}
    if source.kind == "kafka":
        records = await consume_all(source.broker.bootstrap, [f"{source.prefix}.ride", f"{source.prefix}.account"],
                                    len(log))
        assert not [m for m in records if {"traceparent", "tracestate"} & {name for name, _ in m.headers}]
