"""facta.eventstore.merkle against a naive recursive transcription of RFC 6962 section 2.1:
every tree size 1..64 and every pair of sizes; proofs verify and any changed byte, index,
size or root fails; tree heads sign, round-trip through JSON and refuse another key."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from facta.errors import AuditError, InvalidValue
from facta.eventstore import merkle as m

N = 64
LEAVES = [m.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(N)]


# -- RFC 6962 section 2.1, written as the RFC writes it (lists sliced, recursion) -------------

def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = k_of(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(i: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if i < k:
        return path(i, d[:k]) + [mth(d[k:])]
    return path(i - k, d[k:]) + [mth(d[:k])]


def subproof(mm: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if mm == len(d):
        return [] if b else [mth(d)]
    k = k_of(len(d))
    if mm <= k:
        return subproof(mm, d[:k], b) + [mth(d[k:])]
    return subproof(mm - k, d[k:], False) + [mth(d[:k])]


def proof(mm: int, d: Sequence[bytes]) -> list[bytes]:
    return [] if mm in (0, len(d)) else subproof(mm, d, True)


def stored(leaves: Sequence[bytes]) -> dict[m.Node, bytes]:
    """Every complete node of the tree, as the sealer stores them."""
    tree = m.Frontier()
    nodes: dict[m.Node, bytes] = {}
    for leaf in leaves:
        nodes.update(tree.push(leaf))
    return nodes


NODES = stored(LEAVES)


def flipped(proof_: list[bytes], at: int, byte: int) -> list[bytes]:
    out = list(proof_)
    b = bytearray(out[at])
    b[byte] ^= 0x01
    out[at] = bytes(b)
    return out


def test_leaf_and_node_hashes_carry_the_rfc_prefixes() -> None:
    e = bytes(range(32))
    assert m.leaf_hash(e) == hashlib.sha256(b"\x00" + e).digest()
    assert m.node_hash(e, e[::-1]) == hashlib.sha256(b"\x01" + e + e[::-1]).digest()
    assert m.root_hash([]) == m.EMPTY_ROOT == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_the_root_of_every_size_is_the_rfc_mth() -> None:
    for n in range(0, N + 1):
        assert m.root_hash(LEAVES[:n]) == mth(LEAVES[:n]), n
        assert (m.range_hash(0, n, NODES) if n else m.EMPTY_ROOT) == mth(LEAVES[:n]), n


def test_the_frontier_stores_each_complete_node_once_with_its_hash() -> None:
    assert len(NODES) == 2 * N - 1  # 64 leaves: 64 + 32 + ... + 1
    for (level, index), h in NODES.items():
        lo = index << level
        assert h == mth(LEAVES[lo:lo + (1 << level)])
    # A frontier rebuilt from stored nodes (what the sealer does on its next run) grows the same tree.
    for n in range(0, N + 1):
        resumed = m.Frontier(n, [NODES[p] for p in (m.pieces(0, n) if n else [])])
        for leaf in LEAVES[n:]:
            resumed.push(leaf)
        assert resumed.root() == mth(LEAVES)


def test_inclusion_proofs_for_every_leaf_of_every_size_match_the_rfc_and_verify() -> None:
    for n in range(1, N + 1):
        root = mth(LEAVES[:n])
        for i in range(n):
            got = m.inclusion_proof(i, n, NODES)
            assert got == path(i, LEAVES[:n]), (i, n)
            assert len(set(m.inclusion_nodes(i, n))) <= 2 * max(1, n.bit_length())
            assert m.verify_inclusion(LEAVES[i], i, n, got, root)
            assert not m.verify_inclusion(LEAVES[(i + 1) % N], i, n, got, root)
            assert not m.verify_inclusion(LEAVES[i], i, n, got, hashlib.sha256(root).digest())
            if i + 1 < n:
                assert not m.verify_inclusion(LEAVES[i], i + 1, n, got, root)
            assert not m.verify_inclusion(LEAVES[i], i, n, got + [LEAVES[0]], root)
            if got:
                assert not m.verify_inclusion(LEAVES[i], i, n, got[:-1], root)
                for at in range(len(got)):
                    assert not m.verify_inclusion(LEAVES[i], i, n, flipped(got, at, (i + at) % 32), root)


def test_consistency_proofs_for_every_pair_of_sizes_match_the_rfc_and_verify() -> None:
    for n in range(1, N + 1):
        new_root = mth(LEAVES[:n])
        for old in range(0, n + 1):
            old_root = mth(LEAVES[:old])
            got = m.consistency_proof(old, n, NODES)
            assert got == proof(old, LEAVES[:n]), (old, n)
            assert m.verify_consistency(old, n, old_root, new_root, got), (old, n)
            if 0 < old:  # every tree extends the empty one: only old sizes > 0 bind the new root
                assert not m.verify_consistency(old, n, old_root, hashlib.sha256(new_root).digest(), got)
                assert not m.verify_consistency(old, n, hashlib.sha256(old_root).digest(), new_root, got)
            if 0 < old < n:
                for at in range(len(got)):
                    assert not m.verify_consistency(old, n, old_root, new_root, flipped(got, at, at % 32)), (old, n, at)
                assert not m.verify_consistency(old, n, old_root, new_root, got[:-1])
                assert not m.verify_consistency(old, n, old_root, new_root, got + [LEAVES[0]])
                if old + 1 < n:
                    assert not m.verify_consistency(old + 1, n, old_root, new_root, got)
                # A changed old leaf: the new tree does not extend the old one.
                forged = list(LEAVES[:n])
                forged[old - 1] = LEAVES[(old + 5) % N] if LEAVES[(old + 5) % N] != forged[old - 1] else LEAVES[0]
                forged_proof = proof(old, forged)
                assert not m.verify_consistency(old, n, old_root, mth(forged), forged_proof)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.data())
def test_large_trees_prove_and_verify_from_log_many_nodes(n: int, data: st.DataObject) -> None:
    leaves = [m.leaf_hash(i.to_bytes(32, "big")) for i in range(n)]
    nodes = stored(leaves)
    root = m.root_hash(leaves)
    i = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(0, n))
    assert m.verify_inclusion(leaves[i], i, n, m.inclusion_proof(i, n, nodes), root)
    assert m.verify_consistency(old, n, m.root_hash(leaves[:old]), root, m.consistency_proof(old, n, nodes))
    assert len(m.inclusion_nodes(i, n)) <= 2 * n.bit_length()
    assert len(m.consistency_nodes(old, n)) <= 2 * n.bit_length()


def test_bad_arguments_are_refused_with_one_line() -> None:
    with pytest.raises(InvalidValue, match=r"^leaf index 5 is not in a tree of 5 leaves$"):
        m.inclusion_ranges(5, 5)
    with pytest.raises(InvalidValue, match=r"^a tree of 3 leaves cannot extend one of 4$"):
        m.consistency_ranges(4, 3)
    with pytest.raises(InvalidValue, match=r"is not a subtree"):
        m.pieces(1, 3)
    with pytest.raises(InvalidValue, match=r"^a frontier of size 3 has 2 subtrees, not 1$"):
        m.Frontier(3, [LEAVES[0]])


# -- signed tree heads ------------------------------------------------------------------------

WHEN = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_a_head_signs_round_trips_through_json_and_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    head = m.sign_head(key, 7, mth(LEAVES[:7]), 9, WHEN)
    assert head.key_id == hashlib.sha256(key.public_key().public_bytes_raw()).hexdigest()[:16]
    doc = head.as_json()
    assert list(doc) == ["version", "tree_size", "root_hash", "last_position", "signed_at", "key_id", "signature"]
    assert doc["signed_at"] == "2026-12-01T12:00:00.123456Z" and doc["root_hash"] == mth(LEAVES[:7]).hex()
    again = m.TreeHead.from_json(doc)
    assert again == head
    m.verify_head(again, key.public_key())
    assert head.signed_bytes().startswith(b"facta tree head v1\n{\"key_id\":")


@pytest.mark.parametrize("field, value", [
    ("tree_size", 8), ("last_position", 10), ("root_hash", mth(LEAVES[:8]).hex()),
    ("signed_at", "2026-12-01T12:00:00.123457Z"),
])
def test_a_changed_head_is_refused(field: str, value: object) -> None:
    key = Ed25519PrivateKey.generate()
    doc = m.sign_head(key, 7, mth(LEAVES[:7]), 9, WHEN).as_json()
    doc[field] = value
    with pytest.raises(AuditError, match=r"^digest's signature does not verify with key [0-9a-f]{16}: the head was changed after signing$"):
        m.verify_head(m.TreeHead.from_json(doc), key.public_key(), source="digest")


def test_a_head_signed_with_another_key_is_refused_naming_both_keys() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    head = m.sign_head(other, 7, mth(LEAVES[:7]), 9, WHEN)
    with pytest.raises(AuditError) as caught:
        m.verify_head(head, key.public_key(), source="digest.json")
    assert str(caught.value) == (f"digest.json is signed by key {m.key_id(other.public_key())},"
                                 f" not by this key {m.key_id(key.public_key())}")
    # The same key id but another key's signature (a forged key_id): the signature fails.
    forged = m.TreeHead(head.tree_size, head.root_hash, head.last_position, head.signed_at,
                        m.key_id(key.public_key()), head.signature)
    with pytest.raises(AuditError, match="does not verify"):
        m.verify_head(forged, key.public_key())


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("root_hash"), "digest has no 'root_hash'"),
    (lambda d: d.update(extra=1), "digest has an unknown field 'extra'"),
    (lambda d: d.update(version=2), "digest has version 2; this facta reads version 1"),
    (lambda d: d.update(tree_size=-1), "digest's tree_size -1 is not a whole number >= 0"),
    (lambda d: d.update(tree_size=True), "digest's tree_size True is not a whole number >= 0"),
    (lambda d: d.update(root_hash="AB" * 32), "digest's root_hash 'ABAB"),
    (lambda d: d.update(signature="xyz"), "digest's signature 'xyz' is not 64 bytes of base64"),
    (lambda d: d.update(signed_at="yesterday"), "digest's signed_at 'yesterday' is not"),
    (lambda d: d.update(key_id="K"), "digest's key_id 'K' is not 16 lower-case hex digits"),
])
def test_a_malformed_digest_is_refused_naming_the_field(change: object, message: str) -> None:
    doc = m.sign_head(Ed25519PrivateKey.generate(), 7, mth(LEAVES[:7]), 9, WHEN).as_json()
    change(doc)  # type: ignore[operator]
    with pytest.raises(InvalidValue) as caught:
        m.TreeHead.from_json(doc, source="digest")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_key_files_load_and_bad_ones_are_refused(tmp_path: object) -> None:
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

    d = Path(str(tmp_path))
    (d / "k.pem").write_bytes(m.new_private_key_pem())
    key = m.load_private_key(d / "k.pem")
    assert m.key_id(m.load_public_key(d / "k.pem")) == m.key_id(key.public_key())
    (d / "pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert m.key_id(m.load_public_key(d / "pub.pem")) == m.key_id(key.public_key())
    (d / "ec.pem").write_bytes(generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(InvalidValue, match=r"^signing key file '.*ec.pem' holds a key of type \w+, not an Ed25519 key$"):
        m.load_private_key(d / "ec.pem")
    (d / "junk.pem").write_text("junk")
    with pytest.raises(InvalidValue, match=r"^signing key file '.*junk.pem' holds no unencrypted PEM private key"):
        m.load_private_key(d / "junk.pem")
    with pytest.raises(InvalidValue, match=r"^cannot read signing key file '.*missing.pem': No such file"):
        m.load_private_key(d / "missing.pem")
