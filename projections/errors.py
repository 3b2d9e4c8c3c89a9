"""Errors of projections. Each message is one line naming the values involved.

They are defined, with the whole tree of facta's errors, in :mod:`facta.errors`; this
module keeps the names importable from ``facta.projections.errors``.
"""

from __future__ import annotations

from facta.errors import ProjectionError, ProjectionWaitTimeout, RetentionGap, UnknownProjection

__all__ = ["ProjectionError", "ProjectionWaitTimeout", "RetentionGap", "UnknownProjection"]
