"""Issue 15, items 3 to 5, as a user runs them (the real executable, subprocesses):
progress of the long commands on stderr (log lines when stderr is not a terminal, a bar
on a pseudo-terminal) with stdout and --json unchanged; `facta projections wait` and its
exit codes; `facta status --json` against a store whose figures are known, and the live
view ending cleanly on SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert
from sqlalchemy import select as sql_select

from facta.domain.reference import Account
from facta.eventstore import EventStore, Repository
from facta.eventstore.schema import events, relay_checkpoints

FACTA = shutil.which("facta") or ""
ENV_CLEAN = ("FACTA_DATABASE_URL", "FACTA_KAFKA_BOOTSTRAP", "FACTA_PROJECTIONS", "FACTA_PROGRESS_INTERVAL_S")
# Every batch logs a line: the progress is seen on a backlog of a few batches.
EVERY_BATCH = {"FACTA_PROGRESS_INTERVAL_S": "0.000001"}
LINE = r"{label}: \d+/\d+ {unit} \(\d+%\), \d+ {unit}/s, ETA (under 0\.1 s|[\d.]+ s|\d+ min \d+ s)"


def _command() -> list[str]:
    return [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]


def _env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_CLEAN} | {"PYTHONUNBUFFERED": "1"} | (env or {})


def facta(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_command(), *args], env=_env(env), cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def lines_matching(text: str, label: str, unit: str) -> list[str]:
    pattern = re.compile(LINE.format(label=re.escape(label), unit=unit))
    return [line for line in text.splitlines() if pattern.fullmatch(line)]


@pytest.fixture
def city(sqlite_url: str, tmp_path: Path) -> str:
    """A store with a demo city's events (about 1400) and no projection run yet."""
    ok(facta("demo", "--rides", "60", "--seed", "3", "--json", "--no-projections", "--database-url", sqlite_url,
             cwd=tmp_path))
    return sqlite_url


async def _head(url: str) -> int:
    async with await EventStore.open(url) as store:
        return await store.head_position()


def test_progress_goes_to_stderr_as_log_lines_and_json_stays_exact(city: str, tmp_path: Path) -> None:
    head = asyncio.run(_head(city))
    assert head > 500

    # projections run --once: a line per batch and projection, the --json summary exact.
    run = ok(facta("projections", "run", "account_balances", "ride_board", "--once", "--batch-size", "100",
                   "--json", "--database-url", city, env=EVERY_BATCH))
    summary = json.loads(run.stdout)
    assert [(s["name"], s["checkpoint"], s["error"]) for s in summary] == [
        ("account_balances", head, None), ("ride_board", head, None)]
    for name, batches in (("account_balances", 1), ("ride_board", 3)):
        # A line per batch (of 100 events of its types), counting positions out of the head.
        found = lines_matching(run.stderr, f"projection '{name}'", "events")
        done = [int(line.split(": ")[1].split("/")[0]) for line in found]
        assert len(found) >= batches and done == sorted(set(done)), run.stderr
        assert found[-1].startswith(f"projection '{name}': {head}/{head} events (100%)")
    assert len(run.stderr.splitlines()) == sum(
        len(lines_matching(run.stderr, f"projection '{n}'", "events")) for n in ("account_balances", "ride_board"))

    # replay: its lines, then its final one; --json exact.
    replayed = ok(facta("replay", "ride_board", "--from-position", "0", "--batch-size", "50", "--json",
                        "--database-url", city, env=EVERY_BATCH))
    document = json.loads(replayed.stdout)
    assert (document["projection"], document["checkpoint"], document["generation"]) == ("ride_board", head, 2)
    found = lines_matching(replayed.stderr, "replay ride_board", "events")
    assert len(found) >= document["events"] // 50
    assert replayed.stderr.strip().splitlines()[-1] == (
        f"replay ride_board: {document['events']}/{document['events']} events (100%), "
        + replayed.stderr.strip().splitlines()[-1].split("(100%), ")[1])
    assert replayed.stderr.strip().endswith(", done")

    # audit verify: lines out of the head; the report on stdout as before.
    verified = ok(facta("audit", "verify", "--json", "--database-url", city, env=EVERY_BATCH))
    assert json.loads(verified.stdout)["events"] == head and json.loads(verified.stdout)["intact"] is True
    assert lines_matching(verified.stderr, "audit verify", "events")[-1].startswith(
        f"audit verify: {head}/{head} events (100%)")

    # The default interval (5 s) logs nothing on runs this short: stderr as it was.
    quiet = ok(facta("projections", "run", "account_balances", "--once", "--json", "--database-url", city))
    assert quiet.stderr == "" and json.loads(quiet.stdout)[0]["applied"] == 0

    # demo: a line each tenth of the rides (and the interval's); --json exact.
    demo = ok(facta("demo", "--rides", "20", "--seed", "4", "--no-projections", "--database-url",
                    f"sqlite+aiosqlite:///{tmp_path / 'demo2.db'}", cwd=tmp_path))
    rides = [line for line in demo.stderr.splitlines() if line.startswith("  rides: ")]
    assert [line.split()[1] for line in rides] == [f"{n}/20" for n in range(2, 21, 2)]
    assert re.fullmatch(r"  rides: 20/20 rides \(100%\), \d+ rides/s, ETA under 0\.1 s", rides[-1])
    assert "rides completed" in demo.stdout and "rides: " not in demo.stdout
    assert "rides: " not in ok(facta("demo", "--rides", "5", "--seed", "4", "--json", "--no-projections",
                                     "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'demo3.db'}",
                                     cwd=tmp_path)).stderr


def test_relay_once_logs_its_progress(city: str, kafka_broker: Any, prefix: str) -> None:
    head = asyncio.run(_head(city))
    run = ok(facta("relay", "run", "--once", "--batch-size", "100", "--topic-prefix", prefix, "--json",
                   "--kafka-bootstrap", kafka_broker.bootstrap, "--database-url", city,
                   *([] if kafka_broker.supports_idempotence else ["--no-idempotence"]), env=EVERY_BATCH))
    assert json.loads(run.stdout) == {"name": "default", "published": head}
    found = lines_matching(run.stderr, "relay 'default'", "events")
    assert len(found) >= head // 200 and found[-1].startswith(f"relay 'default': {head}/{head} events (100%)")
    # A Kafka runner counts records, out of the end offsets of its topics (account: one
    # record per account event, as the relay published them).
    accounts = asyncio.run(_count_stream_type(city, "account"))
    applied = ok(facta("projections", "run", "account_balances", "--once", "--batch-size", "50", "--json",
                       "--kafka-bootstrap", kafka_broker.bootstrap, "--topic-prefix", prefix, "--kafka-timeout", "60",
                       "--group-prefix", f"{prefix}.", "--database-url", city, env=EVERY_BATCH))
    assert json.loads(applied.stdout)[0]["source"] == "kafka"
    records = lines_matching(applied.stderr, "projection 'account_balances'", "records")
    assert len(records) >= accounts // 50 // 3  # per batch, on three partitions
    assert records[-1].startswith(f"projection 'account_balances': {accounts}/{accounts} records (100%)")


async def _count_stream_type(url: str, stream_type: str) -> int:
    async with await EventStore.open(url) as store:
        return int(await store.database.read(lambda conn: conn.execute(
            sql_select(func.count()).where(events.c.stream_type == stream_type)).scalar_one()))


def _on_pty(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal and stdout on a pipe: (exit code, stdout, what
    the terminal got)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*_command(), *args], env=_env(env | {"COLUMNS": "120", "TERM": "xterm"}),
                            stdout=subprocess.PIPE, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    screen = b""
    assert proc.stdout is not None
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode()
    code = proc.wait(timeout=60)
    os.close(leader)
    return code, out, screen.decode(errors="replace")


def test_progress_on_a_terminal_draws_a_bar_and_leaves_stdout_alone(city: str) -> None:
    head = asyncio.run(_head(city))
    code, out, screen = _on_pty(["projections", "run", "account_balances", "--once", "--batch-size", "100",
                                 "--json", "--database-url", city], EVERY_BATCH)
    assert code == 0, screen
    assert [(s["name"], s["applied"] > 0, s["checkpoint"]) for s in json.loads(out)] == [
        ("account_balances", True, head)]
    assert "projection 'account_balances'" in screen and f"{head}/{head}" in screen and "events/s" in screen
    assert "━" in screen  # rich's bar
    assert not lines_matching(screen.replace("\r", "\n"), "projection 'account_balances'", "events")  # no log lines


async def _save(url: str, account_id: str, amount: int) -> list[int]:
    async with await EventStore.open(url) as store:
        repo = Repository(store, snapshot_every=None)
        account = Account.open(account_id, owner="ann", currency="EUR")
        account.deposit(amount)
        return list((await repo.save(account))[0].positions)


def test_projections_wait_exit_codes(city: str) -> None:
    head = asyncio.run(_head(city))
    ok(facta("projections", "run", "account_balances", "--once", "--database-url", city))
    reached = ok(facta("projections", "wait", "account_balances", "--position", str(head), "--timeout", "0",
                       "--database-url", city))
    assert reached.stdout == f"projection 'account_balances' has applied position {head} (position {head})\n"
    positions = asyncio.run(_save(city, "acct-wait-1", 40))
    late = facta("projections", "wait", "account_balances", "--position", str(positions[-1]), "--timeout", "0.3",
                 "--json", "--database-url", city)
    assert late.returncode == 1, late.stderr
    document = json.loads(late.stdout)
    assert {k: document[k] for k in ("projection", "position", "reached", "checkpoint")} == {
        "projection": "account_balances", "position": positions[-1], "reached": False, "checkpoint": head}
    assert late.stderr == (f"facta: error: projection 'account_balances' did not reach position {positions[-1]}"
                           f" within 0.3 s: it is at position {head}\n")
    # A runner applies it while the command waits: exit 0.
    waiting = subprocess.Popen([*_command(), "projections", "wait", "account_balances", "--position",
                                str(positions[-1]), "--timeout", "120", "--json", "--database-url", city],
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ok(facta("projections", "run", "account_balances", "--once", "--database-url", city))
    out, err = waiting.communicate(timeout=150)
    assert waiting.returncode == 0, err
    assert {k: v for k, v in json.loads(out).items() if k != "waited_s"} == {
        "projection": "account_balances", "position": positions[-1], "reached": True, "checkpoint": positions[-1]}
    # Usage: exit 2; a projection that never ran: exit 1, one line.
    for args in (["--position", "0", "--timeout", "1"], ["--position", "1"], ["--position", "1", "--timeout", "x"]):
        usage = facta("projections", "wait", "account_balances", *args, "--database-url", city)
        assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1, usage.stderr
    never = facta("projections", "wait", "ride_board", "--position", "1", "--timeout", "1", "--database-url", city)
    assert never.returncode == 1 and never.stderr == (
        "facta: error: projection 'ride_board' has never run on this store, so nothing to wait for (projections that"
        " have: 'account_balances')\n")


async def _known_store(url: str) -> dict[str, Any]:
    """Append after the projections ran, and record a relay's checkpoint: the figures
    `facta status` must show."""
    async with await EventStore.open(url) as store:
        before = await store.head_position()
        await Repository(store, snapshot_every=None).save(Account.open("acct-status-1", owner="bo", currency="EUR"))
        head = await store.head_position()
        stamp = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        await store.database.write(lambda conn: conn.execute(insert(relay_checkpoints).values(
            name="audit-feed", position=before - 10, updated_at=stamp)))
        recorded = await store.database.read(lambda conn: dict(conn.execute(sql_select(
            events.c.position, events.c.recorded_at).where(events.c.position.in_([before + 1, before - 9]))).all()))
    return {"before": before, "head": head, "stamp": stamp, "recorded": recorded}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_status_json_against_a_known_store(city: str) -> None:
    ok(facta("projections", "run", "account_balances", "ride_board", "--once", "--database-url", city))
    known = asyncio.run(_known_store(city))
    before, head = known["before"], known["head"]
    document = json.loads(ok(facta("status", "--json", "--interval", "0", "--database-url", city)).stdout)
    taken = _when(document["taken_at"])
    assert (document["head"], document["interval_s"]) == (head, 0.0)

    def lag_s(position: int) -> float:
        recorded = known["recorded"][position].replace(tzinfo=UTC) if known["recorded"][position].tzinfo is None \
            else known["recorded"][position]
        return round((taken - recorded).total_seconds(), 3)

    assert document["relays"] == [{
        "name": "audit-feed", "checkpoint": before - 10, "lag_events": head - before + 10,
        "lag_s": lag_s(before - 9), "events_per_second": None, "updated_at": "2026-11-30T12:00:00Z",
    }]
    assert [(p["name"], p["source"], p["checkpoint"], p["lag_events"], p["lag_s"], p["events_per_second"],
             p["last_error"]) for p in document["projections"]] == [
        ("account_balances", "log", before, head - before, lag_s(before + 1), None, None),
        ("ride_board", "log", before, head - before, lag_s(before + 1), None, None),
    ]
    assert all(_when(p["updated_at"]) <= taken for p in document["projections"])
    # Caught up: lag 0 in events and seconds; measured over an interval, a rate.
    ok(facta("projections", "run", "account_balances", "--once", "--database-url", city))
    again = json.loads(ok(facta("status", "--json", "--interval", "0.2", "--database-url", city)).stdout)
    balances = next(p for p in again["projections"] if p["name"] == "account_balances")
    assert (balances["checkpoint"], balances["lag_events"], balances["lag_s"], balances["events_per_second"]) == (
        head, 0, 0.0, 0.0)


def test_status_live_view_refreshes_and_exits_0_on_sigint(city: str) -> None:
    ok(facta("projections", "run", "account_balances", "--once", "--database-url", city))
    head = asyncio.run(_head(city))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*_command(), "status", "--interval", "0.2", "--database-url", city],
                            env=_env({"COLUMNS": "200", "TERM": "xterm"}), stdout=follower, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + 120
    try:
        # Two refreshes drawn (the second has a rate: its whole row read, not just its
        # head line, which arrives first), then Ctrl-C.
        second = re.compile(rf"projection\s+account_balances\s+log\s+position {head}\s+0\s+0\s+0\s".encode())
        while not second.search(screen) and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                screen += os.read(leader, 65536)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    text = screen.decode(errors="replace")
    assert code == 0 and err == "", (code, err)
    assert f"store head: position {head}" in text
    assert re.search(rf"projection\s+account_balances\s+log\s+position {head}\s+0\s+0\s+0\s", text), text
    assert "\x1b[" in text  # redrawn in place: cursor movement codes


def test_status_of_a_store_where_nothing_ran(sqlite_url: str) -> None:
    ok(facta("db", "upgrade", "--database-url", sqlite_url))
    document = json.loads(ok(facta("status", "--json", "--interval", "0", "--database-url", sqlite_url)).stdout)
    assert {k: document[k] for k in ("head", "relays", "projections")} == {"head": 0, "relays": [], "projections": []}
    proc = subprocess.Popen([*_command(), "status", "--interval", "0.1", "--database-url", sqlite_url],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first, second = proc.stdout.readline(), proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err == ""
    # Not a terminal: each reading printed after the other.
    assert first.startswith("store head: position 0 (at ")
    assert second == "no relay or projection has run on this store\n"


def test_status_interval_0_prints_one_reading_and_exits(city: str) -> None:
    """``--interval 0`` is one reading (no rates) with or without --json: it used to be
    turned into a refresh every 0.1 s, forever."""
    ok(facta("projections", "run", "account_balances", "--once", "--database-url", city))
    head = asyncio.run(_head(city))
    try:
        once = subprocess.run([*_command(), "status", "--interval", "0", "--database-url", city], env=_env(),
                              capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as still_running:
        pytest.fail(f"`facta status --interval 0` did not exit: {str(still_running.stdout)[-300:]}")
    assert once.returncode == 0 and once.stderr == "", once.stderr
    assert once.stdout.count("store head: position") == 1
    assert once.stdout.startswith(f"store head: position {head} (at ")
    assert re.search(rf"projection\s+account_balances\s+log\s+position {head}\s+0\s+0\s+-\s", once.stdout), once.stdout
