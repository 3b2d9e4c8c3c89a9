"""Domain events: frozen pydantic models registered under a stable name and version.

A class becomes a registered event type by naming itself::

    class AccountOpened(DomainEvent, name="account.opened", version=1):
        owner: str
        currency: str

The name and version are what the store records; the Python class name can change
freely. When a payload's shape changes, bump ``version`` and register upcasters that
turn each older stored version into the next one; reads then apply the chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import SchemaValidator

from facta.errors import EventDecodeError, EventRegistryError, UnknownEventType

from .personal import personal_fields

__all__ = ["DomainEvent", "EventRegistry", "Upcaster", "default_registry"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class EventRegistry:
    """Maps stored (type name, schema version) pairs to event classes.

    Holds one current class per type name and the upcasters that lift older stored
    versions of that type to the current one, one version at a time.
    """

    def __init__(self) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        # (type name, current schema version) -> the class's JSON validator, filled by the
        # first decode of that pair: the read path's fast lane (no upcasting to do). It
        # is pydantic-core's validate_json, which model_validate_json calls; cached late
        # because a class's validator is final only once the class is fully built.
        self._json_validators: dict[tuple[str, int], Callable[[str | bytes], Any]] = {}

    def register(self, cls: type[DomainEvent]) -> type[DomainEvent]:
        name = cls.event_type
        existing = self._classes.get(name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise EventRegistryError(
                f"event type {name!r} is already registered to {existing.__module__}.{existing.__qualname__}"
            )
        self._classes[name] = cls
        for key in [key for key in self._json_validators if key[0] == name]:
            del self._json_validators[key]
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register ``fn`` as the step that turns ``from_version`` into ``from_version + 1``.
        Raises :class:`EventRegistryError` for an ``event_type`` that is not a str or a
        ``from_version`` that is not an int >= 1 (a bool is not one)."""
        check_upcaster_key(event_type, from_version)

        def decorate(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._upcasters:
                raise EventRegistryError(f"upcaster {event_type!r} v{from_version} -> v{from_version + 1} is registered twice")
            self._upcasters[key] = fn
            return fn

        return decorate

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._classes

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._classes.values())

    def get(self, event_type: str, position: int | None = None) -> type[DomainEvent]:
        try:
            return self._classes[event_type]
        except KeyError:
            raise UnknownEventType(event_type, position) from None

    def decode(
        self,
        event_type: str,
        schema_version: int,
        payload: str | bytes | Mapping[str, Any],
        position: int | None = None,
    ) -> DomainEvent:
        """Turn a stored payload into the current class of its type, upcasting on the way.
        Raises :class:`UnknownEventType` for a type not registered and
        :class:`EventDecodeError` (naming type, version, position and the first problem)
        for a payload that does not decode."""
        validate = self._json_validators.get((event_type, schema_version))
        if validate is not None and isinstance(payload, (str, bytes)):
            try:
                event: DomainEvent = validate(payload)
                return event
            except ValueError:  # ValidationError is one: the full path below names it
                pass
        cls = self.get(event_type, position)
        try:
            if schema_version == cls.schema_version:
                if isinstance(payload, (str, bytes)):
                    event = cls.model_validate_json(payload)
                    validator = cls.__pydantic_validator__
                    if isinstance(validator, SchemaValidator):
                        self._json_validators[event_type, schema_version] = validator.validate_json
                    return event
                return cls.model_validate(payload)
            if schema_version > cls.schema_version:
                raise EventDecodeError(
                    event_type, schema_version, position,
                    f"stored version is newer than the registered class (v{cls.schema_version})",
                )
            data = dict(json.loads(payload)) if isinstance(payload, (str, bytes)) else dict(payload)
            for version in range(schema_version, cls.schema_version):
                step = self._upcasters.get((event_type, version))
                if step is None:
                    raise EventDecodeError(
                        event_type, schema_version, position,
                        f"no upcaster from v{version} to v{version + 1}",
                    )
                data = step(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "payload"
            raise EventDecodeError(event_type, schema_version, position, f"{loc}: {first['msg']}") from None
        except ValueError as exc:  # malformed JSON
            raise EventDecodeError(event_type, schema_version, position, str(exc).splitlines()[0]) from None


default_registry = EventRegistry()


class DomainEvent(BaseModel):
    """Base class of every domain event: immutable, validated, registered by name.

    Subclasses pass ``name`` (the stable type name stored with each event) and optionally
    ``version`` (the payload's schema version, default 1) and ``registry`` (default: the
    process-wide :data:`default_registry`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    #: ``(field, subject field or None)`` of each field marked ``PersonalData``, checked
    #: when the class is declared (:func:`facta.domain.personal.personal_fields`).
    __personal_data__: ClassVar[tuple[tuple[str, str | None], ...]] = ()

    __registry_pending__: ClassVar[EventRegistry | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Runs once pydantic has built the fields: check the personal data markers, then
        # register (a class refused here is not registered).
        super().__pydantic_init_subclass__(**kwargs)
        cls.__personal_data__ = personal_fields(cls)
        registry = vars(cls).get("__registry_pending__")
        if registry is not None:
            cls.__registry_pending__ = None
            registry.register(cls)

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        version: int = 1,
        registry: EventRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return  # an abstract intermediate base
        if not name or not isinstance(version, int) or version < 1:
            raise EventRegistryError(f"event {cls.__qualname__}: need a non-empty name and version >= 1, got {name!r} v{version!r}")
        cls.event_type = name
        cls.schema_version = version
        cls.__registry_pending__ = registry if registry is not None else default_registry


def check_event_class(decorator: str, event_cls: object) -> None:
    """Raise :class:`EventRegistryError` unless ``event_cls`` is a DomainEvent class
    declared with ``name=...`` (what ``@applies``, ``@handles`` and ``@reacts_to`` take)."""
    if not (isinstance(event_cls, type) and issubclass(event_cls, DomainEvent)) or "event_type" not in vars(event_cls):
        shown = event_cls.__qualname__ if isinstance(event_cls, type) else f"{type(event_cls).__name__} {event_cls!r}"
        raise EventRegistryError(f"@{decorator} takes an event class declared with name=..., got {shown}")


def check_upcaster_key(event_type: object, from_version: object) -> None:
    if not isinstance(event_type, str) or not event_type:
        raise EventRegistryError(f"upcaster event_type must be a non-empty str, got {type(event_type).__name__} {event_type!r}")
    if not isinstance(from_version, int) or isinstance(from_version, bool) or from_version < 1:
        raise EventRegistryError(
            f"upcaster from_version must be an integer >= 1, got {type(from_version).__name__} {from_version!r}"
        )
