"""eventsourcing 9.5's side of bench/versus.py: its aggregate, event and applications.

Only eventsourcing is imported here, so the worker process that runs the eventsourcing
contender carries no facta module; the topics stored in its databases name this module
(``_es_models:...``), which every process that reads them imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, DomainEvent, event

__all__ = ["ESAccount", "ESApp", "ESSnapshottingApp", "ESTelemetry", "es_env"]

APP_NAME = "bench"


class ESAccount(Aggregate):
    """The counterpart of facta's reference ``Account`` for the load rows: opened, then
    deposits (balance in minor units)."""

    @event("Opened")
    def __init__(self, owner: str, currency: str) -> None:
        self.owner = owner
        self.currency = currency
        self.balance = 0
        self.status = "open"

    @event("Deposited")
    def deposit(self, amount: int, reference: str | None = None) -> None:
        self.balance += amount


@dataclass(frozen=True)
class ESTelemetry(DomainEvent):
    """The benchmark telemetry point (``_events.Telemetry``) as an eventsourcing event."""

    ride_id: str
    lat: float
    lon: float
    speed_kmh: float
    distance_m: int


class ESApp(Application[Any]):
    """An application without snapshotting (its repository reads every event)."""

    name = APP_NAME


class ESSnapshottingApp(Application[Any]):
    """The same application with snapshotting enabled (``take_snapshot``; loads start at
    the newest snapshot)."""

    name = APP_NAME
    is_snapshotting_enabled = True


def es_env(backend: str, *, path: str = "", dsn: str = "") -> dict[str, str]:
    """eventsourcing's persistence settings for a SQLite file or a PostgreSQL DSN."""
    if backend == "sqlite":
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "60"}
    from urllib.parse import urlsplit

    u = urlsplit(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": u.path.lstrip("/"),
        "POSTGRES_HOST": u.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(u.port or 5432),
        "POSTGRES_USER": u.username or "postgres",
        "POSTGRES_PASSWORD": u.password or "",
    }
