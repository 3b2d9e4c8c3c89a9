"""The marker of personal data in events and aggregate states (crypto-shredding).

A field declared ``Annotated[str, PersonalData(subject="rider_id")]`` holds personal
data of the subject whose id is in the same model's ``rider_id`` field;
``PersonalData()`` (no subject) means the subject is the stream: the aggregate whose
events (or state) carry the field. The event store encrypts such a field at append with
the subject's data key and shows :data:`ERASED` once the key is forgotten
(:mod:`facta.eventstore.personal_data`). This module only declares and checks; it does
no I/O and no cryptography.

Allowed types, checked when the class is declared: ``str`` (constrained strings too)
and ``str | None``. A ``None`` is stored as it is (it holds no data); the placeholder
:data:`ERASED` is a string, so a marked field must accept it. The subject field must be a
``str`` (or ``str | None``) field of the same class, not itself marked; a marked value
whose subject field is empty is refused at append. A marked field is stored under its own name as
its JSON string: no alias, no ``exclude=True``, no ``field_serializer``. A marker nested in a union
(``Annotated[str, PersonalData()] | None``) or in a nested model is not seen: write
``Annotated[str | None, PersonalData()]`` on the event's own field.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from facta.errors import EventRegistryError

__all__ = ["ERASED", "PersonalData", "personal_fields"]

#: What a read shows in a marked field whose subject's key was forgotten.
ERASED = "[erased]"


@dataclass(frozen=True, slots=True)
class PersonalData:
    """Marks a ``str`` field as personal data of ``subject`` (the name of the field that
    holds the subject's id; None: the stream id is the subject)."""

    subject: str | None = None

    def __post_init__(self) -> None:
        if self.subject is not None and (not isinstance(self.subject, str) or not self.subject.isidentifier()):
            raise EventRegistryError(f"PersonalData subject must be a field name, got {self.subject!r}")


def _bare(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _allowed(annotation: Any) -> bool:
    annotation = _bare(annotation)
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {_bare(a) for a in typing.get_args(annotation)} == {str, type(None)}
    return False


def personal_fields(cls: Any) -> tuple[tuple[str, str | None], ...]:
    """The ``(field, subject field or None)`` pairs a pydantic model class marks as
    personal data, checked: raises :class:`EventRegistryError` (one line naming the
    class and field) for a marker on a field that is not ``str`` or ``str | None``, or a
    subject that is not a ``str`` field of the class."""
    fields = cls.model_fields
    found: list[tuple[str, str | None]] = []
    for name, info in fields.items():
        markers = [m for m in info.metadata if isinstance(m, PersonalData)]
        if not markers:
            continue
        where = f"{cls.__qualname__}.{name}"
        if len(markers) > 1:
            raise EventRegistryError(f"{where}: PersonalData is given {len(markers)} times; give it once")
        if not _allowed(info.annotation):
            raise EventRegistryError(
                f"{where}: PersonalData marks str or str | None fields only, not {_type_name(info.annotation)}"
            )
        # The store finds a marked field in the payload as `"name":<its JSON string>`:
        # a field written otherwise (left out, renamed, serialised by code) cannot be marked.
        if info.exclude:
            raise EventRegistryError(f"{where}: PersonalData marks a field left out of the payload (exclude=True)")
        if info.alias is not None or info.serialization_alias is not None:
            raise EventRegistryError(f"{where}: PersonalData marks fields stored under their own name, without an alias")
        serializers = getattr(cls, "__pydantic_decorators__", None)
        if serializers is not None and any(name in d.info.fields for d in serializers.field_serializers.values()):
            raise EventRegistryError(f"{where}: PersonalData marks fields without a field_serializer")
        if not _accepts_placeholder(info):
            raise EventRegistryError(
                f"{where}: a PersonalData field must accept the placeholder {ERASED!r} (what it reads as once"
                " its subject is forgotten); loosen its constraints"
            )
        subject = markers[0].subject
        if subject is not None:
            if subject not in fields:
                raise EventRegistryError(
                    f"{where}: PersonalData subject {subject!r} is not a field of {cls.__name__}"
                    f" (fields: {', '.join(fields)})"
                )
            target = fields[subject]
            if not _allowed(target.annotation) or any(isinstance(m, PersonalData) for m in target.metadata):
                raise EventRegistryError(
                    f"{where}: PersonalData subject {subject!r} must be an unmarked str (or str | None) field holding the subject's id"
                )
        found.append((name, subject))
    return tuple(found)


def _accepts_placeholder(info: Any) -> bool:
    """Whether the field's own type and constraints take :data:`ERASED`."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(typing.Annotated[info.annotation, *info.metadata]).validate_python(ERASED)
    except ValidationError:
        return False
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)
