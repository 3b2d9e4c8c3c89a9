"""The one way a stored event row becomes a :class:`RecordedEvent`.

Every read of ``facta_events`` selects the table's columns in table order, which is
:class:`RecordedEvent`'s field order (:data:`LOG_COLUMNS`), with the payload as its JSON
text. Three kinds of row arrive: SQLAlchemy rows (both dialects: the event id a UUID,
the times aware UTC datetimes), asyncpg records (the same types) and sqlite3 driver rows
(:meth:`EventStore.read_log_rows` on SQLite: the event id as 32 hex digits, the times as
naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``, as :func:`facta.eventstore._appenders.sqlite_time`
writes them). :func:`records_from_rows` takes any of them; it is the one place a record
is built from rows.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from facta.domain import EventRegistry, default_registry

from .kafka_codec import _utc_text, collector_paused, utc
from .records import RecordedEvent
from .schema import events

__all__ = ["LOG_COLUMNS", "decode_records", "records_from_rows", "stored_time"]

# The columns of facta_events in table order: RecordedEvent's fields up to tracestate.
# payload_bytes (revision 0009, byte events only) is not one of them: a log read takes the
# payload column (JSON text, or the placeholder of bytes that are not JSON, see
# facta.eventstore._bytes); only the byte reads select the exact bytes.
LOG_COLUMNS: tuple[str, ...] = tuple(c.name for c in events.c if c.name not in ("payload_bytes", "event_hash"))


def records_from_rows(rows: Iterable[Sequence[Any]], registry: EventRegistry = default_registry) -> list[RecordedEvent]:
    """The :class:`RecordedEvent` of each row of ``facta_events`` (its :data:`LOG_COLUMNS`,
    in that order, the payload as JSON text), decoding with ``registry`` on first access
    of ``.event``. Rows read by one statement are of one kind: sqlite3 driver rows (event
    id as hex text, times as naive UTC text) get a UUID and aware UTC times; other rows
    are taken as they are. One call per page: the hot paths (projection catch-up,
    rebuilds) pay one list comprehension and one type check per page (the times of
    text rows parsed through :func:`facta.eventstore.kafka_codec.utc`'s memo: an
    append's events share them)."""
    rows = rows if isinstance(rows, list) else list(rows)
    with collector_paused():
        if rows and isinstance(rows[0][1], str):  # sqlite3 driver rows: convert id and times
            to_uuid, time = _uuid_from_hex, _utc_text
            return [
                RecordedEvent(row[0], to_uuid(row[1]), row[2], row[3], row[4], row[5], row[6], row[7], time(row[8]),
                              time(row[9]), row[10], row[11], row[12], row[13], row[14], registry)
                for row in rows
            ]
        # Rows come in RecordedEvent's field order; mypy cannot count them.
        return [RecordedEvent(*row, registry=registry) for row in rows]  # type: ignore[misc]


_new, _set, _UUID, _UNKNOWN = object.__new__, object.__setattr__, uuid.UUID, uuid.SafeUUID.unknown


def _uuid_from_hex(text: str) -> uuid.UUID:
    """``uuid.UUID(text)`` for SQLite's stored event ids: 32 hex digits are taken as the
    integer directly (what ``UUID.__init__`` does after its clean-ups, at 0.27 us against
    0.65 us); any other text goes through ``uuid.UUID``, which cleans or refuses it."""
    if len(text) == 32 and text[0] != "-":  # UUID() drops dashes first: "-" + 31 digits is refused
        value = _new(_UUID)
        _set(value, "int", int(text, 16))
        _set(value, "is_safe", _UNKNOWN)
        return value
    return uuid.UUID(text)


def decode_records(records: Iterable[RecordedEvent]) -> None:
    """Decode every record's event now (each keeps it, as a first ``.event`` does), with
    the collector paused as in :func:`records_from_rows` (an event is two tracked
    objects). A payload that does not decode is left undecoded: the next ``.event``
    raises its :class:`~facta.errors.EventDecodeError`; a type its registry does not
    know is not tried (``.event`` raises ``UnknownEventType``)."""
    with collector_paused():
        for record in records:
            if record.event_type in record.registry:
                with contextlib.suppress(Exception):
                    record.event  # noqa: B018 (decodes and keeps the event)




def stored_time(value: Any) -> datetime:
    """A stored time as an aware UTC datetime: naive UTC text (SQLite's driver rows), a
    naive datetime (taken as UTC) or an aware one (converted to UTC)."""
    return utc(value)
