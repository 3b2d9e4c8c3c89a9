"""facta.eventstore: the permanent SQL event store, its repository and its errors.

``__all__`` is the public face: the names below and nine public modules, each with an
``__all__`` of its own: :mod:`~facta.eventstore.audit` (history queries),
:mod:`~facta.eventstore.personal_data` (erasable personal data: key stores, forgetting),
:mod:`~facta.eventstore.merkle` (the Merkle tree, proofs and signed tree heads, pure),
:mod:`~facta.eventstore.sealer` (sealing the log into the tree, proofs from the store),
:mod:`~facta.eventstore.blocking` (the store for threads and scripts, no event loop),
:mod:`~facta.eventstore.integrity` (hash chains: their definition, verify and backfill),
:mod:`~facta.eventstore.relay` (publishing the log to Kafka),
:mod:`~facta.eventstore.kafka_codec` (the Kafka record format) and
:mod:`~facta.eventstore.schema` (the tables, for queries). The other modules are the
store's implementation.
"""

from .database import DEFAULT_DATABASE_URL, Database, database_url_from_env, resolve_url
from .errors import (
    ConcurrencyError,
    DatabaseBusy,
    DatabaseUnavailable,
    DatabaseURLError,
    DuplicateEventError,
    InvalidValue,
    MigrationRefused,
    RecordConflict,
    SchemaNotReady,
    StoreError,
    StreamNotFound,
    StreamTypeMismatch,
    UnknownSchemaRevision,
)
from .records import AppendResult, ByteEvent, RecordedEvent, Snapshot, StreamAppend
from .repository import Repository, VersionNotFound
from .store import EventStore

__all__ = [
    "DEFAULT_DATABASE_URL",
    "AppendResult",
    "ByteEvent",
    "ConcurrencyError",
    "Database",
    "DatabaseBusy",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "DuplicateEventError",
    "EventStore",
    "InvalidValue",
    "MigrationRefused",
    "RecordConflict",
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
__all__ += ["audit", "blocking", "integrity", "kafka_codec", "merkle", "personal_data", "relay", "schema", "sealer"]  # the public modules
