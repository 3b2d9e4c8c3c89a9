"""A bank in eventsourcing's own style: no facta import. PERSISTENCE_MODULE picks the store."""

from __future__ import annotations

from decimal import Decimal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class InsufficientFunds(Exception):
    pass


class BankAccount(Aggregate):
    @staticmethod
    def create_id(email: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/bank-accounts/{email}")  # one account per email address

    @event("Opened")
    def __init__(self, full_name: str, email: str) -> None:
        self.full_name = full_name
        self.email = email
        self.balance = Decimal("0.00")

    @event("Credited")
    def credit(self, amount: Decimal) -> None:
        self.balance += amount

    def debit(self, amount: Decimal) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"account {self.id}: balance {self.balance}, cannot debit {amount}")
        self._debited(amount)

    @event("Debited")
    def _debited(self, amount: Decimal) -> None:
        self.balance -= amount


class BankAccounts(Application[UUID]):
    def open_account(self, full_name: str, email: str) -> UUID:
        account = BankAccount(full_name=full_name, email=email)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: Decimal) -> None:
        account: BankAccount = self.repository.get(account_id)
        account.credit(amount)
        self.save(account)

    def transfer(self, from_id: UUID, to_id: UUID, amount: Decimal) -> None:
        source: BankAccount = self.repository.get(from_id)
        target: BankAccount = self.repository.get(to_id)
        source.debit(amount)
        target.credit(amount)
        self.save(source, target)  # both events in one transaction

    def balance(self, account_id: UUID) -> Decimal:
        account: BankAccount = self.repository.get(account_id)
        return account.balance
