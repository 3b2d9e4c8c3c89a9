"""facta.eventsourcing: facta's store as a persistence module of the ``eventsourcing`` library (9.5.x).

Switch an ``eventsourcing`` application to facta with two environment variables::

    PERSISTENCE_MODULE=facta.eventsourcing
    FACTA_DATABASE_URL=postgresql://127.0.0.1/bank     # or sqlite:///bank.db

Its events become ordinary rows of facta's log (``facta_events``: stream type = the
application's name, stream id = the originator id, version = the originator version,
event type = the topic, the payload the exact bytes eventsourcing's transcoder made), its
snapshots rows of ``facta_snapshots``, its tracking records rows of ``facta_tracking``.
See :mod:`facta.eventsourcing.persistence` for the recorders, the settings they read and
how facta's errors map to eventsourcing's.

``eventsourcing`` is an optional dependency: ``pip install facta[eventsourcing]``.
"""

from .persistence import (
    FactaAggregateRecorder,
    FactaApplicationRecorder,
    FactaFactory,
    FactaProcessRecorder,
    FactaRecorder,
    FactaSnapshotRecorder,
    FactaSubscription,
    FactaTrackingRecorder,
)

__all__ = [
    "FactaAggregateRecorder",
    "FactaApplicationRecorder",
    "FactaFactory",
    "FactaProcessRecorder",
    "FactaRecorder",
    "FactaSnapshotRecorder",
    "FactaSubscription",
    "FactaTrackingRecorder",
]
__all__ += ["persistence"]  # the public module
