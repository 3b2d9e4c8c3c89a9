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

Side effects that must happen once (charging an account) are ``@effect`` handlers:
async, run before the batch's transaction with an :class:`EffectContext`, never during
a replay, and written to be idempotent (a crash between the effect and the checkpoint
runs it again).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from sqlalchemy import Column, Constraint, Index, MetaData, Table
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.elements import quoted_name

from facta.domain import DomainEvent, EventRegistry, default_registry
from facta.eventstore import EventStore, RecordedEvent

if TYPE_CHECKING:
    from sqlalchemy import Dialect

    from .writer import ReadModel

__all__ = [
    "EffectContext",
    "Projection",
    "ReadModelTable",
    "effect",
    "handles",
    "read_model_table",
]

E = TypeVar("E", bound=DomainEvent)
P = TypeVar("P", bound="Projection")

Handler = Callable[[Any, "ReadModel", Any, RecordedEvent], None]
EffectHandler = Callable[[Any, "EffectContext", Any, RecordedEvent], Awaitable[None]]

REBUILD_SUFFIX = "__rebuild"


def handles(event_cls: type[E]) -> Callable[[Callable[[P, ReadModel, E, RecordedEvent], None]], Callable[[P, ReadModel, E, RecordedEvent], None]]:
    """Mark a method as the read-model handler of ``event_cls`` (one per event class)."""

    def mark(fn: Callable[[P, ReadModel, E, RecordedEvent], None]) -> Callable[[P, ReadModel, E, RecordedEvent], None]:
        fn.__facta_handles__ = event_cls  # type: ignore[attr-defined]
        return fn

    return mark


def effect(event_cls: type[E]) -> Callable[[Callable[[P, EffectContext, E, RecordedEvent], Awaitable[None]]], Callable[[P, EffectContext, E, RecordedEvent], Awaitable[None]]]:
    """Mark an async method as a side effect of ``event_cls``: run once per event before
    its batch commits, skipped by replays. It must be idempotent (key it by the event id):
    a crash after the effect and before the checkpoint runs it again."""

    def mark(
        fn: Callable[[P, EffectContext, E, RecordedEvent], Awaitable[None]],
    ) -> Callable[[P, EffectContext, E, RecordedEvent], Awaitable[None]]:
        fn.__facta_effect__ = event_cls  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True)
class EffectContext:
    """What an effect handler may use: the event store (to load and save aggregates)."""

    store: EventStore
    projection: str


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
    """
    return ReadModelTable(Table(name, MetaData(), *items))


class Projection:
    """Base class of projections. Subclasses give ``name=`` and declare handlers and tables."""

    name: ClassVar[str]
    streams: ClassVar[tuple[str, ...]] = ()
    """The stream types whose Kafka topics (``<prefix>.<stream type>``, the relay's) carry
    the handled events; by default found from the code (see :meth:`stream_types`)."""
    registry: ClassVar[EventRegistry] = default_registry
    _handlers: ClassVar[dict[str, Handler]]
    _effects: ClassVar[dict[str, EffectHandler]]
    _event_classes: ClassVar[dict[str, type[DomainEvent]]]
    _table_attrs: ClassVar[dict[str, ReadModelTable]]

    def __init_subclass__(cls, *, name: str | None = None, registry: EventRegistry | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name is not None:
            if not name or not name.replace("_", "").isalnum() or not name.isascii():
                raise ValueError(f"projection name {name!r} must be letters, digits and underscores")
            cls.name = name
        if registry is not None:
            cls.registry = registry
        handlers: dict[str, Handler] = {}
        effects: dict[str, EffectHandler] = {}
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
                done = getattr(value, "__facta_effect__", None)
                if done is not None:
                    effects[done.event_type] = value
                    classes[done.event_type] = done
        cls._handlers, cls._effects, cls._event_classes, cls._table_attrs = handlers, effects, classes, tables

    def __init__(self, *, table_suffix: str = "") -> None:
        self.table_suffix = table_suffix
        self.tables: dict[str, Table] = {
            attr: _physical(decl.table, table_suffix) for attr, decl in self._table_attrs.items()
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
        checks that guess against the store: :func:`unrouted_event_types`)."""
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
    def has_effects(cls) -> bool:
        return bool(cls._effects)

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

    def effect_for(self, event_type: str) -> EffectHandler | None:
        return self._effects.get(event_type)

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


def _physical(table: Table, suffix: str) -> Table:
    """A copy of ``table`` named ``<name><suffix>``, its indexes renamed to match."""
    if not suffix:
        return table
    copy = table.to_metadata(MetaData(), name=table.name + suffix)
    for index in copy.indexes:
        index.name = quoted_name(rename_index(index.name, table.name, table.name + suffix), None)
    return copy


def rename_index(name: Any, old_table: str, new_table: str) -> str:
    """The name an index of ``old_table`` takes on ``new_table``."""
    text = str(name)
    if text.startswith(old_table):
        return new_table + text[len(old_table):]
    return f"{new_table}__{text}"

