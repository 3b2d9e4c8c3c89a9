"""The relay's records as a client that is not aiokafka reads them.

Kafka's own console consumer (``org.apache.kafka.tools.consumer.ConsoleConsumer``, from
the same jars as the test broker) reads the relay's topics, and every record's key,
value, headers and timestamp are compared with the stored event they carry, as the
README documents the format. Unicode stream ids, actors and payloads, optional headers
present and absent, and several partitions are in the data.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import defaultdict
from typing import Any

import pytest
from pydantic import Field

from facta.dev.apache_kafka import ensure_distribution, tool_command
from facta.domain import DomainEvent
from facta.eventstore import EventStore, RecordedEvent
from facta.eventstore.relay import Relay, RelayConfig

from ..kafka_fixtures import KAFKA

KEY_SEP, HEADER_SEP, RECORD_SEP = b"\x1f", b"\x1e", b"\x1c\n"


class Noted(DomainEvent, name="format.noted", version=2):
    text: str
    amount_minor: int
    tags: tuple[str, ...] = ()
    ratio: float = 0.5
    nested: dict[str, Any] = Field(default_factory=dict)


def console_consume(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    """Every record of ``topic`` as Kafka's console consumer prints it (bytes, unparsed)."""
    properties = {
        "print.timestamp": "true", "print.partition": "true", "print.offset": "true", "print.headers": "true",
        "print.key": "true", "print.value": "true", "key.separator": KEY_SEP.decode(),
        "headers.separator": HEADER_SEP.decode(), "line.separator": RECORD_SEP.decode(), "null.literal": "\x1bNULL",
    }
    args = ["--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning", "--max-messages", str(count),
            "--timeout-ms", "60000"]
    for name, value in properties.items():
        args += ["--formatter-property", f"{name}={value}"]
    command = tool_command(ensure_distribution(), "org.apache.kafka.tools.consumer.ConsoleConsumer", *args)
    result = subprocess.run(command, capture_output=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    records = []
    for raw in result.stdout.split(RECORD_SEP):
        if not raw:
            continue
        created, partition, offset, headers, key, value = raw.split(KEY_SEP, 5)
        pairs = []
        for header in headers.split(HEADER_SEP):
            name, _, text = header.partition(b":")  # the formatter joins a header's name and value with ':'
            pairs.append((name.decode(), text.decode()))
        records.append({
            "timestamp_type": created.split(b":")[0].decode(), "timestamp_ms": int(created.split(b":")[1]),
            "partition": int(partition.split(b":")[1]), "offset": int(offset.split(b":")[1]),
            "headers": pairs, "key": key, "value": value,
        })
    assert len(records) == count, f"the console consumer read {len(records)} records of {topic}, expected {count}"
    return records


def documented_headers(r: RecordedEvent) -> list[tuple[str, str]]:
    """The README's header table, written out from the stored event (not from the relay's code)."""
    headers = [
        ("event-type", r.event_type), ("schema-version", str(r.schema_version)), ("event-id", str(r.event_id)),
        ("stream-id", r.stream_id), ("stream-type", r.stream_type), ("stream-version", str(r.version)),
        ("position", str(r.position)), ("occurred-at", r.occurred_at.isoformat()),
        ("recorded-at", r.recorded_at.isoformat()),
    ]
    optional = [("actor", r.actor), ("correlation-id", r.correlation_id), ("causation-id", r.causation_id)]
    return headers + [(name, value) for name, value in optional if value is not None]


@pytest.fixture
def apache_only() -> None:
    if KAFKA != "apache":
        pytest.skip(f"FACTA_TEST_KAFKA={KAFKA}: Kafka's console consumer comes from the Apache Kafka jars")


async def test_kafkas_console_consumer_reads_exactly_what_the_store_holds(
    apache_only: None, migrated_url: str, kafka_broker: Any, prefix: str
) -> None:
    async with await EventStore.open(migrated_url) as store:
        streams = ["note-1", "nöte-ümlaut", "笔记-3", "note with spaces", "note-🚕"]
        for round_ in range(4):
            for i, stream in enumerate(streams):
                events = [Noted(text=f"{stream} #{round_}.{k}: «quoted», \"json\", back\\slash, tab\t",
                                amount_minor=round_ * 100 + k - 7, tags=("日本", "b")[: k + 1], ratio=0.25 if k else 1e-9,
                                nested={"ü": [1, {"x": None}], "n": i})
                          for k in range(1 + (round_ + i) % 3)]
                metadata: dict[str, Any] = {"actor": "zoë"} if i % 2 else {"correlation_id": f"corr-{round_}",
                                                                          "causation_id": f"cause-{i}"}
                await store.append(stream, "note", events, expected_version=None, **metadata)
        await Relay(store, RelayConfig(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix, partitions=3)).run(once=True)
        stored = {str(r.event_id): r for r in await store.read_log(limit=10_000)}

    records = await asyncio.to_thread(console_consume, kafka_broker.bootstrap, f"{prefix}.note", len(stored))
    seen: set[str] = set()
    by_partition: dict[int, list[RecordedEvent]] = defaultdict(list)
    for record in sorted(records, key=lambda m: (m["partition"], m["offset"])):
        event_id = dict(record["headers"])["event-id"]
        stored_event = stored[event_id]
        seen.add(event_id)
        assert record["key"] == stored_event.stream_id.encode()
        assert record["value"] == stored_event.payload.encode(), "the value is the stored JSON payload, byte for byte"
        assert record["headers"] == documented_headers(stored_event)
        assert record["timestamp_type"] == "CreateTime"
        assert record["timestamp_ms"] == int(stored_event.recorded_at.timestamp() * 1000)
        by_partition[record["partition"]].append(stored_event)
    assert seen == set(stored)
    assert len(by_partition) > 1, "the streams spread over several partitions"
    for partition, events in by_partition.items():
        assert len({e.stream_id for e in events}) == len({(e.stream_id, partition) for e in events})
        for stream in {e.stream_id for e in events}:
            versions = [e.version for e in events if e.stream_id == stream]
            assert versions == sorted(versions) == list(range(1, len(versions) + 1)), (partition, stream)
