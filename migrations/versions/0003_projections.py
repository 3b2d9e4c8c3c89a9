"""Projections: their registry, checkpoints and recorded skips.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Read-model tables themselves are not created here: they are derived data, declared by
each projection and built (and rebuilt into fresh tables, then swapped in) by its runner.
ARCHITECTURE.md explains this departure from "alembic creates every table".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "facta_projections",
        sa.Column("name", sa.String(200), primary_key=True),
        # Bumped by every swap of rebuilt tables: a runner holding an older generation
        # has its batch refused and reloads its checkpoints.
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("schema_hash", sa.String(64), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("events_per_second", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "facta_projection_checkpoints",
        sa.Column("projection", sa.String(200), nullable=False),
        # "live" for the tables readers use; "rebuild" while fresh tables are built.
        sa.Column("slot", sa.String(20), nullable=False),
        # The store log is topic "" partition -1, and "position" is the last position
        # applied; for Kafka "position" is the next offset to read (Kafka's convention).
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("position", _BIGINT, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("projection", "slot", "topic", "partition"),
        sa.CheckConstraint("position >= 0", name="ck_facta_projection_checkpoints_position"),
    )
    op.create_table(
        "facta_projection_skips",
        sa.Column("projection", sa.String(200), nullable=False),
        sa.Column("position", _BIGINT, nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("event_type", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("skipped_by", sa.String(200), nullable=True),
        sa.Column("skipped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("projection", "position"),
    )


def downgrade() -> None:
    _drop_read_models()
    op.drop_table("facta_projection_skips")
    op.drop_table("facta_projection_checkpoints")
    op.drop_table("facta_projections")


def _drop_read_models() -> None:
    """Drop the live and rebuild tables of every registered projection: without their
    registry rows and checkpoints, a later upgrade would apply every event to them again.
    A registered projection the catalog does not know (its module not named) is refused."""
    from alembic import context

    from facta.errors import MigrationRefused
    from facta.projections.api import REBUILD_SUFFIX
    from facta.projections.catalog import load_catalog

    bind = op.get_bind()
    names = [row[0] for row in bind.execute(sa.text("SELECT name FROM facta_projections ORDER BY name"))]
    if not names:
        return
    modules = context.config.attributes.get("projections")
    if modules is None:
        modules = context.get_x_argument(as_dictionary=True).get("projections")
    catalog = load_catalog(modules)
    unknown = [name for name in names if name not in catalog]
    if unknown:
        raise MigrationRefused(
            f"downgrading below revision 0003 drops the read models of projections {', '.join(map(repr, unknown))},"
            " which are not in the projection catalog: name their modules with --projections"
            " (or FACTA_PROJECTIONS; alembic: -x projections=MODULES)"
        )
    for name in names:
        projection = catalog.get(name)
        for instance in (projection(), projection(table_suffix=REBUILD_SUFFIX)):
            for table in instance:
                table.drop(bind, checkfirst=True)
