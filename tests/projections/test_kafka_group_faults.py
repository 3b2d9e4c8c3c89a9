"""Kafka-source projections scaled out through a consumer group, under faults, with real
``facta projections run`` processes (the projection is ``_group_projection.Tally``, which
writes one row per event it applies, in the batch's transaction).

Each test has been run against a broken version (ARCHITECTURE.md, Tests, lists what each
said): runners in groups of their own, the revocation callback not waiting for the batch
in flight, the checkpoints' compare-and-set off (which only the zombie test notices), a
stop that waits for the join, a ``--once`` that ignores end offsets.

- Three runners of one projection share a 6-partition topic in one group while a writer
  appends and the relay publishes; one runner is SIGKILLed and a fourth joins. Every
  event is applied exactly once, the read model equals a full rebuild from the store, and
  no partition is applied by two runners at once (see :func:`check_applications`).
- A runner SIGKILLed while it holds every partition: runners that start while the group
  still waits for the dead one's session stop promptly on SIGTERM (exit 0, never
  assigned); a ``--once`` that cannot get partitions within its bound says so (exit 1);
  then, once the group is empty (the dead one's session expired, and the runners stopped
  while joining dropped: they left no LeaveGroup), a successor ``--once`` gets every
  partition and ends caught up: the read model complete, its checkpoints the topic's end
  offsets.
- A zombie: of two runners, one holds a batch in flight (``FACTA_TEST_HOLD``) and is
  frozen there with SIGSTOP for longer than its session timeout; the other gets every
  partition and applies everything; thawed, the zombie's batch fails the checkpoint's
  compare-and-set and commits nothing (it logs so, once), and it rejoins. Every event is
  applied exactly once and the read model equals a rebuild from the store.

Runs on PostgreSQL. With FACTA_TEST_KAFKA=noida or tansu these tests skip: noida-db never
drops a member that died without leaving (its group stalls), and Tansu's end offsets are
wrong, so neither can show what is proved here.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import select

from facta.eventstore import EventStore
from facta.eventstore.relay import Relay
from facta.projections import _tracking as tracking
from facta.projections._applier import Applier, Delivery
from facta.projections._tracking import LIVE, LOG
from facta.projections.kafka_source import KafkaSubscription, kafka_offsets

from ..conftest import migrate
from ..polling import wait_for
from ._group_projection import HOLD_ENV, MEMBER_ENV, PACE_ENV, Added, Noted, Tally
from .test_source_contract import Source

ROOT = Path(__file__).resolve().parents[2]
FACTA = shutil.which("facta")
COMMAND = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]
PROJECTIONS = "tests.projections._group_projection:Tally"
PARTITIONS = 6
SESSION = 6  # seconds: the smallest session timeout Apache Kafka accepts by default
PACE_MS = 20  # per event (its applier sleeps): rebalances find batches in flight
HANG = 15  # seconds: a runner told to stop that is still running after this hangs
ASSIGNED = re.compile(r"projection 'tally' assigned (.*)$")
REFUSED = re.compile(r"a checkpoint moved or the tables were swapped; reloading \(its batch of (\d+) records, (\d+) of"
                     r" them events it handles, committed nothing\)")


STAND_INS = {
    "noida": "noida-db keeps a member that died in its group for good",
    "tansu": "Tansu's end offsets are wrong and it wants shorter session timeouts than Kafka accepts",
}


@pytest.fixture
def broker(kafka_broker: Any) -> Any:
    if kafka_broker.kind in STAND_INS:
        pytest.skip(f"the {kafka_broker.kind} stand-in cannot show this: {STAND_INS[kafka_broker.kind]}"
                    " (FACTA_TEST_KAFKA=apache runs it)")
    return kafka_broker


# -- what was appended --------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the writer appended, and so what the read model must hold."""

    totals: dict[str, tuple[int, int]] = field(default_factory=dict)
    handled: int = 0
    appended: int = 0


async def append_some(store: EventStore, ledger: Ledger, rng: random.Random, streams: int = 40) -> None:
    stream = f"s-{rng.randrange(streams)}"
    events: list[Any] = []
    for _ in range(rng.randint(1, 3)):
        events.append(Noted(text="n") if rng.random() < 0.2 else Added(amount=rng.randint(1, 100)))
    await store.append(stream, "tally", events, expected_version=None)
    ledger.appended += len(events)
    for event in events:
        if isinstance(event, Added):
            total, count = ledger.totals.get(stream, (0, 0))
            ledger.totals[stream] = (total + event.amount, count + 1)
            ledger.handled += 1


class Writer:
    """Appends in the background until stopped."""

    def __init__(self, store: EventStore, ledger: Ledger, seed: int) -> None:
        self.store, self.ledger, self.rng = store, ledger, random.Random(seed)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stop.is_set():
            await append_some(self.store, self.ledger, self.rng)
            await asyncio.sleep(self.rng.uniform(0.01, 0.05))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


# -- runner processes ---------------------------------------------------------------------------


def assignments(log: str) -> list[set[int]]:
    """The partitions of each assignment a runner logged, in order."""
    out = []
    for line in log.splitlines():
        found = ASSIGNED.search(line)
        if found:
            text = found.group(1)
            out.append(set() if text == "no partitions" else {int(p) for p in re.findall(r"\[(\d+)\]", text)})
    return out


@dataclass
class Runner:
    """One ``facta projections run tally`` process; its stderr (logs) and stdout in ``log``."""

    member: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return "\n".join(self.output().splitlines()[-15:])

    def assignments(self) -> list[set[int]]:
        return assignments(self.output())

    def reloads(self) -> int:
        """How often it found a checkpoint moved under it (and reloaded them all)."""
        return self.output().count("a checkpoint moved or the tables were swapped; reloading")

    def refused(self) -> list[tuple[int, int]]:
        """Each batch it found a checkpoint moved under: (records, events it handles)."""
        return [(int(records), int(handled)) for records, handled in REFUSED.findall(self.output())]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"runner {self.member} exited with {self.process.returncode}:\n{self.tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self) -> float:
        """SIGTERM; returns the seconds it took to exit (a hang fails the test)."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"runner {self.member} still ran {HANG} s after SIGTERM:\n{self.tail()}") from None
        return time.monotonic() - sent


@dataclass
class Group:
    """How the test's runners reach its database and broker: its own topic and group prefixes."""

    url: str
    source: Source
    tmp: Path
    runners: list[Runner] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return f"{self.source.prefix}.tally"

    def command(self, *options: str, session: float = SESSION) -> list[str]:
        return [*COMMAND, "projections", "run", "tally", "--projections", PROJECTIONS, "--topic-prefix",
                self.source.prefix, "--group-prefix", self.source.group_prefix, "--kafka-session-timeout",
                f"{session:g}", *options]

    def env(self, member: str, pace_ms: int = 0, hold: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("FACTA_PROJECTIONS", HOLD_ENV)}
        return env | {"FACTA_DATABASE_URL": self.url, "FACTA_KAFKA_BOOTSTRAP": self.source.broker.bootstrap,
                      MEMBER_ENV: member, PACE_ENV: str(pace_ms)} | ({HOLD_ENV: str(hold)} if hold else {})

    def start(self, member: str, *options: str, session: float = SESSION, pace_ms: int = 0,
              hold: Path | None = None) -> Runner:
        log = self.tmp / f"runner-{member}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(self.command(*options, session=session), cwd=ROOT,
                                       env=self.env(member, pace_ms, hold), stdout=out, stderr=subprocess.STDOUT)
        runner = Runner(member, process, log)
        self.runners.append(runner)
        return runner

    def close(self) -> None:
        for runner in self.runners:
            runner.kill()


@pytest.fixture
async def group(postgres_url: str, broker: Any, prefix: str, tmp_path: Path) -> AsyncIterator[Group]:
    await migrate(postgres_url)
    found = Group(postgres_url, Source(KafkaSubscription, broker, prefix, partitions=PARTITIONS), tmp_path)
    try:
        yield found
    finally:
        found.close()


# -- what the database and the topic say --------------------------------------------------------


@dataclass(frozen=True)
class Application:
    member: str
    call: int  # the runner's handler calls, counted whether their batch committed or not
    batch: int
    position: int


async def applications(store: EventStore) -> list[Application]:
    table = Tally.applications

    def query(conn: Any) -> list[Application]:
        rows = conn.execute(select(table.c.member, table.c.call, table.c.batch, table.c.position)
                            .order_by(table.c.member, table.c.call))
        return [Application(r.member, int(r.call), int(r.batch), int(r.position)) for r in rows]

    if Tally.name not in await store.database.read(tracking.describe):
        return []
    return await store.database.read(query)


async def applied_by(store: EventStore) -> collections.Counter[str]:
    return collections.Counter(a.member for a in await applications(store))


async def totals(store: EventStore) -> dict[str, tuple[int, int]]:
    table = Tally.totals
    return await store.database.read(
        lambda conn: {r.stream_id: (int(r.total), int(r.events)) for r in conn.execute(select(table))}
    )


async def rebuilt_totals(store: EventStore) -> dict[str, tuple[int, int]]:
    """The totals built afresh from the store's log, into the rebuild tables (then dropped)."""
    rebuild = Applier(store, Tally, source="log", slot=tracking.REBUILD)
    await store.database.write(tracking.start_rebuild, rebuild.projection, {})
    await rebuild.open()
    log = await store.read_log(limit=1_000_000)
    await rebuild.apply([Delivery(r, LOG, r.position) for r in log])
    table = rebuild.projection.totals
    built = await store.database.read(
        lambda conn: {r.stream_id: (int(r.total), int(r.events)) for r in conn.execute(select(table))}
    )
    await store.database.write(tracking.drop_rebuild, rebuild.projection)
    return built


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    position: int
    event_type: str


async def read_topic(bootstrap: str, topic: str, ends: dict[tuple[str, int], int]) -> list[Record]:
    """Every record of ``topic`` up to ``ends``, read without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list[Record] = []
    try:
        todo = {TopicPartition(t, p): end for (t, p), end in ends.items() if t == topic and end > 0}
        consumer.assign(list(todo))
        await consumer.seek_to_beginning(*todo)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while todo:
            assert loop.time() < deadline, f"could not read {topic} to its end offsets {ends}"
            for tp, messages in (await consumer.getmany(*todo, timeout_ms=500)).items():
                for m in messages:
                    if m.offset < todo.get(tp, 0):
                        headers = dict(m.headers)
                        out.append(Record(m.partition, m.offset, int(headers["position"]),
                                          headers["event-type"].decode()))
                if tp in todo and await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        await consumer.stop()
    return out


# -- the claims -----------------------------------------------------------------------------------


@dataclass
class Findings:
    lost: list[int]
    twice: dict[int, list[str]]
    handovers: dict[int, int]  # per partition: how often another runner took over
    runs: dict[int, list[tuple[str, int, int, int]]]  # per partition: (member, first offset, last offset, events)
    rolled_back: dict[str, int]  # per runner: handler calls whose batch committed nothing (claim 5)
    problems: list[str]  # claims 2 to 5 broken

    def summary(self) -> str:
        twice = dict(list(self.twice.items())[:10])
        shown = "; ".join(self.problems[:6]) + (f"; and {len(self.problems) - 6} more" if len(self.problems) > 6 else "")
        return f"lost {len(self.lost)} events {self.lost[:10]}, applied twice {len(self.twice)} {twice}; {shown}"


def check_applications(apps: list[Application], records: list[Record], runners: list[Runner]) -> Findings:
    """Exactly once, and no partition applied by two runners at once.

    Each row is one committed application. A record is applied at its first copy on the
    topic (a later copy with the same position is a republished duplicate, passed over).
    The claims, per partition, in offset order:

    1. every handled record is applied once (none lost, none twice);
    2. a runner's batch is one unbroken block: another runner never applies an offset
       inside it (a hand-over happens between batches);
    3. a runner's batches follow the offsets (it never goes back);
    4. a runner applies a partition again after another one did only after it was given
       the partition again: a new assignment in its log;
    5. no batch was ever rolled back (each runner's handler calls that committed are
       numbered without a gap, a killed runner's batch in flight aside): no batch found
       a checkpoint moved under it, so no two runners ever read one partition at once.

    Claim 5 holds in a healthy group: the revocation callback waits for the batch in
    flight. A runner frozen for longer than its session timeout (a long GC pause, a
    stopped VM) is dropped from the group without knowing it; when it wakes, the batch it
    had in flight fails the checkpoint's compare-and-set and commits nothing. That batch's
    handler calls show as the one gap claim 5 reports for it (``rolled_back``), while
    claims 1 to 4 still hold (the zombie test).
    """
    first: dict[int, Record] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        first.setdefault(record.position, record)
    handled = {p: r for p, r in first.items() if r.event_type == Added.event_type}
    counts = collections.Counter(a.position for a in apps)
    strangers = sorted(p for p in counts if p not in handled)
    assert not strangers, f"applied positions that are not handled records on the topic: {strangers[:20]}"
    lost = sorted(p for p in handled if counts[p] == 0)
    twice = {p: [a.member for a in apps if a.position == p] for p, n in counts.items() if n > 1}

    assigned = {r.member: r.assignments() for r in runners}
    by_partition: dict[int, list[tuple[int, Application]]] = collections.defaultdict(list)
    for app in apps:
        record = handled[app.position]
        by_partition[record.partition].append((record.offset, app))
    handovers: dict[int, int] = {}
    all_runs: dict[int, list[tuple[str, int, int, int]]] = {}
    problems: list[str] = []
    for partition, seq in sorted(by_partition.items()):
        seq.sort(key=lambda item: item[0])
        blocks: list[tuple[str, int]] = []  # (member, batch), collapsed
        runs: list[tuple[str, int, int, int]] = []
        last_batch: dict[str, int] = {}
        for offset, app in seq:
            key = (app.member, app.batch)
            if not blocks or blocks[-1] != key:
                if key in blocks:
                    problems.append(f"partition {partition}: runner {app.member}'s batch {app.batch} is split by"
                                    f" another runner's applications (offset {offset})")
                blocks.append(key)
            if app.batch < last_batch.get(app.member, 0):
                problems.append(f"partition {partition}: runner {app.member} went back, batch {app.batch} at offset"
                                f" {offset} after its batch {last_batch[app.member]}")
            last_batch[app.member] = max(app.batch, last_batch.get(app.member, 0))
            if runs and runs[-1][0] == app.member:
                member, start, _, n = runs[-1]
                runs[-1] = (member, start, offset, n + 1)
            else:
                runs.append((app.member, offset, offset, 1))
        handovers[partition] = len(runs) - 1
        all_runs[partition] = runs
        for member, n in collections.Counter(m for m, *_ in runs).items():
            given = sum(1 for a in assigned.get(member, []) if partition in a)
            if n > given:
                problems.append(f"partition {partition}: runner {member} applied it in {n} separate stretches but"
                                f" was assigned it {given} times: (runner, first offset, last offset, events)"
                                f" {runs[:8]}{' ...' if len(runs) > 8 else ''}")
    calls: dict[str, list[int]] = collections.defaultdict(list)
    for app in apps:
        calls[app.member].append(app.call)
    rolled: dict[str, int] = {}
    for member, numbers in sorted(calls.items()):
        rolled_back = max(numbers) - len(set(numbers))
        if rolled_back:
            rolled[member] = rolled_back
            problems.append(f"runner {member} had {rolled_back} handler calls rolled back (a batch found a checkpoint"
                            " moved under it: another runner read its partitions at the same time)")
    return Findings(lost, twice, handovers, all_runs, rolled, problems)


async def kafka_checkpoints(store: EventStore) -> dict[tuple[str, int], int]:
    return await store.database.read(tracking.load_checkpoints, Tally.name, LIVE)


async def relay_lag(store: EventStore, source: Source) -> int:
    return int((await Relay(store, source.relay_config()).status()).lag)


async def group_state(group: Group) -> tuple[str, int]:
    """The state of the test's consumer group and how many members it has, as its broker sees them."""
    name = f"{group.source.group_prefix}{Tally.name}"
    admin = AIOKafkaAdminClient(bootstrap_servers=group.source.broker.bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([name])
    finally:
        await admin.close()
    for response in responses:
        for described in response.groups:
            if described[1] == name:
                return str(described[2]), len(described[5])
    raise AssertionError(f"Kafka did not describe the consumer group {name!r}: {responses}")


async def published(group: Group) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=group.source.broker.bootstrap)
    await admin.start()
    try:
        return group.topic in await admin.list_topics()
    finally:
        await admin.close()


# -- 1. scale-out through a consumer group ----------------------------------------------------------


@pytest.mark.slow
async def test_three_runners_share_a_group_one_is_killed_and_a_fourth_joins(group: Group) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("FACTA_FAULT_SEED") or random.randrange(1 << 30))
    context = f"seed {seed} (FACTA_FAULT_SEED); runner logs in {group.tmp}"
    source = group.source
    async with await EventStore.open(group.url) as store:
        ledger = Ledger()
        relay_stop = asyncio.Event()
        relay = asyncio.create_task(Relay(store, source.relay_config()).run(stop=relay_stop))
        writer = Writer(store, ledger, seed)
        try:
            await wait_for(lambda: published(group), bool, 60, "the relay's topic")
            members: dict[str, Runner] = {}

            async def applied(names: tuple[str, ...]) -> collections.Counter[str]:
                for name in names:
                    members[name].alive()
                return await applied_by(store)

            # One after the other, each joining while the others apply (a rebalance each).
            for name in ("m1", "m2", "m3"):
                members[name] = group.start(name, "--batch-size", "20", pace_ms=PACE_MS)
                await wait_for(lambda: applied(tuple(members)), lambda c, n=name: c[n] >= 30, 180,
                               f"runner {name} to apply; {context}")
            members["m2"].kill()  # while events stream in
            members["m4"] = group.start("m4", "--batch-size", "20", pace_ms=PACE_MS)
            live = ("m1", "m3", "m4")
            await wait_for(lambda: applied(live), lambda c: c["m4"] > 0, 180, f"the fourth runner to apply; {context}")
            after = (await applied(live))["m4"]
            await wait_for(lambda: applied(live), lambda c: c["m4"] >= after + 60, 180,
                           f"the fourth runner to go on applying; {context}")
            await writer.close()
            await wait_for(lambda: relay_lag(store, source), lambda lag: lag == 0, 60, "the relay to catch up")
            async def distinct_positions() -> int:  # copies applied twice must not count
                await applied(live)
                return len({a.position for a in await applications(store)})

            await wait_for(distinct_positions, lambda n: n >= ledger.handled, 180,
                           f"the runners to apply all {ledger.handled} events; {context}")
            for name in live:
                waited = await asyncio.to_thread(members[name].terminate)
                assert members[name].process.returncode == 0, (name, members[name].tail())
                print(f"runner {name} stopped {waited:.1f} s after SIGTERM")
        finally:
            writer.stop.set()
            relay_stop.set()
            await asyncio.wait_for(asyncio.gather(writer.task, relay, return_exceptions=True), 30)
            group.close()

        apps = await applications(store)
        ends = (await kafka_offsets(source.settings(), [group.topic]))[1]
        records = await read_topic(source.broker.bootstrap, group.topic, ends)
        findings = check_applications(apps, records, group.runners)
        assert not findings.lost and not findings.twice and not findings.problems, f"{findings.summary()}; {context}"
        assert len(apps) == ledger.handled
        assert await kafka_checkpoints(store) == ends, context
        assert await totals(store) == ledger.totals, context
        assert await totals(store) == await rebuilt_totals(store), context
        by_member = collections.Counter(a.member for a in apps)
        assert all(by_member[m] for m in ("m1", "m2", "m3", "m4")), by_member
        moved = sum(findings.handovers.values())
        assert moved >= 1, f"no partition changed hands: {findings.runs}"
        print(f"group: {ledger.appended} events appended ({ledger.handled} handled), 1 runner SIGKILLed (m2),"
              f" 1 joined (m4); lost {len(findings.lost)}, applied twice {len(findings.twice)}; applied by"
              f" {dict(sorted(by_member.items()))}; hand-overs per partition {findings.handovers}; assignments"
              f" {({r.member: len(r.assignments()) for r in group.runners})}; reloads"
              f" {({r.member: r.reloads() for r in group.runners})}; {time.monotonic() - started:.0f} s; {context}")


# -- 2. a runner SIGKILLed, then a successor --once ---------------------------------------------------


@pytest.mark.slow
async def test_a_successor_once_takes_over_from_a_killed_runner_and_waiting_runners_stop_on_sigterm(
    group: Group,
) -> None:
    started = time.monotonic()
    rng = random.Random(11)
    source = group.source
    dead_session = 30  # the killed runner's: the group waits this long for it
    async with await EventStore.open(group.url) as store:
        ledger = Ledger()
        relay_stop = asyncio.Event()
        relay = asyncio.create_task(Relay(store, source.relay_config()).run(stop=relay_stop))
        try:
            for _ in range(150):
                await append_some(store, ledger, rng)
            await wait_for(lambda: relay_lag(store, source), lambda lag: lag == 0, 60, "the relay to publish")
            first = group.start("a", "--batch-size", "20", session=dead_session)
            every = set(range(PARTITIONS))
            await wait_for(lambda: _assigned(first), lambda a: a == every, 120, "the runner to hold every partition")
            await wait_for(lambda: _count(store, first), lambda n: n >= ledger.handled, 120, "the runner to catch up")
            writer = Writer(store, ledger, seed=12)
            try:
                before = len(await applications(store))
                await wait_for(lambda: _count(store, first), lambda n: n > before, 120, "the runner to apply more")
                first.kill()  # holding every partition, events streaming in
                killed = time.monotonic()
                await asyncio.sleep(0.5)
            finally:
                await writer.close()
            await wait_for(lambda: relay_lag(store, source), lambda lag: lag == 0, 60, "the relay to publish")
            # (Not final: a commit the killed runner had sent may still land; the end counts by member.)
            applied_before = len(await applications(store))
            assert applied_before < ledger.handled, "the killed runner left work for its successor"

            # While the group waits for the dead runner's session to expire: a runner and a
            # --once runner stop promptly on SIGTERM; a --once runner with a short bound gives up.
            waiting = group.start("waiting")
            waiting_once = group.start("waiting-once", "--once", "-v")
            bounded = group.start("bounded", "--once", "--kafka-timeout", "1")
            await wait_for(lambda: _joining(waiting, waiting_once), bool, 60, "the runners to join the group")
            await asyncio.sleep(2)
            stopped = {runner.member: await asyncio.to_thread(runner.terminate) for runner in (waiting, waiting_once)}
            for runner in (waiting, waiting_once):
                assert runner.process.returncode == 0, (runner.member, runner.tail())
                assert runner.assignments() == [], f"{runner.member} got partitions: the dead one's session expired"
                assert re.search(r"tally: applied 0 events from Kafka", runner.output()), runner.tail()
            await asyncio.to_thread(bounded.process.wait, 60 + SESSION)
            errors = [line for line in bounded.output().splitlines() if line.startswith("facta: error:")]
            assert bounded.process.returncode == 1 and len(errors) == 1, bounded.tail()
            assert f"no partitions within {1 + SESSION:g} s" in errors[0], errors[0]

            # The runners stopped above were still waiting for their first JoinGroup answer,
            # so they left without a LeaveGroup (aiokafka sends one only from a generation
            # on): the broker keeps their joins until the dead runner's session expires, puts
            # them in that generation and drops them only a session timeout later. A --once
            # started before that which leads the generation hands them partitions, gets a
            # share and, caught up on it, ends (exit 0) with the rest of the topic unapplied
            # (one that does not lead waits for a leader that never syncs, then gets every
            # partition). So the successor starts once the group is empty.
            lingering = await group_state(group)
            await wait_for(lambda: group_state(group), lambda state: state == ("Empty", 0), dead_session + 90,
                           "the group to drop the killed runner and the runners that stopped while joining")

            # The successor: it gets every partition, from the dead runner's checkpoints.
            successor = await asyncio.to_thread(
                subprocess.run, group.command("--once", "--json", "-v"), cwd=ROOT, env=group.env("successor"),
                capture_output=True, text=True, timeout=180, check=False,
            )
            took = time.monotonic() - killed
            assert successor.returncode == 0, (successor.returncode, successor.stdout, successor.stderr[-3000:])
        finally:
            relay_stop.set()
            await asyncio.wait_for(relay, 30)
            group.close()

        [summary] = json.loads(successor.stdout)
        got = assignments(successor.stderr)
        assert got == [set(range(PARTITIONS))], f"the successor's assignments {got}: {successor.stderr[-2000:]}"
        apps = await applications(store)
        ends = (await kafka_offsets(source.settings(), [group.topic]))[1]
        by_member = collections.Counter(a.member for a in apps)
        assert set(by_member) == {"a", "successor"}, by_member  # the waiting runners applied nothing
        assert summary["error"] is None and summary["applied"] == by_member["successor"] > 0, (summary, by_member)
        assert by_member["a"] + by_member["successor"] == ledger.handled, by_member
        assert summary["checkpoint"] == {f"{t}[{p}]": o for (t, p), o in sorted(ends.items())}, summary
        assert await kafka_checkpoints(store) == ends
        assert await totals(store) == ledger.totals == await rebuilt_totals(store)
        assert sorted(a.position for a in apps) == sorted({a.position for a in apps}) and len(apps) == ledger.handled
        print(f"successor: {ledger.appended} events ({ledger.handled} handled), runner 'a' SIGKILLed holding"
              f" {PARTITIONS} partitions after applying {by_member['a']}; the successor applied {summary['applied']}"
              f" and ended {took:.1f} s after the kill (dead session {dead_session} s); SIGTERM stopped the waiting"
              f" runners in {', '.join(f'{k} {v:.1f} s' for k, v in stopped.items())}; the group then: {lingering[0]}"
              f" with {lingering[1]} members; lost 0, applied twice 0;"
              f" {time.monotonic() - started:.0f} s")


async def _assigned(runner: Runner) -> set[int]:
    runner.alive()
    found = runner.assignments()
    return found[-1] if found else set()


async def _count(store: EventStore, runner: Runner) -> int:
    runner.alive()
    return len(await applications(store))


async def _joining(*runners: Runner) -> bool:
    for runner in runners:
        runner.alive()
    return all("joining consumer group" in runner.output() for runner in runners)


async def test_a_session_timeout_kafka_refuses_is_one_line_naming_it(group: Group) -> None:
    async with await EventStore.open(group.url) as store:
        await append_some(store, Ledger(), random.Random(3))
        await Relay(store, group.source.relay_config()).run(once=True)
    result = await asyncio.to_thread(
        subprocess.run, group.command("--once", session=2), cwd=ROOT, env=group.env("refused"), capture_output=True,
        text=True, timeout=120, check=False,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("facta: error: Kafka at ") and "refused the session timeout of 2 s" in lines[0], lines
    assert f"consumer group '{group.source.group_prefix}tally'" in lines[0], lines


# -- 3. a zombie: a runner frozen in the middle of a batch for longer than its session -----------------


@pytest.mark.slow
async def test_a_zombie_frozen_mid_batch_past_its_session_commits_nothing(group: Group) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("FACTA_FAULT_SEED") or random.randrange(1 << 30))
    context = f"seed {seed} (FACTA_FAULT_SEED); runner logs in {group.tmp}"
    source = group.source
    hold = group.tmp / "hold"
    hold.mkdir()
    async with await EventStore.open(group.url) as store:
        ledger = Ledger()
        relay_stop = asyncio.Event()
        relay = asyncio.create_task(Relay(store, source.relay_config()).run(stop=relay_stop))
        writer = Writer(store, ledger, seed)
        try:
            await wait_for(lambda: published(group), bool, 60, "the relay's topic")
            zombie = group.start("zombie", "--batch-size", "20", pace_ms=PACE_MS, hold=hold)
            other = group.start("other", "--batch-size", "20", pace_ms=PACE_MS)

            async def applied(*runners: Runner) -> collections.Counter[str]:
                for runner in runners:
                    runner.alive()
                return await applied_by(store)

            async def every_applied(*runners: Runner) -> bool:
                """Every handled event applied at least once (with a broken version, some twice)."""
                for runner in runners:
                    runner.alive()
                return len({a.position for a in await applications(store)}) >= ledger.handled

            # Both apply, sharing the partitions.
            await wait_for(lambda: applied(zombie, other), lambda c: c["zombie"] >= 30 and c["other"] >= 30, 180,
                           f"both runners to apply; {context}")
            shared = (await applied(zombie, other))["zombie"]
            await wait_for(lambda: applied(zombie, other), lambda c: c["zombie"] >= shared + 20, 180,
                           f"the zombie-to-be to apply its share; {context}")
            # Every partition has its checkpoint row, so the held batch moves its checkpoints
            # by the compare-and-set update (a partition's first checkpoint is an insert,
            # which another runner's insert of it would refuse as well).
            await wait_for(lambda: kafka_checkpoints(store), lambda found: len(found) == PARTITIONS, 180,
                           f"a checkpoint for every partition; {context}")

            # Hold the zombie's next batch in flight (fetched, its applier pacing, nothing
            # committed), then freeze it there: no heartbeats, as in a long GC pause.
            (hold / "arm").touch()
            await wait_for(lambda: _held(hold, zombie), bool, 120, f"the zombie to hold a batch; {context}")
            held = json.loads((hold / "held").read_text())
            os.kill(zombie.process.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            (hold / "release").touch()  # it sees this only once thawed
            before = len(zombie.assignments())
            had = (await applied_by(store))["zombie"]

            # The group drops it after its session timeout; the other runner gets every
            # partition and applies them, the zombie's batch included.
            every = set(range(PARTITIONS))
            await wait_for(lambda: _assigned(other), lambda a: a == every, 180,
                           f"the other runner to take every partition from the frozen zombie; {context}")
            took_over = time.monotonic() - frozen_at
            taken = (await applied(other))["other"]
            await wait_for(lambda: applied(other), lambda c: c["other"] >= taken + 20, 180,
                           f"the other runner to apply after the take-over; {context}")
            await writer.close()
            await wait_for(lambda: relay_lag(store, source), lambda lag: lag == 0, 60, "the relay to catch up")
            await wait_for(lambda: every_applied(other), bool, 180,
                           f"the other runner to apply all {ledger.handled} events; {context}")
            by_position = {a.position: a.member for a in await applications(store)}
            assert by_position.get(held["position"]) == "other", (held, by_position.get(held["position"]))

            # Thaw it: its batch in flight goes on to its transaction, which must commit nothing.
            os.kill(zombie.process.pid, signal.SIGCONT)
            frozen = time.monotonic() - frozen_at
            await wait_for(lambda: _assignment_count(zombie), lambda n: n > before, 180,
                           f"the thawed zombie to rejoin the group; {context}")
            # Events again, until the zombie commits more (so its rolled-back handler calls
            # show as a gap in its numbers).
            writer = Writer(store, ledger, seed + 1)
            await wait_for(lambda: applied(zombie, other), lambda c: c["zombie"] >= had + 20, 180,
                           f"the rejoined zombie to apply again; {context}")
            await writer.close()
            await wait_for(lambda: relay_lag(store, source), lambda lag: lag == 0, 60, "the relay to catch up")
            await wait_for(lambda: every_applied(zombie, other), bool, 180,
                           f"the runners to apply all {ledger.handled} events; {context}")
            for runner in (zombie, other):
                await asyncio.to_thread(runner.terminate)
                assert runner.process.returncode == 0, (runner.member, runner.tail())
        finally:
            writer.stop.set()
            relay_stop.set()
            await asyncio.wait_for(asyncio.gather(writer.task, relay, return_exceptions=True), 30)
            group.close()

        apps = await applications(store)
        ends = (await kafka_offsets(source.settings(), [group.topic]))[1]
        records = await read_topic(source.broker.bootstrap, group.topic, ends)
        findings = check_applications(apps, records, group.runners)
        assert not findings.lost and not findings.twice, f"{findings.summary()}; {context}"
        # The zombie's batch was attempted and refused: once, and only its.
        refused = zombie.refused()
        assert len(refused) == 1 and not other.refused(), (refused, other.refused(), zombie.tail())
        [(records_refused, handled_refused)] = refused
        assert handled_refused >= 1, refused
        # Its handlers ran in the refused transaction: their calls are the one gap in its numbers.
        assert findings.rolled_back == {"zombie": handled_refused}, f"{findings.summary()}; {context}"
        others = [p for p in findings.problems if "rolled back" not in p]
        assert not others, f"{findings.summary()}; {context}"
        assert len(apps) == ledger.handled
        assert await kafka_checkpoints(store) == ends, context
        assert await totals(store) == ledger.totals, context
        assert await totals(store) == await rebuilt_totals(store), context
        by_member = collections.Counter(a.member for a in apps)
        print(f"zombie: {ledger.appended} events appended ({ledger.handled} handled); lost {len(findings.lost)},"
              f" applied twice {len(findings.twice)}; the zombie held a batch at position {held['position']},"
              f" frozen {frozen:.1f} s (session {SESSION} s; the other runner had every partition"
              f" {took_over:.1f} s after the freeze); its refused batch: {records_refused} records,"
              f" {handled_refused} events handled, {findings.rolled_back['zombie']} handler calls rolled back;"
              f" applied by {dict(sorted(by_member.items()))}; assignments"
              f" {({r.member: len(r.assignments()) for r in group.runners})}; {time.monotonic() - started:.0f} s;"
              f" {context}")


async def _held(hold: Path, runner: Runner) -> bool:
    runner.alive()
    return (hold / "held").exists()


async def _assignment_count(runner: Runner) -> int:
    runner.alive()
    return len(runner.assignments())
