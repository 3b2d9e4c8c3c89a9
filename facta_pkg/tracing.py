"""facta's OpenTelemetry traces (issue 15): the tracer, the W3C trace context an append
records, and the spans of appends, log reads, the relay and the runners.

facta depends on ``opentelemetry-api`` only: without an SDK every call here is a no-op,
and cheap. The hot paths (an append call, a log page, a relay batch, a projection batch)
ask :func:`tracer` once per batch; it answers None, and they create no span, when

- :func:`instrument` turned tracing off (the benchmarks' uninstrumented baseline), or
- ``opentelemetry.trace`` was never imported in this process (nobody can have installed
  an SDK or started a span, and facta does not import it for nothing: 28 ms), or
- the tracer provider in use is the API's proxy or no-op provider (no SDK installed).

The provider is :func:`set_tracer_provider`'s when one was given (tests and applications
that do not want the global one), else OpenTelemetry's global provider, looked up on
every call (``trace.set_tracer_provider`` may install an SDK after facta started).

The trace context an append records (columns ``traceparent`` / ``tracestate`` of
``facta_events``, revision 0013, one per append call) is :func:`trace_fields`: the append's
own database span when a tracer records, else the current span context when it is valid
(a context propagated into a process with no SDK is passed on), else none (NULL). The
W3C Trace Context format (https://www.w3.org/TR/trace-context/): ``traceparent`` is
``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`` (55 characters), ``tracestate``
the list-members text, at most 512 characters kept (whole members dropped from the end,
as the recommendation allows), None when empty.

Span names and attributes follow the OpenTelemetry semantic conventions (database client
spans, messaging spans; https://opentelemetry.io/docs/specs/semconv/):

- appends and log reads: CLIENT ``<operation> facta_events`` with ``db.system.name``
  (``sqlite`` | ``postgresql``), ``db.operation.name`` (``append``, ``append_bytes``,
  ``read_log``), ``db.collection.name`` and, for two or more events,
  ``db.operation.batch.size`` (the conventions: never 1); the relay's and runners' polls
  only when they read events (:func:`poll_span`);
- the relay: PRODUCER ``send <topic>`` per Kafka batch sent (:func:`producer_span`);
- the runners: CONSUMER ``process <source>`` per projection batch, and per event a process
  manager handles (:func:`consumer_span`), linked to (or the child of) the events' stored
  contexts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Span, SpanContext, Tracer, TracerProvider

__all__ = [
    "MAX_LINKS",
    "consumer_span",
    "context_of",
    "current_span_context",
    "end_producer_span",
    "db_span",
    "instrument",
    "instrumented",
    "parent_and_links",
    "producer_span",
    "set_batch_size",
    "set_tracer_provider",
    "trace_fields",
    "tracer",
]

_instrumented = True
_override: TracerProvider | None = None
_cache: list[Any] = [None, None]  # [provider, its facta tracer or None when not recording]

#: At most this many links on one span (the first distinct stored contexts of a batch):
#: the SDK's default span limit (OTEL_SPAN_LINK_COUNT_LIMIT) is 128.
MAX_LINKS = 128
#: The longest ``tracestate`` stored (the column's width; W3C: propagate at least 512).
TRACESTATE_MAX = 512

_NOTHING: AbstractContextManager[None] = nullcontext()


def instrument(enabled: bool) -> None:
    """Turn facta's tracing calls on (the default) or skip them entirely (``False``: the
    benchmarks' uninstrumented baseline; appends then record no trace context). Process-wide."""
    global _instrumented
    _instrumented = bool(enabled)


def instrumented() -> bool:
    """Whether facta's tracing calls run (see :func:`instrument`)."""
    return _instrumented


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Make facta take its tracer from ``provider`` instead of OpenTelemetry's global one
    (None: back to the global one). For tests, which cannot replace the global provider
    (``trace.set_tracer_provider`` works once per process), and for applications that keep
    facta's spans apart."""
    global _override
    if provider is not None:
        import opentelemetry.trace  # noqa: F401 (what tracer() looks for)
    _override = provider


def tracer() -> Tracer | None:
    """facta's tracer when spans are recorded (an SDK provider is in use and tracing is
    on), else None. Cheap: one module lookup and, with OpenTelemetry loaded, one provider
    lookup; call it once per batch."""
    if not _instrumented:
        return None
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    provider = _override if _override is not None else otel.get_tracer_provider()
    if provider is not _cache[0]:
        recording = not isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider)
        _cache[1] = provider.get_tracer("facta", _version()) if recording else None
        _cache[0] = provider
    found: Tracer | None = _cache[1]
    return found


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("facta")
    except PackageNotFoundError:  # pragma: no cover (run from a source tree)
        return None


def trace_fields(span: Span | None = None) -> tuple[str | None, str | None]:
    """The W3C ``(traceparent, tracestate)`` texts of ``span``'s context, or with None of
    the current span's; ``(None, None)`` when that context is not valid (no SDK and
    nothing propagated) or tracing is off (:func:`instrument`)."""
    if not _instrumented:
        return None, None
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None, None
    context = (span if span is not None else otel.get_current_span()).get_span_context()
    if not context.is_valid:
        return None, None
    traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    state = context.trace_state
    if not state:
        return traceparent, None
    members = [f"{k}={v}" for k, v in state.items()]
    text = ",".join(members)
    while len(text) > TRACESTATE_MAX:
        members.pop()
        text = ",".join(members)
    return traceparent, text or None


def current_span_context() -> SpanContext | None:
    """The current span's context when it is valid, else None."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    context: SpanContext = otel.get_current_span().get_span_context()
    return context if context.is_valid else None


def context_of(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context a stored (or Kafka header) ``traceparent`` / ``tracestate``
    names, read by OpenTelemetry's W3C propagator; None for None or text the propagator
    refuses (a malformed value is telemetry, not history: it is ignored, never raised)."""
    if not traceparent:
        return None
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": traceparent} if tracestate is None else {"traceparent": traceparent,
                                                                        "tracestate": tracestate}
    context = get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    return context if context.is_valid else None


def parent_and_links(fields: Iterable[tuple[str | None, str | None]]) -> tuple[Any, list[Link]]:
    """For a batch whose events carry the stored contexts ``fields``: the OpenTelemetry
    context to start its span in (the one stored context as parent when there is exactly
    one, a new root when there are several, None, the current context, when there is
    none) and the links to each distinct stored context (at most
    :data:`MAX_LINKS`). The messaging conventions' rule for batches."""
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, NonRecordingSpan, set_span_in_context

    seen: dict[str, str | None] = {}
    for traceparent, tracestate in fields:
        if traceparent is not None and traceparent not in seen:
            seen[traceparent] = tracestate
            if len(seen) > MAX_LINKS:
                break
    contexts = [c for c in (context_of(tp, ts) for tp, ts in seen.items()) if c is not None][:MAX_LINKS]
    links = [Link(c) for c in contexts]
    if not contexts:
        return None, links
    if len(contexts) == 1 and len(seen) == 1:
        return set_span_in_context(NonRecordingSpan(contexts[0])), links
    return Context(), links  # an empty context: a new trace, linked to its events'


def db_span(chosen: Tracer | None, operation: str, dialect: str, batch_size: int) -> AbstractContextManager[Span | None]:
    """A CLIENT span ``<operation> facta_events``, made current, from ``chosen`` (the
    caller's :func:`tracer` of this batch); with None, a context manager that does nothing
    and gives None. ``batch_size``: the events written or read (set from 2 on)."""
    if chosen is None:
        return _NOTHING
    from opentelemetry.trace import SpanKind

    return chosen.start_as_current_span(f"{operation} facta_events", kind=SpanKind.CLIENT,
                                        attributes=_db_attributes(operation, dialect, batch_size))


def poll_span(chosen: Tracer, operation: str, dialect: str, started_ns: int, batch_size: int) -> None:
    """A finished CLIENT span ``<operation> facta_events`` (as :func:`db_span`) from
    ``started_ns`` (``time.time_ns()`` before the read) to now, for a poll of the log that
    found work: the relay's and the store-log runners' reads, which poll an idle store
    several times a second and so record no span for a poll that read nothing (else an
    idle process would send a new trace per poll, forever; OpenTelemetry's own Kafka
    consumer instrumentations likewise record no span for an empty poll)."""
    from opentelemetry.trace import SpanKind

    chosen.start_span(f"{operation} facta_events", kind=SpanKind.CLIENT,
                      attributes=_db_attributes(operation, dialect, batch_size), start_time=started_ns).end()


def _db_attributes(operation: str, dialect: str, batch_size: int) -> dict[str, Any]:
    """The database client attributes of a span on ``facta_events`` (the OpenTelemetry
    database conventions: ``db.operation.batch.size`` only from 2 on)."""
    attributes: dict[str, Any] = {"db.system.name": dialect, "db.operation.name": operation,
                                  "db.collection.name": "facta_events"}
    if batch_size >= 2:
        attributes["db.operation.batch.size"] = batch_size
    return attributes


def set_batch_size(span: Span | None, batch_size: int) -> None:
    """Set ``db.operation.batch.size`` on a :func:`db_span` once the count is known (a log
    read's rows; from 2 on, as the conventions say)."""
    if span is not None and batch_size >= 2:
        span.set_attribute("db.operation.batch.size", batch_size)


def producer_span(chosen: Tracer, topic: str, partition: int, keys: Sequence[bytes],
                  fields: Iterable[tuple[str | None, str | None]]) -> Span:
    """A started (not current) PRODUCER span ``send <topic>`` for a Kafka batch of
    ``len(keys)`` records to ``partition`` whose events carry the stored contexts
    ``fields`` (:func:`parent_and_links`). ``messaging.kafka.message.key`` is set when
    every record has one key (one stream's events); the caller sets
    ``messaging.kafka.offset`` once the broker acknowledged the batch and ends it."""
    from opentelemetry.trace import SpanKind

    parent, links = parent_and_links(fields)
    attributes: dict[str, Any] = {
        "messaging.system": "kafka", "messaging.operation.type": "send", "messaging.operation.name": "send",
        "messaging.destination.name": topic, "messaging.destination.partition.id": str(partition),
    }
    if len(keys) >= 2:
        attributes["messaging.batch.message_count"] = len(keys)
    if keys and all(k == keys[0] for k in keys):
        attributes["messaging.kafka.message.key"] = keys[0].decode(errors="replace")
    return chosen.start_span(f"send {topic}", context=parent, kind=SpanKind.PRODUCER, links=links,
                             attributes=attributes)


def end_producer_span(span: Span | None, offset: int | None, error: BaseException | None) -> None:
    """End a :func:`producer_span`: with the batch's first offset once acknowledged
    (``messaging.kafka.offset``), or with ``error`` (status ERROR), or abandoned (neither:
    a page given up on, published again later)."""
    if span is None:
        return
    if offset is not None:
        span.set_attribute("messaging.kafka.offset", offset)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.set_attribute("error.type", type(error).__name__)
    span.end()


@contextmanager
def consumer_span(chosen: Tracer, source: str, destination: str, count: int,
                  fields: Iterable[tuple[str | None, str | None]], attributes: dict[str, Any],
                  link: SpanContext | None = None) -> Iterator[Span]:
    """A CONSUMER span ``process <destination>``, made current, for ``count`` events whose
    stored contexts are ``fields`` (child of the one context, else linked to each,
    :func:`parent_and_links`), plus a link to ``link`` when given (a process manager's
    per-event span links its batch's). ``source``: ``kafka`` sets ``messaging.system``
    kafka; the store log is ``messaging.system`` ``facta`` (no registered value: the
    conventions allow one's own)."""
    from opentelemetry.trace import Link, SpanKind

    parent, links = parent_and_links(fields)
    if link is not None:
        links.append(Link(link))
    attrs: dict[str, Any] = {
        "messaging.system": "kafka" if source == "kafka" else "facta", "messaging.operation.type": "process",
        "messaging.operation.name": "process", "messaging.destination.name": destination, **attributes,
    }
    if count >= 2:
        attrs["messaging.batch.message_count"] = count
    with chosen.start_as_current_span(f"process {destination}", context=parent, kind=SpanKind.CONSUMER, links=links,
                                      attributes=attrs) as span:
        yield span
