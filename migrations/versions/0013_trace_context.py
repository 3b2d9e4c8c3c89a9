"""Trace context: the W3C trace context of the append that stored each event (issue 15).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

- ``facta_events.traceparent`` (VARCHAR(55)) and ``facta_events.tracestate``
  (VARCHAR(512)), nullable: one context per append call (:mod:`facta.tracing`), NULL when
  there was none (no OpenTelemetry SDK and nothing propagated) and for every event stored
  before this revision. Operational telemetry, not history: the hash chains of revision
  0010 do not cover them (ARCHITECTURE, threat model), and no revision fills them in.
- PostgreSQL: ``facta_append`` and ``facta_append_bytes`` take the two values as two more
  per-call arguments, last; the functions are revision 0010's otherwise (their text is
  taken from it, each change checked to apply exactly once). The old signatures are
  dropped: a caller of the old signature fails loudly instead of storing no context.
- SQLite: the append-only trigger names every column it compares (revision 0010's single
  allowed UPDATE, a NULL hash set once); it is re-created naming the new columns too, so
  they can never be changed either. PostgreSQL's compares whole rows.
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_hash_chains = importlib.import_module("facta.migrations.versions.0010_hash_chains")

_OLD_APPEND = ("facta_append(text[], text[], int[], text, text, text, int[], int[], uuid[], text[], int[], text[],"
               " timestamptz[], text[], int[], text[], text[], text[])")
_NEW_APPEND = _OLD_APPEND[:-1] + ", text, text)"
_OLD_APPEND_BYTES = "facta_append_bytes(text, text[], int[], uuid[], text[], text[], bytea[], text, bigint)"
_NEW_APPEND_BYTES = _OLD_APPEND_BYTES[:-1] + ", text, text)"


def _changed(sql: str, changes: list[tuple[str, str, int]]) -> str:
    """``sql`` with each (old, new, count) replacement applied, each found exactly ``count`` times."""
    for old, new, count in changes:
        found = sql.count(old)
        if found != count:
            raise RuntimeError(f"revision 0013: {old!r} occurs {found} times in revision 0010's function, not {count}")
        sql = sql.replace(old, new)
    return sql


_FACTA_APPEND = _changed(_hash_chains._FACTA_APPEND, [
    ("    snapshot_schemas text[],\n", "    snapshot_schemas text[], traceparent text, tracestate text,\n", 1),
    ("causation_id, event_hash)", "causation_id, event_hash, traceparent, tracestate)", 2),
    ("actor, correlation_id, causation_id, h);", "actor, correlation_id, causation_id, h, traceparent, tracestate);", 1),
    ("actor, correlation_id, causation_id, e.event_hash\n",
     "actor, correlation_id, causation_id, e.event_hash, traceparent, tracestate\n", 1),
])
_FACTA_APPEND_BYTES = _changed(_hash_chains._FACTA_APPEND_BYTES, [
    ("tracking_name text, tracking_position bigint,\n",
     "tracking_name text, tracking_position bigint, traceparent text, tracestate text,\n", 1),
    ("payload_bytes, event_hash)", "payload_bytes, event_hash, traceparent, tracestate)", 1),
    ("e.payload_bytes, e.event_hash\n", "e.payload_bytes, e.event_hash, traceparent, tracestate\n", 1),
])

_SQLITE_EVENTS_NO_UPDATE = _changed(_hash_chains._SQLITE_EVENTS_NO_UPDATE, [
    ("NEW.payload_bytes IS OLD.payload_bytes",
     "NEW.payload_bytes IS OLD.payload_bytes AND NEW.traceparent IS OLD.traceparent"
     " AND NEW.tracestate IS OLD.tracestate", 1),
])


def upgrade() -> None:
    op.add_column("facta_events", sa.Column("traceparent", sa.String(55), nullable=True))
    op.add_column("facta_events", sa.Column("tracestate", sa.String(512), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {_OLD_APPEND}")
        op.execute(f"DROP FUNCTION {_OLD_APPEND_BYTES}")
        op.execute(_FACTA_APPEND)
        op.execute(_FACTA_APPEND_BYTES)
    else:
        op.execute("DROP TRIGGER facta_events_no_update")
        op.execute(_SQLITE_EVENTS_NO_UPDATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION {_NEW_APPEND}")
        op.execute(f"DROP FUNCTION {_NEW_APPEND_BYTES}")
        op.execute(_hash_chains._FACTA_APPEND)
        op.execute(_hash_chains._FACTA_APPEND_BYTES)
    else:
        op.execute("DROP TRIGGER facta_events_no_update")
        op.execute(_hash_chains._SQLITE_EVENTS_NO_UPDATE)
    # ALTER TABLE ... DROP COLUMN on both dialects (as revision 0010's downgrade).
    op.execute("ALTER TABLE facta_events DROP COLUMN tracestate")
    op.execute("ALTER TABLE facta_events DROP COLUMN traceparent")
