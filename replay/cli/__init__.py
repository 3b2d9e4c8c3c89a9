"""The `facta` command line, one module per command group.

============================  ====================================================================
``app``                       the ``facta`` group; one-line errors (exit 1, usage: exit 2), signals
``options``                   option types (numbers, times, names, URLs) and the shared options
``output``                    tables (rich), JSON, CSV, times, durations, escaping
``db``                        ``facta db upgrade|downgrade|current``
``demo``                      ``facta demo``
``relay``                     ``facta relay run|status|skip``
``projections``               ``facta projections list|run|wait|skip|skipped``
``replay``                    ``facta replay``
``audit``                     ``facta audit history|state|diff|events|trace|verify|seal``
``proofs``                    ``facta audit keygen|digest|prove|verify-proof``
``gdpr``                      ``facta gdpr forget``
``dev``                       ``facta dev broker``
``status``                    ``facta status``
``progress``                  progress of the long commands on stderr (bars, log lines)
============================  ====================================================================

Commands parse their options, call the library (``facta.eventstore``,
``facta.projections``, ``facta.replay.demo``, ``facta.dev``) and render what it returns;
SQL and status computations live in the library.
"""

from __future__ import annotations

# Importing the command modules adds their commands to the group.
from . import audit, db, demo, dev, gdpr, projections, proofs, relay, replay, status
from .app import cli
from .options import (
    MAX_PARTITION,
    MAX_POSITION,
    MAX_SECONDS,
    MAX_VERSION,
    DatabaseURL,
    FilePath,
    Folder,
    KafkaBootstrap,
    Revision,
    Seconds,
    Text,
    UtcTime,
    WholeNumber,
)

# Private names tests import from facta.replay.cli since the CLI was one module.
from .output import a as _a  # noqa: F401
from .output import clip as _clip  # noqa: F401
from .output import printable as _printable  # noqa: F401
from .output import quoted as _quoted  # noqa: F401
from .output import shown as _shown  # noqa: F401

__all__ = [
    "MAX_PARTITION", "MAX_POSITION", "MAX_SECONDS", "MAX_VERSION", "DatabaseURL", "FilePath", "Folder", "KafkaBootstrap",
    "Revision", "Seconds", "Text", "UtcTime", "WholeNumber", "cli", "main",
]

#: The command modules, one per group (importing them added their commands to ``cli``).
COMMAND_MODULES = (db, demo, relay, projections, replay, audit, proofs, gdpr, dev, status)


def main() -> None:
    """The ``facta`` console script and ``python -m facta``."""
    cli(prog_name="facta")
