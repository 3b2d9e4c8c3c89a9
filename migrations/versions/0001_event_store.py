"""The event store: append-only events, snapshots, and the indexes history queries need.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from facta.eventstore.locks import WRITER_MARKER

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def _now() -> sa.TextClause:
    # Recorded-at comes from the database clock at insert (facta's appends set it to the
    # same clock themselves; this default serves other inserts).
    if op.get_bind().dialect.name == "postgresql":
        return sa.text("clock_timestamp()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")


# The append, as one function call: see facta.eventstore._appenders for what it does and
# why. Changing it later takes a new revision (CREATE OR REPLACE FUNCTION).
_FACTA_APPEND = f"""
CREATE FUNCTION facta_append(
    stream_ids text[], stream_types text[], expected_versions int[],
    actor text, correlation_id text, causation_id text,
    event_streams int[], event_offsets int[], event_ids uuid[], event_types text[], schema_versions int[],
    payloads text[], occurred timestamptz[],
    snapshot_streams text[], snapshot_versions int[], snapshot_types text[], snapshot_states text[],
    snapshot_schemas text[],
    OUT appended bigint, OUT inserted_ids uuid[], OUT positions bigint[], OUT first_recorded_at timestamptz,
    OUT head_versions int[], OUT head_types text[]
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    -- The writer-in-flight marker, taken before any sequence value: readers wait for the
    -- holders they see before reading past the log's head (facta.eventstore.store).
    PERFORM pg_advisory_xact_lock_shared({WRITER_MARKER[0]}, {WRITER_MARKER[1]});
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
               e.payload::jsonb, e.occurred_at, clock_timestamp(), $4, $5, $6
        FROM go
        CROSS JOIN unnest($7, $8, $9, $10, $11, $12, $13)
             WITH ORDINALITY AS e(k, n, event_id, event_type, schema_version, payload, occurred_at, ord)
        JOIN heads h ON h.k = e.k
        ORDER BY e.ord
        RETURNING facta_events.event_id, facta_events.position, facta_events.recorded_at
    ),
    snapshotted AS (
        INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema)
        SELECT x.stream_id, x.version, x.stream_type, x.state::jsonb, x.state_schema
        FROM go
        CROSS JOIN unnest($14, $15, $16, $17, $18) AS x(stream_id, version, stream_type, state, state_schema)
        ON CONFLICT DO NOTHING
    )
    SELECT (SELECT count(*) FROM go),
           (SELECT array_agg(i.event_id) FROM inserted i),
           (SELECT array_agg(i.position) FROM inserted i),
           (SELECT min(i.recorded_at) FROM inserted i),
           (SELECT array_agg(h.version ORDER BY h.k) FROM heads h),
           (SELECT array_agg(h.actual_type ORDER BY h.k) FROM heads h)
    INTO appended, inserted_ids, positions, first_recorded_at, head_versions, head_types;
END
$fn$
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "facta_events",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("stream_id", sa.String(255), nullable=False),
        sa.Column("stream_type", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("actor", sa.String(255)),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("causation_id", sa.String(255)),
        sa.CheckConstraint("version >= 1", name="ck_facta_events_version_positive"),
        sa.UniqueConstraint("event_id", name="uq_facta_events_event_id"),
        sa.UniqueConstraint("stream_id", "version", name="uq_facta_events_stream_version"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_facta_events_recorded_at", "facta_events", ["recorded_at", "position"])
    op.create_index("ix_facta_events_type", "facta_events", ["event_type", "position"])
    op.create_index("ix_facta_events_stream_type", "facta_events", ["stream_type", "position"])
    # Actor and correlation id are often NULL: index only the rows that have them.
    for name, column in (("ix_facta_events_actor", "actor"), ("ix_facta_events_correlation", "correlation_id")):
        present = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "facta_events", [column, "position"], postgresql_where=present, sqlite_where=present)

    op.create_table(
        "facta_snapshots",
        sa.Column("stream_id", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("stream_type", sa.String(100), nullable=False),
        sa.Column("state", _json(), nullable=False),
        sa.Column("state_schema", sa.String(200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
    )

    if dialect == "postgresql":
        op.execute(_FACTA_APPEND)
        op.execute(
            """
            CREATE FUNCTION facta_events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'facta_events is append-only: % is not allowed', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER facta_events_append_only BEFORE UPDATE OR DELETE ON facta_events"
            " FOR EACH ROW EXECUTE FUNCTION facta_events_reject_change()"
        )
        op.execute(
            "CREATE TRIGGER facta_events_no_truncate BEFORE TRUNCATE ON facta_events"
            " FOR EACH STATEMENT EXECUTE FUNCTION facta_events_reject_change()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER facta_events_no_{action.lower()} BEFORE {action} ON facta_events"
                f" BEGIN SELECT RAISE(ABORT, 'facta_events is append-only: {action} is not allowed'); END"
            )


def downgrade() -> None:
    from facta.errors import MigrationRefused

    bind = op.get_bind()
    dialect = bind.dialect.name
    asked = context.config.attributes.get("drop_events") or (
        context.get_x_argument(as_dictionary=True).get("drop-events", "").lower() in ("yes", "true", "1")
    )
    if not asked:
        for table in ("facta_events", "facta_snapshots"):
            if bind.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:
                raise MigrationRefused(
                    f"downgrading below revision 0001 drops {table} and every row in it:"
                    " pass --drop-events (alembic: -x drop-events=yes) to do that"
                )
    if dialect == "postgresql":
        op.execute("DROP FUNCTION facta_append")
        op.execute("DROP TRIGGER facta_events_no_truncate ON facta_events")
        op.execute("DROP TRIGGER facta_events_append_only ON facta_events")
        op.execute("DROP FUNCTION facta_events_reject_change()")
    op.drop_table("facta_snapshots")
    op.drop_table("facta_events")
