"""Every `facta` command the README documents, run as written, in the README's order.

A line of a README code block that starts with `facta` is either a command to type as
it stands (run literally) or a synopsis with placeholders (`NAME`, `[--once]`, `(A | B)`),
which maps to the concrete commands below that exercise it. A new line in the README
without an entry here fails `test_every_readme_command_is_covered`, and so does an entry
whose README line is gone.

One thing is changed from the README, named where it happens: local brokers get free
ports instead of 9092 and 19092 (and the address follows them). The `--as-of` example's
`"$(date -u ...)"` is what a shell would make of it: `date` is run and its output put in.

The whole README is followed twice in the same folder, as a newcomer who comes back to it
would: every command must work on a second run too (issue 10, item 15).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .test_cli import FACTA

COMMAND = [FACTA] if FACTA else [sys.executable, "-m", "facta.replay.cli"]

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()
README_BOOTSTRAP = "127.0.0.1:9092"
README_AS_OF = '"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'

# Synopsis line (as in the README, comment stripped) -> the concrete commands run for it.
# `{bootstrap}` is the broker the README's `facta dev broker &` started, `{port}` a free
# port, `{hour_ago}` an ISO time an hour before the run.
SYNOPSES: dict[str, list[str]] = {
    "facta demo [--rides N] [--riders N] [--drivers N] [--seed S] [--json] [--no-projections]": [
        "facta demo --rides 6 --riders 4 --drivers 3 --seed 7 --json",
        "facta demo --rides 4 --no-projections",
    ],
    "facta demo --kafka [--kafka-bootstrap HOST:PORT]": [
        "facta demo --kafka --rides 4 --kafka-bootstrap {bootstrap}",
        # no address: the demo starts a local broker of its own (in a folder of its own,
        # since the README's broker keeps its data in ./.facta-broker here)
        "cd other && facta demo --kafka --rides 4",
    ],
    "facta db upgrade [--revision R] [--json]": ["facta db upgrade --revision head", "facta db upgrade --json"],
    "facta db current [--json]": ["facta db current", "facta db current --json"],
    "facta relay run [--once] [--kafka-bootstrap HOST:PORT] [--topic-prefix P] [--partitions N] [--replication-factor N] [--kafka-request-timeout S] [--no-idempotence] [--json]": [
        "facta relay run --once --kafka-bootstrap {bootstrap} --name readme --topic-prefix readme --partitions 2",
        "facta relay run --once --kafka-bootstrap {bootstrap} --name readme-rf --topic-prefix rf --replication-factor 1"
        " --kafka-request-timeout 10",
        "facta relay run --once --kafka-bootstrap {bootstrap} --name readme-plain --topic-prefix plain --no-idempotence --json",
    ],
    "facta relay status [--json]": ["facta relay status --json", "facta relay status --name readme"],
    "facta relay skip --position P [--name NAME] [--reason TEXT] [--json]": [
        "facta demo --rides 2 --no-projections",  # events relay 'readme' has not published
        "facta relay skip --name readme --position {readme_next} --reason 'a README example' --json",
        "facta relay status --name readme",
    ],
    "facta gdpr forget SUBJECT [--actor NAME] [--yes] [--json]": [
        # a subject of its own: the demo's owners stay readable for the README's later commands
        "facta gdpr forget readme-subject --yes --actor readme",
        "facta gdpr forget readme-subject --yes --json",  # forgotten before: still exit 0
    ],
    "facta dev broker [--kind apache|noida|tansu] [--nodes N] [--port 9092] [--data-dir D] [--json]": [
        "facta dev broker --kind tansu --port {port} --data-dir tansu --json &",
    ],
    "facta projections list [--json]": ["facta projections list", "facta projections list --json"],
    "facta projections run NAME... [--once] [--batch-size N] [--kafka-timeout S] [--kafka-session-timeout S] [--group-prefix P]": [
        "facta projections run account_balances ride_board --once --batch-size 50 --kafka-timeout 10",
        "facta projections run account_balances --once --kafka-session-timeout 6 --group-prefix readme.",
        "facta projections run driver_earnings billing billing_process &",
    ],
    "facta status [--interval S] [--json]": ["facta status --json --interval 0", "facta status --json --interval 0.1"],
    "facta projections wait NAME --position P --timeout S [--json]": [
        "facta projections wait account_balances --position 1 --timeout 30",
        "facta projections wait account_balances --position 1 --timeout 30 --json",
    ],
    "facta projections skip NAME --position P [--reason TEXT]": [
        "facta projections skip driver_earnings --position 1 --reason 'a README example'",
    ],
    "facta projections skipped [NAME] [--json]": [
        "facta projections skipped", "facta projections skipped driver_earnings --json",
    ],
    "facta replay NAME (--from-position P | --from-offset N [--partition K] | --from-time T) [--slice] [--dry-run] [--json]": [
        "facta replay ride_board --from-position 0 --dry-run",
        "facta replay account_balances --from-position 5 --slice --dry-run",
        "facta replay account_balances --from-position 0 --json",
        "facta replay driver_earnings --from-time {hour_ago}",
        "facta replay ride_board --from-offset 0 --partition 0 --dry-run --kafka-bootstrap {bootstrap}",
        # it moves ride_board to Kafka as its source (checked below) ...
        "facta replay ride_board --from-offset 0 --json --kafka-bootstrap {bootstrap}",
        # ... and back to the store log, where the README's commands expect it on a second visit
        "facta replay ride_board --from-position 0 --json",
    ],
}


def readme_blocks() -> list[list[str]]:
    """The `facta` lines of each non-Python code block (comments stripped), in order,
    but for the eventsourcing example's block (:func:`eventsourcing_block`)."""
    return [block for block in all_readme_blocks() if block != eventsourcing_block()]


def eventsourcing_block() -> list[str]:
    """The `facta` lines of the eventsourcing example's block (the section "eventsourcing
    applications on facta"): tests/eventsourcing_example/test_bank_example.py runs that
    block whole, with the application's own lines, on a database and Kafka of its own."""
    section = README.split("## eventsourcing applications on facta\n", 1)[1].split("\n## ", 1)[0]
    body = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    return [re.sub(r"\s+#.*$", "", raw).strip() for raw in body.splitlines()
            if raw.startswith(("facta ", "export FACTA_"))]


def all_readme_blocks() -> list[list[str]]:
    blocks = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S):
        if lang == "python":
            continue
        lines = []
        for raw in body.splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if " && facta " in line:  # the set-up command: `pip install -e . && facta demo`
                line = line[line.index(" && facta ") + 4:]
            if raw.startswith(("facta ", "pip ", "export FACTA_", "FACTA_")) and line.startswith(("facta ", "export")):
                lines.append(line)
        if lines:
            blocks.append(lines)
    return blocks


def is_synopsis(line: str) -> bool:
    line = line.replace(README_AS_OF, "T")  # a command substitution, not a placeholder
    return bool(re.search(r"[\[\](|]|\b(NAME|STREAM_ID|HOST:PORT)\b|\.\.\.", line))


def shell_date() -> str:
    """What the shell puts in for README_AS_OF."""
    return subprocess.run(["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def test_every_readme_command_is_covered() -> None:
    lines = [line for block in readme_blocks() for line in block]
    assert "facta demo" in lines and len(lines) > 20, lines
    uncovered = [line for line in lines if is_synopsis(line) and line not in SYNOPSES]
    assert not uncovered, f"README synopses without concrete runs in this test: {uncovered}"
    stale = [key for key in SYNOPSES if key not in lines]
    assert not stale, f"entries here whose README line is gone: {stale}"
    assert README_BOOTSTRAP in README and README_AS_OF in README
    example = eventsourcing_block()
    assert len(all_readme_blocks()) == len(readme_blocks()) + 1 and len(example) > 3, example


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Session:
    """A shell session following the README in one folder."""

    cwd: Path
    env: dict[str, str]
    background: list[tuple[str, subprocess.Popen[str]]] = field(default_factory=list)

    def run(self, command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        words = shlex.split(command)
        cwd = self.cwd
        if words[:1] == ["cd"]:
            cwd = cwd / words[1]
            cwd.mkdir(exist_ok=True)
            words = words[3:]  # cd DIR && ...
        out_path = None
        if ">" in words:
            out_path = cwd / words[words.index(">") + 1]
            words = words[:words.index(">")]
        assert words[0] == "facta", command
        result = subprocess.run([*COMMAND, *words[1:]], cwd=cwd, env=self.env | (env or {}), capture_output=True,
                                text=True, timeout=300, check=False)
        assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        if out_path is not None:
            out_path.write_text(result.stdout)
        return result

    def start(self, command: str, ready: Callable[[subprocess.Popen[str]], bool], env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
        """A command the README puts in the background (`&`) or that runs until SIGINT."""
        words = shlex.split(command.removesuffix("&"))
        assert words[0] == "facta", command
        proc = subprocess.Popen([*COMMAND, *words[1:]], cwd=self.cwd, env=self.env | (env or {}), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.background.append((command, proc))
        deadline = time.monotonic() + 120
        while not ready(proc):
            if proc.poll() is not None:
                raise AssertionError(f"{command!r} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
            assert time.monotonic() < deadline, f"{command!r} did not get ready in time"
            time.sleep(0.3)
        return proc

    def interrupt(self, proc: subprocess.Popen[str]) -> None:
        """Ctrl-C: the command finishes what it has in flight and exits 0."""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, (proc.args, proc.returncode, out, err)

    def close(self) -> None:
        for _, proc in self.background:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def first_line_says(proc: subprocess.Popen[str], needle: str, *, stream: str = "stdout") -> bool:
    """The command's first line (the broker says where it listens, a projection runner
    what it runs: both after their signal handlers are in place)."""
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    line = pipe.readline()
    assert needle in line, (proc.args, line)
    return True


def test_every_readme_command_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTA_")}
    for visit in (1, 2):  # the second time in the same folder, with what the first left there
        follow_the_readme(Session(tmp_path, env), tmp_path, visit)
    leftovers = sorted(p.name for p in tmp_path.glob("*.lock"))
    assert leftovers == [], "lock files belong in the temp folder, not the user's"


def follow_the_readme(session: Session, tmp_path: Path, visit: int) -> None:
    """Every README command in order; ``visit`` 2: in the folder the first visit left."""
    covered: list[str] = []
    setup, streaming, dev_broker, audit, proofs, command_line, projections = readme_blocks()
    try:
        # -- the set-up command: the demo on ./facta.db --------------------------------
        assert setup == ["facta demo"]
        covered.append("facta demo")
        demo = session.run("facta demo")
        assert "try next:" in demo.stdout and (tmp_path / "facta.db").exists()
        # The demo's own --as-of example works (a time halfway through its run).
        as_of = next(line.strip() for line in demo.stdout.splitlines() if " --as-of " in line)
        assert '"balance"' in session.run(as_of).stdout
        after_demo = datetime.now(UTC) + timedelta(seconds=1)

        # -- streaming to Kafka -----------------------------------------------------------
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"
        assert streaming[0] == "facta dev broker &"
        broker = session.start(f"facta dev broker --port {port}", lambda p: first_line_says(p, "listening on"))
        assert streaming[1] == f"export FACTA_KAFKA_BOOTSTRAP={README_BOOTSTRAP}"
        kafka_env = {"FACTA_KAFKA_BOOTSTRAP": bootstrap}
        covered.extend(streaming[:2])
        for line in streaming[2:]:
            covered.append(line)
            if line == "facta relay run":  # runs until SIGINT; ready once it has caught up
                relay = session.start(line, lambda p: _relay_lag(session, kafka_env) == 0, env=kafka_env)
                session.interrupt(relay)
            else:
                session.run(line, env=kafka_env)

        # -- facta dev broker: each runs in the foreground until Ctrl-C (free ports here) --
        for line in dev_broker:
            covered.append(line)
            concrete = line.replace("--port 19092", "--port 0") if "--port" in line else f"{line} --port {free_port()}"
            ready = '"bootstrap"' if "--json" in concrete else "listening on"
            session.interrupt(session.start(f"{concrete} --data-dir dev-{len(covered)}",
                                            lambda p, ready=ready: first_line_says(p, ready)))

        # -- audit (ids from the demo; --as-of just after it) -----------------------------
        time.sleep(max(0.0, (after_demo - datetime.now(UTC)).total_seconds()))
        for line in audit:
            covered.append(line)
            out = session.run(line.replace(README_AS_OF, shell_date()))
            assert out.stdout.strip(), f"{line!r} printed nothing"
        rows = (tmp_path / "trips.csv").read_text().splitlines()
        assert rows[0].startswith("position,") and len(rows) > 1, rows[:2]

        # -- proving your history (the key made on the first visit signs both) ----------------
        key_env: dict[str, str] = {}
        for line in proofs:
            covered.append(line)
            if line.startswith("export FACTA_SIGNING_KEY_FILE=$PWD/"):
                key_env = {"FACTA_SIGNING_KEY_FILE": str(tmp_path / line.rsplit("/", 1)[1])}
            elif line.startswith("facta audit keygen") and visit == 2:  # the key is there: refused, kept
                refused = subprocess.run([*COMMAND, *shlex.split(line)[1:]], cwd=tmp_path, env=session.env,
                                         capture_output=True, text=True, timeout=300, check=False)
                assert refused.returncode == 2 and "never overwrites a key" in refused.stderr, refused
            elif line.startswith("facta audit prove "):  # the README's id is an example: a demo event's instead
                first = json.loads(session.run("facta audit events --limit 1 --json").stdout)["events"][0]
                session.run(f"facta audit prove {first['event_id']} > {line.rsplit(' ', 1)[1]}")
            else:
                out = session.run(line, env=key_env).stdout
                assert out.strip(), f"{line!r} printed nothing"

        # -- the command line, then projections and replay --------------------------------
        substitutions = {"{bootstrap}": bootstrap, "{hour_ago}": (datetime.now(UTC) - timedelta(hours=1)).isoformat()}
        for line in [*command_line, *projections]:
            covered.append(line)
            for concrete in SYNOPSES.get(line, [line]):
                concrete = concrete.replace("{port}", str(free_port()))
                for placeholder, value in substitutions.items():
                    concrete = concrete.replace(placeholder, value)
                if "{readme_next}" in concrete:  # the first event relay 'readme' has not published
                    status = json.loads(session.run("facta relay status --name readme --json").stdout)
                    concrete = concrete.replace("{readme_next}", str(status["checkpoint"] + 1))
                if concrete.startswith("facta dev broker"):
                    ready = '"bootstrap"' if "--json" in concrete else "listening on"
                    session.interrupt(session.start(concrete, lambda p, ready=ready: first_line_says(p, ready)))
                elif concrete.startswith("facta projections run") and concrete.endswith("&"):
                    runner = session.start(concrete, lambda p: first_line_says(p, "running", stream="stderr"))
                    deadline = time.monotonic() + 60
                    while _lag(session, "driver_earnings") != 0:
                        assert time.monotonic() < deadline, "the runner did not catch up"
                        time.sleep(0.3)
                    session.interrupt(runner)
                else:
                    session.run(concrete)
                if concrete.startswith("facta replay ride_board --from-offset 0 --json"):
                    listed = {p["name"]: p for p in json.loads(session.run("facta projections list --json").stdout)}
                    assert listed["ride_board"]["source"] == "kafka", listed

        listed = {p["name"]: p for p in json.loads(session.run("facta projections list --json").stdout)}
        assert listed["ride_board"]["source"] == "log" and listed["account_balances"]["lag"] == 0, listed
        session.interrupt(broker)
    finally:
        session.close()
    assert covered == [line for block in readme_blocks() for line in block], "a README line was not run"


def _relay_lag(session: Session, env: dict[str, str]) -> int:
    return int(json.loads(session.run("facta relay status --json", env=env).stdout)["lag"])


def _lag(session: Session, name: str) -> int | None:
    listed = json.loads(session.run("facta projections list --json").stdout)
    return next(p["lag"] for p in listed if p["name"] == name)
