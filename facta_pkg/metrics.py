"""facta's OpenTelemetry metrics (issue 15): counters, histograms and lag gauges of the
store, the relay and the projection runners, and the Prometheus endpoint of
``--metrics-port``.

facta depends on ``opentelemetry-api`` only: without an SDK every instrument is a no-op.
Filled in by issue 15's metrics work; :func:`instrument` is the switch the cost benchmarks
(bench/append.py, bench/projections.py) turn off to measure facta with no instrumentation.
"""

from __future__ import annotations

__all__ = ["instrument", "instrumented"]

_instrumented = True


def instrument(enabled: bool) -> None:
    """Turn facta's metric recording on (the default) or skip it entirely (``False``: the
    benchmarks' uninstrumented baseline). Process-wide."""
    global _instrumented
    _instrumented = bool(enabled)


def instrumented() -> bool:
    """Whether facta's metric recording runs (see :func:`instrument`)."""
    return _instrumented
