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
"""

from __future__ import annotations

from alembic import op

from facta.eventstore.locks import POSITIONS_LOCK, WRITER_MARKER

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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_TAKE_POSITIONS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS facta_take_positions(integer)")
