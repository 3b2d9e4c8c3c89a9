"""Tables (rich, facta.replay.cli.output) stay readable and parseable off a terminal: no
cell folded or cut whatever the width, no colour codes, columns two spaces apart."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

from facta.domain.account import Account
from facta.eventstore import EventStore, Repository
from facta.replay.cli.output import table, table_lines

from .test_cli import FACTA

ANSI = re.compile(r"\x1b\[")


def test_columns_are_as_wide_as_their_widest_cell_and_nothing_trails() -> None:
    lines = table_lines(["NAME", "LAG"], [["ride_board", "0"], ["b", "12345"], ["", ""]])
    assert lines == ["NAME        LAG", "ride_board  0", "b           12345", ""]
    assert table(["A"], []) == "A"


def test_a_long_cell_is_never_folded_or_cut_and_there_is_no_colour_off_a_terminal() -> None:
    long_id = "stream-" + "x" * 500
    lines = table_lines(["STREAM", "PAYLOAD"], [[long_id, '{"a": 1}'], ["s", "-"]], colour=False)
    assert lines == [f"STREAM{' ' * (len(long_id) - 4)}PAYLOAD", f'{long_id}  {{"a": 1}}', f"s{' ' * (len(long_id) + 1)}-"]
    assert not any(ANSI.search(line) for line in lines)
    bold = table_lines(["STREAM"], [["s"]], colour=True)
    assert bold[0] == "\x1b[1mSTREAM\x1b[0m"
    assert bold[1] == "s"


def test_rich_markup_and_control_characters_in_a_cell_are_shown_as_they_are() -> None:
    lines = table_lines(["V"], [["[bold]x[/bold]"], [":smile:"], ["a\x1b[31mb"]], colour=False)
    assert lines[1:] == ["[bold]x[/bold]", ":smile:", "a\\x1b[31mb"]


async def test_an_80_column_pipe_gets_whole_lines(migrated_url: str) -> None:
    long_id = "acct-" + "y" * 240
    async with await EventStore.open(migrated_url) as store:
        account = Account.open(long_id, "someone with a long account id", "EUR")
        await Repository(store).save(account, actor="tester")
    command = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]
    env = {**os.environ, "COLUMNS": "80", "LINES": "24", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    result = await asyncio.to_thread(subprocess.run, [*command, "audit", "history", long_id, "--database-url", migrated_url],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"account {long_id}: 1 event"
    assert lines[1].split() == ["VERSION", "POSITION", "RECORDED", "AT", "(UTC)", "TYPE", "ACTOR", "CORRELATION",
                                "CAUSATION", "PAYLOAD"]
    assert len(lines) == 3 and not ANSI.search(result.stdout)
    cells = re.split(r"  +", lines[2])
    assert cells[0] == "1" and cells[3] == "account.opened" and cells[4] == "tester"
    assert cells[-1] == '{"currency":"EUR","owner":"someone with a long account id"}'
