"""The errors of the domain layer, and :class:`FactaError`, the root of them all.

They are defined, with the whole tree of facta's errors, in :mod:`facta.errors`; this
module keeps the names importable from ``facta.domain.errors``.
"""

from __future__ import annotations

from facta.errors import (
    DomainError,
    EventDecodeError,
    EventRegistryError,
    FactaError,
    InvalidTransition,
    UnknownAggregateType,
    UnknownEventType,
)

__all__ = [
    "DomainError",
    "EventDecodeError",
    "EventRegistryError",
    "FactaError",
    "InvalidTransition",
    "UnknownAggregateType",
    "UnknownEventType",
]
