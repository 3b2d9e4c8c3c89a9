"""Append fast path: ``facta_append`` as plain steps, with a path for one stream.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

PostgreSQL only (SQLite has no function). ``facta_append`` keeps its signature, its
results and every guarantee of revision 0004: the writer marker first, one stream lock
per stream in ascending key order, one ``recorded_at`` per append read once the locks
are held, nothing written unless every expected version and stream type matches, the
heads reported either way. What changes is how it gets there:

- the common append, one stream, takes its one lock and reads its head with plain
  statements (no ``unnest``, no loop), and one event is inserted with ``VALUES``;
- the heads are checked in PL/pgSQL and the function returns before any insert when they
  do not match, instead of one statement of six common table expressions that always
  ran every part;
- snapshots are inserted only when the append has some.

Each head is still read as the newest row of the ``(stream_id, version)`` unique index
(``ORDER BY version DESC LIMIT 1``): rows read per append do not grow with the stream or
the log (tests/eventstore/test_pg_append_plan.py). Server time per one-event append,
measured in the function itself (``pg_stat_user_functions``, 6 rounds of 420 calls):
85 us (0004) -> 41 us; a 1,000-event append is unchanged (13 us per event).
"""

from __future__ import annotations

import importlib

from alembic import op

from facta.eventstore.locks import STREAM_LOCK_CLASS, WRITER_MARKER

revision = "0007"
down_revision = "0006"
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
    head_version int;
    head_type text;
    matches boolean;
BEGIN
    -- The writer-in-flight marker, taken before any sequence value: readers wait for the
    -- holders they see before reading past the log's head (facta.eventstore._readers).
    PERFORM pg_advisory_xact_lock_shared({WRITER_MARKER[0]}, {WRITER_MARKER[1]});
    IF cardinality(stream_ids) = 1 THEN
        -- One stream: its lock, the clock, its head (the newest row of its index).
        PERFORM pg_advisory_xact_lock({STREAM_LOCK_CLASS}, hashtext(stream_ids[1]));
        first_recorded_at := clock_timestamp();
        SELECT e.version, e.stream_type INTO head_version, head_type
        FROM facta_events e WHERE e.stream_id = stream_ids[1] ORDER BY e.version DESC LIMIT 1;
        head_versions := ARRAY[coalesce(head_version, 0)];
        head_types := ARRAY[head_type];
        matches := (expected_versions[1] IS NULL OR expected_versions[1] = coalesce(head_version, 0))
                   AND (head_type IS NULL OR head_type = stream_types[1]);
    ELSE
        -- One lock per stream, in ascending key order: appends sharing streams queue in
        -- one order (never a deadlock), and each reads its heads after the one before
        -- committed.
        FOR stream_key IN SELECT DISTINCT hashtext(s) FROM unnest(stream_ids) AS s ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock({STREAM_LOCK_CLASS}, stream_key);
        END LOOP;
        first_recorded_at := clock_timestamp();
        SELECT array_agg(coalesce(h.version, 0) ORDER BY s.k), array_agg(h.stream_type ORDER BY s.k),
               bool_and((s.expected IS NULL OR s.expected = coalesce(h.version, 0))
                        AND (h.stream_type IS NULL OR h.stream_type = s.stream_type))
        INTO head_versions, head_types, matches
        FROM unnest(stream_ids, stream_types, expected_versions) WITH ORDINALITY AS s(stream_id, stream_type, expected, k)
        LEFT JOIN LATERAL (
            SELECT e.version, e.stream_type FROM facta_events e
            WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
        ) h ON true;
    END IF;
    IF NOT matches THEN
        appended := 0;
        RETURN;
    END IF;
    appended := 1;
    IF cardinality(event_ids) = 1 THEN
        INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,
                                  payload, occurred_at, recorded_at, actor, correlation_id, causation_id)
        VALUES (event_ids[1], stream_ids[1], stream_types[1], head_versions[1] + 1, event_types[1],
                schema_versions[1], payloads[1]::jsonb, occurred[1], first_recorded_at,
                actor, correlation_id, causation_id)
        RETURNING ARRAY[facta_events.event_id], ARRAY[facta_events.position] INTO inserted_ids, positions;
    ELSE
        WITH inserted AS (
            INSERT INTO facta_events (event_id, stream_id, stream_type, version, event_type, schema_version,
                                      payload, occurred_at, recorded_at, actor, correlation_id, causation_id)
            SELECT e.event_id, stream_ids[e.k], stream_types[e.k], head_versions[e.k] + e.n, e.event_type,
                   e.schema_version, e.payload::jsonb, e.occurred_at, first_recorded_at,
                   actor, correlation_id, causation_id
            FROM unnest(event_streams, event_offsets, event_ids, event_types, schema_versions, payloads, occurred)
                 WITH ORDINALITY AS e(k, n, event_id, event_type, schema_version, payload, occurred_at, ord)
            ORDER BY e.ord
            RETURNING facta_events.event_id, facta_events.position
        )
        SELECT array_agg(i.event_id), array_agg(i.position) INTO inserted_ids, positions FROM inserted i;
    END IF;
    IF cardinality(snapshot_streams) > 0 THEN
        INSERT INTO facta_snapshots (stream_id, version, stream_type, state, state_schema, recorded_at)
        SELECT x.stream_id, x.version, x.stream_type, x.state::jsonb, x.state_schema, first_recorded_at
        FROM unnest(snapshot_streams, snapshot_versions, snapshot_types, snapshot_states, snapshot_schemas)
             AS x(stream_id, version, stream_type, state, state_schema)
        ON CONFLICT DO NOTHING;
    END IF;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FACTA_APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        before = importlib.import_module("facta.migrations.versions.0004_append_integrity")
        op.execute(before._FACTA_APPEND)
