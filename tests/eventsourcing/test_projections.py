"""eventsourcing's projection test cases (``eventsourcing/tests/projection.py``) on facta.

The materialised view the cases need, :class:`FactaEventCounters`, is a user's subclass of
:class:`~facta.eventsourcing.FactaTrackingRecorder` with a table of its own in the same
database: each counter update runs in the transaction of its tracking record
(``record_tracking(tracking, with_=...)``), so a refused tracking record (a notification
id already processed) leaves the counter as it was, which the view case checks.

Not run here, and why: ``TaggedDecisionCountersProjectionTestCase`` (and the rest of
``eventsourcing.dcb``). Its ``DCBApplication`` asks ``PERSISTENCE_MODULE`` for a
``DCBInfrastructureFactory`` and a DCB recorder: events selected by tags and appended
under a condition on a tag query (``fail_if_events_match``), another storage model than
the aggregate sequences and notification log of the recorders this module provides; facta
stores no tags. ``facta.eventsourcing`` defines no DCB factory, so a ``DCBApplication``
pointed at it stops in eventsourcing's ``construct`` with "Found 0 infrastructure factory
classes" (checked below).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from eventsourcing.dcb.application import DCBApplication
from eventsourcing.persistence import InfrastructureFactoryError, Tracking
from eventsourcing.tests import projection as cases
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, select, update

from facta.eventsourcing import FactaTrackingRecorder

from ._databases import FreshDatabase

counters = Table(
    "es_event_counters",
    MetaData(),
    Column("name", String(50), primary_key=True),
    Column("count", Integer, nullable=False),
)


class FactaEventCounters(FactaTrackingRecorder, cases.EventCountersView):
    """eventsourcing's ``EventCountersView`` as a table of facta's database."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write(self._create)

    @staticmethod
    def _create(conn: Connection) -> None:
        counters.create(conn, checkfirst=True)
        for name in ("created", "subsequent"):
            if conn.execute(select(counters.c.name).where(counters.c.name == name)).first() is None:
                conn.execute(counters.insert().values(name=name, count=0))

    def _get(self, name: str) -> int:
        return self.read(lambda conn: int(conn.execute(select(counters.c.count)
                                                       .where(counters.c.name == name)).scalar_one()))

    def _incr(self, name: str, tracking: Tracking) -> None:
        self.record_tracking(tracking, with_=lambda conn: conn.execute(
            update(counters).where(counters.c.name == name).values(count=counters.c.count + 1)))

    def get_created_event_counter(self) -> int:
        return self._get("created")

    def get_subsequent_event_counter(self) -> int:
        return self._get("subsequent")

    def incr_created_event_counter(self, tracking: Tracking) -> None:
        self._incr("created", tracking)

    def incr_subsequent_event_counter(self, tracking: Tracking) -> None:
        self._incr("subsequent", tracking)


class InEnv(FreshDatabase):
    """``self.env`` (the projection cases' class attribute) set per test to this database."""

    env: ClassVar[dict[str, str]]

    def database_ready(self) -> None:
        self.env = self.es_env()  # type: ignore[misc]


# -- the view on its own ----------------------------------------------------------------------


class ViewCases(InEnv, cases.EventCountersViewTestCase):
    __test__ = False

    def construct_event_counters_view(self) -> cases.EventCountersView:
        from facta.eventsourcing import FactaFactory

        factory = FactaFactory(self.es_env())
        self.addCleanup(factory.close)
        view = factory.tracking_recorder(FactaEventCounters)
        assert isinstance(view, FactaEventCounters)
        return view

    def test_a_failing_update_leaves_no_tracking_record(self) -> None:
        # Not in the library's case: an error of the view's own write rolls the tracking
        # record back with it.
        view = self.construct_event_counters_view()
        assert isinstance(view, FactaEventCounters)

        def broken(conn: Connection) -> None:
            conn.execute(update(counters).values(count=counters.c.count + 1))
            raise RuntimeError("the view's bug")

        with pytest.raises(RuntimeError, match="the view's bug"):
            view.record_tracking(Tracking("upstream", 1), with_=broken)
        self.assertIsNone(view.max_tracking_id("upstream"))
        self.assertEqual(view.get_created_event_counter(), 0)


class TestEventCountersViewSQLite(ViewCases):
    __test__ = True


@pytest.mark.postgres
class TestEventCountersViewPostgres(ViewCases):
    __test__ = True
    dialect = "postgresql"


# -- projections run by eventsourcing's ProjectionRunner ----------------------------------------


class CountersProjectionCases(InEnv, cases.AggregateEventCountersProjectionTestCase):
    __test__ = False
    view_class = FactaEventCounters


class TestAggregateEventCountersProjectionSQLite(CountersProjectionCases):
    __test__ = True


@pytest.mark.postgres
class TestAggregateEventCountersProjectionPostgres(CountersProjectionCases):
    __test__ = True
    dialect = "postgresql"


class EventSourcedCases(InEnv, cases.EventSourcedProjectionTestCase):
    __test__ = False


class TestEventSourcedProjectionSQLite(EventSourcedCases):
    __test__ = True


@pytest.mark.postgres
class TestEventSourcedProjectionPostgres(EventSourcedCases):
    __test__ = True
    dialect = "postgresql"


# -- DCB: not a recorder backend facta provides -------------------------------------------------


class TestDCBApplicationIsRefused(FreshDatabase):
    def test_a_dcb_application_on_facta_is_eventsourcings_one_line(self) -> None:
        with self.assertRaises(InfrastructureFactoryError) as caught:
            DCBApplication(env=self.es_env())
        self.assertEqual(str(caught.exception),
                         "Found 0 infrastructure factory classes in 'facta.eventsourcing', expected 1.")
