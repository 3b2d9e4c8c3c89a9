"""Loading and saving aggregates through the store, with snapshots for long streams.

A snapshot is a cache: a load uses one only if it agrees with today's code and with the
stream, and otherwise loads from the events (see :meth:`Repository.get`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import ValidationError

from facta.domain import Aggregate, AggregateState
from facta.errors import InvalidValue, StoreError, StreamNotFound, StreamTypeMismatch, VersionNotFound

from .records import AppendResult, Snapshot, StreamAppend
from .store import EventStore
from .validation import (
    check_aggregate_class,
    check_aggregates,
    check_instance_arg,
    check_int_arg,
    check_version,
    encode_state,
)

__all__ = ["Repository", "VersionNotFound"]

log = logging.getLogger("facta.repository")

A = TypeVar("A", bound=Aggregate)


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
        """Raises :class:`InvalidValue` for a ``store`` that is not an EventStore or a
        ``snapshot_every`` that is not an int (a bool or float) or None, or is below 1."""
        check_instance_arg("store", store, EventStore, "an EventStore")
        check_int_arg("snapshot_every", snapshot_every, optional=True)
        if snapshot_every is not None and snapshot_every < 1:
            raise InvalidValue(f"snapshot_every must be >= 1 or None, got {snapshot_every!r}")
        self.store = store
        self.snapshot_every = snapshot_every

    async def get(self, cls: type[A], aggregate_id: str, *, at_version: int | None = None) -> A:
        """The aggregate as it is now, or as it was at ``at_version``.

        Starts from the newest snapshot at or below that version when the snapshot is
        usable: written for today's ``state_schema`` (stream type and ``state_version``),
        of the stream's type, at a version the stream has, and valid against today's
        ``State`` (strictly, with exactly today's fields). Any other snapshot is passed
        over and the aggregate is loaded from its events; one that claims today's schema
        but does not fit is logged as a warning on ``facta.repository`` naming the
        stream, the snapshot's version and the reason.

        Raises :class:`StreamNotFound`, :class:`StreamTypeMismatch` (the stream holds
        another aggregate type) and :class:`VersionNotFound` (``at_version`` < 1 or past
        the end), and :class:`InvalidValue` before any I/O for a ``cls`` that is not a
        declared Aggregate class or an ``at_version`` that is not an int."""
        check_aggregate_class("cls", cls)
        check_version("at_version", at_version, optional=True)
        if at_version is not None and at_version < 1:
            raise VersionNotFound(aggregate_id, at_version, await self.store.stream_version(aggregate_id))
        # One read: the newest snapshot and the events from its own version (from 1 when
        # the snapshot is for another state schema). The snapshot's own event shows that
        # the stream has that version (a snapshot ahead of the stream is unusable) and of
        # which type the stream is.
        schema = state_schema(cls)
        snapshot, records = await self.store.read_from_snapshot(aggregate_id, state_schema=schema, to_version=at_version)
        state, version = None, 0
        if snapshot is not None:
            # Its personal data opened, or erased: a snapshot stores it sealed, as events do.
            snapshot = await self.store.shredder.reveal_snapshot(snapshot, cls.State)
            state = _snapshot_state(cls, snapshot)
            if state is None:
                if snapshot.state_schema == schema and snapshot.version > 1:  # read from the snapshot on
                    records = await self.store.read_stream(aggregate_id, to_version=at_version)
            elif not records or records[0].version != snapshot.version:
                head = await self.store.stream_version(aggregate_id)
                _passed_over(snapshot, f"the stream has no version {snapshot.version} (its last version is {head})")
                state = None
                records = await self.store.read_stream(aggregate_id, to_version=at_version)
            else:
                version = snapshot.version
                records = records[1:] if records[0].stream_type == cls.stream_type else records
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
        """Append every aggregate's pending events in one transaction (all or nothing).
        Raises :class:`InvalidValue` before any I/O for an argument that is not an Aggregate."""
        check_aggregates("aggregates", aggregates)
        dirty = [a for a in aggregates if a.pending_events]
        if not dirty:
            return []
        appends = [StreamAppend(a.id, a.stream_type, a.pending_events, a.saved_version) for a in dirty]
        due = [a for a in dirty if self._due(a)]
        snaps = await self._sealed([self._snapshot(a) for a in due], due)
        results = await self.store.append_many(
            appends, actor=actor, correlation_id=correlation_id, causation_id=causation_id, snapshots=snaps
        )
        for aggregate in dirty:
            aggregate.mark_saved()
        return results

    async def snapshot(self, aggregate: Aggregate) -> None:
        """Store a snapshot of a saved aggregate now."""
        check_aggregates("aggregate", [aggregate])
        if aggregate.pending_events:
            raise StoreError(f"{aggregate.stream_type} {aggregate.id!r} has unsaved events: save it first")
        (snap,) = await self._sealed([self._snapshot(aggregate)], [aggregate])
        await self.store.save_snapshot(snap)

    async def _sealed(self, snaps: list[Snapshot], aggregates: list[Aggregate]) -> list[Snapshot]:
        """``snaps`` with the fields their State marks ``PersonalData`` sealed: a snapshot in
        plaintext would outlive a forget (see :mod:`facta.eventstore.personal_data`)."""
        if not snaps:
            return snaps
        return await self.store.shredder.seal_snapshots(snaps, [type(a).State for a in aggregates])

    def _due(self, aggregate: Aggregate) -> bool:
        n = self.snapshot_every
        return n is not None and aggregate.saved_version // n < aggregate.version // n

    @staticmethod
    def _snapshot(aggregate: Aggregate) -> Snapshot:
        return Snapshot(
            stream_id=aggregate.id,
            stream_type=aggregate.stream_type,
            version=aggregate.version,
            state=encode_state(aggregate.state, f"{aggregate.stream_type} {aggregate.id!r} state"),
            state_schema=state_schema(type(aggregate)),
        )


def _snapshot_state(cls: type[Aggregate], snapshot: Snapshot) -> AggregateState | None:
    """The snapshot's state if it fits today's ``cls``; None (logged) if not."""
    if snapshot.state_schema != state_schema(cls):
        # Written for another State (state_version bumped, stream type renamed): expected
        # after a change, so not a warning.
        log.debug("stream %r: snapshot at version %d is for %s, not %s: loading from events",
                  snapshot.stream_id, snapshot.version, snapshot.state_schema, state_schema(cls))
        return None
    if snapshot.stream_type != cls.stream_type:
        _passed_over(snapshot, f"it was stored for stream type {snapshot.stream_type!r}, not {cls.stream_type!r}")
        return None
    try:
        data: Any = json.loads(snapshot.state)
    except ValueError as exc:
        _passed_over(snapshot, f"its state is not JSON ({exc})")
        return None
    if not isinstance(data, dict):
        _passed_over(snapshot, f"its state is a JSON {type(data).__name__}, not an object")
        return None
    try:
        state = cls.State.model_validate_json(snapshot.state, strict=True)
    except ValidationError as exc:
        _passed_over(snapshot, f"it does not validate against today's {cls.__name__}.State: {_first_error(exc)}")
        return None
    expected = set(state.model_dump(mode="json"))
    if set(data) != expected:
        missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
        why = "; ".join(part for part in (
            f"it lacks field(s) {', '.join(missing)} (added since? their defaults may not be what the events say)"
            if missing else "",
            f"it has field(s) {', '.join(extra)} that {cls.__name__}.State no longer has" if extra else "",
        ) if part)
        _passed_over(snapshot, why)
        return None
    return state


def _passed_over(snapshot: Snapshot, reason: str) -> None:
    log.warning(
        "stream %r: snapshot at version %d (%s) is not usable and is passed over, loading from events: %s;"
        " bump state_version when State changes shape",
        snapshot.stream_id, snapshot.version, snapshot.state_schema, reason,
    )


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "state"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', '')}{more}"
