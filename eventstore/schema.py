"""facta's tables as SQLAlchemy Core objects: public API, for building queries.

Applications, tests and facta's own layers read the store with them, e.g.
``await store.database.read(lambda conn: conn.execute(select(events.c.position)).all())``
(``events`` is ``facta_events``; ``UTCDateTime`` reads and writes aware UTC times on both
dialects and may serve a read model's columns too). Write these tables only through
facta: the events and snapshots refuse changes anyway (triggers), and the relay,
projection and skip tables are facta's own bookkeeping.

These objects never create anything: the schema is created and changed only by the
alembic migrations in ``facta.migrations``, so a column here changes only with a new
revision. Keep the two in step (``tests/eventstore/test_store_contract.py`` compares them
with the migrated schema).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
)

from .kafka_codec import utc

__all__ = [
    "POSITION_TYPE",
    "JSONText",
    "UTCDateTime",
    "events",
    "hash_start",
    "log_blocks",
    "metadata",
    "projection_checkpoints",
    "projection_skips",
    "projections",
    "relay_checkpoints",
    "relay_skips",
    "snapshots",
    "subject_keys",
    "tracking",
    "tree_heads",
    "tree_leaves",
    "tree_nodes",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every dialect (SQLite stores them as naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given: facta stores aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else utc(value)


class JSONText(TypeDecorator[str]):
    """An event payload as JSON text: JSONB on PostgreSQL, TEXT on SQLite.

    Values cross the driver as the JSON text pydantic wrote (and is fastest to read back);
    SQLAlchemy's own JSON encoding and decoding are switched off.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB  # only PostgreSQL stores load the dialect

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(Text())

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


POSITION_TYPE = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

events = Table(
    "facta_events",
    metadata,
    Column("position", POSITION_TYPE, primary_key=True, autoincrement=True),
    Column("event_id", Uuid(), nullable=False, unique=True),
    Column("stream_id", String(255), nullable=False),
    Column("stream_type", String(100), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("schema_version", Integer(), nullable=False),
    Column("payload", JSONText(), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("actor", String(255)),
    Column("correlation_id", String(255)),
    Column("causation_id", String(255)),
    # Revision 0009: the exact bytes of an event written by another library
    # (EventStore.append_bytes); NULL for facta's own events. Not one of the log's columns
    # (facta.eventstore._rows.LOG_COLUMNS): only the byte reads select it.
    Column("payload_bytes", LargeBinary()),
    # Revision 0010: SHA-256 of the event's canonical bytes chained to the stream's
    # previous event (facta.eventstore.integrity); NULL for events stored before 0010
    # until `facta audit seal` fills it in. Not one of the log's columns either.
    Column("event_hash", LargeBinary()),
    # Revision 0013: the W3C trace context of the append that stored the event (one per
    # append call, facta.tracing), NULL when it had none. Operational telemetry, not
    # history: not covered by the hash chain. Log columns, last (RecordedEvent's fields).
    Column("traceparent", String(55)),
    Column("tracestate", String(512)),
)

snapshots = Table(
    "facta_snapshots",
    metadata,
    Column("stream_id", String(255), primary_key=True),
    Column("version", Integer(), primary_key=True),
    Column("stream_type", String(100), nullable=False),
    Column("state", JSONText(), nullable=False),
    Column("state_schema", String(200), nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
    Column("state_bytes", LargeBinary()),  # revision 0009: a byte snapshot's exact bytes
    Column("state_hash", LargeBinary()),  # revision 0010: facta.eventstore.integrity.state_hash
)

#: Revision 0010: one row, the highest position stored before hash chains (0: none);
#: only events at or below it may be backfilled by ``facta audit seal``.
hash_start = Table(
    "facta_hash_start",
    metadata,
    Column("position", POSITION_TYPE, primary_key=True, autoincrement=False),
)

relay_checkpoints = Table(
    "facta_relay_checkpoints",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("position", POSITION_TYPE, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

projections = Table(
    "facta_projections",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("generation", Integer(), nullable=False),
    Column("source", String(20), nullable=False),
    Column("schema_hash", String(64), nullable=False),
    Column("last_error", Text()),
    Column("events_per_second", Float()),
    Column("updated_at", UTCDateTime(), nullable=False),
)

projection_checkpoints = Table(
    "facta_projection_checkpoints",
    metadata,
    Column("projection", String(200), primary_key=True),
    Column("slot", String(20), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer(), primary_key=True),
    Column("position", POSITION_TYPE, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

projection_skips = Table(
    "facta_projection_skips",
    metadata,
    Column("projection", String(200), primary_key=True),
    Column("position", POSITION_TYPE, primary_key=True),
    Column("event_id", Uuid()),
    Column("event_type", String(200)),
    Column("reason", Text(), nullable=False),
    Column("skipped_by", String(200)),
    Column("skipped_at", UTCDateTime(), nullable=False),
    Column("applied_at", UTCDateTime()),
)

relay_skips = Table(
    "facta_relay_skips",
    metadata,
    Column("relay", String(200), primary_key=True),
    Column("position", POSITION_TYPE, primary_key=True),
    Column("event_id", Uuid(), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("reason", Text(), nullable=False),
    Column("skipped_by", String(200)),
    Column("skipped_at", UTCDateTime(), nullable=False),
    Column("passed_at", UTCDateTime()),
)

# A cache of the log's recorded times per block of positions (revision 0006): see
# facta.eventstore._blocks.
log_blocks = Table(
    "facta_log_blocks",
    metadata,
    Column("block", POSITION_TYPE, primary_key=True, autoincrement=False),
    Column("min_recorded_at", UTCDateTime(), nullable=False),
    Column("max_recorded_at", UTCDateTime(), nullable=False),
    Column("events", Integer(), nullable=False),
)

# A tracking record per name (revision 0009): how far a consumer of another library
# (eventsourcing's tracking and process recorders) has processed, a position that only
# moves up (EventStore.record_tracking).
tracking = Table(
    "facta_tracking",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("position", POSITION_TYPE, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# The Merkle log (revision 0011; facta.eventstore.sealer writes them, each row once):
# leaf leaf_index is the event at position, leaf_hash = SHA-256(0x00 || event_hash);
# node (level >= 1, node_index) is the hash of the complete subtree over leaves
# node_index * 2**level .. (node_index + 1) * 2**level - 1; one signed head per seal.
tree_leaves = Table(
    "facta_tree_leaves",
    metadata,
    Column("leaf_index", POSITION_TYPE, primary_key=True, autoincrement=False),
    Column("position", POSITION_TYPE, nullable=False, unique=True),
    Column("leaf_hash", LargeBinary(), nullable=False),
)

tree_nodes = Table(
    "facta_tree_nodes",
    metadata,
    Column("level", SmallInteger(), primary_key=True, autoincrement=False),
    Column("node_index", POSITION_TYPE, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(), nullable=False),
)

tree_heads = Table(
    "facta_tree_heads",
    metadata,
    Column("tree_size", POSITION_TYPE, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(), nullable=False),
    Column("last_position", POSITION_TYPE, nullable=False),
    Column("signed_at", UTCDateTime(), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", LargeBinary(), nullable=False),
)

# A data key per subject of personal data (revision 0012): see
# facta.eventstore.personal_data. The one table facta deletes from (forgetting a subject).
subject_keys = Table(
    "facta_subject_keys",
    metadata,
    Column("subject", String(255), primary_key=True),
    Column("data_key", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
