"""The `facta` command line, run as a user runs it: a real process, real databases."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from facta import migrations
from tests.conftest import POSTGRES_ADMIN

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


def command_paths() -> list[list[str]]:
    """Every command of the `facta` tree, by the words that run it."""
    import click

    from facta.replay.cli import cli

    def walk(command: click.Command, path: list[str]) -> list[list[str]]:
        if isinstance(command, click.Group):
            return [p for name, sub in sorted(command.commands.items()) for p in walk(sub, [*path, name])]
        return [path]

    return walk(cli, [])


def test_help_lists_commands_and_every_command_has_help_with_examples() -> None:
    top = facta("--help")
    assert top.returncode == 0
    paths = command_paths()
    assert len(paths) >= 16, paths
    for group in {p[0] for p in paths}:
        assert f"  {group} " in top.stdout, group
    for path in paths:
        result = facta(*path, "--help")
        assert result.returncode == 0 and f"Usage: facta {' '.join(path)}" in result.stdout, path
        assert re.search(r"^  Examples?:$", result.stdout, flags=re.M), f"`facta {' '.join(path)} --help` has no example"
    assert re.fullmatch(r"facta, version \d+\.\d+\.\d+\n", facta("--version").stdout)


def test_every_option_has_help_and_every_command_that_prints_data_has_json() -> None:
    """--json wherever data is printed: everything but the broker, which prints where it
    listens and runs in the foreground."""
    import click

    from facta.replay.cli import cli

    for path in command_paths():
        command: click.Command = cli
        for word in path:
            assert isinstance(command, click.Group)
            command = command.commands[word]
        undocumented = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not p.help]
        assert not undocumented, f"`facta {' '.join(path)}` options without help: {undocumented}"
        if path != ["dev", "broker"]:
            assert "--json" in {o for p in command.params for o in p.opts}, f"`facta {' '.join(path)}` has no --json"


def test_db_upgrade_then_current(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'x.db'}"
    # A missing SQLite file is not created by a read-only command: one line says how.
    one_line_error(facta("db", "current", "--json", "--database-url", sqlite_url),
                   f"no database file '{tmp_path / 'x.db'}'", f"facta db upgrade --database-url {sqlite_url}")
    assert not (tmp_path / "x.db").exists()
    before = facta("db", "current", "--json", "--database-url", postgres_url)
    head = migrations.head()
    assert json.loads(before.stdout) == {"current": None, "head": head, "up_to_date": False}
    for url in (sqlite_url, postgres_url):
        first = facta("db", "upgrade", "--database-url", url)
        assert first.returncode == 0 and f"upgraded from nothing to revision {head}" in first.stdout
        again = facta("db", "upgrade", "--database-url", url)
        assert again.returncode == 0 and f"already at revision {head}" in again.stdout
        assert json.loads(facta("db", "current", "--json", "--database-url", url).stdout)["up_to_date"] is True


def test_database_url_comes_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    assert facta("db", "upgrade", env={"FACTA_DATABASE_URL": url}).returncode == 0
    assert (tmp_path / "env.db").exists()


def _on_test_server(*, database: str | None = None, user: str | None = None) -> str:
    """The test server's URL (FACTA_TEST_POSTGRES) with another database or user."""
    parts = urlsplit(POSTGRES_ADMIN)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rpartition('@')[2]}"
    path = parts.path if database is None else f"/{database}"
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


@pytest.mark.parametrize("url", ["nonsense", "mysql://x/y", "postgresql+psycopg2://localhost/x"])
def test_malformed_database_urls_are_usage_errors(url: str) -> None:
    """A URL facta cannot use is refused while parsing options (exit 2), before any I/O."""
    result = facta("db", "upgrade", "--database-url", url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("facta: error: Invalid value for '--database-url': ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("url", "needles"), [
    ("sqlite:////no/such/folder/x.db", ["folder '/no/such/folder' does not exist"]),
    ("postgresql://127.0.0.1:1/facta", ["cannot reach PostgreSQL at 127.0.0.1:1/facta", "Connect call failed"]),
    (_on_test_server(database="facta_no_such_database"), ['database "facta_no_such_database" does not exist']),
    (_on_test_server(user="facta_no_such_role"), ['role "facta_no_such_role" does not exist']),
])
def test_bad_database_urls_give_one_line(url: str, needles: list[str]) -> None:
    one_line_error(facta("db", "upgrade", "--database-url", url), *needles)


def test_relay_without_or_with_a_bad_bootstrap_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert facta("db", "upgrade", "--database-url", url).returncode == 0
    one_line_error(facta("relay", "run", "--once", "--database-url", url), "no Kafka bootstrap address")
    bad = facta("relay", "run", "--once", "--database-url", url, "--kafka-bootstrap", "nohost")
    assert bad.returncode == 2, bad.stderr  # a usage error, refused while parsing the option
    assert len(bad.stderr.strip().splitlines()) == 1 and "invalid Kafka bootstrap address 'nohost'" in bad.stderr
    one_line_error(
        facta("relay", "run", "--once", "--database-url", url, "--kafka-bootstrap", "127.0.0.1:1",
              "--kafka-timeout", "0.5"),
        "cannot reach Kafka at 127.0.0.1:1",
    )
    status = facta("relay", "status", "--json", "--database-url", url)
    assert json.loads(status.stdout)["lag"] == 0


def test_relay_options_out_of_range_are_one_line_usage_errors_naming_the_value() -> None:
    for option, value in (("--replication-factor", "0"), ("--kafka-request-timeout", "0.2"), ("--partitions", "0")):
        result = facta("relay", "run", "--once", "--kafka-bootstrap", "127.0.0.1:1", option, value)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (option, result.stderr)
        assert lines[0].startswith("facta: error: ") and option in lines[0] and value in lines[0], lines[0]


def test_usage_errors_exit_2_with_one_line_everywhere() -> None:
    result = facta("demo", "--rides", "0")
    assert result.returncode == 2 and "Invalid value for '--rides'" in result.stderr
    mistakes = [["no-such-command"], ["db", "downgrade"], ["audit", "nothing"]]
    mistakes += [[*path, "--no-such-option"] for path in command_paths()]
    for words in mistakes:
        result = facta(*words)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (words, result.returncode, result.stderr)
        assert lines[0].startswith("facta: error: ") and words[-1] in lines[0], (words, lines[0])
        assert "--help' " not in lines[0] and lines[0].endswith("--help')"), lines[0]


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
