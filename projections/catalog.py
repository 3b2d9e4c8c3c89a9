"""Which projections there are: names resolved to classes.

The catalog holds the reference projections (:data:`REFERENCE_PROJECTIONS`), the
reference process managers after them (:data:`REFERENCE_PROCESSES`: a
:class:`~facta.projections.process.ProcessManager` is run, listed and skipped past like a
projection, under a name of the same kind) and the user's own, from modules named in ``FACTA_PROJECTIONS`` (or the CLI's ``--projections``):
a comma-separated list of ``package.module`` (every :class:`Projection` subclass with a
``name`` defined in that module) or ``package.module:ClassName`` (that class only)::

    FACTA_PROJECTIONS=shop.projections,shop.reports:DailySales facta projections list

Modules are imported with the current directory on ``sys.path`` (as ``python -m`` does),
so a project's own modules are found when the command runs from the project's folder.
A module that cannot be imported, or that defines no projection, is a one-line
:class:`ProjectionError` naming it; an unknown name is :class:`UnknownProjection`.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from types import ModuleType

from facta.errors import ProjectionError, UnknownProjection
from facta.settings import settings
from facta.user_modules import import_failure, import_user_module, is_module_name

from .api import Projection
from .reference import REFERENCE_PROCESSES, REFERENCE_PROJECTIONS

__all__ = ["ENV_VAR", "Catalog", "load_catalog", "parse_modules", "projections_in"]

ENV_VAR = "FACTA_PROJECTIONS"


class Catalog:
    """Projection (and process manager) classes by name, in the order they were added
    (reference ones first)."""

    def __init__(self, projections: Iterable[type[Projection]] = ()) -> None:
        self._by_name: dict[str, type[Projection]] = {}
        for projection in projections:
            self.add(projection)

    def add(self, projection: type[Projection], *, origin: str = "") -> None:
        """Add ``projection``; raises :class:`ProjectionError` if its name is taken, or if
        it or one of its tables, indexes or named constraints has another's name up to
        case (one and the same on SQLite, on a case-insensitive file system for lock
        files, and in PostgreSQL's schema-wide index names)."""
        name = projection.name
        known = self._by_name.get(name)
        if known is not None and known is not projection:
            where = f" (from {origin})" if origin else ""
            raise ProjectionError(
                f"projection name {name!r} is defined twice: by {_qualname(known)} and by {_qualname(projection)}{where}"
            )
        if known is None:
            for other in self._by_name.values():
                if other.name.lower() == name.lower():
                    raise ProjectionError(
                        f"projection name {name!r} differs from {other.name!r} only in case: rename one of them"
                    )
            taken = {key: (kind, item, other) for other in self._by_name.values()
                     for key, (kind, item) in _object_names(other).items()}
            for key, (kind, item) in _object_names(projection).items():
                if key in taken:
                    other_kind, other_item, other = taken[key]
                    raise ProjectionError(
                        f"{kind} {item!r} of projection {name!r} has the name of {other_kind} {other_item!r} of"
                        f" projection {other.name!r} on SQLite, which compares names without case: rename one of them"
                    )
        self._by_name[name] = projection

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> type[Projection]:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownProjection(name, self.names()) from None

    def resolve(self, names: Iterable[str]) -> list[type[Projection]]:
        """The classes of ``names``, each once, in the order given."""
        out: list[type[Projection]] = []
        for name in names:
            projection = self.get(name)
            if projection not in out:
                out.append(projection)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[type[Projection]]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)


def load_catalog(modules: str | Iterable[str] | None = None) -> Catalog:
    """The reference projections plus those of ``modules`` (a comma-separated string or a
    list of specs; ``None`` reads ``FACTA_PROJECTIONS``)."""
    if modules is None:
        modules = settings().projections or ""
    specs = parse_modules(modules) if isinstance(modules, str) else [s.strip() for s in modules if s.strip()]
    catalog = Catalog((*REFERENCE_PROJECTIONS, *REFERENCE_PROCESSES))
    for spec in specs:
        for projection in projections_in(spec):
            catalog.add(projection, origin=spec)
    return catalog


def parse_modules(text: str) -> list[str]:
    """``"a.b, c.d:E"`` -> ``["a.b", "c.d:E"]`` (empty items ignored)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def projections_in(spec: str) -> list[type[Projection]]:
    """The projections a spec names: ``package.module`` or ``package.module:ClassName``."""
    module_name, _, class_name = spec.partition(":")
    module_name, class_name = module_name.strip(), class_name.strip()
    if not _dotted(module_name) or (":" in spec and not class_name.isidentifier()):
        raise ProjectionError(
            f"projections module {spec!r} is not of the form package.module or package.module:ClassName"
        )
    module = _import(module_name, spec)
    if class_name:
        found = getattr(module, class_name, None)
        if found is None:
            raise ProjectionError(f"projections module {module_name!r} has no attribute {class_name!r} (from {spec!r})")
        if not (inspect.isclass(found) and issubclass(found, Projection) and "name" in vars(found)):
            raise ProjectionError(
                f"{spec!r} is not a projection: give a Projection subclass declared with name=..."
            )
        return [found]
    found_all = [
        value for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, Projection) and value.__module__ == module.__name__
        and "name" in vars(value)
    ]
    if not found_all:
        raise ProjectionError(
            f"projections module {module_name!r} defines no projection (no Projection subclass declared with name=...)"
        )
    return found_all


def _dotted(name: str) -> bool:
    return is_module_name(name)


def _import(module_name: str, spec: str) -> ModuleType:
    try:
        return import_user_module(module_name)
    except ProjectionError as exc:
        raise ProjectionError(f"cannot import projections module {spec!r}: {exc}") from exc
    except Exception as exc:  # anything the module raises while it is imported
        raise ProjectionError(f"cannot import projections module {spec!r}: {import_failure(exc)}") from exc


def _object_names(projection: type[Projection]) -> dict[tuple[str, str], tuple[str, str]]:
    """The database objects a projection names, by (namespace, case-folded name): tables
    share one namespace, indexes and unique or primary key constraints another."""
    from .api import _named_items

    out: dict[tuple[str, str], tuple[str, str]] = {}
    for table in projection.live_tables():
        out[("table", table.name.lower())] = ("read-model table", table.name)
        for kind, item in _named_items(table):
            out[("index", item.lower())] = (kind, item)
    return out


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
