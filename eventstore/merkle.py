"""The Merkle log over the global positions: tree hashes, inclusion and consistency proofs,
and signed tree heads. Pure functions; nothing here reads a database (the sealer that
stores the tree is :mod:`facta.eventstore.sealer`).

**The tree** is RFC 6962's (Certificate Transparency; RFC 9162 section 2.1 keeps it):
the leaves are the stored events in position order (positions of rolled-back appends are
gaps, simply absent, so leaf index and position differ and a proof names both),

- leaf hash  = SHA-256(0x00 || event_hash)  (:func:`leaf_hash`; event_hash is the 32-byte
  chain hash of :mod:`facta.eventstore.integrity`),
- node hash  = SHA-256(0x01 || left || right) (:func:`node_hash`),
- MTH(D[0:n]) for n > 1 = node_hash(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two
  below n; MTH of one leaf is its leaf hash; MTH of no leaves is SHA-256 of nothing
  (:data:`EMPTY_ROOT`).

**Stored nodes.** Every hash this module needs is the hash of a *complete* subtree, a
node ``(level, index)`` covering leaves ``index * 2**level`` to ``(index + 1) * 2**level - 1``,
or is folded from a few of them: a subtree the recursion meets is either complete or is
the right edge ``[lo, n)`` of the tree, whose hash folds the complete pieces of ``n - lo``'s
binary digits right to left (:func:`pieces`, :func:`range_hash`). So a proof is computed
from a mapping ``{(level, index): hash}`` of at most about ``2 * log2(n)`` nodes
(:func:`inclusion_nodes`, :func:`consistency_nodes` name them, so a store reads them in one
query), and complete nodes, once computed, never change: the sealer writes each once.

Proof generation follows RFC 6962 section 2.1.1 (PATH) and 2.1.2 (PROOF/SUBPROOF);
verification is RFC 9162 section 2.1.3.2 and 2.1.4.2, which never rebuild the tree.

**Signed tree heads** (:class:`TreeHead`): tree size, root hash, the position of the last
leaf, the signing time (UTC), the key id and an Ed25519 signature (RFC 8032, through
``cryptography``) over :meth:`TreeHead.signed_bytes`. The key id is the first 16 hex
digits of SHA-256 over the raw 32-byte public key. A head checked with another key is
refused with one line naming both key ids (:func:`verify_head`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facta.errors import AuditError, InvalidValue

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HEAD_VERSION",
    "Frontier",
    "Node",
    "TreeHead",
    "consistency_nodes",
    "consistency_proof",
    "consistency_ranges",
    "inclusion_nodes",
    "inclusion_proof",
    "inclusion_ranges",
    "key_id",
    "leaf_hash",
    "load_private_key",
    "load_public_key",
    "new_private_key_pem",
    "node_hash",
    "pieces",
    "range_hash",
    "read_document",
    "read_hex",
    "root_hash",
    "sign_head",
    "verify_consistency",
    "verify_head",
    "verify_inclusion",
]

HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of no bytes (RFC 6962 section 2.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: The ``version`` of the tree-head document this module writes and reads.
HEAD_VERSION = 1
_LEAF = b"\x00"
_NODE = b"\x01"
_HEAD_DOMAIN = b"facta tree head v1\n"

#: A complete subtree: (level, index), covering leaves index * 2**level .. (index + 1) * 2**level - 1.
Node = tuple[int, int]


def leaf_hash(event_hash: bytes) -> bytes:
    """SHA-256(0x00 || event_hash): the tree's leaf for one event (32 bytes)."""
    return hashlib.sha256(_LEAF + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node (32 bytes)."""
    return hashlib.sha256(_NODE + left + right).digest()


class Frontier:
    """A tree grown one leaf at a time: the hashes of the complete subtrees of the leaves
    so far, one per 1-bit of the size (largest first), so appending is O(1) amortised and
    the root O(log n). :meth:`push` returns the complete nodes it finished, for storing."""

    __slots__ = ("size", "stack")

    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None:
        if len(stack) != bin(size).count("1"):
            raise InvalidValue(f"a frontier of size {size} has {bin(size).count('1')} subtrees, not {len(stack)}")
        self.size = size
        self.stack = list(stack)

    def push(self, leaf: bytes) -> list[tuple[Node, bytes]]:
        """Append one leaf hash; the complete nodes ((level, index), hash) it completes,
        the leaf itself (level 0) first."""
        index = self.size
        done: list[tuple[Node, bytes]] = [((0, index), leaf)]
        h = leaf
        level = 0
        while (index >> level) & 1:
            h = node_hash(self.stack.pop(), h)
            level += 1
            done.append(((level, index >> level), h))
        self.stack.append(h)
        self.size += 1
        return done

    def root(self) -> bytes:
        """MTH of the leaves so far (:data:`EMPTY_ROOT` for none)."""
        if not self.stack:
            return EMPTY_ROOT
        h = self.stack[-1]
        for left in reversed(self.stack[:-1]):
            h = node_hash(left, h)
        return h


def root_hash(leaves: Iterable[bytes]) -> bytes:
    """MTH of leaf hashes given in order (O(n) time, O(log n) memory)."""
    tree = Frontier()
    for leaf in leaves:
        tree.push(leaf)
    return tree.root()


def pieces(lo: int, hi: int) -> list[Node]:
    """The complete subtrees covering leaves ``lo`` to ``hi - 1``, largest first. ``lo``
    must be a multiple of the smallest power of two >= ``hi - lo`` (true of every subtree
    the RFC's recursion meets); raises InvalidValue otherwise."""
    size = hi - lo
    if size < 1 or lo < 0:
        raise InvalidValue(f"no leaves in [{lo}, {hi})")
    if lo % (1 << (size - 1).bit_length()):
        raise InvalidValue(f"[{lo}, {hi}) is not a subtree of an RFC 6962 tree")
    out: list[Node] = []
    at = lo
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, at >> level))
            at += 1 << level
    return out


def range_hash(lo: int, hi: int, nodes: Mapping[Node, bytes]) -> bytes:
    """MTH(D[lo:hi]) folded from its complete pieces in ``nodes`` (KeyError names a missing one)."""
    parts = [nodes[p] for p in pieces(lo, hi)]
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def _largest_power_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees [lo, hi) whose hashes make the inclusion proof of leaf ``index`` in a
    tree of ``size`` leaves, in proof order (the leaf's sibling first): RFC 6962 PATH."""
    if not 0 <= index < size:
        raise InvalidValue(f"leaf index {index} is not in a tree of {size} leaves")
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_power_below(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo = lo + k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The subtrees [lo, hi) whose hashes make the proof that the tree of ``new_size``
    leaves extends the tree of its first ``old_size``: RFC 6962 PROOF/SUBPROOF, in proof
    order. Empty when ``old_size`` is 0 or equals ``new_size``."""
    if not 0 <= old_size <= new_size:
        raise InvalidValue(f"a tree of {new_size} leaves cannot extend one of {old_size}")
    if old_size in (0, new_size):
        return []
    out: list[tuple[int, int]] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        k = _largest_power_below(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        out.append((lo, hi))
    out.reverse()
    return out


def _nodes_of(ranges: Iterable[tuple[int, int]]) -> list[Node]:
    seen: dict[Node, None] = {}
    for lo, hi in ranges:
        for p in pieces(lo, hi):
            seen.setdefault(p)
    return list(seen)


def inclusion_nodes(index: int, size: int) -> list[Node]:
    """The complete nodes :func:`inclusion_proof` reads (about 2 * log2(size) at most)."""
    return _nodes_of(inclusion_ranges(index, size))


def consistency_nodes(old_size: int, new_size: int) -> list[Node]:
    """The complete nodes :func:`consistency_proof` reads."""
    return _nodes_of(consistency_ranges(old_size, new_size))


def inclusion_proof(index: int, size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves, from complete
    nodes (at least those :func:`inclusion_nodes` names)."""
    return [range_hash(lo, hi, nodes) for lo, hi in inclusion_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The consistency proof from ``old_size`` to ``new_size`` leaves, from complete
    nodes (at least those :func:`consistency_nodes` names)."""
    return [range_hash(lo, hi, nodes) for lo, hi in consistency_ranges(old_size, new_size)]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size``
    leaves whose root is ``root`` (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True when ``proof`` shows that the tree of ``new_size`` leaves with root
    ``new_root`` extends the tree of ``old_size`` leaves with root ``old_root``
    (RFC 9162 section 2.1.4.2; equal sizes need an empty proof and equal roots, size 0
    an empty proof and the empty root)."""
    if not 0 <= old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


# -- keys -------------------------------------------------------------------------------------

def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_private_key_pem() -> bytes:
    """A new Ed25519 private key, PEM (PKCS#8, unencrypted): what ``facta audit keygen`` writes."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidValue(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (unencrypted PKCS#8, as
    ``openssl genpkey -algorithm ed25519`` writes). Raises InvalidValue naming the file
    when it cannot be read or holds anything else."""
    data = _read(path, "signing key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidValue(f"signing key file {str(path)!r} holds no unencrypted PEM private key: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidValue(f"signing key file {str(path)!r} holds a key of type {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file ``path``; a private key file gives its
    public half. Raises InvalidValue naming the file otherwise."""
    data = _read(path, "public key file")
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidValue(f"public key file {str(path)!r} holds no PEM public key: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidValue(f"public key file {str(path)!r} holds a key of type {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


# -- signed tree heads ------------------------------------------------------------------------

def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        raise InvalidValue(f"signed_at {when.isoformat()!r} has no time zone")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head: the tree of the first ``tree_size`` events (leaves), its
    ``root_hash`` (32 bytes), the position of its last leaf (0 for the empty tree), when
    it was signed (UTC, microseconds), the signing key's id and the Ed25519 signature
    (64 bytes) over :meth:`signed_bytes`."""

    tree_size: int
    root_hash: bytes
    last_position: int
    signed_at: datetime
    key_id: str
    signature: bytes

    def signed_bytes(self) -> bytes:
        """What the signature covers: ``b"facta tree head v1\\n"`` and the document without
        its signature as JSON, keys sorted, no spaces, ASCII only."""
        body = {k: v for k, v in self.as_json().items() if k != "signature"}
        return _HEAD_DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    def as_json(self) -> dict[str, Any]:
        """The digest document ``facta audit digest`` prints: version, tree_size,
        root_hash (hex), last_position, signed_at (ISO 8601 UTC, microseconds), key_id,
        signature (base64)."""
        return {
            "version": HEAD_VERSION,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "last_position": self.last_position,
            "signed_at": _iso(self.signed_at),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, doc: object, *, source: str = "tree head") -> TreeHead:
        """The head in a digest document; raises InvalidValue naming ``source`` and the
        first field that is missing or malformed."""
        doc = read_document(doc, source=source, version=HEAD_VERSION, whole=("tree_size", "last_position"),
                            fields=("version", "tree_size", "root_hash", "last_position", "signed_at", "key_id",
                                    "signature"))
        root = read_hex(doc["root_hash"], f"{source}'s root_hash", HASH_SIZE)
        try:
            signature = base64.b64decode(str(doc["signature"]), validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if len(signature) != 64:
            raise InvalidValue(f"{source}'s signature {doc['signature']!r} is not 64 bytes of base64")
        when_text = doc["signed_at"]
        try:
            when = datetime.strptime(str(when_text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            raise InvalidValue(f"{source}'s signed_at {when_text!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
        kid = doc["key_id"]
        if not isinstance(kid, str) or len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
            raise InvalidValue(f"{source}'s key_id {kid!r} is not 16 lower-case hex digits")
        return cls(doc["tree_size"], root, doc["last_position"], when, kid, signature)


def read_document(doc: object, *, source: str, version: int, fields: Sequence[str],
                  whole: Sequence[str]) -> dict[str, Any]:
    """``doc`` as a JSON object holding exactly ``fields``, ``version`` its version and
    each of ``whole`` a whole number >= 0; raises InvalidValue naming ``source`` and the
    first field that is missing, unknown or malformed."""
    if not isinstance(doc, dict):
        raise InvalidValue(f"{source} is not a JSON object")
    for name in fields:
        if name not in doc:
            raise InvalidValue(f"{source} has no {name!r}")
    extra = sorted(set(doc) - set(fields))
    if extra:
        raise InvalidValue(f"{source} has an unknown field {extra[0]!r}")
    if doc["version"] != version:
        raise InvalidValue(f"{source} has version {doc['version']!r}; this facta reads version {version}")
    for name in whole:
        if type(doc[name]) is not int or doc[name] < 0:
            raise InvalidValue(f"{source}'s {name} {doc[name]!r} is not a whole number >= 0")
    return doc


def read_hex(value: object, what: str, size: int) -> bytes:
    """``size`` bytes from lower-case hex text; raises InvalidValue naming ``what`` otherwise."""
    try:
        out = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        out = b""
    if len(out) != size or value != out.hex():
        raise InvalidValue(f"{what} {value!r} is not {size} bytes of lower-case hex")
    return out


def sign_head(private_key: Ed25519PrivateKey, tree_size: int, root: bytes, last_position: int,
              signed_at: datetime) -> TreeHead:
    """A head for the tree of ``tree_size`` leaves with root ``root``, signed now by ``private_key``."""
    unsigned = TreeHead(tree_size, root, last_position, signed_at.astimezone(UTC),
                        key_id(private_key.public_key()), b"\x00" * 64)
    signature = private_key.sign(unsigned.signed_bytes())
    return TreeHead(unsigned.tree_size, root, last_position, unsigned.signed_at, unsigned.key_id, signature)


def verify_head(head: TreeHead, public_key: Ed25519PublicKey, *, source: str = "tree head") -> None:
    """Raise AuditError (one line) unless ``public_key`` signed ``head``: a head from
    another key names both key ids; a changed head or signature says so."""
    mine = key_id(public_key)
    if head.key_id != mine:
        raise AuditError(f"{source} is signed by key {head.key_id}, not by this key {mine}")
    try:
        public_key.verify(head.signature, head.signed_bytes())
    except InvalidSignature:
        raise AuditError(f"{source}'s signature does not verify with key {mine}: the head was changed after signing") from None
