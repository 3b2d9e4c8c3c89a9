"""Log blocks: which parts of the log can hold events recorded in a time window.

recorded_at does not follow position order (concurrent appends interleave, and a writer
whose clock stepped back records an earlier time at a later position, by any amount), so
a time window's events can be anywhere in the log. ``facta_log_blocks`` (revision 0006)
summarises the log per block of :data:`BLOCK` positions: block ``b`` holds positions
``b * BLOCK + 1`` to ``(b + 1) * BLOCK``, and its row the smallest and largest
recorded_at of its events and how many there are. A block whose [min, max] misses a
window holds none of its events and is skipped; every other position (blocks that
intersect the window, blocks without a summary, the unsettled tail) is read and
filtered on each event's own recorded_at. So a result never depends on which summaries
exist: they only make a read shorter.

Written once, never changed: a row is written only for a block wholly at or below the
settled horizon (:meth:`EventStore.head_position`: every position there is committed or
will never exist), and the events are never changed, so its values are final. Blocks
with no events at all (positions of rolled-back appends) get no row and are read (cheaply:
they are empty).

Who writes them: the reader of a time window that needs them (:func:`refresh`), never
an append. It computes the missing settled blocks above the highest summarised one
in a read transaction, then inserts them in a short write transaction that ignores rows
already there (two readers may race: they write the same values). The first time-window
query on a store reads the whole settled log once to do so (about 60 ms per 100,000
events on PostgreSQL); later ones only the blocks settled since. A database user that
may not write (or a busy SQLite file) leaves the summaries as they are: that store
object stops trying and its queries read what is not summarised, exact but longer. What a
store object knows of the summaries is its ``block_summaries`` (:class:`Summaries`).

BLOCK = 1024: a window whose bounds fall inside a block reads up to two blocks it need
not (about 2,000 positions, a few milliseconds), and a log of a million events has
about 1,000 summary rows, read in well under a millisecond through their primary key.
Smaller blocks shorten the first cost and lengthen the second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, or_, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from facta.errors import StoreError

from .schema import UTCDateTime, log_blocks

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["BLOCK", "Ranges", "Summaries", "refresh", "window_ranges"]

BLOCK = 1024

log = logging.getLogger(__name__)

# Inclusive position ranges (first, last), ascending, none empty.
Ranges = list[tuple[int, int]]


@dataclass(slots=True)
class Summaries:
    """What one store object knows of the summaries: the blocks below ``known`` are
    summarised (or known empty); ``writable`` False once the database refused to write
    them (that store object then stops trying)."""

    known: int = 0
    writable: bool = True


def _summarise_query(block: int) -> Any:
    """Per block of ``block`` positions between :low and :high: min and max recorded_at, count."""
    return text(
        f"SELECT (position - 1) / {int(block)} AS block, min(recorded_at) AS min_recorded_at,"
        f" max(recorded_at) AS max_recorded_at, count(*) AS events FROM facta_events"
        f" WHERE position > :low AND position <= :high GROUP BY (position - 1) / {int(block)}"
    ).columns(min_recorded_at=UTCDateTime(), max_recorded_at=UTCDateTime())


async def refresh(store: EventStore) -> None:
    """Write the summaries of the settled blocks above the highest summarised one.

    Never raises for a database that refuses the write (a read-only user, a busy SQLite
    file): it logs it, and this store object does not try again."""
    state = store.block_summaries
    if not state.writable:
        return
    settled = await store.head_position() // BLOCK  # blocks 0 .. settled - 1 are settled
    if settled <= state.known:
        return
    rows = await store.database.read(_missing_blocks, settled)
    if rows:
        try:
            await store.database.write(_insert_blocks, rows)
        except (DBAPIError, StoreError) as exc:
            state.writable = False
            log.info("not writing log block summaries (time windows read more of the log): %s",
                     str(exc).splitlines()[0])
            return
    state.known = settled


def _missing_blocks(conn: Connection, settled: int) -> list[dict[str, Any]]:
    top = conn.execute(select(func.max(log_blocks.c.block))).scalar()
    start = 0 if top is None else int(top) + 1
    if start >= settled:
        return []
    found = conn.execute(_summarise_query(BLOCK), {"low": start * BLOCK, "high": settled * BLOCK})
    return [dict(row._mapping) for row in found]


def _insert_blocks(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name == "postgresql":
        # Imported here: the PostgreSQL dialect is 2 MiB that SQLite stores never need.
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(log_blocks).on_conflict_do_nothing(), rows)
    else:
        conn.execute(sqlite_insert(log_blocks).on_conflict_do_nothing(), rows)


async def window_ranges(
    store: EventStore, since: datetime | None, until: datetime | None, low: int, high: int
) -> Ranges:
    """The positions strictly between ``low`` and ``high`` that can hold an event
    recorded in [since, until] (either bound may be None), as ascending inclusive
    ranges: all of them but the summarised blocks whose recorded times miss the window.
    Writes missing summaries first (:func:`refresh`)."""
    if low + 1 > high - 1:
        return []
    await refresh(store)
    skipped = await store.database.read(_skipped_blocks, since, until, low // BLOCK, (high - 1) // BLOCK)
    return _complement(skipped, low + 1, high - 1)


def _skipped_blocks(
    conn: Connection, since: datetime | None, until: datetime | None, first: int, last: int
) -> Sequence[int]:
    c = log_blocks.c
    misses = []
    if since is not None:
        misses.append(c.max_recorded_at < since)
    if until is not None:
        misses.append(c.min_recorded_at > until)
    if not misses:
        return []
    query = select(c.block).where(c.block >= first, c.block <= last, or_(*misses)).order_by(c.block)
    return [int(b) for b in conn.execute(query).scalars()]


def _complement(skipped: Sequence[int], first: int, last: int) -> Ranges:
    """[first, last] without the positions of the ``skipped`` blocks (ascending)."""
    out: Ranges = []
    start = first
    for block in skipped:
        begin, end = block * BLOCK + 1, (block + 1) * BLOCK
        if begin > start:
            out.append((start, min(begin - 1, last)))
        start = max(start, end + 1)
        if start > last:
            break
    if start <= last:
        out.append((start, last))
    return [(a, b) for a, b in out if a <= b]


def size(ranges: Ranges) -> int:
    """How many positions the ranges hold."""
    return sum(b - a + 1 for a, b in ranges)


def clip(ranges: Ranges, low: int, high: int) -> Ranges:
    """The ranges' positions strictly between ``low`` and ``high``."""
    return [(max(a, low + 1), min(b, high - 1)) for a, b in ranges if max(a, low + 1) <= min(b, high - 1)]


def take(ranges: Ranges, count: int, *, from_end: bool = False) -> Ranges:
    """The first ``count`` positions of the ranges (the last ones with ``from_end``),
    as ranges in the order they are walked (descending with ``from_end``)."""
    out: Ranges = []
    for a, b in reversed(ranges) if from_end else ranges:
        if count <= 0:
            break
        n = min(count, b - a + 1)
        out.append((b - n + 1, b) if from_end else (a, a + n - 1))
        count -= n
    return out
