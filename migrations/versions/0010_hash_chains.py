"""Hash chains: every event and snapshot carries a SHA-256 over its content, and every
event the hash of its stream's previous event (issue 14).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

- ``facta_events.event_hash`` and ``facta_snapshots.state_hash`` (BYTEA / BLOB, 32
  bytes, nullable): set at append from here on, on both dialects; NULL for what was
  stored before. ``facta audit seal`` fills those in once
  (:func:`facta.eventstore.integrity.seal_backfill`).
- ``facta_hash_start(position)``: one row, the highest position stored when this
  revision ran (0 for an empty log). Only events at or below it may be backfilled, and
  an event above it whose stream predecessor is at or below it may chain from 32 zero
  bytes (it was appended before the predecessor was sealed). ARCHITECTURE, "Hash chains".
- The permanent-history triggers allow exactly one ``UPDATE``: setting a NULL
  ``event_hash`` / ``state_hash`` to 32 bytes, every other column unchanged. Everything
  else is refused as before, on both dialects.
- PostgreSQL computes the hashes in ``facta_append`` and ``facta_append_bytes`` (the
  payload's canonical bytes are jsonb's own text, which only the database has) through
  ``facta_event_digest(...)``; snapshots get theirs from a ``BEFORE INSERT`` trigger
  (``facta_state_hash(...)``), whichever statement writes them. SQLite appends compute
  them in Python on the writer thread (:mod:`facta.eventstore.integrity`), the same
  bytes. ``facta_append_bytes`` now takes the stream locks of ``facta_append`` (one per
  stream, ascending key order) so that two byte appends to one stream cannot chain from
  the same head; writers to other streams still never wait for each other.

The canonical bytes (the single definition is :mod:`facta.eventstore.integrity`; the SQL
here is tested to give the same digests, ``tests/eventstore/test_integrity.py``)::

    content  = "facta.event.1\\0" || T(stream_id) || T(stream_type) || N(actor)
               || N(correlation_id) || N(causation_id) || event_id (16 bytes)
               || I32(version) || T(event_type) || I32(schema_version)
               || I64(occurred_at, microseconds since 2000-01-01 UTC: timestamptz_send)
               || ("b" || I32(len) || payload_bytes   when payload_bytes is set
                   | "j" || I32(len) || payload text as the database returns it)
    event_hash = SHA-256("facta.chain.1\\0" || prev || SHA-256(content))

T(s) = I32(UTF-8 length) || UTF-8 bytes, N(s) = T(s) or I32(-1) for NULL, I32/I64 big
endian two's complement (``int4send`` / ``int8send``).
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

from facta.eventstore.locks import STREAM_LOCK_CLASS, WRITER_MARKER

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Tags and the zero predecessor, as in facta.eventstore.integrity (not imported: a
# revision is frozen once released, the module may move on).
EVENT_TAG = "\\x66616374612e6576656e742e3100"  # b"facta.event.1\0"
CHAIN_TAG = "\\x66616374612e636861696e2e3100"  # b"facta.chain.1\0"
SNAPSHOT_TAG = "\\x66616374612e736e617073686f742e3100"  # b"facta.snapshot.1\0"
ZERO = "\\x" + "00" * 32
NULL_TEXT = "\\xffffffff"


def _t(arg: str) -> str:
    return f"int4send(octet_length(convert_to({arg}, 'UTF8'))) || convert_to({arg}, 'UTF8')"


def _n(arg: str) -> str:
    return f"coalesce({_t(arg)}, '{NULL_TEXT}'::bytea)"


def _body(text_arg: str, bytes_arg: str) -> str:
    return (
        f"CASE WHEN {bytes_arg} IS NOT NULL THEN '\\x62'::bytea || int4send(octet_length({bytes_arg})) || {bytes_arg}"
        f" ELSE '\\x6a'::bytea || {_t(text_arg)} END"
    )


# Each one expression: PostgreSQL inlines them into the statements that call them. The
# content's first part (what one append shares per stream) is computed once per stream
# (facta_event_prefix), the rest per event (facta_event_digest_from); occurred-at is
# timestamptz_send's int64 (microseconds since 2000-01-01 UTC).
_EVENT_PREFIX = f"""
CREATE OR REPLACE FUNCTION facta_event_prefix(
    stream_id text, stream_type text, actor text, correlation_id text, causation_id text
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
SELECT '{EVENT_TAG}'::bytea || {_t('stream_id')} || {_t('stream_type')} || {_n('actor')}
       || {_n('correlation_id')} || {_n('causation_id')}
$fn$
"""
_EVENT_DIGEST_FROM = f"""
CREATE OR REPLACE FUNCTION facta_event_digest_from(
    prefix bytea, event_id uuid, version int, event_type text, schema_version int, occurred_at timestamptz,
    payload text, payload_bytes bytea
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
SELECT sha256(prefix || uuid_send(event_id) || int4send(version) || {_t('event_type')} || int4send(schema_version)
              || timestamptz_send(occurred_at) || {_body('payload', 'payload_bytes')})
$fn$
"""
_EVENT_DIGEST = """
CREATE OR REPLACE FUNCTION facta_event_digest(
    stream_id text, stream_type text, actor text, correlation_id text, causation_id text,
    event_id uuid, version int, event_type text, schema_version int, occurred_at timestamptz,
    payload text, payload_bytes bytea
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
SELECT facta_event_digest_from(facta_event_prefix(stream_id, stream_type, actor, correlation_id, causation_id),
                               event_id, version, event_type, schema_version, occurred_at, payload, payload_bytes)
$fn$
"""

_STATE_HASH = f"""
CREATE OR REPLACE FUNCTION facta_state_hash(
    stream_id text, version int, stream_type text, state_schema text, state text, state_bytes bytea
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
SELECT sha256('{SNAPSHOT_TAG}'::bytea || {_t('stream_id')} || int4send(version) || {_t('stream_type')}
              || {_t('state_schema')} || {_body('state', 'state_bytes')})
$fn$
"""

_SNAPSHOT_TRIGGER_FN = """
CREATE OR REPLACE FUNCTION facta_snapshots_hash() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.state_hash := facta_state_hash(NEW.stream_id, NEW.version, NEW.stream_type, NEW.state_schema,
                                       NEW.state::text, NEW.state_bytes);
    RETURN NEW;
END
$fn$
"""

# The one UPDATE allowed: a NULL hash set once to 32 bytes, nothing else changed (the
# whole row compared as jsonb, so a column added later is covered without a new revision).
_EVENTS_REJECT_CHANGE = """
CREATE OR REPLACE FUNCTION facta_events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.event_hash IS NULL AND octet_length(NEW.event_hash) = 32
       AND (to_jsonb(NEW) - 'event_hash') = (to_jsonb(OLD) - 'event_hash') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'facta_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$fn$
"""
_SNAPSHOTS_REJECT_UPDATE = """
CREATE OR REPLACE FUNCTION facta_snapshots_reject_update() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state_hash IS NULL AND octet_length(NEW.state_hash) = 32
       AND (to_jsonb(NEW) - 'state_hash') = (to_jsonb(OLD) - 'state_hash') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'facta_snapshots keeps a snapshot as first written: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$fn$
"""

_EVENT_COLUMNS = (
    "position", "event_id", "stream_id", "stream_type", "version", "event_type", "schema_version", "payload",
    "occurred_at", "recorded_at", "actor", "correlation_id", "causation_id", "payload_bytes",
)
_SNAPSHOT_COLUMNS = ("stream_id", "version", "stream_type", "state", "state_schema", "recorded_at", "state_bytes")


def _sqlite_same(columns: tuple[str, ...]) -> str:
    return " AND ".join(f"NEW.{c} IS OLD.{c}" for c in columns)


# SQLite names every column: a revision that adds a column to these tables re-creates them.
_SQLITE_EVENTS_NO_UPDATE = f"""
CREATE TRIGGER facta_events_no_update BEFORE UPDATE ON facta_events
WHEN NOT (OLD.event_hash IS NULL AND typeof(NEW.event_hash) = 'blob' AND length(NEW.event_hash) = 32
          AND {_sqlite_same(_EVENT_COLUMNS)})
BEGIN SELECT RAISE(ABORT, 'facta_events is append-only: UPDATE is not allowed'); END
"""
_SQLITE_SNAPSHOTS_NO_UPDATE = f"""
CREATE TRIGGER facta_snapshots_no_update BEFORE UPDATE ON facta_snapshots
WHEN NOT (OLD.state_hash IS NULL AND typeof(NEW.state_hash) = 'blob' AND length(NEW.state_hash) = 32
          AND {_sqlite_same(_SNAPSHOT_COLUMNS)})
BEGIN SELECT RAISE(ABORT, 'facta_snapshots keeps a snapshot as first written: UPDATE is not allowed'); END
"""
_SQLITE_EVENTS_NO_UPDATE_0001 = """
CREATE TRIGGER facta_events_no_update BEFORE UPDATE ON facta_events
BEGIN SELECT RAISE(ABORT, 'facta_events is append-only: UPDATE is not allowed'); END
"""
_SQLITE_SNAPSHOTS_NO_UPDATE_0004 = """
CREATE TRIGGER facta_snapshots_no_update BEFORE UPDATE ON facta_snapshots
BEGIN SELECT RAISE(ABORT, 'facta_snapshots keeps a snapshot as first written: UPDATE is not allowed'); END
"""

_CHAIN_STEP = f"sha256('{CHAIN_TAG}'::bytea || coalesce(%s, '{ZERO}'::bytea) || %s)"

# facta_append of revision 0008 with the hashes: each head read also takes the head's
# event_hash; the digests are computed in the statement that casts the payloads to jsonb
# (the canonical payload is that jsonb's text), the chain in one loop, then the insert.
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
    head_hash bytea;
    head_hashes bytea[];
    matches boolean;
    first_position bigint;
    one_payload jsonb;
    one_text text;
    js jsonb[];
    digests bytea[];
    hashes bytea[];
    prefixes bytea[];
    h bytea;
    k int;
BEGIN
    IF cardinality(stream_ids) = 1 THEN
        -- One stream: its lock, the clock, its head (the newest row of its index).
        PERFORM pg_advisory_xact_lock({STREAM_LOCK_CLASS}, hashtext(stream_ids[1]));
        first_recorded_at := clock_timestamp();
        SELECT e.version, e.stream_type, e.event_hash INTO head_version, head_type, head_hash
        FROM facta_events e WHERE e.stream_id = stream_ids[1] ORDER BY e.version DESC LIMIT 1;
        head_versions := ARRAY[coalesce(head_version, 0)];
        head_types := ARRAY[head_type];
        head_hashes := ARRAY[head_hash];
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
               array_agg(h.event_hash ORDER BY s.k),
               bool_and((s.expected IS NULL OR s.expected = coalesce(h.version, 0))
                        AND (h.stream_type IS NULL OR h.stream_type = s.stream_type))
        INTO head_versions, head_types, head_hashes, matches
        FROM unnest(stream_ids, stream_types, expected_versions) WITH ORDINALITY AS s(stream_id, stream_type, expected, k)
        LEFT JOIN LATERAL (
            SELECT e.version, e.stream_type, e.event_hash FROM facta_events e
            WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
        ) h ON true;
    END IF;
    IF NOT matches THEN
        appended := 0;
        RETURN;
    END IF;
    appended := 1;
    -- Positions last, once the heads matched: the writer marker, then one unbroken range
    -- (facta_take_positions, revision 0008).
    first_position := facta_take_positions(cardinality(event_ids));
    IF cardinality(event_ids) = 1 THEN
        one_payload := payloads[1]::jsonb;
        one_text := one_payload::text;
        h := {_CHAIN_STEP % ("head_hashes[1]", "facta_event_digest(stream_ids[1], stream_types[1], actor, correlation_id, causation_id, event_ids[1], head_versions[1] + 1, event_types[1], schema_versions[1], occurred[1], one_text, NULL)")};
        INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                                  payload, occurred_at, recorded_at, actor, correlation_id, causation_id, event_hash)
        VALUES (first_position, event_ids[1], stream_ids[1], stream_types[1], head_versions[1] + 1, event_types[1],
                schema_versions[1], one_payload, occurred[1], first_recorded_at,
                actor, correlation_id, causation_id, h);
        inserted_ids := event_ids;
        positions := ARRAY[first_position];
    ELSE
        prefixes := ARRAY(SELECT facta_event_prefix(u.s, u.t, actor, correlation_id, causation_id)
                          FROM unnest(stream_ids, stream_types) WITH ORDINALITY AS u(s, t, k) ORDER BY u.k);
        SELECT array_agg(x.j ORDER BY x.ord),
               array_agg(facta_event_digest_from(prefixes[x.k], x.event_id, head_versions[x.k] + x.n, x.event_type,
                                                 x.schema_version, x.occurred_at, x.jt, NULL) ORDER BY x.ord)
        INTO js, digests
        -- OFFSET 0 keeps each level from being flattened: one jsonb parse and one jsonb
        -- text per event (the inlined digest names its payload argument twice).
        FROM (SELECT y.*, y.j::text AS jt
              FROM (SELECT e.*, e.payload::jsonb AS j
                    FROM unnest(event_streams, event_offsets, event_ids, event_types, schema_versions, payloads,
                                occurred)
                         WITH ORDINALITY AS e(k, n, event_id, event_type, schema_version, payload, occurred_at, ord)
                    OFFSET 0) y
              OFFSET 0) x;
        -- Each stream's chain, in the order given (versions ascend within a stream).
        hashes := array_fill(NULL::bytea, ARRAY[cardinality(event_ids)]);
        FOR i IN 1 .. cardinality(event_ids) LOOP
            k := event_streams[i];
            h := {_CHAIN_STEP % ("head_hashes[k]", "digests[i]")};
            head_hashes[k] := h;
            hashes[i] := h;
        END LOOP;
        WITH inserted AS (
            INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                                      payload, occurred_at, recorded_at, actor, correlation_id, causation_id, event_hash)
            SELECT first_position + e.ord - 1, e.event_id, stream_ids[e.k], stream_types[e.k], head_versions[e.k] + e.n,
                   e.event_type, e.schema_version, e.payload, e.occurred_at, first_recorded_at,
                   actor, correlation_id, causation_id, e.event_hash
            FROM unnest(event_streams, event_offsets, event_ids, event_types, schema_versions, js, occurred, hashes)
                 WITH ORDINALITY AS e(k, n, event_id, event_type, schema_version, payload, occurred_at, event_hash, ord)
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

# facta_append_bytes of revision 0009 with the hashes and the stream locks.
_FACTA_APPEND_BYTES = f"""
CREATE OR REPLACE FUNCTION facta_append_bytes(
    p_stream_type text, stream_ids text[], versions int[], event_ids uuid[], event_types text[],
    payloads text[], payload_bytes bytea[], tracking_name text, tracking_position bigint,
    OUT positions bigint[], OUT recorded_at timestamptz, OUT mismatch_stream text, OUT mismatch_type text,
    OUT tracking_stored bigint
) LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    n int := cardinality(event_ids);
    stamp timestamptz;
    first_position bigint;
    stream_key int;
    heads text[];
    head_hashes bytea[];
    js jsonb[];
    digests bytea[];
    hashes bytea[];
    h bytea;
    k int;
BEGIN
    -- The streams' locks (as facta_append takes them): a stream's chain has one order.
    FOR stream_key IN SELECT DISTINCT hashtext(s) FROM unnest(stream_ids) AS s ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock({STREAM_LOCK_CLASS}, stream_key);
    END LOOP;
    -- The writer-in-flight marker, taken before any position: readers wait for the
    -- holders they see before reading past the log's head (facta.eventstore._readers).
    PERFORM pg_advisory_xact_lock_shared({WRITER_MARKER[0]}, {WRITER_MARKER[1]});
    stamp := clock_timestamp();
    recorded_at := stamp;
    IF n > 0 THEN
        -- Every row of a stream has its type: compare with each stream's newest row,
        -- whose hash the stream's next event chains from.
        SELECT array_agg(s.stream_id), array_agg(h.event_hash),
               (array_agg(s.stream_id) FILTER (WHERE h.stream_type <> p_stream_type))[1],
               (array_agg(h.stream_type) FILTER (WHERE h.stream_type <> p_stream_type))[1]
        INTO heads, head_hashes, mismatch_stream, mismatch_type
        FROM (SELECT DISTINCT x AS stream_id FROM unnest(stream_ids) AS x) s
        LEFT JOIN LATERAL (
            SELECT e.stream_type, e.event_hash FROM facta_events e
            WHERE e.stream_id = s.stream_id ORDER BY e.version DESC LIMIT 1
        ) h ON true;
        IF mismatch_stream IS NOT NULL THEN
            RETURN;
        END IF;
    END IF;
    IF tracking_name IS NOT NULL THEN
        INSERT INTO facta_tracking AS t (name, position, updated_at) VALUES (tracking_name, tracking_position, stamp)
        ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at
        WHERE t.position < EXCLUDED.position;
        IF NOT FOUND THEN
            SELECT t.position INTO tracking_stored FROM facta_tracking t WHERE t.name = tracking_name;
            RETURN;
        END IF;
    END IF;
    IF n = 0 THEN
        positions := ARRAY[]::bigint[];
        RETURN;
    END IF;
    SELECT array_agg(x.j ORDER BY x.ord),
           array_agg(facta_event_digest(x.stream_id, p_stream_type, NULL, NULL, NULL, x.event_id, x.version,
                                        x.event_type, 1, stamp, x.jt, x.payload_bytes) ORDER BY x.ord)
    INTO js, digests
    FROM (SELECT y.*, CASE WHEN y.payload_bytes IS NULL THEN y.j::text END AS jt
          FROM (SELECT e.*, e.payload::jsonb AS j
                FROM unnest(stream_ids, versions, event_ids, event_types, payloads, payload_bytes)
                     WITH ORDINALITY AS e(stream_id, version, event_id, event_type, payload, payload_bytes, ord)
                OFFSET 0) y
          OFFSET 0) x;
    hashes := array_fill(NULL::bytea, ARRAY[n]);
    FOR i IN 1 .. n LOOP
        k := array_position(heads, stream_ids[i]);
        h := {_CHAIN_STEP % ("head_hashes[k]", "digests[i]")};
        head_hashes[k] := h;
        hashes[i] := h;
    END LOOP;
    -- One contiguous range of positions for the whole append (revision 0008).
    first_position := facta_take_positions(n);
    INSERT INTO facta_events (position, event_id, stream_id, stream_type, version, event_type, schema_version,
                              payload, occurred_at, recorded_at, payload_bytes, event_hash)
    SELECT first_position + e.ord - 1, e.event_id, e.stream_id, p_stream_type, e.version, e.event_type, 1,
           e.payload, stamp, stamp, e.payload_bytes, e.event_hash
    FROM unnest(stream_ids, versions, event_ids, event_types, js, payload_bytes, hashes)
         WITH ORDINALITY AS e(stream_id, version, event_id, event_type, payload, payload_bytes, event_hash, ord);
    positions := ARRAY(SELECT generate_series(first_position, first_position + n - 1));
END
$fn$
"""


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("facta_events", sa.Column("event_hash", sa.LargeBinary(), nullable=True))
    op.add_column("facta_snapshots", sa.Column("state_hash", sa.LargeBinary(), nullable=True))
    op.create_table(
        "facta_hash_start",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=False),
    )
    # Taken with the table locked by ADD COLUMN (PostgreSQL) or the write lock (SQLite).
    op.execute("INSERT INTO facta_hash_start (position) SELECT coalesce(max(position), 0) FROM facta_events")
    if bind.dialect.name == "postgresql":
        for sql in (_EVENT_PREFIX, _EVENT_DIGEST_FROM, _EVENT_DIGEST, _STATE_HASH, _SNAPSHOT_TRIGGER_FN, _EVENTS_REJECT_CHANGE,
                    _SNAPSHOTS_REJECT_UPDATE, _FACTA_APPEND, _FACTA_APPEND_BYTES):
            op.execute(sql)
        op.execute(
            "CREATE TRIGGER facta_snapshots_hash BEFORE INSERT ON facta_snapshots"
            " FOR EACH ROW EXECUTE FUNCTION facta_snapshots_hash()"
        )
    else:
        op.execute("DROP TRIGGER facta_events_no_update")
        op.execute(_SQLITE_EVENTS_NO_UPDATE)
        op.execute("DROP TRIGGER facta_snapshots_no_update")
        op.execute(_SQLITE_SNAPSHOTS_NO_UPDATE)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER facta_snapshots_hash ON facta_snapshots")
        op.execute("DROP FUNCTION facta_snapshots_hash()")
        pos = importlib.import_module("facta.migrations.versions.0008_contiguous_positions")
        byte = importlib.import_module("facta.migrations.versions.0009_byte_events")
        op.execute(pos._FACTA_APPEND)
        op.execute(byte._FACTA_APPEND_BYTES)
        op.execute(
            """
            CREATE OR REPLACE FUNCTION facta_events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'facta_events is append-only: % is not allowed', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        op.execute(
            """
            CREATE OR REPLACE FUNCTION facta_snapshots_reject_update() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'facta_snapshots keeps a snapshot as first written: % is not allowed', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END
            $$
            """
        )
        op.execute("DROP FUNCTION facta_event_digest(text, text, text, text, text, uuid, int, text, int, timestamptz,"
                   " text, bytea)")
        op.execute("DROP FUNCTION facta_event_digest_from(bytea, uuid, int, text, int, timestamptz, text, bytea)")
        op.execute("DROP FUNCTION facta_event_prefix(text, text, text, text, text)")
        op.execute("DROP FUNCTION facta_state_hash(text, int, text, text, text, bytea)")
    else:
        op.execute("DROP TRIGGER facta_events_no_update")
        op.execute(_SQLITE_EVENTS_NO_UPDATE_0001)
        op.execute("DROP TRIGGER facta_snapshots_no_update")
        op.execute(_SQLITE_SNAPSHOTS_NO_UPDATE_0004)
    op.drop_table("facta_hash_start")
    # ALTER TABLE ... DROP COLUMN on both dialects (as revision 0009's downgrade).
    op.execute("ALTER TABLE facta_snapshots DROP COLUMN state_hash")
    op.execute("ALTER TABLE facta_events DROP COLUMN event_hash")
