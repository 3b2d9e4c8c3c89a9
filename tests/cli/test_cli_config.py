"""Configuration given to the CLI: database URL options, Kafka bootstrap addresses and a
store at a schema revision this facta does not know (issue 10, leftovers 1-3)."""

from __future__ import annotations

import pytest

from .test_cli import facta

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SQLITE_FILE = "sqlite:///./facta.db"


def usage_line(result: object, *needles: str) -> str:
    """The one line of a usage error (exit 2)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("facta: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return str(lines[0])


@pytest.mark.parametrize(("url", "message"), [
    (f"{PG}?prepared_statement_cache_size=-5", "invalid prepared_statement_cache_size='-5' in database URL"),
    (f"{PG}?prepared_statement_cache_size=abc", "invalid prepared_statement_cache_size='abc' in database URL"),
    (f"{PG}?sslmode=bogus", "invalid sslmode='bogus' in database URL"),
    (f"{PG}?foo=bar", "unknown option 'foo' in database URL"),
    (f"{PG}?timeout=abc", "invalid timeout='abc' in database URL"),
    (f"{PG}?command_timeout=-1", "invalid command_timeout='-1' in database URL"),
    (f"{SQLITE_FILE}?timeout=abc", "invalid timeout='abc' in database URL"),
    (f"{SQLITE_FILE}?mode=ro", "unknown option 'mode' in database URL 'sqlite:///./facta.db?mode=ro': SQLite URLs take"
                               " timeout"),
])
@pytest.mark.parametrize("how", ["option", "environment"])
def test_bad_url_options_are_one_line_usage_errors(url: str, message: str, how: str, tmp_path: object) -> None:
    for command in (["db", "upgrade"], ["db", "current"], ["projections", "list"]):
        if how == "option":
            result = facta(*command, "--database-url", url, cwd=tmp_path)  # type: ignore[arg-type]
        else:
            result = facta(*command, cwd=tmp_path, env={"FACTA_DATABASE_URL": url})  # type: ignore[arg-type]
        usage_line(result, "Invalid value for '--database-url'", message)
        assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]


def test_good_url_options_work_from_the_cli(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/o.db?timeout=2.5"
    assert facta("db", "upgrade", "--database-url", url).returncode == 0
    result = facta("db", "current", "--database-url", url)
    assert result.returncode == 0 and result.stdout.startswith("current: "), result.stderr
    pg = f"{PG}?sslmode=disable&command_timeout=30&prepared_statement_cache_size=0"
    result = facta("db", "current", "--database-url", pg)
    assert result.returncode == 0 and result.stdout.startswith("current: "), result.stderr


# -- Kafka bootstrap addresses -----------------------------------------------------------

BAD_BOOTSTRAPS = [
    ("127.0.0.1:99999", "invalid Kafka bootstrap address '127.0.0.1:99999': port '99999' is not 1 to 65535"),
    ("127.0.0.1:0", "invalid Kafka bootstrap address '127.0.0.1:0': port '0' is not 1 to 65535"),
    ("a:9092,b:70000", "invalid Kafka bootstrap address 'a:9092,b:70000': port '70000' of 'b:70000' is not 1 to 65535"),
    (":9092", "invalid Kafka bootstrap address ':9092': ':9092' has no host:port; expected host:port[,host:port]"),
    ("a:1,,b:2", "invalid Kafka bootstrap address 'a:1,,b:2': an empty item in the list; expected host:port[,host:port]"),
    ("::1:9092", "invalid Kafka bootstrap address '::1:9092': write the IPv6 address of '::1:9092' in brackets,"
                 " e.g. [::1]:9092"),
]

# Every command that takes a bootstrap, with what else it needs to get as far as using it.
BOOTSTRAP_COMMANDS = [
    ["relay", "run", "--once"],
    ["projections", "list"],
    ["projections", "run", "billing", "--once"],
    ["replay", "billing", "--from-position", "0", "--dry-run"],
    ["demo", "--kafka", "--rides", "1"],
]


@pytest.mark.parametrize(("bootstrap", "message"), BAD_BOOTSTRAPS)
def test_a_bad_bootstrap_is_one_line_on_every_command(bootstrap: str, message: str, tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    for command in BOOTSTRAP_COMMANDS:
        for how in ("option", "environment"):
            if how == "option":
                result = facta(*command, "--database-url", url, "--kafka-bootstrap", bootstrap, cwd=tmp_path)  # type: ignore[arg-type]
            else:
                result = facta(*command, "--database-url", url, cwd=tmp_path,  # type: ignore[arg-type]
                               env={"FACTA_KAFKA_BOOTSTRAP": bootstrap})
            usage_line(result, "Invalid value for '--kafka-bootstrap'", message)
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]


# -- a store at a revision this facta does not know ----------------------------------------

STORE_COMMANDS = [
    ["db", "upgrade"], ["db", "current"], ["db", "current", "--json"], ["db", "downgrade", "0002"],
    ["demo", "--rides", "1", "--seed", "1"], ["projections", "list"], ["projections", "run", "billing", "--once"],
    ["projections", "skip", "billing", "--position", "1", "--reason", "r"], ["projections", "skipped"],
    ["relay", "status"], ["relay", "run", "--once", "--kafka-bootstrap", "127.0.0.1:1", "--kafka-timeout", "0.5"],
    ["relay", "skip", "--position", "1", "--reason", "r"], ["audit", "events"], ["audit", "history", "x"],
    ["audit", "state", "x"], ["audit", "trace", "c"], ["audit", "diff", "x", "--from-version", "1", "--to-version", "2"],
    ["replay", "billing", "--from-position", "0", "--dry-run"],
]


async def test_every_command_refuses_a_store_at_an_unknown_revision(migrated_url: str, tmp_path: object) -> None:
    import asyncio

    from tests.eventstore.test_unknown_revision import _stamp, _version_rows, expected

    await _stamp(migrated_url, "9999")
    message = f"facta: error: {expected(migrated_url)}"

    def run_all() -> list[tuple[list[str], int, str]]:
        results = []
        for command in STORE_COMMANDS:
            result = facta(*command, "--database-url", migrated_url, cwd=tmp_path)  # type: ignore[arg-type]
            results.append((command, result.returncode, result.stderr))
        return results

    for command, code, stderr in await asyncio.to_thread(run_all):
        assert code == 1, (command, code, stderr)
        assert "Traceback" not in stderr, (command, stderr)
        assert stderr.strip().splitlines()[-1] == message, (command, stderr)
    assert await _version_rows(migrated_url) == ["9999"]


# -- option defaults come from the settings object (FACTA_*) -------------------------------

SETTING_OPTIONS = [
    (("relay", "run"), "batch_size", "FACTA_BATCH_SIZE", "7", 7),
    (("relay", "run"), "topic_prefix", "FACTA_TOPIC_PREFIX", "rides", "rides"),
    (("relay", "run"), "partitions", "FACTA_RELAY_PARTITIONS", "5", 5),
    (("relay", "run"), "kafka_timeout", "FACTA_KAFKA_TIMEOUT_S", "2.5", 2.5),
    (("relay", "run"), "kafka_request_timeout", "FACTA_KAFKA_REQUEST_TIMEOUT_MS", "2500", 2.5),
    (("projections", "run"), "batch_size", "FACTA_BATCH_SIZE", "9", 9),
    (("projections", "run"), "topic_prefix", "FACTA_TOPIC_PREFIX", "rides", "rides"),
    (("projections", "run"), "kafka_timeout", "FACTA_KAFKA_TIMEOUT_S", "4", 4.0),
    (("projections", "run"), "kafka_session_timeout", "FACTA_KAFKA_SESSION_TIMEOUT_MS", "6000", 6.0),
    (("projections", "run"), "group_prefix", "FACTA_GROUP_PREFIX", "g.", "g."),
    (("replay",), "batch_size", "FACTA_BATCH_SIZE", "11", 11),
    (("replay",), "kafka_timeout", "FACTA_KAFKA_TIMEOUT_S", "3", 3.0),
]


@pytest.mark.parametrize(("path", "param", "variable", "value", "expected"), SETTING_OPTIONS)
def test_option_defaults_come_from_the_settings(path: tuple[str, ...], param: str, variable: str, value: str,
                                                expected: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from facta.replay.cli import cli
    from facta.settings import Settings

    command: click.Command = cli
    for word in path:
        command = command.commands[word]  # type: ignore[attr-defined]
    option = next(p for p in command.params if p.name == param)
    ctx = click.Context(command)
    field = variable.removeprefix("FACTA_").lower()
    fallback = Settings.model_fields[field].default
    monkeypatch.delenv(variable, raising=False)
    assert option.get_default(ctx) == (fallback / 1000 if field.endswith("_ms") else fallback)
    monkeypatch.setenv(variable, value)
    assert option.get_default(ctx) == expected


@pytest.mark.parametrize(("command", "variable", "value"), [
    (["relay", "run", "--once", "--kafka-bootstrap", "127.0.0.1:1"], "FACTA_BATCH_SIZE", "0"),
    (["relay", "run", "--once", "--kafka-bootstrap", "127.0.0.1:1"], "FACTA_KAFKA_REQUEST_TIMEOUT_MS", "abc"),
    (["projections", "run", "billing", "--once"], "FACTA_KAFKA_SESSION_TIMEOUT_MS", "10"),
    (["replay", "billing", "--from-position", "0", "--dry-run"], "FACTA_KAFKA_TIMEOUT_S", "nan"),
])
def test_a_bad_setting_behind_an_option_is_a_one_line_usage_error(command: list[str], variable: str, value: str,
                                                                   tmp_path: object) -> None:
    result = facta(*command, "--database-url", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path,  # type: ignore[arg-type]
                   env={variable: value})
    usage_line(result, f"invalid {variable}={value!r}")
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]
