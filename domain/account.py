"""The reference ``Account`` aggregate: a ledger of integer minor units that never goes negative.

Money is always an ``int`` of minor units (cents, pence, ...); floats and bools are refused.
A transfer between two accounts is two events, one per stream, linked by ``transfer_id``;
:func:`transfer` runs both sides after checking that neither can fail.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, StringConstraints

from facta.errors import DomainError, InvalidTransition

from .aggregate import Aggregate, AggregateState, applies
from .events import DomainEvent
from .personal import PersonalData

__all__ = [
    "Account",
    "AccountClosed",
    "AccountOpened",
    "AccountStatus",
    "CurrencyCode",
    "Deposited",
    "MinorUnits",
    "TransferredIn",
    "TransferredOut",
    "Withdrawn",
    "transfer",
]

CURRENCY_PATTERN = r"^[A-Z]{3}$"
CurrencyCode = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
"""A three-letter upper-case ISO 4217 code such as ``EUR``."""
MinorUnits = Annotated[StrictInt, Field(gt=0)]
"""A positive amount of money in minor units; never a float or a bool."""
NonEmpty = Annotated[str, StringConstraints(min_length=1)]
AccountStatus = Literal["new", "open", "closed"]


class AccountOpened(DomainEvent, name="account.opened", version=1):
    # The owner's name is personal data of the account (the stream): stored encrypted,
    # "[erased]" once `facta gdpr forget <account id>` destroyed the account's key.
    owner: Annotated[NonEmpty, PersonalData()]
    currency: CurrencyCode


class Deposited(DomainEvent, name="account.deposited", version=1):
    amount: MinorUnits
    reference: str | None = None


class Withdrawn(DomainEvent, name="account.withdrawn", version=1):
    amount: MinorUnits
    reference: str | None = None


class TransferredOut(DomainEvent, name="account.transferred_out", version=1):
    amount: MinorUnits
    to_account: NonEmpty
    transfer_id: NonEmpty


class TransferredIn(DomainEvent, name="account.transferred_in", version=1):
    amount: MinorUnits
    from_account: NonEmpty
    transfer_id: NonEmpty


class AccountClosed(DomainEvent, name="account.closed", version=1):
    reason: str | None = None


def is_currency_code(value: object) -> bool:
    """True if ``value`` is a three-letter upper-case ASCII code."""
    return isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha() and value.isupper()


class Account(Aggregate, stream_type="account"):
    """A single-currency account whose balance never drops below zero."""

    class State(AggregateState):
        owner: Annotated[str | None, PersonalData()] = None  # sealed in snapshots too
        currency: str | None = None
        balance: int = 0
        status: AccountStatus = "new"

    state: State

    # -- commands -----------------------------------------------------------------------

    @classmethod
    def open(cls, account_id: str, owner: str, currency: str) -> Account:
        """Open a new, empty account held by ``owner`` in ``currency``."""
        account = cls(account_id)
        if not isinstance(owner, str) or not owner.strip():
            raise DomainError(f"account {account_id}: owner must be a non-empty string, got {owner!r}")
        if not is_currency_code(currency):
            raise DomainError(
                f"account {account_id}: currency must be a 3-letter upper-case ISO code, got {currency!r}"
            )
        account._emit(AccountOpened(owner=owner, currency=currency))
        return account

    def deposit(self, amount: int, reference: str | None = None) -> None:
        """Add ``amount`` minor units."""
        self._require_open("deposit")
        self._emit(Deposited(amount=self._amount(amount), reference=self._reference(reference)))

    def withdraw(self, amount: int, reference: str | None = None) -> None:
        """Take out ``amount`` minor units; refuses to overdraw."""
        self._require_open("withdraw")
        self._require_funds(self._amount(amount))
        self._emit(Withdrawn(amount=amount, reference=self._reference(reference)))

    def transfer_out(self, to_account: str, amount: int, transfer_id: str) -> None:
        """Record the sending side of a transfer to ``to_account``; refuses to overdraw."""
        self._require_open("transfer out")
        self._check_transfer(to_account, transfer_id, "to")
        self._require_funds(self._amount(amount))
        self._emit(TransferredOut(amount=amount, to_account=to_account, transfer_id=transfer_id))

    def transfer_in(self, from_account: str, amount: int, transfer_id: str) -> None:
        """Record the receiving side of a transfer from ``from_account``."""
        self._require_open("transfer in")
        self._check_transfer(from_account, transfer_id, "from")
        self._emit(TransferredIn(amount=self._amount(amount), from_account=from_account, transfer_id=transfer_id))

    def close(self, reason: str | None = None) -> None:
        """Close the account; it must be empty. A closed account accepts nothing."""
        self._require_open("close")
        if self.state.balance != 0:
            raise DomainError(
                f"account {self.id}: cannot close with balance {self.state.balance} {self.state.currency}"
            )
        self._emit(AccountClosed(reason=self._reference(reference=reason, what="reason")))

    # -- checks -------------------------------------------------------------------------

    def _require_open(self, command: str) -> None:
        if self.state.status != "open":
            raise InvalidTransition("account", self.id, command, self.state.status)

    def _amount(self, amount: object) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise DomainError(f"account {self.id}: amount must be a positive integer of minor units, got {amount!r}")
        return amount

    def _require_funds(self, amount: int) -> None:
        if amount > self.state.balance:
            raise DomainError(f"account {self.id}: insufficient funds: balance {self.state.balance}, amount {amount}")

    def _reference(self, reference: object, what: str = "reference") -> str | None:
        if reference is not None and not isinstance(reference, str):
            raise DomainError(f"account {self.id}: {what} must be a string or None, got {reference!r}")
        return reference

    def _check_transfer(self, other: object, transfer_id: object, direction: str) -> None:
        if not isinstance(other, str) or not other:
            raise DomainError(
                f"account {self.id}: transfer {direction} account must be a non-empty string, got {other!r}"
            )
        if other == self.id:
            raise DomainError(f"account {self.id}: cannot transfer {direction} itself")
        if not isinstance(transfer_id, str) or not transfer_id:
            raise DomainError(f"account {self.id}: transfer_id must be a non-empty string, got {transfer_id!r}")

    # -- event handlers -----------------------------------------------------------------

    @applies(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.state.owner = event.owner
        self.state.currency = event.currency
        self.state.balance = 0
        self.state.status = "open"

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount

    @applies(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.state.balance -= event.amount

    @applies(TransferredOut)
    def _transferred_out(self, event: TransferredOut) -> None:
        self.state.balance -= event.amount

    @applies(TransferredIn)
    def _transferred_in(self, event: TransferredIn) -> None:
        self.state.balance += event.amount

    @applies(AccountClosed)
    def _closed(self, event: AccountClosed) -> None:
        self.state.status = "closed"


def transfer(source: Account, target: Account, amount: int, transfer_id: str) -> None:
    """Move ``amount`` from ``source`` to ``target``: both sides or neither.

    Every check either side would make runs before the first event is emitted, so a
    refused transfer leaves both accounts untouched.
    """
    source._require_open("transfer out")
    target._require_open("transfer in")
    if source.state.currency != target.state.currency:
        raise DomainError(
            f"transfer {transfer_id}: currency mismatch: account {source.id} is {source.state.currency}, "
            f"account {target.id} is {target.state.currency}"
        )
    # transfer_out makes every other check (amount, funds, ids, self-transfer) before emitting;
    # after it succeeds, transfer_in cannot fail.
    source.transfer_out(target.id, amount, transfer_id)
    target.transfer_in(source.id, amount, transfer_id)
