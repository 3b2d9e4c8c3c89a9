"""A hypothesis fuzz of the whole `facta` command line (issue 10, "Done means").

Every command that works on a store (all but `demo`, `dev broker` and `relay run`, which
start or reach other processes) is driven through click's CliRunner with generated ids,
names, numbers and times, on SQLite and PostgreSQL. It fails on any traceback (an
exception escaping the command, or "Traceback" in its output), on an exit code other
than 0, 1 or 2, on a failure that is not one `facta: error:` line, and on a failure that
changed the store (a partial write).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from facta.eventstore import EventStore
from facta.eventstore.schema import events, projection_checkpoints, projection_skips, projections, relay_checkpoints
from facta.projections.reference import REFERENCE_PROJECTIONS
from facta.replay.cli import DatabaseURL, Revision, Seconds, Text, UtcTime, WholeNumber

from ..eventstore._audit_scenario import ACCOUNT, RIDE, RIDER_ACCOUNT
from .test_cli_edges import city, commands, invoke, valued_params

__all__ = ["city"]  # the fixture, used here

SKIPPED_COMMANDS = {("demo",), ("dev", "broker"), ("relay", "run")}
NOT_FUZZED = {"database_url", "kafka_bootstrap", "projection_modules", "aggregate_modules"}
NOT_FLAGS = {"verbose", "help"}  # -v logs to stderr by design
KNOWN_TEXT = [ACCOUNT, RIDE, RIDER_ACCOUNT, "account", "ride", "account.deposited", "ride.trip_ended", "alice",
              "billing", "open-alice", "default", "facta", "x"]
PROJECTIONS = [p.name for p in REFERENCE_PROJECTIONS]
COMMANDS = [(path, command) for path, command in commands() if tuple(path) not in SKIPPED_COMMANDS]

any_text = st.one_of(st.text(st.characters(codec=None, exclude_categories=()), max_size=300),
                     st.sampled_from(["a\x00b", "\udcff", "x" * 256, "\u00e9\U0001f600", "-1", "'; drop table x; --"]))
numbers = st.one_of(
    st.integers(-3, 3), st.integers(-(2**70), 2**70), st.sampled_from([2**31 - 1, 2**31, 2**63 - 1, 2**63]),
).map(str)
junk = st.one_of(any_text, st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "1.5", "0x10", "-0"]))
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
times = st.one_of(
    st.builds(lambda d, o: d.replace(tzinfo=timezone(o)).isoformat(), st.datetimes(), offsets),
    st.builds(lambda d: d.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
              st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))),
    st.datetimes().map(lambda d: d.isoformat()),  # no time zone
)


def value_for(param: click.Parameter) -> st.SearchStrategy[str]:
    kind = param.type
    if isinstance(kind, WholeNumber):
        near = st.one_of(st.integers(kind.low - 2, kind.low + 20), st.integers(kind.high - 2, kind.high + 2)).map(str)
        return st.one_of(near, numbers, junk)
    if isinstance(kind, Seconds):
        # Legal values stay short: a command that waits must not wait long.
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.floats(-1, 2).map(str), junk)
    if isinstance(kind, UtcTime):
        return st.one_of(times, junk)
    if isinstance(kind, Revision):
        return st.one_of(st.sampled_from(["head", "0001", "0002", "0003"]), junk)
    if isinstance(kind, Text) and "projection" in kind.what:
        return st.one_of(st.sampled_from(PROJECTIONS), junk)
    if isinstance(kind, (Text, DatabaseURL)):
        return st.one_of(st.sampled_from(KNOWN_TEXT), junk)
    if isinstance(kind, click.Choice):
        return st.sampled_from([str(c) for c in kind.choices])
    return junk


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path, command = draw(st.sampled_from(COMMANDS))
    args = list(path)
    for param in valued_params(command):
        if param.name in NOT_FUZZED:
            continue
        if isinstance(param, click.Argument):
            count = draw(st.integers(1, 2)) if param.nargs == -1 else (1 if param.required else draw(st.integers(0, 1)))
            args += [draw(value_for(param)) for _ in range(count)]
        elif param.required or draw(st.booleans()):
            args.append(f"{param.opts[-1]}={draw(value_for(param))}")
    for param in command.params:
        if isinstance(param, click.Option) and param.is_flag and param.name not in NOT_FLAGS and draw(st.booleans()):
            args.append(param.opts[-1])
    if path == ["projections", "run"] and "--once" not in args:
        args.append("--once")  # otherwise it runs until stopped
    return args


positions = st.one_of(st.integers(0, 40), st.integers(2**63 - 3, 2**63 + 1), st.integers(-2, 0)).map(str)
recent = st.builds(lambda d, o: d.replace(tzinfo=timezone(o)).isoformat(),
                   st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)), offsets)
ids = st.one_of(st.sampled_from(KNOWN_TEXT), any_text)


@st.composite
def focused_lines(draw: st.DrawFn) -> list[str]:
    """Commands with mostly legal values, so generated input reaches the store."""
    name = draw(st.sampled_from(PROJECTIONS))
    flags = draw(st.lists(st.sampled_from(["--json", "--dry-run"]), unique=True))
    return draw(st.sampled_from([
        ["replay", name, f"--from-position={draw(positions)}", *flags],
        ["replay", name, f"--from-time={draw(st.one_of(recent, times))}", *flags],
        ["projections", "skip", name, f"--position={draw(positions)}", f"--reason={draw(any_text)}"],
        ["audit", "state", draw(ids), f"--at-version={draw(positions)}"],
        ["audit", "state", draw(ids), f"--as-of={draw(st.one_of(recent, times))}", "--json"],
        ["audit", "diff", draw(ids), f"--from-version={draw(positions)}", f"--to-version={draw(positions)}"],
        ["audit", "events", f"--type={draw(ids)}", f"--since={draw(recent)}", f"--until={draw(recent)}"],
        ["audit", "events", f"--after-position={draw(positions)}", f"--actor={draw(ids)}", "--csv"],
        ["audit", "events", f"--before-position={draw(positions)}", "--newest-first", f"--correlation-id={draw(ids)}"],
        ["audit", "history", draw(ids)],
        ["audit", "trace", draw(ids), "--json"],
        ["relay", "status", f"--name={draw(ids)}"],
    ]))


def _fingerprint_rows(conn: Any) -> tuple[Any, ...]:
    return (
        conn.execute(select(func.count(), func.max(events.c.position))).one(),
        conn.execute(select(projection_skips.c.projection, projection_skips.c.position)
                     .order_by(projection_skips.c.projection, projection_skips.c.position)).all(),
        conn.execute(select(relay_checkpoints.c.name, relay_checkpoints.c.position)
                     .order_by(relay_checkpoints.c.name)).all(),
        conn.execute(select(projections.c.name, projections.c.generation).order_by(projections.c.name)).all(),
        conn.execute(select(projection_checkpoints.c.projection, projection_checkpoints.c.slot,
                            projection_checkpoints.c.position)
                     .order_by(projection_checkpoints.c.projection, projection_checkpoints.c.slot)).all(),
    )


def fingerprint(url: str) -> tuple[Any, ...]:
    async def read() -> tuple[Any, ...]:
        async with await EventStore.open(url) as store:
            return await store.database.read(_fingerprint_rows)

    return asyncio.run(read())


@pytest.mark.slow
def test_fuzz_every_command(city: str) -> None:
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.one_of(command_lines(), focused_lines()))
    def check(args: list[str]) -> None:
        before = fingerprint(city)
        result = invoke([*args, "--database-url", city])
        shown = f"facta {' '.join(map(repr, args))}"
        assert result.exception is None or isinstance(result.exception, SystemExit), (shown, result.exception)
        assert "Traceback" not in result.output, (shown, result.output)
        assert result.exit_code in (0, 1, 2), (shown, result.exit_code, result.output)
        if result.exit_code != 0:
            lines = result.stderr.strip().splitlines()
            errors = [line for line in lines if line.startswith("facta: error: ")]
            assert len(errors) == 1 and lines[-1] == errors[0], (shown, result.stderr)
            assert fingerprint(city) == before, (shown, "a failed command changed the store")

    check()
