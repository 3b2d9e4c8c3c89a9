"""Events an ``eventsourcing`` application wrote, read by facta projections and audit.

An application on ``PERSISTENCE_MODULE=facta.eventsourcing`` stores each of its events as
a row of facta's log (see ARCHITECTURE.md, "eventsourcing applications on facta"): event
type = the event's topic (``get_topic(cls)``, ``"bank:BankAccount.Opened"``), stream id =
the originator id, version = the originator version, stream type = the application's
name, and a payload holding the JSON eventsourcing's ``JSONTranscoder`` made. That JSON
keeps eventsourcing's custom types as ``{"_type_": NAME, "_data_": DATA}`` objects
(``uuid_hex``, ``decimal_str``, ``datetime_iso``, and any a user registers).

Declare the events a projection reads as :class:`TranscodedEvent` classes, named by the
topic, with the fields the projection uses::

    class AccountOpened(TranscodedEvent, topic="bank:BankAccount.Opened"):
        full_name: str

    class AmountCredited(TranscodedEvent, topic=BankAccount.Credited):  # or the class itself
        amount: Decimal

facta's registry then decodes such a payload like any other: the transcodings are
unwrapped first (a ``decimal_str`` becomes a :class:`~decimal.Decimal`, a ``uuid_hex`` a
:class:`~uuid.UUID`, a ``datetime_iso`` a :class:`~datetime.datetime`), then pydantic
validates the fields. Every eventsourcing event carries ``timestamp``; fields the class
does not declare (``originator_topic`` of a created event, ``class_version``) are ignored.

Payloads facta cannot read. With a cipher (``CIPHER_TOPIC``) or a compressor
(``COMPRESSOR_TOPIC``) the stored bytes are not JSON. The store keeps them exactly
(``payload_bytes``) and writes the placeholder :data:`OPAQUE_KEY` object into the JSON
payload column, which audit shows, the relay sends and projections receive::

    {"$opaque": {"length": 1234, "sha256": "<hex digest of the bytes>"}}

A :class:`TranscodedEvent` class given such a payload refuses it with one line (the
projection stops there, naming the event, as for any payload that does not decode). A
projection over a ciphered application declares :class:`OpaqueEvent` classes instead: they
decode the placeholder into ``length`` and ``sha256``, so the projection can count,
track versions and fingerprint events without the key.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from pydantic import ConfigDict, model_validator

from facta.domain import DomainEvent, EventRegistry
from facta.errors import EventRegistryError

__all__ = [
    "OPAQUE_KEY",
    "OpaqueEvent",
    "TranscodedEvent",
    "Transcoding",
    "Transcodings",
    "default_transcodings",
    "topic_of",
    "untranscode",
]

OPAQUE_KEY = "$opaque"
"""The key of the placeholder object the store writes into the payload column for bytes
that are not JSON (ciphered or compressed): ``{"$opaque": {"length": N, "sha256": HEX}}``."""

_TYPE, _DATA = "_type_", "_data_"


class Transcoding(Protocol):
    """What the bridge needs of a transcoding: its ``name`` (the ``_type_`` it writes)
    and ``decode(data)``. eventsourcing's own ``Transcoding`` objects qualify, so a user
    registers here the very objects their application's transcoder has."""

    name: str

    def decode(self, data: Any) -> Any: ...


class Transcodings:
    """Transcoding names -> decoders of their ``_data_``, for :func:`untranscode`.

    Starts with eventsourcing's three defaults (``uuid_hex``, ``decimal_str``,
    ``datetime_iso``, the ones ``Application`` registers; eventsourcing.persistence).
    """

    def __init__(self) -> None:
        self._decoders: dict[str, Callable[[Any], Any]] = {
            "uuid_hex": _uuid_hex,
            "decimal_str": _decimal_str,
            "datetime_iso": _datetime_iso,
        }

    def register(self, transcoding: Transcoding) -> None:
        """Decode ``transcoding.name`` with ``transcoding.decode``. One of the three standard
        names may be taken over (an application that registers its own transcoding under it,
        as eventsourcing's ``JSONTranscoder.register`` allows). Raises
        :class:`~facta.errors.EventRegistryError` for a name that is not a non-empty str, or
        another name registered already to a different decoder."""
        name = getattr(transcoding, "name", None)
        decode = getattr(transcoding, "decode", None)
        if not isinstance(name, str) or not name or not callable(decode):
            raise EventRegistryError(
                f"a transcoding needs a non-empty str name and a decode method, got {type(transcoding).__name__}"
                f" with name {name!r}"
            )
        existing = self._decoders.get(name)
        if existing is not None and _function(existing) is not _function(decode) and name not in _STANDARD:
            raise EventRegistryError(f"transcoding {name!r} is registered already")
        self._decoders[name] = decode

    def decoder(self, name: object) -> Callable[[Any], Any]:
        try:
            return self._decoders[name]  # type: ignore[index]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._decoders))
            raise ValueError(
                f"transcoding {name!r} is not registered with facta (known: {known});"
                " register it: facta.eventsourcing.events.default_transcodings.register(...)"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._decoders


def _function(decode: Callable[[Any], Any]) -> object:
    """What a decoder runs: two instances of one Transcoding class decode alike."""
    return getattr(decode, "__func__", decode)


def _uuid_hex(data: Any) -> uuid.UUID:
    if not isinstance(data, str):
        raise ValueError(f"uuid_hex data must be a str, got {type(data).__name__}")
    return uuid.UUID(data)


def _decimal_str(data: Any) -> decimal.Decimal:
    if not isinstance(data, str):
        raise ValueError(f"decimal_str data must be a str, got {type(data).__name__}")
    try:
        return decimal.Decimal(data)
    except decimal.InvalidOperation:
        raise ValueError(f"decimal_str data {data!r} is not a decimal number") from None


def _datetime_iso(data: Any) -> _dt.datetime:
    if not isinstance(data, str):
        raise ValueError(f"datetime_iso data must be a str, got {type(data).__name__}")
    return _dt.datetime.fromisoformat(data)


_STANDARD = frozenset({"uuid_hex", "decimal_str", "datetime_iso"})

default_transcodings = Transcodings()
"""The transcodings :class:`TranscodedEvent` classes decode with unless they name others."""


def untranscode(value: Any, transcodings: Transcodings = default_transcodings) -> Any:
    """``value`` (parsed JSON) with every ``{"_type_": NAME, "_data_": DATA}`` object
    replaced by its decoded value, innermost first, as eventsourcing's ``JSONTranscoder``
    decodes (an object with exactly those two keys is a transcoding; any other object is
    kept). Raises ValueError naming a transcoding that is not registered."""
    if isinstance(value, dict):
        if len(value) == 2 and _TYPE in value and _DATA in value:
            return transcodings.decoder(value[_TYPE])(untranscode(value[_DATA], transcodings))
        return {key: untranscode(item, transcodings) for key, item in value.items()}
    if isinstance(value, list):
        return [untranscode(item, transcodings) for item in value]
    return value


def topic_of(event_class_or_topic: str | type) -> str:
    """The topic eventsourcing stores for an event class (``eventsourcing.utils.get_topic``:
    ``"module:QualName"``, or the class's ``TOPIC``), or the given topic string itself.
    Raises :class:`~facta.errors.EventRegistryError` for anything else or an empty text."""
    if isinstance(event_class_or_topic, str):
        if not event_class_or_topic:
            raise EventRegistryError("an eventsourcing topic must be a non-empty str")
        return event_class_or_topic
    if isinstance(event_class_or_topic, type):
        from eventsourcing.utils import get_topic

        return get_topic(event_class_or_topic)
    raise EventRegistryError(
        f"topic must be an eventsourcing event class or its topic str, got {type(event_class_or_topic).__name__}"
        f" {event_class_or_topic!r}"
    )


def opaque_summary(payload: Any) -> Mapping[str, Any] | None:
    """The inside of a placeholder payload (``{"length": N, "sha256": HEX}``), or None
    when ``payload`` is not one."""
    if isinstance(payload, dict) and len(payload) == 1 and OPAQUE_KEY in payload:
        inner = payload[OPAQUE_KEY]
        return inner if isinstance(inner, dict) else None
    return None


class TranscodedEvent(DomainEvent):
    """Base of facta event classes that read an eventsourcing event's payload.

    Subclasses pass ``topic`` (the stored topic, or the eventsourcing event class whose
    topic it is) instead of facta's ``name``, and optionally ``transcodings`` (default
    :data:`default_transcodings`) and ``registry`` (default: facta's default registry).
    The schema version is 1: eventsourcing keeps its own ``class_version`` in the payload
    (an ignored field here unless declared). ``timestamp`` is the event's time as
    eventsourcing's aggregate gave it.

    A subclass without ``topic`` is an abstract base (registered under no name). Raises
    :class:`~facta.errors.EventRegistryError` when declared with ``name=`` or ``version=``
    (the topic is the name) or a ``topic`` that is neither a class nor a non-empty str, and
    when another class holds that topic in the registry.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    transcodings: ClassVar[Transcodings] = default_transcodings
    timestamp: _dt.datetime

    def __init_subclass__(
        cls,
        *,
        topic: str | type | None = None,
        transcodings: Transcodings | None = None,
        registry: EventRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        if transcodings is not None:
            cls.transcodings = transcodings
        super().__init_subclass__(name=_topic_name(cls, topic, kwargs), registry=registry, **kwargs)

    @model_validator(mode="before")
    @classmethod
    def _untranscode(cls, data: Any) -> Any:
        summary = opaque_summary(data)
        if summary is not None:
            raise ValueError(
                f"the payload is opaque ({summary.get('length')} bytes, sha256 {summary.get('sha256')}): ciphered or"
                f" compressed by the application, so facta cannot read its fields; declare {getattr(cls, 'event_type', cls.__qualname__)!r}"
                " with OpaqueEvent (facta.eventsourcing.events) to read such events"
            )
        return untranscode(data, cls.transcodings)


class OpaqueEvent(DomainEvent):
    """Base of facta event classes for an eventsourcing event whose payload facta cannot
    read (ciphered or compressed bytes): it decodes the store's placeholder,
    ``length`` (bytes stored) and ``sha256`` (their hex digest). Declared with ``topic=``
    as :class:`TranscodedEvent` is. A payload that is readable JSON is refused with one
    line (declare the event as a TranscodedEvent then)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    length: int
    sha256: str

    def __init_subclass__(
        cls, *, topic: str | type | None = None, registry: EventRegistry | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(name=_topic_name(cls, topic, kwargs), registry=registry, **kwargs)

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        summary = opaque_summary(data)
        if summary is None:
            if isinstance(data, OpaqueEvent):
                return data
            if isinstance(data, dict) and set(data) == {"length", "sha256"}:
                return data  # built in code: OpaqueEvent(length=..., sha256=...)
            raise ValueError(
                f"the payload is not facta's {OPAQUE_KEY!r} placeholder but readable JSON: declare"
                f" {getattr(cls, 'event_type', cls.__qualname__)!r} with TranscodedEvent"
            )
        return dict(summary)


def _topic_name(cls: type, topic: str | type | None, kwargs: dict[str, Any]) -> str | None:
    """The facta name of an event class declared with ``topic=`` (None: an abstract base).
    Raises :class:`~facta.errors.EventRegistryError` when ``name=`` or ``version=`` is given."""
    if "name" in kwargs or "version" in kwargs:
        base = "OpaqueEvent" if issubclass(cls, OpaqueEvent) else "TranscodedEvent"
        raise EventRegistryError(
            f"event {cls.__qualname__}: a {base} is named by its eventsourcing topic: pass topic=..., not name= or"
            " version="
        )
    return topic_of(topic) if topic is not None else None
