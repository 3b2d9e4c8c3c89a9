"""`ReadModel` merge semantics: a batch of buffered changes must leave the table exactly as
the same changes made one at a time would.

Each test runs on SQLite and PostgreSQL (the ``store`` fixture). Most tests drive a
:class:`ReadModel` on one write transaction directly; the last ones run a tiny projection
through :class:`ProjectionRunner` with batches of one event and of many, and check both
against a plain Python model of the operations.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Connection, Integer, MetaData, String, Table, func, select, update
from sqlalchemy.exc import IntegrityError

from facta.domain import DomainEvent
from facta.errors import InvalidValue
from facta.eventstore import EventStore, RecordedEvent
from facta.projections import Projection, ProjectionRunner, ReadModel, RunnerConfig, handles, read_model_table

# -- a table of our own, written through ReadModel on one transaction ---------------------

_metadata = MetaData()
ROWS = Table(
    "writer_test_rows",
    _metadata,
    Column("k", String(50), primary_key=True),
    Column("label", String(50)),
    Column("n", BigInteger, nullable=False, default=0),
    Column("m", Integer),
)
PAIRS = Table(
    "writer_test_pairs",
    _metadata,
    Column("a", String(20), primary_key=True),
    Column("b", Integer, primary_key=True),
    Column("v", Integer),
)
LOG = Table(
    "writer_test_log",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("note", String(50)),
)


async def _create(store: EventStore) -> None:
    await store.database.write(lambda conn: _metadata.create_all(conn))


async def _seed(store: EventStore, *rows: dict[str, Any]) -> None:
    def work(conn: Connection) -> None:
        conn.execute(ROWS.insert(), [{"label": None, "n": 0, "m": None} | r for r in rows])

    await store.database.write(work)


async def _batch(store: EventStore, body: Callable[[ReadModel], Any]) -> Any:
    """Run ``body`` on a fresh ReadModel in one write transaction, flush, commit."""

    def work(conn: Connection) -> Any:
        rm = ReadModel(conn)
        out = body(rm)
        rm.flush()
        return out

    return await store.database.write(work)


async def _rows(store: EventStore, table: Table = ROWS) -> dict[Any, dict[str, Any]]:
    def work(conn: Connection) -> dict[Any, dict[str, Any]]:
        keys = [c.name for c in table.primary_key.columns]
        out: dict[Any, dict[str, Any]] = {}
        for row in conn.execute(select(table)).mappings():
            key = row[keys[0]] if len(keys) == 1 else tuple(row[k] for k in keys)
            out[key] = dict(row)
        return out

    return await store.database.read(work)


def row(k: str, label: str | None = None, n: int = 0, m: int | None = None) -> dict[str, Any]:
    return {"k": k, "label": label, "n": n, "m": m}


@pytest.fixture
async def rm_store(store: EventStore) -> EventStore:
    await _create(store)
    return store


# -- upsert ---------------------------------------------------------------------------------


async def test_upsert_inserts_a_new_row_with_add_columns_from_zero(rm_store: EventStore) -> None:
    await _batch(rm_store, lambda rm: rm.upsert(ROWS, {"k": "a"}, set={"label": "x"}, add={"n": 5}))
    await _batch(rm_store, lambda rm: rm.upsert(ROWS, {"k": "b"}, add={"n": 2, "m": 3}))
    await _batch(rm_store, lambda rm: rm.upsert(ROWS, {"k": "c"}))  # key only: a row with defaults
    assert await _rows(rm_store) == {"a": row("a", "x", 5), "b": row("b", None, 2, 3), "c": row("c")}


async def test_upsert_updates_an_existing_row_set_replaces_add_increments(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10, 1))
    await _batch(rm_store, lambda rm: rm.upsert(ROWS, {"k": "a"}, set={"label": "new"}, add={"n": 5}))
    assert await _rows(rm_store) == {"a": row("a", "new", 15, 1)}
    await _batch(rm_store, lambda rm: rm.upsert(ROWS, {"k": "a"}))  # key only: nothing changes
    assert await _rows(rm_store) == {"a": row("a", "new", 15, 1)}


async def test_add_to_a_null_column_counts_from_zero_as_get_says(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10, None))
    seen = await _batch(rm_store, lambda rm: (rm.upsert(ROWS, {"k": "a"}, add={"m": 3}), rm.get(ROWS, {"k": "a"}))[1])
    assert seen["m"] == 3
    assert await _rows(rm_store) == {"a": row("a", "old", 10, 3)}


async def test_upserts_of_one_row_in_a_batch_merge(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10, 7))

    def body(rm: ReadModel) -> None:
        rm.upsert(ROWS, {"k": "a"}, set={"label": "first"}, add={"n": 1})
        rm.upsert(ROWS, {"k": "a"}, add={"n": 2})
        rm.upsert(ROWS, {"k": "a"}, set={"label": "last"}, add={"n": 3})
        rm.upsert(ROWS, {"k": "new"}, add={"n": 4})
        rm.upsert(ROWS, {"k": "new"}, set={"label": "n"}, add={"n": 5})

    await _batch(rm_store, body)
    assert await _rows(rm_store) == {"a": row("a", "last", 16, 7), "new": row("new", "n", 9)}


async def test_add_after_set_adds_to_the_value_set(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", n=100, m=100))

    def body(rm: ReadModel) -> dict[str, Any] | None:
        rm.upsert(ROWS, {"k": "a"}, set={"n": 5, "m": None})
        rm.upsert(ROWS, {"k": "a"}, add={"n": 3, "m": 2})  # m was set to NULL: counts from 0
        rm.upsert(ROWS, {"k": "b"}, set={"n": 1})
        rm.upsert(ROWS, {"k": "b"}, add={"n": 1})
        return rm.get(ROWS, {"k": "a"})

    seen = await _batch(rm_store, body)
    assert seen == row("a", n=8, m=2)
    assert await _rows(rm_store) == {"a": row("a", n=8, m=2), "b": row("b", n=2)}


async def test_set_after_add_replaces_the_sum(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", n=100))

    def body(rm: ReadModel) -> dict[str, Any] | None:
        rm.upsert(ROWS, {"k": "a"}, add={"n": 3})
        rm.upsert(ROWS, {"k": "a"}, set={"n": 5})
        rm.upsert(ROWS, {"k": "b"}, add={"n": 3})
        rm.upsert(ROWS, {"k": "b"}, set={"n": 5})
        rm.upsert(ROWS, {"k": "b"}, add={"n": 1})
        return rm.get(ROWS, {"k": "a"})

    assert await _batch(rm_store, body) == row("a", n=5)
    assert await _rows(rm_store) == {"a": row("a", n=5), "b": row("b", n=6)}


async def test_rows_of_different_shapes_in_one_batch(rm_store: EventStore) -> None:
    await _seed(rm_store, *(row(f"old-{i}", "x", i, i) for i in range(6)))

    def body(rm: ReadModel) -> None:
        for i in range(6):
            if i % 3 == 0:
                rm.upsert(ROWS, {"k": f"old-{i}"}, set={"label": "s"})
            elif i % 3 == 1:
                rm.upsert(ROWS, {"k": f"old-{i}"}, add={"n": 10})
            else:
                rm.upsert(ROWS, {"k": f"old-{i}"}, set={"m": -1}, add={"n": 10})
            rm.upsert(ROWS, {"k": f"new-{i}"}, set={"label": "y"} if i % 2 else None, add={"n": i})

    await _batch(rm_store, body)
    rows = await _rows(rm_store)
    assert rows == {
        "old-0": row("old-0", "s", 0, 0), "old-1": row("old-1", "x", 11, 1), "old-2": row("old-2", "x", 12, -1),
        "old-3": row("old-3", "s", 3, 3), "old-4": row("old-4", "x", 14, 4), "old-5": row("old-5", "x", 15, -1),
    } | {f"new-{i}": row(f"new-{i}", "y" if i % 2 else None, i) for i in range(6)}


def _statements_of(store: EventStore) -> list[str]:
    """The statements the store's PostgreSQL engine sends from now on (appended as sent)."""
    from sqlalchemy import event

    assert store.database.engine is not None
    sent: list[str] = []
    event.listen(store.database.engine.sync_engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: sent.append(statement))
    return sent


async def test_upserts_of_several_shapes_are_one_statement_on_postgresql(rm_store: EventStore) -> None:
    if rm_store.database.dialect != "postgresql":
        pytest.skip("PostgreSQL's unnest statements")
    await _seed(rm_store, row("old", "x", 1, 1))
    sent = _statements_of(rm_store)

    def body(rm: ReadModel) -> None:
        rm.upsert(ROWS, {"k": "old"}, set={"label": "s"}, add={"n": 2})
        rm.upsert(ROWS, {"k": "new-1"}, add={"n": 5})
        rm.upsert(ROWS, {"k": "new-2"}, set={"m": 7})

    await _batch(rm_store, body)
    assert len([s for s in sent if "writer_test_rows" in s]) == 1, sent
    assert await _rows(rm_store) == {"old": row("old", "s", 3, 1), "new-1": row("new-1", n=5),
                                     "new-2": row("new-2", m=7)}


async def test_a_callable_default_is_called_for_each_new_row_of_several_shapes(rm_store: EventStore) -> None:
    calls = iter(range(100, 200))
    stamped = Table("writer_test_stamped", MetaData(), Column("k", String(20), primary_key=True),
                    Column("a", Integer), Column("b", Integer), Column("made", Integer, default=lambda: next(calls)))
    await rm_store.database.write(lambda conn: stamped.create(conn))

    def body(rm: ReadModel) -> None:
        rm.upsert(stamped, {"k": "x"}, set={"a": 1})
        rm.upsert(stamped, {"k": "y"}, add={"b": 2})
        rm.upsert(stamped, {"k": "z"}, set={"a": 3}, add={"b": 4})

    await _batch(rm_store, body)
    made = [r["made"] for r in (await _rows(rm_store, stamped)).values()]
    assert sorted(made) == [100, 101, 102]


async def test_composite_keys(rm_store: EventStore) -> None:
    def body(rm: ReadModel) -> None:
        rm.upsert(PAIRS, {"a": "x", "b": 1}, add={"v": 1})
        rm.upsert(PAIRS, {"b": 1, "a": "x"}, add={"v": 1})  # same key, other order
        rm.upsert(PAIRS, {"a": "x", "b": 2}, set={"v": 7})
        rm.delete(PAIRS, {"a": "x", "b": 2})

    await _batch(rm_store, body)
    assert await _rows(rm_store, PAIRS) == {("x", 1): {"a": "x", "b": 1, "v": 2}}


# -- delete ---------------------------------------------------------------------------------


async def test_delete_then_upsert_in_one_batch_starts_the_row_from_nothing(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10, 4), row("b", "old", 10, 4))

    def body(rm: ReadModel) -> tuple[Any, ...]:
        rm.delete(ROWS, {"k": "a"})
        rm.upsert(ROWS, {"k": "a"}, add={"n": 1})
        rm.upsert(ROWS, {"k": "b"}, add={"n": 1})
        rm.delete(ROWS, {"k": "b"})
        rm.upsert(ROWS, {"k": "b"}, set={"label": "again"})
        return rm.get(ROWS, {"k": "a"}), rm.get(ROWS, {"k": "b"})

    seen = await _batch(rm_store, body)
    expected = {"a": row("a", None, 1), "b": row("b", "again", 0)}
    assert await _rows(rm_store) == expected, "a row deleted and upserted in one batch kept its old values"
    # get() agrees with what the flush wrote (its view of "n" for b is 0 or None: unset).
    assert seen[0] == expected["a"]
    assert seen[1] is not None and seen[1]["label"] == "again" and seen[1]["m"] is None


async def test_upsert_then_delete_removes_the_row(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10))

    def body(rm: ReadModel) -> tuple[Any, ...]:
        rm.upsert(ROWS, {"k": "a"}, add={"n": 1})
        rm.upsert(ROWS, {"k": "new"}, add={"n": 1})
        rm.delete(ROWS, {"k": "a"})
        rm.delete(ROWS, {"k": "new"})
        rm.delete(ROWS, {"k": "never"})
        return rm.get(ROWS, {"k": "a"}), rm.get(ROWS, {"k": "new"})

    assert await _batch(rm_store, body) == (None, None)
    assert await _rows(rm_store) == {}


async def test_delete_upsert_delete_removes_the_row(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10))

    def body(rm: ReadModel) -> None:
        rm.delete(ROWS, {"k": "a"})
        rm.upsert(ROWS, {"k": "a"}, add={"n": 1})
        rm.delete(ROWS, {"k": "a"})

    await _batch(rm_store, body)
    assert await _rows(rm_store) == {}


# -- get ------------------------------------------------------------------------------------


async def test_get_overlays_the_pending_changes_on_the_stored_row(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10, 1))

    def body(rm: ReadModel) -> list[Any]:
        seen = [rm.get(ROWS, {"k": "a"}), rm.get(ROWS, {"k": "missing"})]
        rm.upsert(ROWS, {"k": "a"}, add={"n": 2})
        seen.append(rm.get(ROWS, {"k": "a"}))
        rm.upsert(ROWS, {"k": "a"}, set={"label": "new"}, add={"n": 3})
        seen.append(rm.get(ROWS, {"k": "a"}))
        rm.upsert(ROWS, {"k": "fresh"}, set={"label": "f"}, add={"m": 4})
        seen.append(rm.get(ROWS, {"k": "fresh"}))
        rm.delete(ROWS, {"k": "a"})
        seen.append(rm.get(ROWS, {"k": "a"}))
        return seen

    before, missing, added, merged, fresh, deleted = await _batch(rm_store, body)
    assert before == row("a", "old", 10, 1)
    assert missing is None
    assert added == row("a", "old", 12, 1)
    assert merged == row("a", "new", 15, 1)
    # A new row's columns that no change names get their default only at insert.
    assert fresh is not None and fresh["k"] == "fresh" and fresh["label"] == "f" and fresh["m"] == 4
    assert fresh["n"] in (None, 0)
    assert deleted is None
    assert await _rows(rm_store) == {"fresh": row("fresh", "f", 0, 4)}


async def test_get_does_not_change_what_is_written(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10, 1))

    def body(rm: ReadModel) -> None:
        for _ in range(3):
            rm.upsert(ROWS, {"k": "a"}, add={"n": 1})
            rm.get(ROWS, {"k": "a"})
        rm.get(ROWS, {"k": "b"})

    await _batch(rm_store, body)
    assert await _rows(rm_store) == {"a": row("a", "old", 13, 1)}


# -- insert and execute ---------------------------------------------------------------------


async def test_insert_then_get_and_upsert_see_the_inserted_row(rm_store: EventStore) -> None:
    def body(rm: ReadModel) -> list[Any]:
        rm.insert(ROWS, row("a", "ins", 5))
        seen = [rm.get(ROWS, {"k": "a"})]
        rm.upsert(ROWS, {"k": "a"}, add={"n": 1})
        seen.append(rm.get(ROWS, {"k": "a"}))
        return seen

    assert await _batch(rm_store, body) == [row("a", "ins", 5), row("a", "ins", 6)]
    assert await _rows(rm_store) == {"a": row("a", "ins", 6)}


async def test_delete_then_insert_and_insert_then_delete(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10))

    def body(rm: ReadModel) -> None:
        rm.delete(ROWS, {"k": "a"})
        rm.insert(ROWS, row("a", "re", 1))
        rm.insert(ROWS, row("b", "gone", 1))
        rm.delete(ROWS, {"k": "b"})

    await _batch(rm_store, body)
    assert await _rows(rm_store) == {"a": row("a", "re", 1)}


async def test_inserts_of_different_shapes_keep_their_defaults(rm_store: EventStore) -> None:
    def body(rm: ReadModel) -> None:
        rm.insert(ROWS, {"k": "a"})
        rm.insert(ROWS, {"k": "b", "n": 2})
        rm.insert(ROWS, {"k": "c", "label": "c"})
        rm.insert(ROWS, {"k": "d", "n": 4})

    await _batch(rm_store, body)
    assert await _rows(rm_store) == {"a": row("a"), "b": row("b", n=2), "c": row("c", "c"), "d": row("d", n=4)}


async def test_execute_runs_after_the_pending_changes_in_order(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a", "old", 10))

    def body(rm: ReadModel) -> list[Any]:
        rm.insert(ROWS, row("b", "ins", 1))
        rm.upsert(ROWS, {"k": "a"}, add={"n": 5})
        rm.upsert(ROWS, {"k": "c"}, add={"n": 7})
        rm.insert(LOG, {"id": 1, "note": "first"})
        counted = rm.execute(select(func.count(), func.sum(ROWS.c.n)).select_from(ROWS)).one()
        notes = rm.execute(select(func.count()).select_from(LOG)).scalar_one()
        rm.execute(update(ROWS).values(label="bulk"))  # every row the batch wrote so far
        rm.upsert(ROWS, {"k": "a"}, add={"n": 1})  # after the statement: applies on top
        rm.upsert(ROWS, {"k": "d"}, set={"label": "late"})
        return [tuple(counted), notes]

    counted, notes = await _batch(rm_store, body)
    assert counted == (3, 23) and notes == 1
    assert await _rows(rm_store) == {
        "a": row("a", "bulk", 16), "b": row("b", "bulk", 1), "c": row("c", "bulk", 7), "d": row("d", "late"),
    }
    assert await _rows(rm_store, LOG) == {1: {"id": 1, "note": "first"}}


async def test_a_duplicate_insert_fails_at_flush(rm_store: EventStore) -> None:
    await _seed(rm_store, row("a"))
    with pytest.raises(IntegrityError):
        await _batch(rm_store, lambda rm: rm.insert(ROWS, row("a")))
    assert await _rows(rm_store) == {"a": row("a")}


async def test_keys_must_name_exactly_the_primary_key(rm_store: EventStore) -> None:
    keyless = Table("writer_test_keyless", MetaData(), Column("x", Integer))

    def body(rm: ReadModel) -> list[str]:
        errors = []
        for call in (
            lambda: rm.upsert(ROWS, {"label": "a"}),
            lambda: rm.upsert(ROWS, {"k": "a", "label": "x"}),
            lambda: rm.delete(PAIRS, {"a": "x"}),
            lambda: rm.get(ROWS, {}),
            lambda: rm.upsert(keyless, {"x": 1}),
        ):
            with pytest.raises(ValueError) as caught:
                call()
            errors.append(str(caught.value))
        return errors

    errors = await _batch(rm_store, body)
    assert "must give ['k']" in errors[0] and "must give only ['k']" in errors[1]
    assert "['a', 'b']" in errors[2]
    assert "needs a primary key" in errors[4]
    assert await _rows(rm_store) == {}


async def test_a_key_that_does_not_name_the_primary_key_is_invalid_value(rm_store: EventStore) -> None:
    """A handler's mistake is one line of :class:`~facta.errors.InvalidValue` (a FactaError, and
    a ValueError as before) naming the table, the key columns and what it was given."""
    keyless = Table("writer_test_keyless", MetaData(), Column("x", Integer))

    def body(rm: ReadModel) -> list[InvalidValue]:
        errors = []
        for call in (
            lambda: rm.upsert(ROWS, {"label": "a"}),
            lambda: rm.upsert(ROWS, {"k": "a", "label": "x"}),
            lambda: rm.upsert(keyless, {"x": 1}),
        ):
            with pytest.raises(InvalidValue) as caught:
                call()
            errors.append(caught.value)
        return errors

    errors = await _batch(rm_store, body)
    assert [str(e) for e in errors] == [
        "key for 'writer_test_rows' must give ['k'], got ['label']",
        "key for 'writer_test_rows' must give only ['k'], got ['k', 'label']",
        "read-model table 'writer_test_keyless' needs a primary key",
    ]


# -- through the runner: any batching gives the same model -----------------------------------


class OpSet(DomainEvent, name="writer_test.set", version=1):
    key: str
    label: str | None = None
    n: int | None = None


class OpAdd(DomainEvent, name="writer_test.add", version=1):
    key: str
    n: int


class OpDelete(DomainEvent, name="writer_test.delete", version=1):
    key: str


class OpGetCopy(DomainEvent, name="writer_test.copy", version=1):
    """Copy the row of ``key`` (as get() sees it mid-batch) into a row of ``to``."""

    key: str
    to: str


class _Ops(Projection):
    rows: Any  # declared by each subclass

    @handles(OpSet)
    def _set(self, rm: ReadModel, event: OpSet, record: RecordedEvent) -> None:
        values: dict[str, Any] = {"label": event.label}
        if event.n is not None:
            values["n"] = event.n
        rm.upsert(self.rows, {"k": event.key}, set=values)

    @handles(OpAdd)
    def _add(self, rm: ReadModel, event: OpAdd, record: RecordedEvent) -> None:
        rm.upsert(self.rows, {"k": event.key}, add={"n": event.n})

    @handles(OpDelete)
    def _delete(self, rm: ReadModel, event: OpDelete, record: RecordedEvent) -> None:
        rm.delete(self.rows, {"k": event.key})

    @handles(OpGetCopy)
    def _copy(self, rm: ReadModel, event: OpGetCopy, record: RecordedEvent) -> None:
        found = rm.get(self.rows, {"k": event.key})
        if found is None:
            rm.delete(self.rows, {"k": event.to})
        else:
            rm.upsert(self.rows, {"k": event.to}, set={"label": found["label"], "n": found["n"] or 0})


def _ops_table(name: str) -> Any:
    return read_model_table(
        name,
        Column("k", String(50), primary_key=True),
        Column("label", String(50)),
        Column("n", BigInteger, nullable=False, default=0),
    )


class OpsOneByOne(_Ops, name="writer_test_one"):
    rows = _ops_table("writer_test_one")


class OpsBatched(_Ops, name="writer_test_batched"):
    rows = _ops_table("writer_test_batched")


def _model(ops: list[DomainEvent]) -> dict[str, tuple[str | None, int]]:
    """What the operations mean, applied one at a time to a dict."""
    rows: dict[str, tuple[str | None, int]] = {}
    for op in ops:
        if isinstance(op, OpSet):
            label, n = rows.get(op.key, (None, 0))
            rows[op.key] = (op.label, n if op.n is None else op.n)
        elif isinstance(op, OpAdd):
            label, n = rows.get(op.key, (None, 0))
            rows[op.key] = (label, n + op.n)
        elif isinstance(op, OpDelete):
            rows.pop(op.key, None)
        elif isinstance(op, OpGetCopy):
            if op.key in rows:
                rows[op.to] = rows[op.key]
            else:
                rows.pop(op.to, None)
    return rows


def _random_ops(rng: random.Random, count: int) -> list[DomainEvent]:
    keys = [f"k{i}" for i in range(6)]
    ops: list[DomainEvent] = []
    for _ in range(count):
        roll = rng.random()
        key = rng.choice(keys)
        if roll < 0.35:
            ops.append(OpAdd(key=key, n=rng.randint(-5, 20)))
        elif roll < 0.65:
            ops.append(OpSet(key=key, label=rng.choice(["a", "b", None]), n=rng.choice([None, rng.randint(0, 9)])))
        elif roll < 0.85:
            ops.append(OpDelete(key=key))
        else:
            ops.append(OpGetCopy(key=key, to=rng.choice(keys)))
    return ops


async def _projected(store: EventStore, cls: type[_Ops]) -> dict[str, tuple[str | None, int]]:
    def work(conn: Connection) -> dict[str, tuple[str | None, int]]:
        return {r.k: (r.label, int(r.n)) for r in conn.execute(select(cls.rows))}

    return await store.database.read(work)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_batching_never_changes_the_read_model(store: EventStore, seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_ops(rng, 300)
    # Appends of random sizes, so one runner batch holds many changes to the same rows.
    i = 0
    while i < len(ops):
        size = rng.randint(1, 12)
        await store.append(f"ops-{i}", "writer_test", ops[i:i + size], expected_version=0)
        i += size
    expected = _model(ops)

    # Batches of 16: rows written by earlier batches are changed, deleted and re-made by later ones.
    one = ProjectionRunner(store, OpsOneByOne, config=RunnerConfig(batch_size=1))
    batched = ProjectionRunner(store, OpsBatched, config=RunnerConfig(batch_size=16))
    assert await one.run(once=True) == len(ops)
    assert await batched.run(once=True) == len(ops)
    assert await _projected(store, OpsOneByOne) == expected
    assert await _projected(store, OpsBatched) == expected, "one batch of many changes differs from one at a time"


class _Watched(Projection, name="writer_test_watched"):
    """Records whether the collector ran during each handler call; fails on key 'bad'."""

    rows = _ops_table("writer_test_watched")
    collector_on: list[bool] = []

    @handles(OpAdd)
    def _add(self, rm: ReadModel, event: OpAdd, record: RecordedEvent) -> None:
        import gc

        type(self).collector_on.append(gc.isenabled())
        if event.key == "bad":
            raise RuntimeError("bad key")
        rm.upsert(self.rows, {"k": event.key}, add={"n": event.n})


async def test_the_collector_waits_out_a_batch_and_is_back_after_a_failing_one(store: EventStore) -> None:
    import gc

    from facta.errors import ProjectionError

    await store.append("watched-1", "writer_test", [OpAdd(key="a", n=1), OpAdd(key="a", n=2)], expected_version=0)
    await store.append("watched-2", "writer_test", [OpAdd(key="bad", n=1)], expected_version=0)
    assert gc.isenabled()
    runner = ProjectionRunner(store, _Watched, config=RunnerConfig(batch_size=10))
    with pytest.raises(ProjectionError, match="bad key"):
        await runner.run(once=True)
    assert gc.isenabled(), "the collector stays off after a failing batch"
    assert _Watched.collector_on and not any(_Watched.collector_on), _Watched.collector_on
    assert await _projected(store, _Watched) == {"a": (None, 3)}  # the events before the failing one


class _Checked(_Ops, name="writer_test_checked"):
    rows = _ops_table("writer_test_checked")


async def test_a_batch_whose_checkpoint_moved_meanwhile_is_refused_whole(store: EventStore) -> None:
    """The checkpoint's compare-and-set (on PostgreSQL within the flush's statement) fails
    if another runner moved it: the batch raises Stale and leaves the rows as they were."""
    from facta.eventstore.schema import projection_checkpoints
    from facta.projections._applier import Applier, Delivery
    from facta.projections._tracking import LOG, Stale

    await store.append("checked-1", "writer_test", [OpAdd(key="a", n=1), OpAdd(key="b", n=2)], expected_version=0)
    await store.append("checked-2", "writer_test", [OpAdd(key="a", n=10), OpSet(key="c", label="x")],
                       expected_version=0)
    records, _ = await store.read_log_window(0, 10)
    applier = Applier(store, _Checked, source="log")
    await applier.open()
    await applier.apply([Delivery(r, LOG, r.position) for r in records[:2]])
    first = records[1].position

    def moved_by_another(conn: Connection) -> None:
        c = projection_checkpoints.c
        conn.execute(update(projection_checkpoints).where(c.projection == "writer_test_checked")
                     .values(position=first + 1))

    await store.database.write(moved_by_another)
    with pytest.raises(Stale):
        await applier.apply([Delivery(r, LOG, r.position) for r in records[2:]])
    assert await _projected(store, _Checked) == {"a": (None, 1), "b": (None, 2)}
    assert applier.checkpoints == {LOG: first}


class _Counted(_Ops, name="writer_test_counted"):
    rows = _ops_table("writer_test_counted")


async def test_a_batch_on_postgresql_writes_rows_and_checkpoint_in_one_statement(store: EventStore) -> None:
    if store.database.dialect != "postgresql":
        pytest.skip("PostgreSQL's unnest statements")
    from facta.projections._applier import Applier, Delivery
    from facta.projections._tracking import LOG

    await store.append("counted-1", "writer_test", [OpAdd(key="a", n=1), OpSet(key="b", label="x")],
                       expected_version=0)
    await store.append("counted-2", "writer_test", [OpAdd(key="a", n=2), OpSet(key="b", label="y", n=4),
                                                    OpAdd(key="c", n=3)], expected_version=0)
    records, _ = await store.read_log_window(0, 10)
    applier = Applier(store, _Counted, source="log")
    await applier.open()
    await applier.apply([Delivery(r, LOG, r.position) for r in records[:2]])  # makes the checkpoint row
    sent = _statements_of(store)
    await applier.apply([Delivery(r, LOG, r.position) for r in records[2:]])
    # A live batch checks its generation first, then writes rows and checkpoint at once.
    assert len(sent) == 2 and "FOR SHARE" in sent[0] and "facta_projection_checkpoints" in sent[1], sent
    assert await _projected(store, _Counted) == {"a": (None, 3), "b": ("y", 4), "c": (None, 3)}
    assert applier.checkpoints == {LOG: records[-1].position}

    def stored(conn: Connection) -> int:
        from facta.eventstore.schema import projection_checkpoints as cp

        return int(conn.execute(select(cp.c.position).where(cp.c.projection == "writer_test_counted")).scalar_one())

    assert await store.database.read(stored) == records[-1].position
