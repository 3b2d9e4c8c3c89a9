"""The benchmarks still run: a quick smoke run of each (its figures are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_append_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing")
    backend = "all" if postgres_available else "sqlite"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "append.py"), "--quick", "--backend", backend],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for workload in ("(a) 1,000 events/tx", "(b) 1 event/tx"):
        assert workload in result.stdout
    assert result.stdout.count("facta/raw") >= 1 and "facta " in result.stdout


@pytest.mark.slow
def test_relay_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    chosen = os.environ.get("FACTA_TEST_KAFKA", "").strip() or "apache"
    kind = chosen if chosen in ("apache", "noida", "tansu") else "apache"
    backend = "all" if postgres_available else "sqlite"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick", "--backend", backend, "--broker", kind],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for measure in (f"(1) store -> {kind}", "(2) append -> readable"):
        assert measure in result.stdout
    assert "relay/raw" in result.stdout and "facta relay" in result.stdout and "p99 ms" in result.stdout


@pytest.mark.slow
def test_projections_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    pytest.importorskip("eventsourcing")
    if not postgres_available:
        pytest.skip("the projections benchmark needs PostgreSQL")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "projections.py"), "--quick"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "(1) rebuild from the store log" in out and "(1) rebuild from Kafka" in out
    for name in ("account_balances", "ride_board"):
        assert name in out
    assert "facta/raw" in out and "facta/es" in out and "eventsourcing 9.5 ProjectionRunner" in out
    assert "(2) append -> read model" in out and "p99 ms" in out


@pytest.mark.slow
def test_audit_benchmark_quick_run(postgres_available: bool, tmp_path: Path) -> None:
    if not postgres_available:
        pytest.skip("the audit benchmark needs PostgreSQL")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "audit.py"), "--quick"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "aim <= 2x" in out and "trace C" in out and "query plans on the 20,000-event store" in out
    assert "Index Scan" in out
