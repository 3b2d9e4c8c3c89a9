"""facta.projections: read models built from the store's log or from Kafka.

A :class:`Projection` declares its tables and typed handlers; a
:class:`ProjectionRunner` keeps it current, committing read-model writes and checkpoints
in one transaction; :func:`replay` rebuilds it into fresh tables from any position,
offset or time and swaps them in. A :class:`ProcessManager` turns events into commands
on aggregates, each handler's events stored once; the same runner runs it.
"""

from .api import Projection, handles, read_model_table
from .applier import Delivery
from .errors import ProjectionError, UnknownProjection
from .process import ProcessContext, ProcessManager, reacts_to
from .runner import KafkaSettings, ProjectionRunner, RunnerConfig
from .writer import ReadModel

__all__ = [
    "Delivery",
    "KafkaSettings",
    "ProcessContext",
    "ProcessManager",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ReadModel",
    "RunnerConfig",
    "UnknownProjection",
    "handles",
    "reacts_to",
    "read_model_table",
]
