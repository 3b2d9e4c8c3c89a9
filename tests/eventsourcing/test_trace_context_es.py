"""An eventsourcing application's saves record the trace context too (revision 0013).

Its events reach facta through the byte append: on PostgreSQL ``EventStore.append_bytes``,
whose CLIENT span is the stored context; on SQLite facta's recorder writes in the
caller's thread and makes no span, so the current context (the application's span) is
stored. Either way the event is in the application's trace. Without an SDK: NULL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from facta import tracing
from facta.eventstore import EventStore


class Dog(Aggregate):
    def __init__(self, name: str) -> None:
        self.name = name


class Dogs(Application[Any]):
    pass


def _env(url: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "facta.eventsourcing", "FACTA_DATABASE_URL": url}


def _stored(url: str) -> list[tuple[str | None, str | None]]:
    async def read() -> list[tuple[str | None, str | None]]:
        async with await EventStore.open(url) as store:
            return [(r.traceparent, r.tracestate) for r in await store.read_log()]

    return asyncio.run(read())


def test_an_applications_save_is_in_the_applications_trace(migrated_url: str, spans: Any) -> None:
    app = Dogs(env=_env(migrated_url))
    try:
        with tracing._override.get_tracer("tests").start_as_current_span("register") as span:  # type: ignore[union-attr]
            app.save(Dog("fido"))
    finally:
        app.close()
    appends = [s for s in spans.get_finished_spans() if s.name == "append_bytes facta_events"]
    stored_in = appends[0] if appends else span
    if appends:  # through the store: its span, the application's child
        assert appends[0].parent.span_id == span.get_span_context().span_id
    else:  # SQLite's direct writer: no span of its own
        assert "sqlite" in migrated_url
    c = stored_in.get_span_context()
    assert _stored(migrated_url) == [(f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}", None)]


def test_without_an_sdk_an_applications_save_stores_no_context(migrated_url: str) -> None:
    app = Dogs(env=_env(migrated_url))
    try:
        app.save(Dog("rex"))
    finally:
        app.close()
    assert _stored(migrated_url) == [(None, None)]
