"""The root of facta's exception hierarchy and the errors of the domain layer.

Every error facta raises on purpose derives from :class:`FactaError`; its message is one
line that names the values involved, so the CLI can print it as it is.
"""

from __future__ import annotations

__all__ = [
    "DomainError",
    "EventDecodeError",
    "EventRegistryError",
    "FactaError",
    "InvalidTransition",
    "UnknownEventType",
]


class FactaError(Exception):
    """Base class of every error facta raises deliberately."""


class DomainError(FactaError):
    """A command broke a rule of the domain (overdraft, illegal transition, ...)."""


class InvalidTransition(DomainError):
    """A command is not allowed in the aggregate's current status."""

    def __init__(self, aggregate: str, aggregate_id: str, command: str, status: str) -> None:
        self.aggregate, self.aggregate_id, self.command, self.status = (
            aggregate,
            aggregate_id,
            command,
            status,
        )
        super().__init__(f"{aggregate} {aggregate_id}: cannot {command} while {status}")


class EventRegistryError(FactaError):
    """An event class or upcaster was declared inconsistently."""


class UnknownEventType(FactaError):
    """A stored event names a type that is not registered and has no upcaster."""

    def __init__(self, event_type: str, position: int | None = None) -> None:
        self.event_type, self.position = event_type, position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"unknown event type {event_type!r}{where}: register its class")


class EventDecodeError(FactaError):
    """A stored payload could not be turned into its event class."""

    def __init__(self, event_type: str, schema_version: int, position: int | None, cause: str) -> None:
        self.event_type, self.schema_version, self.position = event_type, schema_version, position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"cannot decode {event_type!r} v{schema_version}{where}: {cause}")
