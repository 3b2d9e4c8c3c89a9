"""Another program's SQLite database is refused and left byte for byte as it was.

WAL mode is recorded in a SQLite file's header, so setting it is a write. facta sets it on
every connection to a store; it used to set it before finding out that the file was not a
store, so a refused database (``has no facta schema``) came back in WAL mode (header bytes
18 and 19 changed, found by issue 15's break-it pass with ``facta status``).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from facta import migrations
from facta.domain.account import Account
from facta.errors import SchemaNotReady
from facta.eventstore import EventStore, Repository
from tests.cli.test_cli import facta, one_line_error


def _foreign(path: Path) -> str:
    """A database another program made (rollback journal, one table and row); its sha256."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE rides (id INTEGER PRIMARY KEY, rider TEXT)")
        conn.execute("INSERT INTO rides (rider) VALUES ('ada')")
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


async def test_opening_another_programs_database_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    before = _foreign(path)
    with pytest.raises(SchemaNotReady, match="has no facta schema"):
        await EventStore.open(f"sqlite+aiosqlite:///{path}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert _journal_mode(path) == "delete"
    assert not (tmp_path / "theirs.db-wal").exists()


@pytest.mark.parametrize("command", [("status", "--json"), ("status", "--interval", "0"), ("relay", "status"),
                                     ("audit", "events")])
def test_cli_commands_refuse_another_programs_database_and_write_nothing(tmp_path: Path,
                                                                         command: tuple[str, ...]) -> None:
    path = tmp_path / "theirs.db"
    before = _foreign(path)
    result = facta(*command, "--database-url", f"sqlite:///{path}")
    one_line_error(result, "has no facta schema")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert _journal_mode(path) == "delete"


async def test_a_store_migrated_into_an_existing_database_runs_in_wal_and_keeps_its_tables(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    _foreign(path)
    url = f"sqlite+aiosqlite:///{path}"
    await migrations.upgrade_url(url)
    store = await EventStore.open(url)
    try:
        account = Account.open("acc-1", owner="Ada", currency="EUR")
        await Repository(store).save(account)
        assert [r.stream_id for r in await store.read_log()] == ["acc-1"]
    finally:
        await store.close()
    assert _journal_mode(path) == "wal"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT rider FROM rides").fetchall() == [("ada",)]
    conn.close()


async def test_a_new_store_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    await migrations.upgrade_url(f"sqlite+aiosqlite:///{path}")
    assert _journal_mode(path) == "wal"
