"""Kafka retention through the `facta` executable, with the reference projections on the
demo's data (SQLite and PostgreSQL): Kafka deletes the first records of some partitions,
different amounts in each, and then

- `facta projections run` on a new database stops with one line naming the partition;
- `facta replay --from-offset 0` (and its --dry-run) refuses, naming the store position
  to replay from instead;
- `facta replay --from-position 0` reads the deleted events from the store (its --dry-run
  says which), and the read models equal what the aggregates in the store say;
- the live runner goes on from the replay's checkpoints, and stops with one line when
  Kafka deletes records past its checkpoint.

Expected values come from the topics as they were before the deletion."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from facta.domain.reference import Account
from facta.eventstore import EventStore, Repository
from facta.projections.reference import AccountBalances

from ..projections.test_source_contract import consume_all
from .test_projections_cli import as_json, check_read_models_match_the_aggregates, facta, ok, one_line_error

Coord = tuple[str, int]
PARTITIONS = 3


async def records(bootstrap: str, topic: str, url: str, stream_type: str) -> dict[Coord, list[tuple[int, str, str]]]:
    """Each partition's records in offset order: (position, stream id, event type)."""
    async with await EventStore.open(url) as store:
        count = sum(1 for r in await store.read_log(limit=100_000) if r.stream_type == stream_type)
    out: dict[Coord, list[tuple[int, str, str]]] = {(topic, p): [] for p in range(PARTITIONS)}
    for m in sorted(await consume_all(bootstrap, [topic], count), key=lambda m: (m.partition, m.offset)):
        headers = {k: bytes(v).decode() for k, v in m.headers}
        out[(m.topic, m.partition)].append((int(headers["position"]), m.key.decode(), headers["event-type"]))
    return out


async def delete_before(bootstrap: str, offsets: dict[Coord, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(*c): RecordsToDelete(o) for c, o in offsets.items()},
                                   timeout_ms=30_000)
    finally:
        await admin.close()


async def deposit(url: str, account_id: str, amount: int) -> None:
    async with await EventStore.open(url) as store:
        repo = Repository(store)
        account = await repo.get(Account, account_id)
        account.deposit(amount)
        await repo.save(account)


async def test_retention_through_the_cli(backend_url: str, kafka_broker: Any, prefix: str) -> None:
    url, bootstrap = backend_url, kafka_broker.bootstrap
    kafka = ("--kafka-bootstrap", bootstrap, "--topic-prefix", prefix, "--database-url", url)
    ok(facta("demo", "--rides", "20", "--seed", "1", "--json", "--no-projections", "--database-url", url))
    ok(facta("relay", "run", "--once", "--partitions", str(PARTITIONS), *kafka))
    accounts = await records(bootstrap, f"{prefix}.account", url, "account")
    rides = await records(bootstrap, f"{prefix}.ride", url, "ride")
    a0, a1, a2 = sorted(accounts)
    r0, r1, _ = sorted(rides)
    assert all(len(v) > 6 for v in accounts.values())
    await delete_before(bootstrap, {a0: 3, a2: 6, r0: 2, r1: 5})
    topic = f"{prefix}.account"

    # A new runner: the first records of two partitions are gone.
    assert one_line_error(facta("projections", "run", "account_balances", "--once", *kafka)) == (
        f"facta: error: projection 'account_balances' has no checkpoint on {topic}[0] yet: Kafka deleted the records"
        f" before offset 3, the earliest it retains (likewise in {topic}[2]), and starting there would skip events;"
        " build it with `facta replay account_balances --from-position 0`, which reads the deleted events from the"
        " store"
    )

    # A replay from offset 0 refuses, dry run or not.
    first_deleted = accounts[a0][0][0]
    instead = min(v[0][0] for v in accounts.values()) - 1
    refusal = (
        f"facta: error: offset 0 of {topic}[0] is gone: Kafka deleted the records before offset 3, the earliest it"
        f" retains (likewise in {topic}[2]), so a replay from offset 0 would skip events; replay from store position"
        f" {instead} instead (--from-position {instead}), which reads the deleted events from the store; the first"
        f" event deleted there is at position {first_deleted}"
    )
    for dry_run in (("--dry-run",), ()):
        line = one_line_error(facta("replay", "account_balances", "--from-offset", "0", *dry_run, *kafka))
        assert line == refusal

    # From a position, the deleted events come from the store.
    handled = set(AccountBalances.event_types())
    plan = as_json(facta("replay", "account_balances", "--from-position", "0", "--dry-run", "--json", *kafka))
    cut = {a0: 3, a2: 6}
    expected_fill = {
        f"{t}[{p}]": {"after_position": 0, "through_position": accounts[(t, p)][n][0] - 1,
                      "events": sum(1 for _, _, kind in accounts[(t, p)][:n] if kind in handled),
                      "deleted_before_offset": n}
        for (t, p), n in cut.items()
    }
    assert plan["from_store"] == expected_fill
    assert plan["start"] == {f"{topic}[0]": 3, f"{topic}[1]": 0, f"{topic}[2]": 6}
    text = ok(facta("replay", "account_balances", "--from-position", "0", "--dry-run", *kafka)).stdout
    f0 = expected_fill[f"{topic}[0]"]
    assert (f"  store     {topic}[0]: {f0['events']:,} events after position 0 through {f0['through_position']:,},"
            " which Kafka deleted (offsets before 3)") in text.splitlines()
    for name in ("account_balances", "ride_board", "driver_earnings"):
        ok(facta("replay", name, "--from-position", "0", *kafka))
    await check_read_models_match_the_aggregates(url)
    listed = {e["name"]: e for e in as_json(facta("projections", "list", "--json", *kafka))}
    assert listed["account_balances"]["source"] == "kafka"
    assert listed["account_balances"]["checkpoint"] == {f"{t}[{p}]": len(v) for (t, p), v in accounts.items()}
    assert listed["account_balances"]["lag"] == 0

    # The live runner goes on from the replay's checkpoints: one new event, applied once.
    rider = accounts[a1][0][1]
    await deposit(url, rider, 25)
    ok(facta("relay", "run", "--once", "--partitions", str(PARTITIONS), *kafka))
    run = as_json(facta("projections", "run", "account_balances", "ride_board", "driver_earnings", "--once", "--json",
                        *kafka))
    assert [(r["name"], r["applied"], r["error"]) for r in run] == [
        ("account_balances", 1, None), ("ride_board", 0, None), ("driver_earnings", 0, None)
    ]
    await check_read_models_match_the_aggregates(url)

    # Kafka deletes past the live checkpoint of the rider's partition: the runner stops.
    at = len(accounts[a1]) + 1
    for amount in (5, 6):
        await deposit(url, rider, amount)
    ok(facta("relay", "run", "--once", "--partitions", str(PARTITIONS), *kafka))
    await delete_before(bootstrap, {a1: at + 1})
    gap = (
        f"projection 'account_balances' cannot go on from its checkpoint, offset {at} of {topic}[1]: Kafka deleted the"
        f" records before offset {at + 1}, the earliest it retains, and starting there would skip events; rebuild it"
        " with `facta replay account_balances --from-position 0`, which reads the deleted events from the store"
    )
    assert one_line_error(facta("projections", "run", "account_balances", "--once", *kafka)) == f"facta: error: {gap}"
    listed = {e["name"]: e for e in as_json(facta("projections", "list", "--json", *kafka))}
    assert listed["account_balances"]["last_error"] == gap

    # And the rebuild it names brings it back.
    ok(facta("replay", "account_balances", "--from-position", "0", *kafka))
    await check_read_models_match_the_aggregates(url)
