"""A projection for tests/cli/test_metrics_cli.py: it applies every account and ride event,
but its handlers wait until the file named by ``FACTA_TEST_GATE`` exists, so a run is held
behind its backlog for as long as the test needs to see the lag."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import BigInteger, Column, String

from facta.domain.account import (
    AccountClosed,
    AccountOpened,
    Deposited,
    TransferredIn,
    TransferredOut,
    Withdrawn,
)
from facta.domain.ride import (
    DriverArrived,
    RideAccepted,
    RideCancelled,
    RideOffered,
    RideRequested,
    TelemetryRecorded,
    TripEnded,
    TripStarted,
)
from facta.eventstore import RecordedEvent
from facta.projections import Projection, ReadModel, handles, read_model_table


def _gated() -> Callable[[Any, ReadModel, Any, RecordedEvent], None]:
    def apply(self: Any, rm: ReadModel, event: Any, record: RecordedEvent) -> None:
        gate = os.environ.get("FACTA_TEST_GATE")
        while gate and not os.path.exists(gate):
            time.sleep(0.02)
        rm.upsert(self.rows, {"position": record.position}, set={"event_type": record.event_type})

    return apply


class GatedLog(Projection, name="gated_log"):
    rows = read_model_table("gated_log", Column("position", BigInteger, primary_key=True),
                            Column("event_type", String(100)))

    _opened = handles(AccountOpened)(_gated())
    _deposited = handles(Deposited)(_gated())
    _withdrawn = handles(Withdrawn)(_gated())
    _out = handles(TransferredOut)(_gated())
    _in = handles(TransferredIn)(_gated())
    _closed = handles(AccountClosed)(_gated())
    _requested = handles(RideRequested)(_gated())
    _offered = handles(RideOffered)(_gated())
    _accepted = handles(RideAccepted)(_gated())
    _arrived = handles(DriverArrived)(_gated())
    _started = handles(TripStarted)(_gated())
    _telemetry = handles(TelemetryRecorded)(_gated())
    _ended = handles(TripEnded)(_gated())
    _cancelled = handles(RideCancelled)(_gated())
