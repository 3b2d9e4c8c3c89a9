"""`--metrics-port` on `facta relay run` and `facta projections run` (issue 15, item 2): real
processes, Apache Kafka, and the Prometheus text scraped over HTTP.

The backlog is held deterministically, not raced: the relay starts while its broker is
down (it cannot publish, and its lag gauges read the store), and the projection's
handlers wait for a gate file (tests/cli/_gated_projection.py) the test creates once it
has seen the lag.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from facta.eventstore import EventStore
from facta.eventstore.schema import events
from facta.projections.reference import BILLING_ACTOR

from .test_cli import one_line_error
from .test_projections_cli import ENV_CLEAN, facta

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples | None:
    """Every sample at http://127.0.0.1:PORT/metrics, by name and labels (facta's own
    labels only); None while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k.startswith("facta_")))
            samples[(sample.name, labels)] = sample.value
    return samples


def until(port: int, check: Callable[[Samples], bool], what: str, process: subprocess.Popen[str],
          within: float = 90) -> Samples:
    """Scrape every 0.1 s until ``check`` holds (or fail, naming ``what`` and the last scrape)."""
    deadline = time.monotonic() + within
    last: Samples | None = None
    while time.monotonic() < deadline:
        assert process.poll() is None, (what, process.args, process.returncode)
        last = scrape(port)
        if last is not None and check(last):
            return last
        time.sleep(0.1)
    pytest.fail(f"{what}: not seen within {within} s; last scrape: {last}")


def start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """``facta ARGS`` running in the background, its output in ``log`` (a long-running
    relay logs every retry: a pipe nobody reads would fill up and stop it)."""
    full = {k: v for k, v in os.environ.items() if k not in ENV_CLEAN} | env
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "facta.replay.cli", *args], env=full, text=True,
                                stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def counts(url: str) -> tuple[int, int, int]:
    """The log's head, its TripEnded events, and the events billing_process stored."""
    async def read() -> tuple[int, int, int]:
        async with await EventStore.open(url) as store:
            def query(conn: Any) -> tuple[int, int, int]:
                c = events.c
                head = conn.execute(select(func.max(c.position))).scalar_one()
                ended = conn.execute(select(func.count()).where(c.event_type == "ride.trip_ended")).scalar_one()
                billed = conn.execute(select(func.count()).where(c.actor == BILLING_ACTOR)).scalar_one()
                return int(head), int(ended), int(billed)
            return await store.database.read(query)
    return asyncio.run(read())


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_the_relay_and_the_runners_serve_their_lag_and_counts_to_prometheus(
    backend_url: str, managed_kafka_broker: Any, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    broker, url, prefix = managed_kafka_broker, backend_url, f"m{os.getpid()}"
    demo = facta("demo", "--rides", "8", "--seed", "2", "--json", "--no-projections", "--database-url", url)
    assert demo.returncode == 0, demo.stderr
    backlog = json.loads(demo.stdout)["log_head"]
    assert counts(url)[0] == backlog > 0
    broker.stop()

    relay_port, runner_port, gate = free_port(), free_port(), tmp_path / "gate"
    env = {"FACTA_DATABASE_URL": url, "FACTA_KAFKA_BOOTSTRAP": broker.bootstrap, "FACTA_TOPIC_PREFIX": prefix,
           "FACTA_RELAY_MAX_BACKOFF_S": "0.5", "FACTA_TEST_GATE": str(gate)}
    idempotence = [] if broker.supports_idempotence else ["--no-idempotence"]
    relay = start("relay", "run", "--metrics-port", str(relay_port), *idempotence, env=env,
                  log=tmp_path / "relay.log")
    processes.append(relay)
    relay_of = {"facta_relay": "default"}

    # Kafka is down: the relay cannot publish, and its gauges show the whole backlog.
    seen = until(relay_port, lambda s: metric(s, "facta_relay_lag_events", **relay_of) == backlog
                 and (metric(s, "facta_relay_lag_seconds", **relay_of) or 0) > 0,
                 "the relay's lag with Kafka down", relay)
    assert not metric(seen, "facta_relay_published_total", **relay_of)

    runner = start("projections", "run", "billing_process", "gated_log", "--batch-size", "5",
                   "--projections", "tests.cli._gated_projection", "--metrics-port", str(runner_port), env=env,
                   log=tmp_path / "runner.log")
    processes.append(runner)
    broker.start()
    gated, billing = {"facta_projection": "gated_log"}, {"facta_projection": "billing_process"}

    # Kafka is back: the relay publishes; the gated projection is held behind its backlog.
    until(runner_port, lambda s: (metric(s, "facta_projection_lag_events", **gated) or 0) > 0
          and (metric(s, "facta_projection_lag_seconds", **gated) or 0) > 0,
          "the gated projection's lag", runner)
    gate.touch()

    # Everything applied and published, billing's own appends included: every lag at 0.
    def settled_relay(s: Samples) -> bool:
        return (metric(s, "facta_relay_lag_events", **relay_of) == 0
                and metric(s, "facta_relay_published_total", **relay_of) == counts(url)[0])

    def settled_runner(s: Samples) -> bool:
        head, ended, _ = counts(url)
        return (metric(s, "facta_projection_events_applied_total", **gated) == head
                and metric(s, "facta_projection_events_applied_total", **billing) == ended
                and metric(s, "facta_projection_lag_events", **gated) == 0
                and metric(s, "facta_projection_lag_events", **billing) == 0)

    on_runner = until(runner_port, settled_runner, "the runner caught up", runner)
    on_relay = until(relay_port, settled_relay, "the relay caught up", relay)
    head, ended, billed = counts(url)
    assert ended > 0 and billed == 2 * ended and head == backlog + billed
    assert metric(on_relay, "facta_relay_published_total", **relay_of) == head
    assert metric(on_relay, "facta_relay_lag_seconds", **relay_of) == 0
    assert metric(on_runner, "facta_projection_lag_seconds", **gated) == 0
    assert metric(on_runner, "facta_projection_lag_seconds", **billing) == 0
    # billing_process stored the charges in the runner's process: counted there, by stream type.
    assert metric(on_runner, "facta_events_appended_total", facta_stream_type="account") == billed
    assert metric(on_runner, "facta_append_duration_seconds_count") == ended
    assert (metric(on_runner, "facta_projection_handler_duration_seconds_count", **gated) or 0) >= head / 5
    assert not metric(on_runner, "facta_projection_failures_total", **gated)

    for process, log in ((relay, "relay.log"), (runner, "runner.log")):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / log).read_text()[-3000:]
        assert "Traceback" not in (tmp_path / log).read_text()


def test_a_runner_on_the_store_log_serves_its_lag_moving_to_zero(
    backend_url: str, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    demo = facta("demo", "--rides", "4", "--seed", "5", "--json", "--no-projections", "--database-url", backend_url)
    assert demo.returncode == 0, demo.stderr
    head = json.loads(demo.stdout)["log_head"]
    port, gate = free_port(), tmp_path / "gate"
    runner = start("projections", "run", "gated_log", "--batch-size", "7", "--projections",
                   "tests.cli._gated_projection", "--metrics-port", str(port),
                   env={"FACTA_DATABASE_URL": backend_url, "FACTA_TEST_GATE": str(gate)}, log=tmp_path / "runner.log")
    processes.append(runner)
    gated = {"facta_projection": "gated_log"}
    # Held in its first batch: every event after checkpoint 0 is behind.
    until(port, lambda s: metric(s, "facta_projection_lag_events", **gated) == head
          and (metric(s, "facta_projection_lag_seconds", **gated) or 0) > 0, "the lag while held", runner)
    gate.touch()
    done = until(port, lambda s: metric(s, "facta_projection_lag_events", **gated) == 0, "caught up", runner)
    assert metric(done, "facta_projection_lag_seconds", **gated) == 0
    assert metric(done, "facta_projection_events_applied_total", **gated) == head
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 0, (tmp_path / "runner.log").read_text()[-3000:]


def test_metrics_options_refuse_a_bad_or_busy_port_and_a_missing_extra(sqlite_url: str) -> None:
    assert facta("db", "upgrade", "--database-url", sqlite_url).returncode == 0
    for command in (["relay", "run", "--once", "--kafka-bootstrap", "127.0.0.1:1"], ["projections", "run",
                                                                                   "account_balances", "--once"]):
        for port in ("0", "65536", "http"):
            bad = facta(*command, "--database-url", sqlite_url, "--metrics-port", port)
            assert bad.returncode == 2, bad.stderr
            assert len(bad.stderr.strip().splitlines()) == 1 and "--metrics-port" in bad.stderr, bad.stderr
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            one_line_error(facta(*command, "--database-url", sqlite_url, "--metrics-port", port),
                           f"cannot serve metrics on 127.0.0.1:{port}", f"--metrics-port {port}")
    # Without OpenTelemetry's SDK (the telemetry extra): one line saying what to install.
    missing = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['opentelemetry.sdk'] = None\n"
         "from facta.replay.cli import main; sys.exit(main())",
         "projections", "run", "account_balances", "--once", "--database-url", sqlite_url,
         "--metrics-port", str(free_port())],
        capture_output=True, text=True, timeout=120, check=False,
    )
    one_line_error(missing, "pip install 'facta[telemetry]'")


def test_without_metrics_port_no_sdk_is_imported(sqlite_url: str) -> None:
    assert facta("db", "upgrade", "--database-url", sqlite_url).returncode == 0
    done = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom facta.replay.cli import main\n"
         "try:\n    main()\nexcept SystemExit:\n    pass\n"
         "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'prometheus_client',"
         " 'opentelemetry.exporter'))))",
         "projections", "run", "account_balances", "--once", "--database-url", sqlite_url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_metrics_host_takes_an_ipv6_address_bare_or_in_brackets(sqlite_url: str) -> None:
    """``--metrics-host [::1]`` (the bracketed form ``--kafka-bootstrap`` documents) serves
    on ::1 like ``::1``: a runner serves there, and a taken port is named ``[::1]:PORT``."""
    try:
        taken = socket.socket(socket.AF_INET6)
        taken.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    assert facta("db", "upgrade", "--database-url", sqlite_url).returncode == 0
    with taken:
        taken.listen()
        port = str(taken.getsockname()[1])
        for host in ("::1", "[::1]"):
            one_line_error(facta("projections", "run", "account_balances", "--once", "--database-url", sqlite_url,
                                 "--metrics-port", port, "--metrics-host", host),
                           f"cannot serve metrics on [::1]:{port}", f"--metrics-port {port}")
    served = facta("projections", "run", "account_balances", "--once", "--database-url", sqlite_url,
                   "--metrics-port", str(free_port()), "--metrics-host", "[::1]")
    assert served.returncode == 0, served.stderr
