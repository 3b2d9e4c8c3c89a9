"""What the `facta` command line prints, for values and mistakes a break-it pass found
(issue 10, leftovers 8 and 9).

8. Control and other non-printable characters (C0, DEL, C1, bidi overrides, zero-width
   and other invisible characters) in stored names, ids, actors and reasons are never
   printed raw: a value holding one is shown as bash's ``$'...'`` with escapes, which
   bash reads back as the exact value (pasted as is). ``--json`` and ``--csv`` keep the
   exact values.
9. Empty names are usage errors (exit 2) like over-long ones; articles are right; a skip
   reason has a limit; bare ``facta`` and ``facta GROUP`` print their help (exit 0);
   ``facta demo`` refuses a database it did not make.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert, inspect, select, text

from facta.domain import DomainEvent
from facta.domain.reference import Account
from facta.eventstore import EventStore, InvalidValue, Repository
from facta.eventstore.database import Database
from facta.eventstore.relay import Relay, RelayConfig, RelayError
from facta.eventstore.schema import projection_skips, relay_checkpoints
from facta.eventstore.validation import TEXT_LIMITS
from facta.projections import _tracking as tracking
from facta.replay import cli as cli_module
from facta.replay.cli import Text, _a, _printable, _quoted, _shown, cli
from facta.replay.demo import DemoRefused, run_demo
from tests.conftest import migrate

from .test_cli import FACTA
from .test_cli_edges import commands

COMMAND = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]

# One of each kind of character that must not reach a terminal raw.
ODD_CHARACTERS = {
    "NUL-free C0 (ESC)": "\x1b", "BEL": "\x07", "backspace": "\x08", "newline": "\n", "tab": "\t",
    "carriage return": "\r", "DEL": "\x7f", "C1 (NEL)": "\x85", "C1 (CSI)": "\x9b", "RLO (bidi)": "\u202e",
    "LRI (bidi)": "\u2066", "zero-width space": "\u200b", "zero-width joiner": "\u200d", "BOM": "\ufeff",
    "line separator": "\u2028", "no-break space": "\xa0", "tag character": "\U000e0041",
}

ACCOUNT_ID = "acct-\x1b[31mred\u202e"
OWNER = "own\x07er\u200b"
ACTOR = "act\x85or"
CORRELATION = "corr\u2028id"
ODD_STREAM = "odd-\x7fstream"
ODD_ACTOR = "a\u202eb"
REASON = "poison\x1b[2J\u202e it's bad"
SKIPPED_BY = "op\x07"


class OddEvent(DomainEvent, name="odd.\x1b]0;title\x07type"):
    x: int


def invoke(args: list[str], env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, args, env={"FACTA_DATABASE_URL": None, **(env or {})}, prog_name="facta")


def printable(output: str) -> bool:
    """Every character of ``output`` is printable, but for the line ends."""
    return all(line.isprintable() for line in output.split("\n"))


# -- 8: the escaping itself --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ODD_CHARACTERS))
def test_a_non_printable_character_is_escaped_and_bash_reads_it_back(name: str) -> None:
    value = f"ride-{ODD_CHARACTERS[name]}-1"
    for shown in (_shown(value), _quoted(value)):
        assert shown.isprintable() and shown.startswith("$'") and shown.endswith("'"), shown
        back = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True, check=True,
                              env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout.decode("utf-8")
        assert back == value, (shown, back)
    assert _printable(f"message about {value}").isprintable()


@pytest.mark.parametrize(("value", "shown", "quoted"), [
    ("ride-1", "ride-1", "'ride-1'"),
    ("a\\b", "a\\b", "'a\\b'"),  # printable: as it is (single quotes keep a backslash in bash)
    ("it's", "it's", "$'it\\'s'"),
    ("$'x'", "$'$\\'x\\''", "$'$\\'x\\''"),  # looks escaped: escaped, so it is never ambiguous
    ("ride-\U0001f695", "ride-\U0001f695", "'ride-\U0001f695'"),  # printable non-ASCII stays
    ("a\x1bb\\", "$'a\\x1bb\\\\'", "$'a\\x1bb\\\\'"),
    ("nb\xa0sp", "$'nb\\u00a0sp'", "$'nb\\u00a0sp'"),
    ("tag\U000e0041", "$'tag\\U000e0041'", "$'tag\\U000e0041'"),
])
def test_shown_and_quoted_forms(value: str, shown: str, quoted: str) -> None:
    assert (_shown(value), _quoted(value)) == (shown, quoted)
    # The quoted form, and an escaped shown form, are what bash reads back as the value (a
    # printable shown value is the value itself, as a table shows it).
    for form in {quoted, shown} if shown.startswith("$'") else {quoted}:
        back = subprocess.run(["bash", "-c", f"printf %s {form}"], capture_output=True, check=True,
                              env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout.decode("utf-8")
        assert back == value


# -- 8: every command, on both dialects ------------------------------------------------------


@pytest.fixture
def odd_city(backend_url: str) -> str:
    """A migrated store (SQLite and PostgreSQL) whose names, ids and actors hold control
    and invisible characters, with a projection skip and a relay skip recorded."""

    async def setup() -> None:
        await migrate(backend_url)
        async with await EventStore.open(backend_url) as store:
            account = Account.open(ACCOUNT_ID, OWNER, "EUR")
            account.deposit(100)
            await Repository(store).save(account, actor=ACTOR, correlation_id=CORRELATION)
            await store.append(ODD_STREAM, "odd", [OddEvent(x=1)], expected_version=0, actor=ODD_ACTOR)

            def ran(conn: Any) -> None:
                conn.execute(insert(relay_checkpoints).values(name="default", position=0,
                                                              updated_at=datetime.now(UTC)))
            await store.database.write(ran)

    asyncio.run(setup())
    return backend_url


def ok(args: list[str]) -> Result:
    result = invoke(args)
    assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    assert printable(result.stdout) and printable(result.stderr), (args, result.stdout, result.stderr)
    return result


def test_tables_and_lines_show_odd_values_escaped_and_json_csv_keep_them(odd_city: str) -> None:
    db = ["--database-url", odd_city]
    history = ok(["audit", "history", ACCOUNT_ID, *db]).stdout
    assert history.splitlines()[0] == f"account {_shown(ACCOUNT_ID)}: 2 events"
    assert "$'act\\u0085or'" in history and "$'corr\\u2028id'" in history
    exact = json.loads(ok(["audit", "history", ACCOUNT_ID, "--json", *db]).stdout)
    assert {(e["stream_id"], e["actor"], e["correlation_id"]) for e in exact} == {(ACCOUNT_ID, ACTOR, CORRELATION)}
    assert exact[0]["payload"]["owner"] == OWNER

    table = ok(["audit", "events", *db]).stdout
    assert _shown(OddEvent.event_type) in table and _shown(ODD_STREAM) in table and _shown(ODD_ACTOR) in table
    rows = list(csv.DictReader(io.StringIO(invoke(["audit", "events", "--csv", *db]).stdout)))
    assert [(r["stream_id"], r["event_type"], r["actor"]) for r in rows][-1] == \
        (ODD_STREAM, OddEvent.event_type, ODD_ACTOR)  # CSV: exact
    assert [r["stream_id"] for r in rows[:2]] == [ACCOUNT_ID, ACCOUNT_ID]

    trace = ok(["audit", "trace", CORRELATION, *db]).stdout
    assert trace.splitlines()[0] == "correlation $'corr\\u2028id': 2 events in 1 stream"
    state = ok(["audit", "state", ACCOUNT_ID, *db]).stdout
    assert state.startswith(f"account {_shown(ACCOUNT_ID)} at version 2 ")
    assert "$'own\\x07er\\u200b'" in state
    diff = ok(["audit", "diff", ACCOUNT_ID, "--from-version", "0", "--to-version", "2", *db]).stdout
    assert diff.splitlines()[0] == f"account {_shown(ACCOUNT_ID)}: version 0 -> 2, 2 events, 4 fields changed"
    assert "$'own\\x07er\\u200b'" in diff

    # Notes and errors: the value quoted, escaped.
    note = ok(["audit", "events", "--type", "nope\x1b", *db]).stderr
    assert note == "facta: note: no stored event has type $'nope\\x1b'\n"
    missing = invoke(["audit", "trace", "miss\x9bing", *db])
    assert missing.exit_code == 1
    assert missing.stderr == "facta: error: no event has correlation id $'miss\\u009bing'\n"
    gone = invoke(["audit", "history", "gone\x1b", *db])
    assert gone.exit_code == 1 and printable(gone.stderr) and "gone\\x1b" in gone.stderr

    # Projection skips: the reason and who skipped.
    skip = ok(["projections", "skip", "billing", "--position", "1", "--reason", REASON, "--actor", SKIPPED_BY, *db])
    assert skip.stdout.startswith("projection 'billing' will skip position 1 (account.opened event ")
    assert skip.stdout.endswith(f"): {_shown(REASON)}\n")
    skipped = ok(["projections", "skipped", *db]).stdout
    assert _shown(REASON) in skipped and "$'op\\x07'" in skipped
    [entry] = json.loads(ok(["projections", "skipped", "--json", *db]).stdout)
    assert (entry["reason"], entry["skipped_by"]) == (REASON, SKIPPED_BY)

    # Relay skips, and a relay name that never ran.
    relay_skip = ok(["relay", "skip", "--position", "3", "--reason", REASON, "--actor", SKIPPED_BY, *db]).stdout
    assert relay_skip.startswith("relay 'default' will pass over position 3 ($'odd.\\x1b]0;title\\x07type' event ")
    assert relay_skip.endswith(f"without publishing it: {_shown(REASON)}\n")
    status = ok(["relay", "status", *db]).stdout
    assert f"by $'op\\x07': {_shown(REASON)}; not reached yet" in status
    assert json.loads(ok(["relay", "status", "--json", *db]).stdout)["skips"][0]["reason"] == REASON
    typo = invoke(["relay", "status", "--name", "ty\u202epo", *db])
    assert typo.exit_code == 1
    assert typo.stderr == ("facta: error: no relay named $'ty\\u202epo' has run on this store "
                           "(relays: 'default')\n")


def test_a_shown_value_pasted_into_bash_finds_the_same_stream(odd_city: str) -> None:
    """The round trip the README promises: paste the $'...' form into a command."""
    shown = ok(["audit", "history", ACCOUNT_ID, "--database-url", odd_city]).stdout.split()[1].removesuffix(":")
    assert shown == _shown(ACCOUNT_ID)
    command = " ".join(shlex.quote(word) for word in COMMAND)
    result = subprocess.run(
        ["bash", "-c", f"{command} audit history {shown} --json --database-url {shlex.quote(odd_city)}"],
        capture_output=True, text=True, check=False, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "FACTA_DATABASE_URL"} | {"LC_ALL": "C.UTF-8"},
    )
    assert result.returncode == 0, result.stderr
    assert {e["stream_id"] for e in json.loads(result.stdout)} == {ACCOUNT_ID}


def test_usage_errors_escape_the_value_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(["audit", "history", "x" * 300 + "\x1b"])
    assert result.exit_code == 2 and printable(result.stderr) and len(result.stderr.splitlines()) == 1
    unknown = invoke(["--\x1b[2J"])
    assert unknown.exit_code == 2 and printable(unknown.stderr), unknown.stderr


# -- 9: empty names exit 2, like over-long ones ----------------------------------------------


def _name_cases() -> Iterator[Any]:
    for path, command in commands():
        required = [p for p in command.params if isinstance(p, click.Argument) and p.required]
        for param in command.params:
            if not isinstance(param.type, Text) or param.type.empty:
                continue
            for value in ("", "  "):
                before = [value if a is param else "x" for a in required]
                if isinstance(param, click.Argument):
                    args = [*path, *before] if param.required else [*path, *before, value]
                    shown = param.human_readable_name
                else:
                    args = [*path, *before, f"{param.opts[0]}={value}"]
                    shown = param.opts[0]
                if path == ["relay", "skip"] or path == ["projections", "skip"]:
                    args += ["--position", "1"]
                yield pytest.param(args, shown, id=f"{' '.join(path)} {shown}={value!r}")


@pytest.mark.parametrize(("args", "name"), list(_name_cases()))
def test_an_empty_name_is_a_usage_error(args: list[str], name: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("facta: error: ") and (f"'{name}'" in line or f"'[{name}]'" in line) and "is empty: give " in line, line
    assert list(tmp_path.iterdir()) == []


def test_names_that_matter_are_covered() -> None:
    """The empty-name test reaches every command that takes a name."""
    covered = {p.id.rsplit(" ", 1)[0] for p in _name_cases()}
    assert {"replay", "projections run", "projections skip", "projections skipped", "relay run", "relay status",
            "relay skip", "audit history", "audit state", "audit diff", "audit trace", "audit events"} <= covered, \
        covered


def test_empty_and_over_long_projection_names_exit_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("", "x" * 201):
        for args in (["replay", name, "--from-position", "0"], ["projections", "skip", name, "--position", "1"],
                     ["projections", "run", name], ["projections", "skipped", name],
                     ["relay", "status", "--name", name]):
            assert invoke(args).exit_code == 2, (args, invoke(args).stderr)


# -- 9: articles --------------------------------------------------------------------------------


def test_articles() -> None:
    assert [_a(w) for w in ("event type", "actor", "stream id", "URL", "uuid", "integer", "reason")] == \
        ["an event type", "an actor", "a stream id", "a URL", "a uuid", "an integer", "a reason"]
    long_type = invoke(["audit", "events", "--type", "t" * 201])
    assert "; an event type has at most 200" in long_type.stderr, long_type.stderr
    long_actor = invoke(["audit", "events", "--actor", "a" * 256])
    assert "; an actor has at most 255" in long_actor.stderr, long_actor.stderr
    stream = invoke(["audit", "history", "s" * 256])
    assert "; a stream id has at most 255" in stream.stderr, stream.stderr


def test_no_message_has_a_before_a_vowel() -> None:
    """No user-visible text in facta's code says 'a' before a word that takes 'an'."""
    import re

    root = Path(cli_module.__file__).resolve().parent.parent.parent  # replay/cli/__init__.py: a package now
    wrong = re.compile(r"""["'][^"'\n]*\ba (?:event|actor|error|empty|offset|integer|int\b|argument|option|"""
                       r"""aggregate|upcaster|existing|older|earlier|index|{)""")
    found = []
    for folder in ("domain", "eventstore", "projections", "replay", "dev", "facta_pkg", "migrations"):
        for path in (root / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.lstrip().startswith("#") and wrong.search(line):
                    found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not found, found


# -- 9: a skip reason has a limit -----------------------------------------------------------


def test_a_skip_reason_and_actor_have_limits(backend_url: str) -> None:
    asyncio.run(migrate(backend_url))

    async def add_one() -> None:
        async with await EventStore.open(backend_url) as store:
            await store.append("acct-1", "account", [OddEvent(x=1)], expected_version=0)

    asyncio.run(add_one())
    db = ["--database-url", backend_url]
    limit = TEXT_LIMITS["skip reason"]
    assert limit == 1000
    for command in (["projections", "skip", "billing"], ["relay", "skip"]):
        long = invoke([*command, "--position", "1", "--reason", "r" * 100_000, *db])
        assert long.exit_code == 2, long.stderr
        (line,) = long.stderr.strip().splitlines()
        assert "'--reason'" in line and "has 100000 characters; a reason has at most 1000" in line
        assert len(line) < 300  # the value is cut, not echoed
        actor = invoke([*command, "--position", "1", "--actor", "a" * 201, *db])
        assert actor.exit_code == 2 and "an actor has at most 200" in actor.stderr, actor.stderr
        blank = invoke([*command, "--position", "1", "--reason", " ", *db])
        assert blank.exit_code == 2 and "is empty: give a reason" in blank.stderr, blank.stderr
    # Nothing was written; the longest reason and actor are stored exactly.
    assert json.loads(invoke(["projections", "skipped", "--json", *db]).stdout) == []
    done = invoke(["projections", "skip", "billing", "--position", "1", "--reason", "r" * limit,
                   "--actor", "a" * 200, "--json", *db])
    assert done.exit_code == 0, done.stderr
    [entry] = json.loads(invoke(["projections", "skipped", "--json", *db]).stdout)
    assert (entry["reason"], entry["skipped_by"]) == ("r" * limit, "a" * 200)

    async def library() -> None:
        async with await EventStore.open(backend_url) as store:
            with pytest.raises(InvalidValue, match=r"skip reason 'rrr.* is 1001 characters long; facta stores at most 1000"):
                await store.database.write(tracking.add_skip, "ride_board", 1, "r" * 1001, None)
            with pytest.raises(InvalidValue, match=r"skipped by 'aaa.* is 201 characters long; facta stores at most 200"):
                await store.database.write(tracking.add_skip, "ride_board", 1, "why", "a" * 201)
            relay = Relay(store, RelayConfig(bootstrap="unused:9092"))
            with pytest.raises(RelayError, match=r"invalid reason 'r+'\.\.\.\(1001 characters\): give 1 to 1000"):
                await relay.skip(1, "r" * 1001)
            with pytest.raises(RelayError, match=r"invalid actor 'a+'.*: expected 1 to 200 characters"):
                await relay.skip(1, "why", "a" * 201)
            rows = await store.database.read(lambda conn: conn.execute(select(projection_skips)).all())
            assert len(rows) == 1

    asyncio.run(library())


# -- 9: bare `facta` and `facta GROUP` show help ------------------------------------------------


def test_bare_facta_prints_the_help() -> None:
    for command in (COMMAND, [sys.executable, "-m", "facta"]):
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 0 and result.stderr == "", result
        assert result.stdout.startswith("Usage: facta [OPTIONS] COMMAND [ARGS]...\n"), result.stdout
        assert "Commands:\n" in result.stdout
        for name in ("audit", "db", "demo", "dev", "projections", "relay", "replay"):
            assert f"\n  {name} " in result.stdout, name


@pytest.mark.parametrize("group", ["db", "audit", "projections", "relay", "dev"])
def test_a_group_alone_prints_its_help(group: str) -> None:
    result = invoke([group])
    assert result.exit_code == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith(f"Usage: facta {group} [OPTIONS] COMMAND [ARGS]...\n")
    for name in cli.commands[group].commands:  # type: ignore[attr-defined]
        assert f"\n  {name} " in result.stdout, name
    assert invoke([group, "--help"]).stdout == result.stdout


# -- 9: `facta demo` into a database it did not make --------------------------------------------


def _tables(url: str) -> set[str]:
    async def read() -> set[str]:
        database = Database.create(url)
        try:
            return await database.read(lambda conn: set(inspect(conn).get_table_names()))
        finally:
            await database.dispose()

    return asyncio.run(read())


def _where(url: str) -> str:
    from facta.eventstore.database import resolve_url

    resolved = resolve_url(url)
    if resolved.get_backend_name() == "sqlite":
        return f"the SQLite file {resolved.database!r}"
    return f"the database {resolved.render_as_string(hide_password=True)!r}"


def _demo(url: str, *more: str) -> Result:
    return invoke(["demo", "--rides", "2", "--riders", "2", "--drivers", "2", "--seed", "1", "--json", *more,
                   "--database-url", url])


HOW = "facta demo writes only into a new database or a previous demo's; give another --database-url, or --force " \
      "to add the demo's city to it"


def test_demo_refuses_a_database_with_other_tables(backend_url: str) -> None:
    async def other_app() -> None:
        database = Database.create(backend_url)
        try:
            await database.write(lambda conn: [conn.execute(text(f"CREATE TABLE {t} (id INTEGER)"))
                                               for t in ("customers", "orders")])
        finally:
            await database.dispose()

    asyncio.run(other_app())
    refused = _demo(backend_url)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr == (f"facta: error: {_where(backend_url)} holds 2 tables that are not facta's "
                              f"('customers', 'orders'): {HOW}\n")
    assert _tables(backend_url) == {"customers", "orders"}  # nothing written
    with pytest.raises(DemoRefused):
        asyncio.run(run_demo(backend_url, rides=1))
    forced = _demo(backend_url, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(forced.stdout)["run"] == 1
    assert {"customers", "orders", "facta_events", "facta_demo_runs"} <= _tables(backend_url)


def test_demo_refuses_a_store_with_events_and_resumes_its_own(backend_url: str) -> None:
    asyncio.run(migrate(backend_url))

    async def app_events() -> None:
        async with await EventStore.open(backend_url) as store:
            await store.append("acct-1", "account", [OddEvent(x=1)], expected_version=0)

    asyncio.run(app_events())
    refused = _demo(backend_url)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr == (f"facta: error: {_where(backend_url)} holds a facta store that no demo made, with "
                              f"events up to position 1: {HOW}\n")
    assert "facta_demo_runs" not in _tables(backend_url)
    first = _demo(backend_url, "--force")
    assert first.exit_code == 0 and json.loads(first.stdout)["run"] == 1, first.stderr
    # Once a demo ran there, later demos go on without --force.
    second = _demo(backend_url)
    assert second.exit_code == 0 and json.loads(second.stdout)["run"] == 2, second.stderr


def test_demo_on_a_new_file_and_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'city.db'}"
    assert json.loads(_demo(url).stdout)["run"] == 1
    assert json.loads(_demo(url).stdout)["run"] == 2
    empty = tmp_path / "empty.db"
    empty.touch()  # an existing file without tables: new
    assert json.loads(_demo(f"sqlite:///{empty}").stdout)["run"] == 1
