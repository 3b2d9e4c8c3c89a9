"""Subject keys: one data key per subject of personal data (crypto-shredding).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

``facta_subject_keys`` holds, per subject (the id named by a field marked
``PersonalData``, or the stream id), a random 256-bit AES-GCM data key
(:class:`facta.eventstore.personal_data.SqlKeyStore`). It is the one table facta deletes
from: ``facta gdpr forget SUBJECT`` deletes the subject's row, and the ciphertext of that
subject's personal data in events, snapshots and Kafka can no longer be read. No trigger
protects it, on purpose.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "facta_subject_keys",
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("data_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject"),
        sa.CheckConstraint("length(data_key) = 32", name="ck_facta_subject_keys_data_key"),
    )


def downgrade() -> None:
    op.drop_table("facta_subject_keys")
