"""Database URL query options: each checked for type and range, every other one refused
with one line before any connection (issue 10, leftover 1)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from facta.eventstore import EventStore
from facta.eventstore.database import resolve_url
from facta.eventstore.errors import DatabaseURLError

PG_TAKES = ("host, port, ssl, sslmode, timeout, command_timeout, statement_cache_size, "
            "prepared_statement_cache_size, target_session_attrs")


def _with(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _dialect(url: str) -> str:
    return "SQLite" if url.startswith("sqlite") else "PostgreSQL"


async def _refused(url: str, message: str) -> None:
    """Opening ``url`` fails with exactly ``message``, before any connection is made."""
    with pytest.raises(DatabaseURLError) as caught:
        await EventStore.open(url)
    assert str(caught.value) == message


@pytest.mark.parametrize("query", ["foo=bar", "mode=ro", "sslmode=bogus"])
async def test_an_unknown_option_is_refused_naming_it_and_the_accepted_ones(backend_url: str, query: str) -> None:
    url = _with(backend_url, query)
    key, _, value = query.partition("=")
    if _dialect(url) == "SQLite":
        message = f"unknown option {key!r} in database URL {url!r}: SQLite URLs take timeout"
    elif key == "sslmode":
        message = (f"invalid sslmode={value!r} in database URL {url!r}: give one of disable, allow, prefer, require,"
                   " verify-ca, verify-full")
    else:
        message = f"unknown option {key!r} in database URL {url!r}: PostgreSQL URLs take {PG_TAKES}"
    await _refused(url, message)


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e3", "86401"])
async def test_a_timeout_that_is_not_seconds_in_range_is_refused(backend_url: str, value: str) -> None:
    url = _with(backend_url, f"timeout={value}")
    limit = "from 0 up to 86400" if _dialect(url) == "SQLite" else "above 0 to 86400"
    await _refused(url, f"invalid timeout={value!r} in database URL {url!r}: give a number of seconds {limit}")


@pytest.mark.parametrize(("query", "limit"), [
    ("prepared_statement_cache_size=-5", "give a whole number from 0 (no cache) to 1000000"),
    ("prepared_statement_cache_size=abc", "give a whole number from 0 (no cache) to 1000000"),
    ("statement_cache_size=99999999999", "give a whole number from 0 (no cache) to 1000000"),
    ("command_timeout=-1", "give a number of seconds above 0 to 86400"),
    ("command_timeout=0", "give a number of seconds above 0 to 86400"),
    ("timeout=0", "give a number of seconds above 0 to 86400"),
    ("target_session_attrs=master",
     "give one of any, primary, standby, prefer-standby, read-write, read-only"),
    ("ssl=true", "give one of disable, allow, prefer, require, verify-ca, verify-full"),
])
async def test_postgresql_options_out_of_range_are_one_line(postgres_url: str, query: str, limit: str) -> None:
    url = _with(postgres_url, query)
    key, _, value = query.partition("=")
    await _refused(url, f"invalid {key}={value!r} in database URL {url!r}: {limit}")


async def test_an_option_given_twice_or_ssl_with_sslmode_is_refused(backend_url: str) -> None:
    url = _with(backend_url, "timeout=1&timeout=2")
    await _refused(url, f"option 'timeout' is given 2 times in database URL {url!r}: give it once")
    if _dialect(backend_url) == "PostgreSQL":
        url = _with(backend_url, "ssl=disable&sslmode=disable")
        await _refused(url, f"database URL {url!r} gives both ssl and sslmode: give one")


async def test_postgresql_options_reach_the_driver_typed(migrated_url: str) -> None:
    if _dialect(migrated_url) == "SQLite":
        pytest.skip("PostgreSQL options")
    url = _with(migrated_url, "sslmode=disable&timeout=5&command_timeout=2.5&statement_cache_size=0"
                              "&prepared_statement_cache_size=0&target_session_attrs=any")
    store = await EventStore.open(url)
    try:
        assert store.database.engine is not None
        async with store.database.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            config = raw.driver_connection._config
            assert (config.command_timeout, config.statement_cache_size) == (2.5, 0)
            assert raw.dbapi_connection._prepared_statement_cache is None
        assert await store.stream_version("nobody") == 0
    finally:
        await store.close()


async def test_host_and_port_options_still_work(postgres_url: str) -> None:
    parsed = resolve_url(postgres_url)
    bare = parsed.set(host=None, port=None).render_as_string(hide_password=False)
    for url in (_with(bare, f"host={parsed.host}:{parsed.port}"), _with(bare, f"host={parsed.host}&port={parsed.port}")):
        store = await EventStore.open(url, migrate=True)
        try:
            assert await store.stream_version("nobody") == 0
        finally:
            await store.close()


@pytest.mark.parametrize(("query", "busy_ms"), [("", 60_000), ("timeout=2.5", 2_500), ("timeout=0", 0)])
async def test_sqlite_timeout_is_the_busy_timeout_of_every_connection(sqlite_url: str, query: str, busy_ms: int) -> None:
    url = _with(sqlite_url, query) if query else sqlite_url
    store = await EventStore.open(url, migrate=True)
    try:
        def busy(conn: Any) -> int:
            return int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar())

        assert await store.database.read(busy) == busy_ms
        assert await store.database.write(busy) == busy_ms
        assert await store.database.sqlite_write(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) == busy_ms
    finally:
        await store.close()


def test_the_error_names_the_option_and_value_in_one_line() -> None:
    with pytest.raises(DatabaseURLError, match=re.escape("invalid timeout='abc'")) as caught:
        resolve_url("sqlite:///x.db?timeout=abc")
    assert "\n" not in str(caught.value)
