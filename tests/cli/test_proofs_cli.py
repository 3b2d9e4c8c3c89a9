"""`facta audit keygen|seal|digest|verify|prove|verify-proof` run as a user runs them, on
SQLite and PostgreSQL: yesterday's digest verifies against today's log, a proof verifies
offline (no database) and fails when a byte of it changes, another key is refused, a
tampered event makes `verify --against` exit 1 naming its position; exit codes 0/1/2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import text

from facta.domain.reference import Account
from facta.eventstore import EventStore, Repository

from .test_cli import facta, one_line_error

FORGED = '{"amount":9999,"reference":null}'


async def _accounts(url: str, first: int, count: int) -> list[str]:
    async with await EventStore.open(url) as store:
        repo = Repository(store)
        for n in range(first, first + count):
            account = Account.open(f"acct-{n}", f"owner-{n}", "EUR")
            account.deposit(10 + n)
            await repo.save(account, actor="cli-test")
        return [str(e.event_id) for e in await store.read_log(limit=1000)]


class AnyStartingWith(str):
    """Equal to any string that starts with it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(str(self))

    __hash__ = str.__hash__


def run_ok(*args: str) -> str:
    result = facta(*args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def usage(result: Any, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    line, = result.stderr.strip().splitlines()
    assert line.startswith("facta: error: ")
    for needle in needles:
        assert needle in line, (needle, line)


async def test_the_four_commands_from_seal_to_an_offline_proof(migrated_url: str, tmp_path: Path) -> None:
    db = ("--database-url", migrated_url)
    key, pub, other = tmp_path / "signing.pem", tmp_path / "signing.pub.pem", tmp_path / "other.pem"
    made = run_ok("audit", "keygen", str(key), "--public-key", str(pub))
    assert made.startswith(f"{key}: Ed25519 signing key ") and len(made.split()[-1]) == 16
    assert key.stat().st_mode & 0o777 == 0o600
    run_ok("audit", "keygen", str(other))
    usage(facta("audit", "keygen", str(key)), "exists: facta audit keygen never overwrites a key")

    await _accounts(migrated_url, 0, 4)
    assert run_ok("audit", "seal", "--key-file", str(key), *db).splitlines() == [
        "backfilled: 0 events, 0 snapshots", AnyStartingWith("sealed 8 events: tree of 8, signed head 8 (root ")]
    yesterday = json.loads(run_ok("audit", "digest", *db))
    assert (yesterday["tree_size"], yesterday["version"]) == (8, 1)
    digest = tmp_path / "digest.json"
    digest.write_text(json.dumps(yesterday))

    ids = await _accounts(migrated_url, 4, 5)
    by_env = facta("audit", "seal", "--json", *db, env={"FACTA_SIGNING_KEY_FILE": str(key)})
    assert by_env.returncode == 0, by_env.stderr
    sealed = json.loads(by_env.stdout)
    assert (sealed["events"], sealed["tree"]["added"], sealed["tree"]["tree_size"]) == (0, 10, 18)
    assert sealed["tree"]["head"]["tree_size"] == 18

    out = run_ok("audit", "verify", "--against", str(digest), "--public-key", str(pub), *db)
    assert out.splitlines() == [
        "18 events in 9 streams, 0 snapshots: chains intact",
        "tree: 2 signed heads, the newest over 18 events to position 18, extends the saved digest's tree of 8:"
        " intact (0 events not sealed yet)"]
    report = json.loads(run_ok("audit", "verify", "--against", str(digest), "--key-file", str(key), "--json", *db))
    assert report["intact"] is True and report["first"] is None
    assert report["tree"] == {"intact": True, "leaves": 18, "heads": 2, "tree_size": 18, "last_position": 18,
                              "unsealed_events": 0, "against_tree_size": 8}

    proof = json.loads(run_ok("audit", "prove", ids[4], *db))
    assert (proof["position"], proof["leaf_index"], proof["tree_head"]["tree_size"]) == (5, 4, 18)
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(proof))
    # Offline: no database URL anywhere.
    proven = facta("audit", "verify-proof", str(proof_file), "--public-key", str(pub), env={"FACTA_DATABASE_URL": "x"})
    assert proven.returncode == 0, proven.stderr
    assert proven.stdout.startswith(f"proven: event {ids[4]} at position 5 (leaf 4) is in the tree of 18 events")

    changed = json.loads(json.dumps(proof))
    raw = bytearray(bytes.fromhex(changed["audit_path"][1]))
    raw[5] ^= 0x40
    changed["audit_path"][1] = raw.hex()
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    one_line_error(facta("audit", "verify-proof", str(tmp_path / "changed.json"), "--public-key", str(pub)),
                   f"event {ids[4]} (position 5, leaf 4) is not in the tree of 18 events its head signs")
    edited = json.loads(json.dumps(proof))
    edited["event"]["actor"] = "someone-else"
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    one_line_error(facta("audit", "verify-proof", str(tmp_path / "edited.json"), "--public-key", str(pub)),
                   f"the fields of event {ids[4]} and prev_hash do not hash to its event_hash")
    one_line_error(facta("audit", "verify-proof", str(proof_file), "--public-key", str(other)),
                   "tree head is signed by key", "not by this key")
    (tmp_path / "bad.json").write_text("{")
    usage(facta("audit", "verify-proof", str(tmp_path / "bad.json"), "--public-key", str(pub)), "is not JSON")
    usage(facta("audit", "prove", "not-a-uuid", *db), "EVENT_ID 'not-a-uuid' is not a UUID")

    # A digest checked with another key is refused (exit 1, one line naming both keys).
    one_line_error(facta("audit", "verify", "--against", str(digest), "--key-file", str(other), *db),
                   "the saved digest is signed by key")
    usage(facta("audit", "verify", "--against", str(digest), *db), "no key to check signatures with")
    usage(facta("audit", "seal", "--interval", "1", *db), "no signing key: give --key-file PEM_FILE")

    # Tamper: one event's hash changed behind the triggers' back.
    async with await EventStore.open(migrated_url) as store:
        def work(conn: Any) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE facta_events DISABLE TRIGGER USER"))
                conn.execute(text("UPDATE facta_events SET payload = CAST(:p AS jsonb) WHERE position = 3"), {"p": FORGED})
                conn.execute(text("ALTER TABLE facta_events ENABLE TRIGGER USER"))
            else:
                for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                                 " AND tbl_name = 'facta_events'")).all():
                    conn.execute(text(f'DROP TRIGGER "{name}"'))
                conn.execute(text("UPDATE facta_events SET payload = :p WHERE position = 3"), {"p": FORGED})

        await store.database.write(work)
    tampered = facta("audit", "verify", "--against", str(digest), "--public-key", str(pub), *db)
    assert tampered.returncode == 1, (tampered.stdout, tampered.stderr)
    assert tampered.stdout.splitlines()[-1].startswith("first: position 3, stream acct-1 version 1 (hash):"), tampered.stdout


async def test_digest_before_any_seal_and_a_missing_key_file(migrated_url: str, tmp_path: Path) -> None:
    db = ("--database-url", migrated_url)
    one_line_error(facta("audit", "digest", *db), "no signed tree head yet: run facta audit seal")
    usage(facta("audit", "seal", "--key-file", str(tmp_path / "nope.pem"), *db),
          "cannot read signing key file", "nope.pem")
    key = tmp_path / "k.pem"
    run_ok("audit", "keygen", str(key))
    assert run_ok("audit", "seal", "--key-file", str(key), *db) == (
        "backfilled: 0 events, 0 snapshots\nsealed 0 events: tree of 0, signed head 0 (root e3b0c44298fc1c14..)\n")
    empty = json.loads(run_ok("audit", "digest", *db))
    assert empty["tree_size"] == 0 and empty["root_hash"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    (tmp_path / "d.json").write_text(json.dumps(empty))
    await _accounts(migrated_url, 0, 1)
    run_ok("audit", "seal", "--key-file", str(key), *db)
    assert "extends the saved digest's tree of 0" in run_ok("audit", "verify", "--against", str(tmp_path / "d.json"),
                                                           "--key-file", str(key), *db)

    # Deleting a stream's newest event leaves its chain whole (nothing follows it to
    # notice): the sealed tree finds it, with its position.
    async with await EventStore.open(migrated_url) as store:
        def delete(conn: Any) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE facta_events DISABLE TRIGGER USER"))
            else:
                for (name,) in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                                 " AND tbl_name = 'facta_events'")).all():
                    conn.execute(text(f'DROP TRIGGER "{name}"'))
            conn.execute(text("DELETE FROM facta_events WHERE position = 2"))
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE facta_events ENABLE TRIGGER USER"))

        await store.database.write(delete)
    found = facta("audit", "verify", "--against", str(tmp_path / "d.json"), "--key-file", str(key), *db)
    assert found.returncode == 1, found.stderr
    assert found.stdout.splitlines()[-2:] == [
        "tree: 2 signed heads, the newest over 2 events to position 2, extends the saved digest's tree of 0: TAMPERED",
        "first: position 2: the event sealed as leaf 1 is missing (deleted)"]
    chains_only = facta("audit", "verify", "--json", *db)  # no key: the chains only, and they are intact
    assert chains_only.returncode == 0 and json.loads(chains_only.stdout)["tree"] is None
    text_form = facta("audit", "verify", *db)
    assert text_form.returncode == 0 and text_form.stdout == "1 event in 1 stream, 0 snapshots: intact\n"
    assert "the Merkle log was not checked: give --key-file or --public-key" in text_form.stderr


async def test_seal_without_once_keeps_sealing_until_interrupted(migrated_url: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from .test_cli import FACTA

    key = tmp_path / "k.pem"
    run_ok("audit", "keygen", str(key))
    command = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]
    proc = subprocess.Popen([*command, "audit", "seal", "--interval", "0.2", "--json", "--key-file", str(key),
                             "--database-url", migrated_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await _accounts(migrated_url, 0, 2)
        deadline = time.monotonic() + 60
        while json.loads(facta("audit", "digest", "--database-url", migrated_url).stdout or '{"tree_size": 0}')["tree_size"] < 4:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    runs = [json.loads(line)["tree"] for line in out.splitlines()]
    assert runs[-1]["tree_size"] == 4 and sum(r["added"] for r in runs) == 4
