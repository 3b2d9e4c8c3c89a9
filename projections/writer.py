"""`ReadModel`: how handlers write, batched.

Handlers describe row changes; the runner flushes them at the end of each batch, inside
the batch's transaction: on SQLite one ``executemany`` per table and shape of change; on
PostgreSQL one ``unnest`` statement per table and kind of change (the upserts of every
shape in one statement). Changes
to the same row within a batch merge first, so a rebuild touches each row once per batch
however many events hit it:

- ``upsert(table, key, set={...}, add={...})``: insert the row, or update it; ``set``
  columns take the value, ``add`` columns are incremented (from 0 for a new row);
- ``insert(table, row)``: a new row (a duplicate key is an error);
- ``delete(table, key)``;
- ``get(table, key)``: the row as it stands with this batch's pending changes applied;
- ``execute(statement)``: anything else, after flushing what is pending.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import JSON, Connection, Executable, Result, Table, and_, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import IteratorResult
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.types import ARRAY

from facta.errors import InvalidValue

__all__ = ["ReadModel"]

Key = tuple[Any, ...]


@dataclass(slots=True)
class _Change:
    set: dict[str, Any] = field(default_factory=dict)
    add: dict[str, Any] = field(default_factory=dict)
    replace: bool = False  # the row was deleted earlier in this batch: start from nothing


@dataclass(slots=True)
class _TableChanges:
    table: Table
    key_columns: tuple[str, ...]
    upserts: dict[Key, _Change] = field(default_factory=dict)
    deletes: dict[Key, None] = field(default_factory=dict)
    inserts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rider:
    """A PostgreSQL statement to run within one of a flush's statements, in its round
    trip: ``sql`` data-modifying, ending in ``RETURNING``, with ``{0}``, ``{1}``, ...
    where its parameters go (numbered after the flush's), and ``params`` their values
    (ready for the driver). The runner's checkpoint moves travel so."""

    sql: str
    params: tuple[Any, ...]


class _NoRows(IteratorResult[Any]):
    """The result of running a statement for no parameter sets."""

    rowcount = 0


class ReadModel:
    """The write side a handler gets: buffered row changes on one transaction."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._dialect = connection.dialect.name
        self._tables: dict[str, _TableChanges] = {}
        self._statements: dict[tuple[Any, ...], Any] = {}
        self._rider: Rider | None = None
        self._rider_rows: int | None = None

    # -- changes ----------------------------------------------------------------------------

    def upsert(
        self,
        table: Table,
        key: Mapping[str, Any],
        set: Mapping[str, Any] | None = None,
        add: Mapping[str, Any] | None = None,
    ) -> None:
        changes = self._changes(table)
        k = self._key(changes, key)
        change = changes.upserts.get(k)
        if change is None:
            # After a delete in this batch, the delete stays pending (it is flushed
            # first) and this row starts from nothing.
            change = changes.upserts[k] = _Change(replace=k in changes.deletes)
        if set:
            if change.add:
                for column in set:
                    change.add.pop(column, None)
            change.set.update(set)
        if add:
            sets, adds = change.set, change.add
            for column, value in add.items():
                if column in sets:
                    sets[column] = (sets[column] or 0) + value
                else:
                    adds[column] = adds.get(column, 0) + value

    def insert(self, table: Table, row: Mapping[str, Any]) -> None:
        self._changes(table).inserts.append(dict(row))

    def delete(self, table: Table, key: Mapping[str, Any]) -> None:
        changes = self._changes(table)
        if changes.inserts:
            self._flush_table(changes)
        k = self._key(changes, key)
        changes.upserts.pop(k, None)
        changes.deletes[k] = None

    def get(self, table: Table, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The row with ``key`` as this batch has left it so far, or None."""
        changes = self._changes(table)
        if changes.inserts:
            self._flush_table(changes)
        k = self._key(changes, key)
        change = changes.upserts.get(k)
        if change is None and k in changes.deletes:
            return None
        row: dict[str, Any] | None = None
        if change is None or not change.replace:
            where = and_(*(table.c[c] == v for c, v in zip(changes.key_columns, k, strict=True)))
            found = self.connection.execute(select(table).where(where)).mappings().first()
            row = dict(found) if found is not None else None
        if change is None:
            return row
        if row is None:
            row = {c.name: None for c in table.c} | dict(zip(changes.key_columns, k, strict=True))
        row.update(change.set)
        for column, value in change.add.items():
            row[column] = (row[column] or 0) + value
        return row

    def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        """Run any statement on the batch's transaction, after the pending changes.

        ``parameters``: None, one mapping, or a list (or tuple) of mappings, run once per
        mapping. An empty list runs nothing and returns an empty result (``rowcount``
        0) on both dialects; SQLAlchemy alone would run the statement once without
        parameters (an INSERT of a row of defaults on SQLite, an error on PostgreSQL)."""
        if isinstance(parameters, (list, tuple)) and not parameters:
            return _NoRows(SimpleResultMetaData([]), iter([]))
        self.flush()
        return self.connection.execute(statement, parameters)

    # -- flushing ---------------------------------------------------------------------------

    def flush(self) -> None:
        for changes in self._tables.values():
            self._flush_table(changes)

    def flush_with(self, rider: Rider) -> int | None:
        """Flush, running ``rider`` within the first statement that writes rows from
        arrays (PostgreSQL); returns how many rows the rider returned, or None if no
        such statement ran (then the caller runs its own)."""
        self._rider, self._rider_rows = rider, None
        try:
            self.flush()
        finally:
            self._rider = None
        return self._rider_rows

    def _flush_table(self, changes: _TableChanges) -> None:
        conn, table = self.connection, changes.table
        arrays = self._dialect == "postgresql" and _unnest_ok(table)
        if changes.deletes:
            cols = changes.key_columns
            if arrays:
                self._pg_delete(changes, list(changes.deletes))
            else:
                stmt = delete(table).where(*(table.c[c] == bindparam(f"k_{c}") for c in cols))
                conn.execute(stmt, [dict(zip((f"k_{c}" for c in cols), k, strict=True)) for k in changes.deletes])
            changes.deletes.clear()
        if changes.inserts:
            groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for row in changes.inserts:
                groups.setdefault(tuple(row), []).append(row)
            for columns, rows in groups.items():
                if arrays:
                    self._pg_write(changes, columns, rows)
                else:
                    conn.execute(table.insert(), rows)
            changes.inserts.clear()
        if changes.upserts:
            # A row deleted earlier in this batch (``replace``) was deleted above, so its
            # upsert inserts it afresh, its ``add`` columns counting from 0.
            if arrays:
                self._pg_upsert(changes)
            else:
                shapes: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
                for k, change in changes.upserts.items():
                    row = dict(zip(changes.key_columns, k, strict=True))
                    row.update(change.set)
                    row.update(change.add)
                    shapes.setdefault(_shape(change), []).append(row)
                for (set_cols, add_cols), rows in shapes.items():
                    conn.execute(self._upsert_statement(changes, set_cols, add_cols), rows)
            changes.upserts.clear()

    # PostgreSQL: one statement per table and kind of change (upserts of several shapes
    # share one), the rows passed as one array per column and turned back into rows by
    # unnest(): a round trip per batch, not per row.

    def _pg_write(self, changes: _TableChanges, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (each giving ``columns``)."""
        columns = _fill_defaults(changes.table, columns, rows)
        self._pg_run(changes, ((columns, (), (), False),), list(self._pg_arrays(changes.table, columns, rows)))

    def _pg_upsert(self, changes: _TableChanges) -> None:
        """Upsert the rows of every shape in one statement: one ``INSERT ... ON CONFLICT
        DO UPDATE`` per shape, all but the last as data-modifying CTEs. Each row is in one
        shape only, so no row is changed twice; and each part is a plain upsert, so a row
        another transaction inserts meanwhile is updated, as by one statement per shape.
        The arrays are made from the pending changes column by column, no row dicts."""
        table, keys, dialect = changes.table, changes.key_columns, self.connection.dialect
        groups: dict[tuple[Any, ...], list[tuple[Key, _Change]]] = {}
        for item in changes.upserts.items():
            change = item[1]
            shape = (tuple(change.set), tuple(change.add))  # in the order given: one sort per shape
            group = groups.get(shape)
            if group is None:
                groups[shape] = [item]
            else:
                group.append(item)
        merged: dict[tuple[Any, ...], list[tuple[Key, _Change]]] = {}
        for (set_cols, add_cols), items in groups.items():
            merged.setdefault((tuple(sorted(set_cols)), tuple(sorted(add_cols))), []).extend(items)
        parts: list[_PgPart] = []
        arrays: list[list[Any]] = []
        for (set_cols, add_cols), items in merged.items():
            columns: list[tuple[str, list[Any]]] = [(c, [k[i] for k, _ in items]) for i, c in enumerate(keys)]
            columns += [(c, [ch.set[c] for _, ch in items]) for c in set_cols]
            columns += [(c, [ch.add[c] for _, ch in items]) for c in add_cols]
            given = keys + set_cols + add_cols
            for c in _defaulted(table, given):
                default: Any = table.c[c].default
                columns.append((c, [default.arg(None) for _ in items] if default.is_callable else [default.arg] * len(items)))
            for c, values in columns:
                process = table.c[c].type._cached_bind_processor(dialect)
                arrays.append([process(v) for v in values] if process is not None else values)
            parts.append((tuple(c for c, _ in columns), set_cols, add_cols, True))
        self._pg_run(changes, tuple(parts), arrays)

    def _pg_run(self, changes: _TableChanges, parts: tuple[_PgPart, ...], arrays: list[Any]) -> None:
        rider, self._rider = self._rider, None
        sql = _pg_sql(changes.table, self.connection.dialect, changes.key_columns, parts,
                      None if rider is None else rider.sql)
        if rider is None:
            self.connection.exec_driver_sql(sql, tuple(arrays))
        else:
            self._rider_rows = int(self.connection.exec_driver_sql(sql, (*arrays, *rider.params)).scalar_one())

    def _pg_delete(self, changes: _TableChanges, keys: list[Key]) -> None:
        table, dialect = changes.table, self.connection.dialect
        q = dialect.identifier_preparer.quote
        cols = changes.key_columns
        sql = (
            f"DELETE FROM {q(table.name)} WHERE ({', '.join(q(c) for c in cols)}) IN (SELECT * FROM unnest("
            + ", ".join(f"${i}::{table.c[c].type.compile(dialect=dialect)}[]" for i, c in enumerate(cols, 1))
            + "))"
        )
        rows = [dict(zip(cols, k, strict=True)) for k in keys]
        self.connection.exec_driver_sql(sql, self._pg_arrays(table, cols, rows))

    def _pg_arrays(self, table: Table, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> tuple[list[Any], ...]:
        dialect = self.connection.dialect
        out = []
        for c in columns:
            process = table.c[c].type._cached_bind_processor(dialect)
            values = [row[c] for row in rows]
            out.append([process(v) for v in values] if process is not None else values)
        return tuple(out)

    def _upsert_statement(self, changes: _TableChanges, set_cols: tuple[str, ...], add_cols: tuple[str, ...]) -> Any:
        cache_key = (changes.table.name, set_cols, add_cols)
        stmt = self._statements.get(cache_key)
        if stmt is None:
            table = changes.table
            insert = pg_insert(table) if self._dialect == "postgresql" else sqlite_insert(table)
            updates: dict[str, Any] = {c: insert.excluded[c] for c in set_cols}
            updates |= {c: func.coalesce(table.c[c], 0) + insert.excluded[c] for c in add_cols}
            if updates:
                stmt = insert.on_conflict_do_update(index_elements=list(changes.key_columns), set_=updates)
            else:
                stmt = insert.on_conflict_do_nothing(index_elements=list(changes.key_columns))
            self._statements[cache_key] = stmt
        return stmt

    # -- helpers ----------------------------------------------------------------------------

    def _changes(self, table: Table) -> _TableChanges:
        changes = self._tables.get(table.name)
        if changes is None:
            keys = tuple(c.name for c in table.primary_key.columns)
            if not keys:
                raise InvalidValue(f"read-model table {table.name!r} needs a primary key")
            changes = self._tables[table.name] = _TableChanges(table, keys)
        return changes

    @staticmethod
    def _key(changes: _TableChanges, key: Mapping[str, Any]) -> Key:
        columns = changes.key_columns
        try:
            k = (key[columns[0]],) if len(columns) == 1 else tuple(key[c] for c in columns)
        except KeyError:
            raise InvalidValue(
                f"key for {changes.table.name!r} must give {list(changes.key_columns)}, got {sorted(key)}"
            ) from None
        if len(key) != len(k):
            raise InvalidValue(f"key for {changes.table.name!r} must give only {list(changes.key_columns)}, got {sorted(key)}")
        return k



def _fill_defaults(table: Table, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """``columns`` and the table's other columns with a Python-side default, which
    SQLAlchemy would have filled in: filled into ``rows`` (a callable one called per row)."""
    defaulted = _defaulted(table, columns)
    for c in defaulted:
        default: Any = table.c[c].default
        for row in rows:
            row[c] = default.arg(None) if default.is_callable else default.arg
    return columns + defaulted


def _defaulted(table: Table, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The table's columns outside ``columns`` with a Python-side default."""
    return tuple(c.name for c in table.c if c.name not in columns and c.default is not None)


_PgPart = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], bool]
_PG_SQL: dict[tuple[Any, ...], str] = {}
_PG_SQL_KEPT = 512  # statements kept, across batches; the oldest go first


def _pg_sql(table: Table, dialect: Any, keys: tuple[str, ...], parts: tuple[_PgPart, ...],
            rider: str | None = None) -> str:
    """One statement writing ``parts``, each (columns, set columns, add columns, upsert?)
    from ``unnest`` of one array per column, numbered ``$1..`` across the parts; all but
    the last part are data-modifying CTEs. With a ``rider`` (:class:`Rider`'s sql), every
    part is a CTE, the rider another, its parameters numbered after the parts', and the
    statement returns the count of the rider's rows. Built once per table, parts and
    rider, then kept."""
    cache_key = (table, keys, parts, rider)
    sql = _PG_SQL.get(cache_key)
    if sql is not None:
        return sql
    q = dialect.identifier_preparer.quote
    name = q(table.name)
    texts, n = [], 1
    for columns, set_cols, add_cols, conflict in parts:
        text = (
            f"INSERT INTO {name} ({', '.join(q(c) for c in columns)}) SELECT * FROM unnest("
            + ", ".join(f"${i}::{table.c[c].type.compile(dialect=dialect)}[]" for i, c in enumerate(columns, n))
            + ")"
        )
        n += len(columns)
        if conflict:
            updates = [f"{q(c)} = excluded.{q(c)}" for c in set_cols]
            updates += [f"{q(c)} = COALESCE({name}.{q(c)}, 0) + excluded.{q(c)}" for c in add_cols]
            text += f" ON CONFLICT ({', '.join(q(c) for c in keys)}) " + (
                f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING")
        texts.append(text)
    if rider is not None:
        ctes = [f"s{i} AS ({t} RETURNING 1)" for i, t in enumerate(texts)]
        numbered = rider.format(*(f"${n + i}" for i in range(_fields(rider))))
        sql = "WITH " + ", ".join([*ctes, f"r AS ({numbered})"]) + " SELECT count(*) FROM r"
    else:
        sql = texts[-1]
        if len(texts) > 1:
            sql = "WITH " + ", ".join(f"s{i} AS ({t} RETURNING 1)" for i, t in enumerate(texts[:-1])) + " " + sql
    if len(_PG_SQL) >= _PG_SQL_KEPT:
        del _PG_SQL[next(iter(_PG_SQL))]
    _PG_SQL[cache_key] = sql
    return sql

def _fields(template: str) -> int:
    """How many ``{0}``, ``{1}``, ... a rider's sql has (the highest plus one)."""
    import string

    numbers = [int(field) for _, field, _, _ in string.Formatter().parse(template) if field]
    return max(numbers) + 1 if numbers else 0


def _shape(change: _Change) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which columns a row's change sets and which it adds to: rows of one shape share a
    statement."""
    return tuple(sorted(change.set)), tuple(sorted(change.add))


def _unnest_ok(table: Table) -> bool:
    """Whether every column can travel as a PostgreSQL array (not arrays or JSON themselves)
    and every Python-side default is a value or a function (not SQL)."""
    return not any(
        isinstance(c.type, ARRAY | JSON) or (c.default is not None and not (c.default.is_scalar or c.default.is_callable))
        for c in table.c
    )
