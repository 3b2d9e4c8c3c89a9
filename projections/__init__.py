"""facta.projections: read models built from the store's log or from Kafka.

A :class:`Projection` declares its tables and typed handlers; a
:class:`ProjectionRunner` keeps it current, committing read-model writes and checkpoints
in one transaction; :func:`facta.projections.replay.replay` rebuilds it into fresh tables
from any position, offset or time and swaps them in. A :class:`ProcessManager` turns
events into commands on aggregates, each handler's events stored once; the same runner
runs it. :func:`wait_for_position` and :func:`wait_for_append` wait until a projection has
applied a write (read-your-writes, :mod:`facta.projections.wait`).

``__all__`` is the public face: the names below and two public modules, each with an
``__all__`` of its own: :mod:`~facta.projections.replay` (``replay``, ``plan_replay``,
``ReplayFrom``) and :mod:`~facta.projections.reference` (the reference projections). The
other modules are the projections' implementation.
"""

from ._applier import Delivery
from .api import Projection, handles, read_model_table
from .errors import ProjectionError, ProjectionWaitTimeout, UnknownProjection
from .process import ProcessContext, ProcessManager, reacts_to
from .runner import KafkaSettings, ProjectionRunner, RunnerConfig
from .wait import wait_for_append, wait_for_append_blocking, wait_for_position, wait_for_position_blocking
from .writer import ReadModel

__all__ = [
    "Delivery",
    "KafkaSettings",
    "ProcessContext",
    "ProcessManager",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionWaitTimeout",
    "ReadModel",
    "RunnerConfig",
    "UnknownProjection",
    "handles",
    "reacts_to",
    "read_model_table",
    "wait_for_append",
    "wait_for_append_blocking",
    "wait_for_position",
    "wait_for_position_blocking",
]
__all__ += ["reference", "replay"]  # the public modules
