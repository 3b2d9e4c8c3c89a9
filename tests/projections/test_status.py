"""Projection status from Python (facta.projections.status): what `facta projections list`
prints, on both dialects."""

from __future__ import annotations

import pytest

from facta.domain import FactaError
from facta.eventstore import EventStore
from facta.eventstore.errors import InvalidValue
from facta.projections import KafkaSettings, ProjectionError, ProjectionRunner
from facta.projections._tracking import LOG
from facta.projections.reference import AccountBalances, Billing, RideBoard
from facta.projections.status import (
    ProjectionStatus,
    checkpoints,
    describe_projections,
    fill_kafka_lag,
    projection_status,
    skip_event,
    skipped_events,
)

from ..eventstore._audit_scenario import build


async def test_status_on_the_store_log_counts_lag_rows_and_checkpoints(store: EventStore) -> None:
    await build(store)  # billing and billing_process ran; the others did not
    head = await store.head_position()
    classes = [AccountBalances, RideBoard, Billing]
    before = await projection_status(store, classes)
    by_name = {s.name: s for s in before}
    # billing_process was built but is not given: listed last, unknown
    assert [s.name for s in before] == ["account_balances", "ride_board", "billing", "billing_process"]
    assert by_name["billing_process"].known is False
    balances = by_name["account_balances"]
    assert (balances.known, balances.source, balances.consumes, balances.generation) == (True, None, "log", None)
    assert balances.checkpoints == {} and balances.updated_at is None
    handled = set(AccountBalances.event_types())
    assert balances.lag == sum(1 for r in await store.read_log(0, 10_000) if r.event_type in handled)
    assert balances.rows == {"account_balances": None}  # never built: no table yet
    assert by_name["billing"].source == "log" and by_name["billing"].checkpoints == {LOG: head}

    applied = await ProjectionRunner(store, AccountBalances).run(once=True, wait=False)
    after = {s.name: s for s in await projection_status(store, classes)}
    balances = after["account_balances"]
    assert balances.lag == 0 and balances.checkpoints == {LOG: head} and balances.source == "log"
    assert balances.generation == 1 and balances.updated_at is not None and balances.updated_at.tzinfo is not None
    assert balances.rows == {"account_balances": 3} and applied == before[0].lag
    assert (await checkpoints(store))["account_balances"] == {LOG: head}


async def test_a_projection_built_before_but_not_given_is_listed_last_and_unknown(store: EventStore) -> None:
    await build(store)
    only, process = await projection_status(store, [])
    assert isinstance(only, ProjectionStatus)
    assert (only.name, only.known, only.lag, only.rows, only.source) == ("billing", False, None, {}, "log")
    assert (process.name, process.known, process.lag, process.rows, process.source) == (
        "billing_process", False, None, {}, "log")
    direct = await store.database.read(describe_projections, [Billing], "kafka")
    assert [s.name for s in direct] == ["billing", "billing_process"]  # billing_process: built, not given
    assert direct[0].consumes == "log"  # its recorded source wins


async def test_kafka_lag_problems_go_to_the_callback_or_raise(store: EventStore) -> None:
    """Kafka at a port nothing listens on: the lag stays unknown and the error is passed on."""
    await build(store)
    kafka = KafkaSettings(bootstrap="127.0.0.1:1", give_up_after=0.5)
    seen: list[FactaError] = []
    statuses = await projection_status(store, [RideBoard], kafka=kafka, on_kafka_error=seen.append)
    assert [s.lag for s in statuses if s.name == "ride_board"] == [None]
    assert len(seen) == 1 and "127.0.0.1:1" in str(seen[0])
    with pytest.raises(ProjectionError, match=r"127\.0\.0\.1:1"):
        await fill_kafka_lag(kafka, [RideBoard], [s for s in statuses if s.name == "ride_board"])


async def test_skips_are_recorded_once_and_listed(store: EventStore) -> None:
    await build(store)
    recorded = await skip_event(store, "ride_board", 3, "a poison event", "operator")
    assert recorded["position"] == 3 and recorded["reason"] == "a poison event"
    assert recorded["already_applied"] is None  # ride_board never ran: no live checkpoint
    again = await skip_event(store, "ride_board", 3, "another reason", "someone")
    assert again["event_id"] == recorded["event_id"]
    [skip] = await skipped_events(store)
    assert (skip["projection"], skip["position"], skip["reason"], skip["skipped_by"]) == \
        ("ride_board", 3, "a poison event", "operator")
    assert str(skip["event_id"]) == recorded["event_id"] and skip["applied_at"] is None
    assert await skipped_events(store, "billing") == []
    with pytest.raises(ProjectionError, match="no event at position 999"):
        await skip_event(store, "ride_board", 999, "nothing there")
    with pytest.raises(InvalidValue):
        await skip_event(store, "ride_board", 4, "")

