"""`facta demo --kafka`: the demo's events end up on Kafka, all of them, run after run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .test_cli import facta


def demo_json(tmp_path: Path, *args: str) -> dict[str, Any]:
    result = facta("demo", "--rides", "8", "--seed", "3", "--json", "--kafka", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(json.loads(result.stdout))


def test_demo_streams_to_a_given_cluster(tmp_path: Path, managed_kafka_broker: Any) -> None:
    kafka_broker = managed_kafka_broker  # a broker of its own: the demo writes the default `facta.*` topics
    idempotence = [] if kafka_broker.supports_idempotence else ["--no-idempotence"]
    summary = demo_json(tmp_path, "--kafka-bootstrap", kafka_broker.bootstrap, *idempotence)
    kafka = summary["kafka"]
    assert kafka["bootstrap"] == kafka_broker.bootstrap
    assert kafka["published"] == summary["events_appended"] == summary["log_head"]
    if kafka_broker.reliable_end_offsets:
        assert sum(kafka["topics"].values()) == summary["log_head"]
    assert set(kafka["topics"]) == {"facta.account", "facta.ride"}


def test_demo_with_its_own_broker_continues_run_after_run(tmp_path: Path) -> None:
    first = demo_json(tmp_path)
    second = demo_json(tmp_path)
    assert (tmp_path / ".facta-broker").is_dir()
    assert second["kafka"]["published"] == second["events_appended"]
    assert sum(second["kafka"]["topics"].values()) == second["log_head"] > first["log_head"]
