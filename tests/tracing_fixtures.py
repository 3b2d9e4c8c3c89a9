"""The ``spans`` fixture: facta's spans recorded by the OpenTelemetry SDK into memory.

OpenTelemetry's global tracer provider can be set once per process, so the tests never
set it: one SDK provider (with a synchronous in-memory exporter) is made per session and
handed to facta alone through :func:`facta.tracing.set_tracer_provider` for the test that
asks for ``spans``, then taken back (every other test runs with no SDK, facta's default).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from facta import tracing


@pytest.fixture(scope="session")
def _span_provider() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def spans(_span_provider: tuple[Any, Any]) -> Iterator[Any]:
    """The in-memory exporter of the spans facta records during the test (empty at its
    start); ``.get_finished_spans()`` lists them in the order they ended."""
    provider, exporter = _span_provider
    exporter.clear()
    tracing.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        tracing.set_tracer_provider(None)
        exporter.clear()
