"""Byte events, byte snapshots and tracking records: facta as another library's store.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

- ``facta_events.payload_bytes`` (BYTEA / BLOB, nullable): the exact bytes of an event
  written by :meth:`facta.eventstore.EventStore.append_bytes` (eventsourcing's stored
  events); NULL for facta's own events. Its ``payload`` column holds the same bytes as
  JSON text when they are JSON facta accepts, else a placeholder object
  (:mod:`facta.eventstore._bytes`), so audit, the relay and projections read every row.
  The append-only triggers of revisions 0001 and 0004 cover the new column as every other:
  they fire on any ``UPDATE`` of a row, whatever columns it names.
- The version check of revision 0001 (``version >= 1``) holds for facta's own events
  only: a byte event's version is any int32 (eventsourcing numbers from 0 as well as 1).
  On SQLite the constraint's text is changed in place (SQLite's documented
  ``writable_schema`` procedure for loosening a CHECK constraint: no row changes, so the
  table is not rebuilt and keeps its triggers and AUTOINCREMENT counter).
- ``facta_snapshots.state_bytes`` (nullable): a byte snapshot's exact bytes (same rule).
- ``facta_tracking``: one row per tracking name, the position a consumer has processed
  up to, which only moves up.
- PostgreSQL: ``facta_append_bytes(...)``, the byte append as one autocommit call (see
  :mod:`facta.eventstore._bytes`): the writer marker first, exactly as ``facta_append``,
  one clock read for the whole append, the stream-type check against each stream's
  newest row, the tracking record (only upwards), then the events in the order given at
  one contiguous range of positions taken with ``facta_take_positions(n)`` (revision
  0008), as every writer of ``facta_events`` takes them.

The downgrade drops them; it refuses (as revision 0001 does) when byte events or byte
snapshots are stored, unless asked to drop them (``--drop-events``, alembic
``-x drop-events=yes``): their exact bytes would be lost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from facta.eventstore.locks import WRITER_MARKER

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The byte append (facta.eventstore._bytes.append_bytes_postgres). Arguments: the stream
# type, then per event its stream id, version, event id, event type, payload column text
# and exact bytes, then the tracking record (NULL name: none). Results: the positions in
# the order given and the append's one recorded time; or, writing nothing, the first
# stream of another stream type (mismatch_stream, mismatch_type) or the stored tracking
# position the given one is not above (tracking_stored). A (stream id, version) stored
# already raises unique_violation (the caller names it).
_FACTA_APPEND_BYTES = f"""
CREATE OR REPLACE FUNCTION facta_append_bytes(
    p_stream_type text, stream_ids text[], versions int[], event_ids uuid[], event_types text[],
    payloads text[], payload_bytes bytea[], tracking_name text, tracking_position bigint,
    OUT positions bigint[], OUT recorded_at timestamptz, OUT mismatch_stream text, OUT mismatch_type text,
    OUT tracking_stored bigint
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    n int := cardinality(event_ids);
    stamp timestamptz;
    first_position bigint;
BEGIN
    -- The writer-in-flight marker, taken before any position: readers wait for the
    -- holders they see before reading past the log's head (facta.eventstore._readers).
    PERFORM pg_advisory_xact_lock_shared({WRITER_MARKER[0]}, {WRITER_MARKER[1]});
    stamp := clock_timestamp();
    recorded_at := stamp;
    IF n > 0 THEN
        -- Every row of a stream has its type: compare with each stream's newest row.
        SELECT s.stream_id, h.stream_type INTO mismatch_stream, mismatch_type
        FROM (SELECT DISTINCT x AS stream_id FROM unnest(stream_ids) AS x) s
        JOIN LATERAL (
            SELECT e.stream_type FROM facta_events e
            WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
        ) h ON h.stream_type <> p_stream_type
        LIMIT 1;
        IF mismatch_stream IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    IF tracking_name IS NOT NULL THEN
        INSERT INTO facta_tracking AS t (name, position, updated_at) VALUES (tracking_name, tracking_position, stamp)
        ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at
        WHERE t.position < EXCLUDED.position;
        IF NOT FOUND THEN
            SELECT t.position INTO tracking_stored FROM facta_tracking t WHERE t.name = tracking_name;
            RETURN;
        END IF;
    END IF;
    IF n = 0 THEN
        positions := ARRAY[]::bigint[];
        RETURN;
    END IF;
    -- One contiguous range of positions for the whole append (revision 0008).
    first_position := facta_take_positions(n);
    IF n = 1 THEN
        INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                                  payload, occurred_at, recorded_at, payload_bytes)
        VALUES (first_position, event_ids[1], stream_ids[1], p_stream_type, versions[1], event_types[1], 1,
                payloads[1]::jsonb, stamp, stamp, payload_bytes[1]);
    ELSE
        INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                                  payload, occurred_at, recorded_at, payload_bytes)
        SELECT first_position + e.ord - 1, e.event_id, e.stream_id, p_stream_type, e.version, e.event_type, 1,
               e.payload::jsonb, stamp, stamp, e.payload_bytes
        FROM unnest(stream_ids, versions, event_ids, event_types, payloads, payload_bytes)
             WITH ORDINALITY AS e(stream_id, version, event_id, event_type, payload, payload_bytes, ord);
    END IF;
    positions := ARRAY(SELECT generate_series(first_position, first_position + n - 1));
END
$fn$
"""


_CHECK = "ck_facta_events_version_positive"
_STRICT = "CHECK (version >= 1)"
_LOOSE = "CHECK (version >= 1 OR payload_bytes IS NOT NULL)"


def _sqlite_replace_check(old: str, new: str) -> None:
    """Change the version CHECK of facta_events' stored CREATE TABLE text (SQLite's
    documented procedure for removing or loosening a CHECK constraint: "Making Other Kinds
    Of Table Schema Changes", https://www.sqlite.org/lang_altertable.html)."""
    bind = op.get_bind()
    sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'facta_events'").scalar_one()
    clause = f"CONSTRAINT {_CHECK} {old}"
    assert sql.count(clause) == 1, f"facta_events' CREATE TABLE text has no {clause!r}"
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'facta_events'",
        (sql.replace(clause, f"CONSTRAINT {_CHECK} {new}"),),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def _postgres_replace_check(new: str, validate: bool) -> None:
    """Replace the version check. Added ``NOT VALID`` (no scan of the table; new rows are
    checked) and validated only where every stored row must pass: the upgrade's looser
    check is implied by the stricter one every row passed, except rows left by an earlier
    downgrade with ``--drop-events`` (byte events whose bytes it dropped)."""
    op.execute(f"ALTER TABLE facta_events DROP CONSTRAINT {_CHECK}")
    op.execute(f"ALTER TABLE facta_events ADD CONSTRAINT {_CHECK} {new} NOT VALID")
    if validate:  # a scan, without blocking appends (SHARE UPDATE EXCLUSIVE)
        op.execute(f"ALTER TABLE facta_events VALIDATE CONSTRAINT {_CHECK}")


def upgrade() -> None:
    op.add_column("facta_events", sa.Column("payload_bytes", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _postgres_replace_check(_LOOSE, validate=False)
    else:
        _sqlite_replace_check(_STRICT, _LOOSE)
    op.add_column("facta_snapshots", sa.Column("state_bytes", sa.LargeBinary(), nullable=True))
    op.create_table(
        "facta_tracking",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FACTA_APPEND_BYTES)


def downgrade() -> None:
    from facta.errors import MigrationRefused

    bind = op.get_bind()
    asked = context.config.attributes.get("drop_events") or (
        context.get_x_argument(as_dictionary=True).get("drop-events", "").lower() in ("yes", "true", "1")
    )
    if not asked:
        for table, column in (("facta_events", "payload_bytes"), ("facta_snapshots", "state_bytes")):
            if bind.execute(sa.text(f"SELECT 1 FROM {table} WHERE {column} IS NOT NULL LIMIT 1")).first() is not None:
                raise MigrationRefused(
                    f"downgrading below revision 0009 drops {table}.{column}, the exact bytes of events written"
                    " through append_bytes: pass --drop-events (alembic: -x drop-events=yes) to do that"
                )
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION facta_append_bytes(text, text[], int[], uuid[], text[], text[], bytea[], text, bigint)")
    op.drop_table("facta_tracking")
    # Byte events (dropped on request) may have versions below 1: the strict check is put
    # back for new rows only.
    if bind.dialect.name == "postgresql":
        _postgres_replace_check(_STRICT, validate=not asked)
    else:
        _sqlite_replace_check(_LOOSE, _STRICT)
    # ALTER TABLE ... DROP COLUMN on both dialects (SQLite 3.35+): SQLite keeps the table,
    # its AUTOINCREMENT counter and its triggers (alembic's batch mode would copy the table).
    op.execute("ALTER TABLE facta_snapshots DROP COLUMN state_bytes")
    op.execute("ALTER TABLE facta_events DROP COLUMN payload_bytes")
