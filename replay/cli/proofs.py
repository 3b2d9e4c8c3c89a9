"""`facta audit keygen|seal|digest|verify|prove|verify-proof`: the Merkle log over the
store's events, its signed tree heads and the proofs built from them
(:mod:`facta.eventstore.merkle`, :mod:`facta.eventstore.sealer`).

Exit codes: 0 intact (or done), 1 tampered, refused or failed (one line), 2 usage (a bad
option, an unreadable or malformed key, digest or proof file).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facta.errors import AuditError, InvalidValue
from facta.eventstore import integrity, merkle, sealer
from facta.eventstore.merkle import TreeHead

from .app import async_command, fail, stop_on_signals, usage_error
from .audit import audit_group
from .options import TEXT, FilePath, Seconds, database_option, from_settings, open_store
from .output import echo_json, plural

__all__ = ["audit_digest", "audit_keygen", "audit_prove", "audit_seal", "audit_verify", "audit_verify_proof"]


def _key_file_option(fn: Any) -> Any:
    return click.option("--key-file", **from_settings("signing_key_file"), type=FilePath(), metavar="PEM_FILE",
                        help="The Ed25519 private key (PEM) that signs tree heads (env: FACTA_SIGNING_KEY_FILE).")(fn)


def _private_key(key_file: str | None) -> Ed25519PrivateKey:
    if not key_file:
        raise usage_error("no signing key: give --key-file PEM_FILE or set FACTA_SIGNING_KEY_FILE"
                          " (facta audit keygen FILE writes one)")
    try:
        return merkle.load_private_key(key_file)
    except InvalidValue as exc:
        raise usage_error(str(exc)) from None


def _public_key(key_file: str | None, public_key_file: str | None) -> Ed25519PublicKey:
    if public_key_file:
        try:
            return merkle.load_public_key(public_key_file)
        except InvalidValue as exc:
            raise usage_error(str(exc)) from None
    if not key_file:
        raise usage_error("no key to check signatures with: give --public-key PEM_FILE or --key-file PEM_FILE"
                          " (or set FACTA_SIGNING_KEY_FILE)")
    return _private_key(key_file).public_key()


def _json_file(path: str, what: str) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise usage_error(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise usage_error(f"{what} {path!r} is not JSON: {str(exc).splitlines()[0]}") from None


@audit_group.command("keygen")
@click.argument("key_file", type=FilePath())
@click.option("--public-key", "public_key_file", type=FilePath(), default=None, metavar="PEM_FILE",
              help="Also write the public key here (what an auditor needs for verify-proof).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {key_file, public_key_file, key_id}.")
def audit_keygen(key_file: str, public_key_file: str | None, as_json: bool) -> None:
    """Write a new Ed25519 signing key to KEY_FILE (PEM, readable by its owner only) and
    print its key id. Refuses to overwrite a file. The same key from openssl:
    ``openssl genpkey -algorithm ed25519 -out KEY_FILE``.

    \b
    Examples:
      facta audit keygen signing.pem --public-key signing.pub.pem
      export FACTA_SIGNING_KEY_FILE=$PWD/signing.pem
    """
    pem = merkle.new_private_key_pem()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in (key_file, public_key_file):
        if path is not None and os.path.lexists(path):
            raise usage_error(f"{path!r} exists: facta audit keygen never overwrites a key")
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        if public_key_file is not None:
            Path(public_key_file).write_bytes(public)
    except OSError as exc:
        raise usage_error(f"cannot write {exc.filename!r}: {exc.strerror or exc}") from None
    if as_json:
        echo_json({"key_file": key_file, "public_key_file": public_key_file, "key_id": merkle.key_id(key.public_key())})
    else:
        click.echo(f"{key_file}: Ed25519 signing key {merkle.key_id(key.public_key())}")


def _seal_line(report: sealer.SealReport) -> str:
    signed = (f"signed head {report.head.tree_size} (root {report.head.root_hash.hex()[:16]}..)"
              if report.head is not None else "no new head")
    return f"sealed {plural(report.added, 'event')}: tree of {report.tree_size}, {signed}"


@audit_group.command("seal")
@click.option("--once", is_flag=True, help="Seal what is settled now, then stop (default: keep sealing).")
@click.option("--interval", type=Seconds(0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="Without --once: the pause between runs.")
@_key_file_option
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per run.")
@async_command
async def audit_seal(once: bool, interval: float, key_file: str | None, database_url: str, as_json: bool) -> None:
    """Give events and snapshots stored before revision 0010 their hashes (once), then
    fold the settled events into the Merkle log, in position order, and sign a tree
    head with the signing key. Each run continues where the last one stopped; a head is
    signed when the tree grew. Without --once it runs every --interval seconds until
    Ctrl-C or SIGTERM.

    \b
    Examples:
      facta audit seal --once --key-file signing.pem
      facta audit seal --interval 60
    """
    key = _private_key(key_file)
    async with await open_store(database_url) as store:
        stop = None if once else stop_on_signals()
        while True:
            backfill = await integrity.seal_backfill(store)
            report = await sealer.seal(store, key)
            if as_json:
                echo_json({"hashed_events": backfill.events, "hashed_snapshots": backfill.snapshots,
                           "added": report.added, "tree_size": report.tree_size,
                           "head": None if report.head is None else report.head.as_json()})
            else:
                if backfill.events or backfill.snapshots:
                    click.echo(f"hashed {plural(backfill.events, 'event')} and {plural(backfill.snapshots, 'snapshot')}"
                               " stored before revision 0010")
                click.echo(_seal_line(report))
            if stop is None:
                return
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass


@audit_group.command("digest")
@database_option
@click.option("--json", "as_json", is_flag=True, help="The output is JSON either way; accepted like every data command's --json.")
@async_command
async def audit_digest(database_url: str, as_json: bool) -> None:
    """Print the newest signed tree head as a JSON document: keep it somewhere the
    database's owner cannot change (another system, a ticket, an e-mail), and later
    ``facta audit verify --against FILE`` proves the log still extends it.

    \b
    Fields: version, tree_size, root_hash (hex), last_position, signed_at (UTC),
    key_id, signature (Ed25519, base64).

    \b
    Examples:
      facta audit digest > digest-2026-12-01.json
    """
    async with await open_store(database_url) as store:
        head = await sealer.latest_head(store)
    if head is None:
        raise AuditError("no signed tree head yet: run facta audit seal")
    echo_json(head.as_json(), indent=2)


@audit_group.command("verify")
@click.option("--against", "digest_file", type=FilePath(), default=None, metavar="DIGEST_FILE",
              help="A digest saved earlier by facta audit digest: prove the log still extends it.")
@click.option("--public-key", "public_key_file", type=FilePath(), default=None, metavar="PEM_FILE",
              help="The public key that checks the heads (default: the signing key's public half).")
@_key_file_option
@database_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@async_command
async def audit_verify(digest_file: str | None, public_key_file: str | None, key_file: str | None,
                       database_url: str, as_json: bool) -> None:
    """Recompute every stream's hash chain and every snapshot's hash; with a key (the
    signing key or --public-key), also recompute the Merkle log from the event hashes and
    check it against the sealed leaves, the stored nodes and every signed head; with
    --against, prove the log extends the tree a digest saved earlier committed to. The
    first difference is reported with its position. Exit 0 intact, 1 tampered (or a head
    another key signed), 2 usage.

    \b
    Examples:
      facta audit verify
      facta audit verify --against digest-2026-12-01.json --public-key signing.pub.pem
    """
    public: Ed25519PublicKey | None = None
    if public_key_file or key_file or digest_file is not None:
        public = _public_key(key_file, public_key_file)
    against: TreeHead | None = None
    if digest_file is not None:
        try:
            against = TreeHead.from_json(_json_file(digest_file, "digest file"), source=f"digest file {digest_file!r}")
        except InvalidValue as exc:
            raise usage_error(str(exc)) from None
    async with await open_store(database_url) as store:
        chains = await integrity.verify(store)
        tree = None
        if public is not None and chains.intact:
            if against is not None or await sealer.latest_head(store) is not None:
                tree = await sealer.verify_tree(store, public, against=against)
    first = chains.first
    problem = (None if first is None else
               f"{'position ' + str(first.position) if first.position is not None else 'snapshot'}: stream"
               f" {first.stream_id!r} version {first.version}: {first.what}")
    position = None if first is None else first.position
    if problem is None and tree is not None:
        problem, position = tree.problem, tree.position
    doc: dict[str, Any] = {
        "intact": problem is None, "problem": problem, "position": position,
        "events_checked": chains.events, "streams_checked": chains.streams, "snapshots_checked": chains.snapshots,
        "differences": chains.differences,
        "tree_checked": tree is not None,
        "tree_size": None if tree is None or tree.head is None else tree.head.tree_size,
        "heads_checked": 0 if tree is None else tree.heads,
        "unsealed_events": None if tree is None else tree.unsealed,
        "against_tree_size": None if against is None else against.tree_size,
    }
    if as_json:
        echo_json(doc, indent=2)
    elif problem is not None:
        more = f" ({plural(chains.differences, 'difference')} in the chains)" if chains.differences > 1 else ""
        click.echo(f"TAMPERED: {problem}{more}")
    else:
        click.echo(f"chains intact: {plural(chains.events, 'event')} in {plural(chains.streams, 'stream')},"
                   f" {plural(chains.snapshots, 'snapshot')}")
        if tree is not None and tree.head is not None:
            extends = f"; extends the saved digest's tree of {against.tree_size}" if against is not None else ""
            click.echo(f"tree intact: {plural(tree.leaves, 'sealed event')}, {plural(tree.heads, 'signed head')},"
                       f" the newest of {tree.head.tree_size} to position {tree.head.last_position}{extends};"
                       f" {plural(tree.unsealed, 'event')} not sealed yet")
        elif public is None:
            click.echo("tree not checked: give --key-file or --public-key (or set FACTA_SIGNING_KEY_FILE)")
        else:
            click.echo("tree not checked: no signed tree head yet (facta audit seal)")
    if problem is not None:
        sys.exit(1)


@audit_group.command("prove")
@click.argument("event_id", type=TEXT["event_id"])
@database_option
@click.option("--json", "as_json", is_flag=True, help="The output is JSON either way; accepted like every data command's --json.")
@async_command
async def audit_prove(event_id: str, database_url: str, as_json: bool) -> None:
    """Print a JSON inclusion proof that event EVENT_ID (a UUID) is in the newest signed
    tree: its position and leaf index, its event hash, the audit path and the signed head.
    ``facta audit verify-proof`` checks it without the database.

    \b
    Examples:
      facta audit prove 0b6f4c1e-8a35-4d6e-9a55-3c1f1d2b7e90 > proof.json
    """
    try:
        wanted = uuid.UUID(event_id)
    except ValueError:
        raise usage_error(f"EVENT_ID {event_id!r} is not a UUID") from None
    async with await open_store(database_url) as store:
        doc = await sealer.prove(store, wanted)
    echo_json(doc, indent=2)


@audit_group.command("verify-proof")
@click.argument("proof_file", type=FilePath())
@click.option("--public-key", "public_key_file", type=FilePath(), required=True, metavar="PEM_FILE",
              help="The public key (or the private key file) whose signature the head must carry.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: {proven, event_id, position, leaf_index, tree_size, key_id, signed_at}.")
def audit_verify_proof(proof_file: str, public_key_file: str, as_json: bool) -> None:
    """Check an inclusion proof from ``facta audit prove`` offline (no database): the
    head's signature, then the audit path from the event's hash to the signed root.
    Exit 0 proven, 1 refused (changed proof, changed event, another key), 2 usage.

    \b
    Examples:
      facta audit verify-proof proof.json --public-key signing.pub.pem
    """
    public = _public_key(None, public_key_file)
    doc = _json_file(proof_file, "proof file")
    try:
        head = sealer.verify_proof(doc, public, source=f"proof file {proof_file!r}")
    except InvalidValue as exc:
        raise usage_error(str(exc)) from None
    except AuditError as exc:
        fail(str(exc))
    assert isinstance(doc, dict)
    if as_json:
        echo_json({"proven": True, "event_id": doc["event_id"], "position": doc["position"],
                   "leaf_index": doc["leaf_index"], "tree_size": head.tree_size, "key_id": head.key_id,
                   "signed_at": doc["tree_head"]["signed_at"]}, indent=2)
        return
    click.echo(f"proven: event {doc['event_id']} at position {doc['position']} (leaf {doc['leaf_index']}) is in the"
               f" tree of {head.tree_size} events signed by key {head.key_id} at {doc['tree_head']['signed_at']}")
