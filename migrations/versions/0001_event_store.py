"""The event store: append-only events, snapshots, and the indexes history queries need.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(postgresql.JSONB(), "postgresql")


def _now() -> sa.TextClause:
    # Recorded-at comes from the database clock at insert. On PostgreSQL the insert runs
    # after the append lock is taken, so recorded-at never goes backwards as positions grow.
    if op.get_bind().dialect.name == "postgresql":
        return sa.text("statement_timestamp()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')")


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
    op.create_index("ix_facta_events_actor", "facta_events", ["actor", "position"])
    op.create_index("ix_facta_events_correlation", "facta_events", ["correlation_id", "position"])

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
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER facta_events_no_truncate ON facta_events")
        op.execute("DROP TRIGGER facta_events_append_only ON facta_events")
        op.execute("DROP FUNCTION facta_events_reject_change()")
    op.drop_table("facta_snapshots")
    op.drop_table("facta_events")
