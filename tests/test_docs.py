"""The README's examples run, and its set-up commands are the ones CI uses."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)


def run_block(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = (block.strip() for block in SH_BLOCKS[:2])
    assert demo.endswith("facta demo")
    # Both install in the mode type checkers can follow (tests/test_typecheck.py).
    assert demo.startswith("pip install -e . --config-settings editable_mode=strict && ")
    assert "--config-settings editable_mode=strict" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "the README's test command must be the one .ci/run runs"


def test_the_tour_runs_and_prints_what_its_comments_say(tmp_path: Path) -> None:
    out = run_block(PYTHON_BLOCKS[0], tmp_path)
    assert run_block(PYTHON_BLOCKS[0], tmp_path) == out, "a second run in the same folder prints the same"
    assert "concurrency conflict on stream 'cart-1': expected version 1, actual version 2" in out
    assert "2 {'apple': 3, 'pear': 1}" in out
    assert "{'apple': 3}\n" in out
    assert re.search(r"^1 1 cart\.item_added sku='apple' quantity=3 alice$", out, flags=re.M)
    assert (tmp_path / "tour.db").exists()


def test_the_ride_example_bills_once_and_replays(tmp_path: Path) -> None:
    out = run_block(PYTHON_BLOCKS[1], tmp_path)
    assert run_block(PYTHON_BLOCKS[1], tmp_path) == out, "a second run in the same folder prints the same"
    balances, replayed = out.splitlines()
    assert balances == "[('acct-ann', 4036), ('acct-dan', 964)]", "the comments in the README say so"
    assert replayed == "5 2"
    with sqlite3.connect(tmp_path / "rides.db") as conn:
        moves = conn.execute("SELECT count(*) FROM facta_events WHERE event_type LIKE 'account.transferred%'")
        assert moves.fetchone() == (2,), "billing charged once, and the replay charged nothing"


def test_the_traces_example_records_the_apps_trace_in_the_event(tmp_path: Path) -> None:
    """Operating facta, Traces: the SDK's spans, and the event's stored context."""
    block = PYTHON_BLOCKS[2]
    assert "trace.set_tracer_provider(provider)" in block
    assert run_block(block, tmp_path).splitlines() == ["True", "['append facta_events', 'open account']"]


def test_the_testing_example_is_a_passing_test_module(tmp_path: Path) -> None:
    block = PYTHON_BLOCKS[3]
    assert block.startswith("# test_cart.py; your conftest.py has: pytest_plugins = [\"facta.testing\"]")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["facta.testing"]\n')
    (tmp_path / "test_cart.py").write_text(block)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto", "--rootdir",
         str(tmp_path), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("FACTA_")},
    )
    assert result.returncode == 0 and "3 passed" in result.stdout, result.stdout + result.stderr


def test_the_byte_events_example_prints_what_its_comments_say(tmp_path: Path) -> None:
    block = PYTHON_BLOCKS[4]
    assert "BlockingEventStore.open" in block
    lines = run_block(block, tmp_path).splitlines()
    assert lines[0] == "[b'{\"owner\": \"ann\"}', b'\\x00\\xff']"
    assert re.fullmatch(r'\{"\$opaque": \{"length": 2, "sha256": "[0-9a-f]{64}"\}\}', lines[1])
    assert lines[2] == "41"


EXAMPLE_FILES = ["bankaccounts.py", "bank_day.py", "bank_read_model.py"]


def test_the_eventsourcing_example_shows_its_files_as_they_are() -> None:
    """Blocks 5-7 are the files of examples/eventsourcing_bank/, which
    tests/eventsourcing_example/test_bank_example.py runs end to end."""
    for block, name in zip(PYTHON_BLOCKS[5:8], EXAMPLE_FILES, strict=True):
        header = f"# examples/eventsourcing_bank/{name}\n"
        assert block.startswith(header), block[:80]
        assert block.removeprefix(header) == (ROOT / "examples" / "eventsourcing_bank" / name).read_text(), name


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_every_python_block_is_covered(index: int) -> None:
    assert index < 5 + len(EXAMPLE_FILES), "a new README example needs a test above"
