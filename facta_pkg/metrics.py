"""facta's OpenTelemetry metrics (issue 15): counters, histograms and lag gauges of the
store, the relay and the projection runners, and the Prometheus endpoint of
``--metrics-port``.

facta depends on ``opentelemetry-api`` only: without an SDK every instrument is a no-op
(a counter's ``add`` then costs about 0.08 us; issue 15's note on cost). Every call here
records one append, one relay page or one projection batch, never one event.

The instruments (OpenTelemetry names, UCUM units; README "Metrics" lists them with their
Prometheus names):

- ``facta.events.appended`` counter ``{event}``, attribute ``facta.stream_type``: events
  written by appends (an identical retry writes nothing and counts nothing);
- ``facta.append.duration`` histogram ``s``: one append call that wrote, from its checks
  to its commit, lost races retried included;
- ``facta.relay.published`` counter ``{record}``, attribute ``facta.relay``: records Kafka
  acknowledged (skipped events are not published);
- ``facta.relay.lag.events`` gauge ``{event}`` and ``facta.relay.lag.seconds`` gauge ``s``,
  attribute ``facta.relay``: events after the relay's checkpoint, and the age of the
  oldest of them (0 when caught up);
- ``facta.projection.lag.events`` gauge ``{event}`` and ``facta.projection.lag.seconds``
  gauge ``s``, attribute ``facta.projection``: on the store log, log events after the
  projection's checkpoint (of every type: its checkpoint moves over the events it does
  not handle too); on Kafka, records after its checkpoints on the partitions it is
  assigned (Kafka's high watermarks); and the age of the oldest event it has not applied
  (0 when caught up);
- ``facta.projection.events.applied`` counter ``{event}``, ``facta.projection.handler.duration``
  histogram ``s`` (a batch's handlers, run one after the other) and
  ``facta.projection.failures`` counter ``{failure}`` (a projection stopped on an event or
  a record), attribute ``facta.projection``.

The lag gauges are observable: each relay and projection runner keeps a :class:`Lag`
that it updates once per batch (from what it read: positions, offsets and recorded
times; a head it does not know from its reads is read from the store at most every
:data:`HEAD_REFRESH_S` seconds, and only while an SDK records), and the gauges read every
:class:`Lag` when the metrics are collected (a Prometheus scrape).

Instruments come from the global meter provider (``opentelemetry.metrics``), made on
first use; :func:`use_meter_provider` points facta at another one (tests: the SDK's
``InMemoryMetricReader``; the global one can be set once per process only).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

from opentelemetry import metrics as otel
from opentelemetry.metrics import CallbackOptions, MeterProvider, NoOpMeterProvider, Observation
from opentelemetry.metrics._internal import _ProxyMeterProvider

from facta import __version__
from facta.errors import FactaError

__all__ = [
    "HEAD_REFRESH_S", "SECONDS_BUCKETS", "Lag", "ProjectionMetrics", "RelayMetrics", "appended", "appended_bytes",
    "clock", "instrument", "instrumented", "projection", "recording", "relay", "serve_prometheus",
    "use_meter_provider",
]

HEAD_REFRESH_S = 1.0
"""While a relay or a runner catches up, how often (seconds) it reads the log's head for
its lag gauge: its own reads only show that more is there. A Prometheus scrape comes
every 15 s by default, so a second keeps the figure fresh for a round trip a second."""

SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
"""The bucket bounds (seconds) of the two histograms, 100 us to 10 s: an append takes tens
of microseconds to milliseconds (README, Benchmarks), a batch's handlers up to seconds. The
SDK's default bounds (0 to 10,000) are made for milliseconds; a view can override these."""

_NOT_RECORDING = (_ProxyMeterProvider, NoOpMeterProvider)
_instrumented = True
_provider: MeterProvider | None = None  # None: the global meter provider
_instruments: _Instruments | None = None
_stream_types: dict[str, dict[str, str]] = {}  # stream type -> its attributes, made once
_lags: dict[tuple[str, str], Lag] = {}  # (kind, name) -> the lag the gauges report


def instrument(enabled: bool) -> None:
    """Turn facta's metric recording on (the default) or skip it entirely (``False``: the
    benchmarks' uninstrumented baseline). Process-wide."""
    global _instrumented
    _instrumented = bool(enabled)


def instrumented() -> bool:
    """Whether facta's metric recording runs (see :func:`instrument`)."""
    return _instrumented


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Make facta's instruments from ``provider`` from now on (None: the global one,
    ``opentelemetry.metrics.get_meter_provider()``). For tests, which cannot set the
    global provider more than once, and for :func:`serve_prometheus`."""
    global _provider, _instruments
    _provider, _instruments = provider, None


def recording() -> bool:
    """Whether an SDK records facta's metrics: instrumented, and the provider is not the
    API's no-op or its stand-in (the proxy a later ``set_meter_provider`` replaces). Asked
    once per batch, not once per process, for that reason. Only work a no-op would waste
    (a read of the log's head) waits for it."""
    if not _instrumented:
        return False
    provider = _provider if _provider is not None else otel.get_meter_provider()
    return not isinstance(provider, _NOT_RECORDING)


def clock() -> float:
    """The start of a timed call: ``time.perf_counter()``, or 0.0 when not instrumented
    (the call is not timed then)."""
    return time.perf_counter() if _instrumented else 0.0


class _StreamAppend(Protocol):
    @property
    def stream_type(self) -> str: ...
    @property
    def events(self) -> Sequence[Any]: ...


def appended(streams: Iterable[_StreamAppend], started: float) -> None:
    """Record one append call that wrote ``streams`` (each with its ``stream_type`` and
    ``events``), started at ``started`` (:func:`clock`)."""
    if not _instrumented:
        return
    instruments = _current()
    add = instruments.appended.add
    for stream in streams:
        add(len(stream.events), _stream_type(stream.stream_type))
    instruments.append_duration.record(time.perf_counter() - started)


def appended_bytes(stream_type: str, events: int, started: float) -> None:
    """Record one byte append (``EventStore.append_bytes``) of ``events`` events of
    ``stream_type``, started at ``started`` (:func:`clock`); none recorded for 0 events."""
    if not _instrumented or not events:
        return
    instruments = _current()
    instruments.appended.add(events, _stream_type(stream_type))
    instruments.append_duration.record(time.perf_counter() - started)


def _stream_type(stream_type: str) -> dict[str, str]:
    attributes = _stream_types.get(stream_type)
    if attributes is None:
        attributes = {"facta.stream_type": stream_type}
        if len(_stream_types) < 10_000:  # bounded: a store of many stream types still records
            _stream_types[stream_type] = attributes
    return attributes


class Lag:
    """How far one relay or projection is behind, as its loop last saw it: ``events`` not
    yet published or applied, and ``oldest_s``, the recorded time (seconds since the epoch)
    of the oldest of them (None: none, or not known). The lag gauges read it when the
    metrics are collected; the seconds figure is the age of ``oldest_s`` then."""

    __slots__ = ("attributes", "events", "head", "head_read_at", "oldest_s")

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.events = 0
        self.oldest_s: float | None = None
        self.head = 0  # the highest store position known to exist
        self.head_read_at = -HEAD_REFRESH_S  # time.monotonic() of the last head read

    def at(self, checkpoint: int, head: int, oldest_s: float | None) -> None:
        """Past store position ``checkpoint``, with the log known to reach ``head`` (kept if
        lower than a head known before) and the oldest event after the checkpoint recorded
        at ``oldest_s`` (None: keep the one known, a bound until the next batch tells)."""
        if head > self.head:
            self.head = head
        self.set(self.head - checkpoint, oldest_s)

    def set(self, events: int, oldest_s: float | None) -> None:
        """``events`` behind (0: caught up, and the seconds figure is 0), the oldest of them
        recorded at ``oldest_s`` (None: keep the one known)."""
        self.events = max(events, 0)
        if self.events == 0:
            self.oldest_s = None
        elif oldest_s is not None:
            self.oldest_s = oldest_s

    def caught_up(self, position: int) -> None:
        """Everything up to ``position``, the log's head as last read, is published or
        applied: 0 events, 0 seconds."""
        self.head = position
        self.set(0, None)

    def head_due(self) -> bool:
        """Whether to read the log's head now: an SDK records and the last read is
        :data:`HEAD_REFRESH_S` old. Call :meth:`head_read` with what was read."""
        return time.monotonic() - self.head_read_at >= HEAD_REFRESH_S and recording()

    def head_read(self, head: int) -> None:
        self.head_read_at = time.monotonic()
        if head > self.head:
            self.head = head

    def seconds(self, now_s: float) -> float:
        """The age of the oldest event behind at ``now_s`` (epoch seconds); 0 when none."""
        if self.events == 0 or self.oldest_s is None:
            return 0.0
        return max(now_s - self.oldest_s, 0.0)


class _Worker:
    """What a relay or a projection records under its name (``kind``: the attribute's
    last word, ``relay`` or ``projection``), and its :class:`Lag`."""

    __slots__ = ("attributes", "kind", "lag")

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.attributes = {f"facta.{kind}": name}
        self.lag = Lag(self.attributes)

    def follow(self) -> Lag:
        """This worker's :class:`Lag`, reported by the gauges from now on: a running relay
        or runner follows it; a relay that only reads its status, or a replay, does not."""
        _lags[(self.kind, self.attributes[f"facta.{self.kind}"])] = self.lag
        if _instrumented:
            _current()  # the gauges exist from now on
        return self.lag


class RelayMetrics(_Worker):
    """What one relay records: its published records and its :class:`Lag`."""

    __slots__ = ()

    def __init__(self, name: str) -> None:
        super().__init__("relay", name)

    def published(self, records: int) -> None:
        """``records`` acknowledged by Kafka (one page)."""
        if _instrumented and records:
            _current().published.add(records, self.attributes)


class ProjectionMetrics(_Worker):
    """What one projection records: events applied, handler time, failures, its :class:`Lag`."""

    __slots__ = ()

    def __init__(self, name: str) -> None:
        super().__init__("projection", name)

    def applied(self, events: int) -> None:
        """``events`` applied by one committed batch."""
        if _instrumented and events:
            _current().applied.add(events, self.attributes)

    def handled(self, started: float) -> None:
        """A batch's handlers ran, from ``started`` (:func:`clock`) until now."""
        if _instrumented:
            _current().handler_duration.record(time.perf_counter() - started, self.attributes)

    def failed(self) -> None:
        """The projection stopped on an event or record it could not apply."""
        if _instrumented:
            _current().failures.add(1, self.attributes)


def relay(name: str) -> RelayMetrics:
    """The metrics of relay ``name`` (see :meth:`RelayMetrics.follow`)."""
    return RelayMetrics(name)


def projection(name: str) -> ProjectionMetrics:
    """The metrics of projection ``name`` (see :meth:`ProjectionMetrics.follow`)."""
    return ProjectionMetrics(name)


# -- the instruments ----------------------------------------------------------------------------


class _Instruments:
    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("facta", __version__)
        self.appended = meter.create_counter(
            "facta.events.appended", unit="{event}", description="Events written by appends, by stream type")
        self.append_duration = meter.create_histogram(
            "facta.append.duration", unit="s", description="Duration of append calls that wrote",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.published = meter.create_counter(
            "facta.relay.published", unit="{record}", description="Records the relay published (acknowledged)")
        self.applied = meter.create_counter(
            "facta.projection.events.applied", unit="{event}", description="Events a projection applied")
        self.handler_duration = meter.create_histogram(
            "facta.projection.handler.duration", unit="s", description="Duration of a batch's handlers",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS)
        self.failures = meter.create_counter(
            "facta.projection.failures", unit="{failure}", description="Stops of a projection on an event")
        meter.create_observable_gauge(
            "facta.relay.lag.events", [_lag_events("relay")], unit="{event}",
            description="Events after the relay's checkpoint")
        meter.create_observable_gauge(
            "facta.relay.lag.seconds", [_lag_seconds("relay")], unit="s",
            description="Age of the oldest event the relay has not published")
        meter.create_observable_gauge(
            "facta.projection.lag.events", [_lag_events("projection")], unit="{event}",
            description="Events after the projection's checkpoint")
        meter.create_observable_gauge(
            "facta.projection.lag.seconds", [_lag_seconds("projection")], unit="s",
            description="Age of the oldest event the projection has not applied")


def _current() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments(_provider if _provider is not None else otel.get_meter_provider())
    return _instruments


def _of(kind: str) -> list[Lag]:
    return [lag for (k, _), lag in list(_lags.items()) if k == kind]


def _lag_events(kind: str) -> Any:
    def observe(options: CallbackOptions) -> Iterator[Observation]:
        for lag in _of(kind):
            yield Observation(lag.events, lag.attributes)
    return observe


def _lag_seconds(kind: str) -> Any:
    def observe(options: CallbackOptions) -> Iterator[Observation]:
        now = time.time()
        for lag in _of(kind):
            yield Observation(lag.seconds(now), lag.attributes)
    return observe


# -- Prometheus ---------------------------------------------------------------------------------


def serve_prometheus(host: str, port: int) -> None:
    """Serve facta's metrics (and any other of the process's) in Prometheus text format at
    ``http://HOST:PORT/metrics``, from a daemon thread, for ``--metrics-port``: an SDK
    meter provider with the OpenTelemetry Prometheus exporter's reader, made the global
    provider and facta's (:func:`use_meter_provider`). Imports the SDK and the exporter
    only here.

    Raises :class:`~facta.errors.FactaError`, one line, when the ``telemetry`` extra is not
    installed, or when ``HOST:PORT`` cannot be served (in use, a host not of this machine)."""
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise FactaError(
            f"--metrics-port needs OpenTelemetry's SDK and Prometheus exporter ({exc.name or exc} is not installed):"
            " pip install 'facta[telemetry]'"
        ) from None
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise FactaError(f"cannot serve metrics on {where} (--metrics-port {port}): {exc.strerror or exc}") from None
    provider = SdkMeterProvider(metric_readers=[PrometheusMetricReader()],
                                resource=Resource.create({"service.name": "facta"}))
    otel.set_meter_provider(provider)  # refused (a warning) if the process set one already
    if otel.get_meter_provider() is not provider or _provider is not None:
        use_meter_provider(provider)  # else the instruments made already (the API's proxies) record to it
