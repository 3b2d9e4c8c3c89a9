"""facta's configuration: one typed object, read from the ``FACTA_*`` environment variables.

Every field is the environment variable ``FACTA_<FIELD>`` (``batch_size`` is
``FACTA_BATCH_SIZE``) over the default written here, the one place it is written: the
library's settings classes (``RelayConfig``, ``RunnerConfig``, ``KafkaSettings``) and
``replay()`` take their defaults from :func:`settings`. Durations carry their unit in the
name (``_s`` seconds, ``_ms`` milliseconds).

:func:`settings` reads the environment once and keeps the result until a ``FACTA_*``
variable changes. A value facta cannot use raises :class:`~facta.errors.InvalidSetting`,
one line naming the variable and the value::

    invalid FACTA_BATCH_SIZE='0': input should be greater than or equal to 1

Variables given but empty are kept as ``""``: ``FACTA_DATABASE_URL=`` and
``FACTA_LOCK_DIR=`` mean the default to the library, as they always did, and
``FACTA_KAFKA_BOOTSTRAP=`` means no Kafka.

This module imports nothing of facta but :mod:`facta.errors`, so every layer may use it.
"""

from __future__ import annotations

import functools
import os

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from facta.errors import InvalidSetting

__all__ = ["ENV_PREFIX", "Settings", "settings"]

ENV_PREFIX = "FACTA_"

_DAY_S = 86_400.0
_HOUR_MS = 3_600_000


class Settings(BaseSettings):
    """facta's settings; each field is ``FACTA_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # -- where things are (read by the library where it needs them, and by the CLI) -------------
    database_url: str | None = None
    """The store's URL; unset or empty: ``sqlite+aiosqlite:///./facta.db``."""
    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers ``host:port[,host:port]``; unset or empty: no Kafka."""
    projections: str | None = None
    """Modules with the user's own projections, comma-separated."""
    aggregates: str | None = None
    """Modules with the user's own aggregates, comma-separated."""
    key_store: str | None = None
    """The key store of personal data, ``module:factory`` (the factory takes the store's
    ``Database`` and returns a ``KeyStore``); unset or empty: ``SqlKeyStore``, the table
    ``facta_subject_keys`` of the store's database."""
    cache_dir: str | None = None
    """Where ``facta dev broker`` keeps the Apache Kafka it fetched (default ``~/.cache/facta``)."""
    lock_dir: str | None = None
    """Where SQLite stores keep their workers' lock files (default ``<temp>/facta-locks``)."""
    test_database_url: str | None = None
    """``facta.testing``'s ``facta_store`` fixture: a PostgreSQL server to run tests on too."""
    signing_key_file: str | None = None
    """The PEM file of the Ed25519 private key that signs tree heads (``facta audit seal``)
    and whose public half checks them (``facta audit verify``); ``facta audit keygen`` writes one."""

    # -- the defaults of the relay, the projection runners and replays -------------------------
    topic_prefix: str = Field("facta", pattern=r"^[A-Za-z0-9._-]{1,247}$")
    """The relay's topics are ``<topic_prefix>.<stream type>``; runners and replays read them."""
    group_prefix: str = Field("facta.projection.", max_length=249)
    """A projection consumes Kafka in the consumer group ``<group_prefix><name>``."""
    batch_size: int = Field(1000, ge=1, le=100_000)
    """Events per batch: a relay's page, a runner's and a replay's batch."""
    relay_partitions: int = Field(3, ge=1, le=10_000)
    """Partitions of each topic the relay creates."""
    kafka_request_timeout_ms: int = Field(15_000, ge=1_000, le=_HOUR_MS)
    """Bound on each Kafka request of the relay and the runners."""
    kafka_session_timeout_ms: int = Field(10_000, ge=1_000, le=_HOUR_MS)
    """A runner's consumer-group session timeout."""
    kafka_heartbeat_interval_ms: int = Field(1_000, ge=1, le=_HOUR_MS)
    """A runner's consumer-group heartbeat interval."""
    kafka_timeout_s: float = Field(30.0, ge=0.1, le=_DAY_S, allow_inf_nan=False)
    """How long Kafka may stay unanswered before a ``once`` run or a replay stops with an error."""
    relay_poll_interval_s: float = Field(0.02, gt=0, le=_DAY_S, allow_inf_nan=False)
    """How often an idle relay looks at the log."""
    relay_max_backoff_s: float = Field(5.0, gt=0, le=_DAY_S, allow_inf_nan=False)
    """The longest pause between a relay's retries."""
    runner_poll_interval_s: float = Field(0.05, gt=0, le=_DAY_S, allow_inf_nan=False)
    """How often an idle runner looks at the log."""
    lock_poll_interval_s: float = Field(0.5, gt=0, le=_DAY_S, allow_inf_nan=False)
    progress_interval_s: float = Field(5.0, gt=0, le=_DAY_S, allow_inf_nan=False)
    """How often a long command (``relay run --once``, ``projections run --once``, ``replay``,
    ``demo``, ``audit verify``) logs a progress line on a stderr that is not a terminal."""
    key_cache_s: float = Field(2.0, ge=0, le=3600, allow_inf_nan=False)
    """How long an appending store keeps a subject's data key for sealing (0: it asks the key
    store on every append); ``forget_subject`` waits this long after destroying a key, so no
    process seals with it once the forget returns. Reads never use it."""
    """How often a waiting relay or runner tries to take over the active one's lock."""


#: What a field takes, where pydantic's own message would show a pattern.
_EXPECTED = {"topic_prefix": "expected 1 to 247 ASCII letters, digits, '.', '_' and '-'"}


def settings() -> Settings:
    """The settings from the environment as it is now; read once per set of ``FACTA_*``
    values. Raises :class:`~facta.errors.InvalidSetting` for a value facta cannot use."""
    return _load(tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX))))


@functools.lru_cache(maxsize=8)
def _load(environment: tuple[tuple[str, str], ...]) -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        variable = ENV_PREFIX + field.upper()
        value = dict((k.upper(), v) for k, v in environment).get(variable, first.get("input"))
        message = str(first["msg"])
        expected = _EXPECTED.get(field) or message[:1].lower() + message[1:]
        raise InvalidSetting(variable, value, expected.replace("\n", " ")) from None
