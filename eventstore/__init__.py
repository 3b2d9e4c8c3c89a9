"""facta.eventstore: the permanent SQL event store, its repository and its errors."""

from .database import DEFAULT_DATABASE_URL, Database, database_url_from_env, resolve_url
from .errors import (
    ConcurrencyError,
    DatabaseUnavailable,
    DatabaseURLError,
    DuplicateEventError,
    InvalidValue,
    SchemaNotReady,
    StoreError,
    StreamNotFound,
    StreamTypeMismatch,
)
from .records import AppendResult, RecordedEvent, Snapshot, StreamAppend
from .repository import Repository, VersionNotFound
from .store import EventStore

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AppendResult",
    "ConcurrencyError",
    "Database",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "DuplicateEventError",
    "EventStore",
    "InvalidValue",
    "RecordedEvent",
    "Repository",
    "SchemaNotReady",
    "Snapshot",
    "StoreError",
    "StreamAppend",
    "StreamNotFound",
    "StreamTypeMismatch",
    "VersionNotFound",
    "database_url_from_env",
    "resolve_url",
]
