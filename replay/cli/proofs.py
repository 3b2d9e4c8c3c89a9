"""`facta audit keygen|digest|prove|verify-proof`: the signing key, the signed tree heads
of the Merkle log and the proofs built from them (:mod:`facta.eventstore.merkle`,
:mod:`facta.eventstore.sealer`). `facta audit seal` and `facta audit verify`, which
seal and check the tree too, live with the chains' in ``audit.py``.

Exit codes: 0 intact (or done), 1 tampered, refused or failed (one line), 2 usage (a bad
option, an unreadable or malformed key, digest or proof file).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facta.errors import AuditError, InvalidValue
from facta.eventstore import merkle, sealer

from .app import async_command, fail, usage_error
from .audit import audit_group
from .options import TEXT, FilePath, database_option, json_file, open_store, public_key
from .output import echo_json

__all__ = ["audit_digest", "audit_keygen", "audit_prove", "audit_verify_proof"]


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
    public = public_key(None, public_key_file)
    doc = json_file(proof_file, "proof file")
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
