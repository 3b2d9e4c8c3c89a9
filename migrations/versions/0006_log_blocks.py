"""Log blocks: a summary of the log's recorded times per block of positions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

``facta_log_blocks`` holds, for block ``b`` (positions ``b * 1024 + 1`` to ``(b + 1) *
1024``), the smallest and largest ``recorded_at`` of its events and how many there are.
A row is written only for a block wholly at or below the settled horizon (no append can
add a position to it any more), by the reader of a time window that needs it, so it
never changes once written. Time-window queries skip the blocks whose [min, max] misses
the window. It is a cache: rows may be deleted (the permanent-history triggers of
``facta_events`` and ``facta_snapshots`` do not cover it) and are written again when
needed; a query is exact without them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "facta_log_blocks",
        sa.Column("block", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("min_recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("block"),
        sa.CheckConstraint("block >= 0", name="ck_facta_log_blocks_block"),
    )


def downgrade() -> None:
    op.drop_table("facta_log_blocks")
