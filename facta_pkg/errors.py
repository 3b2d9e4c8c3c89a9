"""Every error facta raises on purpose, in one tree.

Each message is one line that names the values involved (and the option, field or limit),
so the CLI prints it as it is: ``facta: error: <message>``. Catch :class:`FactaError` for
all of them, or a branch::

    FactaError                      every deliberate error
    ├── InvalidValue                a value given to facta is refused, before any I/O (also a
    │   │                           ValueError, and a StoreError as it always was)
    │   └── InvalidSetting          a FACTA_* environment variable holds a bad value
    ├── DomainError                 a command broke a rule of the domain
    │   └── InvalidTransition       a command not allowed in the aggregate's status
    ├── EventRegistryError          an event class or upcaster declared inconsistently
    ├── UnknownEventType            a stored event type with no class and no upcaster
    ├── EventDecodeError            a stored payload its class cannot read
    ├── UnknownAggregateType        no aggregate class for a stream type
    ├── StoreError                  the event store
    │   ├── InvalidValue            (above)
    │   ├── ConcurrencyError        an append at a version the stream is not at
    │   ├── DuplicateEventError     an event id stored before, not by an identical retry
    │   ├── RecordConflict          a byte event's (stream, version) or a tracking position taken
    │   ├── DatabaseURLError        a database URL facta cannot use
    │   ├── DatabaseUnavailable     the server could not be reached
    │   ├── DatabaseBusy            SQLite's write lock held past the busy timeout
    │   ├── MigrationRefused        a downgrade that would lose data
    │   ├── SchemaNotReady          no facta schema, or an older one
    │   ├── UnknownSchemaRevision   a schema written by a newer facta
    │   ├── StreamNotFound
    │   ├── StreamTypeMismatch
    │   ├── VersionNotFound         a version the stream does not have
    │   ├── AuditError              an audit question that cannot be answered
    │   ├── PersonalDataError       personal data that cannot be sealed or read (key store)
    │   ├── KafkaRecordError        a Kafka record that is not a facta event
    │   └── RelayError              the relay cannot go on
    │       └── RecordRefused       Kafka refused the record of one event
    ├── ProjectionError             a projection stopped or cannot run as asked
    │   ├── UnknownProjection
    │   ├── RetentionGap            Kafka deleted records a consumer would need
    │   └── ProjectionWaitTimeout   a projection did not apply a position in time (also a TimeoutError)
    ├── DemoRefused                 ``facta demo`` on a database the demo did not make
    ├── BrokerError                 a development Kafka broker could not start or answer
    └── ApacheKafkaError            Apache Kafka could not be fetched or configured

This module imports nothing of facta, so every layer imports its errors from here
(``facta.domain`` is the lowest layer; this module sits beside it). The old places keep
working: ``facta.domain``, ``facta.eventstore``, ``facta.projections`` and the modules
that defined an error before (``facta.eventstore.relay.RelayError``, ...) re-export them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

__all__ = [
    "ApacheKafkaError",
    "AuditError",
    "BrokerError",
    "ConcurrencyError",
    "DatabaseBusy",
    "DatabaseURLError",
    "DatabaseUnavailable",
    "DemoRefused",
    "DomainError",
    "DuplicateEventError",
    "EventDecodeError",
    "EventRegistryError",
    "FactaError",
    "InvalidSetting",
    "InvalidTransition",
    "InvalidValue",
    "KafkaRecordError",
    "MigrationRefused",
    "PersonalDataError",
    "ProjectionError",
    "ProjectionWaitTimeout",
    "RecordConflict",
    "RecordRefused",
    "RelayError",
    "RetentionGap",
    "SchemaNotReady",
    "StoreError",
    "StreamNotFound",
    "StreamTypeMismatch",
    "UnknownAggregateType",
    "UnknownEventType",
    "UnknownProjection",
    "UnknownSchemaRevision",
    "VersionNotFound",
]


class FactaError(Exception):
    """Base class of every error facta raises deliberately."""


# -- the domain ----------------------------------------------------------------------------------


class DomainError(FactaError):
    """A command broke a rule of the domain (overdraft, illegal transition, ...)."""


class InvalidTransition(DomainError):
    """A command is not allowed in the aggregate's current status."""

    def __init__(self, aggregate: str, aggregate_id: str, command: str, status: str) -> None:
        self.aggregate, self.aggregate_id, self.command, self.status = (
            aggregate,
            aggregate_id,
            command,
            status,
        )
        super().__init__(f"{aggregate} {aggregate_id}: cannot {command} while {status}")


class EventRegistryError(FactaError):
    """An event class or upcaster was declared inconsistently."""


class UnknownEventType(FactaError):
    """A stored event names a type that is not registered and has no upcaster."""

    def __init__(self, event_type: str, position: int | None = None) -> None:
        self.event_type, self.position = event_type, position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"unknown event type {event_type!r}{where}: register its class")


class EventDecodeError(FactaError):
    """A stored payload could not be turned into its event class."""

    def __init__(self, event_type: str, schema_version: int, position: int | None, cause: str) -> None:
        self.event_type, self.schema_version, self.position = event_type, schema_version, position
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"cannot decode {event_type!r} v{schema_version}{where}: {cause}")


class UnknownAggregateType(FactaError):
    """No aggregate class is declared for a stream type (its module is not imported).
    ``known``: the stream types that are declared."""

    def __init__(self, stream_type: str, known: Iterable[str] = ()) -> None:
        self.stream_type = stream_type
        names = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"no aggregate class for stream type {stream_type!r} (known: {names}): import the module that declares it"
        )


# -- the event store -----------------------------------------------------------------------------


class StoreError(FactaError):
    """Base class of event store errors."""


class InvalidValue(StoreError, ValueError):
    """A value facta refuses, before any I/O: one it cannot store or query exactly on every
    dialect (a text too long or holding NUL, a number out of its column's range, a payload
    field that would not read back as written), an argument of the wrong type, or a setting
    out of its range. The message names the field or argument, the value and the limit.

    Every layer raises it for invalid input. It is a ``ValueError``, and a
    :class:`StoreError` as it was when only the store raised it."""


class InvalidSetting(InvalidValue):
    """A ``FACTA_*`` environment variable holds a value facta cannot use. The message names
    the variable, its value and what is expected (``facta.settings``)."""

    def __init__(self, variable: str, value: object, expected: str) -> None:
        self.variable, self.value = variable, value
        super().__init__(f"invalid {variable}={value!r}: {expected}")


class ConcurrencyError(StoreError):
    """An append named a version the stream is no longer (or not yet) at. Nothing was written."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(
            f"concurrency conflict on stream {stream_id!r}: expected version {expected}, actual version {actual}"
        )


class DuplicateEventError(StoreError):
    """An event id is already stored, but not as part of an identical earlier append."""

    def __init__(self, event_id: uuid.UUID, stream_id: str, version: int, position: int, differs: str = "") -> None:
        self.event_id, self.stream_id, self.version, self.position = event_id, stream_id, version, position
        self.differs = differs
        super().__init__(
            f"event {event_id} is already stored as {stream_id!r} version {version} at position {position}"
            " and this append is not an identical retry" + (f": {differs}" if differs else "")
        )


class RecordConflict(StoreError):
    """A record of :meth:`facta.eventstore.EventStore.append_bytes` (or of the byte
    snapshot and tracking calls) conflicts with one stored already or given twice: a
    (stream id, version) taken, or a tracking position not above the stored one. Nothing
    of that call was written. ``stream_id`` and ``version`` (or ``tracking`` name and
    ``position``) name the record; eventsourcing's recorders turn it into their
    ``IntegrityError``."""

    def __init__(self, message: str, *, stream_id: str | None = None, version: int | None = None,
                 tracking: str | None = None, position: int | None = None) -> None:
        super().__init__(message)
        self.stream_id, self.version, self.tracking, self.position = stream_id, version, tracking, position


class DatabaseURLError(StoreError):
    """The database URL cannot be used."""


class DatabaseUnavailable(StoreError):
    """The database server could not be reached or refused the connection."""


class DatabaseBusy(StoreError):
    """SQLite: another connection held the database's write lock for longer than the busy
    timeout (60 s, or the URL's ``?timeout=``). Nothing was written; the call can be tried again."""


class MigrationRefused(StoreError):
    """A schema downgrade that would lose data or leave tables it cannot name. Nothing changed."""


class SchemaNotReady(StoreError):
    """The database has no facta schema, or an older one: run ``facta db upgrade``."""


class UnknownSchemaRevision(StoreError):
    """The database's facta schema is at a revision this facta does not know (most likely
    written by a newer facta): upgrade facta. Nothing was changed. ``revision`` is what the
    version table holds."""

    def __init__(self, where: str, revision: str, known: list[str]) -> None:
        self.where, self.revision, self.known = where, revision, known
        super().__init__(
            f"{where} is at schema revision {revision!r}, which this facta does not know (it knows"
            f" {known[0]} to {known[-1]}): it was probably written by a newer facta; upgrade facta"
        )


class StreamNotFound(StoreError):
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} does not exist")


class StreamTypeMismatch(StoreError):
    def __init__(self, stream_id: str, expected: str, actual: str) -> None:
        self.stream_id, self.expected, self.actual = stream_id, expected, actual
        super().__init__(f"stream {stream_id!r} is of stream type {actual!r}, not {expected!r}")


class VersionNotFound(StoreError):
    def __init__(self, stream_id: str, requested: int, actual: int) -> None:
        self.stream_id, self.requested, self.actual = stream_id, requested, actual
        super().__init__(f"stream {stream_id!r} has {actual} event{'' if actual == 1 else 's'}; there is no version {requested}")


class AuditError(StoreError):
    """An audit query was asked something that cannot be answered (one line, names the values)."""


class PersonalDataError(StoreError):
    """Personal data (fields marked ``PersonalData``) cannot be sealed or read: no key
    store, a key store that answers wrongly (a key that is not 32 bytes, a subject
    missing from its answer), or stored ciphertext that does not open with its subject's
    key. The message is one line naming the subject, event and field; never a key."""


class KafkaRecordError(StoreError):
    """A Kafka record is not a facta event (a header missing, repeated with two values,
    not UTF-8 or malformed; no value). The message is one line naming the record."""


class RelayError(StoreError):
    """The relay cannot go on: a record was rejected, or its configuration is wrong."""


class RecordRefused(RelayError):
    """The relay stopped before the event at ``position``: Kafka refused its record (too
    large, say), or its topic is not a name Kafka allows. The relay published everything
    up to ``checkpoint``; ``facta relay skip --position P`` (:meth:`Relay.skip`) lets it past."""

    def __init__(self, message: str, *, relay: str, position: int, event_id: uuid.UUID, checkpoint: int) -> None:
        super().__init__(message)
        self.relay, self.position, self.event_id, self.checkpoint = relay, position, event_id, checkpoint


# -- projections ---------------------------------------------------------------------------------


class ProjectionError(FactaError):
    """A projection stopped: a handler failed, or it cannot run as asked. Its checkpoint
    did not move past the event named."""


class UnknownProjection(ProjectionError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown projection {name!r}: known are {', '.join(known) or 'none'}")


class RetentionGap(ProjectionError):
    """Kafka deleted records a consumer or a replay would need: going on would skip events."""


class ProjectionWaitTimeout(ProjectionError, TimeoutError):
    """A projection did not apply a position within the time a read-your-writes wait gave it
    (:mod:`facta.projections.wait`). ``projection``: its name; ``position``: the store
    position wanted; ``reached``: where it is, in words; ``timeout_s``: the wait's bound."""

    def __init__(self, projection: str, position: int, reached: str, timeout_s: float) -> None:
        self.projection, self.position, self.reached, self.timeout_s = projection, position, reached, timeout_s
        super().__init__(f"projection {projection!r} did not reach position {position} within {timeout_s:g} s:"
                         f" {reached}")


# -- the command line's demo and development brokers ---------------------------------------------


class DemoRefused(FactaError):
    """The database holds data the demo did not make (one line naming it and what it holds)."""


class BrokerError(FactaError):
    """A development broker could not be found, started or reached."""


class ApacheKafkaError(FactaError):
    """Apache Kafka could not be fetched, formatted or configured (one line, with the fix)."""
