"""What facta records about each projection, as plain functions of a connection.

- ``facta_projections``: one row per projection: its source (``log`` or ``kafka``), the
  fingerprint of its tables, and a *generation* that every swap of rebuilt tables bumps.
- ``facta_projection_checkpoints``: per projection and slot (``live``, ``rebuild``), one
  row per source coordinate: the store log is topic ``""`` partition ``-1`` holding the
  last position applied; a Kafka partition holds the next offset to read. The slots
  ``live-floor`` and ``rebuild-floor`` hold, per Kafka partition, a *position floor*: the
  store position up to which the partition's events were read from the store (a replay
  that filled a range Kafka deleted) or lie before the replayed slice; Kafka records at
  or below it are passed over (see :mod:`facta.projections.retention`).
- ``facta_projection_skips``: events an operator chose to skip, by store position.

Every batch a runner commits checks its generation (under a share lock on PostgreSQL,
which a swap's update waits for) and moves each checkpoint with a compare-and-set, so a
runner that lost its partitions, or whose tables were swapped under it, commits nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import CreateIndex, DropIndex

from facta.errors import ProjectionError
from facta.eventstore.locks import lock_key
from facta.eventstore.schema import events, projection_checkpoints, projection_skips, projections

from .api import REBUILD_SUFFIX, Projection, _given_name, rebuild_name, rename_index
from .writer import Rider

__all__ = ["FLOORS", "LIVE", "LOG", "REBUILD", "REBUILD_SUFFIX", "Coord", "Stale", "rename_index"]

Coord = tuple[str, int]
LOG: Coord = ("", -1)
LIVE, REBUILD = "live", "rebuild"
FLOORS = {LIVE: "live-floor", REBUILD: "rebuild-floor"}  # the position floors of each slot


class Stale(Exception):
    """The runner's view is out of date: its tables were swapped or another runner moved
    a checkpoint. The batch was rolled back; reload and go on."""


def now() -> datetime:
    return datetime.now(UTC)


# -- the registry row --------------------------------------------------------------------


def ensure_live(conn: Connection, projection: type[Projection], source: str) -> int:
    """Create the projection's row and live tables if missing; return its generation.
    Refuses a source or table shape other than the one the live tables were built with."""
    if conn.dialect.name == "postgresql":  # runners starting together create things once
        k1, k2 = lock_key(f"projection-ddl:{projection.name}")
        conn.execute(text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": k1, "k2": k2})
    digest = projection.schema_hash(conn.dialect)
    row = conn.execute(
        select(projections.c.generation, projections.c.source, projections.c.schema_hash).where(
            projections.c.name == projection.name
        )
    ).first()
    if row is None:
        _create_tables(conn, projection.live_tables())
        conn.execute(
            insert(projections).values(
                name=projection.name, generation=1, source=source, schema_hash=digest, updated_at=now()
            )
        )
        return 1
    if row.source != source:
        raise ProjectionError(
            f"projection {projection.name!r} was built from {_source_name(row.source)}, not {_source_name(source)}:"
            f" rebuild it from this source with `facta replay {projection.name} --from-"
            f"{'offset 0' if source == 'kafka' else 'position 0'}`"
        )
    if row.schema_hash != digest:
        raise ProjectionError(
            f"the tables of projection {projection.name!r} changed since they were built:"
            f" rebuild them with `facta replay {projection.name} --from-position 0`"
        )
    _create_tables(conn, projection.live_tables())  # dropped by hand? make them again, empty
    return int(row.generation)


def _source_name(source: str) -> str:
    return "Kafka" if source == "kafka" else "the store log"


def generation(conn: Connection, name: str, *, lock: bool) -> int | None:
    query = select(projections.c.generation).where(projections.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    value = conn.execute(query).scalar()
    return None if value is None else int(value)


def last_error(conn: Connection, name: str) -> str | None:
    value = conn.execute(select(projections.c.last_error).where(projections.c.name == name)).scalar()
    return None if value is None else str(value)


def record_error(conn: Connection, name: str, message: str | None) -> None:
    conn.execute(update(projections).where(projections.c.name == name).values(last_error=message, updated_at=now()))


def record_rate(conn: Connection, name: str, rate: float) -> None:
    conn.execute(update(projections).where(projections.c.name == name).values(events_per_second=rate))


def describe(conn: Connection) -> dict[str, dict[str, Any]]:
    """Every projection's row and live checkpoints, by name."""
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(select(projections)).mappings():
        out[row["name"]] = dict(row) | {"checkpoints": {}}
    for row in conn.execute(
        select(projection_checkpoints).where(projection_checkpoints.c.slot == LIVE)
    ).mappings():
        if row["projection"] in out:
            out[row["projection"]]["checkpoints"][(row["topic"], row["partition"])] = int(row["position"])
    return out


# -- checkpoints -------------------------------------------------------------------------


def load_checkpoints(conn: Connection, name: str, slot: str) -> dict[Coord, int]:
    c = projection_checkpoints.c
    rows = conn.execute(select(c.topic, c.partition, c.position).where(c.projection == name, c.slot == slot))
    return {(r.topic, int(r.partition)): int(r.position) for r in rows}


def move_checkpoints(
    conn: Connection, name: str, slot: str, expected: Mapping[Coord, int], advance: Mapping[Coord, int]
) -> None:
    """Compare-and-set each checkpoint in ``advance`` from its ``expected`` value; raise
    :class:`Stale` if any moved since (or was created by someone else)."""
    stamp = now()
    for (topic, partition), position in advance.items():
        old = expected.get((topic, partition))
        if old is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(projection_checkpoints).values(
                            projection=name, slot=slot, topic=topic, partition=partition,
                            position=position, updated_at=stamp,
                        )
                    )
            except IntegrityError:
                raise Stale from None
        elif position != old:
            done = conn.execute(_MOVE, {"p": name, "s": slot, "t": topic, "n": partition, "old": old,
                                        "new": position, "at": stamp})
            if done.rowcount != 1:
                raise Stale


# Built once: every batch of every runner runs it (a statement built per call costs
# about as much as its round trip here).
_MOVE = (
    update(projection_checkpoints)
    .where(projection_checkpoints.c.projection == bindparam("p"), projection_checkpoints.c.slot == bindparam("s"),
           projection_checkpoints.c.topic == bindparam("t"), projection_checkpoints.c.partition == bindparam("n"),
           projection_checkpoints.c.position == bindparam("old"))
    .values(position=bindparam("new"), updated_at=bindparam("at"))
)


def checkpoint_rider(
    conn: Connection, name: str, slot: str, expected: Mapping[Coord, int], advance: Mapping[Coord, int]
) -> tuple[Rider, int] | None:
    """PostgreSQL: :func:`move_checkpoints` as a :class:`~facta.projections.writer.Rider`
    for the batch's flush, and how many rows it must return (else :class:`Stale`); None
    where it cannot go so (SQLite; a checkpoint not made yet) or nothing moves."""
    if conn.dialect.name != "postgresql":
        return None
    moves = [(coord, expected.get(coord), position) for coord, position in advance.items()
             if expected.get(coord) != position]
    if not moves or any(old is None for _, old, _ in moves):
        return None
    stamp = projection_checkpoints.c.updated_at.type._cached_bind_processor(conn.dialect)
    params = (
        name, slot, [t for (t, _), _, _ in moves], [p for (_, p), _, _ in moves],
        [old for _, old, _ in moves], [new for _, _, new in moves], stamp(now()) if stamp is not None else now(),
    )
    return Rider(_MOVE_RIDER, params), len(moves)


# The compare-and-set of move_checkpoints, every coordinate at once.
_MOVE_RIDER = (
    "UPDATE facta_projection_checkpoints AS c SET position = u.new, updated_at = {6}::TIMESTAMP WITH TIME ZONE"
    " FROM unnest({2}::VARCHAR[], {3}::INTEGER[], {4}::BIGINT[], {5}::BIGINT[]) AS u(topic, part, old, new)"
    " WHERE c.projection = {0}::VARCHAR AND c.slot = {1}::VARCHAR AND c.topic = u.topic AND c.partition = u.part"
    " AND c.position = u.old RETURNING 1"
)


def set_checkpoints(conn: Connection, name: str, slot: str, values: Mapping[Coord, int]) -> None:
    """Replace the slot's checkpoints with ``values`` (a replay's starting point)."""
    c = projection_checkpoints.c
    conn.execute(delete(projection_checkpoints).where(c.projection == name, c.slot == slot))
    stamp = now()
    for (topic, partition), position in values.items():
        conn.execute(
            insert(projection_checkpoints).values(
                projection=name, slot=slot, topic=topic, partition=partition, position=position, updated_at=stamp
            )
        )


# -- skips -------------------------------------------------------------------------------


def skipped_positions(conn: Connection, name: str) -> set[int]:
    c = projection_skips.c
    return {int(p) for p in conn.execute(select(c.position).where(c.projection == name)).scalars()}


def add_skip(conn: Connection, name: str, position: int, reason: str, actor: str | None) -> dict[str, Any]:
    """Record that ``name`` skips the event at ``position``; returns what was recorded.
    Raises :class:`~facta.eventstore.InvalidValue` (before writing) for a ``reason`` that
    is empty or longer than ``TEXT_LIMITS["skip reason"]`` characters, or an ``actor``
    longer than ``TEXT_LIMITS["skipped by"]``."""
    from facta.eventstore.validation import check_text

    check_text("skip reason", reason)
    if not reason.strip():
        check_text("skip reason", "")  # only spaces: refused as empty
    check_text("skipped by", actor, optional=True)
    found = conn.execute(select(events.c.event_id, events.c.event_type).where(events.c.position == position)).first()
    if found is None:
        raise ProjectionError(f"no event at position {position}: nothing to skip")
    c = projection_skips.c
    exists = conn.execute(select(c.position).where(c.projection == name, c.position == position)).first()
    if exists is None:
        conn.execute(
            insert(projection_skips).values(
                projection=name, position=position, event_id=found.event_id, event_type=found.event_type,
                reason=reason, skipped_by=actor, skipped_at=now(),
            )
        )
    live = load_checkpoints(conn, name, LIVE).get(LOG)
    return {"projection": name, "position": position, "event_id": str(found.event_id),
            "event_type": found.event_type, "reason": reason,
            # On the store log: whether the live tables hold this event already (the
            # skip then only keeps it out of rebuilds). Unknown for a Kafka checkpoint.
            "already_applied": None if live is None else live >= position}


def list_skips(conn: Connection, name: str | None = None) -> list[dict[str, Any]]:
    query = select(projection_skips).order_by(projection_skips.c.projection, projection_skips.c.position)
    if name is not None:
        query = query.where(projection_skips.c.projection == name)
    return [dict(r) for r in conn.execute(query).mappings()]


def mark_skips_applied(conn: Connection, name: str, positions: Iterable[int]) -> None:
    c = projection_skips.c
    for position in positions:
        conn.execute(
            update(projection_skips)
            .where(c.projection == name, c.position == position, c.applied_at.is_(None))
            .values(applied_at=now())
        )


# -- tables: create, rebuild, swap ---------------------------------------------------------


def _create_tables(conn: Connection, tables: Iterable[Table]) -> None:
    for table in tables:
        table.create(conn, checkfirst=True)


def start_rebuild(
    conn: Connection, projection: Projection, start: Mapping[Coord, int], floors: Mapping[Coord, int] | None = None
) -> None:
    """Fresh, empty rebuild tables, the rebuild slot's starting checkpoints and its
    position floors (Kafka partitions only)."""
    for table in projection:
        table.drop(conn, checkfirst=True)
    _create_tables(conn, projection)
    set_checkpoints(conn, projection.name, REBUILD, start)
    set_checkpoints(conn, projection.name, FLOORS[REBUILD], floors or {})


def drop_rebuild(conn: Connection, projection: Projection) -> None:
    for table in projection:
        table.drop(conn, checkfirst=True)
    conn.execute(
        delete(projection_checkpoints).where(
            projection_checkpoints.c.projection == projection.name,
            projection_checkpoints.c.slot.in_([REBUILD, FLOORS[REBUILD]]),
        )
    )


def drop_checkpoint(conn: Connection, name: str, slot: str, coord: Coord) -> None:
    c = projection_checkpoints.c
    conn.execute(delete(projection_checkpoints).where(
        c.projection == name, c.slot == slot, c.topic == coord[0], c.partition == coord[1]
    ))


def swap(conn: Connection, projection: Projection, source: str) -> int:
    """Put the rebuilt tables and their checkpoints in place of the live ones, in this
    transaction: readers see the old model until it commits and the new one after.
    Returns the new generation."""
    name = projection.name
    old = generation(conn, name, lock=False)
    # Bumping first takes the row lock every live batch shares: from here no runner on the
    # old generation can commit, and after this commits each one sees it is stale.
    if old is None:
        conn.execute(
            insert(projections).values(
                name=name, generation=1, source=source, schema_hash=type(projection).schema_hash(conn.dialect),
                updated_at=now(),
            )
        )
        new = 1
    else:
        new = old + 1
        conn.execute(
            update(projections)
            .where(projections.c.name == name)
            .values(generation=new, source=source, schema_hash=type(projection).schema_hash(conn.dialect),
                    last_error=None, updated_at=now())
        )
    postgres = conn.dialect.name == "postgresql"
    quote = conn.dialect.identifier_preparer.quote_identifier
    for live in type(projection).live_tables():
        fresh = projection.tables[_attr_of(projection, live)]
        live_indexes = _pg_indexes(conn, live.name) if postgres else []
        live.drop(conn, checkfirst=True)
        conn.execute(text(f"ALTER TABLE {quote(fresh.name)} RENAME TO {quote(live.name)}"))
        if postgres:
            _rename_pg_indexes(conn, fresh, live, live_indexes)
        else:
            for index in fresh.indexes:
                conn.execute(DropIndex(index, if_exists=True))
            for index in live.indexes:
                conn.execute(CreateIndex(index))
    c = projection_checkpoints.c
    conn.execute(delete(projection_checkpoints).where(c.projection == name, c.slot.in_([LIVE, FLOORS[LIVE]])))
    for rebuilt, live_slot in ((REBUILD, LIVE), (FLOORS[REBUILD], FLOORS[LIVE])):
        conn.execute(update(projection_checkpoints).where(c.projection == name, c.slot == rebuilt).values(slot=live_slot))
    return new


def _attr_of(projection: Projection, live: Table) -> str:
    for attr, decl in type(projection)._table_attrs.items():
        if decl.table is live:
            return attr
    raise AssertionError(f"{live.name} is not a table of {projection.name}")


def _pg_indexes(conn: Connection, table: str) -> list[tuple[str, tuple[Any, ...]]]:
    """The indexes of ``table`` (in the current schema) with what makes each what it is
    (unique, primary, columns, expressions, predicate, method), not its name."""
    rows = conn.execute(text(
        "SELECT ic.relname, i.indisunique, i.indisprimary, i.indkey::text, am.amname,"
        " pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid), i.indclass::text"
        " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
        " JOIN pg_am am ON am.oid = ic.relam"
        " WHERE t.relname = :t AND t.relnamespace = current_schema()::regnamespace ORDER BY ic.relname"
    ), {"t": table})
    return [(str(r[0]), tuple(r[1:])) for r in rows]


def _rename_pg_indexes(conn: Connection, fresh: Table, live: Table,
                       live_indexes: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Give the swapped-in table's indexes the names the live table's had: a declared
    index or named constraint its declared name; one PostgreSQL named (a primary key's,
    an unnamed unique constraint's, truncated to 63 bytes where the name was long) the
    name of the old live index of the same definition, or else its name with the live
    table's in place of the fresh one's."""
    names = [str(index.name) for index in live.indexes if index.name is not None]
    names += [str(c.name) for c in live.constraints if _given_name(c.name)]
    # A name over 63 bytes (a naming convention's) was shortened when it was made: the
    # old live index of the same definition gives it back.
    declared = {rebuild_name(n, live.name, fresh.name): n for n in names if len(n.encode()) <= 63}
    old_by_shape: dict[tuple[Any, ...], list[str]] = {}
    for name, shape in live_indexes:
        if name not in declared.values():
            old_by_shape.setdefault(shape, []).append(name)
    quote = conn.dialect.identifier_preparer.quote_identifier
    for index, shape in _pg_indexes(conn, live.name):
        target = declared.get(index)
        if target is None and old_by_shape.get(shape):
            target = old_by_shape[shape].pop(0)
        if target is None and index.startswith(fresh.name):
            target = live.name + index[len(fresh.name):]
        if target is not None and target != index:
            conn.execute(text(f"ALTER INDEX {quote(index)} RENAME TO {quote(target)}"))


def table_exists(conn: Connection, name: str) -> bool:
    return bool(inspect(conn).has_table(name))


def count_rows(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

