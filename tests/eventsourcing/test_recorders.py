"""eventsourcing's own recorder and factory test cases, run against ``facta.eventsourcing``.

Each case of ``eventsourcing/tests/persistence.py`` (9.5.x) is subclassed once for SQLite
and once for PostgreSQL (marked ``postgres``), each test on a fresh migrated database
(``_databases.FreshDatabase``). The cases are reached through their module, so pytest does
not collect the abstract ones themselves.

Overrides of the library's expectations: none here (ARCHITECTURE.md, "Where facta
differs from eventsourcing's test expectations", lists the ones elsewhere).
"""

from __future__ import annotations

import threading
from typing import ClassVar
from uuid import uuid4

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    IntegrityError,
    Notification,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from facta.eventsourcing import (
    FactaAggregateRecorder,
    FactaApplicationRecorder,
    FactaFactory,
    FactaProcessRecorder,
    FactaSnapshotRecorder,
    FactaTrackingRecorder,
)
from facta.eventstore.blocking import BlockingEventStore
from facta.eventstore.records import ByteEvent

from ._databases import FreshDatabase


class OnFacta(FreshDatabase):
    """Builds recorders with a :class:`FactaFactory` on the test's database."""

    app_name: ClassVar[str] = "RecorderTests"

    def factory(self) -> FactaFactory:
        factory = FactaFactory(Environment(self.app_name, self.es_env()))
        self.addCleanup(factory.close)
        return factory


class SubTrackingRecorder(FactaTrackingRecorder):
    """A user's subclass, for the factory case's TRACKING_RECORDER_TOPIC path."""


# -- aggregate recorders: events and snapshots -------------------------------------------------


class EventsRecorder(OnFacta, cases.AggregateRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> AggregateRecorder:
        recorder = self.factory().aggregate_recorder("events")
        assert type(recorder) is FactaAggregateRecorder
        return recorder


class TestEventsRecorderSQLite(EventsRecorder):
    __test__ = True


@pytest.mark.postgres
class TestEventsRecorderPostgres(EventsRecorder):
    __test__ = True
    dialect = "postgresql"


class SnapshotsRecorder(OnFacta, cases.AggregateRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> AggregateRecorder:
        recorder = self.factory().aggregate_recorder("snapshots")
        assert type(recorder) is FactaSnapshotRecorder
        return recorder


class TestSnapshotsRecorderSQLite(SnapshotsRecorder):
    __test__ = True


@pytest.mark.postgres
class TestSnapshotsRecorderPostgres(SnapshotsRecorder):
    __test__ = True
    dialect = "postgresql"


# -- application recorder ---------------------------------------------------------------------


class AppRecorder(OnFacta, cases.ApplicationRecorderTestCase[ApplicationRecorder]):
    __test__ = False

    def create_recorder(self) -> ApplicationRecorder:
        recorder = self.factory().application_recorder()
        assert type(recorder) is FactaApplicationRecorder
        return recorder

    def test_insert_subscribe(self) -> None:
        # Optional in the library; its PostgreSQL module runs it, and so does facta's.
        self.optional_test_insert_subscribe()

    def test_subscription_wakes_for_another_writers_events(self) -> None:
        # Not in the library's cases: an append through another store object (as from
        # another process: this process's shared store is not told of it) reaches a
        # subscription blocked at the head; the store's wait polls the database for it.
        recorder = self.create_recorder()
        assert isinstance(recorder, FactaApplicationRecorder)
        originator = uuid4()
        received: list[Notification] = []

        def follow() -> None:
            with recorder.subscribe(gt=None) as subscription:
                for notification in subscription:
                    received.append(notification)
                    break

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        with BlockingEventStore.open(self.url) as other:
            other.call(lambda s: s.append_bytes(recorder.stream_type, [ByteEvent(str(originator), 1, "t", b"x")]))
        follower.join(timeout=30)
        self.assertFalse(follower.is_alive(), "the subscription was not woken")
        self.assertEqual([(n.originator_id, n.originator_version, n.state, n.id) for n in received],
                         [(originator, 1, b"x", 1)])

    def test_subscription_catches_up_over_many_pages_with_topics(self) -> None:
        # Not in the library's cases: more than one page (500) behind, with a topic filter.
        recorder = self.create_recorder()
        originator = uuid4()
        events = [StoredEvent(originator, v, "even" if v % 2 == 0 else "odd", str(v).encode()) for v in range(2400)]
        ids: list[int] = []
        for chunk in range(0, 2400, 800):
            ids += list(recorder.insert_events(events[chunk:chunk + 800]) or [])
        with recorder.subscribe(gt=None, topics=["even"]) as subscription:
            got = []
            for notification in subscription:
                got.append((notification.id, notification.originator_version, notification.state))
                if len(got) == 1200:
                    break
        self.assertEqual(got, [(ids[v], v, str(v).encode()) for v in range(0, 2400, 2)])

    def test_a_refused_insert_leaves_a_gap_on_postgres_only(self) -> None:
        # Not in the library's cases (ARCHITECTURE.md lists it among the differences): on
        # PostgreSQL the positions a refused insert took are not reused; on SQLite the
        # refused insert's transaction gives them back.
        recorder = self.create_recorder()
        originator = self.new_originator_id()
        self.assertEqual(recorder.insert_events([StoredEvent(originator, 1, "t", b"1")]), [1])
        with self.assertRaises(IntegrityError) as caught:
            recorder.insert_events([StoredEvent(originator, 2, "t", b"2"), StoredEvent(originator, 1, "t", b"1")])
        self.assertEqual(str(caught.exception), f"stream '{originator}' already has version 1: nothing was written")
        expected = [4] if self.dialect == "postgresql" else [2]
        self.assertEqual(recorder.insert_events([StoredEvent(originator, 2, "t", b"2")]), expected)
        self.assertEqual([n.id for n in recorder.select_notifications(None, 10)], [1, *expected])


class TestApplicationRecorderSQLite(AppRecorder):
    __test__ = True


@pytest.mark.postgres
class TestApplicationRecorderPostgres(AppRecorder):
    __test__ = True
    dialect = "postgresql"


class TestApplicationRecorderSQLiteThroughStore(AppRecorder):
    """The library's application cases with every SQLite read and write through the store
    (a recorder made without the factory's direct SQLite reads and writes), so both paths
    are held to the same expectations."""

    __test__ = True

    def create_recorder(self) -> ApplicationRecorder:
        factory = self.factory()
        recorder = FactaApplicationRecorder(factory.store, factory.stream_type, owner=factory)
        self.assertIsNone(recorder._direct)
        self.assertIsNone(recorder._writes)
        return recorder

    def test_direct_reads_are_used_by_the_factorys_recorders(self) -> None:
        recorder = self.factory().application_recorder()
        assert isinstance(recorder, FactaApplicationRecorder)
        self.assertIsNotNone(recorder._direct)
        self.assertIsNotNone(recorder._writes)

    def test_a_closed_factorys_recorder_refuses_reads_as_the_store_does(self) -> None:
        factory = self.factory()
        recorder = factory.application_recorder()
        factory.close()
        with self.assertRaises(DatabaseError) as caught:
            recorder.select_events(uuid4())
        self.assertIn("is closed: open a new one", str(caught.exception))


# -- tracking and process recorders -----------------------------------------------------------


class TrackingCases(OnFacta, cases.TrackingRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> TrackingRecorder:
        recorder = self.factory().tracking_recorder()
        assert type(recorder) is FactaTrackingRecorder
        return recorder


class TestTrackingRecorderSQLite(TrackingCases):
    __test__ = True


@pytest.mark.postgres
class TestTrackingRecorderPostgres(TrackingCases):
    __test__ = True
    dialect = "postgresql"


class ProcessCases(OnFacta, cases.ProcessRecorderTestCase):
    __test__ = False

    def create_recorder(self) -> ProcessRecorder:
        recorder = self.factory().process_recorder()
        assert type(recorder) is FactaProcessRecorder
        return recorder


class TestProcessRecorderSQLite(ProcessCases):
    __test__ = True


class TestProcessRecorderSQLiteThroughStore(ProcessCases):
    """The library's process cases (events with tracking, tracking alone) with every SQLite
    write and read through the store, as the direct ones are held to them above."""

    __test__ = True

    def create_recorder(self) -> ProcessRecorder:
        factory = self.factory()
        return FactaProcessRecorder(factory.store, factory.stream_type, owner=factory)


class TestTrackingRecorderSQLiteThroughStore(TrackingCases):
    __test__ = True

    def create_recorder(self) -> TrackingRecorder:
        factory = self.factory()
        return FactaTrackingRecorder(factory.store, factory.stream_type, owner=factory)


class TestSnapshotsRecorderSQLiteThroughStore(SnapshotsRecorder):
    __test__ = True

    def create_recorder(self) -> AggregateRecorder:
        factory = self.factory()
        return FactaSnapshotRecorder(factory.store, factory.stream_type, owner=factory)


@pytest.mark.postgres
class TestProcessRecorderPostgres(ProcessCases):
    __test__ = True
    dialect = "postgresql"


# -- one insert, one contiguous range of notification ids -------------------------------------


class NonInterleaving(OnFacta, cases.NonInterleavingNotificationIDsBaseCase):
    __test__ = False

    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()


class TestNonInterleavingSQLite(NonInterleaving):
    __test__ = True


@pytest.mark.postgres
class TestNonInterleavingPostgres(NonInterleaving):
    __test__ = True
    dialect = "postgresql"


# -- the factory ------------------------------------------------------------------------------


class FactoryCases(FreshDatabase, cases.InfrastructureFactoryTestCase[FactaFactory]):
    __test__ = False

    def database_ready(self) -> None:
        self.env = Environment("TestCase", self.es_env())

    def expected_factory_class(self) -> type[FactaFactory]:
        return FactaFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return FactaAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return FactaApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return FactaTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return SubTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return FactaProcessRecorder

    def test_snapshots_recorder_is_facta_snapshots(self) -> None:
        # Not in the library's case: its "snapshots" purpose is a table name; facta's is a
        # recorder class of its own.
        self.assertIs(type(self.factory.aggregate_recorder("snapshots")), FactaSnapshotRecorder)


class TestFactorySQLite(FactoryCases):
    __test__ = True


@pytest.mark.postgres
class TestFactoryPostgres(FactoryCases):
    __test__ = True
    dialect = "postgresql"
