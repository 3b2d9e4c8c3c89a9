"""Testing support for your own aggregates and projections: pytest fixtures and
given/when/then helpers.

Aggregates (no database; aggregates do no I/O)::

    from facta.testing import given

    def test_adding_to_a_cart() -> None:
        (given(Cart, "cart-1", ItemAdded(sku="apple", quantity=3))
            .when(lambda cart: cart.add("pear", 1))
            .then(ItemAdded(sku="pear", quantity=1)))

    def test_a_quantity_must_be_positive() -> None:
        given(Cart, "cart-1").when(lambda cart: cart.add("pear", 0)).then_raises(DomainError, "positive")

Projections (a store, from the fixtures below or your own)::

    async def test_cart_sizes(facta_store: EventStore) -> None:
        await (project(facta_store, CartSizes)
               .given("cart-1", ItemAdded(sku="apple", quantity=3), stream_type="cart")
               .then_rows(CartSizes.sizes, [{"cart_id": "cart-1", "items": 3}]))

The fixtures are a pytest plugin, opt-in: put ``pytest_plugins = ["facta.testing"]`` in
your top-level ``conftest.py`` (pytest-asyncio runs the async ones). ``facta_database_url``
is a fresh SQLite file per test; when ``FACTA_TEST_DATABASE_URL`` (or the pytest option
``--facta-database-url``) names a PostgreSQL server (``postgresql://user@host:5432/postgres``),
every test that uses it runs twice, on SQLite and on a fresh PostgreSQL database created on
that server for the test and dropped after it. ``facta_store`` is an open
:class:`~facta.eventstore.EventStore` on it, migrated.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from facta.domain import Aggregate, DomainEvent
from facta.errors import InvalidValue
from facta.settings import settings

if TYPE_CHECKING:
    import pytest
    from sqlalchemy import Table

    from facta.eventstore import EventStore
    from facta.projections import Projection

__all__ = [
    "AggregateScenario",
    "ProjectionScenario",
    "ScenarioFailed",
    "facta_database_url",
    "facta_store",
    "given",
    "project",
]

A = TypeVar("A", bound=Aggregate)

DATABASE_ENV = "FACTA_TEST_DATABASE_URL"


class ScenarioFailed(AssertionError):
    """A given/when/then expectation did not hold; the message says what differed."""


# -- aggregates -------------------------------------------------------------------------------


class AggregateScenario(Generic[A]):
    """An aggregate rebuilt from given events, a command, and what it must emit."""

    def __init__(self, cls: type[A], aggregate_id: str, history: Sequence[DomainEvent]) -> None:
        self.cls, self.aggregate_id, self.history = cls, aggregate_id, list(history)
        self.aggregate: A = cls.rehydrate(aggregate_id, self.history, version=0)
        self._error: BaseException | None = None
        self._ran = False

    def when(self, command: Callable[[A], object]) -> AggregateScenario[A]:
        """Run ``command`` on the aggregate; an exception it raises is kept for
        :meth:`then_raises` (and fails :meth:`then`)."""
        self._ran = True
        try:
            command(self.aggregate)
        except Exception as exc:
            self._error = exc
        return self

    @property
    def emitted(self) -> list[DomainEvent]:
        """The events the command emitted, oldest first."""
        return [p.event for p in self.aggregate.pending_events]

    def then(self, *events: DomainEvent) -> A:
        """Assert the command emitted exactly ``events`` (none: emitted nothing); the aggregate."""
        self._require_ran("then")
        if self._error is not None:
            raise ScenarioFailed(f"expected {_show(events)}, but the command raised "
                                 f"{type(self._error).__name__}: {self._error}") from self._error
        if self.emitted != list(events):
            raise ScenarioFailed(f"expected {_show(events)}, got {_show(self.emitted)}")
        return self.aggregate

    def then_raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        """Assert the command raised ``error`` (its message matching the regular expression
        ``match``, searched) and emitted nothing; the exception."""
        self._require_ran("then_raises")
        if self._error is None:
            raise ScenarioFailed(f"expected {error.__name__}, but the command emitted {_show(self.emitted)}")
        if not isinstance(self._error, error):
            raise ScenarioFailed(f"expected {error.__name__}, got {type(self._error).__name__}: {self._error}"
                                 ) from self._error
        if match is not None and re.search(match, str(self._error)) is None:
            raise ScenarioFailed(f"{error.__name__} message {str(self._error)!r} does not match {match!r}")
        if self.emitted:
            raise ScenarioFailed(f"{error.__name__} was raised, but the command emitted {_show(self.emitted)} first")
        return self._error

    def _require_ran(self, step: str) -> None:
        if not self._ran:
            raise ScenarioFailed(f"{step}() needs a when() first")


def given(cls: type[A], aggregate_id: str, *events: DomainEvent) -> AggregateScenario[A]:
    """A :class:`AggregateScenario`: ``cls`` ``aggregate_id`` rebuilt from ``events`` (none:
    a new aggregate), as a repository would load it."""
    return AggregateScenario(cls, aggregate_id, events)


def _show(events: Iterable[DomainEvent]) -> str:
    shown = [repr(e) for e in events]
    return "[" + ", ".join(shown) + "]" if shown else "no events"


# -- projections ------------------------------------------------------------------------------


class ProjectionScenario:
    """Events appended to a store, a projection run over them, and its rows checked."""

    def __init__(self, store: EventStore, projection: type[Projection]) -> None:
        self.store, self.projection = store, projection
        self._appends: list[tuple[str, str, list[DomainEvent]]] = []

    def given(self, stream_id: str, *events: DomainEvent, stream_type: str | type[Aggregate]) -> ProjectionScenario:
        """Append ``events`` to ``stream_id`` (after what it holds) when the scenario runs."""
        kind = stream_type if isinstance(stream_type, str) else stream_type.stream_type
        self._appends.append((stream_id, kind, list(events)))
        return self

    async def run(self) -> int:
        """Append the given events and run the projection until it has caught up; the
        number of events it applied."""
        from facta.projections import ProjectionRunner

        for stream_id, kind, events in self._appends:
            await self.store.append(stream_id, kind, events, expected_version=None)
        self._appends.clear()
        runner = ProjectionRunner(self.store, self.projection)
        return await runner.run(once=True)

    async def rows(self, table: Table) -> list[dict[str, Any]]:
        """``table``'s live rows (a table the projection declared), in primary-key order."""
        from sqlalchemy import select

        query = select(table).order_by(*table.primary_key.columns)
        found = await self.store.database.read(lambda conn: conn.execute(query).mappings().all())
        return [dict(row) for row in found]

    async def then_rows(self, table: Table, expected: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Run (:meth:`run`), then assert ``table`` holds exactly the ``expected`` rows, in
        any order, compared on the columns they name; the rows."""
        await self.run()
        rows = await self.rows(table)
        columns = sorted({c for row in expected for c in row})
        got = sorted((tuple((c, row.get(c)) for c in columns) for row in rows), key=repr)
        want = sorted((tuple((c, row.get(c)) for c in columns) for row in expected), key=repr)
        if got != want:
            raise ScenarioFailed(f"{table.name}: expected rows {[dict(r) for r in want]}, got {[dict(r) for r in got]}")
        return rows


def project(store: EventStore, projection: type[Projection]) -> ProjectionScenario:
    """A :class:`ProjectionScenario` for ``projection`` on ``store``."""
    return ProjectionScenario(store, projection)


# -- the pytest plugin ------------------------------------------------------------------------

try:
    import pytest as _pytest
    import pytest_asyncio as _pytest_asyncio
except ImportError:  # facta.testing's helpers work without pytest; the fixtures need both
    pass
else:

    def pytest_addoption(parser: pytest.Parser) -> None:
        parser.addoption("--facta-database-url", default=None,
                         help=f"A PostgreSQL server where facta_store creates a database per test "
                              f"(default: ${DATABASE_ENV}); tests then run on SQLite and on it.")

    def _server(config: pytest.Config) -> str | None:
        option = config.getoption("--facta-database-url", default=None)
        return (option or settings().test_database_url or "").strip() or None

    def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
        if "facta_backend" in metafunc.fixturenames:
            backends = ["sqlite", "postgresql"] if _server(metafunc.config) else ["sqlite"]
            metafunc.parametrize("facta_backend", backends, indirect=True)

    @_pytest.fixture
    def facta_backend(request: pytest.FixtureRequest) -> str:
        """``sqlite`` or ``postgresql``: the dialect of this run of the test."""
        return str(getattr(request, "param", "sqlite"))

    @_pytest_asyncio.fixture
    async def facta_database_url(facta_backend: str, request: pytest.FixtureRequest,
                                 tmp_path: Path) -> AsyncIterator[str]:
        """A fresh, empty database's URL: a SQLite file, or a PostgreSQL database
        created for the test (and dropped after it) on the configured server."""
        if facta_backend == "sqlite":
            yield f"sqlite+aiosqlite:///{tmp_path / 'facta.db'}"
            return
        server = _server(request.config)
        assert server is not None
        async with _postgres_database(server) as url:
            yield url

    @_pytest_asyncio.fixture
    async def facta_store(facta_database_url: str) -> AsyncIterator[EventStore]:
        """An open :class:`~facta.eventstore.EventStore` at facta's newest schema."""
        from facta.eventstore import EventStore

        async with await EventStore.open(facta_database_url, migrate=True) as store:
            yield store


def _admin_url(server: str) -> Any:
    from sqlalchemy.engine import make_url

    url = make_url(server)
    if not url.drivername.startswith("postgresql"):
        raise InvalidValue(f"{DATABASE_ENV} must name a PostgreSQL server, got {url.render_as_string(hide_password=True)}")
    return url


class _postgres_database:
    """``async with``: a database created on ``server`` and dropped after, as a facta URL."""

    def __init__(self, server: str) -> None:
        self.url = _admin_url(server)
        self.name = f"facta_test_{uuid.uuid4().hex[:12]}"

    async def _admin(self, sql: str) -> None:
        import asyncpg

        url = self.url
        conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                     database=url.database or "postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def __aenter__(self) -> str:
        await self._admin(f'CREATE DATABASE "{self.name}"')
        return str(self.url.set(drivername="postgresql+asyncpg", database=self.name).render_as_string(
            hide_password=False))

    async def __aexit__(self, *exc: object) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
