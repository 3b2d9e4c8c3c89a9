"""The demo's read models, run after run, equal a full replay; billing charged each trip once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from facta.eventstore import EventStore
from facta.eventstore.schema import events
from facta.projections.reference import REFERENCE_PROJECTIONS, Billing
from facta.projections.replay import ReplayFrom, replay
from facta.replay.demo import run_demo


def _models(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table.name: sorted(tuple(r) for r in conn.execute(select(table)).all())
        for projection in REFERENCE_PROJECTIONS
        for table in projection.live_tables()
    }


async def test_two_demo_runs_leave_read_models_equal_to_a_full_replay(migrated_url: str) -> None:
    first = await run_demo(migrated_url, rides=25, riders=6, drivers=4, telemetry=3, seed=5)
    second = await run_demo(migrated_url, rides=15, riders=6, drivers=4, telemetry=3, seed=5)
    completed = first.rides_completed + second.rides_completed
    async with await EventStore.open(migrated_url) as store:
        live = await store.database.read(_models)
        for projection in REFERENCE_PROJECTIONS:
            await replay(store, projection, ReplayFrom(position=0))
        assert await store.database.read(_models) == live
        charges = await store.database.read(
            lambda c: c.execute(
                select(events.c.event_type, events.c.causation_id).where(events.c.actor == "billing")
            ).all()
        )
    assert len(charges) == 2 * completed, "one charge and one payout per completed trip"
    assert len(set(charges)) == len(charges)
    billed = live[Billing.charges.name]
    assert len(billed) == completed and all(row[6] == row[1] for row in billed), "every fare charged in full"
