"""The README's eventsourcing example, end to end, on SQLite and on PostgreSQL: the
eventsourcing application (PERSISTENCE_MODULE=facta.eventsourcing) -> facta's store ->
`facta relay run --once` -> Apache Kafka -> the facta projection (Kafka source) -> its
read model, and `facta audit` over the application's history.

The README's shell block is run line by line as written, in a folder holding copies of
the example's files, with three changes named where they happen: the PostgreSQL run
replaces the SQLite URL, FACTA_KAFKA_BOOTSTRAP names the test's broker, and the topic and
consumer-group prefixes are the test's own (the session's broker is shared).
"""

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
from typing import Any

import psycopg
import pytest

from tests.cli.test_cli import FACTA

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "eventsourcing_bank"
README = (ROOT / "README.md").read_text()
COMMAND = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]

ALICE = "87505248-af61-5fca-b914-b5ee3534b068"  # uuid5(NAMESPACE_URL, "/bank-accounts/alice@example.com")
BOB = "3a3ca23e-16f5-51a4-ba7e-c9dbaa1592a7"
TOPIC = "bankaccounts:BankAccount."
# The application's events in log order on the first run: (event type, stream id, version).
FIRST_RUN = [
    (TOPIC + "Opened", ALICE, 1),
    (TOPIC + "Opened", BOB, 1),
    (TOPIC + "Credited", ALICE, 2),
    (TOPIC + "Debited", ALICE, 3),  # the transfer: one save of both accounts
    (TOPIC + "Credited", BOB, 2),
]


def readme_lines() -> list[str]:
    """The eventsourcing section's shell block, comments stripped."""
    section = README.split("## eventsourcing applications on facta\n", 1)[1].split("\n## ", 1)[0]
    body = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    return [re.sub(r"\s+#.*$", "", raw).strip() for raw in body.splitlines() if raw.strip()]


def readme_rows() -> list[tuple[Any, ...]]:
    """The README's table of bank_accounts after the first run."""
    section = README.split("After the first run, `bank_accounts` holds one row per account:\n", 1)[1]
    rows = []
    for line in section.lstrip("\n").split("\n\n", 1)[0].splitlines()[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows.append((cells[0], cells[1], cells[2], int(cells[3]), int(cells[4])))
    return rows


class Shell:
    """The README's lines run in ``cwd`` with the variables they export."""

    def __init__(self, cwd: Path, env: dict[str, str], overrides: dict[str, str]) -> None:
        self.cwd, self.env, self.overrides = cwd, env, overrides

    def run(self, line: str, *, drop: tuple[str, ...] = ()) -> str:
        words = shlex.split(line)
        if words[0] == "export":
            for word in words[1:]:
                name, value = word.split("=", 1)
                self.env[name] = self.overrides.get(name, value)
            return ""
        if words[0] == "python":
            command = [sys.executable, *words[1:]]
        else:
            assert words[0] == "facta", line
            command = [*COMMAND, *words[1:]]
        env = {k: v for k, v in self.env.items() if k not in drop}
        result = subprocess.run(command, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=300,
                                check=False)
        assert result.returncode == 0, f"{line!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result.stdout


def read_rows(url: str, cwd: Path) -> list[tuple[Any, ...]]:
    query = "SELECT account_id, full_name, email, balance_cents, version FROM bank_accounts ORDER BY full_name"
    if url.startswith("sqlite"):
        with sqlite3.connect(cwd / "bank.db") as conn:
            return [tuple(row) for row in conn.execute(query)]
    with psycopg.connect(url.replace("postgresql+asyncpg://", "postgresql://")) as conn:
        return [tuple(row) for row in conn.execute(query)]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None: the README's own SQLite URL; else a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def test_the_readme_example_runs_end_to_end(tmp_path: Path, database_url: str | None, kafka_bootstrap: str,
                                            prefix: str) -> None:
    for name in ("bankaccounts.py", "bank_day.py", "bank_read_model.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("FACTA_", "PERSISTENCE_MODULE", "CIPHER_", "COMPRESSOR_", "BANKACCOUNTS_"))}
    # The test's own topics and consumer group on the session's shared broker.
    base |= {"FACTA_TOPIC_PREFIX": prefix, "FACTA_GROUP_PREFIX": f"{prefix}."}
    overrides = {"FACTA_KAFKA_BOOTSTRAP": kafka_bootstrap}
    if database_url is not None:
        overrides["FACTA_DATABASE_URL"] = database_url
    shell = Shell(tmp_path, base, overrides)

    lines = readme_lines()
    assert lines[0] == "export PERSISTENCE_MODULE=facta.eventsourcing FACTA_DATABASE_URL=sqlite:///./bank.db"
    outputs: dict[str, str] = {}
    for line in lines:
        outputs[line] = shell.run(line)
    url = shell.env["FACTA_DATABASE_URL"]

    # The application's own output: the balances eventsourcing reads back from facta's store.
    assert outputs["python bank_day.py"] == f"{ALICE} 69.50\n{BOB} 30.50\n"

    # Kafka carried the events: the projection's source is Kafka, and its rows are exact.
    listed = {p["name"]: p for p in json.loads(shell.run("facta projections list --json"))}
    rows = read_rows(url, tmp_path)
    assert rows == readme_rows() == [
        (ALICE, "Alice", "alice@example.com", 6950, 3),
        (BOB, "Bob", "bob@example.com", 3050, 2),
    ]
    assert listed["bank_account_summaries"]["source"] == "kafka", listed
    consumed = json.loads(shell.run("facta relay status --json"))
    assert consumed["lag"] == 0 and consumed["checkpoint"] == consumed["head"], consumed

    # facta audit: the events with their topics, originator ids and versions, in log order.
    page = json.loads(shell.run("facta audit events --stream-type BankAccounts --json"))
    events = page["events"]
    assert [(e["event_type"], e["stream_id"], e["version"]) for e in events] == FIRST_RUN
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 5, positions
    assert {e["stream_type"] for e in events} == {"BankAccounts"}
    assert all(e["actor"] is None and e["correlation_id"] is None and e["causation_id"] is None for e in events)
    credited = events[2]["payload"]
    assert credited["amount"] == {"_type_": "decimal_str", "_data_": "100.00"}
    assert credited["timestamp"]["_type_"] == "datetime_iso"
    assert events[0]["payload"]["originator_topic"] == "bankaccounts:BankAccount"
    table = outputs["facta audit events --stream-type BankAccounts"]
    for (event_type, stream_id, version), position in zip(FIRST_RUN, positions, strict=True):
        assert re.search(rf"^\s*{position}\s.*{stream_id}\s+{version}\s+{re.escape(event_type)}\s", table, flags=re.M), \
            (position, event_type, table)

    debits = outputs["facta audit events --type bankaccounts:BankAccount.Debited"].splitlines()
    assert len(debits) == 2 and re.match(rf"{positions[3]}\s.*{ALICE}\s+3\s+{re.escape(TOPIC)}Debited\s", debits[1]), debits

    history = outputs[f"facta audit history {ALICE}"]
    assert history.startswith(f"BankAccounts {ALICE}: 3 events\n"), history
    alice = json.loads(shell.run(f"facta audit history {ALICE} --json"))
    assert [(e["version"], e["event_type"]) for e in alice] == [(1, TOPIC + "Opened"), (2, TOPIC + "Credited"),
                                                               (3, TOPIC + "Debited")]
    assert alice[2]["payload"]["amount"] == {"_type_": "decimal_str", "_data_": "30.50"}

    # The replay rebuilt the same rows; from the store's log (no Kafka) it does too.
    replayed = json.loads(outputs["facta replay bank_account_summaries --from-position 0 --json"])
    assert replayed["events"] == 5, replayed
    shell.run("facta replay bank_account_summaries --from-position 0 --json",
              drop=("FACTA_KAFKA_BOOTSTRAP",))
    listed = {p["name"]: p for p in json.loads(shell.run("facta projections list --json",
                                                         drop=("FACTA_KAFKA_BOOTSTRAP",)))}
    assert listed["bank_account_summaries"]["source"] == "log", listed
    assert read_rows(url, tmp_path) == rows

    # A second day at the bank: the application goes on from what it stored, and so do
    # the relay and the projection (from the store's log now).
    assert shell.run("python bank_day.py") == f"{ALICE} 139.00\n{BOB} 61.00\n"
    shell.run("facta relay run --once")
    shell.run("facta projections run bank_account_summaries --once",
              drop=("FACTA_KAFKA_BOOTSTRAP",))
    assert read_rows(url, tmp_path) == [
        (ALICE, "Alice", "alice@example.com", 13900, 5),
        (BOB, "Bob", "bob@example.com", 6100, 3),
    ]


@pytest.mark.slow
def test_the_example_type_checks_with_mypy_strict(tmp_path: Path) -> None:
    """A user copying the example gets code mypy --strict accepts (eventsourcing and facta
    both ship their annotations)."""
    pytest.importorskip("mypy")
    names = ["bankaccounts.py", "bank_day.py", "bank_read_model.py"]
    for name in names:
        shutil.copy(EXAMPLE / name, tmp_path / name)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), *names],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0 and "Success: no issues found in 3 source files" in result.stdout, \
        result.stdout + result.stderr
