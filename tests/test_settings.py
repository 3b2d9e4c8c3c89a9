"""One settings object (issue 11, item 6): ``facta.settings`` reads the ``FACTA_*``
environment once into typed fields with units in their names; the library's settings
classes take their defaults from it; a bad value is one line naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facta.errors import FactaError, InvalidSetting, InvalidValue
from facta.eventstore import database_url_from_env
from facta.eventstore.database import DEFAULT_DATABASE_URL
from facta.eventstore.locks import lock_dir
from facta.eventstore.relay import RelayConfig
from facta.projections import KafkaSettings, RunnerConfig
from facta.settings import Settings, settings

ROOT = Path(__file__).resolve().parent.parent

#: Every field: its environment variable and its default (the README's table says the same).
DEFAULTS = {
    "database_url": ("FACTA_DATABASE_URL", None),
    "kafka_bootstrap": ("FACTA_KAFKA_BOOTSTRAP", None),
    "projections": ("FACTA_PROJECTIONS", None),
    "aggregates": ("FACTA_AGGREGATES", None),
    "key_store": ("FACTA_KEY_STORE", None),
    "cache_dir": ("FACTA_CACHE_DIR", None),
    "lock_dir": ("FACTA_LOCK_DIR", None),
    "test_database_url": ("FACTA_TEST_DATABASE_URL", None),
    "signing_key_file": ("FACTA_SIGNING_KEY_FILE", None),
    "topic_prefix": ("FACTA_TOPIC_PREFIX", "facta"),
    "group_prefix": ("FACTA_GROUP_PREFIX", "facta.projection."),
    "batch_size": ("FACTA_BATCH_SIZE", 1000),
    "relay_partitions": ("FACTA_RELAY_PARTITIONS", 3),
    "kafka_request_timeout_ms": ("FACTA_KAFKA_REQUEST_TIMEOUT_MS", 15_000),
    "kafka_session_timeout_ms": ("FACTA_KAFKA_SESSION_TIMEOUT_MS", 10_000),
    "kafka_heartbeat_interval_ms": ("FACTA_KAFKA_HEARTBEAT_INTERVAL_MS", 1_000),
    "kafka_timeout_s": ("FACTA_KAFKA_TIMEOUT_S", 30.0),
    "relay_poll_interval_s": ("FACTA_RELAY_POLL_INTERVAL_S", 0.02),
    "relay_max_backoff_s": ("FACTA_RELAY_MAX_BACKOFF_S", 5.0),
    "runner_poll_interval_s": ("FACTA_RUNNER_POLL_INTERVAL_S", 0.05),
    "lock_poll_interval_s": ("FACTA_LOCK_POLL_INTERVAL_S", 0.5),
    "progress_interval_s": ("FACTA_PROGRESS_INTERVAL_S", 5.0),
    "key_cache_s": ("FACTA_KEY_CACHE_S", 2.0),
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.upper().startswith("FACTA_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_fields_their_variables_and_defaults(clean_env: pytest.MonkeyPatch) -> None:
    current = settings()
    assert {name: getattr(current, name) for name in Settings.model_fields} == {
        name: default for name, (_, default) in DEFAULTS.items()
    }
    for name in Settings.model_fields:
        assert not re.search(r"(timeout|interval|backoff)$", name), f"{name} names no unit"


def test_the_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration"):readme.index("## Benchmarks")]
    listed = set(re.findall(r"^\| `(FACTA_[A-Z0-9_]+)` \|", section, flags=re.M))
    assert {variable for variable, _ in DEFAULTS.values()} <= listed


def test_the_library_classes_take_their_defaults_from_the_settings(clean_env: pytest.MonkeyPatch) -> None:
    relay, runner, kafka = RelayConfig(bootstrap="k:9092"), RunnerConfig(), KafkaSettings(bootstrap="k:9092")
    assert (relay.topic_prefix, relay.partitions, relay.batch_size, relay.poll_interval, relay.max_backoff,
            relay.request_timeout_ms, relay.lock_poll_interval) == ("facta", 3, 1000, 0.02, 5.0, 15_000, 0.5)
    assert (runner.batch_size, runner.poll_interval, runner.lock_poll_interval) == (1000, 0.05, 0.5)
    assert (kafka.topic_prefix, kafka.group_prefix, kafka.session_timeout_ms, kafka.heartbeat_interval_ms,
            kafka.request_timeout_ms, kafka.give_up_after) == ("facta", "facta.projection.", 10_000, 1_000, 15_000, 30.0)

    clean_env.setenv("FACTA_BATCH_SIZE", "250")
    clean_env.setenv("FACTA_TOPIC_PREFIX", "shop")
    clean_env.setenv("FACTA_KAFKA_REQUEST_TIMEOUT_MS", "20000")
    clean_env.setenv("FACTA_KAFKA_TIMEOUT_S", "2.5")
    clean_env.setenv("FACTA_LOCK_POLL_INTERVAL_S", "0.25")
    relay, runner, kafka = RelayConfig(bootstrap="k:9092"), RunnerConfig(), KafkaSettings(bootstrap="k:9092")
    assert (relay.batch_size, relay.topic_prefix, relay.request_timeout_ms, relay.lock_poll_interval) == (
        250, "shop", 20_000, 0.25)
    assert (runner.batch_size, runner.lock_poll_interval) == (250, 0.25)
    assert (kafka.topic_prefix, kafka.request_timeout_ms, kafka.give_up_after) == ("shop", 20_000, 2.5)
    # Given values win over the settings.
    assert RelayConfig(bootstrap="k:9092", batch_size=7).batch_size == 7


def test_the_environment_is_read_once_per_set_of_values(clean_env: pytest.MonkeyPatch) -> None:
    first = settings()
    assert settings() is first
    clean_env.setenv("FACTA_BATCH_SIZE", "9")
    assert settings() is not first and settings().batch_size == 9
    clean_env.delenv("FACTA_BATCH_SIZE")
    assert settings().batch_size == 1000


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FACTA_BATCH_SIZE", "0", "invalid FACTA_BATCH_SIZE='0': input should be greater than or equal to 1"),
    ("FACTA_BATCH_SIZE", "ten", "invalid FACTA_BATCH_SIZE='ten': input should be a valid integer, unable to parse"
                                " string as an integer"),
    ("FACTA_BATCH_SIZE", "100001", "invalid FACTA_BATCH_SIZE='100001': input should be less than or equal to 100000"),
    ("FACTA_KAFKA_TIMEOUT_S", "nan", "invalid FACTA_KAFKA_TIMEOUT_S='nan': input should be a finite number"),
    ("FACTA_KAFKA_REQUEST_TIMEOUT_MS", "15.5", "invalid FACTA_KAFKA_REQUEST_TIMEOUT_MS='15.5': input should be a"
                                                " valid integer, unable to parse string as an integer"),
    ("FACTA_RELAY_POLL_INTERVAL_S", "0", "invalid FACTA_RELAY_POLL_INTERVAL_S='0': input should be greater than 0"),
    ("FACTA_TOPIC_PREFIX", "a b", "invalid FACTA_TOPIC_PREFIX='a b': expected 1 to 247 ASCII letters, digits, '.', '_'"
                                  " and '-'"),
    ("FACTA_TOPIC_PREFIX", "", "invalid FACTA_TOPIC_PREFIX='': expected 1 to 247 ASCII letters, digits, '.', '_' and"
                               " '-'"),
])
def test_a_bad_value_is_one_line_naming_the_variable_and_the_value(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(InvalidSetting) as info:
        settings()
    assert str(info.value) == message
    assert (info.value.variable, info.value.value) == (variable, value)
    assert isinstance(info.value, InvalidValue) and isinstance(info.value, FactaError)
    # Where the library reads a default, the same line.
    with pytest.raises(InvalidSetting, match=re.escape(message)):
        RunnerConfig()


def test_the_variables_users_set_today_keep_working(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert database_url_from_env() == DEFAULT_DATABASE_URL
    clean_env.setenv("FACTA_DATABASE_URL", "sqlite+aiosqlite:///x.db")
    assert database_url_from_env() == "sqlite+aiosqlite:///x.db"
    clean_env.setenv("FACTA_DATABASE_URL", "")  # set but empty: the default, as before
    assert database_url_from_env() == DEFAULT_DATABASE_URL

    default_locks = lock_dir()
    clean_env.setenv("FACTA_LOCK_DIR", f"  {tmp_path}  ")
    assert lock_dir() == tmp_path
    clean_env.setenv("FACTA_LOCK_DIR", " ")
    assert lock_dir() == default_locks

    from facta.projections.catalog import load_catalog

    clean_env.setenv("FACTA_PROJECTIONS", "no_such_module_for_facta_settings")
    with pytest.raises(FactaError, match="cannot import projections module 'no_such_module_for_facta_settings'"):
        load_catalog()
    clean_env.setenv("FACTA_PROJECTIONS", "")
    assert load_catalog().names() == ["account_balances", "ride_board", "driver_earnings", "billing", "billing_process"]

    clean_env.setenv("FACTA_KAFKA_BOOTSTRAP", "")
    clean_env.setenv("FACTA_CACHE_DIR", "/tmp/facta-cache")
    clean_env.setenv("FACTA_AGGREGATES", "shop.domain")
    clean_env.setenv("FACTA_TEST_DATABASE_URL", "postgresql://h/db")
    current = settings()
    assert (current.kafka_bootstrap, current.cache_dir, current.aggregates, current.test_database_url) == (
        "", "/tmp/facta-cache", "shop.domain", "postgresql://h/db")
