"""facta.projections: read models built from the store's log or from Kafka.

A :class:`Projection` declares its tables and typed handlers; a
:class:`ProjectionRunner` keeps it current, committing read-model writes and checkpoints
in one transaction; :func:`replay` rebuilds it into fresh tables from any position,
offset or time and swaps them in.
"""

from .api import EffectContext, Projection, effect, handles, read_model_table
from .applier import Delivery
from .errors import ProjectionError, UnknownProjection
from .runner import KafkaSettings, ProjectionRunner, RunnerConfig
from .writer import ReadModel

__all__ = [
    "Delivery",
    "EffectContext",
    "KafkaSettings",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ReadModel",
    "RunnerConfig",
    "UnknownProjection",
    "effect",
    "handles",
    "read_model_table",
]
