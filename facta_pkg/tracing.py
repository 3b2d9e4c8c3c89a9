"""facta's OpenTelemetry traces (issue 15): the tracer, the W3C trace context an append
records, and the spans of appends, log reads, the relay and the runners.

facta depends on ``opentelemetry-api`` only: without an SDK every call here is a no-op.
Filled in by issue 15's tracing work; :func:`instrument` is the switch the cost benchmarks
(bench/append.py, bench/projections.py) turn off to measure facta with no instrumentation.
"""

from __future__ import annotations

__all__ = ["instrument", "instrumented"]

_instrumented = True


def instrument(enabled: bool) -> None:
    """Turn facta's tracing calls on (the default) or skip them entirely (``False``: the
    benchmarks' uninstrumented baseline). Process-wide."""
    global _instrumented
    _instrumented = bool(enabled)


def instrumented() -> bool:
    """Whether facta's tracing calls run (see :func:`instrument`)."""
    return _instrumented
