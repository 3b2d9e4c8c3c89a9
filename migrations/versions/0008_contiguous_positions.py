"""Contiguous positions: one append's events get one unbroken range of positions.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

PostgreSQL only (SQLite writers hold the file's write lock from ``BEGIN IMMEDIATE`` to
commit, so its positions are contiguous per append already).

``facta_take_positions(n integer) RETURNS bigint`` returns the first of ``n`` contiguous
positions taken from ``facta_events``' sequence; the caller inserts its rows at
``first .. first + n - 1``. Every writer of ``facta_events`` takes positions through it:

- it takes the writer marker (``locks.WRITER_MARKER``, shared, to the end of the
  transaction) before any sequence value, so the log readers' horizon holds whoever
  calls it (ARCHITECTURE, "The gap-free global log");
- it holds the positions lock (``locks.POSITIONS_LOCK``) at session level only while it
  takes the values, never to commit, so commits do not queue: exclusive for ``n > 1``
  (``nextval`` over ``generate_series``, checked to be one run), shared for ``n = 1``
  (one ``nextval``: a single value cannot land inside another append's range);
- an error or a cancel (``statement_timeout``, ``pg_cancel_backend``: ``query_canceled``,
  which ``WHEN OTHERS`` does not catch) while it holds the lock releases the lock before
  the error goes on: a session lock outlives the transaction, and a leaked one would stop
  every later append.

``n`` below 1 or NULL is refused (``invalid_parameter_value``). Positions of a
transaction that rolls back stay unused: gaps, as before.

``facta_append`` keeps its signature and results and changes in one place: it takes its
positions with ``facta_take_positions`` (inserting ``position`` explicitly, in the order
the events were given) once its stream locks are held and its heads matched, just
before it inserts. So the writer marker is now taken there, not first: an append that
queues on a stream lock or is rejected no longer holds the marker, and readers do not
wait for it; the marker still precedes every position, which is all the horizon needs.
No lock is held while waiting for another: the positions lock is taken after the stream
locks and released before the insert, so it cannot close a cycle with them.
"""

from __future__ import annotations

import importlib

from alembic import op

from facta.eventstore.locks import POSITIONS_LOCK, STREAM_LOCK_CLASS, WRITER_MARKER

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: The sequence behind ``facta_events.position`` (a BIGSERIAL, revision 0001).
SEQUENCE = "facta_events_position_seq"

_HELD = (
    "FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    f" AND classid = {POSITIONS_LOCK[0]} AND objid = {POSITIONS_LOCK[1]} AND objsubid = 2 AND granted"
)

_TAKE_POSITIONS = f"""
CREATE OR REPLACE FUNCTION facta_take_positions(n integer) RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    first_position bigint;
    last_position bigint;
    tries int := 0;
BEGIN
    IF n IS NULL OR n < 1 THEN
        RAISE EXCEPTION 'facta_take_positions: n must be 1 or more, not %', coalesce(n::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The writer marker before any sequence value (readers' horizon, facta.eventstore._readers).
    PERFORM pg_advisory_xact_lock_shared({WRITER_MARKER[0]}, {WRITER_MARKER[1]});
    BEGIN
        IF n = 1 THEN
            PERFORM pg_advisory_lock_shared({POSITIONS_LOCK[0]}, {POSITIONS_LOCK[1]});
            first_position := nextval('{SEQUENCE}');
            PERFORM pg_advisory_unlock_shared({POSITIONS_LOCK[0]}, {POSITIONS_LOCK[1]});
            RETURN first_position;
        END IF;
        PERFORM pg_advisory_lock({POSITIONS_LOCK[0]}, {POSITIONS_LOCK[1]});
        LOOP
            SELECT min(v), max(v) INTO first_position, last_position
            FROM (SELECT nextval('{SEQUENCE}') AS v FROM generate_series(1, n)) AS taken;
            -- Always one run while every writer comes through here; a writer that calls
            -- nextval itself can break a run: those values stay unused, and we try again.
            EXIT WHEN last_position - first_position = n - 1;
            tries := tries + 1;
            IF tries = 10 THEN
                RAISE EXCEPTION 'facta_take_positions: no % contiguous positions in 10 tries: something '
                                'takes values of {SEQUENCE} without facta_take_positions', n
                    USING ERRCODE = 'object_not_in_prerequisite_state';
            END IF;
        END LOOP;
        PERFORM pg_advisory_unlock({POSITIONS_LOCK[0]}, {POSITIONS_LOCK[1]});
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- A session lock outlives the failed transaction: let go of it if held, then re-raise.
        PERFORM pg_advisory_unlock({POSITIONS_LOCK[0]}, {POSITIONS_LOCK[1]}) {_HELD} AND mode = 'ExclusiveLock';
        PERFORM pg_advisory_unlock_shared({POSITIONS_LOCK[0]}, {POSITIONS_LOCK[1]}) {_HELD} AND mode = 'ShareLock';
        RAISE;
    END;
    RETURN first_position;
END
$fn$
"""

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
    first_position bigint;
BEGIN
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
    -- Positions last, once the heads matched: the writer marker, then one unbroken range
    -- (facta_take_positions, above).
    first_position := facta_take_positions(cardinality(event_ids));
    IF cardinality(event_ids) = 1 THEN
        INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                                  payload, occurred_at, recorded_at, actor, correlation_id, causation_id)
        VALUES (first_position, event_ids[1], stream_ids[1], stream_types[1], head_versions[1] + 1, event_types[1],
                schema_versions[1], payloads[1]::jsonb, occurred[1], first_recorded_at,
                actor, correlation_id, causation_id);
        inserted_ids := event_ids;
        positions := ARRAY[first_position];
    ELSE
        WITH inserted AS (
            INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                                      payload, occurred_at, recorded_at, actor, correlation_id, causation_id)
            SELECT first_position + e.ord - 1, e.event_id, stream_ids[e.k], stream_types[e.k], head_versions[e.k] + e.n,
                   e.event_type, e.schema_version, e.payload::jsonb, e.occurred_at, first_recorded_at,
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
        op.execute(_TAKE_POSITIONS)
        op.execute(_FACTA_APPEND)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        before = importlib.import_module("facta.migrations.versions.0007_append_fast_path")
        op.execute(before._FACTA_APPEND)
        op.execute("DROP FUNCTION IF EXISTS facta_take_positions(integer)")
