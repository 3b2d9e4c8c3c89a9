"""The benchmarks still run: a quick smoke run of each (its figures are not checked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def quick_run(script: str, tmp_path: Path, *args: str) -> str:
    """``bench/<script> --quick *args``; its output, after asserting it exited 0."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def needs_postgres_and_eventsourcing(postgres_available: bool, script: str) -> None:
    pytest.importorskip("eventsourcing")
    if not postgres_available:
        pytest.skip(f"bench/{script} needs PostgreSQL")


@pytest.mark.slow
def test_append_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing")
    backend = "all" if postgres_available else "sqlite"
    out = quick_run("append.py", tmp_path, "--backend", backend)
    for workload in ("(a) 1,000 events/tx", "(b) 1 event/tx"):
        assert workload in out
    assert out.count("facta/raw") >= 1 and "facta " in out


@pytest.mark.slow
def test_append_benchmark_positions_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    if not postgres_available:
        pytest.skip("bench/append.py --positions needs PostgreSQL")
    out = quick_run("append.py", tmp_path, "--positions")
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("workload") and "0008/0007" in line)
    rows = lines[head + 2 : head + 6]
    assert [line.split()[:2] for line in rows] == [["1", "event/tx"]] * 2 + [["1,000", "events/tx"]] * 2, out
    for line in rows:  # events/s and server time for each contender and their ratios: median (min-max)
        assert line.count(" (") == 6, line


@pytest.mark.slow
def test_relay_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    chosen = os.environ.get("FACTA_TEST_KAFKA", "").strip() or "apache"
    kind = chosen if chosen in ("apache", "noida", "tansu") else "apache"
    backend = "all" if postgres_available else "sqlite"
    out = quick_run("relay.py", tmp_path, "--backend", backend, "--broker", kind)
    for measure in (f"(1) store -> {kind}", "(2) append -> readable"):
        assert measure in out
    assert "relay/raw" in out and "facta relay" in out and "p99 ms" in out


@pytest.mark.slow
def test_projections_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    needs_postgres_and_eventsourcing(postgres_available, "projections.py")
    out = quick_run("projections.py", tmp_path)
    assert "(1) rebuild from the store log" in out and "(1) rebuild from Kafka" in out
    for name in ("account_balances", "ride_board"):
        assert name in out
    assert "facta/raw" in out and "facta/es" in out and "eventsourcing 9.5 ProjectionRunner" in out
    assert "(2) append -> read model" in out and "p99 ms" in out


@pytest.mark.slow
def test_audit_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    if not postgres_available:
        pytest.skip("the audit benchmark needs PostgreSQL")
    out = quick_run("audit.py", tmp_path)
    assert "aim <= 2x" in out and "trace C" in out and "query plans on the 20,000-event store" in out
    assert "Index Scan" in out


@pytest.mark.slow
def test_audit_chain_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    if not postgres_available:
        pytest.skip("the audit benchmark needs PostgreSQL")
    out = quick_run("audit.py", tmp_path, "--chains", "--verify", "2000", "--verify-sqlite")
    assert "hashed / plain" in out and "1,000 events/append" in out
    assert "raw time / verify time" in out and out.count("2,000") >= 2


@pytest.mark.slow
def test_versus_benchmark_quick_run_prints_every_row(postgres_available: bool, tmp_path: Path) -> None:
    needs_postgres_and_eventsourcing(postgres_available, "versus.py")
    out = quick_run("versus.py", tmp_path)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("row ") and "facta/es" in line)
    table = lines[head + 2 : head + 16]
    assert [line.split()[0] for line in table] == [str(n) for n in range(1, 15)], "\n".join(lines[head:])
    for line in table[:11]:  # rows with an eventsourcing contender: both ratios as median (min-max)
        assert line.count("x (") == 2, line
    for line in table[11:13]:  # the relay rows: facta/raw only
        assert line.count("x (") == 1 and "facta/raw >= 0.75x" in line, line
    assert "MiB" in table[13] and "facta < 45 MiB" in table[13]
    assert out.count("load average") == 2


@pytest.mark.slow
def test_eventsourcing_backend_benchmark_quick_run_prints_every_row(postgres_available: bool, tmp_path: Path) -> None:
    needs_postgres_and_eventsourcing(postgres_available, "eventsourcing_backend.py")
    pytest.importorskip("facta.eventsourcing")
    out = quick_run("eventsourcing_backend.py", tmp_path)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("row ") and "facta/es" in line)
    table = lines[head + 2 : head + 16]
    assert [line.split()[0] for line in table] == [str(n) for n in range(1, 15)], "\n".join(lines[head:])
    for dialect, part in (("SQLite", table[:7]), ("PostgreSQL", table[7:])):
        titles = [line.split(None, 1)[1] for line in part]
        for i, what in enumerate(("save, 1 new event", "save, 100 new events", "4 writer processes",
                                  "8 writer processes", "-event aggregate", "snapshot at head", "follower reads")):
            assert titles[i].startswith(dialect) and what in titles[i], titles[i]
    for line in table:  # both rates, one ratio as median (min-max), both peaks, the aim judged
        assert line.count(" ev/s") + line.count(" loads/s") == 2 and line.count("x (") == 1, line
        assert line.rstrip().endswith((" ok", " MISSED")), line
    for line in table[9:11]:  # concurrent PostgreSQL writers
        assert "facta/es >= 1.5x" in line, line
    assert out.count("load average") == 2


@pytest.mark.slow
def test_byte_append_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    out = quick_run("byte_append.py", tmp_path, "--backend", "all" if postgres_available else "sqlite")
    assert "append_bytes/append" in out and out.count("x (") >= 2


@pytest.mark.slow
def test_merkle_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    if not postgres_available:
        pytest.skip("bench/merkle.py runs on PostgreSQL")
    out = quick_run("merkle.py", tmp_path)
    assert "sealed 1,000 events with sealer.seal" in out and "median of per-round ratios" in out
    assert out.count("up to ") == 2 and "offline check" in out


def _telemetry_rows(out: str, workloads: list[str]) -> None:
    """Every workload of a ``--telemetry`` table prints its three contenders (events/s and
    the time ratio over none as median and min-max), the aim row judged and the cost row;
    then what each contender's SDK received."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("workload") and "time / none" in line)
    body = [line for line in lines[head + 2 :] if line.strip()]
    for w, workload in enumerate(workloads):
        block = body[w * 5 : w * 5 + 5]
        assert block[0].startswith(workload), (workload, block)
        for line, label in zip(block, ("none: instrument(False)", "off: no SDK (default)", "on: SDK, no-op export"),
                               strict=False):
            assert label in line, (label, line)
        assert re.search(r" 1\.000 +- +1\.000 +-$", block[0].rstrip()), block[0]
        for line in block[1:5]:  # wall and CPU time over none's: median (min-max) each
            assert len(re.findall(r" \d\.\d{3} +\d\.\d{3}-\d\.\d{3}", line)) == 2, line
        assert "aim: off vs none at most 1.02x slower" in block[3], block[3]
        assert re.search(r"time (met|MISSED), cpu (met|MISSED)$", block[3].rstrip()), block[3]
        assert "cost of on" in block[4] and re.search(r"% time, [-+]\d+\.\d% cpu$", block[4].rstrip()), block[4]
    received = lines[lines.index("what each contender's SDK received over the run:") + 1 :][:3]
    assert [line.split(":")[0].strip() for line in received] == ["none", "off", "on"], received
    assert out.count("load average") == 2


@pytest.mark.slow
def test_append_telemetry_benchmark_quick_run_prints_every_row(postgres_available: bool, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    backends = ["sqlite", "postgresql"] if postgres_available else ["sqlite"]
    out = quick_run("append.py", tmp_path, "--telemetry", "--backend", "all" if postgres_available else "sqlite")
    _telemetry_rows(out, [f"({w}) {what}, {b}" for b in backends for w, what in (("a", "1,000 events/tx"),
                                                                                  ("b", "1 event/tx"))])


@pytest.mark.slow
def test_projections_telemetry_benchmark_quick_run_prints_every_row(postgres_available: bool, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    if not postgres_available:
        pytest.skip("bench/projections.py needs PostgreSQL")
    out = quick_run("projections.py", tmp_path, "--telemetry")
    _telemetry_rows(out, ["(a) replay account_balances from position 0", "(b) ProjectionRunner catch-up, 500 events"])


def test_telemetry_contenders_set_up_what_they_claim() -> None:
    """In a fresh interpreter each: "none" turns both facta switches off; "off" leaves
    them on with no SDK (spans go nowhere); "on" installs SDK providers whose span
    exporter receives a span and whose reader sees a counter's point."""
    pytest.importorskip("opentelemetry.sdk")
    probe = (
        "import sys; sys.path.insert(0, sys.argv[2]); import _telemetry\n"
        "_telemetry.install(sys.argv[1])\n"
        "from facta import metrics, tracing\n"
        "from opentelemetry import metrics as m, trace\n"
        "with trace.get_tracer('probe').start_as_current_span('s'): pass\n"
        "m.get_meter('probe').create_counter('c').add(3)\n"
        "got = _telemetry.recorded()\n"
        "print(tracing.instrumented(), metrics.instrumented(), got['spans'], got['metric points'],"
        " type(trace.get_tracer_provider()).__name__)\n"
    )
    seen = {}
    for mode in ("none", "off", "on"):
        result = subprocess.run([sys.executable, "-c", probe, mode, str(ROOT / "bench")], capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        seen[mode] = result.stdout.split()
    assert seen["none"] == ["False", "False", "0", "0", "ProxyTracerProvider"]
    assert seen["off"] == ["True", "True", "0", "0", "ProxyTracerProvider"]
    assert seen["on"] == ["True", "True", "1", "1", "TracerProvider"]
