"""Relay checkpoints: how far each relay has published the log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "facta_relay_checkpoints",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("position >= 0", name="ck_facta_relay_checkpoints_position"),
    )


def downgrade() -> None:
    op.drop_table("facta_relay_checkpoints")
