"""Append integrity: stream locks in one order, one recorded time per append, and no
statement that can replace a stored event or snapshot.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

PostgreSQL: ``facta_append`` is replaced. It now takes a transaction-level advisory lock
per stream (two-key form, classid 0x66616375, objid ``hashtext(stream_id)``) in ascending
key order before reading the heads, so appends that share streams queue in one global
order instead of deadlocking on the unique index; and it stamps every row of the append,
events and snapshots, with one ``recorded_at``: the database clock once those locks are
held, just before positions are taken. Snapshots get a trigger that rejects ``UPDATE``
(a snapshot is kept as first written; deleting one is allowed: it is a cache).

SQLite: ``INSERT OR REPLACE`` / ``REPLACE`` delete a conflicting row without firing delete
triggers, so a ``BEFORE INSERT`` trigger refuses any insert whose position, event id or
(stream id, version) is stored already, whatever conflict clause it names. Snapshots:
``UPDATE`` is refused, and an insert of a stored (stream id, version) is skipped
(``RAISE(IGNORE)``), which keeps facta's own ``INSERT OR IGNORE`` working and turns a
replacing insert into a no-op.
"""

from __future__ import annotations

import importlib

from alembic import op

from facta.eventstore.locks import STREAM_LOCK_CLASS, WRITER_MARKER

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FACTA_APPEND = f"""
CREATE OR REPLACE FUNCTION facta_append(
    stream_ids text[], stream_types text[], expected_versions int[],
    actor text, correlation_id text, causation_id text,
    event_streams int[], event_offsets int[], event_ids uuid[], event_types text[], schema_versions int[],
    payloads text[], occurred timestamptz[],
    snapshot_streams text[], snapshot_versions int[], snapshot_types text[], snapshot_states text[],
    snapshot_schemas text[],
    OUT appended bigint, OUT inserted_ids uuid[], OUT positions bigint[], OUT first_recorded_at timestamptz,
    OUT head_versions int[], OUT head_types text[]
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    stream_key int;
    stamp timestamptz;
BEGIN
    -- The writer-in-flight marker, taken before any sequence value: readers wait for the
    -- holders they see before reading past the log's head (facta.eventstore.store).
    PERFORM pg_advisory_xact_lock_shared({WRITER_MARKER[0]}, {WRITER_MARKER[1]});
    -- One lock per stream, in ascending key order: appends sharing streams queue in one
    -- order (never a deadlock), and each reads its heads after the one before committed.
    FOR stream_key IN SELECT DISTINCT hashtext(s) FROM unnest($1) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock({STREAM_LOCK_CLASS}, stream_key);
    END LOOP;
    -- One recorded time for the whole append.
    stamp := clock_timestamp();
    WITH streams AS (
        SELECT * FROM unnest($1, $2, $3) WITH ORDINALITY AS s(stream_id, stream_type, expected, k)
    ),
    heads AS MATERIALIZED (
        SELECT s.k, s.stream_id, s.stream_type, s.expected,
               coalesce(h.version, 0) AS version, h.stream_type AS actual_type
        FROM streams s
        LEFT JOIN LATERAL (
            SELECT e.version, e.stream_type FROM facta_events e
            WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
        ) h ON true
    ),
    go AS MATERIALIZED (
        SELECT true AS ok
        WHERE NOT EXISTS (
            SELECT 1 FROM heads
            WHERE (expected IS NOT NULL AND expected <> version)
               OR (actual_type IS NOT NULL AND actual_type <> stream_type)
        )
    ),
    inserted AS (
        INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,
                                  payload, occurred_at, recorded_at, actor, correlation_id, causation_id)
        SELECT e.event_id, h.stream_id, h.stream_type, h.version + e.n, e.event_type, e.schema_version,
               e.payload::jsonb, e.occurred_at, stamp, $4, $5, $6
        FROM go
        CROSS JOIN unnest($7, $8, $9, $10, $11, $12, $13)
             WITH ORDINALITY AS e(k, n, event_id, event_type, schema_version, payload, occurred_at, ord)
        JOIN heads h ON h.k = e.k
        ORDER BY e.ord
        RETURNING facta_events.event_id, facta_events.position
    ),
    snapshotted AS (
        INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)
        SELECT x.stream_id, x.version, x.stream_type, x.state::jsonb, x.state_schema, stamp
        FROM go
        CROSS JOIN unnest($14, $15, $16, $17, $18) AS x(stream_id, version, stream_type, state, state_schema)
        ON CONFLICT DO NOTHING
    )
    SELECT (SELECT count(*) FROM go),
           (SELECT array_agg(i.event_id) FROM inserted i),
           (SELECT array_agg(i.position) FROM inserted i),
           stamp,
           (SELECT array_agg(h.version ORDER BY h.k) FROM heads h),
           (SELECT array_agg(h.actual_type ORDER BY h.k) FROM heads h)
    INTO appended, inserted_ids, positions, first_recorded_at, head_versions, head_types;
END
$fn$
"""

# SQLite: a replacing insert deletes the stored row without firing delete triggers.
_SQLITE_EVENTS_NO_REPLACE = """
CREATE TRIGGER facta_events_no_replace BEFORE INSERT ON facta_events
WHEN EXISTS (SELECT 1 FROM facta_events WHERE position = NEW.position)
  OR EXISTS (SELECT 1 FROM facta_events WHERE event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM facta_events WHERE stream_id = NEW.stream_id AND version = NEW.version)
BEGIN SELECT RAISE(ABORT, 'facta_events is append-only: an insert may not replace a stored event'); END
"""
_SQLITE_SNAPSHOTS_KEEP = """
CREATE TRIGGER facta_snapshots_keep BEFORE INSERT ON facta_snapshots
WHEN EXISTS (SELECT 1 FROM facta_snapshots WHERE stream_id = NEW.stream_id AND version = NEW.version)
BEGIN SELECT RAISE(IGNORE); END
"""
_SQLITE_SNAPSHOTS_NO_UPDATE = """
CREATE TRIGGER facta_snapshots_no_update BEFORE UPDATE ON facta_snapshots
BEGIN SELECT RAISE(ABORT, 'facta_snapshots keeps a snapshot as first written: UPDATE is not allowed'); END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FACTA_APPEND)
        op.execute(
            """
            CREATE FUNCTION facta_snapshots_reject_update() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'facta_snapshots keeps a snapshot as first written: % is not allowed', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER facta_snapshots_no_update BEFORE UPDATE ON facta_snapshots"
            " FOR EACH ROW EXECUTE FUNCTION facta_snapshots_reject_update()"
        )
    else:
        op.execute(_SQLITE_EVENTS_NO_REPLACE)
        op.execute(_SQLITE_SNAPSHOTS_KEEP)
        op.execute(_SQLITE_SNAPSHOTS_NO_UPDATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER facta_snapshots_no_update ON facta_snapshots")
        op.execute("DROP FUNCTION facta_snapshots_reject_update()")
        first = importlib.import_module("facta.migrations.versions.0001_event_store")
        op.execute(first._FACTA_APPEND.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    else:
        for trigger in ("facta_snapshots_no_update", "facta_snapshots_keep", "facta_events_no_replace"):
            op.execute(f"DROP TRIGGER {trigger}")
