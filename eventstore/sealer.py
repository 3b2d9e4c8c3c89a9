"""The sealer and the proofs of the Merkle log (revision 0011), over the tree of
:mod:`facta.eventstore.merkle`.

:func:`seal` folds the settled log into the tree, in position order, and signs a head:

- **Only settled positions.** It reads events only up to :meth:`EventStore.head_position`
  (on PostgreSQL the settled horizon: every position at or below it is committed or will
  never exist, see ARCHITECTURE.md, "The gap-free global log"), so an append in flight
  at a lower position can never commit after the tree passed it: a sealed tree misses no
  event that will ever be visible. On SQLite positions become visible in order.
- **Never re-folds.** Leaves and complete nodes are written once (``facta_tree_leaves``,
  ``facta_tree_nodes``); a run starts from the stored frontier (the complete subtrees of
  the current size, one per 1-bit of it, read by primary key) and appends. A run writes
  :data:`SEAL_BATCH` leaves per transaction, each checking that no other sealer wrote
  leaves in between (then it stops with an error: run it again).
- **One signed head per run** that grew the tree (and one for the empty tree on a store's
  first run), in ``facta_tree_heads``.

:func:`prove` builds an inclusion proof for an event from O(log n) stored nodes read in
one query (plus the event, its leaf and the newest head); :func:`verify_proof` checks
one offline. :func:`verify_tree` recomputes the tree from the stored event hashes and
checks it against the sealed leaves, every stored head and, given a digest saved earlier,
proves the current tree extends the digest's (consistency proof from stored nodes, and
the digest's root recomputed from the events).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Text, and_, cast, column, func, or_, select, text, tuple_

from facta.errors import AuditError, InvalidValue

from . import integrity, merkle
from .merkle import Frontier, Node, TreeHead
from .schema import events, tree_heads, tree_leaves, tree_nodes

if TYPE_CHECKING:
    from .store import EventStore

__all__ = [
    "EVENT_FIELDS",
    "PROOF_VERSION",
    "SEAL_BATCH",
    "SealReport",
    "TreeReport",
    "latest_head",
    "prove",
    "seal",
    "verify_proof",
    "verify_tree",
]

#: Leaves written per transaction by :func:`seal`.
SEAL_BATCH = 10_000
#: Rows read per query by :func:`verify_tree`.
VERIFY_BATCH = 20_000
#: The ``version`` of the proof document :func:`prove` writes and :func:`verify_proof` reads.
PROOF_VERSION = 1

_EVENT_HASHES = text(
    "SELECT position, event_hash FROM facta_events WHERE position > :after AND position <= :upto"
    " ORDER BY position LIMIT :n"
)


@dataclass(frozen=True, slots=True)
class SealReport:
    """What one :func:`seal` run did: ``added`` leaves (events), the tree's size after it
    and the head it signed (None when the tree did not grow and a head existed)."""

    added: int
    tree_size: int
    head: TreeHead | None


def _head_of(row: Sequence[Any]) -> TreeHead:
    return TreeHead(int(row[0]), bytes(row[1]), int(row[2]), row[3], str(row[4]), bytes(row[5]))


_HEAD_COLUMNS = (tree_heads.c.tree_size, tree_heads.c.root_hash, tree_heads.c.last_position,
                 tree_heads.c.signed_at, tree_heads.c.key_id, tree_heads.c.signature)


def _latest_head(conn: Connection) -> TreeHead | None:
    row = conn.execute(select(*_HEAD_COLUMNS).order_by(tree_heads.c.tree_size.desc()).limit(1)).first()
    return None if row is None else _head_of(row)


async def latest_head(store: EventStore) -> TreeHead | None:
    """The newest signed tree head (the largest tree), or None before the first seal."""
    return await store.database.read(_latest_head)


def _nodes(conn: Connection, wanted: Sequence[Node]) -> dict[Node, bytes]:
    """The stored complete nodes ``wanted``, leaves (level 0) included; one query per table."""
    out: dict[Node, bytes] = {}
    leaves = [i for level, i in wanted if level == 0]
    upper = [(level, i) for level, i in wanted if level > 0]
    if leaves:
        for index, h in conn.execute(select(tree_leaves.c.leaf_index, tree_leaves.c.leaf_hash)
                                     .where(tree_leaves.c.leaf_index.in_(leaves))):
            out[(0, int(index))] = bytes(h)
    if upper:
        key = tuple_(tree_nodes.c.level, tree_nodes.c.node_index)
        for level, index, h in conn.execute(select(tree_nodes.c.level, tree_nodes.c.node_index, tree_nodes.c.hash)
                                            .where(key.in_(upper))):
            out[(int(level), int(index))] = bytes(h)
    missing = [n for n in wanted if n not in out]
    if missing:
        raise AuditError(f"the stored tree has no node {missing[0]} (level, index): the tree tables were changed")
    return out


@dataclass(slots=True)
class _Sealed:
    size: int
    last_position: int
    frontier: Frontier
    head: TreeHead | None


def _sealed_state(conn: Connection) -> _Sealed:
    row = conn.execute(select(tree_leaves.c.leaf_index, tree_leaves.c.position)
                       .order_by(tree_leaves.c.leaf_index.desc()).limit(1)).first()
    size, last = (0, 0) if row is None else (int(row[0]) + 1, int(row[1]))
    wanted = merkle.pieces(0, size) if size else []
    nodes = _nodes(conn, wanted)
    return _Sealed(size, last, Frontier(size, [nodes[n] for n in wanted]), _latest_head(conn))


def _read_hashes(conn: Connection, after: int, upto: int, n: int) -> list[tuple[int, bytes | None]]:
    rows = conn.execute(_EVENT_HASHES, {"after": after, "upto": upto, "n": n}).all()
    return [(int(p), None if h is None else bytes(h)) for p, h in rows]


def _write_batch(conn: Connection, expected_size: int, leaves: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
    found = conn.execute(select(func.max(tree_leaves.c.leaf_index))).scalar()
    size = 0 if found is None else int(found) + 1
    if size != expected_size:
        raise AuditError(f"another sealer grew the tree to {size} leaves while this one was at {expected_size}: run it again")
    conn.execute(tree_leaves.insert(), leaves)
    if nodes:
        conn.execute(tree_nodes.insert(), nodes)


def _write_head(conn: Connection, head: TreeHead) -> None:
    conn.execute(tree_heads.insert().values(
        tree_size=head.tree_size, root_hash=head.root_hash, last_position=head.last_position,
        signed_at=head.signed_at, key_id=head.key_id, signature=head.signature))


async def seal(store: EventStore, key: Ed25519PrivateKey, *, batch: int = SEAL_BATCH,
               now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> SealReport:
    """Fold the settled events not yet in the tree into it, in position order, and sign a
    head with ``key`` when the tree grew (or no head exists yet).

    Every event folded must have its event hash (revision 0010; older events get theirs
    from the backfill ``facta audit seal`` runs first). Raises AuditError naming the first
    position without one, or when another sealer wrote leaves meanwhile; the leaves
    written before stay (they are final) and the next run continues from them."""
    if batch < 1:
        raise InvalidValue(f"batch {batch!r} is not a whole number >= 1")
    upto = await store.head_position()
    state = await store.database.read(_sealed_state)
    added = 0
    while state.last_position < upto:
        rows = await store.database.read(_read_hashes, state.last_position, upto, batch)
        if not rows:
            break
        leaves: list[dict[str, Any]] = []
        nodes: list[dict[str, Any]] = []
        start = state.size
        for position, event_hash in rows:
            if event_hash is None or len(event_hash) != merkle.HASH_SIZE:
                raise AuditError(f"the event at position {position} has no event hash: run the hash backfill first")
            for (level, index), h in state.frontier.push(merkle.leaf_hash(event_hash)):
                if level == 0:
                    leaves.append({"leaf_index": index, "position": position, "leaf_hash": h})
                else:
                    nodes.append({"level": level, "node_index": index, "hash": h})
        await store.database.write(_write_batch, start, leaves, nodes)
        state.size = state.frontier.size
        state.last_position = rows[-1][0]
        added += len(rows)
    if added == 0 and state.head is not None:
        return SealReport(0, state.size, None)
    if state.head is not None and state.head.tree_size == state.size:
        return SealReport(added, state.size, None)
    head = merkle.sign_head(key, state.size, state.frontier.root(), state.last_position, now())
    await store.database.write(_write_head, head)
    return SealReport(added, state.size, head)


# -- inclusion proofs -------------------------------------------------------------------------

_PREVIOUS = text(
    "SELECT event_hash FROM facta_events WHERE stream_id = :s AND version < :v ORDER BY version DESC LIMIT 1"
)
#: The event's fields a proof carries, in the order of its ``event`` object.
EVENT_FIELDS = ("stream_id", "stream_type", "version", "event_type", "schema_version", "payload", "payload_bytes",
                "occurred_at", "actor", "correlation_id", "causation_id")
_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def _proof_parts(conn: Connection, event_id: uuid.UUID) -> dict[str, Any]:
    c = events.c
    row = conn.execute(select(c.position, c.stream_id, c.stream_type, c.version, c.event_type, c.schema_version,
                              cast(c.payload, Text()), c.payload_bytes, c.occurred_at, c.actor, c.correlation_id, c.causation_id,
                              column("event_hash")).where(c.event_id == event_id)).first()
    if row is None:
        raise AuditError(f"no event {event_id}")
    position = int(row[0])
    event: dict[str, Any] = dict(zip(EVENT_FIELDS, row[1:12], strict=True))
    if row[7] is not None:  # a byte event: its hash covers the bytes, not the payload column's text
        event["payload"], event["payload_bytes"] = None, bytes(row[7])
    event_hash = None if row[12] is None else bytes(row[12])
    digest = integrity.content_digest(event_id=event_id, **event)
    event["occurred_at"] = event["occurred_at"].astimezone(UTC).strftime(_TIME)
    # The chain's predecessor: the stream's previous event's hash, or ZERO (a stream's
    # first event, or its first one hashed after the backfill start): whichever this
    # event's hash was made from (facta.eventstore.integrity).
    before = conn.execute(_PREVIOUS, {"s": event["stream_id"], "v": event["version"]}).scalar()
    prev = integrity.ZERO if before is None else bytes(before)
    if event_hash is not None and integrity.event_hash(prev, digest) != event_hash \
            and integrity.event_hash(integrity.ZERO, digest) == event_hash:
        prev = integrity.ZERO
    head = _latest_head(conn)
    leaf = conn.execute(select(tree_leaves.c.leaf_index, tree_leaves.c.leaf_hash)
                        .where(tree_leaves.c.position == position)).first()
    if head is None or leaf is None or int(leaf[0]) >= head.tree_size:
        raise AuditError(f"event {event_id} (position {position}) is not sealed yet: run facta audit seal")
    index = int(leaf[0])
    nodes = _nodes(conn, merkle.inclusion_nodes(index, head.tree_size))
    return {"position": position, "event": event, "prev_hash": prev, "event_hash": event_hash,
            "leaf_index": index, "head": head, "path": merkle.inclusion_proof(index, head.tree_size, nodes)}


async def prove(store: EventStore, event_id: uuid.UUID) -> dict[str, Any]:
    """The inclusion proof of event ``event_id`` in the newest signed tree, as the JSON
    document ``facta audit prove`` prints: version, event_id, position, leaf_index, event
    (the fields its hash covers: stream_id, stream_type, version, event_type,
    schema_version, payload (the JSON text as the store returns it) or payload_bytes
    (base64), occurred_at (ISO 8601 UTC, microseconds), actor, correlation_id,
    causation_id), prev_hash (hex: its stream predecessor's hash, the chain's input),
    event_hash (hex), audit_path (hex, the leaf's sibling first) and tree_head (the signed
    head, as ``facta audit digest`` prints it). Reads the event, its predecessor's hash,
    its leaf, the head and at most about 2 * log2(tree size) stored nodes in one query.

    Raises AuditError for an unknown event or one not sealed yet."""
    parts = await store.database.read(_proof_parts, event_id)
    head: TreeHead = parts["head"]
    event = dict(parts["event"])
    if event["payload_bytes"] is not None:
        event["payload_bytes"] = base64.b64encode(event["payload_bytes"]).decode("ascii")
    return {
        "version": PROOF_VERSION,
        "event_id": str(event_id),
        "position": parts["position"],
        "leaf_index": parts["leaf_index"],
        "event": event,
        "prev_hash": parts["prev_hash"].hex(),
        "event_hash": None if parts["event_hash"] is None else parts["event_hash"].hex(),
        "audit_path": [h.hex() for h in parts["path"]],
        "tree_head": head.as_json(),
    }


def _proof_event(doc: dict[str, Any], source: str) -> tuple[uuid.UUID, dict[str, Any]]:
    """The event id and the fields of a proof's ``event``, checked for their types."""
    try:
        event_id = uuid.UUID(str(doc["event_id"]))
    except ValueError:
        raise InvalidValue(f"{source}'s event_id {doc['event_id']!r} is not a UUID") from None
    event = doc["event"]
    if not isinstance(event, dict) or sorted(event) != sorted(EVENT_FIELDS):
        raise InvalidValue(f"{source}'s event does not hold exactly the fields {', '.join(EVENT_FIELDS)}")
    kinds: dict[str, tuple[type, ...]] = {
        "stream_id": (str,), "stream_type": (str,), "version": (int,), "event_type": (str,), "schema_version": (int,),
        "payload": (str, type(None)), "payload_bytes": (str, type(None)), "occurred_at": (str,),
        "actor": (str, type(None)), "correlation_id": (str, type(None)), "causation_id": (str, type(None)),
    }
    for name, allowed in kinds.items():
        if type(event[name]) not in allowed:
            raise InvalidValue(f"{source}'s event.{name} {event[name]!r} is not of type {' or '.join(t.__name__ for t in allowed)}")
    fields = dict(event)
    if fields["payload_bytes"] is not None:
        try:
            fields["payload_bytes"] = base64.b64decode(fields["payload_bytes"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue(f"{source}'s event.payload_bytes is not base64") from None
    if (fields["payload"] is None) == (fields["payload_bytes"] is None):
        raise InvalidValue(f"{source}'s event has both or neither of payload and payload_bytes")
    try:
        fields["occurred_at"] = datetime.strptime(fields["occurred_at"], _TIME).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidValue(f"{source}'s event.occurred_at {event['occurred_at']!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ") from None
    return event_id, fields


def verify_proof(doc: object, public_key: Ed25519PublicKey, *, source: str = "proof") -> TreeHead:
    """Check an inclusion proof document (:func:`prove`'s) offline: the head's signature
    with ``public_key``; the event's fields and prev_hash hash to its event_hash (the chain
    step of :mod:`facta.eventstore.integrity`); the audit path leads from that event
    hash's leaf to the head's root. Returns the head. Raises InvalidValue (one line, naming
    ``source`` and the field) for a malformed document, AuditError for a head another key
    signed, a changed head, an event whose fields do not give its hash, or a path that
    does not lead to the root."""
    doc = merkle.read_document(doc, source=source, version=PROOF_VERSION, whole=("position", "leaf_index"),
                               fields=("version", "event_id", "position", "leaf_index", "event", "prev_hash",
                                       "event_hash", "audit_path", "tree_head"))
    event_id, event = _proof_event(doc, source)
    prev = merkle.read_hex(doc["prev_hash"], f"{source}'s prev_hash", merkle.HASH_SIZE)
    event_hash = merkle.read_hex(doc["event_hash"], f"{source}'s event_hash", merkle.HASH_SIZE)
    path = doc["audit_path"]
    if not isinstance(path, list):
        raise InvalidValue(f"{source}'s audit_path is not a list")
    hashes = [merkle.read_hex(h, f"{source}'s audit_path[{i}]", merkle.HASH_SIZE) for i, h in enumerate(path)]
    head = TreeHead.from_json(doc["tree_head"], source=f"{source}'s tree_head")
    merkle.verify_head(head, public_key, source=f"{source}'s tree head")
    if integrity.event_hash(prev, integrity.content_digest(event_id=event_id, **event)) != event_hash:
        raise AuditError(f"{source}: the fields of event {event_id} and prev_hash do not hash to its event_hash:"
                         " the event in the proof was changed")
    if not merkle.verify_inclusion(merkle.leaf_hash(event_hash), doc["leaf_index"], head.tree_size, hashes, head.root_hash):
        raise AuditError(f"{source}: event {event_id} (position {doc['position']}, leaf {doc['leaf_index']})"
                         f" is not in the tree of {head.tree_size} events its head signs: the proof or the event was changed")
    if doc["position"] > head.last_position:
        raise AuditError(f"{source}: position {doc['position']} is past the head's last position {head.last_position}")
    return head


# -- verifying the tree -----------------------------------------------------------------------

@dataclass(slots=True)
class TreeReport:
    """What :func:`verify_tree` found: ``problem`` None when intact, else one line naming
    the first position (or head) where the stored log and its tree differ; ``position``
    that position when there is one. ``leaves`` checked, ``heads`` checked, the newest
    head, and ``unsealed``: events above its last position (not covered yet)."""

    leaves: int = 0
    heads: int = 0
    head: TreeHead | None = None
    unsealed: int = 0
    problem: str | None = None
    position: int | None = None
    against: TreeHead | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.problem is None


def _all_heads(conn: Connection) -> list[TreeHead]:
    return [_head_of(r) for r in conn.execute(select(*_HEAD_COLUMNS).order_by(tree_heads.c.tree_size))]


def _leaf_rows(conn: Connection, after: int, n: int) -> list[tuple[int, int, bytes]]:
    rows = conn.execute(select(tree_leaves.c.leaf_index, tree_leaves.c.position, tree_leaves.c.leaf_hash)
                        .where(tree_leaves.c.leaf_index > after).order_by(tree_leaves.c.leaf_index).limit(n)).all()
    return [(int(i), int(p), bytes(h)) for i, p, h in rows]


def _count_after(conn: Connection, position: int) -> int:
    return int(conn.execute(text("SELECT count(*) FROM facta_events WHERE position > :p"), {"p": position}).scalar() or 0)


async def verify_tree(store: EventStore, public_key: Ed25519PublicKey, *, against: TreeHead | None = None,
                      progress: Callable[[int], None] | None = None) -> TreeReport:
    """Recompute the tree from the stored event hashes and compare, in position order:

    1. the saved digest's signature, then every stored head's, with ``public_key``
       (AuditError for another key's);
    2. each sealed leaf against the event at its place: the same position (else an
       event was deleted or inserted) and SHA-256(0x00 || event_hash) (else the event's
       hash, or the leaf, was changed); and every stored node against the tree recomputed
       from them (the nodes later proofs are built from);
    3. the recomputed root at every stored head's size against that head's root;
    4. with ``against`` (a digest saved earlier): its size is
       at most the newest head's, the recomputed root at its size is its root, and the
       consistency proof built from the stored nodes shows the newest head's tree
       extends it (RFC 9162 section 2.1.4.2).

    Returns a :class:`TreeReport` whose ``problem`` names the first difference; raises
    AuditError when no head is stored yet or a signature is refused."""
    report = TreeReport()
    heads = await store.database.read(_all_heads)
    if not heads:
        raise AuditError("no signed tree head yet: run facta audit seal")
    if against is not None:
        merkle.verify_head(against, public_key, source="the saved digest")
        report.against = against
    for h in heads:
        merkle.verify_head(h, public_key, source=f"stored tree head {h.tree_size}")
    newest = heads[-1]
    report.head, report.heads = newest, len(heads)
    by_size = {h.tree_size: h for h in heads}
    if newest.tree_size == 0 and 0 in by_size and by_size[0].root_hash != merkle.EMPTY_ROOT:
        return _bad(report, "stored tree head 0 does not sign the empty tree's root", None)
    if against is not None and against.tree_size > newest.tree_size:
        return _bad(report, f"the saved digest signs {against.tree_size} events but the newest head only"
                            f" {newest.tree_size}: the log lost events since (or was never sealed past it)", against.last_position)
    tree = Frontier()
    after_position, after_leaf = 0, -1
    digest_root: bytes | None = merkle.EMPTY_ROOT if against is not None and against.tree_size == 0 else None
    while tree.size < newest.tree_size:
        events = await store.database.read(_read_hashes, after_position, newest.last_position, VERIFY_BATCH)
        leaves = await store.database.read(_leaf_rows, after_leaf, min(VERIFY_BATCH, newest.tree_size - tree.size))
        stored_nodes = await store.database.read(_nodes_completed, tree.size, tree.size + len(leaves))
        for k, (index, position, stored_leaf) in enumerate(leaves):
            if k >= len(events):
                return _bad(report, f"position {position}: the event sealed as leaf {index} is missing (deleted)", position)
            event_position, event_hash = events[k]
            if event_position < position:
                return _bad(report, f"position {event_position}: an event the sealed tree does not hold (inserted"
                                    f" before leaf {index} at position {position})", event_position)
            if event_position > position:
                return _bad(report, f"position {position}: the event sealed as leaf {index} is missing (deleted)", position)
            if event_hash is None or merkle.leaf_hash(event_hash) != stored_leaf:
                return _bad(report, f"position {position}: the event's hash does not match leaf {index} sealed for it"
                                    " (the event, its hash or the leaf was changed)", position)
            for (level, node_index), node in tree.push(stored_leaf)[1:]:
                if stored_nodes.get((level, node_index)) != node:
                    first = node_index << level
                    return _bad(report, f"position {position}: the stored node ({level}, {node_index}) over leaves"
                                        f" {first} to {first + (1 << level) - 1} differs from the tree recomputed from"
                                        " the events (the tree tables were changed)", position)
            head = by_size.get(tree.size)
            if head is not None and tree.root() != head.root_hash:
                return _bad(report, f"stored tree head {head.tree_size} does not sign the root of the first"
                                    f" {head.tree_size} sealed events (position {position})", position)
            if against is not None and tree.size == against.tree_size:
                digest_root = tree.root()
                if digest_root != against.root_hash:
                    return _bad(report, f"the log's first {against.tree_size} events (to position {against.last_position})"
                                        " do not hash to the saved digest's root: history it committed to was rewritten",
                                        against.last_position)
                if position != against.last_position:
                    return _bad(report, f"the saved digest's last position is {against.last_position}, the log's"
                                        f" {against.tree_size}th event is at {position}", position)
        if not leaves:
            return _bad(report, f"the stored tree has {tree.size} leaves, its newest head signs {newest.tree_size}", None)
        after_leaf = leaves[-1][0]
        after_position = leaves[-1][1]
        report.leaves = tree.size
        if progress is not None:
            progress(tree.size)
    if tree.size > 0 and after_position != newest.last_position:
        return _bad(report, f"stored tree head {newest.tree_size} names last position {newest.last_position},"
                            f" its last leaf is at {after_position}", after_position)
    # Nothing after the newest head's last leaf may be missing between leaves: checked above.
    if against is not None:
        if digest_root is None:
            return _bad(report, "the saved digest's tree size was never reached", None)
        proof = await store.database.read(_consistency, against.tree_size, newest.tree_size)
        if not merkle.verify_consistency(against.tree_size, newest.tree_size, against.root_hash, newest.root_hash, proof):
            return _bad(report, f"the stored tree does not prove that head {newest.tree_size} extends the saved digest's"
                                f" tree of {against.tree_size} (the stored nodes were changed)", None)
    report.unsealed = await store.database.read(_count_after, newest.last_position)
    return report


def _nodes_completed(conn: Connection, low: int, high: int) -> dict[Node, bytes]:
    """The stored nodes (level >= 1) that the leaves ``low`` to ``high - 1`` complete:
    node (L, i) is complete once (i + 1) * 2**L leaves exist. One range per level, on the
    primary key."""
    c = tree_nodes.c
    ranges = [and_(c.level == level, c.node_index >= low >> level, c.node_index <= (high >> level) - 1)
              for level in range(1, max(high, 1).bit_length() + 1) if (high >> level) - 1 >= low >> level]
    if not ranges:
        return {}
    rows = conn.execute(select(c.level, c.node_index, c.hash).where(or_(*ranges)))
    return {(int(level), int(index)): bytes(h) for level, index, h in rows}


def _consistency(conn: Connection, old: int, new: int) -> list[bytes]:
    return merkle.consistency_proof(old, new, _nodes(conn, merkle.consistency_nodes(old, new)))


def _bad(report: TreeReport, problem: str, position: int | None) -> TreeReport:
    report.problem, report.position = problem, position
    return report
