"""Where the relays of a store are: their names, checkpoints, lag and skips, read from the
store alone (no Kafka connection). `facta relay status` and `facta relay skip` use it;
so can any Python program that watches a relay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from facta.display import quoted

from .kafka_codec import utc
from .relay import Relay, RelayConfig, RelayError, RelayStatus, _checkpoint_row
from .schema import relay_checkpoints
from .store import EventStore

__all__ = ["relay_checkpoint", "relay_names", "relay_status", "relays_at"]

# A Relay object that only reads its status or records a skip never connects to Kafka.
_NO_KAFKA = "unused:9092"


async def relay_names(store: EventStore) -> list[str]:
    """The names of the relays that have run on ``store`` (each has a checkpoint), sorted."""
    return [name for name, _, _ in await relays_at(store)]


async def relay_checkpoint(store: EventStore, name: str = "default") -> int:
    """The store position relay ``name`` has published up to (0: it never ran): one
    indexed read of its checkpoint row, no count of the log."""
    row = await store.database.read(_checkpoint_row, name)
    return 0 if row is None else int(row[0])


async def relays_at(store: EventStore) -> list[tuple[str, int, datetime | None]]:
    """Every relay that has run on ``store``: its name, checkpoint (the last position
    published) and when that was written (aware UTC), by name; one read of the
    checkpoint rows, no count of the log (``facta status``)."""
    rows = await store.database.read(_relay_rows)
    return [(str(r[0]), int(r[1]), None if r[2] is None else utc(r[2])) for r in rows]


def _relay_rows(conn: Connection) -> list[Any]:
    c = relay_checkpoints.c
    return list(conn.execute(select(c.name, c.position, c.updated_at).order_by(c.name)))


async def relay_status(store: EventStore, name: str = "default", *, or_default: bool = False,
                       ) -> tuple[Relay, RelayStatus]:
    """The :class:`~facta.eventstore.relay.Relay` called ``name`` on ``store`` (to record a
    skip with) and its :class:`~facta.eventstore.relay.RelayStatus`: checkpoint and head
    (store positions), lag (events after the checkpoint), ``updated_at`` (aware UTC) and
    the recorded skips. Reads only; connects to no Kafka.

    Raises :class:`~facta.eventstore.relay.RelayError`, one line naming the relays that
    have run, when no relay called ``name`` has run on this store; with ``or_default``,
    the ``"default"`` relay is returned even before it first ran (its checkpoint 0, its
    lag the whole log, ``updated_at`` None)."""
    relay = Relay(store, RelayConfig(bootstrap=_NO_KAFKA, name=name))
    status = await relay.status()
    if status.updated_at is None and not (or_default and name == "default"):
        known = ", ".join(quoted(n) for n in await relay_names(store)) or "none"
        raise RelayError(f"no relay named {quoted(name)} has run on this store (relays: {known})")
    return relay, status

