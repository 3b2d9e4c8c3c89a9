"""`--json` and `--csv` output stays byte for byte what it was (issue 11, item 1).

The files in ``golden/`` were written by the command line before it became a package
(replay/cli.py, commit 6ced83e), on the store :func:`seeded_store` builds: a seeded demo
city whose ids and times are then set to fixed values (the only parts of the store that
differ between two runs). Every command that has ``--json`` or ``--csv`` and reads a
store is run on it and its stdout compared with the file, as bytes.

``FACTA_WRITE_GOLDEN=1 python -m pytest tests/cli/test_output_bytes.py`` rewrites the
files (with the facta that python imports).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from facta.replay.cli import cli
from facta.replay.demo import run_demo

GOLDEN = Path(__file__).parent / "golden"
URL = "sqlite+aiosqlite:///golden.db"
IDS = uuid.UUID("0b9c2f4e-8a7d-4e21-9c3b-5f6a7d8e9f01")

#: (file name, arguments), in order: the commands that write (a skip, a downgrade) come after
#: the ones that read what they change.
COMMANDS: list[tuple[str, list[str]]] = [
    ("db_current.json", ["db", "current", "--json"]),
    ("db_upgrade.json", ["db", "upgrade", "--json"]),
    ("projections_list.json", ["projections", "list", "--json"]),
    ("replay_dry_run_log.json", ["replay", "ride_board", "--from-position", "0", "--dry-run", "--json"]),
    ("replay_dry_run_slice.json", ["replay", "account_balances", "--from-position", "40", "--dry-run", "--json"]),
    ("audit_history.json", ["audit", "history", "ride-00001", "--json"]),
    ("audit_state_version.json", ["audit", "state", "acct-rider-001", "--at-version", "2", "--json"]),
    ("audit_state_time.json", ["audit", "state", "acct-rider-001", "--as-of", "2026-11-22T10:01:00Z", "--json"]),
    ("audit_diff.json", ["audit", "diff", "ride-00001", "--from-version", "1", "--to-version", "3", "--json"]),
    ("audit_events.json", ["audit", "events", "--limit", "7", "--json"]),
    ("audit_events_page.json", ["audit", "events", "--after-position", "7", "--limit", "5", "--json"]),
    ("audit_events_newest.json", ["audit", "events", "--newest-first", "--stream-type", "account", "--limit", "4",
                                  "--json"]),
    ("audit_events.csv", ["audit", "events", "--limit", "30", "--csv"]),
    ("audit_events_billing.csv", ["audit", "events", "--actor", "billing", "--csv"]),
    ("audit_trace.json", ["audit", "trace", "ride-00001", "--json"]),
    ("relay_status.json", ["relay", "status", "--json"]),
    ("projections_skip.json", ["projections", "skip", "driver_earnings", "--position", "26", "--reason",
                               "a test skip", "--actor", "operator", "--json"]),
    ("projections_skip_again.json", ["projections", "skip", "driver_earnings", "--position", "26", "--actor",
                                     "operator", "--json"]),
    ("projections_skipped.json", ["projections", "skipped", "--json"]),
    ("projections_skipped_one.json", ["projections", "skipped", "driver_earnings", "--json"]),
    ("projections_list_after_skip.json", ["projections", "list", "--json"]),
    ("db_downgrade.json", ["db", "downgrade", "0002", "--json"]),
    ("db_current_after_downgrade.json", ["db", "current", "--json"]),
]


def _fix_ids_and_times(path: Path) -> None:
    """Give every event a fixed id (from its position) and fixed times (10:00 UTC on
    2026-11-22 plus its position in seconds), causation ids following their events, and
    every projection and skip row fixed times: what differs between two demo runs."""
    conn = sqlite3.connect(path)
    try:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                "AND tbl_name = 'facta_events'").fetchall()
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        rows = conn.execute("SELECT position, event_id, stream_id, event_type, payload FROM facta_events"
                            " ORDER BY position").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        keys = {subject: bytes(key) for subject, key in conn.execute("SELECT subject, data_key FROM facta_subject_keys")
                } if "facta_subject_keys" in tables else {}
        new_ids = {}
        for position, old, stream_id, event_type, payload in rows:
            new = uuid.uuid5(IDS, str(position))
            new_ids[str(uuid.UUID(old))] = str(new)
            at = f"2026-11-22 10:{position // 60:02d}:{position % 60:02d}.000000"
            if uuid.UUID(old) != new:
                payload = _reseal(payload, uuid.UUID(old), new, stream_id, event_type, keys)
            conn.execute("UPDATE facta_events SET event_id = ?, recorded_at = ?, occurred_at = ?, payload = ?"
                         " WHERE position = ?", (new.hex, at, at, payload, position))
        for old, new in new_ids.items():
            conn.execute("UPDATE facta_events SET causation_id = ? WHERE causation_id = ?", (new, old))
        for _, sql in triggers:
            conn.execute(sql)
        fixed = {"facta_projections": "updated_at = '2026-11-22 11:00:00.000000'",
                 "facta_projection_skips": "skipped_at = '2026-11-22 11:30:00.000000', event_id = (SELECT event_id "
                                           "FROM facta_events WHERE facta_events.position = facta_projection_skips.position)",
                 "facta_snapshots": "recorded_at = '2026-11-22 11:00:00.000000'"}
        for table, assignments in fixed.items():
            if table in tables:
                conn.execute(f"UPDATE {table} SET {assignments}")
        conn.commit()
    finally:
        conn.close()


def _reseal(payload: str, old: uuid.UUID, new: uuid.UUID, stream_id: str, event_type: str,
            keys: dict[str, bytes]) -> str:
    """``payload`` with its personal data sealed again for the event's new id: a sealed
    field's associated data binds it to its event id (facta.eventstore.personal_data)."""
    from facta.domain import default_registry
    from facta.eventstore.personal_data import PREFIX, _event_aad, _Keys

    if PREFIX not in payload:
        return payload
    data = json.loads(payload)
    for field, subject_field in default_registry.get(event_type).__personal_data__:
        token = data.get(field)
        if isinstance(token, str) and token.startswith(PREFIX):
            subject = stream_id if subject_field is None else data[subject_field]
            opener = _Keys(keys, [subject], create=True)
            plain = opener.open(subject, token, _event_aad(old, field, subject), "golden")
            data[field] = opener.seal(subject, plain, _event_aad(new, field, subject), os.urandom(12))
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def seeded_store(folder: Path) -> None:
    """A seeded demo city in ``folder``/golden.db with fixed ids and times."""
    os.chdir(folder)
    asyncio.run(run_demo(URL, rides=6, riders=3, drivers=2, telemetry=4, seed=7))
    _fix_ids_and_times(folder / "golden.db")


def test_json_and_csv_output_is_byte_for_byte_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("FACTA_DATABASE_URL", "FACTA_KAFKA_BOOTSTRAP", "FACTA_PROJECTIONS", "FACTA_AGGREGATES"):
        monkeypatch.delenv(name, raising=False)
    seeded_store(tmp_path)
    write = os.environ.get("FACTA_WRITE_GOLDEN") == "1"
    GOLDEN.mkdir(exist_ok=True)
    differing = []
    for file_name, args in COMMANDS:
        result = CliRunner().invoke(cli, [*args, "--database-url", URL], catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        _fix_ids_and_times(tmp_path / "golden.db")  # a skip's time, say
        out = result.stdout_bytes
        assert out.strip(), args
        if write:
            (GOLDEN / file_name).write_bytes(out)
        elif (GOLDEN / file_name).read_bytes() != out:
            differing.append(file_name)
    assert not differing, f"output changed: {differing}"
    assert len(COMMANDS) == len({name for name, _ in COMMANDS})
