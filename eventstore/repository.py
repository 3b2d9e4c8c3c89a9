"""Loading and saving aggregates through the store, with snapshots for long streams."""

from __future__ import annotations

from typing import TypeVar

from facta.domain import Aggregate

from .errors import StoreError, StreamNotFound, StreamTypeMismatch
from .records import AppendResult, Snapshot, StreamAppend
from .store import EventStore

__all__ = ["Repository", "VersionNotFound"]

A = TypeVar("A", bound=Aggregate)


class VersionNotFound(StoreError):
    def __init__(self, stream_id: str, requested: int, actual: int) -> None:
        self.stream_id, self.requested, self.actual = stream_id, requested, actual
        super().__init__(f"stream {stream_id!r} has {actual} event{'' if actual == 1 else 's'}; there is no version {requested}")


def state_schema(cls: type[Aggregate]) -> str:
    """What a snapshot's state must have been written by to be usable for ``cls``."""
    return f"{cls.stream_type}.state/v{cls.state_version}"


class Repository:
    """Loads aggregates from their streams and saves their pending events.

    With ``snapshot_every=N`` a save that carries an aggregate across a multiple of N
    versions also stores a snapshot of its state, in the same transaction as the events;
    loads start from the newest usable snapshot and read only the events after it.
    """

    def __init__(self, store: EventStore, *, snapshot_every: int | None = 100) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1 or None, got {snapshot_every!r}")
        self.store = store
        self.snapshot_every = snapshot_every

    async def get(self, cls: type[A], aggregate_id: str, *, at_version: int | None = None) -> A:
        """The aggregate as it is now, or as it was at ``at_version``."""
        if at_version is not None and at_version < 1:
            raise VersionNotFound(aggregate_id, at_version, await self.store.stream_version(aggregate_id))
        snapshot = await self.store.latest_snapshot(aggregate_id, max_version=at_version)
        state, version = None, 0
        if snapshot is not None and snapshot.state_schema == state_schema(cls):
            if snapshot.stream_type != cls.stream_type:
                raise StreamTypeMismatch(aggregate_id, cls.stream_type, snapshot.stream_type)
            state, version = cls.State.model_validate_json(snapshot.state), snapshot.version
        records = await self.store.read_stream(aggregate_id, from_version=version + 1, to_version=at_version)
        if records and records[0].stream_type != cls.stream_type:
            raise StreamTypeMismatch(aggregate_id, cls.stream_type, records[0].stream_type)
        if not records and version == 0:
            raise StreamNotFound(aggregate_id)
        loaded = records[-1].version if records else version
        if at_version is not None and loaded < at_version:
            raise VersionNotFound(aggregate_id, at_version, await self.store.stream_version(aggregate_id))
        return cls.rehydrate(aggregate_id, (r.event for r in records), state=state, version=version)

    async def save(
        self,
        *aggregates: Aggregate,
        actor: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> list[AppendResult]:
        """Append every aggregate's pending events in one transaction (all or nothing)."""
        dirty = [a for a in aggregates if a.pending_events]
        if not dirty:
            return []
        appends = [StreamAppend(a.id, a.stream_type, a.pending_events, a.saved_version) for a in dirty]
        snaps = [self._snapshot(a) for a in dirty if self._due(a)]
        results = await self.store.append_many(
            appends, actor=actor, correlation_id=correlation_id, causation_id=causation_id, snapshots=snaps
        )
        for aggregate in dirty:
            aggregate.mark_saved()
        return results

    async def snapshot(self, aggregate: Aggregate) -> None:
        """Store a snapshot of a saved aggregate now."""
        if aggregate.pending_events:
            raise StoreError(f"{aggregate.stream_type} {aggregate.id!r} has unsaved events: save it first")
        await self.store.save_snapshot(self._snapshot(aggregate))

    def _due(self, aggregate: Aggregate) -> bool:
        n = self.snapshot_every
        return n is not None and aggregate.saved_version // n < aggregate.version // n

    @staticmethod
    def _snapshot(aggregate: Aggregate) -> Snapshot:
        return Snapshot(
            stream_id=aggregate.id,
            stream_type=aggregate.stream_type,
            version=aggregate.version,
            state=aggregate.state.model_dump_json(),
            state_schema=state_schema(type(aggregate)),
        )
