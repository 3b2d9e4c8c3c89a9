"""The timed work of each contender in bench/versus.py, run inside that contender's worker.

Every job takes picklable arguments (database locations, sizes), does its untimed
warm-up, times its workload with ``time.perf_counter`` and returns ``Timed``: seconds,
the number of items it timed (events or loads) and a ``check`` value that the caller
compares with the other contenders' and with what the set-up wrote, so a contender that
reads, loads or writes less than the others cannot post a figure.

Imports are inside the jobs: a worker imports this module plus its own contender's
libraries (versus.py preloads them before any timing), never another contender's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

PAGE = 1000  # rows per log page, for every contender


class Timed(NamedTuple):
    seconds: float
    items: int
    check: Any


# -- rows 1 and 3: 1,000 events per transaction (bench/append.py's contenders) ------------------


def append_batch(contender: str, fresh: Any, events: int) -> Timed:
    """``events`` events in 1,000-event transactions into ``fresh`` (already migrated, or
    given eventsourcing's table); the caller counts the rows afterwards."""
    import append

    warmup, txs = append.batch_plan(events)
    if contender == "facta":
        seconds = asyncio.run(append._batch_facta(fresh, warmup, txs))
    elif contender == "eventsourcing":
        seconds = append._batch_es(fresh, warmup, txs)
    elif fresh.backend == "postgresql":
        seconds = asyncio.run(append._batch_raw_pg(fresh, warmup, txs))
    else:
        seconds = append._batch_raw_sqlite(fresh, warmup, txs)
    timed = sum(len(tx.events) for tx in txs)
    return Timed(seconds, timed, timed + len(warmup.events))


# -- rows 5 to 8: load one aggregate -------------------------------------------------------------

# How each account event changes the balance; the raw contender folds with it.
BALANCE_SIGN = {"account.deposited": 1, "account.transferred_in": 1, "account.withdrawn": -1,
                "account.transferred_out": -1}


async def facta_load(url: str, stream: str, loads: int) -> Timed:
    """``loads`` x ``Repository.get(Account, stream)`` (newest usable snapshot, then the
    events after it). Check: (version, balance, status)."""
    from facta.domain.reference import Account
    from facta.eventstore import EventStore, Repository

    store = await EventStore.open(url)
    try:
        repo = Repository(store, snapshot_every=None)
        account = await repo.get(Account, stream)  # warm-up
        t0 = time.perf_counter()
        for _ in range(loads):
            account = await repo.get(Account, stream)
        seconds = time.perf_counter() - t0
    finally:
        await store.close()
    return Timed(seconds, loads, (account.version, account.state.balance, account.state.status))


def es_load(env: dict[str, str], snapshotting: bool, aggregate_id: Any, loads: int) -> Timed:
    """``loads`` x ``app.repository.get(id)`` with eventsourcing's application (with
    snapshotting enabled: from its newest snapshot)."""
    from _es_models import ESApp, ESSnapshottingApp

    app = (ESSnapshottingApp if snapshotting else ESApp)(env=env)
    try:
        account = app.repository.get(aggregate_id)
        t0 = time.perf_counter()
        for _ in range(loads):
            account = app.repository.get(aggregate_id)
        seconds = time.perf_counter() - t0
    finally:
        app.close()
    return Timed(seconds, loads, (account.version, account.balance, account.status))


def _fold_account(state: dict[str, Any], event_type: str, data: dict[str, Any]) -> None:
    sign = BALANCE_SIGN.get(event_type)
    if sign is not None:
        state["balance"] += sign * data["amount"]
    elif event_type == "account.opened":
        state.update(owner=data["owner"], currency=data["currency"], balance=0, status="open")
    elif event_type == "account.closed":
        state["status"] = "closed"


def raw_load(backend: str, where: str, stream: str, loads: int, snapshot: bool) -> Timed:
    """The driver alone: (with ``snapshot``) the newest snapshot row's JSON state, then the
    stream's events after it in version order, each payload ``json.loads``-ed and folded
    into a dict. sqlite3 on a file, or asyncpg on a DSN."""
    import json

    loads_json = json.loads
    snap_sql = "SELECT version, state FROM facta_snapshots WHERE stream_id = ? ORDER BY version DESC LIMIT 1"
    events_sql = "SELECT version, event_type, payload FROM facta_events WHERE stream_id = ? AND version > ? ORDER BY version"

    def fold(version: int, state: dict[str, Any], rows: Any) -> tuple[int, dict[str, Any]]:
        for v, event_type, payload in rows:
            _fold_account(state, event_type, loads_json(payload))
            version = v
        return version, state

    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(where)

        def load_one() -> tuple[int, dict[str, Any]]:
            version, state = 0, {"balance": 0, "status": "new"}
            if snapshot:
                row = conn.execute(snap_sql, (stream,)).fetchone()
                if row is not None:
                    version, state = row[0], loads_json(row[1])
            return fold(version, state, conn.execute(events_sql, (stream, version)))

        try:
            result = load_one()
            t0 = time.perf_counter()
            for _ in range(loads):
                result = load_one()
            seconds = time.perf_counter() - t0
        finally:
            conn.close()
    else:
        seconds, result = asyncio.run(_raw_load_pg(where, stream, loads, snapshot, fold))
    version, state = result
    return Timed(seconds, loads, (version, state["balance"], state["status"]))


async def _raw_load_pg(dsn: str, stream: str, loads: int, snapshot: bool, fold: Any) -> tuple[float, Any]:
    import json

    import asyncpg

    conn = await asyncpg.connect(dsn)
    snap = await conn.prepare(
        "SELECT version, state::text FROM facta_snapshots WHERE stream_id = $1 ORDER BY version DESC LIMIT 1")
    events = await conn.prepare(
        "SELECT version, event_type, payload::text FROM facta_events WHERE stream_id = $1 AND version > $2"
        " ORDER BY version")

    async def load_one() -> Any:
        version, state = 0, {"balance": 0, "status": "new"}
        if snapshot:
            row = await snap.fetchrow(stream)
            if row is not None:
                version, state = row[0], json.loads(row[1])
        return fold(version, state, await events.fetch(stream, version))

    try:
        result = await load_one()
        t0 = time.perf_counter()
        for _ in range(loads):
            result = await load_one()
        return time.perf_counter() - t0, result
    finally:
        await conn.close()


# -- rows 9 and 10: read and decode the whole log ------------------------------------------------


async def facta_log(url: str) -> Timed:
    """``EventStore.iter_log`` in pages of 1,000, every event decoded (``record.event``).
    Check: (events, sum of distance_m)."""
    from _events import BENCH_REGISTRY

    from facta.eventstore import EventStore

    store = await EventStore.open(url, registry=BENCH_REGISTRY)
    try:
        async for record in store.iter_log(page_size=PAGE, until=PAGE):  # warm-up: one page
            record.event  # noqa: B018
        count = total = 0
        t0 = time.perf_counter()
        async for record in store.iter_log(page_size=PAGE):
            total += record.event.distance_m  # type: ignore[attr-defined]
            count += 1
        seconds = time.perf_counter() - t0
    finally:
        await store.close()
    return Timed(seconds, count, (count, total))


def es_log(env: dict[str, str]) -> Timed:
    """eventsourcing: ``recorder.select_notifications`` pages of 1,000 from the start, each
    notification mapped to its domain event by the application's mapper."""
    from _es_models import ESApp

    app = ESApp(env=env)
    try:
        recorder, to_event = app.recorder, app.mapper.to_domain_event
        for n in recorder.select_notifications(1, PAGE):  # warm-up: one page
            to_event(n)
        count = total = 0
        start = 1
        t0 = time.perf_counter()
        while True:
            page = recorder.select_notifications(start, PAGE)
            for n in page:
                total += to_event(n).distance_m  # type: ignore[attr-defined]
            count += len(page)
            if len(page) < PAGE:
                break
            start = page[-1].id + 1
        seconds = time.perf_counter() - t0
    finally:
        app.close()
    return Timed(seconds, count, (count, total))


LOG_COLUMNS = ("position, event_id, stream_id, stream_type, version, event_type, schema_version, {payload},"
               " occurred_at, recorded_at, actor, correlation_id, causation_id")


def raw_log(backend: str, where: str) -> Timed:
    """The driver alone: facta's log columns in position order, pages of 1,000 by keyset
    (``position > last``), each payload ``json.loads``-ed."""
    import json

    loads_json = json.loads
    if backend != "sqlite":
        return asyncio.run(_raw_log_pg(where))
    import sqlite3

    conn = sqlite3.connect(where)
    sql = f"SELECT {LOG_COLUMNS.format(payload='payload')} FROM facta_events WHERE position > ? ORDER BY position LIMIT ?"

    def read(after: int, limit: int) -> tuple[int, int, int]:
        count = total = 0
        while True:
            rows = conn.execute(sql, (after, min(PAGE, limit - count))).fetchall()
            for row in rows:
                total += loads_json(row[7])["distance_m"]
            count += len(rows)
            if len(rows) < PAGE or count >= limit:
                return count, total, after
            after = rows[-1][0]

    try:
        read(0, PAGE)  # warm-up: one page
        t0 = time.perf_counter()
        count, total, _ = read(0, 2**62)
        seconds = time.perf_counter() - t0
    finally:
        conn.close()
    return Timed(seconds, count, (count, total))


async def _raw_log_pg(dsn: str) -> Timed:
    import json

    import asyncpg

    loads_json = json.loads
    conn = await asyncpg.connect(dsn)
    try:
        page = await conn.prepare(
            f"SELECT {LOG_COLUMNS.format(payload='payload::text')} FROM facta_events WHERE position > $1"
            " ORDER BY position LIMIT $2")
        await page.fetch(0, PAGE)  # warm-up
        count = total = after = 0
        t0 = time.perf_counter()
        while True:
            rows = await page.fetch(after, PAGE)
            for row in rows:
                total += loads_json(row[7])["distance_m"]
            count += len(rows)
            if len(rows) < PAGE:
                break
            after = rows[-1][0]
        seconds = time.perf_counter() - t0
    finally:
        await conn.close()
    return Timed(seconds, count, (count, total))


# -- row 11: rebuild a PostgreSQL read model (bench/projections.py's contenders) -----------------


async def facta_rebuild(url: str, batch: int) -> Timed:
    """``replay(store, AccountBalances, ReplayFrom(position=0), batch_size=batch)``: fresh
    tables, batches, swap; timed whole. Check: events it handled."""
    from facta.eventstore import EventStore
    from facta.projections.reference import AccountBalances
    from facta.projections.replay import ReplayFrom, replay

    store = await EventStore.open(url)
    try:
        t0 = time.perf_counter()
        result = await replay(store, AccountBalances, ReplayFrom(position=0), batch_size=batch)
        seconds = time.perf_counter() - t0
    finally:
        await store.close()
    return Timed(seconds, result.events, result.events)


def raw_rebuild(fresh: Any, batch: int) -> Timed:
    """bench/projections.py's raw loop: asyncpg read of the handled types, json.loads, a
    fold per batch, one ``unnest`` upsert and a checkpoint per batch transaction."""
    import projections
    from facta.projections.reference import AccountBalances

    handled, seconds = asyncio.run(projections.raw_log(fresh, AccountBalances, batch))
    return Timed(seconds, handled, handled)


def es_rebuild(env: dict[str, str], dsn: str, batch: int) -> Timed:
    """eventsourcing with a hand-written batched loop: ``select_notifications`` pages of
    ``batch`` filtered by the projection's topics, each mapped to its domain event, folded
    per batch with the raw loop's fold, then one transaction of eventsourcing's datastore
    per batch: the same ``unnest`` upsert (psycopg) and a checkpoint row."""
    import re

    import projections
    from psycopg.sql import SQL

    from facta.projections.reference import AccountBalances

    app = projections.ESBenchApp(env=env)
    try:
        datastore = app.recorder.datastore
        upsert = SQL(re.sub(r"\$\d+", "%s", projections.ACCOUNT_UPSERT.format(t="account_balances")))  # type: ignore[arg-type]
        checkpoint = SQL("UPDATE es_checkpoint SET notification_id = %s WHERE name = 'account_balances'")  # type: ignore[arg-type]
        with datastore.transaction(commit=True) as curs:
            curs.execute(SQL(  # type: ignore[arg-type]
                "CREATE TABLE IF NOT EXISTS es_checkpoint (name text PRIMARY KEY, notification_id bigint)"))
            curs.execute(SQL("DELETE FROM es_checkpoint"))  # type: ignore[arg-type]
            curs.execute(SQL("INSERT INTO es_checkpoint VALUES ('account_balances', 0)"))  # type: ignore[arg-type]
        topics = projections.ESBalances.topics
        es_type = projections._ES_TYPE
        fold = projections.fold_account
        recorder, to_event = app.recorder, app.mapper.to_domain_event
        handled, start = 0, 1
        t0 = time.perf_counter()
        while True:
            page = recorder.select_notifications(start, batch, topics=topics)
            if not page:
                break
            rows: dict[str, list[Any]] = {}
            for n in page:
                e = to_event(n)
                fold(rows, e.originator_id, e.originator_version, es_type[type(e)], vars(e), e.timestamp)
            with datastore.transaction(commit=True) as curs:
                curs.execute(upsert, projections.columns_of(rows))
                curs.execute(checkpoint, (page[-1].id,))
            handled += len(page)
            start = page[-1].id + 1
        seconds = time.perf_counter() - t0
    finally:
        app.close()
    assert AccountBalances.name == "account_balances"
    return Timed(seconds, handled, handled)


# -- rows 12 and 13: relay to Kafka (bench/relay.py's contenders) --------------------------------


def relay_run(contender: str, fresh: Any, broker: Any, events: int, prefix: str) -> Timed:
    """bench/relay.py's throughput contenders: the store loaded with ``events`` events in
    1,000-event appends (untimed), then facta's ``Relay.run(once=True)`` or a bare
    aiokafka producer sending the same records; each checks the topic's record count."""
    import relay

    job = relay.throughput_relay if contender == "facta" else relay.throughput_raw
    seconds, _cpu = asyncio.run(job(fresh, broker, events, prefix))
    return Timed(seconds, events, events)
