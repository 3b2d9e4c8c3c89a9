"""facta.metrics (issue 15, item 2): each instrument's values, read with the SDK's
InMemoryMetricReader (``facta.metrics.use_meter_provider``: the global provider can be
set once per process only), on SQLite and PostgreSQL; the relay's against Apache Kafka.

The lag gauges are read while a run is behind from inside it: a projection's handler and
a relay's router collect the metrics, so "behind" is seen at a known point, not raced.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from sqlalchemy import Column, Integer, String, insert

from facta import metrics
from facta.domain import DomainEvent
from facta.domain.aggregate import PendingEvent
from facta.errors import FactaError, ProjectionError
from facta.eventstore import ByteEvent, EventStore, RecordedEvent, StreamAppend
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import Projection, ProjectionRunner, ReadModel, RunnerConfig, handles, read_model_table


class Noted(DomainEvent, name="metrics.noted"):
    n: int


class Other(DomainEvent, name="metrics.other"):
    n: int


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    metrics.use_meter_provider(MeterProvider(metric_readers=[reader]))
    try:
        yield reader
    finally:
        metrics.use_meter_provider(None)


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """The data points of metric ``name``, by their attributes (sorted pairs): a sum's or a
    gauge's value, a histogram's point (count, sum)."""
    found: dict[tuple[tuple[str, Any], ...], Any] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    key = tuple(sorted((point.attributes or {}).items()))
                    if isinstance(point, HistogramDataPoint):
                        found[key] = (point.count, point.sum)
                    else:
                        assert isinstance(point, NumberDataPoint)
                        found[key] = point.value
    return found


def value(reader: InMemoryMetricReader, name: str, **attributes: str) -> Any:
    return points(reader, name).get(tuple(sorted(attributes.items())))


# -- appends ------------------------------------------------------------------------------------


async def test_appends_count_events_by_stream_type_and_time_each_call_that_wrote(
    store: EventStore, reader: InMemoryMetricReader
) -> None:
    a, b = f"a{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
    await store.append("s-1", a, [Noted(n=1), Noted(n=2), Noted(n=3)], expected_version=0)
    both = [StreamAppend("s-2", a, [PendingEvent(Noted(n=4)), PendingEvent(Noted(n=5))], 0),
            StreamAppend("s-3", b, [PendingEvent(Noted(n=6))], 0)]
    await store.append_many(both)
    await store.append_many(both)  # an identical retry writes nothing: nothing counted, nothing timed
    # A conflict writes nothing either.
    with pytest.raises(FactaError):
        await store.append("s-1", a, [Noted(n=7)], expected_version=0)
    await store.append_bytes("bytes", [ByteEvent("x-1", 1, "T", b"1"), ByteEvent("x-1", 2, "T", b"2")])
    counted = points(reader, "facta.events.appended")
    assert counted == {(("facta.stream_type", a),): 5, (("facta.stream_type", b),): 1,
                       (("facta.stream_type", "bytes"),): 2}
    ((_, (calls, seconds)),) = points(reader, "facta.append.duration").items()
    assert calls == 3 and seconds > 0


async def test_nothing_is_recorded_when_not_instrumented(store: EventStore, reader: InMemoryMetricReader) -> None:
    metrics.instrument(False)
    try:
        await store.append("s-1", "quiet", [Noted(n=1)], expected_version=0)
    finally:
        metrics.instrument(True)
    assert points(reader, "facta.events.appended") == {}
    assert points(reader, "facta.append.duration") == {}
    await store.append("s-1", "quiet", [Noted(n=2)], expected_version=1)
    assert value(reader, "facta.events.appended", **{"facta.stream_type": "quiet"}) == 1


def test_recording_tells_the_api_stand_in_from_an_sdk() -> None:
    # A fresh process has the API's proxy provider until one is set: not recording.
    fresh = subprocess.run([sys.executable, "-c", "from facta import metrics; print(metrics.recording())"],
                           capture_output=True, text=True, timeout=120, check=True)
    assert fresh.stdout.strip() == "False"
    metrics.use_meter_provider(NoOpMeterProvider())
    assert not metrics.recording()
    metrics.use_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    try:
        assert metrics.recording()
        metrics.instrument(False)
        assert not metrics.recording()
    finally:
        metrics.instrument(True)
        metrics.use_meter_provider(None)


# -- projections --------------------------------------------------------------------------------


def projection_classes(name: str, seen: list[dict[str, Any]], reader: InMemoryMetricReader,
                       fail_at: int | None = None) -> type[Projection]:
    class Counted(Projection, name=name):
        rows = read_model_table(f"{name}_rows", Column("id", Integer, primary_key=True),
                                Column("stream", String(50), nullable=False))

        @handles(Noted)
        def _on(self, rm: ReadModel, event: Noted, record: RecordedEvent) -> None:
            if event.n == fail_at:
                raise RuntimeError("poison")
            if not seen:  # inside the first batch: the gauges as a scrape would read them now
                seen.append({
                    "events": value(reader, "facta.projection.lag.events", **{"facta.projection": name}),
                    "seconds": value(reader, "facta.projection.lag.seconds", **{"facta.projection": name}),
                })
            rm.execute(insert(self.rows), [{"stream": record.stream_id}])

    return Counted


async def test_a_runner_reports_lag_applied_events_and_handler_time(
    store: EventStore, reader: InMemoryMetricReader
) -> None:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    seen: list[dict[str, Any]] = []
    cls = projection_classes(name, seen, reader)
    for i in range(1, 26):
        await store.append(f"s-{i}", "metrics", [Noted(n=i), Other(n=i)], expected_version=0)
    head = await store.head_position()
    time.sleep(0.01)  # the oldest event is this old at least when the first batch runs
    assert await ProjectionRunner(store, cls, config=RunnerConfig(batch_size=10)).run(once=True) == 25
    who = {"facta.projection": name}
    # In the first batch: every log event after checkpoint 0 was behind, the oldest > 10 ms old.
    assert seen[0]["events"] == head
    assert seen[0]["seconds"] >= 0.01
    # Caught up.
    assert value(reader, "facta.projection.lag.events", **who) == 0
    assert value(reader, "facta.projection.lag.seconds", **who) == 0
    assert value(reader, "facta.projection.events.applied", **who) == 25
    calls, seconds = value(reader, "facta.projection.handler.duration", **who)
    assert calls == 3 and seconds > 0  # batches of 10, 10 and 5 events of its type
    assert value(reader, "facta.projection.failures", **who) is None


async def test_a_failing_handler_counts_a_failure_and_the_events_before_it(
    store: EventStore, reader: InMemoryMetricReader
) -> None:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    cls = projection_classes(name, [], reader, fail_at=4)
    for i in range(1, 7):
        await store.append(f"s-{i}", "metrics", [Noted(n=i)], expected_version=0)
    with pytest.raises(ProjectionError, match="poison"):
        await ProjectionRunner(store, cls).run(once=True)
    who = {"facta.projection": name}
    assert value(reader, "facta.projection.failures", **who) == 1
    assert value(reader, "facta.projection.events.applied", **who) == 3
    # Stopped behind: the three events from the poison one on.
    assert value(reader, "facta.projection.lag.events", **who) == 3
    assert value(reader, "facta.projection.lag.seconds", **who) > 0


# -- the relay ----------------------------------------------------------------------------------


async def test_the_relay_reports_lag_and_published_records(
    store: EventStore, reader: InMemoryMetricReader, kafka_broker: Any, prefix: str
) -> None:
    for i in range(1, 31):
        await store.append(f"s-{i}", "metrics", [Noted(n=i)], expected_version=0)
    head = await store.head_position()
    name = f"r{uuid.uuid4().hex[:8]}"
    who = {"facta.relay": name}
    seen: list[tuple[Any, Any]] = []

    def route(record: RecordedEvent) -> str:
        if not seen:  # planning the first page: the gauges as a scrape would read them now
            seen.append((value(reader, "facta.relay.lag.events", **who),
                         value(reader, "facta.relay.lag.seconds", **who)))
        return f"{prefix}.metrics"

    config = RelayConfig(bootstrap=kafka_broker.bootstrap, name=name, topic_prefix=prefix, batch_size=7,
                         idempotence=kafka_broker.supports_idempotence, poll_interval=0.01, router=route)
    assert await Relay(store, config).run(once=True, give_up_after=30) == 30
    events, seconds = seen[0]
    assert events == head and seconds > 0
    assert value(reader, "facta.relay.published", **who) == 30
    assert value(reader, "facta.relay.lag.events", **who) == 0
    assert value(reader, "facta.relay.lag.seconds", **who) == 0


# -- the lag ------------------------------------------------------------------------------------


def test_a_lag_keeps_the_highest_head_and_clears_its_age_when_caught_up() -> None:
    lag = metrics.Lag({"facta.relay": "x"})
    lag.at(10, 50, 1000.0)
    assert (lag.events, lag.seconds(1003.5)) == (40, 3.5)
    lag.at(20, 30, None)  # a page that ends lower than the head known: the head stays
    assert (lag.events, lag.oldest_s) == (30, 1000.0)
    lag.at(50, 50, 1002.0)
    assert (lag.events, lag.seconds(1010.0)) == (0, 0.0)
    lag.at(50, 60, None)  # behind again, the oldest not known yet: 0 s, not a stale age
    assert (lag.events, lag.seconds(1010.0)) == (10, 0.0)
    lag.caught_up(60)
    assert (lag.events, lag.oldest_s, lag.head) == (0, None, 60)


def test_the_histograms_count_seconds_in_buckets_from_100_us_to_10_s(reader: InMemoryMetricReader) -> None:
    metrics.projection("buckets").handled(metrics.clock())
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = [p for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
                if m.name == "facta.projection.handler.duration" for p in m.data.data_points]
    assert isinstance(point, HistogramDataPoint)
    assert tuple(point.explicit_bounds) == metrics.SECONDS_BUCKETS == (
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
