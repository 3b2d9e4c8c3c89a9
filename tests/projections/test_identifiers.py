"""Issue 10 item 9: the names facta builds from a user's names stay valid on both
dialects through a live run, a rebuild and a swap (twice), or are refused when the
projection is declared, with one line.

Read-model tables get a rebuild copy ``<name>__rebuild`` (and their indexes and named
constraints a copy of their names): PostgreSQL keeps 63 bytes of a name, so a name may
have at most 54 bytes; quotes, spaces, upper case and non-ASCII letters are quoted.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, Index, String, UniqueConstraint, inspect, select

from facta.domain import DomainEvent
from facta.eventstore import EventStore, RecordedEvent
from facta.projections import Projection, ProjectionError, ProjectionRunner, ReadModel, handles, read_model_table
from facta.projections.catalog import Catalog
from facta.projections.replay import ReplayFrom, replay
from facta.projections.runner import KafkaSettings


class Tallied(DomainEvent, name="ident.tallied"):
    n: int


def _projection(name: str, table: str, *, index: str, unique: str) -> type[Projection]:
    def _on(self: Any, rm: ReadModel, event: Tallied, record: RecordedEvent) -> None:
        rm.upsert(self.rows, {"k": record.stream_id}, set={"tag": f"tag-{record.stream_id}"}, add={"total": event.n})

    namespace = {
        "rows": read_model_table(
            table,
            Column("k", String(50), primary_key=True),
            Column("total", BigInteger, nullable=False),
            Column("tag", String(60)),
            Column("note", String(10), index=True),
            Index(index, "total"),
            UniqueConstraint("tag", name=unique),
        ),
        "_on": handles(Tallied)(_on),
    }
    return type(f"P_{name}", (Projection,), namespace, name=name)  # type: ignore[call-arg]


LONGEST = "t" * 54  # 54 bytes: its rebuild copy is 63
LONGEST_UNICODE = "é" * 27  # 54 bytes in UTF-8
HOSTILE = {
    "upper case": "Tally_Totals",
    "unicode": "tälly_tötäls_ünïcode",
    "space": "tally totals",
    "quotes": 'tally "totals" \'q\'',
    "sql": "t; DROP TABLE facta_events; --",
    "54 bytes": LONGEST,
    "54 bytes of unicode": LONGEST_UNICODE,
    "beside reserved": "Sqlite3 stats",  # SQLite reserves only names starting with 'sqlite_'
}


async def _rows(store: EventStore, projection: type[Projection]) -> list[tuple[Any, ...]]:
    table = projection.rows  # type: ignore[attr-defined]
    return await store.database.read(lambda c: sorted(tuple(r) for r in c.execute(
        select(table.c.k, table.c.total, table.c.tag)).all()))


def _names(conn: Any, table: str) -> set[str]:
    found = inspect(conn)
    names = {i["name"] for i in found.get_indexes(table)}
    names |= {u["name"] for u in found.get_unique_constraints(table)}
    names.add(found.get_pk_constraint(table).get("name"))
    return {n for n in names if n}


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_table_names_survive_live_runs_rebuilds_and_swaps(store: EventStore, case: str) -> None:
    table = HOSTILE[case]
    # Projection names too: upper case, and the longest allowed (lock files, keys).
    name = {"upper case": "Hostile_Names", "54 bytes": "n" * 100}.get(case, "hostile_names")
    projection = _projection(name, table, index=f"{table}_ix" if len(table.encode()) <= 51 else "tally_ix",
                             unique=("Tally_U" if case == "upper case" else "tally_tag_key"))
    totals: dict[str, int] = {}

    async def add(stream: str, n: int) -> None:
        await store.append(stream, "tally", [Tallied(n=n)], expected_version=None)
        totals[stream] = totals.get(stream, 0) + n

    def expected() -> list[tuple[Any, ...]]:
        return sorted((k, v, f"tag-{k}") for k, v in totals.items())

    for i in range(5):
        await add(f"s-{i % 3}", i + 1)
    assert await ProjectionRunner(store, projection).run(once=True) == 5
    assert await _rows(store, projection) == expected()
    declared = await store.database.read(lambda c: _names(c, table))
    for generation in (2, 3):
        result = await replay(store, projection, ReplayFrom(position=0))
        assert result.generation == generation
        assert await _rows(store, projection) == expected()
        await add("s-9", generation)
        assert await ProjectionRunner(store, projection).run(once=True) == 1
        assert await _rows(store, projection) == expected()
        # The swapped-in table has the live table's index and constraint names back,
        # and no rebuild copy is left.
        assert await store.database.read(lambda c: _names(c, table)) == declared
        assert not await store.database.read(lambda c: inspect(c).has_table(table + "__rebuild"))
    assert await store.database.read(lambda c: inspect(c).has_table("facta_events"))


def _declare(table: str, **names: str) -> type[Projection]:
    return _projection("refused", table, index=names.get("index", "r_ix"), unique=names.get("unique", "r_u"))


@pytest.mark.parametrize(("table", "names", "message"), [
    ("t" * 55, {}, f"read-model table name {'t' * 55!r} is 55 bytes long: at most 54"),
    ("é" * 28, {}, f"read-model table name {'é' * 28!r} is 56 bytes long: at most 54"),
    ("p" * 63 + "_a", {}, f"read-model table name {'p' * 63 + '_a'!r} is 65 bytes long: at most 54"),
    ("ok_table", {"index": "i" * 55}, f"index name {'i' * 55!r} of read-model table 'ok_table' is 55 bytes long"),
    ("ok_table", {"unique": "u" * 60}, f"constraint name {'u' * 60!r} of read-model table 'ok_table' is 60 bytes"),
    ("", {}, "read-model table name '' is empty"),
    ("a\x00b", {}, "read-model table name 'a\\x00b' holds a NUL character"),
    ("totals__rebuild", {}, "read-model table name 'totals__rebuild' ends with '__rebuild'"),
    ("Facta_Events", {}, "read-model table name 'Facta_Events' starts with 'facta_'"),
    ("sqlite_stats", {}, "read-model table name 'sqlite_stats' starts with 'sqlite_', which SQLite reserves for itself"),
    ("SQLite_Totals", {}, "read-model table name 'SQLite_Totals' starts with 'sqlite_', which SQLite reserves"),
    ("ok_table", {"index": "SQLITE_ix"}, "index name 'SQLITE_ix' of read-model table 'ok_table' starts with 'sqlite_'"),
])
def test_names_that_cannot_hold_are_refused_when_declared(table: str, names: dict[str, str], message: str) -> None:
    with pytest.raises(ProjectionError) as refused:
        _declare(table, **names)
    text = str(refused.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_names_that_collide_on_some_dialect_are_refused_in_one_catalog() -> None:
    first = _projection("first_one", "Totals", index="first_ix", unique="first_u")
    second = _projection("second_one", "totals", index="second_ix", unique="second_u")
    catalog = Catalog([first])
    with pytest.raises(ProjectionError, match=(
        "read-model table 'totals' of projection 'second_one' has the name of read-model table 'Totals' of projection"
        " 'first_one' on SQLite, which compares names without case: rename one of them")):
        catalog.add(second)
    third = _projection("third_one", "third", index="FIRST_IX", unique="third_u")
    with pytest.raises(ProjectionError, match="index 'FIRST_IX' of projection 'third_one' has the name of index"
                                              " 'first_ix' of projection 'first_one'"):
        catalog.add(third)
    fourth = _projection("First_One", "fourth", index="fourth_ix", unique="fourth_u")
    with pytest.raises(ProjectionError, match="projection name 'First_One' differs from 'first_one' only in case"):
        catalog.add(fourth)


def test_projection_names_and_stream_types_are_checked_when_declared() -> None:
    with pytest.raises(ProjectionError, match=f"projection name {'n' * 101!r} is 101 characters long: at most 100"):
        _projection("n" * 101, "n_table", index="n_ix", unique="n_u")
    with pytest.raises(ProjectionError, match="projection 'spaced' declares stream type 'shopping cart' in streams,"
                                              " which cannot be part of a Kafka topic name"):
        type("Spaced", (Projection,), {"streams": ("shopping cart",)}, name="spaced")  # type: ignore[call-arg]
    fine = type("Fine", (Projection,), {"streams": ("cart",)}, name="fine")  # type: ignore[call-arg]
    with pytest.raises(ProjectionError, match="the Kafka topic name 'p" + "p" * 9 + ".*' of projection 'fine' is 250"):
        KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="p" * 245).topics(fine)
    assert KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="p" * 244).topics(fine) == ["p" * 244 + ".cart"]


@pytest.mark.parametrize("prefix", ["bad prefix", "präfix", "p" * 250])
async def test_a_topic_prefix_kafka_cannot_have_is_refused_before_anything_is_written(
    store: EventStore, prefix: str
) -> None:
    projection = _projection("prefixed", "prefixed_rows", index="prefixed_ix", unique="prefixed_u")
    await store.append("s-1", "ident", [Tallied(n=1)], expected_version=0)
    settings = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix=prefix)
    topic = f"{prefix}.ident"
    message = (f"the Kafka topic name {topic!r} of projection 'prefixed' is {len(topic)} characters long: Kafka's"
               " topic names have at most 249, of letters, digits, '.', '_' and '-'")
    with pytest.raises(ProjectionError) as refused:
        await ProjectionRunner(store, projection, kafka=settings).run(once=True)
    assert str(refused.value).startswith(message)
    with pytest.raises(ProjectionError) as refused:
        await replay(store, projection, ReplayFrom(offset=0), kafka=settings)
    assert str(refused.value).startswith(message)
    assert not await store.database.read(lambda c: inspect(c).has_table("prefixed_rows"))


def _with_columns(name: str, *columns: str) -> type[Projection]:
    def _on(self: Any, rm: ReadModel, event: Tallied, record: RecordedEvent) -> None:
        rm.upsert(self.rows, {"k": record.stream_id}, set=dict.fromkeys(columns, event.n))

    namespace = {
        "rows": read_model_table(f"{name}_rows", Column("k", String(50), primary_key=True),
                                 *(Column(c, BigInteger) for c in columns)),
        "_on": handles(Tallied)(_on),
    }
    return type(f"P_{name}", (Projection,), namespace, name=name)  # type: ignore[call-arg]


@pytest.mark.parametrize("column", ["ctid", "xmin", "CMAX", "tableoid", "Cmin", "xmax"])
def test_a_postgresql_system_column_name_is_refused_when_declared(column: str) -> None:
    with pytest.raises(ProjectionError) as refused:
        _with_columns("sys_cols", column)
    assert str(refused.value) == (
        f"column name {column!r} of read-model table 'sys_cols_rows' is the name of a PostgreSQL system column"
        " (cmax, cmin, ctid, tableoid, xmax, xmin): rename it"
    )


async def test_names_beside_the_reserved_ones_work_on_both_dialects(store: EventStore) -> None:
    """``oid`` and ``rowid`` are ordinary column names on PostgreSQL 12+ and (quoted) SQLite."""
    projection = _with_columns("near_reserved", "ctid_", "xmin2", "oid", "rowid")
    await store.append("s-1", "tally", [Tallied(n=7)], expected_version=0)
    assert await ProjectionRunner(store, projection).run(once=True) == 1
    table = projection.rows  # type: ignore[attr-defined]
    rows = await store.database.read(lambda c: c.execute(
        select(table.c.k, table.c.ctid_, table.c.xmin2, table.c.oid, table.c.rowid)).all())
    assert [tuple(r) for r in rows] == [("s-1", 7, 7, 7, 7)]
