"""`facta projections` and `facta replay`, run as a user runs them: the real executable,
real databases (SQLite, and PostgreSQL for list, run and replay).

Kafka-sourced projections are covered by the Kafka tests; here FACTA_KAFKA_BOOTSTRAP is
unset, so projections consume the store's log.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select, text

from facta.domain.reference import Account, Ride, TripEnded
from facta.eventstore import EventStore, Repository
from facta.eventstore.schema import events, projection_checkpoints, projections
from facta.projections import ProjectionError, UnknownProjection
from facta.projections.catalog import load_catalog, parse_modules
from facta.projections.reference import (
    REFERENCE_PROCESSES,
    REFERENCE_PROJECTIONS,
    AccountBalances,
    DriverEarnings,
    RideBoard,
)

FACTA = shutil.which("facta") or ""
BUILT = ["account_balances", "ride_board", "driver_earnings"]  # billing charges: see test_billing_...
ENV_CLEAN = ("FACTA_DATABASE_URL", "FACTA_KAFKA_BOOTSTRAP", "FACTA_PROJECTIONS")


def _command() -> list[str]:
    return [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]


def _env(env: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_CLEAN} | (env or {})


def facta(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_command(), *args], cwd=cwd, env=_env(env), capture_output=True, text=True,
                          timeout=300, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("facta: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def demo(url: str) -> None:
    ok(facta("demo", "--rides", "20", "--seed", "1", "--json", "--no-projections", "--database-url", url))


def by_name(listing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in listing}


# -- reading the database in-process ---------------------------------------------------------


def _snapshot(conn: Connection) -> dict[str, Any]:
    """Every read-model row of the reference projections, plus facta's projection rows."""
    out: dict[str, Any] = {}
    for projection in REFERENCE_PROJECTIONS:
        for table in projection.live_tables():
            if conn.dialect.has_table(conn, table.name):
                key = list(table.primary_key.columns)
                out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*key))]
    out["facta_projections"] = [
        (r.name, r.generation, r.source, r.last_error)
        for r in conn.execute(select(projections).order_by(projections.c.name))
    ]
    c = projection_checkpoints.c
    out["checkpoints"] = [tuple(r) for r in conn.execute(
        select(c.projection, c.slot, c.topic, c.partition, c.position).order_by(c.projection, c.slot, c.topic, c.partition)
    )]
    return out


async def snapshot(url: str) -> dict[str, Any]:
    async with await EventStore.open(url) as store:
        return await store.database.read(_snapshot)


def _read_models(conn: Connection) -> dict[str, Any]:
    snap = _snapshot(conn)
    del snap["facta_projections"], snap["checkpoints"]
    return snap


async def read_models(url: str) -> dict[str, Any]:
    async with await EventStore.open(url) as store:
        return await store.database.read(_read_models)


async def check_read_models_match_the_aggregates(url: str) -> None:
    """The read models say what the aggregates in the store say."""

    def streams(conn: Connection, stream_type: str) -> list[str]:
        query = select(events.c.stream_id).where(events.c.stream_type == stream_type).distinct()
        return sorted(conn.execute(query).scalars())

    def rows(conn: Connection, table: Any) -> list[Any]:
        return list(conn.execute(select(table)).mappings())

    async with await EventStore.open(url) as store:
        repo = Repository(store)
        balances = {r["account_id"]: r for r in await store.database.read(rows, AccountBalances.balances)}
        account_ids = await store.database.read(streams, "account")
        assert sorted(balances) == account_ids and account_ids
        for account_id in account_ids:
            account = await repo.get(Account, account_id)
            row = balances[account_id]
            assert (row["balance"], row["owner"], row["currency"], row["status"], row["version"]) == (
                account.state.balance, account.state.owner, account.state.currency, account.state.status,
                account.version,
            ), account_id

        board = {r["ride_id"]: r for r in await store.database.read(rows, RideBoard.rides)}
        ride_ids = await store.database.read(streams, "ride")
        assert sorted(board) == ride_ids and len(ride_ids) == 20
        status = {"ended": "completed", "in_progress": "in_trip"}
        for ride_id in ride_ids:
            ride = await repo.get(Ride, ride_id)
            row = board[ride_id]
            assert row["status"] == status.get(ride.state.status, ride.state.status), ride_id
            assert (row["driver_id"], row["fare"], row["rider_id"]) == (
                ride.state.driver_id, ride.state.fare, ride.state.rider_id,
            ), ride_id

        earnings: dict[str, int] = {}
        trips: dict[str, int] = {}
        for ride_id in ride_ids:
            ride = await repo.get(Ride, ride_id)
            if ride.state.status == "ended":
                assert ride.state.driver_id is not None and ride.state.fare is not None
                earnings[ride.state.driver_id] = earnings.get(ride.state.driver_id, 0) + ride.state.fare
                trips[ride.state.driver_id] = trips.get(ride.state.driver_id, 0) + 1
        per_driver: dict[str, list[int]] = {}
        for r in await store.database.read(rows, DriverEarnings.earnings):
            per_driver.setdefault(r["driver_id"], [0, 0])
            per_driver[r["driver_id"]][0] += r["earnings"]
            per_driver[r["driver_id"]][1] += r["trips"]
        assert per_driver == {d: [earnings[d], trips[d]] for d in earnings}


async def log_facts(url: str) -> tuple[int, dict[str, int]]:
    """The log's head and, per reference projection (and process), how many events it handles."""

    def count(conn: Connection, types: list[str]) -> int:
        return int(conn.execute(select(func.count()).where(events.c.event_type.in_(types))).scalar_one())

    async with await EventStore.open(url) as store:
        head = await store.head_position()
        counts = {p.name: await store.database.read(count, p.event_types())
                  for p in (*REFERENCE_PROJECTIONS, *REFERENCE_PROCESSES)}
    return head, counts


# -- help ------------------------------------------------------------------------------------


def test_every_projection_command_has_help_with_an_example() -> None:
    assert "projections" in ok(facta("--help")).stdout and "replay" in facta("--help").stdout
    assert all(n in ok(facta("projections", "--help")).stdout for n in ("list", "run", "skip", "skipped"))
    for command in (["projections", "list"], ["projections", "run"], ["projections", "skip"],
                    ["projections", "skipped"], ["replay"]):
        result = ok(facta(*command, "--help"))
        assert "Usage: facta" in result.stdout and "Example" in result.stdout, command
        assert "--database-url" in result.stdout, command


# -- list, run, replay on both backends -------------------------------------------------------


async def test_list_run_and_replay(backend_url: str) -> None:
    url = backend_url
    demo(url)
    head, handled = await log_facts(url)

    before = by_name(as_json(facta("projections", "list", "--json", "--database-url", url)))
    assert list(before) == ["account_balances", "ride_board", "driver_earnings", "billing", "billing_process"]
    for name, entry in before.items():
        assert entry["source"] is None and entry["checkpoint"] is None and entry["generation"] is None, entry
        assert entry["lag"] == handled[name] > 0, entry
        assert entry["rows"] == {t.name: None for t in load_catalog().get(name).live_tables()}
    table = ok(facta("projections", "list", "--database-url", url)).stdout.splitlines()
    assert table[0].split() == ["NAME", "SOURCE", "GEN", "CHECKPOINT", "LAG", "ROWS", "LAST", "ERROR"]
    assert table[1].split()[:5] == ["account_balances", "-", "-", "-", str(handled["account_balances"])]

    run = as_json(facta("projections", "run", *BUILT, "--once", "--json", "--batch-size", "7", "--database-url", url))
    assert [(r["name"], r["source"], r["applied"], r["checkpoint"], r["error"]) for r in run] == [
        (name, "log", handled[name], head, None) for name in BUILT
    ]
    after = by_name(as_json(facta("projections", "list", "--json", "--database-url", url)))
    for name in BUILT:
        entry = after[name]
        assert (entry["source"], entry["generation"], entry["checkpoint"], entry["lag"], entry["last_error"]) == (
            "log", 1, head, 0, None,
        )
        assert all(n and n > 0 for n in entry["rows"].values()), entry
    assert after["account_balances"]["rows"] == {"account_balances": 52}  # 40 riders + 12 drivers
    assert after["ride_board"]["rows"] == {"ride_board": 20}
    assert after["billing"]["source"] is None and after["billing"]["lag"] == handled["billing"]
    await check_read_models_match_the_aggregates(url)
    text = ok(facta("projections", "list", "--database-url", url)).stdout
    assert f"account_balances  log     1    position {head}  0" in text

    # Running again finds nothing new.
    again = as_json(facta("projections", "run", *BUILT, "--once", "--json", "--database-url", url))
    assert [r["applied"] for r in again] == [0, 0, 0]

    # A dry run changes nothing and says what a replay would read.
    built = await snapshot(url)
    plan = as_json(facta("replay", "account_balances", "--from-position", "0", "--dry-run", "--json",
                         "--database-url", url))
    assert plan["dry_run"] is True and plan["source"] == "log" and plan["from"] == "position 0"
    assert (plan["start"], plan["end"], plan["events"]) == (0, head, handled["account_balances"])
    assert plan["first_position"] == 1 and plan["last_position"] <= head
    assert plan["estimated_seconds"] is not None and "events/s" in plan["estimate_basis"]
    human = ok(facta("replay", "driver_earnings", "--from-position", "0", "--dry-run", "--database-url", url))
    assert "dry run: nothing changed" in human.stdout and f"events    {handled['driver_earnings']} " in human.stdout
    assert f"up to position {head}" in human.stdout and "estimate" in human.stdout
    assert human.stderr == ""
    assert await snapshot(url) == built

    # A full replay rebuilds identical read models, as a new generation.
    for name in BUILT:
        summary = as_json(facta("replay", name, "--from-position", "0", "--json", "--database-url", url))
        assert (summary["events"], summary["generation"], summary["checkpoint"], summary["source"]) == (
            handled[name], 2, head, "log",
        )
    assert await read_models(url) == {k: v for k, v in built.items() if k not in ("facta_projections", "checkpoints")}
    generations = by_name(as_json(facta("projections", "list", "--json", "--database-url", url)))
    assert [generations[n]["generation"] for n in BUILT] == [2, 2, 2]
    assert all(generations[n]["lag"] == 0 and generations[n]["checkpoint"] == head for n in BUILT)

    # From a time before the first event: the same again; the progress line ends on stderr.
    first_recorded = await first_recorded_at(url)
    start = (first_recorded - timedelta(hours=1)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    result = ok(facta("replay", "ride_board", "--from-time", start, "--database-url", url))
    assert f"replayed ride_board from time {first_recorded - timedelta(hours=1):%Y-%m-%dT%H}" in result.stdout
    assert f"{handled['ride_board']} events in" in result.stdout and "generation 3" in result.stdout
    progress = result.stderr.strip().splitlines()
    assert progress and progress[-1].startswith(f"replay ride_board: {handled['ride_board']}/{handled['ride_board']} ")
    assert await read_models(url) == {k: v for k, v in built.items() if k not in ("facta_projections", "checkpoints")}

    # From a time in the middle: only what was recorded since (the dry run says which).
    middle = await recorded_at_of_position(url, head // 2)
    plan = as_json(facta("replay", "ride_board", "--from-time", middle.isoformat(), "--dry-run", "--json",
                         "--database-url", url))
    expected = await count_since(url, RideBoard.event_types(), middle)
    assert plan["events"] == expected[0] and plan["first_position"] == expected[1]
    assert 0 < plan["events"] < handled["ride_board"]


async def first_recorded_at(url: str) -> datetime:
    async with await EventStore.open(url) as store:
        first = (await store.read_log(0, 1))[0]
    return first.recorded_at


async def recorded_at_of_position(url: str, position: int) -> datetime:
    async with await EventStore.open(url) as store:
        record = (await store.read_log(position - 1, 1))[0]
    return record.recorded_at


async def count_since(url: str, types: list[str], when: datetime) -> tuple[int, int | None]:
    def query(conn: Connection) -> tuple[int, int | None]:
        c = events.c
        first = conn.execute(select(func.min(c.position)).where(c.recorded_at >= when)).scalar()
        row = conn.execute(select(func.count(), func.min(c.position)).where(
            c.position >= first, c.event_type.in_(types))).one()
        return int(row[0]), row[1]

    async with await EventStore.open(url) as store:
        return await store.database.read(query)


# -- run: signals, progress, failures ----------------------------------------------------------


def test_run_follows_the_log_and_stops_cleanly_on_sigterm_and_sigint(sqlite_url: str) -> None:
    demo(sqlite_url)
    for sig in (signal.SIGTERM, signal.SIGINT):
        process = subprocess.Popen(
            [*_command(), "projections", "run", "account_balances", "ride_board", "--json", "--database-url", sqlite_url],
            env=_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert process.stderr is not None
            started = process.stderr.readline()
            assert started.startswith("running account_balances, ride_board from the store log;"), started
            # Events appended while it runs are applied: it follows the log.
            ok(facta("demo", "--rides", "2", "--database-url", sqlite_url))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listing = by_name(as_json(facta("projections", "list", "--json", "--database-url", sqlite_url)))
                if listing["account_balances"]["lag"] == 0 and listing["ride_board"]["lag"] == 0:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the runner did not catch up")
            process.send_signal(sig)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, (sig, out, err)
        assert "Traceback" not in err
        summary = json.loads(out)
        assert [s["name"] for s in summary] == ["account_balances", "ride_board"]
        assert all(s["error"] is None and s["applied"] > 0 for s in summary)
        head, _ = asyncio.run(log_facts(sqlite_url))
        assert [s["checkpoint"] for s in summary] == [head, head]


FAILING_MODULE = """
from sqlalchemy import Column, Integer, String

from facta.domain.reference import Deposited
from facta.projections import Projection, handles, read_model_table


class Deposits(Projection, name="deposits"):
    deposits = read_model_table(
        "deposits",
        Column("account_id", String(255), primary_key=True),
        Column("count", Integer, nullable=False, default=0),
    )

    @handles(Deposited)
    def _deposited(self, rm, event, record):
        if record.position == POISON:
            raise ValueError(f"cannot take the deposit at position {record.position}")
        rm.upsert(self.deposits, {"account_id": record.stream_id}, add={"count": 1})


class NotAProjection:
    pass
"""


def _write_module(folder: Path, name: str, poison: int) -> None:
    """A projection counting deposits, whose handler fails on the one at ``poison``."""
    (folder / f"{name}.py").write_text(textwrap.dedent(FAILING_MODULE).replace("POISON", str(poison)))


async def deposit_positions(url: str) -> list[tuple[int, int]]:
    async with await EventStore.open(url) as store:
        return [(r.position, r.event.amount) async for r in store.iter_log(event_types=["account.deposited"])]  # type: ignore[attr-defined]


async def test_a_failing_handler_stops_with_one_line_then_skip_lets_it_through(tmp_path: Path, sqlite_url: str) -> None:
    demo(sqlite_url)
    deposits = await deposit_positions(sqlite_url)
    poison = deposits[3][0]
    _write_module(tmp_path, "shop_projections", poison)
    env = {"FACTA_PROJECTIONS": "shop_projections"}

    failed = facta("projections", "run", "deposits", "--once", "--batch-size", "2", "--database-url", sqlite_url,
                   cwd=tmp_path, env=env)
    line = one_line_error(failed, "projection 'deposits' stopped at account.deposited event",
                          f"position {poison}", "ValueError: cannot take the deposit at position",
                          f"facta projections skip deposits --position {poison}")
    assert "deposits: applied 3 events from the store log (stopped on an error)" in failed.stdout
    entry = by_name(as_json(facta("projections", "list", "--json", "--database-url", sqlite_url,
                                  cwd=tmp_path, env=env)))["deposits"]
    assert entry["last_error"] == line.removeprefix("facta: error: ")
    assert entry["lag"] == len(deposits) - 3 and entry["checkpoint"] == deposits[2][0]  # the last one applied
    assert entry["rows"] == {"deposits": 3}
    human = ok(facta("projections", "list", "--database-url", sqlite_url, cwd=tmp_path, env=env)).stdout
    assert "cannot take the deposit at position" in human

    # The operator skips the poison event and looks at the dead-letter list.
    recorded = as_json(facta("projections", "skip", "deposits", "--position", str(poison), "--reason",
                             "bad deposit", "--actor", "ops", "--json", "--database-url", sqlite_url,
                             cwd=tmp_path, env=env))
    assert recorded["position"] == poison and recorded["event_type"] == "account.deposited"
    assert recorded["reason"] == "bad deposit" and recorded["skipped_by"] == "ops"
    assert recorded["already_applied"] is False, "the checkpoint stayed before the poison event"
    text = ok(facta("projections", "skip", "deposits", "--position", str(poison), "--database-url",
                    sqlite_url, cwd=tmp_path, env=env)).stdout  # again: changes nothing
    assert f"projection 'deposits' will skip position {poison} (account.deposited event" in text
    skipped = as_json(facta("projections", "skipped", "deposits", "--json", "--database-url", sqlite_url,
                            cwd=tmp_path, env=env))
    assert [(s["position"], s["reason"], s["skipped_by"], s["applied_at"]) for s in skipped] == [
        (poison, "bad deposit", "ops", None)
    ]

    run = as_json(facta("projections", "run", "deposits", "--once", "--json", "--database-url", sqlite_url,
                        cwd=tmp_path, env=env))
    assert run[0]["applied"] == len(deposits) - 4 and run[0]["error"] is None
    entry = by_name(as_json(facta("projections", "list", "--json", "--database-url", sqlite_url,
                                  cwd=tmp_path, env=env)))["deposits"]
    assert entry["last_error"] is None and entry["lag"] == 0
    skipped = as_json(facta("projections", "skipped", "--json", "--database-url", sqlite_url, cwd=tmp_path, env=env))
    assert len(skipped) == 1 and skipped[0]["applied_at"]
    table = ok(facta("projections", "skipped", "--database-url", sqlite_url, cwd=tmp_path, env=env)).stdout
    assert table.splitlines()[0].split()[:3] == ["PROJECTION", "POSITION", "EVENT"]
    assert table.splitlines()[1].split()[:3] == ["deposits", str(poison), "account.deposited"]

    # Without its module the projection is listed as not loaded, and cannot be run.
    listing = by_name(as_json(facta("projections", "list", "--json", "--database-url", sqlite_url)))
    assert listing["deposits"]["known"] is False and listing["deposits"]["lag"] is None
    one_line_error(facta("projections", "run", "deposits", "--database-url", sqlite_url),
                   "unknown projection 'deposits'")


def test_skipped_with_nothing_and_skip_of_a_missing_position(sqlite_url: str) -> None:
    demo(sqlite_url)
    assert ok(facta("projections", "skipped", "--database-url", sqlite_url)).stdout.strip() == "no skipped events"
    assert as_json(facta("projections", "skipped", "ride_board", "--json", "--database-url", sqlite_url)) == []
    one_line_error(facta("projections", "skip", "ride_board", "--position", "999999", "--database-url", sqlite_url),
                   "no event at position 999999")
    # Before the projection ever ran, nobody knows; once it is past the position, the
    # skip says it only keeps the event out of rebuilds.
    unknown = as_json(facta("projections", "skip", "ride_board", "--position", "2", "--json", "--database-url", sqlite_url))
    assert unknown["already_applied"] is None
    ok(facta("projections", "run", "ride_board", "--once", "--database-url", sqlite_url))
    passed = facta("projections", "skip", "ride_board", "--position", "3", "--database-url", sqlite_url)
    assert passed.returncode == 0 and "will skip position 3" in passed.stdout
    assert passed.stderr.strip() == (
        "facta: note: projection 'ride_board' has applied position 3 already; the skip keeps it out of rebuilds"
        " (`facta replay ride_board --from-position 0` to take it out now)"
    )


def test_billing_is_listed_but_not_run_here(sqlite_url: str) -> None:
    """Billing's charges are tested in tests/projections/test_billing.py; here it is only
    listed, never run."""
    demo(sqlite_url)
    entry = by_name(as_json(facta("projections", "list", "--json", "--database-url", sqlite_url)))["billing"]
    assert entry["source"] is None and entry["rows"] == {"billing_charges": None}


# -- user projections ------------------------------------------------------------------------


GOOD_MODULE = """
from sqlalchemy import Column, Integer, String

from facta.domain.reference import TripEnded
from facta.projections import Projection, handles, read_model_table
from facta.projections.reference import RideBoard  # imported, not defined here: not registered twice


class TripsPerRider(Projection, name="trips_per_rider"):
    trips = read_model_table(
        "trips_per_rider",
        Column("ride_id", String(255), primary_key=True),
        Column("fare", Integer, nullable=False),
    )

    @handles(TripEnded)
    def _ended(self, rm, event, record):
        rm.upsert(self.trips, {"ride_id": record.stream_id}, set={"fare": event.fare})


class Unnamed(Projection):  # no name: a base class, not registered
    pass
"""


def test_user_projections_from_modules(tmp_path: Path, sqlite_url: str) -> None:
    demo(sqlite_url)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "__init__.py").write_text("")
    (tmp_path / "mine" / "reports.py").write_text(textwrap.dedent(GOOD_MODULE))
    for env, option in (({"FACTA_PROJECTIONS": "mine.reports"}, []),
                        ({}, ["--projections", "mine.reports:TripsPerRider"]),
                        ({"FACTA_PROJECTIONS": "no.such.module"}, ["--projections", " mine.reports ,"])):
        listing = as_json(facta("projections", "list", "--json", *option, "--database-url", sqlite_url,
                                cwd=tmp_path, env=env))
        assert [e["name"] for e in listing] == [*(p.name for p in (*REFERENCE_PROJECTIONS, *REFERENCE_PROCESSES)),
                                                "trips_per_rider"]
    env = {"FACTA_PROJECTIONS": "mine.reports"}
    run = as_json(facta("projections", "run", "trips_per_rider", "ride_board", "--once", "--json",
                        "--database-url", sqlite_url, cwd=tmp_path, env=env))
    ended = run[0]["applied"]
    assert ended > 0 and run[1]["applied"] > ended
    replayed = as_json(facta("replay", "trips_per_rider", "--from-position", "0", "--json",
                             "--database-url", sqlite_url, cwd=tmp_path, env=env))
    assert replayed["events"] == ended and replayed["generation"] == 2

    def bad(spec: str, *needles: str) -> None:
        one_line_error(facta("projections", "list", "--projections", spec, "--database-url", sqlite_url,
                             cwd=tmp_path), *needles)

    (tmp_path / "broken.py").write_text("import nothing_here_at_all\n")
    (tmp_path / "syntax.py").write_text("def (:\n")
    (tmp_path / "empty.py").write_text("X = 1\n")
    (tmp_path / "twice.py").write_text(textwrap.dedent("""
        from facta.projections import Projection

        class Again(Projection, name="ride_board"):
            pass
    """))
    (tmp_path / "badname.py").write_text(textwrap.dedent("""
        from facta.projections import Projection

        class Odd(Projection, name="no spaces please"):
            pass
    """))
    bad("no_such_module_here", "cannot import projections module 'no_such_module_here'", "ModuleNotFoundError")
    bad("broken", "cannot import projections module 'broken'", "No module named 'nothing_here_at_all'")
    bad("syntax", "cannot import projections module 'syntax'", "SyntaxError")
    bad("empty", "projections module 'empty' defines no projection")
    bad("mine.reports:Nope", "projections module 'mine.reports' has no attribute 'Nope'")
    bad("mine.reports:Unnamed", "'mine.reports:Unnamed' is not a projection")
    bad("twice", "projection name 'ride_board' is defined twice", "twice.Again")
    bad("badname", "cannot import projections module 'badname'", "must be letters, digits and underscores")
    bad("not a module", "'not a module' is not of the form package.module")
    bad("mine.reports:", "is not of the form package.module")


def test_catalog_in_process() -> None:
    catalog = load_catalog("")
    assert catalog.names() == ["account_balances", "ride_board", "driver_earnings", "billing", "billing_process"]
    assert catalog.resolve(["ride_board", "account_balances", "ride_board"]) == [RideBoard, AccountBalances]
    with pytest.raises(UnknownProjection, match="unknown projection 'x': known are account_balances, ride_board"):
        catalog.get("x")
    with pytest.raises(ProjectionError, match=r"cannot import projections module 'facta\.nope'"):
        load_catalog(["facta.nope"])
    assert parse_modules(" a.b, ,c.d:E ,") == ["a.b", "c.d:E"]
    assert len(load_catalog(["facta.projections.reference"])) == 5  # the same classes again: no clash
    assert TripEnded.event_type in DriverEarnings.event_types()


# -- errors: one line, exit 1 for facta's errors and 2 for usage ------------------------------


def test_errors_are_one_line(sqlite_url: str, tmp_path: Path) -> None:
    demo(sqlite_url)
    head = as_json(facta("replay", "ride_board", "--from-position", "0", "--dry-run", "--json",
                         "--database-url", sqlite_url))["end"]
    url = ["--database-url", sqlite_url]
    known = "known are account_balances, ride_board, driver_earnings, billing, billing_process"

    def err(*args: str) -> str:
        return one_line_error(facta(*args, *url), code=1)

    def usage(*args: str) -> str:
        return one_line_error(facta(*args, *url), code=2)

    # unknown projections
    assert known in err("replay", "nope", "--from-position", "0")
    assert known in err("projections", "run", "account_balances", "nope", "--once")
    assert known in err("projections", "skip", "nope", "--position", "1")
    assert known in err("projections", "skipped", "nope")
    # positions and offsets
    assert f"position {head + 1} is beyond the end of the log (the last position is {head})" in err(
        "replay", "ride_board", "--from-position", str(head + 1))
    assert "replays from Kafka" in err("replay", "ride_board", "--from-offset", "0")
    assert "replays from Kafka" in err("replay", "ride_board", "--from-offset", "5", "--partition", "1", "--dry-run")
    # times
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert "is in the future" in err("replay", "ride_board", "--from-time", future)
    assert "is in the future" in err("replay", "ride_board", "--from-time", "2999-01-01T00:00:00+01:00", "--dry-run")
    assert "has no time zone" in usage("replay", "ride_board", "--from-time", "2026-01-01T12:00:00")
    assert "has no time zone" in usage("replay", "ride_board", "--from-time", "2026-01-01")
    assert "is not an ISO 8601 time" in usage("replay", "ride_board", "--from-time", "yesterday")
    assert "is not an ISO 8601 time" in usage("replay", "ride_board", "--from-time", "2026-13-01T00:00Z")
    # exactly one start
    assert "give exactly one of --from-position, --from-offset, --from-time" in usage("replay", "ride_board")
    assert "(got --from-position, --from-time)" in usage(
        "replay", "ride_board", "--from-position", "0", "--from-time", "2026-01-01T00:00Z")
    assert "(got --from-position, --from-offset)" in usage(
        "replay", "ride_board", "--from-position", "0", "--from-offset", "0")
    assert "--partition goes with --from-offset" in usage("replay", "ride_board", "--from-position", "0",
                                                          "--partition", "1")
    assert "Invalid value for '--from-position'" in usage("replay", "ride_board", "--from-position", "-1")
    assert "Invalid value for '--batch-size'" in usage("projections", "run", "ride_board", "--batch-size", "0")
    assert "Missing argument" in usage("projections", "run")
    assert "Missing option '--position'" in usage("projections", "skip", "ride_board")
    assert "No such option" in usage("projections", "list", "--bogus")
    # the store: not migrated, unreachable
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    (tmp_path / "empty.db").touch()  # a database without facta's schema (a missing file: test_cli_edges.py)
    for args in (["projections", "list"], ["projections", "run", "ride_board", "--once"],
                 ["replay", "ride_board", "--from-position", "0"], ["projections", "skipped"]):
        one_line_error(facta(*args, "--database-url", empty), "has no facta schema: run `facta db upgrade`")
    one_line_error(facta("projections", "list", "--database-url", "postgresql://127.0.0.1:1/facta"),
                   "cannot reach PostgreSQL at 127.0.0.1:1/facta")

    # None of it changed anything.
    assert by_name(as_json(facta("projections", "list", "--json", *url)))["ride_board"]["source"] is None


def test_database_url_comes_from_the_environment(sqlite_url: str) -> None:
    demo(sqlite_url)
    env = {"FACTA_DATABASE_URL": sqlite_url}
    ok(facta("projections", "run", "ride_board", "--once", env=env))
    listing = by_name(as_json(facta("projections", "list", "--json", env=env)))
    assert listing["ride_board"]["checkpoint"] > 0
    plan = as_json(facta("replay", "ride_board", "--from-position", "10", "--dry-run", "--json", env=env))
    assert plan["start"] == 10


def test_an_unreachable_kafka_is_one_line_after_the_timeout(sqlite_url: str) -> None:
    demo(sqlite_url)
    run = facta("projections", "run", "ride_board", "--once", "--kafka-bootstrap", "127.0.0.1:1",
                "--kafka-timeout", "1", "--database-url", sqlite_url)
    one_line_error(run, "projection 'ride_board' on Kafka at 127.0.0.1:1: Kafka unreachable for 1 s")
    replayed = facta("replay", "ride_board", "--from-offset", "0", "--kafka-bootstrap", "127.0.0.1:1",
                     "--kafka-timeout", "1", "--database-url", sqlite_url)
    one_line_error(replayed, "Kafka at 127.0.0.1:1")


async def test_a_replay_from_a_later_position_needs_slice_and_the_dry_run_says_so(migrated_url: str) -> None:
    url = ["--database-url", migrated_url]
    async with await EventStore.open(migrated_url) as store:
        repo = Repository(store, snapshot_every=None)
        account = Account.open("acct-x", "ann", "EUR")
        account.deposit(1_000)
        await repo.save(account)  # positions 1, 2
        account.withdraw(994)
        await repo.save(account)  # 3
        account.deposit(50)
        await repo.save(account)  # 4

    async def row() -> tuple[Any, ...]:
        async with await EventStore.open(migrated_url) as store:
            t = AccountBalances.balances
            return await store.database.read(
                lambda c: tuple(c.execute(select(t.c.owner, t.c.status, t.c.balance)).one()))

    ok(facta("projections", "run", "account_balances", "--once", *url))
    assert await row() == ("ann", "open", 56)

    one_line_error(
        facta("replay", "account_balances", "--from-position", "2", *url),
        "a replay of projection 'account_balances' from position 2 would replace its read model with one built"
        " from that point on, leaving out the 2 earlier events it handles: replay from the beginning"
        " (--from-position 0), or give --slice to build that slice on purpose",
    )
    assert await row() == ("ann", "open", 56)
    dry = ok(facta("replay", "account_balances", "--from-position", "2", "--dry-run", *url)).stdout
    assert ("  result    a slice: only the events from position 2 on; it leaves out the 2 earlier events of the"
            " types it handles (refused without --slice)") in dry.splitlines()
    plan = as_json(facta("replay", "account_balances", "--from-position", "2", "--dry-run", "--json", *url))
    assert (plan["slice"], plan["left_out"], plan["events"]) == (True, 2, 2)
    full = ok(facta("replay", "account_balances", "--from-position", "0", "--dry-run", *url)).stdout
    assert "  result    every event from the beginning (nothing lies before the start)" in full.splitlines()

    done = ok(facta("replay", "account_balances", "--from-position", "2", "--slice", *url))
    assert "from position 2 (the store log): 2 events in" in done.stdout
    assert await row() == (None, None, -944)  # the slice: -994 + 50, no opening
    ok(facta("replay", "account_balances", "--from-position", "0", *url))
    assert await row() == ("ann", "open", 56)


async def test_run_once_runs_process_managers_before_projections(backend_url: str) -> None:
    """`projections run billing billing_process --once` on a store nobody billed yet: the
    process runs first, so the billing table of the same run shows every ride charged."""
    ok(facta("demo", "--rides", "12", "--seed", "4", "--no-projections", "--database-url", backend_url))
    result = ok(facta("projections", "run", "billing", "billing_process", "--once", "--json", "--database-url", backend_url))
    applied = {entry["name"]: entry["applied"] for entry in json.loads(result.stdout)}
    store = await EventStore.open(backend_url)
    try:
        ended = [r.stream_id for r in await store.read_log(0, limit=100_000) if r.event_type == "ride.trip_ended"]
        charges = await store.database.read(
            lambda conn: conn.execute(text("SELECT ride_id, charged FROM billing_charges")).all())
    finally:
        await store.close()
    assert ended and applied["billing_process"] == len(ended)
    assert sorted(ride for ride, _ in charges) == sorted(ended)
    assert all(charged is not None and charged > 0 for _, charged in charges), charges
