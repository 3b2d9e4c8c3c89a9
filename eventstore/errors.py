"""Errors of the event store. Each message is one line naming the values involved."""

from __future__ import annotations

import uuid

from facta.domain.errors import FactaError

__all__ = [
    "ConcurrencyError",
    "DatabaseBusy",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "DuplicateEventError",
    "InvalidValue",
    "MigrationRefused",
    "SchemaNotReady",
    "StoreError",
    "StreamNotFound",
    "StreamTypeMismatch",
    "UnknownSchemaRevision",
]


class StoreError(FactaError):
    """Base class of event store errors."""


class ConcurrencyError(StoreError):
    """An append named a version the stream is no longer (or not yet) at. Nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(
            f"concurrency conflict on stream {stream_id!r}: expected version {expected}, actual version {actual}"
        )


class DuplicateEventError(StoreError):
    """An event id is already stored, but not as part of an identical earlier append."""

    def __init__(self, event_id: uuid.UUID, stream_id: str, version: int, position: int, differs: str = "") -> None:
        self.event_id, self.stream_id, self.version, self.position = event_id, stream_id, version, position
        self.differs = differs
        super().__init__(
            f"event {event_id} is already stored as {stream_id!r} version {version} at position {position}"
            " and this append is not an identical retry" + (f": {differs}" if differs else "")
        )


class InvalidValue(StoreError, ValueError):
    """A value facta cannot store or query exactly on every dialect (a text too long or
    holding NUL, a number out of its column's range, a payload field that would not read
    back as written). Raised before any I/O; the message names the field and the limit."""


class DatabaseURLError(StoreError):
    """The database URL cannot be used."""


class DatabaseUnavailable(StoreError):
    """The database server could not be reached or refused the connection."""


class DatabaseBusy(StoreError):
    """SQLite: another connection held the database's write lock for longer than the busy
    timeout (60 s, or the URL's ``?timeout=``). Nothing was written; the call can be tried again."""


class MigrationRefused(StoreError):
    """A schema downgrade that would lose data or leave tables it cannot name. Nothing changed."""


class SchemaNotReady(StoreError):
    """The database has no facta schema, or an older one: run ``facta db upgrade``."""


class UnknownSchemaRevision(StoreError):
    """The database's facta schema is at a revision this facta does not know (most likely
    written by a newer facta): upgrade facta. Nothing was changed. ``revision`` is what the
    version table holds."""

    def __init__(self, where: str, revision: str, known: list[str]) -> None:
        self.where, self.revision, self.known = where, revision, known
        super().__init__(
            f"{where} is at schema revision {revision!r}, which this facta does not know (it knows"
            f" {known[0]} to {known[-1]}): it was probably written by a newer facta; upgrade facta"
        )


class StreamNotFound(StoreError):
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} does not exist")


class StreamTypeMismatch(StoreError):
    def __init__(self, stream_id: str, expected: str, actual: str) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(f"stream {stream_id!r} is of stream type {actual!r}, not {expected!r}")
