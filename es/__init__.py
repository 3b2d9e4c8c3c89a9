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

``eventsourcing`` is an optional dependency: ``pip install facta[eventsourcing]``. Without
it the package still imports (its modules that do not need the library work, e.g. for a
facta projection reading an application's events); its recorders and factory are then
an ``ImportError`` of one line saying what to install.
"""

from __future__ import annotations

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

try:
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
except ModuleNotFoundError as exc:  # without eventsourcing, the package's other modules still import
    if exc.name != "eventsourcing" and not (exc.name or "").startswith("eventsourcing."):
        raise

    def __getattr__(name: str) -> object:
        if name in __all__:
            raise ImportError(f"facta.eventsourcing.{name} needs the eventsourcing library, which is not installed:"
                              " pip install 'facta[eventsourcing]'")
        raise AttributeError(f"module 'facta.eventsourcing' has no attribute {name!r}")
