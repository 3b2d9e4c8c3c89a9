"""The projection of the consumer-group fault tests (tests/projections/test_kafka_group_faults.py),
run by the real ``facta projections run tally --projections tests.projections._group_projection:Tally``.

Besides a total per stream, it writes one row per event it applies: which runner process
applied it (``FACTA_TEST_MEMBER``, else the pid), in which of that process's batches, and
the event's store position. The rows commit in the batch's transaction, with its
checkpoints, so only applications that counted are there; the test reads the topic to
know each position's partition and offset. A runner's handler calls are numbered whether
their batch commits or not, so a gap in its committed numbers is a batch rolled back.

``FACTA_TEST_PACE_MS`` makes batches take longer (its applier sleeps that long per
handled event, asynchronously, before the batch's transaction), so that rebalances find
batches in flight.

``FACTA_TEST_HOLD`` names a folder that makes the runner hold one batch in flight, for the
zombie test: once a file ``arm`` is there, the applier holds at the next event it paces
(its batch fetched, its transaction not begun). It writes ``held`` (JSON: the member, the
pid, the event's position) and waits, its event loop running (heartbeats go on), until a
file ``release`` is there; then the batch goes on. Once per process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Column, Integer, String

from facta.domain import DomainEvent
from facta.eventstore import RecordedEvent
from facta.projections import Delivery, Projection, ReadModel, handles, read_model_table
from facta.projections._applier import Applier, _Work

MEMBER_ENV = "FACTA_TEST_MEMBER"
PACE_ENV = "FACTA_TEST_PACE_MS"
HOLD_ENV = "FACTA_TEST_HOLD"
_PACE = float(os.environ.get(PACE_ENV) or 0) / 1000


class Added(DomainEvent, name="tally.added"):
    amount: int


class Noted(DomainEvent, name="tally.noted"):
    """Not handled: it only moves the checkpoint."""

    text: str


class _Batches:
    """Numbers this process's batches: a batch is one ReadModel (one transaction)."""

    def __init__(self) -> None:
        self.current: weakref.ref[ReadModel] | None = None
        self.number = 0
        self.calls = itertools.count(1)

    def of(self, rm: ReadModel) -> int:
        if self.current is None or self.current() is not rm:
            self.current = weakref.ref(rm)
            self.number += 1
        return self.number


_batches = _Batches()


class _Hold:
    """The one batch this process holds in flight (see ``FACTA_TEST_HOLD`` above)."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self.done = False

    async def __call__(self, record: RecordedEvent) -> None:
        folder = self.folder
        if folder is None or self.done or not (folder / "arm").exists():
            return
        self.done = True
        held = {"member": _member(), "pid": os.getpid(), "position": record.position}
        (folder / "held.tmp").write_text(json.dumps(held))
        (folder / "held.tmp").replace(folder / "held")  # whole, or not there
        while not (folder / "release").exists():  # noqa: ASYNC110 (another process makes it)
            await asyncio.sleep(0.02)


_hold = _Hold(os.environ.get(HOLD_ENV))


class _PacedApplier(Applier):
    """Holds and paces each handled event before the batch's transaction (its event loop
    running: the consumer's heartbeats go on)."""

    async def _before_commit(self, batch: Sequence[Delivery], work: list[_Work]) -> None:
        for w in work:
            await _hold(w.record)
            if _PACE:
                await asyncio.sleep(_PACE)


class Tally(Projection, name="tally"):
    _applier_class: ClassVar[type[Applier] | None] = _PacedApplier

    totals = read_model_table(
        "tally_totals",
        Column("stream_id", String(100), primary_key=True),
        Column("total", BigInteger, nullable=False),
        Column("events", Integer, nullable=False),
    )
    applications = read_model_table(
        "tally_applications",
        Column("member", String(100), primary_key=True),
        Column("call", BigInteger, primary_key=True),  # this process's handler calls: never repeats
        Column("batch", BigInteger, nullable=False),
        Column("position", BigInteger, nullable=False),
    )

    @handles(Added)
    def _added(self, rm: ReadModel, event: Added, record: RecordedEvent) -> None:
        rm.upsert(self.totals, {"stream_id": record.stream_id}, add={"total": event.amount, "events": 1})
        rm.insert(self.applications, _application(rm, record))


def _application(rm: ReadModel, record: RecordedEvent) -> dict[str, Any]:
    return {"member": _member(), "call": next(_batches.calls), "batch": _batches.of(rm), "position": record.position}


def _member() -> str:
    return os.environ.get(MEMBER_ENV) or str(os.getpid())
