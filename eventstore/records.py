"""What goes into the store and what comes out of it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from facta.domain import DomainEvent, EventRegistry, PendingEvent, default_registry

__all__ = ["AppendResult", "ByteEvent", "RecordedEvent", "Snapshot", "StreamAppend", "as_pending", "pending_events"]


@dataclass(slots=True, eq=False)
class RecordedEvent:
    """A stored event with its metadata. ``payload`` is the JSON text as stored, with
    the fields marked ``PersonalData`` opened by the store's reads (their plaintext, or
    ``"[erased]"`` once the subject is forgotten; see
    :mod:`facta.eventstore.personal_data`); ``event`` decodes it (upcasting older
    versions) on first access. ``traceparent`` / ``tracestate``: the W3C trace context of
    the append that stored it (:mod:`facta.tracing`; None when it had none), which the
    relay sends as Kafka headers and the runners' spans link to."""

    position: int
    event_id: uuid.UUID
    stream_id: str
    stream_type: str
    version: int
    event_type: str
    schema_version: int
    payload: str
    occurred_at: datetime
    recorded_at: datetime
    actor: str | None
    correlation_id: str | None
    causation_id: str | None
    traceparent: str | None = None
    tracestate: str | None = None
    registry: EventRegistry = field(default=default_registry, repr=False)
    _decoded: DomainEvent | None = field(default=None, repr=False)

    @property
    def event(self) -> DomainEvent:
        if self._decoded is None:
            self._decoded = self.registry.decode(self.event_type, self.schema_version, self.payload, self.position)
        return self._decoded

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecordedEvent) and (self.position, self.event_id) == (other.position, other.event_id)

    def __hash__(self) -> int:
        return hash(self.event_id)


def as_pending(event: DomainEvent | PendingEvent, occurred_at: datetime) -> PendingEvent:
    """``event`` itself if it is pending already; else a new pending event with a fresh id
    that occurred at ``occurred_at`` (the moment it was handed to the store)."""
    return event if isinstance(event, PendingEvent) else PendingEvent(event, uuid.uuid4(), occurred_at)


# Version-4 UUIDs (RFC 9562, section 5.4): 122 random bits, the version field set to 4
# and the variant bits to 10, exactly as uuid.uuid4() sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def pending_events(events: Sequence[DomainEvent | PendingEvent], occurred_at: datetime) -> list[PendingEvent]:
    """:func:`as_pending` of each of ``events``, with the fresh ids' random bytes taken
    from one ``os.urandom`` call (the source ``uuid.uuid4`` uses) instead of one per
    event: about half the cost of ``uuid4()`` per event (0.70 against 1.31 µs here)."""
    fresh = sum(not isinstance(e, PendingEvent) for e in events)
    if not fresh:
        return [e for e in events if isinstance(e, PendingEvent)]  # all of them
    raw = os.urandom(16 * fresh)
    from_bytes, make = int.from_bytes, uuid.UUID
    out: list[PendingEvent] = []
    at = 0
    for e in events:
        if isinstance(e, PendingEvent):
            out.append(e)
        else:
            out.append(PendingEvent(e, make(int=(from_bytes(raw[at:at + 16]) & _UUID4_CLEAR) | _UUID4_SET), occurred_at))
            at += 16
    return out


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream, appended only if the stream is at ``expected_version``.

    ``expected_version`` 0 means the stream must not exist yet; ``None`` skips the check.
    """

    stream_id: str
    stream_type: str
    events: Sequence[DomainEvent | PendingEvent]
    expected_version: int | None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append's events landed. A retry of an append returns the original result."""

    stream_id: str
    positions: tuple[int, ...]
    first_version: int
    last_version: int
    recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state at a stream version, as JSON text."""

    stream_id: str
    stream_type: str
    version: int
    state: str
    state_schema: str
    recorded_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ByteEvent:
    """An event (or snapshot) written by another library, stored exactly as bytes
    (:meth:`facta.eventstore.EventStore.append_bytes`).

    eventsourcing's stored event maps field for field: ``stream_id`` is its
    ``str(originator_id)``, ``version`` its ``originator_version`` (any int32, 0 allowed),
    ``event_type`` its ``topic`` and ``payload`` its ``state``, the bytes its transcoder
    made (ciphered or compressed, as may be). ``position`` is the event's global position
    when read from the store (0 for a snapshot, and when given to an append, which
    ignores it). A facta event read through the byte calls has its payload's JSON text,
    encoded UTF-8, as ``payload``.
    """

    stream_id: str
    version: int
    event_type: str
    payload: bytes
    position: int = 0
