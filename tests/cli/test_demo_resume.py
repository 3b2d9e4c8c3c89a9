"""`facta demo` interrupted anywhere (Ctrl-C or SIGKILL; among the rides, in billing, in
the other projections) is finished by the next `facta demo`: the read models then hold
exactly what an uninterrupted run's hold, on both dialects (issue 10, item 7)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from facta.eventstore import EventStore
from facta.eventstore.schema import events
from facta.projections.reference import REFERENCE_PROJECTIONS
from facta.replay.demo import run_demo

from .test_cli import FACTA

COMMAND = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]
OPTIONS = ["--rides", "120", "--riders", "8", "--drivers", "4", "--seed", "42"]
SUMMARY_KEYS = ("rides_completed", "rides_cancelled", "telemetry_points", "fares_total_minor", "driver_earnings_minor")


def _models(conn: Connection) -> dict[str, Any]:
    """Every reference read model's rows without their times (which differ run to run),
    and every stream's version."""
    out: dict[str, Any] = {}
    for projection in REFERENCE_PROJECTIONS:
        for table in projection.live_tables():
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted(
                tuple(v for v in row if not isinstance(v, (datetime, date))) for row in rows
            )
    out["streams"] = sorted(conn.execute(
        select(events.c.stream_id, func.max(events.c.version)).group_by(events.c.stream_id)
    ).all())
    return out


async def _read_models(url: str) -> dict[str, Any]:
    async with await EventStore.open(url) as store:
        return await store.database.read(_models)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """An uninterrupted run's summary and read models."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('reference') / 'facta.db'}"
    out = subprocess.run([*COMMAND, "demo", *OPTIONS, "--json", "--database-url", url],
                         capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(out.stdout)
    models = asyncio.run(_read_models(url))
    assert summary["rides_completed"] > 100 and len(models["billing_charges"]) == summary["rides_completed"]
    return summary, models


def _interrupt(url: str, cwd: Path, marker: str, sig: signal.Signals) -> int:
    """Run `facta demo`, send ``sig`` once a stderr line contains ``marker``; its exit code."""
    proc = subprocess.Popen([*COMMAND, "demo", *OPTIONS, "--database-url", url], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if marker in line:
                proc.send_signal(sig)
                break
        proc.stderr.read()
        return proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# (what to wait for on stderr, the signal): among the rides, in billing, in the later projections.
POINTS = [
    ("rides: 36/120", signal.SIGINT),
    ("rides: 96/120", signal.SIGKILL),
    ("projection billing", signal.SIGINT),
    ("projection billing", signal.SIGKILL),
    ("projection ride_board", signal.SIGINT),
    ("projection account_balances", signal.SIGKILL),
]


@pytest.mark.slow
@pytest.mark.parametrize(("marker", "sig"), POINTS, ids=[f"{m.replace(' ', '-')}-{s.name}" for m, s in POINTS])
def test_an_interrupted_demo_is_finished_by_the_next(
    backend_url: str, tmp_path: Path, expected: tuple[dict[str, Any], dict[str, Any]], marker: str,
    sig: signal.Signals,
) -> None:
    summary, models = expected
    code = _interrupt(backend_url, tmp_path, marker, sig)
    assert code in (0, 130 if sig == signal.SIGINT else -sig.value), code
    # Other options on purpose: the interrupted run's own plan is what gets finished.
    again = subprocess.run([*COMMAND, "demo", "--rides", "3", "--json", "--database-url", backend_url],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert {k: resumed[k] for k in SUMMARY_KEYS} == {k: summary[k] for k in SUMMARY_KEYS}
    assert resumed["run"] == 1
    if code != 0:
        assert resumed["resumed_at_ride"] is not None
    assert asyncio.run(_read_models(backend_url)) == models
    # The run is finished now: the next demo is a new run with new rides, and bills them.
    third = json.loads(subprocess.run([*COMMAND, "demo", "--rides", "3", "--json", "--database-url", backend_url],
                                      cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                      check=True).stdout)
    assert third["run"] == 2 and third["resumed_at_ride"] is None
    after = asyncio.run(_read_models(backend_url))
    assert len(after["billing_charges"]) == summary["rides_completed"] + third["rides_completed"]
    assert all(row[1] == row[-1] for row in after["billing_charges"]), "every fare charged in full"


async def test_twice_interrupted_then_finished_in_process(backend_url: str, tmp_path: Path) -> None:
    """The Python API: a run cancelled among its rides, continued and cancelled again,
    then finished, equals one uninterrupted run with the same seed."""
    options: dict[str, Any] = {"rides": 30, "riders": 5, "drivers": 3, "telemetry": 4, "seed": 9}

    async def cancel_after(rides: int) -> None:
        def progress(done: int, total: int) -> None:
            if done == rides:
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await run_demo(backend_url, progress=progress, **options)

    await cancel_after(7)
    await cancel_after(19)  # the second call continues the plan: this is ride 19 of the same 30
    done = await run_demo(backend_url, rides=2, riders=2, drivers=2, seed=1)
    assert done.run == 1 and done.resumed_at_ride is not None
    reference = f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}"
    whole = await run_demo(reference, **options)
    assert (done.rides_completed, done.rides_cancelled, done.fares_total, done.earnings) == (
        whole.rides_completed, whole.rides_cancelled, whole.fares_total, whole.earnings)
    assert await _read_models(backend_url) == await _read_models(reference)


async def test_a_reference_projection_rebuilt_from_kafka_is_left_to_its_runner(backend_url: str) -> None:
    """After the README's `facta replay ride_board --from-offset 0`, ride_board reads Kafka:
    the next demo leaves it (and says so) instead of stopping with an error."""
    from facta.eventstore.schema import projections

    first = await run_demo(backend_url, rides=3, riders=2, drivers=2, telemetry=2, seed=3)
    assert "ride_board" in first.projected and first.on_kafka == []
    async with await EventStore.open(backend_url) as store:
        await store.database.write(lambda conn: conn.execute(
            projections.update().where(projections.c.name == "ride_board").values(source="kafka")))
    lines: list[str] = []
    second = await run_demo(backend_url, rides=2, riders=2, drivers=2, telemetry=2, seed=3, notice=lines.append)
    assert second.on_kafka == ["ride_board"] and "ride_board" not in second.projected
    assert set(second.projected) == {"billing_process", "billing", "account_balances", "driver_earnings"}
    assert "  projection ride_board: reads Kafka, left to `facta projections run ride_board` with " \
           "FACTA_KAFKA_BOOTSTRAP set" in lines
