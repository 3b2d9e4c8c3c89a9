"""`facta audit`, run as a user runs it: the real executable on a history built through
the domain (tests/eventstore/_audit_scenario.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from facta.eventstore import EventStore, RecordedEvent

from ..eventstore._audit_scenario import ACCOUNT, DRIVER_ACCOUNT, RIDE, RIDER_ACCOUNT, build
from .test_cli import facta, one_line_error

PLUS_FIVE = timezone(timedelta(hours=5))


async def _city(url: str) -> tuple[list[RecordedEvent], list[RecordedEvent], int]:
    async with await EventStore.open(url) as store:
        scenario = await build(store)
        return await store.read_stream(ACCOUNT), await store.read_log(limit=1000), scenario.fare


def ok_json(*args: str) -> Any:
    result = facta(*args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def ok_text(*args: str) -> str:
    result = facta(*args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def z(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_history_state_and_diff(migrated_url: str) -> None:
    alice, _, _ = await _city(migrated_url)
    db = ("--database-url", migrated_url)

    listed = ok_json("audit", "history", ACCOUNT, "--json", *db)
    assert [e["version"] for e in listed] == [1, 2, 3, 4]
    assert [e["actor"] for e in listed] == ["alice", "alice", "bob", "alice"]
    assert listed[1]["payload"] == {"amount": 1000, "reference": "salary"}
    assert listed[1]["recorded_at"] == z(alice[1].recorded_at) and listed[1]["recorded_at"].endswith("Z")
    assert {"event_id", "correlation_id", "causation_id", "occurred_at", "position"} <= set(listed[0])
    table = ok_text("audit", "history", ACCOUNT, *db)
    assert table.splitlines()[0] == "account acct-alice: 4 events"
    assert "account.withdrawn" in table and "bob" in table and '"reference":"rent"' in table

    at3 = ok_json("audit", "state", ACCOUNT, "--at-version", "3", "--json", *db)
    assert at3 == {"stream_id": ACCOUNT, "stream_type": "account", "version": 3,
                   "recorded_at": z(alice[2].recorded_at),
                   "state": {"owner": "alice", "currency": "EUR", "balance": 700, "status": "open"}}
    # Exactly at version 2's time, given in +05:00: version 2, shown in UTC.
    exact = ok_json("audit", "state", ACCOUNT, "--as-of", alice[1].recorded_at.astimezone(PLUS_FIVE).isoformat(),
                    "--json", *db)
    assert (exact["version"], exact["state"]["balance"], exact["recorded_at"]) == (2, 1000, z(alice[1].recorded_at))
    now = ok_text("audit", "state", ACCOUNT, "--as-of", z(datetime.now(UTC)), *db)
    assert now.splitlines()[0].startswith("account acct-alice at version 4 (recorded ")
    assert any(line.split() == ["balance", "750"] for line in now.splitlines())
    ride = ok_json("audit", "state", RIDE, "--json", *db)
    assert (ride["version"], ride["state"]["status"], ride["state"]["driver_id"]) == (8, "ended", "driver-1")

    changed = ok_json("audit", "diff", ACCOUNT, "--from-version", "1", "--to-version", "4", "--json", *db)
    assert changed["changes"] == [{"field": "balance", "old": 0, "new": 750, "changed_by": [
        {"version": 2, "event_type": "account.deposited"}, {"version": 3, "event_type": "account.withdrawn"},
        {"version": 4, "event_type": "account.deposited"}]}]
    text = ok_text("audit", "diff", RIDE, "--from-version", "2", "--to-version", "5", *db)
    assert text.splitlines()[0] == "ride ride-audit-1: version 2 -> 5, 3 events, 3 fields changed"
    status = next(line for line in text.splitlines() if line.startswith("status"))
    assert status.split()[:3] == ["status", "offered", "in_progress"]
    assert "3 ride.accepted, 4 ride.driver_arrived, 5 ride.trip_started" in status


async def test_events_filters_formats_and_pages_then_trace(migrated_url: str) -> None:
    alice, log, fare = await _city(migrated_url)
    db = ("--database-url", migrated_url)

    page = ok_json("audit", "events", "--type", "account.deposited", "--type", "account.withdrawn",
                   "--stream-type", "account", "--actor", "alice", "--json", *db)
    assert [(e["stream_id"], e["version"]) for e in page["events"]] == [(ACCOUNT, 2), (ACCOUNT, 4)]
    assert page["cursor"] is None
    window = ok_json("audit", "events", "--since", alice[1].recorded_at.astimezone(PLUS_FIVE).isoformat(),
                     "--until", z(alice[2].recorded_at), "--json", *db)
    assert [(e["stream_id"], e["version"]) for e in window["events"]] == [(ACCOUNT, 2), (ACCOUNT, 3)]

    rows = list(csv.DictReader(io.StringIO(ok_text("audit", "events", "--correlation-id", RIDE,
                                                   "--stream-type", "account", "--csv", *db))))
    assert [(r["stream_id"], r["event_type"], r["actor"]) for r in rows] == [
        (RIDER_ACCOUNT, "account.transferred_out", "billing"), (DRIVER_ACCOUNT, "account.transferred_in", "billing")]
    assert json.loads(rows[0]["payload"])["amount"] == fare and rows[0]["recorded_at"].endswith("Z")

    # Paging: oldest first with --after-position, newest first with --before-position.
    first = facta("audit", "events", "--limit", "5", *db)
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 6
    assert first.stderr.strip() == f"more events: add --after-position {log[4].position}"
    seen: list[int] = []
    for newest_first in (False, True):
        seen, cursor = [], None
        while True:
            flags = ["--newest-first"] if newest_first else []
            if cursor is not None:
                flags += ["--before-position" if newest_first else "--after-position", str(cursor)]
            got = ok_json("audit", "events", "--limit", "7", "--json", *flags, *db)
            seen += [e["position"] for e in got["events"]]
            cursor = got["cursor"]
            if cursor is None:
                break
        expected = [r.position for r in log]
        assert seen == (expected[::-1] if newest_first else expected)
    assert ok_text("audit", "events", "--type", "no.such_type", *db).strip() == "no events match"

    traced = ok_json("audit", "trace", RIDE, "--json", *db)
    assert [e["stream_id"] for e in traced] == [RIDE] * 8 + [RIDER_ACCOUNT, DRIVER_ACCOUNT]
    assert [e["position"] for e in traced] == sorted(e["position"] for e in traced)
    assert traced[-1]["causation_id"] == traced[7]["event_id"]
    text = ok_text("audit", "trace", RIDE, *db)
    assert text.splitlines()[0] == f"correlation {RIDE}: 10 events in 3 streams"


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
async def test_every_mistake_is_one_line(migrated_url: str) -> None:
    alice, _, _ = await _city(migrated_url)
    db = ("--database-url", migrated_url)
    for command in (["history"], ["state"], ["diff", "--from-version", "1", "--to-version", "2"]):
        one_line_error(facta("audit", *command, "no-such-stream", *db), "stream 'no-such-stream' does not exist")
    one_line_error(facta("audit", "state", ACCOUNT, "--at-version", "9", *db),
                   "stream 'acct-alice' has 4 events; there is no version 9")
    one_line_error(facta("audit", "diff", ACCOUNT, "--from-version", "1", "--to-version", "9", *db),
                   "there is no version 9")
    one_line_error(facta("audit", "state", ACCOUNT, "--as-of", "2999-01-01T00:00:00+05:00", *db),
                   "time 2998-12-31T19:00:00Z is in the future")
    before = alice[0].recorded_at - timedelta(seconds=1)
    one_line_error(facta("audit", "state", ACCOUNT, "--as-of", z(before), *db),
                   f"stream 'acct-alice' did not exist at {z(before)}")
    one_line_error(facta("audit", "trace", "no-such-correlation", *db),
                   "no event has correlation id 'no-such-correlation'")
    one_line_error(facta("audit", "state", ACCOUNT, "--aggregates", "no_such_module_xyz", *db),
                   "cannot import aggregate module 'no_such_module_xyz'")

    usage = [
        (["state", ACCOUNT, "--as-of", "yesterday"], "'yesterday' is not an ISO 8601 time"),
        (["state", ACCOUNT, "--as-of", "2026-11-22T12:00:00"], "has no time zone"),
        (["events", "--since", "22/11/2026"], "is not an ISO 8601 time"),
        (["state", ACCOUNT, "--at-version", "2", "--as-of", z(datetime.now(UTC))], "not both"),
        (["events", "--json", "--csv"], "give --json or --csv, not both"),
        (["diff", ACCOUNT, "--to-version", "2"], "--from-version"),
        (["diff", ACCOUNT, "--from-version", "3", "--to-version", "2"],
         "--to-version (2) must be greater than --from-version (3)"),
        (["events", "--since", "2026-11-22T12:00:00Z", "--until", "2026-11-22T12:00:00+05:00"],
         "--since (2026-11-22T12:00:00Z) is after --until (2026-11-22T07:00:00Z)"),
    ]
    for args, needle in usage:
        result = facta("audit", *args, *db)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("facta: error: ") and needle in lines[0], (args, lines)


def test_every_audit_command_has_help_with_examples() -> None:
    top = facta("audit", "--help")
    assert top.returncode == 0 and "ISO 8601" in top.stdout
    for name in ("history", "state", "diff", "events", "trace"):
        assert name in top.stdout
        result = facta("audit", name, "--help")
        assert result.returncode == 0 and "Example" in result.stdout and "--database-url" in result.stdout, name
