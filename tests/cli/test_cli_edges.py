"""Every option and argument of every `facta` command against extreme, negative,
non-finite and malformed values (issue 10, items 10, 13, 14 and 17).

A bad value is a usage error: exit 2, one line on stderr naming the option and the value,
before any I/O (nothing is created or written). A legal extreme value gives the right
result, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from facta import migrations
from facta.eventstore import EventStore
from facta.eventstore.audit import utc_text
from facta.replay import cli as cli_module
from facta.replay.cli import (
    MAX_POSITION,
    MAX_VERSION,
    DatabaseURL,
    FilePath,
    Folder,
    KafkaBootstrap,
    Revision,
    Seconds,
    Text,
    UtcTime,
    WholeNumber,
    cli,
)
from tests.conftest import migrate

from ..eventstore._audit_scenario import ACCOUNT, build
from .test_cli import facta, one_line_error

CHECKED_TYPES = (WholeNumber, Seconds, UtcTime, Text, DatabaseURL, KafkaBootstrap, Revision, Folder, FilePath, click.Choice)


def commands() -> Iterator[tuple[list[str], click.Command]]:
    def walk(command: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    yield from walk(cli, [])


def valued_params(command: click.Command) -> list[click.Parameter]:
    """The options and arguments that take a value (not flags, not --help)."""
    return [p for p in command.params
            if not (isinstance(p, click.Option) and (p.is_flag or p.is_bool_flag)) and p.name != "help"]


def invoke(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, args, env={"FACTA_DATABASE_URL": None, **(env or {})}, prog_name="facta")


def test_every_option_and_argument_has_a_checking_type() -> None:
    """No option reads a bare str, int or float: each goes through one of the CLI's types."""
    unchecked = [(path, p.name, type(p.type).__name__) for path, command in commands()
                 for p in valued_params(command) if not isinstance(p.type, CHECKED_TYPES)]
    assert not unchecked, unchecked


def bad_values(kind: click.ParamType) -> list[str]:
    if isinstance(kind, WholeNumber):
        return [str(kind.low - 1), str(kind.high + 1), "9" * 40, "-" + "9" * 40, "1.5", "nan", "0x10", "", "ten"]
    if isinstance(kind, Seconds):
        return ["nan", "inf", "-inf", "-1", str(kind.high * 10), "1e400", "soon"]
    if isinstance(kind, UtcTime):
        return ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+01:00", "2026-11-22T12:00:00", "yesterday", "",
                "2026-11-22T12:00:00+05:30:30", "2026-11-22T12:00:00.5-00:00:01.5"]
    if isinstance(kind, DatabaseURL):
        return ["", "  ", "sqlite:///a\x00b.db", "postgresql://h/x?foo=bar", "sqlite:///x.db?timeout=abc",
                "postgresql://h/x?prepared_statement_cache_size=-5", "postgresql://127.0.0.1:99999/x"]
    if isinstance(kind, KafkaBootstrap):
        return ["127.0.0.1:99999", "127.0.0.1:0", "nohost", ":9092", "a:1,,b:2", "::1:9092", "[::1:9092", "a b:1",
                "a\x00b:1"]
    if isinstance(kind, Revision):
        return ["nonsense", "", "a\x00b"]
    if isinstance(kind, Folder):
        return ["a\x00b", "\udcff"]
    if isinstance(kind, Text):
        values = ["a\x00b", "\udcff"]
        if kind.max_length is not None:
            values.append("x" * (kind.max_length + 1))
        return values
    return []


def _placeholder(param: click.Parameter) -> list[str]:
    if isinstance(param.type, WholeNumber):
        return [str(max(param.type.low, 1))]
    if isinstance(param.type, Revision):
        return [param.type.alias]
    if isinstance(param.type, Seconds):
        return [f"{max(param.type.low, 1):g}"]
    return ["x"]


def _cases() -> Iterator[Any]:
    for path, command in commands():
        arguments = [p for p in command.params if isinstance(p, click.Argument) and p.required]
        for param in valued_params(command):
            for value in bad_values(param.type):
                before: list[str] = []
                for argument in arguments:
                    before += [value] if argument is param else _placeholder(argument)
                if isinstance(param, click.Argument):
                    args = [*path, *before] if param.required else [*path, *before, value]
                    name = param.human_readable_name
                else:
                    args = [*path, *before, f"{param.opts[0]}={value}"]
                    name = param.opts[0]
                yield pytest.param(args, name, value, id=f"{' '.join(path)} {name}={value[:20]!r}")


@pytest.mark.parametrize(("args", "name", "value"), list(_cases()))
def test_a_bad_value_is_a_one_line_usage_error_naming_option_and_value(
    args: list[str], name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facta: error: "), result.stderr
    assert f"'{name}'" in lines[0] or f"'[{name}]'" in lines[0], (name, lines[0])
    shown = cli_module._clip(value)
    assert shown in lines[0] or repr(shown)[1:-1] in lines[0] or (value.strip() and value.strip() in lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == [], "a usage error created files"


@pytest.mark.parametrize("path", [path for path, command in commands()
                                  if any(p.name == "database_url" for p in command.params)],
                         ids=" ".join)
def test_an_empty_facta_database_url_is_refused(path: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    command: Any = cli
    for word in path:
        command = command.commands[word]
    args = list(path)
    for p in command.params:
        if isinstance(p, click.Argument) and p.required:
            args += _placeholder(p)
        elif isinstance(p, click.Option) and p.required:
            args += [p.opts[0], *_placeholder(p)]
    result = invoke(args, env={"FACTA_DATABASE_URL": ""})
    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "FACTA_DATABASE_URL is set but empty" in line and "'--database-url'" in line
    assert not (tmp_path / "facta.db").exists()


@pytest.mark.parametrize("args", [
    ["db", "current"], ["audit", "history", "x"], ["audit", "state", "x"], ["audit", "events"],
    ["audit", "diff", "x", "--from-version", "0", "--to-version", "1"], ["audit", "trace", "x"],
    ["projections", "list"], ["projections", "skipped"], ["projections", "run", "billing", "--once"],
    ["projections", "skip", "billing", "--position", "1"], ["replay", "billing", "--from-position", "0", "--dry-run"],
    ["replay", "billing", "--from-position", "0"], ["relay", "status"],
], ids=" ".join)
def test_a_missing_sqlite_file_is_refused_not_created(args: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    result = invoke([*args, "--database-url", url])
    assert result.exit_code == 1, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line == (f"facta: error: no database file '{tmp_path / 'missing.db'}': create it with "
                    f"`facta db upgrade --database-url {url}`")
    assert list(tmp_path.iterdir()) == []


# -- legal extremes give the right answer, on both dialects ------------------------------------


@pytest.fixture
def city(backend_url: str) -> str:
    """A migrated database (SQLite and PostgreSQL) with the audit scenario's history."""

    async def setup() -> None:
        await migrate(backend_url)
        async with await EventStore.open(backend_url) as store:
            await build(store)

    asyncio.run(setup())
    return backend_url


def _json(args: list[str]) -> Any:
    result = invoke(args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def _fails(args: list[str], needle: str) -> None:
    result = invoke(args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, (args, result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("facta: error: ") and needle in line, line


def _log(url: str) -> list[int]:
    async def read() -> list[int]:
        async with await EventStore.open(url) as store:
            return [r.position for r in await store.read_log(limit=10_000)]

    return asyncio.run(read())


def test_legal_extremes_give_the_right_answer(city: str) -> None:
    db = ["--database-url", city]
    positions = _log(city)
    head = positions[-1]
    # Versions: the largest one is legal and beyond the stream's end.
    _fails(["audit", "state", ACCOUNT, "--at-version", str(MAX_VERSION), *db],
           f"stream 'acct-alice' has 4 events; there is no version {MAX_VERSION}")
    _fails(["audit", "diff", ACCOUNT, "--from-version", "0", "--to-version", str(MAX_VERSION), *db],
           f"there is no version {MAX_VERSION}")
    # Positions: the largest one is legal.
    everything = _json(["audit", "events", "--limit", "10000", "--json", *db])["events"]
    assert [e["position"] for e in everything] == positions
    assert _json(["audit", "events", "--after-position", str(MAX_POSITION), "--json", *db]) == \
        {"events": [], "cursor": None}
    newest = _json(["audit", "events", "--before-position", str(MAX_POSITION), "--newest-first", "--limit", "1",
                    "--json", *db])
    assert [e["position"] for e in newest["events"]] == [head] and newest["cursor"] == head
    _fails(["projections", "skip", "billing", "--position", str(MAX_POSITION), *db], str(MAX_POSITION))
    assert _json(["projections", "skipped", "--json", *db]) == []
    # Times at the edges of what a datetime holds.
    since = _json(["audit", "events", "--since", "0001-01-01T00:00:00Z", "--limit", "10000", "--json", *db])
    assert [e["position"] for e in since["events"]] == positions
    until = _json(["audit", "events", "--until", "9999-12-31T23:59:59.999999Z", "--limit", "10000", "--json", *db])
    assert [e["position"] for e in until["events"]] == positions
    _fails(["audit", "state", ACCOUNT, "--as-of", "0001-01-01T00:00:00Z", *db],
           "stream 'acct-alice' did not exist at 0001-01-01T00:00:00Z")
    _fails(["audit", "state", ACCOUNT, "--as-of", "9999-12-31T23:59:59Z", *db], "is in the future")
    plan = _json(["replay", "billing", "--from-time", "0001-01-01T00:00:00Z", "--dry-run", "--json", *db])
    assert (plan["start"], plan["end"]) == (0, head), plan  # everything
    # A time after the last event (and not in the future): zero events to replay.
    last = max(datetime.fromisoformat(e["recorded_at"]) for e in everything)
    after_last = utc_text(last + timedelta(microseconds=1))
    plan = _json(["replay", "billing", "--from-time", after_last, "--dry-run", "--json", *db])
    assert plan["events"] == 0 and plan["first_position"] is None, plan
    slice_flag = ["--slice"] if any("--slice" in p.opts for p in cli.commands["replay"].params) else []
    done = _json(["replay", "billing", "--from-time", after_last, *slice_flag, "--json", *db])
    assert done["events"] == 0
    # Revisions: the ones facta has, by id.
    assert _json(["db", "upgrade", "--revision", "0003", "--json", *db])["after"] == migrations.head()  # never down


def test_unknown_names_say_so(city: str) -> None:
    db = ["--database-url", city]
    result = invoke(["audit", "events", "--type", "account.depositd", "--stream-type", "acount", *db])
    assert result.exit_code == 0 and result.stdout == "no events match\n"
    assert result.stderr.splitlines() == [
        "facta: note: no stored event has type 'account.depositd'; did you mean 'account.deposited'?",
        "facta: note: no stored event has stream type 'acount'; did you mean 'account'?",
    ]
    # A type that is stored gives no note.
    known = invoke(["audit", "events", "--type", "account.deposited", "--json", *db])
    assert known.exit_code == 0 and known.stderr == "" and len(json.loads(known.stdout)["events"]) == 3
    # A relay name that never ran.
    _fails(["relay", "status", "--name", "typo", *db], "no relay named 'typo' has run on this store (relays: none)")
    default = _json(["relay", "status", "--json", *db])
    assert default["checkpoint"] == 0 and default["updated_at"] is None
    _fails(["projections", "skipped", "biling", *db], "unknown projection 'biling'")


def test_consistent_output(city: str) -> None:
    db = ["--database-url", city]
    one = invoke(["audit", "trace", "open-alice", *db])
    assert one.exit_code == 0 and one.stdout.splitlines()[0] == "correlation open-alice: 1 event in 1 stream"
    listed = _json(["projections", "list", "--json", *db])
    billing = next(e for e in listed if e["name"] == "billing")
    assert billing["updated_at"].endswith("Z"), billing


def test_python_m_facta_runs_the_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "facta", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == "facta, version 0.1.0\n", result


def test_aggregates_and_projections_import_the_users_package_alike(tmp_path: Path) -> None:
    """`--aggregates shop.domain` finds the user's package in the current folder, as
    `--projections shop.projections` does (one rule: facta.user_modules)."""
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "domain.py").write_text(
        "from pathlib import Path\nfrom facta.domain import Aggregate\nPath('imported-domain').write_text('yes')\n"
        "class Cart(Aggregate, stream_type='edges_cart'):\n    pass\n"
    )
    (tmp_path / "shop" / "reexport.py").write_text("from shop.domain import Cart\n")
    (tmp_path / "shop" / "helpers.py").write_text("from facta.domain import Aggregate\nX = 1\n")
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert facta("db", "upgrade", "--database-url", url, cwd=tmp_path).returncode == 0
    one_line_error(facta("audit", "state", "nobody", "--aggregates", "shop.domain", "--database-url", url,
                         cwd=tmp_path), "stream 'nobody' does not exist")
    assert (tmp_path / "imported-domain").read_text() == "yes"
    one_line_error(facta("audit", "state", "nobody", "--aggregates", "shop.reexport", "--database-url", url,
                         cwd=tmp_path), "stream 'nobody' does not exist")
    # A module without an aggregate class is refused, as --projections refuses one without projections.
    for module in ("shop.helpers", "os"):
        one_line_error(facta("audit", "diff", "nobody", "--from-version", "1", "--to-version", "2",
                             "--aggregates", module, "--database-url", url,
                             cwd=tmp_path),
                       f"aggregate module '{module}' declares no aggregate (no Aggregate subclass declared with"
                       " stream_type=...)")
    one_line_error(facta("projections", "list", "--projections", "shop.helpers", "--database-url", url,
                         cwd=tmp_path),
                   "projections module 'shop.helpers' defines no projection")
    one_line_error(facta("audit", "state", "nobody", "--aggregates", "shop.nothing", "--database-url", url,
                         cwd=tmp_path),
                   "cannot import aggregate module 'shop.nothing': ModuleNotFoundError: No module named 'shop.nothing'")
    one_line_error(facta("projections", "list", "--projections", "shop.nothing", "--database-url", url,
                         cwd=tmp_path),
                   "cannot import projections module 'shop.nothing': ModuleNotFoundError: No module named "
                   "'shop.nothing'")


def test_seconds_are_finite() -> None:
    kind = Seconds(0.1)
    for text in ("nan", "inf", "-inf", "1e400"):
        with pytest.raises(click.BadParameter):
            kind.convert(text, None, None)
    assert kind.convert("0.5", None, None) == 0.5 and not math.isnan(kind.convert("30", None, None))
