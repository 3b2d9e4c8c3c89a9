"""Issue 10 leftover 4 for read models, on SQLite and PostgreSQL: a handler's
``ReadModel.execute(statement, [])`` runs nothing (SQLAlchemy alone would insert a row of
defaults on SQLite and fail on PostgreSQL), and ``execute(statement, rows)`` runs once
per row; a batch of handlers with nothing to write moves the checkpoint only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Integer, String, insert, select

from facta.domain import DomainEvent
from facta.eventstore import EventStore, RecordedEvent
from facta.projections import Projection, ProjectionRunner, ReadModel, handles, read_model_table


class Tagged(DomainEvent, name="emptybatch.tagged"):
    tags: list[str]


class Tags(Projection, name="emptybatch_tags"):
    rows = read_model_table(
        "emptybatch_tags",
        Column("id", Integer, primary_key=True),
        Column("stream", String(50), nullable=False),
        Column("tag", String(50), nullable=False),
        Column("n", BigInteger),
    )

    @handles(Tagged)
    def _on(self, rm: ReadModel, event: Tagged, record: RecordedEvent) -> None:
        result = rm.execute(insert(self.rows), [{"stream": record.stream_id, "tag": t} for t in event.tags])
        if not event.tags:
            assert result.rowcount == 0 and result.all() == []


async def test_an_empty_parameter_list_writes_nothing(store: EventStore) -> None:
    await store.append("s-1", "emptybatch", [Tagged(tags=[]), Tagged(tags=["a", "b"]), Tagged(tags=())],
                       expected_version=0)
    await store.append("s-2", "emptybatch", [Tagged(tags=[])], expected_version=0)
    assert await ProjectionRunner(store, Tags).run(once=True) == 4

    def rows(conn: Any) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in conn.execute(select(Tags.rows.c.stream, Tags.rows.c.tag)).all())

    assert await store.database.read(rows) == [("s-1", "a"), ("s-1", "b")]
