"""What a user of ``PERSISTENCE_MODULE=facta.eventsourcing`` sees when something is wrong:
one line naming the bad value (never a password), as an eventsourcing exception class,
and nothing half-written."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DataError,
    InfrastructureFactoryError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)

from facta import migrations
from facta.eventsourcing import FactaApplicationRecorder, FactaFactory, persistence
from facta.eventstore.blocking import BlockingEventStore
from facta.eventstore.validation import TEXT_LIMITS


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    persistence._close_all()


def env(url: str, **more: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "facta.eventsourcing", "FACTA_DATABASE_URL": url, **more}


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message, message
    assert message.strip() == message and message
    return message


def log_size(url: str) -> int:
    with BlockingEventStore.open(url) as store:
        return len(store.call(lambda s: s.read_log(after=0, limit=1000)))


# -- the database -------------------------------------------------------------------------------


def test_unreachable_postgres_is_one_operational_error_without_the_password() -> None:
    with pytest.raises(OperationalError) as caught:
        Application[Any](env=env("postgresql://postgres:s3cret@127.0.0.1:1/nowhere"))
    message = one_line(caught.value)
    assert "127.0.0.1:1/nowhere" in message
    assert "s3cret" not in message


def test_sqlite_file_in_a_missing_folder_is_one_operational_error(tmp_path: Path) -> None:
    with pytest.raises(OperationalError) as caught:
        Application[Any](env=env(f"sqlite:///{tmp_path}/missing/bank.db"))
    assert f"{tmp_path}/missing" in one_line(caught.value)


def test_a_url_facta_cannot_use_is_one_operational_error() -> None:
    with pytest.raises(OperationalError) as caught:
        Application[Any](env=env("mysql://db/bank"))
    assert "'mysql'" in one_line(caught.value)


def test_missing_schema_with_create_table_no_names_the_url_and_the_upgrade(backend_url: str) -> None:
    with pytest.raises(ProgrammingError) as caught:
        Application[Any](env=env(backend_url, CREATE_TABLE="no"))
    message = one_line(caught.value)
    assert "has no facta schema" in message
    assert "facta db upgrade" in message
    assert backend_url.rsplit("/", 1)[1] in message


def test_missing_sqlite_file_with_create_table_no_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    with pytest.raises(ProgrammingError) as caught:
        Application[Any](env=env(f"sqlite:///{path}", CREATE_TABLE="no"))
    assert one_line(caught.value) == (f"sqlite+aiosqlite:///{path} has no facta schema (the file does not exist): "
                                      "run `facta db upgrade`")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_sqlite_file_without_schema_with_create_table_no_keeps_its_tables(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE mine (x INTEGER)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ProgrammingError) as caught:
        Application[Any](env=env(f"sqlite:///{path}", CREATE_TABLE="no"))
    assert one_line(caught.value) == f"sqlite+aiosqlite:///{path} has no facta schema: run `facta db upgrade`"
    persistence._close_all()
    with sqlite3.connect(path) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert tables == ["mine"]
    assert len(path.read_bytes()) == len(before)


async def test_old_schema_with_create_table_no_names_both_revisions(sqlite_url: str) -> None:
    older = migrations.revisions()[-2]
    await migrations.upgrade_url(sqlite_url, older)

    def build() -> None:
        Application[Any](env=env(sqlite_url, CREATE_TABLE="no"))

    with pytest.raises(ProgrammingError) as caught:
        await asyncio.to_thread(build)
    message = one_line(caught.value)
    assert f"at schema revision {older}" in message and migrations.head() in message
    assert "facta db upgrade" in message


@pytest.mark.postgres
def test_applications_starting_together_on_a_fresh_postgres_database_all_start(postgres_url: str) -> None:
    # Six processes open a fresh database with CREATE_TABLE's default at once: their
    # upgrades queue on a transaction lock (facta.migrations) instead of racing on the
    # same CREATE statements (before, most runs lost one or more processes to a raw
    # UniqueViolationError from pg_type).
    code = (
        "import uuid\n"
        "from eventsourcing.persistence import StoredEvent\n"
        "from facta.eventsourcing import FactaFactory\n"
        f"factory = FactaFactory({{'FACTA_DATABASE_URL': {postgres_url!r}}})\n"
        "factory.application_recorder().insert_events([StoredEvent(uuid.uuid4(), 1, 't', b'{}')])\n"
        "factory.close()\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, errors
    assert log_size(postgres_url) == 6


def test_create_table_default_migrates_to_head(sqlite_url: str) -> None:
    app = Application[Any](env=env(sqlite_url))
    app.save(Aggregate())
    app.close()
    with BlockingEventStore.open(sqlite_url) as store:  # opening checks the schema is at head
        assert store.call(lambda s: migrations.known_current(s.database)) == migrations.head()


def test_unknown_create_table_value_is_one_line(sqlite_url: str) -> None:
    with pytest.raises(ValueError, match=r"^CREATE_TABLE='maybe': expected yes or no"):
        Application[Any](env=env(sqlite_url, CREATE_TABLE="maybe"))


def test_app_prefixed_database_url_wins(tmp_path: Path, sqlite_url: str) -> None:
    class Bank(Application[Any]):
        pass

    other = f"sqlite:///{tmp_path}/other.db"
    app = Bank(env={**env(other), "BANK_FACTA_DATABASE_URL": sqlite_url})
    app.save(Aggregate())
    app.close()
    assert log_size(sqlite_url) == 1
    assert not (tmp_path / "other.db").exists()


def test_without_a_url_in_its_environment_the_factory_uses_facta_setting(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTA_DATABASE_URL", sqlite_url)
    for given in ({}, {"FACTA_DATABASE_URL": ""}):
        factory = FactaFactory(given)
        factory.application_recorder().insert_events([StoredEvent(uuid4(), 1, "t", b"{}")])
        factory.close()
    assert log_size(sqlite_url) == 2


def test_a_factory_without_a_name_writes_stream_type_eventsourcing(migrated_url: str) -> None:
    factory = FactaFactory(env(migrated_url))  # a plain dict: Environment's name is ""
    recorder = factory.application_recorder()
    recorder.insert_events([StoredEvent(uuid4(), 1, "t", b"{}")])
    factory.close()
    with BlockingEventStore.open(migrated_url) as store:
        log = store.call(lambda s: s.read_log(after=0, limit=10))
    assert [e.stream_type for e in log] == [persistence.UNNAMED_STREAM_TYPE] == ["eventsourcing"]


# -- PERSISTENCE_MODULE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A typo: eventsourcing's own line (the TopicError behind it is its __cause__).
        ("facta.eventsorcing", "Failed to resolve persistence module topic: 'facta.eventsorcing' from environment "
                               "variable 'PERSISTENCE_MODULE'"),
        # One of facta's packages that is not a persistence module.
        ("facta.eventstore", "Found 0 infrastructure factory classes in 'facta.eventstore', expected 1."),
        # A class of the module that is not the factory.
        ("facta.eventsourcing:FactaRecorder", "Topic 'facta.eventsourcing:FactaRecorder' didn't resolve to a "
                                              "persistence module or infrastructure factory class: <class "
                                              "'facta.eventsourcing.persistence.FactaRecorder'>"),
    ],
)
def test_wrong_persistence_module_is_eventsourcings_one_line(value: str, expected: str, sqlite_url: str) -> None:
    with pytest.raises(InfrastructureFactoryError) as caught:
        Application[Any](env={"PERSISTENCE_MODULE": value, "FACTA_DATABASE_URL": sqlite_url})
    assert one_line(caught.value) == expected


def test_module_and_class_topic_both_find_the_factory(sqlite_url: str) -> None:
    for value in ("facta.eventsourcing", "facta.eventsourcing:FactaFactory", "facta.eventsourcing.persistence"):
        app = Application[Any](env={"PERSISTENCE_MODULE": value, "FACTA_DATABASE_URL": sqlite_url})
        assert type(app.factory) is FactaFactory
        app.close()


# -- events ---------------------------------------------------------------------------------------


class Unserialisable:
    """A value eventsourcing's JSON transcoder has no transcoding for."""


class Holder(Aggregate):
    def __init__(self, value: object) -> None:
        self.value = value


def test_an_event_eventsourcing_cannot_transcode_stores_nothing(migrated_url: str) -> None:
    app = Application[Any](env=env(migrated_url))
    good = Aggregate()
    with pytest.raises(TypeError) as caught:
        app.save(good, Holder(Unserialisable()))
    assert "is not serializable" in one_line(caught.value)
    assert app.recorder.max_notification_id() is None
    assert good.id not in app.repository
    app.close()
    assert log_size(migrated_url) == 0


def _recorder(url: str, **more: str) -> FactaApplicationRecorder:
    factory = FactaFactory(env(url, **more))
    recorder = factory.application_recorder()
    assert isinstance(recorder, FactaApplicationRecorder)
    return recorder


def test_a_topic_longer_than_facta_allows_is_one_data_error(migrated_url: str) -> None:
    limit = TEXT_LIMITS["event type"]
    recorder = _recorder(migrated_url)
    originator = uuid4()
    events = [StoredEvent(originator, 1, "ok", b"{}"), StoredEvent(originator, 2, "t" * (limit + 1), b"{}")]
    with pytest.raises(DataError) as caught:
        recorder.insert_events(events)
    message = one_line(caught.value)
    assert "event type" in message and str(limit) in message
    assert recorder.select_events(originator) == []


def test_an_originator_id_longer_than_facta_allows_is_one_data_error(migrated_url: str) -> None:
    limit = TEXT_LIMITS["stream id"]
    recorder = _recorder(migrated_url, ORIGINATOR_ID_TYPE="text")
    long_id = "a" * (limit + 1)
    with pytest.raises(DataError) as caught:
        recorder.insert_events([StoredEvent("short", 1, "ok", b"{}"), StoredEvent(long_id, 1, "ok", b"{}")])
    message = one_line(caught.value)
    assert "stream id" in message and str(limit) in message
    assert recorder.select_events("short") == []


def test_a_string_originator_id_with_uuid_ids_is_one_data_error(migrated_url: str) -> None:
    recorder = _recorder(migrated_url)
    with pytest.raises(DataError, match=r"^originator id 'order-1' is not a UUID: set ORIGINATOR_ID_TYPE=text"):
        recorder.insert_events([StoredEvent("order-1", 1, "ok", b"{}")])
    assert recorder.max_notification_id() is None


def test_a_version_outside_int32_is_one_data_error(migrated_url: str) -> None:
    recorder = _recorder(migrated_url)
    with pytest.raises(DataError) as caught:
        recorder.insert_events([StoredEvent(uuid4(), 2**31, "ok", b"{}")])
    assert str(2**31) in one_line(caught.value)
    assert recorder.max_notification_id() is None


def test_state_that_is_not_bytes_is_one_data_error(migrated_url: str) -> None:
    recorder = _recorder(migrated_url)
    with pytest.raises(DataError, match=r"^state of 'ok' at version 1 is str, not bytes$"):
        recorder.insert_events([StoredEvent(uuid4(), 1, "ok", "{}")])  # type: ignore[arg-type]
    assert recorder.max_notification_id() is None


def test_an_application_name_longer_than_a_stream_type_is_one_data_error(migrated_url: str) -> None:
    limit = TEXT_LIMITS["stream type"]
    long_name = "A" * (limit + 1)
    with pytest.raises(DataError) as caught:
        type(long_name, (Application,), {})(env=env(migrated_url))
    message = one_line(caught.value)
    assert "stream type" in message and str(limit) in message


def test_an_unknown_aggregate_recorder_purpose_is_one_line(migrated_url: str) -> None:
    factory = FactaFactory(env(migrated_url))
    with pytest.raises(ProgrammingError, match=r"^aggregate recorder purpose 'audit': facta records"):
        factory.aggregate_recorder("audit")
    factory.close()


def test_without_eventsourcing_the_package_imports_and_the_factory_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['eventsourcing'] = None\n"
        "import facta.eventsourcing as es\n"
        "try:\n"
        "    es.FactaFactory\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("facta.eventsourcing.FactaFactory needs the eventsourcing library, which is not"
                             " installed: pip install 'facta[eventsourcing]'\n")


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda r: r.select_events(uuid4(), gt=2**31), str(2**31)),
        (lambda r: r.select_events(uuid4(), limit=0), "limit"),
        (lambda r: r.select_notifications(None, 0), "limit"),
        (lambda r: r.select_notifications(None, 10, stop=2**63), str(2**63)),
    ],
)
def test_bad_read_arguments_are_one_data_error_on_both_read_paths(
    call: Any, named: str, migrated_url: str
) -> None:
    # On SQLite the factory's recorders read in the caller's thread; a value that path
    # does not bind goes through the store, which names it, as on PostgreSQL.
    recorder = _recorder(migrated_url)
    with pytest.raises(DataError) as caught:
        call(recorder)
    assert named in one_line(caught.value)


def test_a_direct_sqlite_read_sqlite_refuses_reads_through_the_store(sqlite_url: str, tmp_path: Path) -> None:
    recorder = _recorder(sqlite_url)
    originator = uuid4()
    recorder.insert_events([StoredEvent(originator, 1, "t", b"kept")])
    assert recorder._direct is not None
    assert persistence.SQLiteReads(str(tmp_path / "missing.db"), 1.0).fetch("SELECT 1", []) is None
    recorder._direct = persistence.SQLiteReads(str(tmp_path / "missing.db"), 1.0)  # every direct read refused
    assert recorder.select_events(originator) == [StoredEvent(originator, 1, "t", b"kept")]
    assert [n.state for n in recorder.select_notifications(None, 10)] == [b"kept"]
    assert recorder.max_notification_id() == 1
