"""The projection API: a name, typed handlers, read-model tables.

A projection turns events into rows::

    class AccountBalances(Projection, name="account_balances"):
        balances = read_model_table(
            "account_balances",
            Column("account_id", String(255), primary_key=True),
            Column("balance", BigInteger, nullable=False),
        )

        @handles(Deposited)
        def _deposited(self, rm: ReadModel, event: Deposited, record: RecordedEvent) -> None:
            rm.upsert(self.balances, {"account_id": record.stream_id}, add={"balance": event.amount})

Handlers are plain functions that write through the :class:`ReadModel` they are given:
the runner applies a batch of events and writes the checkpoint in the same database
transaction. ``self.balances`` is the table the runner is building: the live one, or
the fresh copy a rebuild fills before it is swapped in. ``AccountBalances.balances``
(on the class) is always the live table, for readers.

A projection only writes its read model. Commands that must happen once in reaction to
an event (charging an account) belong to a process manager
(:class:`~facta.projections.process.ProcessManager`), which the same runner runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from sqlalchemy import Column, Constraint, Index, MetaData, Table
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.elements import conv, quoted_name

from facta.domain import DomainEvent, EventRegistry, default_registry
from facta.domain.events import check_event_class
from facta.errors import InvalidValue, ProjectionError
from facta.eventstore import RecordedEvent
from facta.eventstore.validation import got

if TYPE_CHECKING:
    from sqlalchemy import Dialect

    from ._applier import Applier
    from .writer import ReadModel

__all__ = [
    "Projection",
    "ReadModelTable",
    "handles",
    "read_model_table",
]

E = TypeVar("E", bound=DomainEvent)
P = TypeVar("P", bound="Projection")

Handler = Callable[[Any, "ReadModel", Any, RecordedEvent], None]

REBUILD_SUFFIX = "__rebuild"
MAX_NAME_BYTES = 63 - len(REBUILD_SUFFIX)
"""The longest read-model table, index or constraint name, in UTF-8 bytes: PostgreSQL
keeps the first 63 bytes of a name, and a rebuild's copy adds ``REBUILD_SUFFIX``."""
MAX_PROJECTION_NAME = 100
"""The longest projection name, in characters (ASCII letters, digits, underscores): it is
a key in facta's tables and part of lock file names and Kafka consumer group ids."""
RESERVED_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})
"""PostgreSQL's system column names, which no table may use for a column of its own (its
manual, "System Columns"); refused in any case, since unquoted SQL folds to lower case."""
_KAFKA_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_TOPIC_LENGTH = 249


def handles(event_cls: type[E]) -> Callable[[Callable[[P, ReadModel, E, RecordedEvent], None]], Callable[[P, ReadModel, E, RecordedEvent], None]]:
    """Mark a method as the read-model handler of ``event_cls`` (one per event class).
    Raises :class:`~facta.domain.EventRegistryError` unless it is a declared event class."""
    check_event_class("handles", event_cls)

    def mark(fn: Callable[[P, ReadModel, E, RecordedEvent], None]) -> Callable[[P, ReadModel, E, RecordedEvent], None]:
        fn.__facta_handles__ = event_cls  # type: ignore[attr-defined]
        return fn

    return mark


class ReadModelTable:
    """A read-model table declared on a projection class.

    On the class it is the live table; on an instance it is the table that instance is
    building (the live one, or its fresh copy during a rebuild).
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.attribute = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = name

    @overload
    def __get__(self, instance: None, owner: type) -> Table: ...
    @overload
    def __get__(self, instance: Projection, owner: type) -> Table: ...
    def __get__(self, instance: Projection | None, owner: type) -> Table:
        if instance is None:
            return self.table
        return instance.tables[self.attribute]


def read_model_table(name: str, *items: Column[Any] | Constraint | Index) -> Any:
    """Declare a read-model table (columns, constraints and indexes, as for ``Table``).

    Name indexes with the table's name as a prefix (``account_balances_owner_idx``) or
    leave them unnamed; a rebuild gives its fresh copy's indexes its own names.

    Names are quoted, so any text works (upper case, spaces, quotes, non-ASCII letters),
    except: an empty name or one holding NUL; a table, column, index or constraint name
    longer than :data:`MAX_NAME_BYTES` (54) bytes in UTF-8 (one limit for every name, so
    a model declared on one dialect works on the other: PostgreSQL would cut a longer
    column name to 63 bytes); two columns whose names differ only in case (SQLite does
    not tell them apart); a column named like one of PostgreSQL's system columns
    (:data:`RESERVED_COLUMNS`: ``ctid``, ``xmin``, ...); a table or index name starting
    with ``sqlite_`` (SQLite reserves those, in any case); a table name starting with
    ``facta_`` (facta's own tables) or ending with ``__rebuild`` (rebuild copies). Each
    raises :class:`ProjectionError` here, naming it.
    """
    _check_name("read-model table name", name, "")
    lowered = name.lower()
    if lowered.startswith("facta_"):
        raise ProjectionError(f"read-model table name {name!r} starts with 'facta_', which facta's own tables use")
    if lowered.endswith(REBUILD_SUFFIX):
        raise ProjectionError(f"read-model table name {name!r} ends with {REBUILD_SUFFIX!r}, which rebuild copies use")
    _check_sqlite_reserved("read-model table name", name, "")
    table = Table(name, MetaData(), *items)
    _check_columns(table)
    for kind, item_name in _named_items(table):
        _check_name(f"{kind} name", item_name, f" of read-model table {name!r}")
        if kind == "index":
            _check_sqlite_reserved("index name", item_name, f" of read-model table {name!r}")
    return ReadModelTable(table)


def _check_columns(table: Table) -> None:
    """Every column name within the limit; no two alike but for case."""
    seen: dict[str, str] = {}
    where = f" of read-model table {table.name!r}"
    for column in table.columns:
        _check_name("column name", column.name, where,
                    "the limit of every read-model name, so that a model moves between dialects (PostgreSQL keeps 63"
                    " bytes of a name)")
        if column.name.lower() in RESERVED_COLUMNS:
            raise ProjectionError(
                f"column name {column.name!r}{where} is the name of a PostgreSQL system column"
                f" ({', '.join(sorted(RESERVED_COLUMNS))}): rename it"
            )
        other = seen.setdefault(column.name.lower(), column.name)
        if other != column.name:
            raise ProjectionError(
                f"column name {column.name!r}{where} differs from column {other!r} only in case, which SQLite does"
                " not tell apart: rename one of them"
            )


def _check_name(what: str, name: Any, where: str, reason: str = "") -> None:
    if not isinstance(name, str):
        raise ProjectionError(f"{what} {name!r}{where} is of type {type(name).__name__}, not a string")
    if not name:
        raise ProjectionError(f"{what} {name!r}{where} is empty")
    if "\x00" in name:
        raise ProjectionError(f"{what} {name!r}{where} holds a NUL character, which PostgreSQL cannot store")
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        raise ProjectionError(
            f"{what} {name!r}{where} is {size} bytes long: at most {MAX_NAME_BYTES} (UTF-8), "
            + (reason or f"since PostgreSQL keeps 63 bytes of a name and a rebuild's copy adds {REBUILD_SUFFIX!r}")
        )


def _check_sqlite_reserved(what: str, name: str, where: str) -> None:
    """SQLite refuses to create a table or index whose name starts with ``sqlite_``, in any case."""
    if name.lower().startswith("sqlite_"):
        raise ProjectionError(f"{what} {name!r}{where} starts with 'sqlite_', which SQLite reserves for itself")


def _named_items(table: Table) -> list[tuple[str, str]]:
    """The explicitly named indexes and constraints of ``table`` (kind, name)."""
    out = [("index", str(index.name)) for index in table.indexes if _given_name(index.name)]
    out += [("constraint", str(c.name)) for c in table.constraints if _given_name(c.name)]
    return out


def _given_name(name: Any) -> bool:
    """Whether ``name`` was given by the user (not None, not made by a naming convention)."""
    return isinstance(name, str) and not isinstance(name, conv) and not type(name).__name__.startswith("_")


class Projection:
    """Base class of projections. Subclasses give ``name=`` and declare handlers and tables."""

    name: ClassVar[str]
    streams: ClassVar[tuple[str, ...]] = ()
    """The stream types whose Kafka topics (``<prefix>.<stream type>``, the relay's) carry
    the handled events; by default found from the code (see :meth:`stream_types`)."""
    registry: ClassVar[EventRegistry] = default_registry
    _handlers: ClassVar[dict[str, Handler]]
    _applier_class: ClassVar[type[Applier] | None] = None
    """The applier the runner keeps it live with (None: :class:`~._applier.Applier`)."""
    _event_classes: ClassVar[dict[str, type[DomainEvent]]]
    _table_attrs: ClassVar[dict[str, ReadModelTable]]

    def __init_subclass__(cls, *, name: str | None = None, registry: EventRegistry | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is not None:
            if not isinstance(name, str):
                raise ProjectionError(f"projection name {name!r} is of type {type(name).__name__}, not a string")
            if not name or not name.replace("_", "").isalnum() or not name.isascii():
                raise ProjectionError(f"projection name {name!r} must be letters, digits and underscores")
            if len(name) > MAX_PROJECTION_NAME:
                raise ProjectionError(
                    f"projection name {name!r} is {len(name)} characters long: at most {MAX_PROJECTION_NAME}"
                )
            cls.name = name
        for stream_type in cls.__dict__.get("streams", ()):
            if not isinstance(stream_type, str) or not stream_type or not set(stream_type) <= _KAFKA_TOPIC_CHARS:
                raise ProjectionError(
                    f"projection {getattr(cls, 'name', cls.__name__)!r} declares stream type {stream_type!r} in"
                    " streams, which cannot be part of a Kafka topic name (letters, digits, '.', '_', '-')"
                )
        if registry is not None:
            cls.registry = registry
        handlers: dict[str, Handler] = {}
        classes: dict[str, type[DomainEvent]] = {}
        tables: dict[str, ReadModelTable] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, ReadModelTable):
                    tables[attr] = value
                handled = getattr(value, "__facta_handles__", None)
                if handled is not None:
                    handlers[handled.event_type] = value
                    classes[handled.event_type] = handled
        cls._handlers, cls._event_classes, cls._table_attrs = handlers, classes, tables

    def __init__(self, *, table_suffix: str = "", rename_constraints: bool = True) -> None:
        """``table_suffix``: build the copies ``<table><suffix>`` (a rebuild's), their
        indexes renamed, and their named constraints too with ``rename_constraints``
        (needed on PostgreSQL, where unique and primary key constraints are indexes
        with schema-wide names; on SQLite a constraint's name is its table's alone)."""
        self.table_suffix = table_suffix
        self.tables: dict[str, Table] = {
            attr: _physical(decl.table, table_suffix, rename_constraints) for attr, decl in self._table_attrs.items()
        }

    # -- what the runner asks ---------------------------------------------------------------

    @classmethod
    def event_types(cls) -> list[str]:
        """The registered type names this projection consumes; others are skipped unread."""
        return sorted(cls._event_classes)

    @classmethod
    def stream_types(cls) -> list[str]:
        """The stream types whose topics a Kafka source reads, sorted: ``streams`` when the
        class gives it; otherwise, for each handled event type, the stream types of the
        declared aggregate classes that apply it (``@applies``), and for an event type no
        imported aggregate applies, the part of its name before the first dot (a Kafka run
        checks that guess against the store: :func:`.kafka_source.check_routing`)."""
        if cls.streams:
            return sorted(cls.streams)
        found: set[str] = set()
        for event_type in cls._event_classes:
            found.update(_applied_by(event_type) or {_name_prefix(event_type)})
        return sorted(found)

    @classmethod
    def guessed_event_types(cls) -> list[str]:
        """The handled event types routed by their name's prefix (no ``streams``, no
        imported aggregate applies them)."""
        if cls.streams:
            return []
        return sorted(t for t in cls._event_classes if not _applied_by(t))

    @classmethod
    def live_tables(cls) -> list[Table]:
        return [decl.table for decl in cls._table_attrs.values()]

    @classmethod
    def schema_hash(cls, dialect: Dialect) -> str:
        """A fingerprint of the declared tables' DDL on ``dialect``; a change asks for a rebuild."""
        digest = hashlib.sha256()
        for table in sorted(cls.live_tables(), key=lambda t: t.name):
            digest.update(str(CreateTable(table).compile(dialect=dialect)).encode())
            for index in sorted(table.indexes, key=lambda i: i.name or ""):
                digest.update(str(CreateIndex(index).compile(dialect=dialect)).encode())
        return digest.hexdigest()[:32]

    def handler_for(self, event_type: str) -> Handler | None:
        return self._handlers.get(event_type)

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables.values())


def _applied_by(event_type: str) -> set[str]:
    """The stream types of the declared aggregate classes that apply ``event_type``."""
    from facta.domain.aggregate import Aggregate

    return {
        stream_type for stream_type, aggregate in Aggregate._by_stream_type.items()
        if any(getattr(e, "event_type", None) == event_type for e in aggregate._handlers)
    }


def _name_prefix(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def _physical(table: Table, suffix: str, rename_constraints: bool = True) -> Table:
    """A copy of ``table`` named ``<name><suffix>``, its indexes (and with
    ``rename_constraints`` its named constraints) renamed to match."""
    if not suffix:
        return table
    new_name = table.name + suffix
    copy = table.to_metadata(MetaData(), name=new_name)
    originals = {_index_shape(index): index.name for index in table.indexes}
    for index in copy.indexes:
        # A naming convention named the copy's index after the copy's table: name it
        # after the original's name instead, as the swap expects.
        original = originals.get(_index_shape(index), index.name)
        index.name = quoted_name(rebuild_name(original, table.name, new_name), None)
    if rename_constraints:
        for constraint in copy.constraints:
            if _given_name(constraint.name):
                constraint.name = quoted_name(rebuild_name(constraint.name, table.name, new_name), None)
    return copy


def _index_shape(index: Index) -> tuple[Any, ...]:
    return (bool(index.unique), tuple(getattr(e, "name", None) or str(e) for e in index.expressions))


def rename_index(name: Any, old_table: str, new_table: str) -> str:
    """The name an index (or constraint) of ``old_table`` takes on ``new_table``: the
    table's part of a name that starts with it is replaced; a rebuild copy's suffix is
    added to another name (so a name of at most :data:`MAX_NAME_BYTES` bytes fits)."""
    text = str(name)
    if text.startswith(old_table):
        return new_table + text[len(old_table):]
    if new_table.startswith(old_table):
        return text + new_table[len(old_table):]
    return f"{new_table}__{text}"


def rebuild_name(name: Any, old_table: str, new_table: str) -> str:
    """:func:`rename_index`, kept within PostgreSQL's 63 bytes: a longer result (from a
    name a naming convention made, which no check limits) keeps its start and ends in a
    hash of the whole, so that different names stay different."""
    text = rename_index(name, old_table, new_table)
    data = text.encode()
    if len(data) <= 63:
        return text
    digest = hashlib.sha256(data).hexdigest()[:10]
    head = data[:63 - 11].decode(errors="ignore")
    return f"{head}_{digest}"


def check_projection_class(name: str, projection: object) -> None:
    if not (isinstance(projection, type) and issubclass(projection, Projection)) or not hasattr(projection, "name"):
        raise InvalidValue(f"{name} must be a Projection subclass declared with name=..., got {got(projection)}")
