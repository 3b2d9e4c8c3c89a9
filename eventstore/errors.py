"""Errors of the event store. Each message is one line naming the values involved.

They are defined, with the whole tree of facta's errors, in :mod:`facta.errors`; this
module keeps the names importable from ``facta.eventstore.errors``.
"""

from __future__ import annotations

from facta.errors import (
    AuditError,
    ConcurrencyError,
    DatabaseBusy,
    DatabaseUnavailable,
    DatabaseURLError,
    DuplicateEventError,
    InvalidSetting,
    InvalidValue,
    KafkaRecordError,
    MigrationRefused,
    RecordConflict,
    RecordRefused,
    RelayError,
    SchemaNotReady,
    StoreError,
    StreamNotFound,
    StreamTypeMismatch,
    UnknownSchemaRevision,
    VersionNotFound,
)

__all__ = [
    "AuditError",
    "ConcurrencyError",
    "DatabaseBusy",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "DuplicateEventError",
    "InvalidSetting",
    "InvalidValue",
    "KafkaRecordError",
    "MigrationRefused",
    "RecordConflict",
    "RecordRefused",
    "RelayError",
    "SchemaNotReady",
    "StoreError",
    "StreamNotFound",
    "StreamTypeMismatch",
    "UnknownSchemaRevision",
    "VersionNotFound",
]
