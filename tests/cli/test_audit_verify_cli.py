"""`facta audit verify` and `facta audit seal` (issue 14, hash chains), run as a user runs
them, on SQLite and PostgreSQL: exit 0 on an intact store, 1 and the first difference
(position, stream, version, what) on a tampered one, 2 on a usage mistake."""

from __future__ import annotations

import json

from sqlalchemy import text

from facta.eventstore import EventStore

from ..eventstore._audit_scenario import ACCOUNT, build
from .test_cli import facta


async def test_verify_and_seal_on_an_intact_then_tampered_store(migrated_url: str) -> None:
    async with await EventStore.open(migrated_url) as store:
        await build(store)
        stored = await store.read_stream(ACCOUNT)
    db = ("--database-url", migrated_url)

    sealed = facta("audit", "seal", "--json", *db)
    assert (sealed.returncode, json.loads(sealed.stdout)) == (0, {"events": 0, "snapshots": 0})
    intact = facta("audit", "verify", *db)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.splitlines()[-1].endswith(": intact")
    report = json.loads(facta("audit", "verify", "--json", *db).stdout)
    assert report["intact"] is True and report["differences"] == 0 and report["first"] is None
    assert report["events"] == len(await _positions(migrated_url)) > 0

    # A changed actor, from a raw connection with the trigger out of the way.
    target = stored[1]
    async with await EventStore.open(migrated_url) as store:
        pg = store.database.dialect != "sqlite"

        def tamper(conn: object) -> None:
            run = conn.execute  # type: ignore[attr-defined]
            run(text("ALTER TABLE facta_events DISABLE TRIGGER USER" if pg else "DROP TRIGGER facta_events_no_update"))
            run(text(f"UPDATE facta_events SET actor = 'mallory' WHERE position = {target.position}"))

        await store.database.write(tamper)
    broken = facta("audit", "verify", *db)
    assert broken.returncode == 1, (broken.stdout, broken.stderr)
    assert broken.stdout.splitlines()[-1].startswith(
        f"first: position {target.position}, stream {ACCOUNT} version {target.version} (hash):")
    as_json = facta("audit", "verify", "--json", *db)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["first"] == {
        "position": target.position, "stream_id": ACCOUNT, "version": target.version, "kind": "hash",
        "what": "event_hash does not match the event's content and its predecessor's hash"
                f" (version {target.version - 1} at position {stored[0].position})"}

    usage = facta("audit", "verify", "--no-such-option", *db)
    assert usage.returncode == 2 and len(usage.stderr.strip().splitlines()) == 1


async def _positions(url: str) -> list[int]:
    async with await EventStore.open(url) as store:
        return [e.position for e in await store.read_log(limit=10_000)]
