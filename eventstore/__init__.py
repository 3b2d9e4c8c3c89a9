"""facta.eventstore: the permanent SQL event store, its repository and its errors."""

from .database import DEFAULT_DATABASE_URL, Database, database_url_from_env, resolve_url
from .errors import (
    ConcurrencyError,
    DatabaseBusy,
    DatabaseUnavailable,
    DatabaseURLError,
    DuplicateEventError,
    InvalidValue,
    MigrationRefused,
    SchemaNotReady,
    StoreError,
    StreamNotFound,
    StreamTypeMismatch,
    UnknownSchemaRevision,
)
from .records import AppendResult, RecordedEvent, Snapshot, StreamAppend
from .repository import Repository, VersionNotFound
from .store import EventStore

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AppendResult",
    "ConcurrencyError",
    "Database",
    "DatabaseBusy",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "DuplicateEventError",
    "EventStore",
    "InvalidValue",
    "MigrationRefused",
    "RecordedEvent",
    "Repository",
    "SchemaNotReady",
    "Snapshot",
    "StoreError",
    "StreamAppend",
    "StreamNotFound",
    "StreamTypeMismatch",
    "UnknownSchemaRevision",
    "VersionNotFound",
    "database_url_from_env",
    "resolve_url",
]
