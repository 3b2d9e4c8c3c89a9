"""Errors of projections. Each message is one line naming the values involved."""

from __future__ import annotations

from facta.domain.errors import FactaError

__all__ = ["ProjectionError", "UnknownProjection"]


class ProjectionError(FactaError):
    """A projection stopped: a handler failed, or it cannot run as asked. Its checkpoint
    did not move past the event named."""


class UnknownProjection(ProjectionError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown projection {name!r}: known are {', '.join(known) or 'none'}")
