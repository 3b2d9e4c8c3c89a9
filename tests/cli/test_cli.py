"""The `facta` command line, run as a user runs it: a real process, real databases."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

FACTA = shutil.which("facta") or ""


def facta(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]
    full_env = {k: v for k, v in os.environ.items() if k != "FACTA_DATABASE_URL"} | (env or {})
    return subprocess.run([*command, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, check=False)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("facta: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_help_lists_commands_and_every_command_has_help() -> None:
    top = facta("--help")
    assert top.returncode == 0
    for name in ("demo", "db", "relay", "dev"):
        assert name in top.stdout
    for command in (["demo"], ["db"], ["db", "upgrade"], ["db", "current"], ["relay"], ["relay", "run"],
                    ["relay", "status"], ["dev"], ["dev", "broker"]):
        result = facta(*command, "--help")
        assert result.returncode == 0 and "Usage: facta" in result.stdout, command
    assert facta("--version").stdout.strip().startswith("facta, version ")


def test_db_upgrade_then_current(tmp_path: Path, postgres_url: str) -> None:
    for url in (f"sqlite:///{tmp_path / 'x.db'}", postgres_url):
        before = facta("db", "current", "--json", "--database-url", url)
        assert json.loads(before.stdout) == {"current": None, "head": "0003", "up_to_date": False}
        first = facta("db", "upgrade", "--database-url", url)
        assert first.returncode == 0 and "upgraded from nothing to revision 0003" in first.stdout
        again = facta("db", "upgrade", "--database-url", url)
        assert again.returncode == 0 and "already at revision 0003" in again.stdout
        assert json.loads(facta("db", "current", "--json", "--database-url", url).stdout)["up_to_date"] is True


def test_database_url_comes_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    assert facta("db", "upgrade", env={"FACTA_DATABASE_URL": url}).returncode == 0
    assert (tmp_path / "env.db").exists()


@pytest.mark.parametrize(("url", "needles"), [
    ("nonsense", ["invalid database URL 'nonsense'"]),
    ("mysql://x/y", ["unsupported database 'mysql'"]),
    ("postgresql+psycopg2://localhost/x", ["driver 'psycopg2'", "use postgresql+asyncpg"]),
    ("sqlite:////no/such/folder/x.db", ["folder '/no/such/folder' does not exist"]),
    ("postgresql://127.0.0.1:1/facta", ["cannot reach PostgreSQL at 127.0.0.1:1/facta", "Connect call failed"]),
    ("postgresql://127.0.0.1/facta_no_such_database", ['database "facta_no_such_database" does not exist']),
])
def test_bad_database_urls_give_one_line(url: str, needles: list[str]) -> None:
    one_line_error(facta("db", "upgrade", "--database-url", url), *needles)


def test_relay_without_or_with_a_bad_bootstrap_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert facta("db", "upgrade", "--database-url", url).returncode == 0
    one_line_error(facta("relay", "run", "--once", "--database-url", url), "no Kafka bootstrap address")
    one_line_error(facta("relay", "run", "--once", "--database-url", url, "--kafka-bootstrap", "nohost"),
                   "invalid Kafka bootstrap address 'nohost'")
    one_line_error(
        facta("relay", "run", "--once", "--database-url", url, "--kafka-bootstrap", "127.0.0.1:1",
              "--kafka-timeout", "0.5"),
        "cannot reach Kafka at 127.0.0.1:1",
    )
    status = facta("relay", "status", "--json", "--database-url", url)
    assert json.loads(status.stdout)["lag"] == 0


def test_usage_errors_exit_2() -> None:
    result = facta("demo", "--rides", "0")
    assert result.returncode == 2 and "Invalid value for '--rides'" in result.stderr
    assert facta("no-such-command").returncode == 2


def test_demo_runs_on_the_embedded_default_and_continues_the_city(tmp_path: Path) -> None:
    first = facta("demo", "--rides", "30", "--seed", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "facta.db").exists()
    assert "rides completed" in first.stdout and "events appended" in first.stdout
    for table in ("ride board", "account balances", "driver earnings"):
        assert table in first.stdout, table
    second = facta("demo", "--rides", "20", "--seed", "1", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["rides_completed"] + summary["rides_cancelled"] == 20
    assert summary["events_appended"] > 20 * 3
    assert summary["log_head"] > summary["events_appended"], "the second run continued the same store"
    # The commands it suggests, with ids from this run, all work.
    suggested = first.stdout.split("try next:\n", 1)[1].split()
    commands = " ".join(suggested).split("facta ")[1:]
    assert len(commands) >= 5 and summary["next_commands"][0] == "facta projections list"
    for command in commands:
        tried = facta(*shlex.split(command), cwd=tmp_path)
        assert tried.returncode == 0, (command, tried.stderr)
    # After two runs, the read models equal a full replay of the log, and billing charged
    # each completed trip once (a replay charges nothing).
    models = ("account_balances", "ride_board", "driver_earnings", "billing_charges")

    def read_models() -> dict[str, list[tuple[object, ...]]]:
        with sqlite3.connect(tmp_path / "facta.db") as conn:
            return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in models}

    def charges() -> int:
        with sqlite3.connect(tmp_path / "facta.db") as conn:
            return int(conn.execute("SELECT count(*) FROM facta_events WHERE actor = 'billing'").fetchone()[0])

    before, charged = read_models(), charges()
    completed = len([r for r in before["ride_board"] if r[2] == "completed"])
    assert charged == 2 * completed == 2 * len(before["billing_charges"])
    for name in ("account_balances", "ride_board", "driver_earnings", "billing"):
        replayed = facta("replay", name, "--from-position", "0", cwd=tmp_path)
        assert replayed.returncode == 0, replayed.stderr
    assert read_models() == before and charges() == charged
