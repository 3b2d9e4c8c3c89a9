"""facta: event sourcing for Python.

The library is split by layer, and the dependencies run one way:
``facta.domain <- facta.eventstore <- facta.projections <- facta.replay``.
"""

__version__ = "0.1.0"
