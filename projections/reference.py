"""The reference projections from the taxi and banking seeds.

- ``account_balances``: balance, status and last activity per account;
- ``ride_board``: each ride's status, driver, ETA and fare;
- ``driver_earnings``: trips and earnings per driver per (UTC) day;
- ``billing``: what was billed per ride (``billing_charges``), built from the trip's end
  and the account events ``billing_process`` stored, so a replay rebuilds it exactly.

And one process manager:

- ``billing_process`` (:class:`BillingProcess`): when a trip ends, charges the rider's
  account and pays the driver's through the domain
  (:func:`facta.domain.reference.transfer`), once: the two account events get ids derived
  from the trip's end event, so a redelivery finds them stored and does nothing. A
  replay refuses it.

Each read model depends only on the order of one stream's events, so it is the same
whether it is built from the store's log or from Kafka (ordered per stream only).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from sqlalchemy import BigInteger, Column, Index, Integer, String

from facta.domain.reference import (
    Account,
    AccountClosed,
    AccountOpened,
    Deposited,
    DriverArrived,
    Ride,
    RideAccepted,
    RideCancelled,
    RideOffered,
    RideRequested,
    TransferredIn,
    TransferredOut,
    TripEnded,
    TripStarted,
    Withdrawn,
    transfer,
)
from facta.errors import ProjectionError
from facta.eventstore import RecordedEvent
from facta.eventstore.schema import UTCDateTime

from .api import Projection, handles, read_model_table
from .process import ProcessContext, ProcessManager, reacts_to
from .writer import ReadModel

__all__ = [
    "REFERENCE_PROCESSES",
    "REFERENCE_PROJECTIONS",
    "AccountBalances",
    "Billing",
    "BillingProcess",
    "DriverEarnings",
    "RideBoard",
]


class AccountBalances(Projection, name="account_balances"):
    balances = read_model_table(
        "account_balances",
        Column("account_id", String(255), primary_key=True),
        Column("owner", String(255)),
        Column("currency", String(3)),
        Column("status", String(20)),
        Column("balance", BigInteger, nullable=False, default=0),
        Column("last_activity", UTCDateTime()),
        Column("version", Integer),
        Index("account_balances_owner_idx", "owner"),
    )

    def _touch(self, rm: ReadModel, record: RecordedEvent, add: int = 0, **values: Any) -> None:
        rm.upsert(
            self.balances,
            {"account_id": record.stream_id},
            set={"last_activity": record.occurred_at, "version": record.version, **values},
            add={"balance": add},
        )

    @handles(AccountOpened)
    def _opened(self, rm: ReadModel, event: AccountOpened, record: RecordedEvent) -> None:
        self._touch(rm, record, owner=event.owner, currency=event.currency, status="open")

    @handles(Deposited)
    def _deposited(self, rm: ReadModel, event: Deposited, record: RecordedEvent) -> None:
        self._touch(rm, record, add=event.amount)

    @handles(Withdrawn)
    def _withdrawn(self, rm: ReadModel, event: Withdrawn, record: RecordedEvent) -> None:
        self._touch(rm, record, add=-event.amount)

    @handles(TransferredOut)
    def _sent(self, rm: ReadModel, event: TransferredOut, record: RecordedEvent) -> None:
        self._touch(rm, record, add=-event.amount)

    @handles(TransferredIn)
    def _received(self, rm: ReadModel, event: TransferredIn, record: RecordedEvent) -> None:
        self._touch(rm, record, add=event.amount)

    @handles(AccountClosed)
    def _closed(self, rm: ReadModel, event: AccountClosed, record: RecordedEvent) -> None:
        self._touch(rm, record, status="closed")


class RideBoard(Projection, name="ride_board"):
    rides = read_model_table(
        "ride_board",
        Column("ride_id", String(255), primary_key=True),
        Column("rider_id", String(255)),
        Column("status", String(20), nullable=False),
        Column("driver_id", String(255)),
        Column("eta_seconds", Integer),
        Column("distance_m", Integer),
        Column("fare", BigInteger),
        Column("currency", String(3)),
        Column("requested_at", UTCDateTime()),
        Column("updated_at", UTCDateTime()),
        Column("version", Integer),
        Index("ride_board_status_idx", "status"),
    )

    def _set(self, rm: ReadModel, record: RecordedEvent, **values: Any) -> None:
        rm.upsert(
            self.rides,
            {"ride_id": record.stream_id},
            set={"updated_at": record.occurred_at, "version": record.version, **values},
        )

    @handles(RideRequested)
    def _requested(self, rm: ReadModel, event: RideRequested, record: RecordedEvent) -> None:
        self._set(rm, record, rider_id=event.rider_id, status="requested", requested_at=record.occurred_at)

    @handles(RideOffered)
    def _offered(self, rm: ReadModel, event: RideOffered, record: RecordedEvent) -> None:
        self._set(rm, record, status="offered")

    @handles(RideAccepted)
    def _accepted(self, rm: ReadModel, event: RideAccepted, record: RecordedEvent) -> None:
        self._set(rm, record, status="accepted", driver_id=event.driver_id, eta_seconds=event.eta_seconds)

    @handles(DriverArrived)
    def _arrived(self, rm: ReadModel, event: DriverArrived, record: RecordedEvent) -> None:
        self._set(rm, record, status="driver_arrived", eta_seconds=0)

    @handles(TripStarted)
    def _started(self, rm: ReadModel, event: TripStarted, record: RecordedEvent) -> None:
        self._set(rm, record, status="in_trip")

    @handles(TripEnded)
    def _ended(self, rm: ReadModel, event: TripEnded, record: RecordedEvent) -> None:
        self._set(rm, record, status="completed", fare=event.fare, currency=event.currency,
                  distance_m=event.distance_m)

    @handles(RideCancelled)
    def _cancelled(self, rm: ReadModel, event: RideCancelled, record: RecordedEvent) -> None:
        self._set(rm, record, status="cancelled")


class DriverEarnings(Projection, name="driver_earnings"):
    earnings = read_model_table(
        "driver_earnings",
        Column("driver_id", String(255), primary_key=True),
        Column("day", String(10), primary_key=True),
        Column("trips", Integer, nullable=False, default=0),
        Column("earnings", BigInteger, nullable=False, default=0),
        Column("currency", String(3)),
    )
    # Which driver took each ride: the trip's end does not say, its acceptance does.
    drivers = read_model_table(
        "driver_earnings_rides",
        Column("ride_id", String(255), primary_key=True),
        Column("driver_id", String(255), nullable=False),
    )

    @handles(RideAccepted)
    def _accepted(self, rm: ReadModel, event: RideAccepted, record: RecordedEvent) -> None:
        rm.upsert(self.drivers, {"ride_id": record.stream_id}, set={"driver_id": event.driver_id})

    @handles(TripEnded)
    def _ended(self, rm: ReadModel, event: TripEnded, record: RecordedEvent) -> None:
        ride = rm.get(self.drivers, {"ride_id": record.stream_id})
        if ride is None:
            raise ProjectionError(f"ride {record.stream_id} ended without being accepted by a driver")
        rm.upsert(
            self.earnings,
            {"driver_id": ride["driver_id"], "day": record.occurred_at.date().isoformat()},
            set={"currency": event.currency},
            add={"trips": 1, "earnings": event.fare},
        )


BILLING_ACTOR = "billing"
_BILLING_IDS = uuid.UUID("5d1f3a0e-7c43-4f0e-9a55-0b7a1c2e6f10")


def driver_account(driver_id: str) -> str:
    """The account a driver is paid into (the demo's convention: ``acct-<driver id>``)."""
    return f"acct-{driver_id}"


def charge_ids(trip_ended: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """The ids of the two account events one trip's end causes (the rider's
    ``TransferredOut``, the driver's ``TransferredIn``): the same on every try."""
    return uuid.uuid5(_BILLING_IDS, f"{trip_ended}:out"), uuid.uuid5(_BILLING_IDS, f"{trip_ended}:in")


class BillingProcess(ProcessManager, name="billing_process"):
    """Charges the rider and pays the driver when a trip ends, exactly once."""

    actor: ClassVar[str | None] = BILLING_ACTOR
    driver_account = staticmethod(driver_account)
    charge_ids = staticmethod(charge_ids)

    def event_id(self, handler: str, trigger: uuid.UUID, index: int) -> uuid.UUID:
        """:func:`charge_ids`: the ids billing gave its charges before it was a process
        manager, so that a store billed then is not billed again."""
        if handler != "_charge" or index > 1:
            raise ProjectionError(f"billing derives ids for its two charge events only, not {handler} event {index}")
        return charge_ids(trigger)[index]

    @reacts_to(TripEnded)
    async def _charge(self, ctx: ProcessContext, event: TripEnded, record: RecordedEvent) -> None:
        ride = await ctx.repository.get(Ride, record.stream_id, at_version=record.version)
        if ride.state.rider_account is None or ride.state.driver_id is None:
            raise ProjectionError(f"ride {record.stream_id} has no rider account or driver to bill")
        payer = await ctx.repository.get(Account, ride.state.rider_account)
        payee = await ctx.repository.get(Account, driver_account(ride.state.driver_id))
        transfer(payer, payee, event.fare, transfer_id=record.stream_id)
        await ctx.save(payer, payee)  # the rider's TransferredOut, then the driver's TransferredIn


class Billing(Projection, name="billing"):
    """What was billed per ride: the trip's fare and when it ended, and the charge
    :class:`BillingProcess` stored (rider and driver accounts, amount, time)."""

    streams: ClassVar[tuple[str, ...]] = ("account", "ride")
    charges = read_model_table(
        "billing_charges",
        Column("ride_id", String(255), primary_key=True),
        Column("fare", BigInteger),
        Column("currency", String(3)),
        Column("ended_at", UTCDateTime()),
        Column("rider_account", String(255)),
        Column("driver_account", String(255)),
        Column("charged", BigInteger),
        Column("charged_at", UTCDateTime()),
    )
    driver_account = staticmethod(driver_account)
    charge_ids = staticmethod(charge_ids)

    @handles(TripEnded)
    def _ended(self, rm: ReadModel, event: TripEnded, record: RecordedEvent) -> None:
        rm.upsert(self.charges, {"ride_id": record.stream_id},
                  set={"fare": event.fare, "currency": event.currency, "ended_at": record.occurred_at})

    @handles(TransferredOut)
    def _charged(self, rm: ReadModel, event: TransferredOut, record: RecordedEvent) -> None:
        if record.actor == BILLING_ACTOR:
            rm.upsert(self.charges, {"ride_id": event.transfer_id},
                      set={"rider_account": record.stream_id, "driver_account": event.to_account,
                           "charged": event.amount, "charged_at": record.occurred_at})


REFERENCE_PROJECTIONS: tuple[type[Projection], ...] = (AccountBalances, RideBoard, DriverEarnings, Billing)
REFERENCE_PROCESSES: tuple[type[ProcessManager], ...] = (BillingProcess,)
