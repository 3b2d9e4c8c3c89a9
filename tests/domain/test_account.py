"""Tests of the reference ``Account`` aggregate and the ``transfer`` helper."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from facta import testing  # testing.given: hypothesis has a `given` too
from facta.domain import DomainError, DomainEvent, InvalidTransition, default_registry
from facta.domain.reference import (
    Account,
    AccountClosed,
    AccountOpened,
    Deposited,
    TransferredIn,
    TransferredOut,
    Withdrawn,
    transfer,
)

# Some tests below use facta.testing's given/when/then, as users' own tests would: given
# the stored events, when a command runs, then these events (or this error, and nothing).
OPENED = (AccountOpened(owner="alice", currency="EUR"),)


def funded(balance: int) -> tuple[DomainEvent, ...]:
    return (*OPENED, Deposited(amount=balance, reference=None)) if balance else OPENED


def opened(account_id: str = "acc-1", balance: int = 0, currency: str = "EUR") -> Account:
    account = Account.open(account_id, "alice", currency)
    if balance:
        account.deposit(balance)
    return account


def events(account: Account) -> list[DomainEvent]:
    return [p.event for p in account.pending_events]


def snapshot(account: Account) -> tuple[int, dict[str, object], int]:
    return account.version, account.state.model_dump(), len(account.pending_events)


# -- open -----------------------------------------------------------------------------------


def test_open_starts_an_empty_open_account() -> None:
    account = Account.open("acc-1", "alice", "EUR")
    assert account.id == "acc-1"
    assert account.version == 1
    assert account.state.model_dump() == {"owner": "alice", "currency": "EUR", "balance": 0, "status": "open"}
    assert events(account) == [AccountOpened(owner="alice", currency="EUR")]


def test_a_new_account_is_not_open() -> None:
    account = Account("acc-1")
    assert account.state.status == "new"
    with pytest.raises(InvalidTransition, match=r"^account acc-1: cannot deposit while new$"):
        account.deposit(10)
    assert account.version == 0


@pytest.mark.parametrize("currency", ["eur", "EU", "EURO", "E1R", "", "ÉUR", 978, None])
def test_open_rejects_a_bad_currency(currency: object) -> None:
    with pytest.raises(DomainError) as exc:
        Account.open("acc-1", "alice", currency)  # type: ignore[arg-type]
    assert f"got {currency!r}" in str(exc.value)
    assert "acc-1" in str(exc.value)


@pytest.mark.parametrize("owner", ["", "   ", None, 7])
def test_open_rejects_a_bad_owner(owner: object) -> None:
    with pytest.raises(DomainError, match="owner") as exc:
        Account.open("acc-1", owner, "EUR")  # type: ignore[arg-type]
    assert f"got {owner!r}" in str(exc.value)


@pytest.mark.parametrize("account_id", ["", None, 42])
def test_open_rejects_a_bad_id(account_id: object) -> None:
    with pytest.raises(DomainError) as exc:
        Account.open(account_id, "alice", "EUR")  # type: ignore[arg-type]
    assert repr(account_id) in str(exc.value)


# -- deposit / withdraw ----------------------------------------------------------------------


def test_deposit_and_withdraw_move_the_balance() -> None:
    def commands(account: Account) -> None:
        account.deposit(1_000, reference="salary")
        account.withdraw(250)
        account.withdraw(750, reference="rent")

    account = testing.given(Account, "acc-1", *OPENED).when(commands).then(
        Deposited(amount=1_000, reference="salary"),
        Withdrawn(amount=250, reference=None),
        Withdrawn(amount=750, reference="rent"),
    )
    assert account.state.balance == 0
    assert account.version == 4


BAD_AMOUNTS: list[object] = [0, -1, -10_000, 1.0, 10.5, float("nan"), True, False, "10", None, Decimal(5)]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
@pytest.mark.parametrize("command", ["deposit", "withdraw", "transfer_out", "transfer_in"])
def test_amounts_must_be_positive_integers(command: str, amount: object) -> None:
    account = opened(balance=100)
    before = snapshot(account)
    calls: dict[str, Callable[[], None]] = {
        "deposit": lambda: account.deposit(amount),  # type: ignore[arg-type]
        "withdraw": lambda: account.withdraw(amount),  # type: ignore[arg-type]
        "transfer_out": lambda: account.transfer_out("acc-2", amount, "t-1"),  # type: ignore[arg-type]
        "transfer_in": lambda: account.transfer_in("acc-2", amount, "t-1"),  # type: ignore[arg-type]
    }
    with pytest.raises(DomainError) as exc:
        calls[command]()
    assert str(exc.value) == f"account acc-1: amount must be a positive integer of minor units, got {amount!r}"
    assert snapshot(account) == before


def test_reference_must_be_text() -> None:
    account = opened()
    with pytest.raises(DomainError, match=r"reference must be a string or None, got 12$"):
        account.deposit(5, reference=12)  # type: ignore[arg-type]
    assert account.state.balance == 0


@pytest.mark.parametrize(("balance", "amount"), [(0, 1), (100, 101), (999, 1_000_000)])
def test_withdraw_refuses_to_overdraw(balance: int, amount: int) -> None:
    scenario = testing.given(Account, "acc-1", *funded(balance))
    before = snapshot(scenario.aggregate)
    error = scenario.when(lambda account: account.withdraw(amount)).then_raises(DomainError)
    assert str(error) == f"account acc-1: insufficient funds: balance {balance}, amount {amount}"
    assert snapshot(scenario.aggregate) == before


def test_withdraw_may_empty_the_account() -> None:
    account = testing.given(Account, "acc-1", *funded(100)).when(lambda a: a.withdraw(100)).then(
        Withdrawn(amount=100, reference=None))
    assert account.state.balance == 0


# -- transfers (one side at a time) -----------------------------------------------------------


def test_transfer_out_and_in_record_both_sides() -> None:
    account = opened(balance=500)
    account.transfer_out("acc-2", 200, "t-1")
    account.transfer_in("acc-3", 50, "t-2")
    assert account.state.balance == 350
    assert events(account)[-2:] == [
        TransferredOut(amount=200, to_account="acc-2", transfer_id="t-1"),
        TransferredIn(amount=50, from_account="acc-3", transfer_id="t-2"),
    ]


@pytest.mark.parametrize(("balance", "amount"), [(0, 1), (499, 500)])
def test_transfer_out_refuses_to_overdraw(balance: int, amount: int) -> None:
    scenario = testing.given(Account, "acc-1", *funded(balance))
    before = snapshot(scenario.aggregate)
    scenario.when(lambda account: account.transfer_out("acc-2", amount, "t-1")).then_raises(
        DomainError, f"^account acc-1: insufficient funds: balance {balance}, amount {amount}$")
    assert snapshot(scenario.aggregate) == before


def test_cannot_transfer_to_or_from_itself() -> None:
    account = opened(balance=100)
    before = snapshot(account)
    with pytest.raises(DomainError, match=r"^account acc-1: cannot transfer to itself$"):
        account.transfer_out("acc-1", 10, "t-1")
    with pytest.raises(DomainError, match=r"^account acc-1: cannot transfer from itself$"):
        account.transfer_in("acc-1", 10, "t-1")
    assert snapshot(account) == before


@pytest.mark.parametrize(
    ("other", "transfer_id", "named"), [("", "t-1", "''"), (None, "t-1", "None"), ("acc-2", "", "''")]
)
def test_transfer_needs_an_account_and_an_id(other: object, transfer_id: str, named: str) -> None:
    account = opened(balance=100)
    for call in (account.transfer_out, account.transfer_in):
        with pytest.raises(DomainError) as exc:
            call(other, 10, transfer_id)  # type: ignore[arg-type]
        assert str(exc.value).endswith(f"got {named}")
    assert account.state.balance == 100


# -- close ------------------------------------------------------------------------------------


def test_close_an_empty_account() -> None:
    account = opened(balance=100)
    account.withdraw(100)
    account.close("moving abroad")
    assert account.state.status == "closed"
    assert events(account)[-1] == AccountClosed(reason="moving abroad")


def test_close_without_reason() -> None:
    account = opened()
    account.close()
    assert events(account)[-1] == AccountClosed(reason=None)


def test_close_requires_a_zero_balance() -> None:
    account = opened(balance=42)
    with pytest.raises(DomainError) as exc:
        account.close()
    assert str(exc.value) == "account acc-1: cannot close with balance 42 EUR"
    assert account.state.status == "open"


CLOSED_COMMANDS: list[tuple[str, Callable[[Account], None]]] = [
    ("deposit", lambda a: a.deposit(10)),
    ("withdraw", lambda a: a.withdraw(10)),
    ("transfer out", lambda a: a.transfer_out("acc-2", 10, "t-1")),
    ("transfer in", lambda a: a.transfer_in("acc-2", 10, "t-1")),
    ("close", lambda a: a.close()),
]


@pytest.mark.parametrize(("command", "call"), CLOSED_COMMANDS, ids=[c for c, _ in CLOSED_COMMANDS])
def test_a_closed_account_accepts_nothing(command: str, call: Callable[[Account], None]) -> None:
    account = opened()
    account.close()
    before = snapshot(account)
    with pytest.raises(InvalidTransition) as exc:
        call(account)
    assert str(exc.value) == f"account acc-1: cannot {command} while closed"
    assert (exc.value.aggregate_id, exc.value.command, exc.value.status) == ("acc-1", command, "closed")
    assert snapshot(account) == before


# -- the transfer helper --------------------------------------------------------------------


def test_transfer_moves_money_between_two_accounts() -> None:
    source, target = opened("acc-1", balance=1_000), opened("acc-2", balance=5)
    transfer(source, target, 300, "t-9")
    assert (source.state.balance, target.state.balance) == (700, 305)
    assert events(source)[-1] == TransferredOut(amount=300, to_account="acc-2", transfer_id="t-9")
    assert events(target)[-1] == TransferredIn(amount=300, from_account="acc-1", transfer_id="t-9")


def test_transfer_requires_the_same_currency() -> None:
    source, target = opened("acc-1", balance=1_000), opened("acc-2", currency="GBP")
    before = snapshot(source), snapshot(target)
    with pytest.raises(DomainError) as exc:
        transfer(source, target, 300, "t-9")
    assert str(exc.value) == "transfer t-9: currency mismatch: account acc-1 is EUR, account acc-2 is GBP"
    assert (snapshot(source), snapshot(target)) == before


def test_transfer_refuses_to_overdraw_and_touches_neither_side() -> None:
    source, target = opened("acc-1", balance=100), opened("acc-2")
    before = snapshot(source), snapshot(target)
    with pytest.raises(DomainError, match=r"^account acc-1: insufficient funds: balance 100, amount 101$"):
        transfer(source, target, 101, "t-9")
    assert (snapshot(source), snapshot(target)) == before


def test_transfer_to_a_closed_account_touches_neither_side() -> None:
    source, target = opened("acc-1", balance=100), opened("acc-2")
    target.close()
    before = snapshot(source), snapshot(target)
    with pytest.raises(InvalidTransition, match=r"^account acc-2: cannot transfer in while closed$"):
        transfer(source, target, 10, "t-9")
    assert (snapshot(source), snapshot(target)) == before


def test_transfer_from_a_closed_account_is_refused() -> None:
    source, target = opened("acc-1"), opened("acc-2")
    source.close()
    with pytest.raises(InvalidTransition, match=r"^account acc-1: cannot transfer out while closed$"):
        transfer(source, target, 10, "t-9")
    assert target.version == 1


def test_transfer_to_the_same_account_is_refused() -> None:
    account = opened(balance=100)
    with pytest.raises(DomainError, match=r"^account acc-1: cannot transfer to itself$"):
        transfer(account, account, 10, "t-9")
    assert account.state.balance == 100


@pytest.mark.parametrize(("amount", "transfer_id"), [(0, "t-9"), (2.5, "t-9"), (10, "")])
def test_transfer_with_bad_input_touches_neither_side(amount: object, transfer_id: str) -> None:
    source, target = opened("acc-1", balance=100), opened("acc-2")
    before = snapshot(source), snapshot(target)
    with pytest.raises(DomainError):
        transfer(source, target, amount, transfer_id)  # type: ignore[arg-type]
    assert (snapshot(source), snapshot(target)) == before


# -- events ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "payload"),
    [
        (Deposited, {"amount": 1.0}),
        (Deposited, {"amount": 1.5}),
        (Deposited, {"amount": True}),
        (Deposited, {"amount": 0}),
        (Deposited, {"amount": "5"}),
        (Withdrawn, {"amount": -3}),
        (TransferredOut, {"amount": 5, "to_account": "", "transfer_id": "t"}),
        (TransferredIn, {"amount": 5, "from_account": "a", "transfer_id": ""}),
        (AccountOpened, {"owner": "alice", "currency": "eur"}),
        (AccountOpened, {"owner": "", "currency": "EUR"}),
        (AccountClosed, {"reason": None, "extra": 1}),
    ],
)
def test_events_validate_their_payload(cls: type[DomainEvent], payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        cls.model_validate(payload)


def test_events_are_frozen() -> None:
    event = Deposited(amount=5)
    with pytest.raises(ValidationError):
        event.amount = 6  # type: ignore[misc]


EXPECTED_NAMES = {
    AccountOpened: "account.opened",
    Deposited: "account.deposited",
    Withdrawn: "account.withdrawn",
    TransferredOut: "account.transferred_out",
    TransferredIn: "account.transferred_in",
    AccountClosed: "account.closed",
}


@pytest.mark.parametrize(("cls", "name"), EXPECTED_NAMES.items(), ids=EXPECTED_NAMES.values())
def test_events_are_registered_by_name(cls: type[DomainEvent], name: str) -> None:
    assert cls.event_type == name
    assert cls.schema_version == 1
    assert default_registry.get(name) is cls


def test_every_event_survives_a_json_round_trip() -> None:
    source, target = opened("acc-1", balance=100), opened("acc-2")
    source.withdraw(10, reference="atm")
    transfer(source, target, 90, "t-1")
    source.close("done")
    stored = events(source) + events(target)
    assert {type(e) for e in stored} == set(EXPECTED_NAMES)
    for event in stored:
        decoded = default_registry.decode(event.event_type, event.schema_version, event.model_dump_json())
        assert decoded == event
        assert type(decoded) is type(event)


# -- rehydration ----------------------------------------------------------------------------


def test_rehydrate_reproduces_state_and_version() -> None:
    account = opened(balance=1_000)
    account.withdraw(300)
    account.transfer_out("acc-2", 200, "t-1")
    account.transfer_in("acc-3", 50, "t-2")
    copy = Account.rehydrate("acc-1", events(account))
    assert copy.state == account.state
    assert copy.state.balance == 550
    assert copy.version == account.version == 5
    assert copy.pending_events == []


def test_rehydrate_from_a_snapshot() -> None:
    account = opened(balance=1_000)
    account.withdraw(300)
    cut = account.version
    snap = Account.State.model_validate_json(account.state.model_dump_json())
    account.deposit(7)
    account.withdraw(707)
    account.close()
    copy = Account.rehydrate("acc-1", events(account)[cut:], state=snap, version=cut)
    assert copy.state == account.state
    assert (copy.state.balance, copy.state.status) == (0, "closed")
    assert copy.version == account.version == 6
    assert snap.balance == 700  # the snapshot was not mutated by the replay


# -- properties -------------------------------------------------------------------------------

operations = st.lists(
    st.tuples(st.sampled_from(["deposit", "withdraw", "transfer_out", "transfer_in"]), st.integers(-50, 1_000)),
    max_size=60,
)


@settings(max_examples=200)
@given(operations)
def test_balance_is_never_negative_and_matches_the_events(ops: list[tuple[str, int]]) -> None:
    account = opened()
    expected = 0
    for op, amount in ops:
        version = account.version
        valid = amount > 0 and (op in ("deposit", "transfer_in") or amount <= expected)
        try:
            if op == "deposit":
                account.deposit(amount)
            elif op == "withdraw":
                account.withdraw(amount)
            elif op == "transfer_out":
                account.transfer_out("acc-2", amount, f"t-{version}")
            else:
                account.transfer_in("acc-3", amount, f"t-{version}")
        except DomainError:
            assert not valid, f"{op}({amount}) refused at balance {expected}"
            assert account.version == version
        else:
            assert valid, f"{op}({amount}) accepted at balance {expected}"
            expected += amount if op in ("deposit", "transfer_in") else -amount
            assert account.version == version + 1
        assert account.state.balance == expected >= 0

    signed = {Deposited: 1, TransferredIn: 1, Withdrawn: -1, TransferredOut: -1}
    total = sum(signed[type(e)] * e.amount for e in events(account) if type(e) in signed)  # type: ignore[attr-defined]
    assert total == account.state.balance
    copy = Account.rehydrate(account.id, events(account))
    assert copy.state == account.state
    assert copy.version == account.version == len(account.pending_events)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 500)), max_size=40))
def test_transfers_conserve_money(moves: list[tuple[bool, int]]) -> None:
    a, b = opened("acc-1", balance=1_000), opened("acc-2", balance=1_000)
    for n, (a_to_b, amount) in enumerate(moves):
        source, target = (a, b) if a_to_b else (b, a)
        try:
            transfer(source, target, amount, f"t-{n}")
        except DomainError:
            assert amount > source.state.balance
        assert a.state.balance >= 0 and b.state.balance >= 0
        assert a.state.balance + b.state.balance == 2_000
    outs = {e.transfer_id: e.amount for x in (a, b) for e in events(x) if isinstance(e, TransferredOut)}
    ins = {e.transfer_id: e.amount for x in (a, b) for e in events(x) if isinstance(e, TransferredIn)}
    assert outs == ins
