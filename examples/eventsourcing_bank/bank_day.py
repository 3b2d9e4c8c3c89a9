"""A day at the bank: run it with PERSISTENCE_MODULE and FACTA_DATABASE_URL set."""

from decimal import Decimal

from eventsourcing.application import AggregateNotFoundError

from bankaccounts import BankAccount, BankAccounts

app = BankAccounts()
ids = {}
for name, email in (("Alice", "alice@example.com"), ("Bob", "bob@example.com")):
    ids[name] = BankAccount.create_id(email)
    try:
        app.repository.get(ids[name])
    except AggregateNotFoundError:  # the first run opens the accounts
        app.open_account(name, email)
app.deposit(ids["Alice"], Decimal("100.00"))
app.transfer(ids["Alice"], ids["Bob"], Decimal("30.50"))
print(ids["Alice"], app.balance(ids["Alice"]))  # 87505248-af61-5fca-b914-b5ee3534b068 69.50 on the first run
print(ids["Bob"], app.balance(ids["Bob"]))
