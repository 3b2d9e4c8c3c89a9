"""Issue 10 leftover 5, on SQLite and PostgreSQL: every name a read model declares
(table, column, index, constraint) has one limit, 54 bytes of UTF-8, checked when the
projection is declared, so a model declared on one dialect works on the other:
PostgreSQL would cut a longer column name to 63 bytes, and two columns sharing their
first 63 bytes would collide there. Columns that differ only in case collide on SQLite."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, String, inspect, select

from facta.domain import DomainEvent
from facta.eventstore import EventStore, RecordedEvent
from facta.projections import Projection, ProjectionError, ProjectionRunner, ReadModel, handles, read_model_table
from facta.projections.api import MAX_NAME_BYTES
from facta.projections.replay import ReplayFrom, replay


class Counted(DomainEvent, name="rmnames.counted"):
    n: int


LONG_A = "c" * 63 + "_a"  # 65 bytes; shares its first 63 with LONG_B
LONG_B = "c" * 63 + "_b"


def _declare(*columns: Column[Any], name: str = "rm_names", table: str = "rm_names_rows") -> type[Projection]:
    def _on(self: Any, rm: ReadModel, event: Counted, record: RecordedEvent) -> None:
        rm.upsert(self.rows, {"k": record.stream_id}, add={columns[0].name: event.n})

    namespace = {
        "rows": read_model_table(table, Column("k", String(50), primary_key=True), *columns),
        "_on": handles(Counted)(_on),
    }
    return type(f"P_{name}", (Projection,), namespace, name=name)  # type: ignore[call-arg]


@pytest.mark.parametrize(("columns", "message"), [
    ([LONG_A], f"column name {LONG_A!r} of read-model table 'rm_names_rows' is 65 bytes long: at most 54 (UTF-8),"
               " the limit of every read-model name, so that a model moves between dialects (PostgreSQL keeps 63 bytes"
               " of a name)"),
    ([LONG_A, LONG_B], f"column name {LONG_A!r} of read-model table 'rm_names_rows' is 65 bytes long: at most 54"),
    (["c" * 55], f"column name {'c' * 55!r} of read-model table 'rm_names_rows' is 55 bytes long: at most 54"),
    (["é" * 28], f"column name {'é' * 28!r} of read-model table 'rm_names_rows' is 56 bytes long: at most 54"),
    (["total", "Total"], "column name 'Total' of read-model table 'rm_names_rows' differs from column 'total' only in"
                         " case, which SQLite does not tell apart: rename one of them"),
    (["a\x00b"], "column name 'a\\x00b' of read-model table 'rm_names_rows' holds a NUL character"),
])
async def test_column_names_that_cannot_hold_everywhere_are_refused_when_declared(
    store: EventStore, columns: list[str], message: str
) -> None:
    with pytest.raises(ProjectionError) as refused:
        _declare(*(Column(c, BigInteger) for c in columns))
    assert str(refused.value).startswith(message), str(refused.value)
    assert "\n" not in str(refused.value)
    # Nothing was created: the declaration failed before any projection could run.
    assert not await store.database.read(lambda c: inspect(c).has_table("rm_names_rows"))


def test_projection_name_of_another_type_is_refused() -> None:
    with pytest.raises(ProjectionError, match="projection name 7 is of type int, not a string"):
        type("P", (Projection,), {}, name=7)  # type: ignore[call-arg]


async def test_the_longest_column_name_reads_back_exactly_through_a_run_and_a_replay(store: EventStore) -> None:
    longest = "ü" * 27  # 54 bytes of UTF-8
    assert len(longest.encode()) == MAX_NAME_BYTES
    projection = _declare(Column(longest, BigInteger, nullable=False, server_default="0"),
                          Column("c" * 54, BigInteger), name="rm_names_longest", table="rm_names_longest")
    await store.append("s-1", "rmnames", [Counted(n=2), Counted(n=5)], expected_version=0)
    assert await ProjectionRunner(store, projection).run(once=True) == 2
    table = projection.rows  # type: ignore[attr-defined]

    def columns(conn: Any) -> list[str]:
        return [c["name"] for c in inspect(conn).get_columns("rm_names_longest")]

    assert await store.database.read(columns) == ["k", longest, "c" * 54]
    assert await store.database.read(lambda c: c.execute(select(table.c[longest])).scalar_one()) == 7
    await replay(store, projection, ReplayFrom(position=0))
    assert await store.database.read(columns) == ["k", longest, "c" * 54]
    assert await store.database.read(lambda c: c.execute(select(table.c[longest])).scalar_one()) == 7
