"""`facta gdpr forget`: one erasure, recorded; a second is one quiet line; audit output
shows the placeholder afterwards; usage mistakes are one line (exit 2)."""

from __future__ import annotations

import json

from facta.domain.reference import Account
from facta.eventstore import EventStore, Repository

from .test_cli import facta


async def test_forget_then_audit_history_shows_the_placeholder(migrated_url: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        await Repository(store).save(Account.open("acct-1", "Ada Lovelace", "EUR"))
    before = facta("audit", "history", "acct-1", "--json", "--database-url", migrated_url)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)[0]["payload"]["owner"] == "Ada Lovelace"

    first = facta("gdpr", "forget", "acct-1", "--yes", "--actor", "dpo", "--database-url", migrated_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "forgot subject acct-1: its key is destroyed; the erasure is recorded in facta.gdpr/acct-1\n"
    again = facta("gdpr", "forget", "acct-1", "--yes", "--json", "--database-url", migrated_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"subject": "acct-1", "forgotten_now": False, "record_stream": "facta.gdpr/acct-1"}

    after = facta("audit", "history", "acct-1", "--json", "--database-url", migrated_url)
    assert json.loads(after.stdout)[0]["payload"]["owner"] == "[erased]"
    state = facta("audit", "state", "acct-1", "--json", "--database-url", migrated_url)
    assert json.loads(state.stdout)["state"]["owner"] == "[erased]"
    record = facta("audit", "history", "facta.gdpr/acct-1", "--json", "--database-url", migrated_url)
    (event,) = json.loads(record.stdout)
    assert (event["actor"], event["payload"]) == ("dpo", {"subject": "acct-1", "key_destroyed": True})


def test_forget_without_yes_and_without_a_terminal_is_a_usage_error(sqlite_url: str) -> None:
    result = facta("gdpr", "forget", "acct-1", "--database-url", sqlite_url)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("facta: error: forgetting cannot be undone: give --yes")
    long = facta("gdpr", "forget", "x" * 256, "--yes", "--database-url", sqlite_url)
    assert long.returncode == 2 and len(long.stderr.strip().splitlines()) == 1 and "255" in long.stderr
