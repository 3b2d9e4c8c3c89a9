"""The Merkle log: sealed leaves, stored complete subtree nodes and signed tree heads.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

``facta audit seal`` (:mod:`facta.eventstore.sealer`) folds the settled log, in position
order, into an RFC 6962 tree (:mod:`facta.eventstore.merkle`):

- ``facta_tree_leaves``: leaf ``leaf_index`` is the event at ``position`` and its
  ``leaf_hash`` = SHA-256(0x00 || event_hash);
- ``facta_tree_nodes``: the hash of every complete subtree above the leaves, node
  ``(level, node_index)`` covering leaves ``node_index * 2**level`` to
  ``(node_index + 1) * 2**level - 1``: an inclusion or consistency proof reads about
  2 * log2(n) of them by primary key;
- ``facta_tree_heads``: one Ed25519-signed head per seal that grew the tree.

All three are written once and never changed: triggers refuse UPDATE and DELETE (like the
events'), so a change needs the triggers dropped, which ``facta audit verify`` then finds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TABLES = ("facta_tree_leaves", "facta_tree_nodes", "facta_tree_heads")
_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "facta_tree_leaves",
        sa.Column("leaf_index", _BIG, nullable=False),
        sa.Column("position", _BIG, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index"),
        sa.UniqueConstraint("position", name="uq_facta_tree_leaves_position"),
        sa.CheckConstraint("leaf_index >= 0", name="ck_facta_tree_leaves_leaf_index"),
    )
    op.create_table(
        "facta_tree_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("node_index", _BIG, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "node_index"),
        sa.CheckConstraint("level >= 1 AND level <= 62 AND node_index >= 0", name="ck_facta_tree_nodes_key"),
    )
    op.create_table(
        "facta_tree_heads",
        sa.Column("tree_size", _BIG, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("last_position", _BIG, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
        sa.CheckConstraint("tree_size >= 0", name="ck_facta_tree_heads_tree_size"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION facta_tree_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is written once: % is not allowed', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        for table in _TABLES:
            op.execute(f"CREATE TRIGGER {table}_keep BEFORE UPDATE OR DELETE ON {table}"
                       " FOR EACH ROW EXECUTE FUNCTION facta_tree_reject_change()")
    else:
        for table in _TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}"
                           f" BEGIN SELECT RAISE(ABORT, '{table} is written once: {action} is not allowed'); END")


def downgrade() -> None:
    for table in reversed(_TABLES):
        op.drop_table(table)  # its triggers go with it
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION facta_tree_reject_change()")
