"""Relay skips: events an operator chose to let a relay pass over, by store position.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

A record Kafka refuses (too large, say) stops the relay before it; ``facta relay skip``
records here who let the relay past which event, when and why, and the relay stamps
``passed_at`` when its checkpoint moves past the event without publishing it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "facta_relay_skips",
        sa.Column("relay", sa.String(200), nullable=False),
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("skipped_by", sa.String(200), nullable=True),
        sa.Column("skipped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("relay", "position"),
        sa.CheckConstraint("position >= 1", name="ck_facta_relay_skips_position"),
    )


def downgrade() -> None:
    # Skips the relay has not passed yet are dropped with the table: after an upgrade the
    # relay stops at such an event again and it can be skipped again.
    op.drop_table("facta_relay_skips")
