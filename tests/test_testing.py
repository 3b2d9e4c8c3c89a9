"""facta.testing: the given/when/then helpers say what differed, and the pytest plugin
gives users' tests a store on SQLite and, when a server is named, PostgreSQL (issue 10,
item 18)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facta import testing
from facta.domain import DomainError
from facta.domain.reference import Account, AccountOpened, Deposited, Withdrawn
from facta.eventstore import EventStore
from facta.projections.reference import AccountBalances
from facta.testing import ScenarioFailed

OPENED = AccountOpened(owner="ann", currency="EUR")


def test_then_passes_on_exactly_the_emitted_events() -> None:
    account = testing.given(Account, "acct-1", OPENED, Deposited(amount=500)).when(
        lambda a: a.withdraw(200, reference="cash")).then(Withdrawn(amount=200, reference="cash"))
    assert (account.version, account.state.balance) == (3, 300)


@pytest.mark.parametrize(("expected", "says"), [
    ((Withdrawn(amount=201),), "expected [Withdrawn(amount=201, reference=None)], got [Withdrawn(amount=200"),
    ((), "expected no events, got [Withdrawn(amount=200"),
    ((Withdrawn(amount=200), Withdrawn(amount=200)), "expected [Withdrawn"),
])
def test_then_names_what_differed(expected: tuple[Withdrawn, ...], says: str) -> None:
    scenario = testing.given(Account, "acct-1", OPENED, Deposited(amount=500)).when(lambda a: a.withdraw(200))
    with pytest.raises(ScenarioFailed) as failed:
        scenario.then(*expected)
    assert says in str(failed.value)


def test_then_raises_checks_type_message_and_that_nothing_was_emitted() -> None:
    error = testing.given(Account, "acct-1", OPENED).when(lambda a: a.withdraw(1)).then_raises(
        DomainError, r"insufficient funds: balance 0, amount 1$")
    assert isinstance(error, DomainError)
    with pytest.raises(ScenarioFailed, match=r"^expected DomainError, but the command emitted \[Deposited"):
        testing.given(Account, "acct-1", OPENED).when(lambda a: a.deposit(5)).then_raises(DomainError)
    with pytest.raises(ScenarioFailed, match=r"does not match 'overdraft'"):
        testing.given(Account, "acct-1", OPENED).when(lambda a: a.withdraw(1)).then_raises(DomainError, "overdraft")
    with pytest.raises(ScenarioFailed, match=r"^expected KeyError, got DomainError: account acct-1: insufficient"):
        testing.given(Account, "acct-1", OPENED).when(lambda a: a.withdraw(1)).then_raises(KeyError)

    def deposit_then_fail(account: Account) -> None:
        account.deposit(5)
        account.withdraw(100)

    with pytest.raises(ScenarioFailed, match=r"DomainError was raised, but the command emitted \[Deposited"):
        testing.given(Account, "acct-1", OPENED).when(deposit_then_fail).then_raises(DomainError)
    with pytest.raises(ScenarioFailed, match=r"the command raised DomainError: account acct-1: insufficient"):
        testing.given(Account, "acct-1", OPENED).when(lambda a: a.withdraw(1)).then()
    with pytest.raises(ScenarioFailed, match=r"needs a when\(\) first"):
        testing.given(Account, "acct-1", OPENED).then()


async def test_a_projection_scenario_on_both_dialects(store: EventStore) -> None:
    scenario = (testing.project(store, AccountBalances)
                .given("acct-ann", OPENED, Deposited(amount=1_000), stream_type=Account)
                .given("acct-bob", AccountOpened(owner="bob", currency="USD"), stream_type="account")
                .given("acct-ann", Withdrawn(amount=250), stream_type=Account))
    rows = await scenario.then_rows(AccountBalances.balances, [
        {"account_id": "acct-ann", "owner": "ann", "balance": 750, "currency": "EUR"},
        {"account_id": "acct-bob", "owner": "bob", "balance": 0, "currency": "USD"},
    ])
    assert [r["account_id"] for r in rows] == ["acct-ann", "acct-bob"]
    with pytest.raises(ScenarioFailed, match=r"account_balances: expected rows .*'balance': 751.*got .*'balance': 750"):
        await testing.project(store, AccountBalances).then_rows(
            AccountBalances.balances,
            [{"account_id": "acct-ann", "balance": 751}, {"account_id": "acct-bob", "balance": 0}])


USER_CONFTEST = 'pytest_plugins = ["facta.testing"]\n'
USER_TEST = textwrap.dedent('''
    from facta.domain.reference import Account, AccountOpened, Deposited
    from facta.eventstore import EventStore
    from facta.projections.reference import AccountBalances
    from facta.testing import project


    async def test_balances(facta_store: EventStore, facta_backend: str) -> None:
        assert facta_store.database.dialect == facta_backend
        await (project(facta_store, AccountBalances)
               .given("acct-1", AccountOpened(owner="ann", currency="EUR"), Deposited(amount=5), stream_type=Account)
               .then_rows(AccountBalances.balances, [{"account_id": "acct-1", "balance": 5}]))


    async def test_each_test_gets_an_empty_store(facta_store: EventStore) -> None:
        assert await facta_store.head_position() == 0
        await facta_store.append("s-1", "account", [AccountOpened(owner="x", currency="EUR")], expected_version=0)
''')


def _run_user_suite(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(USER_CONFTEST)
    (tmp_path / "test_shop.py").write_text(USER_TEST)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACTA_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto", "--rootdir",
         str(tmp_path), *args, str(tmp_path)],
        cwd=tmp_path, env=clean | env, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.mark.slow
def test_the_plugin_gives_a_sqlite_store_by_default(tmp_path: Path) -> None:
    result = _run_user_suite(tmp_path, {})
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_the_plugin_adds_postgresql_when_a_server_is_named(tmp_path: Path, postgres_available: bool) -> None:
    if not postgres_available:
        pytest.skip("PostgreSQL is not reachable at FACTA_TEST_POSTGRES")
    from .conftest import POSTGRES_ADMIN

    server = POSTGRES_ADMIN.replace("postgresql+asyncpg://", "postgresql://")
    result = _run_user_suite(tmp_path, {"FACTA_TEST_DATABASE_URL": server})
    assert result.returncode == 0 and "4 passed" in result.stdout, result.stdout + result.stderr
    (tmp_path / "again").mkdir()
    result = _run_user_suite(tmp_path / "again", {}, "--facta-database-url", server, "-vv")
    assert result.returncode == 0 and "4 passed" in result.stdout, result.stdout + result.stderr
    assert "test_balances[postgresql]" in result.stdout and "test_balances[sqlite]" in result.stdout
