"""facta: event sourcing for Python.

The library is split by layer, and the dependencies run one way:
``facta.domain <- facta.eventstore <- facta.projections <- facta.replay``. Each package's
``__all__`` is its public face; besides the layers, :mod:`facta.migrations` (the schema)
and :mod:`facta.testing` (given/when/then helpers and a pytest plugin) are public.
"""

__all__ = ["__version__", "migrations", "testing"]

__version__ = "0.1.0"
