"""eventsourcing's application test cases (``eventsourcing/tests/application.py``) on facta.

As the library's own SQLite and PostgreSQL suites do, each test points the process
environment at the persistence module (``PERSISTENCE_MODULE=facta.eventsourcing`` and
``FACTA_DATABASE_URL``, a fresh migrated database per test) and restores it afterwards, so
every ``Application()`` the cases build stores its events in facta.
"""

from __future__ import annotations

import os
from uuid import UUID

import pytest
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System
from eventsourcing.tests import application as cases

from facta.domain.reference import AccountOpened
from facta.eventstore.blocking import BlockingEventStore

from ._databases import FreshDatabase


class InProcessEnvironment(FreshDatabase):
    """Sets PERSISTENCE_MODULE and FACTA_DATABASE_URL in os.environ for the test."""

    def database_ready(self) -> None:
        saved = {k: os.environ.get(k) for k in ("PERSISTENCE_MODULE", "FACTA_DATABASE_URL")}
        os.environ.update(self.es_env())

        def restore() -> None:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

        self.addCleanup(restore)


class ApplicationCases(InProcessEnvironment, cases.ApplicationTestCase):
    __test__ = False

    def test_events_are_rows_of_facta_log(self) -> None:
        # Not in the library's case: what an application saved is an ordinary facta event,
        # with the application's name as stream type and the originator id as stream id.
        app = Application[UUID]()
        aggregate = Aggregate()
        aggregate.trigger_event(Aggregate.Event)
        recordings = app.save(aggregate)
        app.close()
        with BlockingEventStore.open(self.url) as store:
            log = store.call(lambda s: s.read_log(after=0, limit=10))
        self.assertEqual([e.position for e in log], [r.notification.id for r in recordings])
        self.assertEqual({e.stream_type for e in log}, {"Application"})
        self.assertEqual({e.stream_id for e in log}, {str(aggregate.id)})
        self.assertEqual([e.version for e in log], [1, 2])
        self.assertEqual([e.event_type for e in log],
                         ["eventsourcing.domain:Aggregate.Created", "eventsourcing.domain:Aggregate.Event"])

    def test_two_applications_share_one_log(self) -> None:
        # Not in the library's case: two applications in one database each read only their
        # own notifications (stream type = application name), with the log's positions.
        class Orders(Application[UUID]):
            pass

        class Payments(Application[UUID]):
            pass

        orders, payments = Orders(), Payments()
        first = orders.save(Aggregate())[0].notification.id
        second = payments.save(Aggregate())[0].notification.id
        third = orders.save(Aggregate())[0].notification.id
        self.assertEqual((first, second, third), (1, 2, 3))
        self.assertEqual([n.id for n in orders.recorder.select_notifications(None, 10)], [1, 3])
        self.assertEqual([n.id for n in payments.recorder.select_notifications(None, 10)], [2])
        self.assertEqual(orders.recorder.max_notification_id(), 3)
        self.assertEqual(payments.recorder.max_notification_id(), 2)
        orders.close()
        payments.close()

    def test_facta_aggregates_and_an_application_share_one_database(self) -> None:
        # Not in the library's case: facta's own API and eventsourcing write to one log
        # without conflict; each reads back only its own events.
        app = Application[UUID]()
        first = app.save(Aggregate())[0].notification.id
        with BlockingEventStore.open(self.url) as store:
            opened = AccountOpened(owner="Ada", currency="EUR")
            result = store.call(lambda s: s.append("acct-1", "account", [opened], expected_version=0))
            facta_events = store.call(lambda s: s.read_stream("acct-1"))
        second = app.save(Aggregate())[0].notification.id
        self.assertEqual((first, result.positions, second), (1, (2,), 3))
        self.assertEqual([e.event_type for e in facta_events], ["account.opened"])
        self.assertEqual([n.id for n in app.recorder.select_notifications(None, 10)], [1, 3])
        app.close()

    def test_unclosed_and_closed_applications_share_one_store(self) -> None:
        # Not in the library's case: one BlockingEventStore per URL per process, counted.
        first, second = Application[UUID](), Application[UUID]()
        self.assertIs(first.factory.store, second.factory.store)  # type: ignore[attr-defined]
        first.close()
        second.save(Aggregate())  # still open: the second application holds it
        second.close()
        third = Application[UUID]()
        self.assertIsNot(third.factory.store, second.factory.store)  # type: ignore[attr-defined]
        self.assertEqual(third.recorder.max_notification_id(), 1)
        third.close()


class Writer(Application[UUID]):
    """An upstream application of the system test."""


class Tally(ProcessApplication[UUID]):
    """Follows Writer: one aggregate of its own per aggregate Writer creates."""

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]) -> None:
        if isinstance(domain_event, Aggregate.Created):
            processing_event.collect_events(Aggregate())


class SystemCases(FreshDatabase):
    __test__ = False

    def test_a_process_application_follows_its_leader(self) -> None:
        # Not in the library's cases: an eventsourcing System on facta. The follower's
        # new events and its tracking record of the leader's position are one transaction
        # of the process recorder; the leader's notification ids are facta positions.
        runner = SingleThreadedRunner[UUID](System(pipes=[[Writer, Tally]]), env=self.es_env())
        runner.start()
        try:
            writer, tally = runner.get(Writer), runner.get(Tally)
            first = writer.save(Aggregate())[0].notification.id
            aggregate = Aggregate()
            aggregate.trigger_event(Aggregate.Event)
            last = writer.save(aggregate)[-1].notification.id
            self.assertEqual(tally.recorder.max_tracking_id("Writer"), last)
            tallied = tally.recorder.select_notifications(None, 10)
            self.assertEqual(len(tallied), 2)
            self.assertGreater(tallied[0].id, first)
            self.assertEqual([n.id for n in writer.recorder.select_notifications(None, 10)], [1, 3, 4])
        finally:
            runner.stop()


class TestSystemSQLite(SystemCases):
    __test__ = True


@pytest.mark.postgres
class TestSystemPostgres(SystemCases):
    __test__ = True
    dialect = "postgresql"


class TestApplicationSQLite(ApplicationCases):
    __test__ = True


@pytest.mark.postgres
class TestApplicationPostgres(ApplicationCases):
    __test__ = True
    dialect = "postgresql"


class ExampleCases(InProcessEnvironment, cases.ExampleApplicationTestCase):
    __test__ = False
    expected_factory_topic = "facta.eventsourcing.persistence:FactaFactory"

    def test_snapshot_state_is_kept_as_bytes(self) -> None:
        # Not in the library's case: a snapshot read back is the exact bytes written.
        app = cases.BankAccounts()
        account_id = app.open_account("Alice", "alice@example.com")
        app.take_snapshot(account_id)
        assert app.snapshots is not None
        stored = app.snapshots.recorder.select_events(account_id)
        self.assertEqual(len(stored), 1)
        self.assertEqual(app.snapshots.mapper.to_domain_event(stored[0]).originator_id, account_id)
        app.close()


class TestExampleApplicationSQLite(ExampleCases):
    __test__ = True


@pytest.mark.postgres
class TestExampleApplicationPostgres(ExampleCases):
    __test__ = True
    dialect = "postgresql"
