"""The cost of telemetry (issue 15, item 6): the harness that ``bench/append.py --telemetry``
and ``bench/projections.py --telemetry`` share.

Three contenders, each one spawned process of its own, alike in every other way (same
code, same imports, finished before any timing; each on a database of its own):

none  ``facta.tracing.instrument(False)`` and ``facta.metrics.instrument(False)``: facta's
      hot paths skip their telemetry calls entirely. The baseline.
off   nothing set up: no OpenTelemetry SDK, the API's no-op tracer and meter (what a user
      who installs none gets: facta's default).
on    an SDK ``TracerProvider`` with a ``BatchSpanProcessor`` feeding an exporter that
      drops every batch (:class:`DroppingSpanExporter`), and an SDK ``MeterProvider``
      whose one reader never exports during the run (:class:`NeverExportingReader`;
      read once after the last round, to report what was recorded). Both installed
      before anything else in the process: the SDK's providers can be set only once per
      process, which is why every contender has a process of its own.

A round gives every contender a fresh database and then runs ``slices`` slices; in each
slice every contender runs one unit of the workload, one after the other, in the next
of the six orders (:data:`ORDERS`: each contender first, second and last, after each of
the others, equally often), so the three see the same machine within a second of each
other. A contender's time for the round is the sum of its slices: wall time, and the
CPU time of its process (``time.process_time``: every thread, the SDK's export thread
too), which other work on a shared machine disturbs much less. Reported per workload:
each contender's events/s (median over rounds, min-max) and its wall and CPU time over
those of ``none`` in the same round: the medians of the per-round ratios, with min and
max (the guide's rule for benchmarks). The aim (issue 15): ``off`` at most 1.02x the
time of ``none``, judged on wall time as the issue words it and on CPU time; ``on``'s
ratios are its cost, reported, with no aim.

This module imports only the standard library at import time (a worker imports the SDK
when its mode is ``on``, nothing else of OpenTelemetry's beyond what facta imports).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AIM_OFF", "MODES", "Tally", "describe", "install", "recorded", "render", "start_workers",
           "what_is_measured"]

MODES = ("none", "off", "on")
#: The aim of issue 15 item 6: no SDK costs at most 2% more time than no instrumentation.
AIM_OFF = 1.02

_RECORDED: dict[str, int] = {"spans": 0, "metric points": 0}
_READER: list[Any] = []


def install(mode: str) -> None:
    """Set this process up as contender ``mode`` (one of :data:`MODES`); once, first thing."""
    if mode not in MODES:
        raise SystemExit(f"telemetry mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "none":
        from facta import metrics, tracing

        tracing.instrument(False)
        metrics.instrument(False)
    elif mode == "on":
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class DroppingSpanExporter(SpanExporter):
            """Counts the spans the batch processor hands over, and drops them."""

            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                _RECORDED["spans"] += len(spans)
                return SpanExportResult.SUCCESS

            def shutdown(self) -> None:
                pass

        class NeverExportingReader(MetricReader):
            """A pull reader nobody pulls during the run: the SDK aggregates every
            measurement, nothing is exported. :func:`recorded` collects it once, at the end."""

            def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
                for rm in metrics_data.resource_metrics if metrics_data is not None else ():
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            _RECORDED["metric points"] += len(metric.data.data_points)

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                pass

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(DroppingSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        reader = NeverExportingReader()
        otel_metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _READER.append((tracer_provider, reader))


def recorded() -> dict[str, int]:
    """What the ``on`` contender's SDK got: spans exported (dropped) after a flush, and the
    metric data points one collection sees. All zero for the other modes."""
    if _READER:
        tracer_provider, reader = _READER[0]
        tracer_provider.force_flush()
        _RECORDED["metric points"] = 0
        reader.collect()
    return dict(_RECORDED)


# -- workers -------------------------------------------------------------------------------


def start_workers(preload: Sequence[str]) -> dict[str, Any]:
    """One worker per mode (``versus.Worker``: a spawned process running ``module:function``
    calls, here on one event loop kept for its life, so a store stays open between calls),
    each set up by :func:`install` first, all started at once, every import waited for."""
    from versus import Worker

    workers = {mode: Worker(mode, preload, setup=("_telemetry:install", (mode,)), keep_loop=True) for mode in MODES}
    try:
        for w in workers.values():
            w.ready()
    except BaseException:
        for w in workers.values():
            w.close()
        raise
    return workers


# -- rounds and the table --------------------------------------------------------------------


#: The orders of a slice: every permutation of the modes, taken in turn, so that each
#: contender runs first, second and last, after each of the others, equally often.
ORDERS = tuple(itertools.permutations(MODES))


@dataclass
class Tally:
    """One workload's figures: per mode, per round, the events, the wall seconds and the
    CPU seconds of the contender's process (all its threads: the SDK's export thread
    too), each summed over the round's slices."""

    title: str
    events: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MODES})
    seconds: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})

    def run_round(self, r: int, slices: int, unit: Callable[[str], Sequence[float]],
                  before_slice: Callable[[], None] | None = None) -> None:
        """``slices`` slices: ``before_slice()`` (untimed work for every contender), then
        ``unit(mode)`` -> (events, wall seconds, CPU seconds) for every mode, in the next
        of :data:`ORDERS`."""
        events = dict.fromkeys(MODES, 0)
        seconds = dict.fromkeys(MODES, 0.0)
        cpu = dict.fromkeys(MODES, 0.0)
        for k in range(slices):
            if before_slice is not None:
                before_slice()
            for mode in ORDERS[(r * slices + k) % len(ORDERS)]:
                n, s, c = unit(mode)
                events[mode] += int(n)
                seconds[mode] += s
                cpu[mode] += c
        if len(set(events.values())) != 1:
            raise SystemExit(f"{self.title}: the contenders handled different numbers of events: {events}")
        for mode in MODES:
            self.events[mode].append(events[mode])
            self.seconds[mode].append(seconds[mode])
            self.cpu[mode].append(cpu[mode])

    def ratios(self, mode: str, of: str = "seconds") -> list[float]:
        """``mode``'s wall time (or with ``of="cpu"`` CPU time) over ``none``'s, per round
        (above 1: more than with no instrumentation)."""
        mine, base = getattr(self, of)[mode], getattr(self, of)["none"]
        return [s / b for s, b in zip(mine, base, strict=True)]


def _spread(values: Sequence[float], fmt: str) -> tuple[str, str]:
    return f"{_median(values):{fmt}}", f"{min(values):{fmt}}-{max(values):{fmt}}"


def render(tallies: Sequence[Tally]) -> str:
    """The table: per workload and mode, events/s and the wall- and CPU-time ratios over
    ``none``; then per workload the aim row for ``off`` (judged on wall time, as issue 15
    words it, and on CPU time) and the cost row for ``on``."""
    from _common import render_table

    head = ("workload", "telemetry", "events/round", "events/s", "min-max events/s", "time / none", "min-max",
            "cpu / none", "min-max", "verdict")
    lines: list[tuple[str, ...]] = []
    for t in tallies:
        for i, mode in enumerate(MODES):
            rates = [e / s for e, s in zip(t.events[mode], t.seconds[mode], strict=True)]
            ratios: tuple[str, ...] = ("1.000", "-", "1.000", "-") if mode == "none" else (
                *_spread(t.ratios(mode), ".3f"), *_spread(t.ratios(mode, "cpu"), ".3f"))
            lines.append((t.title if i == 0 else "", LABELS[mode], f"{t.events[mode][0]:,}",
                          *_spread(rates, ",.0f"), *ratios, ""))
        off, off_cpu = t.ratios("off"), t.ratios("off", "cpu")
        verdict = (f"time {'met' if _median(off) <= AIM_OFF else 'MISSED'},"
                   f" cpu {'met' if _median(off_cpu) <= AIM_OFF else 'MISSED'}")
        lines.append(("", f"aim: off vs none at most {AIM_OFF:.2f}x slower", "", "", "", *_spread(off, ".3f"),
                      *_spread(off_cpu, ".3f"), verdict))
        on, on_cpu = t.ratios("on"), t.ratios("on", "cpu")
        lines.append(("", "cost of on (SDK, spans dropped)", "", "", "", *_spread(on, ".3f"), *_spread(on_cpu, ".3f"),
                      f"{(_median(on) - 1) * 100:+.1f}% time, {(_median(on_cpu) - 1) * 100:+.1f}% cpu"))
        lines.append(("",) * len(head))
    return render_table(head, lines, {2, 3, 4, 5, 6, 7, 8})


def _median(values: Sequence[float]) -> float:
    import statistics

    return statistics.median(values)


LABELS = {
    "none": "none: instrument(False)",
    "off": "off: no SDK (default)",
    "on": "on: SDK, no-op export",
}


def describe(workers: dict[str, Any]) -> list[str]:
    """Lines saying what each contender's SDK recorded over the whole run (spans, metric
    points), so a reader sees whether facta's telemetry calls were there to measure."""
    out = []
    for mode, w in workers.items():
        got = w.call("_telemetry:recorded")
        out.append(f"  {mode}: {got['spans']:,} spans exported (dropped), {got['metric points']:,} metric data points")
    return out


def what_is_measured() -> str:
    """Which facta telemetry this checkout has (the public names of facta.tracing and facta.metrics)."""
    from facta import metrics, tracing

    return (f"facta.tracing exports {', '.join(tracing.__all__)}; facta.metrics exports {', '.join(metrics.__all__)}")
