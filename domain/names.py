"""Kafka's rule for topic names, which facta forms from a user's names.

The relay publishes a stream type's events to the topic ``<prefix>.<stream type>``
(``facta.ride``), so a stream type and a topic prefix are held to this rule: an aggregate
when it declares its ``stream_type``, the relay's ``topic_prefix`` when it is configured,
and every topic the relay forms (or a custom router returns) before it is used.

The rule lives in the domain layer because declarations check it here; the relay
(``facta.eventstore.relay``) imports it, so the two never disagree.
"""

from __future__ import annotations

import re

__all__ = ["KAFKA_TOPIC_MAX_LENGTH", "TOPIC_CHARACTERS", "kafka_topic_problem", "stream_type_problem"]

#: Kafka's longest topic name (``Topic.MAX_NAME_LENGTH``).
KAFKA_TOPIC_MAX_LENGTH = 249
#: The characters a Kafka topic name may hold, as the error messages say them.
TOPIC_CHARACTERS = "ASCII letters, digits, '.', '_' and '-'"
_LEGAL = re.compile(r"[A-Za-z0-9._-]+")


def kafka_topic_problem(name: object) -> str | None:
    """Why ``name`` cannot name a Kafka topic, as a phrase (``"holds ' ' ..."``), or None
    when it can. Kafka's rule: 1 to :data:`KAFKA_TOPIC_MAX_LENGTH` characters, each an
    ASCII letter or digit, ``.``, ``_`` or ``-``, and neither ``.`` nor ``..``."""
    if not isinstance(name, str):
        return f"is of type {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if len(name) > KAFKA_TOPIC_MAX_LENGTH:
        return f"is {len(name)} characters long (at most {KAFKA_TOPIC_MAX_LENGTH})"
    if name in (".", ".."):
        return "is '.' or '..', which Kafka refuses"
    return _characters_problem(name)


def stream_type_problem(name: object) -> str | None:
    """Why ``name`` cannot be a stream type that names a Kafka topic, or None when it can:
    a non-empty string of :data:`TOPIC_CHARACTERS` (its length is the store's to check)."""
    if not isinstance(name, str):
        return f"is of type {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    return _characters_problem(name)


def _characters_problem(name: str) -> str | None:
    if _LEGAL.fullmatch(name):
        return None
    bad = sorted({ch for ch in name if not _LEGAL.fullmatch(ch)})
    shown = ", ".join(repr(ch) for ch in bad[:5]) + (", ..." if len(bad) > 5 else "")
    return f"holds {shown}: a Kafka topic name may hold only {TOPIC_CHARACTERS}"
