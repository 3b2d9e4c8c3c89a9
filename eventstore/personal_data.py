"""Personal data that can be erased: encryption at append, decryption at read, forgetting.

A field marked ``PersonalData`` (:mod:`facta.domain.personal`) is encrypted when it is
stored and decrypted when it is read; forgetting the subject destroys its key, and every
reader shows :data:`~facta.domain.ERASED` in the field from then on (crypto-shredding).

**Stored form.** The field's JSON value becomes the string
``"pd1:" + base64(key id || nonce || ciphertext || tag)`` (standard base64 with padding):
``key id`` the first 8 bytes of SHA-256(``b"facta.kid\\0"`` || key) (tells the key a
token was sealed with from a later key of the same subject; it is no secret about the
key), ``nonce`` 12 random bytes, fresh per field, and AES-256-GCM's ciphertext of the
value's UTF-8 bytes with its 16-byte tag (``cryptography``'s ``AESGCM``). The associated
data binds the ciphertext to where it stands: for an event
``b"facta.pd1.event\\0" + event id (16 bytes) + field + b"\\0" + subject``, for a snapshot
``b"facta.pd1.state\\0" + stream id + b"\\0" + version + b"\\0" + field + b"\\0" +
subject`` (UTF-8), so a token copied to another event or field does not open. A ``None``
is stored as ``null``. The stored payload holds the ciphertext only; hashes of the
history (``facta audit verify``) cover it, so they still hold after a forget.

**Keys.** A :class:`KeyStore` gives each subject one random 256-bit data key. The default
is :class:`SqlKeyStore` (table ``facta_subject_keys`` of the same database, the one table
facta deletes from); replace it with a KMS-backed one by passing ``key_store=`` to
:meth:`facta.eventstore.EventStore.open`. An append asks the key store once, for every
subject of the append together (creating the missing keys); a read asks once per page
for the subjects of that page's sealed fields. Keys appear in no message, log or repr.

**Reads.** :meth:`EventStore.read_stream`, ``read_log``, ``read_log_window``,
``iter_log``, ``find_events``, ``get_event`` and ``read_from_snapshot`` return records
whose ``payload`` has each sealed field replaced by its plaintext (the subject's key
exists) or by :data:`~facta.domain.ERASED` (it was forgotten, or the token was sealed
with an earlier key of the subject). The raw reads (``read_log_rows``, what the relay
publishes to Kafka, and the byte reads) return the stored ciphertext. A token that does
not open with the key it names (changed bytes) is a :class:`PersonalDataError`.

**Sealing keys.** An appending store keeps the keys it sealed with for
``FACTA_KEY_CACHE_S`` seconds (default 2) and asks the key store only for the others;
:func:`forget_subject` waits that long after destroying a key before it returns. Reads
always ask the key store.

**Forgetting.** :func:`forget_subject` (``facta gdpr forget SUBJECT``) destroys the key
and appends :class:`SubjectForgotten` (who, when, which subject; never the data) to the
facta-owned stream ``facta.gdpr/<subject>``. A later append for the same subject gets a
new key; the erased fields stay erased.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic_core import to_json as _to_json
from sqlalchemy import Connection, delete, select

from facta.domain import ERASED, DomainEvent, PendingEvent
from facta.errors import ConcurrencyError, InvalidValue, PersonalDataError

from .database import Database
from .records import RecordedEvent, Snapshot, StreamAppend
from .schema import subject_keys
from .validation import positional_floats

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .store import EventStore

__all__ = [
    "ERASED",
    "FORGOTTEN_STREAM_TYPE",
    "PREFIX",
    "KeyStore",
    "SqlKeyStore",
    "SubjectForgotten",
    "forget_subject",
]

#: The start of a sealed field's stored string.
PREFIX = "pd1:"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's recommended nonce (NIST SP 800-38D, 8.2)
KID_BYTES = 8
#: The stream type of the facta-owned streams recording erasures.
FORGOTTEN_STREAM_TYPE = "facta.gdpr"
# A digit before e/E and a sign or digit: where pydantic may have written an exponent (a
# base64 token may match too; positional_floats then skips it as a string).
_EXPONENT_HINT = re.compile(r"[0-9][eE][-+0-9]")
_CACHE_LIMIT = 100_000  # subjects whose sealing keys a store keeps at most (then it starts over)
_SUBJECT_LIMIT = 255  # a stream id's limit: a stream can be its own subject (PersonalData())


@runtime_checkable
class KeyStore(Protocol):
    """Where subjects' data keys live (32 random bytes each). Replace the default
    :class:`SqlKeyStore` with one backed by a KMS by implementing these three calls.

    A key store must never put a key in a message, log or repr."""

    async def get_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        """The keys of those of ``subjects`` that have one (a forgotten subject has none)."""
        ...

    async def create_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        """The key of every one of ``subjects``, creating a fresh random one for each
        subject that has none (concurrent callers must end up with the same key)."""
        ...

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key; True if there was one."""
        ...


class SqlKeyStore:
    """The default :class:`KeyStore`: the table ``facta_subject_keys`` (revision 0012)
    of ``database``, one row per subject (subject, data key, created at). ``forget``
    deletes the row. Keys are made with ``os.urandom``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def __repr__(self) -> str:
        return f"SqlKeyStore({self.database.url.render_as_string(hide_password=True)!r})"

    async def get_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        if not subjects:
            return {}
        # On the hot paths (every append and read page with personal data): one prebuilt
        # driver statement, as the store's own fast reads, not a Core query.
        wanted = list(subjects)
        if self.database.dialect == "postgresql":
            async with self.database.driver_connection() as conn:
                rows = await conn.fetch(_PG_SELECT_KEYS, wanted)
        else:
            from ._bytes import sqlite_fetch

            rows = []
            for start in range(0, len(wanted), _SQLITE_CHUNK):
                chunk = wanted[start:start + _SQLITE_CHUNK]
                rows += await self.database.read(sqlite_fetch, _sqlite_select_keys(len(chunk)), chunk)
        return {row[0]: bytes(row[1]) for row in rows}

    async def create_keys(self, subjects: Collection[str]) -> Mapping[str, bytes]:
        if not subjects:
            return {}
        found = await self.get_keys(subjects)
        missing = [s for s in subjects if s not in found]
        if not missing:
            return found
        now = datetime.now(UTC)
        rows = [{"subject": s, "data_key": os.urandom(KEY_BYTES), "created_at": now} for s in missing]
        return {**found, **await self.database.write(_insert_keys, self.database.dialect, rows)}

    async def forget(self, subject: str) -> bool:
        return bool(await self.database.write(_delete_key, subject))


_PG_SELECT_KEYS = "SELECT subject, data_key FROM facta_subject_keys WHERE subject = ANY($1::text[])"
_SQLITE_CHUNK = 500  # subjects per statement: below SQLite's bound-parameter limit


def _sqlite_select_keys(n: int) -> str:
    return f"SELECT subject, data_key FROM facta_subject_keys WHERE subject IN ({', '.join('?' * n)})"


def _select_keys(conn: Connection, subjects: list[str]) -> dict[str, bytes]:
    rows = conn.execute(select(subject_keys.c.subject, subject_keys.c.data_key)
                        .where(subject_keys.c.subject.in_(subjects)))
    return {row[0]: bytes(row[1]) for row in rows}


def _insert_keys(conn: Connection, dialect: str, rows: list[dict[str, Any]]) -> dict[str, bytes]:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    conn.execute(insert(subject_keys).on_conflict_do_nothing(), rows)
    return _select_keys(conn, [r["subject"] for r in rows])  # a concurrent creator's key wins


def _delete_key(conn: Connection, subject: str) -> int:
    if conn.dialect.name == "sqlite":
        # Zero the deleted row's bytes in the file's pages, not only unlink them.
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    return int(conn.execute(delete(subject_keys).where(subject_keys.c.subject == subject)).rowcount)


class SubjectForgotten(DomainEvent, name="facta.subject_forgotten", version=1):
    """The record of an erasure: ``subject`` (whose key was destroyed) and whether a key
    existed. Who and when are the event's actor and occurred-at time."""

    subject: str
    key_destroyed: bool


# -- sealing and opening ----------------------------------------------------------------------


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"facta.kid\x00" + key).digest()[:KID_BYTES]


def _event_aad(event_id: uuid.UUID, field: str, subject: str) -> bytes:
    # Shredder.seal builds the same bytes inline (its hot loop).
    return b"facta.pd1.event\x00" + event_id.bytes + field.encode() + b"\x00" + subject.encode()


def _state_aad(stream_id: str, version: int, field: str, subject: str) -> bytes:
    return f"facta.pd1.state\x00{stream_id}\x00{version}\x00{field}\x00{subject}".encode()


class _Keys:
    """The keys of one append or one read: checked once, ciphers made once per subject."""

    def __init__(self, keys: Mapping[str, bytes], wanted: Collection[str], *, create: bool) -> None:
        # cryptography is imported by the first personal data sealed or opened, not by
        # `import facta.eventstore` (see ARCHITECTURE.md, "Import cost").
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.ciphers: dict[str, tuple[bytes, AESGCM]] = {}
        for subject in wanted:
            key = keys.get(subject)
            if key is None:
                if create:
                    raise PersonalDataError(f"the key store gave no key for subject {subject!r}")
                continue
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise PersonalDataError(
                    f"the key store gave subject {subject!r} a key of"
                    f" {len(key) if isinstance(key, bytes) else type(key).__name__}"
                    f"{' bytes' if isinstance(key, bytes) else ''}; facta takes {KEY_BYTES} bytes"
                )
            self.ciphers[subject] = (key_id(key), AESGCM(key))

    def seal(self, subject: str, value: str, aad: bytes, nonce: bytes) -> str:
        kid, cipher = self.ciphers[subject]
        sealed = cipher.encrypt(nonce, value.encode(), aad)
        return PREFIX + binascii.b2a_base64(kid + nonce + sealed, newline=False).decode("ascii")

    def open(self, subject: str, token: str, aad: bytes, where: str) -> str:
        try:
            raw = base64.b64decode(token[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise PersonalDataError(f"{where}: the stored value is not a sealed field (bad base64)") from None
        if len(raw) < KID_BYTES + NONCE_BYTES + 16:
            raise PersonalDataError(f"{where}: the stored value is not a sealed field (too short)")
        found = self.ciphers.get(subject)
        if found is None or found[0] != raw[:KID_BYTES]:
            return ERASED  # forgotten, or sealed with an earlier key of the subject
        from cryptography.exceptions import InvalidTag

        try:
            return found[1].decrypt(raw[KID_BYTES:KID_BYTES + NONCE_BYTES], raw[KID_BYTES + NONCE_BYTES:], aad).decode()
        except InvalidTag:
            raise PersonalDataError(f"{where}: the sealed value does not open with subject {subject!r}'s key"
                                    " (changed ciphertext, or copied from another event or field)") from None


def check_key_store(value: object) -> KeyStore:
    if not isinstance(value, KeyStore):
        raise InvalidValue(
            f"key_store must be a KeyStore (async get_keys, create_keys and forget), got {type(value).__name__}"
        )
    return value


def key_store_from_settings(database: Database) -> KeyStore:
    """The key store ``FACTA_KEY_STORE`` names (``module:factory``, the factory called
    with ``database``), or :class:`SqlKeyStore` on ``database`` when it is unset or empty.
    Raises :class:`~facta.errors.InvalidSetting` (one line) for a value that is not
    ``module:factory``, a module that does not import, a missing factory, or a factory
    that raises or returns something that is not a :class:`KeyStore`."""
    from facta.errors import InvalidSetting
    from facta.settings import settings
    from facta.user_modules import import_failure, import_user_module, is_module_name

    spec = settings().key_store
    if not spec:
        return SqlKeyStore(database)
    module_name, _, name = spec.partition(":")
    if not is_module_name(module_name) or not name.isidentifier():
        raise InvalidSetting("FACTA_KEY_STORE", spec, "module:factory, e.g. shop.keys:make_key_store")
    try:
        factory = getattr(import_user_module(module_name), name)
    except AttributeError:
        raise InvalidSetting("FACTA_KEY_STORE", spec, f"a factory named {name!r} in {module_name}") from None
    except Exception as exc:
        raise InvalidSetting("FACTA_KEY_STORE", spec, f"an importable module ({import_failure(exc)})") from None
    try:
        made = factory(database)
    except Exception as exc:
        raise InvalidSetting("FACTA_KEY_STORE", spec, f"a factory that makes a KeyStore ({import_failure(exc)})") from None
    if not isinstance(made, KeyStore):
        raise InvalidSetting("FACTA_KEY_STORE", spec,
                             f"a factory that returns a KeyStore (it returned {type(made).__name__})")
    return made


def _subject_of(event: Any, subject_field: str | None, stream_id: str, where: str) -> str:
    subject = stream_id if subject_field is None else getattr(event, subject_field)
    if not isinstance(subject, str) or not subject or len(subject) > _SUBJECT_LIMIT:
        raise InvalidValue(
            f"{where}: subject {subject!r} (field {subject_field or 'stream id'!r}) must be a non-empty"
            f" string of at most {_SUBJECT_LIMIT} characters"
        )
    return subject


class Shredder:
    """The store's personal-data part: seals payloads at append, opens them at read."""

    def __init__(self, key_store: KeyStore, cache_s: float = 0.0) -> None:
        self.key_store = key_store
        #: Seconds a key fetched for sealing is used again without asking the key store
        #: (``FACTA_KEY_CACHE_S``); reads never use these keys.
        self.cache_s = cache_s
        self._sealing: dict[str, tuple[float, bytes]] = {}  # subject -> (monotonic time fetched, key)

    def forget_cached(self, subject: str) -> None:
        self._sealing.pop(subject, None)

    async def _sealing_keys(self, subjects: dict[str, None]) -> _Keys:
        """The keys to seal with: those fetched in the last ``cache_s`` seconds, and one
        ``create_keys`` call for the rest."""
        if self.cache_s <= 0:
            return _Keys(await self.key_store.create_keys(list(subjects)), subjects, create=True)
        now = time.monotonic()
        cached = self._sealing
        keys: dict[str, bytes] = {}
        missing = []
        for subject in subjects:
            hit = cached.get(subject)
            if hit is not None and now - hit[0] < self.cache_s:
                keys[subject] = hit[1]
            else:
                missing.append(subject)
        if missing:
            fetched = await self.key_store.create_keys(missing)
            checked = _Keys(fetched, missing, create=True)  # refuses a bad answer before caching it
            del checked
            if len(cached) > _CACHE_LIMIT:
                cached.clear()
            for subject in missing:
                cached[subject] = (now, fetched[subject])
                keys[subject] = fetched[subject]
        return _Keys(keys, subjects, create=True)

    # -- appends --------------------------------------------------------------------------

    async def seal(
        self, batch: Sequence[tuple[StreamAppend, Sequence[PendingEvent]]], payloads: list[list[str]]
    ) -> tuple[list[list[str]], _Keys | None]:
        """``payloads`` with every marked field of the batch's events sealed, and the keys
        used (None when the batch holds no personal data, and ``payloads`` is returned)."""
        todo: list[tuple[int, int, PendingEvent, list[tuple[str, str, str]]]] = []
        subjects: dict[str, None] = {}
        for i, (append, pending) in enumerate(batch):
            stream_id = append.stream_id
            for j, p in enumerate(pending):
                event = p.event
                marked = type(event).__personal_data__
                if not marked:
                    continue
                fields = []
                for field, subject_field in marked:
                    value = getattr(event, field)
                    if value is None:
                        continue
                    subject = stream_id if subject_field is None else getattr(event, subject_field)
                    if not subject or len(subject) > _SUBJECT_LIMIT:
                        _subject_of(event, subject_field, stream_id, f"event {event.event_type!r} field {field!r}")
                    subjects[subject] = None
                    fields.append((field, subject, value))
                if fields:
                    todo.append((i, j, p, fields))
        if not todo:
            return payloads, None
        keys = await self._sealing_keys(subjects)
        nonces = os.urandom(NONCE_BYTES * sum(len(f) for *_, f in todo))
        at = 0
        out = [list(row) for row in payloads]
        seal = keys.seal
        for i, j, p, fields in todo:
            id_bytes = p.event_id.bytes
            tokens = []
            for field, subject, value in fields:
                aad = b"facta.pd1.event\x00" + id_bytes + field.encode() + b"\x00" + subject.encode()
                tokens.append(seal(subject, value, aad, nonces[at:at + NONCE_BYTES]))
                at += NONCE_BYTES
            out[i][j] = _put_tokens(p.event, out[i][j], fields, tokens)
        return out, keys

    # -- reads ----------------------------------------------------------------------------

    async def reveal(self, records: list[RecordedEvent]) -> list[RecordedEvent]:
        """Replace, in place, each sealed field of ``records``' payloads by its plaintext
        or :data:`ERASED`; one key store call for the page. Returns ``records``."""
        todo: list[tuple[RecordedEvent, list[tuple[str, str, str]]]] = []
        subjects: dict[str, None] = {}
        for record in records:
            if PREFIX not in record.payload:
                continue
            marked = _marked(record)
            if not marked:
                continue
            try:
                data = json.loads(record.payload)
            except ValueError:
                continue  # not JSON (a byte event's placeholder): nothing sealed
            if not isinstance(data, dict):
                continue
            fields = []
            for field, subject_field in marked:
                token = data.get(field)
                if isinstance(token, str) and token.startswith(PREFIX):
                    subject = record.stream_id if subject_field is None else data.get(subject_field)
                    if not isinstance(subject, str):
                        raise PersonalDataError(f"event {record.event_id} field {field!r}: no subject id in"
                                                f" field {subject_field!r}")
                    subjects[subject] = None
                    fields.append((field, subject, token))
            if fields:
                todo.append((record, fields))
        if not todo:
            return records
        keys = await self.opening_keys(subjects)
        for record, fields in todo:
            text = record.payload
            for field, subject, token in fields:
                where = f"event {record.event_id} (position {record.position}) field {field!r}"
                plain = keys.open(subject, token, _event_aad(record.event_id, field, subject), where)
                text = text.replace(f'"{token}"', json.dumps(plain, ensure_ascii=False), 1)
            record.payload = text
            record._decoded = None
        return records

    async def opening_keys(self, subjects: Collection[str]) -> _Keys:
        return _Keys(await self.key_store.get_keys(list(subjects)), subjects, create=False)

    def reveal_with(self, keys: _Keys, event_id: uuid.UUID, event_cls: type[DomainEvent], payload: str,
                    stream_id: str) -> str:
        """``payload`` (a stored payload of ``event_cls``) opened with ``keys`` (an
        append's own keys: the retry check)."""
        data = json.loads(payload)
        for field, subject_field in event_cls.__personal_data__:
            token = data.get(field)
            if isinstance(token, str) and token.startswith(PREFIX):
                subject = stream_id if subject_field is None else data[subject_field]
                data[field] = keys.open(subject, token, _event_aad(event_id, field, subject), f"event {event_id}")
        return json.dumps(data)

    # -- snapshots ------------------------------------------------------------------------

    async def seal_snapshots(self, snaps: Sequence[Snapshot], state_classes: Sequence[Any]) -> list[Snapshot]:
        """Snapshots with their states' marked fields sealed (``state_classes``: each
        snapshot's state class)."""
        todo: list[tuple[Snapshot, dict[str, Any] | None, list[tuple[str, str, str]]]] = []
        subjects: dict[str, None] = {}
        for snap, cls in zip(snaps, state_classes, strict=True):
            marked = cls.__personal_data__
            if not marked:
                todo.append((snap, None, []))
                continue
            data = json.loads(snap.state)
            fields = []
            for field, subject_field in marked:
                value = data.get(field)
                if isinstance(value, str):
                    subject = snap.stream_id if subject_field is None else data.get(subject_field)
                    if not isinstance(subject, str) or not subject:
                        raise PersonalDataError(f"snapshot of {snap.stream_id!r}: field {field!r} has personal"
                                                f" data but its subject field {subject_field!r} is empty")
                    subjects[subject] = None
                    fields.append((field, subject, value))
            todo.append((snap, data, fields))
        if not subjects:
            return list(snaps)
        keys = _Keys(await self.key_store.create_keys(list(subjects)), subjects, create=True)
        out = []
        for snap, data, fields in todo:
            if data is None or not fields:
                out.append(snap)
                continue
            for field, subject, value in fields:
                data[field] = keys.seal(subject, value, _state_aad(snap.stream_id, snap.version, field, subject),
                                        os.urandom(NONCE_BYTES))
            state = positional_floats(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
            out.append(Snapshot(snap.stream_id, snap.stream_type, snap.version, state, snap.state_schema,
                                snap.recorded_at))
        return out

    async def reveal_snapshot(self, snap: Snapshot, state_cls: Any) -> Snapshot:
        """``snap`` with its state's sealed fields opened (or :data:`ERASED`)."""
        marked = getattr(state_cls, "__personal_data__", ())
        if not marked or PREFIX not in snap.state:
            return snap
        data = json.loads(snap.state)
        fields = []
        for field, subject_field in marked:
            token = data.get(field)
            if isinstance(token, str) and token.startswith(PREFIX):
                subject = snap.stream_id if subject_field is None else data.get(subject_field)
                if isinstance(subject, str):
                    fields.append((field, subject, token))
        if not fields:
            return snap
        keys = await self.opening_keys({s for _, s, _ in fields})
        text = snap.state
        for field, subject, token in fields:
            where = f"snapshot of {snap.stream_id!r} v{snap.version} field {field!r}"
            plain = keys.open(subject, token, _state_aad(snap.stream_id, snap.version, field, subject), where)
            text = text.replace(f'"{token}"', json.dumps(plain, ensure_ascii=False), 1)
        return Snapshot(snap.stream_id, snap.stream_type, snap.version, text, snap.state_schema, snap.recorded_at)


_set = object.__setattr__


def _put_tokens(event: DomainEvent, plain: str, fields: list[tuple[str, str, str]], tokens: list[str]) -> str:
    """The payload text ``plain`` (what :func:`~.validation.encode_event` made) with each
    marked field's value replaced by its token. Fast path: the field's ``"name":"value"``
    text is found exactly once, and replaced in place (everything else stays as encoded).
    Otherwise the event is serialised again with a placeholder per field ("\x00" and its
    index: a stored string never holds NUL, so each is found once) that the token
    replaces."""
    text = plain
    for (field, _, value), token in zip(fields, tokens, strict=True):
        needle = f'"{field}":{_to_json(value).decode()}'
        if text.count(needle) != 1:
            break
        text = text.replace(needle, f'"{field}":"{token}"', 1)
    else:
        return text
    text = _dump_with(event, {field: f"\x00{k}" for k, (field, _, _) in enumerate(fields)})
    if _EXPONENT_HINT.search(text) is not None:  # the plain payload passed every check;
        text = positional_floats(text)  # only an exponent needs rewriting again
    for k, token in enumerate(tokens):
        text = text.replace(f'"\\u0000{k}"', f'"{token}"', 1)
    return text


def _dump_with(event: DomainEvent, update: dict[str, str]) -> str:
    """``event.model_copy(update=update).model_dump_json()`` at a third of its cost (the
    append's hot path): a shallow copy with the fields replaced, serialised by the
    class's own pydantic-core serializer, as ``model_dump_json`` does."""
    copy = object.__new__(type(event))
    _set(copy, "__dict__", {**event.__dict__, **update})
    _set(copy, "__pydantic_extra__", event.__pydantic_extra__)
    _set(copy, "__pydantic_fields_set__", event.__pydantic_fields_set__)
    _set(copy, "__pydantic_private__", event.__pydantic_private__)
    text: str = type(event).__pydantic_serializer__.to_json(copy).decode()
    return text


def _marked(record: RecordedEvent) -> tuple[tuple[str, str | None], ...]:
    registry = record.registry
    if record.event_type not in registry:
        return ()
    return registry.get(record.event_type).__personal_data__


# -- forgetting -------------------------------------------------------------------------------


def forgotten_stream(subject: str) -> str:
    """The facta-owned stream recording the erasure of ``subject``: ``facta.gdpr/<subject>``,
    or ``facta.gdpr/sha256:<hex of the subject's UTF-8 SHA-256>`` when that would be longer
    than a stream id's 255 characters (a subject may be any stream id)."""
    stream = f"facta.gdpr/{subject}"
    if len(stream) <= _SUBJECT_LIMIT:
        return stream
    return "facta.gdpr/sha256:" + hashlib.sha256(subject.encode()).hexdigest()


async def forget_subject(store: EventStore, subject: str, *, actor: str | None) -> bool:
    """Destroy ``subject``'s data key and record the erasure: a :class:`SubjectForgotten`
    event (actor ``actor``, the subject; never the data) to the stream
    :func:`forgotten_stream` names, ``facta.gdpr/<subject>`` (stream type
    :data:`FORGOTTEN_STREAM_TYPE`).

    When it destroys a key it then waits ``FACTA_KEY_CACHE_S`` seconds (the store's
    ``key_cache_s``, default 2) before it records the erasure and returns: every store,
    in any process, stops sealing with a key that long after fetching it, so no event
    appended after this call returns is sealed with the destroyed key.

    Idempotent: returns True when this call destroyed a key (a record is appended each
    time one is) or wrote the first record of a subject that had no key, False when the
    subject was forgotten before (no key, a record stored): nothing is written. Afterwards
    every read shows :data:`ERASED` in the subject's sealed fields. Raises
    :class:`InvalidValue` for a subject that is not a non-empty string of at most 255
    characters (before any I/O)."""
    if not isinstance(subject, str) or not subject or len(subject) > _SUBJECT_LIMIT:
        raise InvalidValue(f"subject must be a non-empty string of at most {_SUBJECT_LIMIT} characters,"
                           f" got {type(subject).__name__} {subject!r}")
    destroyed = await store.key_store.forget(subject)
    store.shredder.forget_cached(subject)
    if destroyed and store.shredder.cache_s > 0:
        # Every store may have fetched the key for sealing up to FACTA_KEY_CACHE_S ago:
        # once that has passed, none seals with it, so nothing appended after this call
        # returns is sealed with a destroyed key. (An append during the wait may be, and
        # then reads as erased: it was concurrent with the forget.)
        await asyncio.sleep(store.shredder.cache_s)
    stream = forgotten_stream(subject)
    if not destroyed and await store.stream_version(stream) > 0:
        return False  # forgotten before, and recorded
    try:
        await store.append(stream, FORGOTTEN_STREAM_TYPE, [SubjectForgotten(subject=subject, key_destroyed=destroyed)],
                           expected_version=None if destroyed else 0, actor=actor)
    except ConcurrencyError:
        return destroyed  # a concurrent forget recorded it
    return True
