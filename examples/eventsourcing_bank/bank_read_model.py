"""The bank's read model, kept by facta from the events BankAccounts stored."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import BigInteger, Column, Integer, String

from facta.eventsourcing.events import TranscodedEvent
from facta.eventstore import RecordedEvent
from facta.projections import Projection, ReadModel, handles, read_model_table


# The stored type of an eventsourcing event is its topic, "<module>:<class>". Declare the
# fields the projection reads; `topic=BankAccount.Opened` (the class itself) works too.
class AccountOpened(TranscodedEvent, topic="bankaccounts:BankAccount.Opened"):
    full_name: str
    email: str


class AmountCredited(TranscodedEvent, topic="bankaccounts:BankAccount.Credited"):
    amount: Decimal  # eventsourcing stored {"_type_": "decimal_str", "_data_": "100.00"}


class AmountDebited(TranscodedEvent, topic="bankaccounts:BankAccount.Debited"):
    amount: Decimal


def cents(amount: Decimal) -> int:
    value = amount * 100
    if value != value.to_integral_value():
        raise ValueError(f"amount {amount} has fractions of a cent")
    return int(value)


class BankAccountSummaries(Projection, name="bank_account_summaries"):
    streams = ("BankAccounts",)  # the application's name: the relay's topic facta.BankAccounts
    accounts = read_model_table(
        "bank_accounts",
        Column("account_id", String(36), primary_key=True),  # the originator id
        Column("full_name", String(200)),  # nullable: a credit's upsert names only its own columns
        Column("email", String(200)),
        Column("balance_cents", BigInteger, nullable=False),
        Column("version", Integer, nullable=False),  # the originator version last applied
    )

    @handles(AccountOpened)
    def _opened(self, rm: ReadModel, event: AccountOpened, record: RecordedEvent) -> None:
        rm.upsert(self.accounts, {"account_id": record.stream_id},
                  set={"full_name": event.full_name, "email": event.email, "balance_cents": 0,
                       "version": record.version})

    @handles(AmountCredited)
    def _credited(self, rm: ReadModel, event: AmountCredited, record: RecordedEvent) -> None:
        rm.upsert(self.accounts, {"account_id": record.stream_id}, set={"version": record.version},
                  add={"balance_cents": cents(event.amount)})

    @handles(AmountDebited)
    def _debited(self, rm: ReadModel, event: AmountDebited, record: RecordedEvent) -> None:
        rm.upsert(self.accounts, {"account_id": record.stream_id}, set={"version": record.version},
                  add={"balance_cents": -cents(event.amount)})
