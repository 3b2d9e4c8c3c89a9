"""Projection runner process of the fault test (tests/projections/test_faults.py).

Runs :class:`ProjectionRunner` for ``account_balances``, ``ride_board`` and
``driver_earnings`` from the store log, side by side on one store, until it is killed
(or, with ``--once``, until each has caught up with the log as it was at the start).

    python -m tests.projections._runner_worker URL BATCH_SIZE [--once]
"""

from __future__ import annotations

import asyncio
import sys

from facta.eventstore import EventStore
from facta.projections import ProjectionRunner, RunnerConfig
from facta.projections.reference import AccountBalances, DriverEarnings, RideBoard

PROJECTIONS = (AccountBalances, RideBoard, DriverEarnings)


async def main(url: str, batch_size: int, once: bool) -> None:
    config = RunnerConfig(batch_size=batch_size, poll_interval=0.01, lock_poll_interval=0.05)
    async with await EventStore.open(url) as store:
        runners = [ProjectionRunner(store, cls, config=config) for cls in PROJECTIONS]
        await asyncio.gather(*(runner.run(once=once) for runner in runners))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), "--once" in sys.argv[3:]))
