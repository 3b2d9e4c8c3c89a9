"""One error module (issue 11, item 6): ``facta.errors`` holds the whole tree of public
errors, drawn in its docstring; the old import paths still give the same classes; user
mistakes that raised a bare ValueError raise a FactaError subclass, with one line naming
the value."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import inspect
import re
from pathlib import Path

import pytest

import facta.errors as errors
from facta.domain.reference import Account
from facta.errors import FactaError, InvalidValue, ProjectionError
from facta.eventstore import EventStore, Repository
from facta.eventstore.kafka_support import parse_bootstrap

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("domain", "eventstore", "projections", "replay", "facta_pkg", "migrations")


def public_classes() -> dict[str, type[BaseException]]:
    return {name: getattr(errors, name) for name in errors.__all__}


def test_every_public_error_is_a_facta_error_drawn_in_the_tree() -> None:
    classes = public_classes()
    assert len(classes) == 34
    doc = errors.__doc__ or ""
    tree = doc[doc.index("FactaError  "):doc.index("This module imports")]
    # One class per line: FactaError, then each under its parent (InvalidValue is drawn twice).
    lines = [m.groups() for m in (re.match(r"^\s*([│ ]*)(?:([├└])── )?([A-Z][A-Za-z]+)(?=\s|$)", line)
                                  for line in tree.splitlines()) if m and (m.group(2) or m.group(3) == "FactaError")]
    assert {name for _, _, name in lines} == set(classes), "the docstring's tree names every class, and only those"
    for name, cls in classes.items():
        assert issubclass(cls, FactaError), name
        assert cls.__module__ == "facta.errors", name
    depth_of = {}
    parents: list[str] = []
    for indent, branch, name in lines:
        depth = len(indent) // 4 + (1 if branch else 0)
        del parents[depth:]
        if parents:
            assert issubclass(classes[name], classes[parents[-1]]), f"{name} is drawn under {parents[-1]}"
        parents.append(name)
        depth_of[name] = depth
    assert depth_of["RecordRefused"] == 3 and depth_of["InvalidSetting"] == 2


def test_invalid_value_is_still_a_value_error_and_a_store_error() -> None:
    assert issubclass(InvalidValue, ValueError) and issubclass(InvalidValue, errors.StoreError)
    assert issubclass(errors.InvalidSetting, InvalidValue)


@pytest.mark.parametrize(("module", "names"), [
    ("facta.domain", ["FactaError", "DomainError", "InvalidTransition", "EventRegistryError", "UnknownEventType",
                      "EventDecodeError", "UnknownAggregateType"]),
    ("facta.domain.errors", ["FactaError", "DomainError", "UnknownAggregateType"]),
    ("facta.domain.aggregate", ["UnknownAggregateType"]),
    ("facta.eventstore", ["ConcurrencyError", "DatabaseBusy", "DatabaseURLError", "DatabaseUnavailable",
                          "DuplicateEventError", "InvalidValue", "MigrationRefused", "RecordConflict", "SchemaNotReady", "StoreError",
                          "StreamNotFound", "StreamTypeMismatch", "UnknownSchemaRevision", "VersionNotFound"]),
    ("facta.eventstore.errors", ["InvalidValue", "StoreError", "ConcurrencyError"]),
    ("facta.eventstore.repository", ["VersionNotFound"]),
    ("facta.eventstore.relay", ["RelayError", "RecordRefused"]),
    ("facta.eventstore.audit", ["AuditError"]),
    ("facta.eventstore.kafka_codec", ["KafkaRecordError"]),
    ("facta.projections", ["ProjectionError", "UnknownProjection"]),
    ("facta.projections.errors", ["ProjectionError", "UnknownProjection"]),
    ("facta.projections.retention", ["RetentionGap"]),
    ("facta.replay.demo", ["DemoRefused"]),
    ("facta.dev.devbroker", ["BrokerError"]),
    ("facta.dev.apache_kafka", ["ApacheKafkaError"]),
])
def test_the_old_import_paths_give_the_same_classes(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is getattr(errors, name), f"{module}.{name}"


def test_no_other_library_module_defines_a_public_error() -> None:
    """Public exception classes live in facta.errors only (private ones, ``_Stopping``, and
    the internal signals ``Rejected``, ``LostRace``, ``Stale`` are no API)."""
    internal = {"Rejected", "LostRace", "Stale", "ScenarioFailed"}  # ScenarioFailed: pytest's AssertionError
    found = []
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "errors.py" and folder == "facta_pkg":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.ClassDef) and not node.name.startswith("_") and node.name not in internal
                        and any(isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception", "Refused"))
                                                             or b.id in errors.__all__) for b in node.bases)):
                    found.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert [f for f in found if not f.endswith("_OneLineUsageError")] == []


# -- user mistakes that raised a bare ValueError ------------------------------------------------


def test_assigning_more_event_ids_than_pending_events_is_invalid_value() -> None:
    import uuid

    account = Account.open("acct-1", owner="ann", currency="EUR")
    with pytest.raises(InvalidValue) as info:
        account.assign_event_ids(uuid.uuid4(), uuid.uuid4())
    assert str(info.value) == (
        "account 'acct-1': 2 ids given for 1 pending events; give 1 id per pending event, at most"
    )
    with pytest.raises(InvalidValue, match=r"^account 'acct-1': 0 ids given for 1 pending events"):
        account.assign_event_ids()


async def test_snapshot_every_below_one_is_invalid_value(store: EventStore) -> None:
    with pytest.raises(InvalidValue) as info:
        Repository(store, snapshot_every=0)
    assert str(info.value) == "snapshot_every must be >= 1 or None, got 0"


async def test_a_naive_time_for_first_position_at_is_invalid_value(store: EventStore) -> None:
    with pytest.raises(InvalidValue) as info:
        await store.first_position_at(dt.datetime(2026, 1, 2, 3, 4, 5))
    assert str(info.value) == "naive datetime 2026-01-02T03:04:05 given: use an aware time"


def test_a_bad_bootstrap_list_is_invalid_value() -> None:
    with pytest.raises(InvalidValue) as info:
        parse_bootstrap("kafka:0")
    assert str(info.value) == "invalid Kafka bootstrap address 'kafka:0': port '0' is not 1 to 65535"


def test_a_projection_name_of_other_characters_is_a_projection_error() -> None:
    from facta.projections import Projection

    with pytest.raises(ProjectionError) as info:
        class Odd(Projection, name="no spaces please"):
            pass
    assert str(info.value) == "projection name 'no spaces please' must be letters, digits and underscores"


def test_a_testing_server_that_is_not_postgresql_is_invalid_value() -> None:
    from facta.testing import _admin_url

    with pytest.raises(InvalidValue) as info:
        _admin_url("sqlite:///x.db")
    assert str(info.value) == "FACTA_TEST_DATABASE_URL must name a PostgreSQL server, got sqlite:///x.db"


def test_no_bare_value_error_is_raised_in_the_library() -> None:
    """Bare ValueError/TypeError remain only in internal parsers whose callers turn them
    into a FactaError (database URL options, the Kafka time codec) or in a guard that
    validation makes unreachable (a naive time bound to a column)."""
    allowed = {("eventstore/database.py", 3), ("eventstore/kafka_codec.py", 1), ("eventstore/schema.py", 1)}
    found: dict[str, int] = {}
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name)
                        and node.exc.func.id in ("ValueError", "TypeError", "KeyError")):
                    key = str(path.relative_to(ROOT))
                    found[key] = found.get(key, 0) + 1
    assert set(found.items()) == allowed


def test_facta_errors_imports_nothing_of_facta() -> None:
    source = inspect.getsource(errors)
    assert not re.search(r"^\s*(from|import) facta", source, flags=re.M)
