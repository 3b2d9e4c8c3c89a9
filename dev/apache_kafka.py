"""Apache Kafka for development and tests: fetched once from Maven Central, run from its jars.

``facta dev broker --kind apache`` and the Kafka test fixtures run Apache Kafka itself,
not a stand-in. This module knows how to get it and how to configure a node; starting,
stopping and killing processes is :mod:`facta.dev.devbroker`'s business.

- **Fetch** (:func:`ensure_distribution`). Maven resolves the pinned server artifact
  ``org.apache.kafka:kafka_2.13:KAFKA_VERSION`` with its runtime dependencies, plus
  ``kafka-tools`` (the console consumer) and Log4j's SLF4J binding (the broker logs
  through SLF4J, and without a binding it logs nothing), and copies the jars into
  ``<cache>/kafka_2.13-<version>/libs``. The cache is per user, outside any repository:
  ``$FACTA_CACHE_DIR``, else ``$XDG_CACHE_HOME/facta``, else ``~/.cache/facta``. Once a
  distribution is complete (its ``facta-distribution.json`` lists every jar), later
  calls run no Maven at all, so the broker starts offline. A file lock makes concurrent
  first calls fetch once.
- **Configure** (:func:`node_properties`). Every node is a combined KRaft broker and
  controller on loopback with a static controller quorum. A cluster of ``n`` nodes gets
  ``default.replication.factor = n`` and ``min.insync.replicas = min(2, n)``, and the
  same for Kafka's internal topics, so acks=all means "on two replicas" in a 3-node
  cluster and a single node works alone.
- **Format** (:func:`format_storage`). KRaft storage is formatted once per node with the
  cluster's id; a data folder that was formatted before is started as it is.

Why 4.3.1: the newest Kafka 4 line with a bug-fix release on Maven Central when this was
pinned (4.4.0 was a .0). aiokafka 0.14 talks to it: produce, the idempotent producer,
transactions, consumer groups, ``DeleteRecords`` and ``ListOffsets`` were tried against it
(``tests/kafka``). Kafka 4 needs Java 17 or newer.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from facta.errors import ApacheKafkaError
from facta.settings import settings

__all__ = [
    "KAFKA_VERSION",
    "MIN_JAVA",
    "SCALA_VERSION",
    "ApacheKafkaError",
    "KafkaDistribution",
    "NodeSpec",
    "cache_root",
    "ensure_distribution",
    "format_storage",
    "java_major_version",
    "new_cluster_id",
    "node_command",
    "node_properties",
    "tool_command",
]

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # the Log4j 2 release Kafka 4.3.1 itself depends on
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17  # Kafka 4 brokers need Java 17 (KIP-1013)
HOST = "127.0.0.1"
MANIFEST = "facta-distribution.json"
FALLBACK = 'or run a stand-in broker with --kind noida (pip install "facta[noida]")'

# Heap for one node. A dev node holds little; three of them fit a small machine.
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)

# Root at INFO (what Kafka's own distribution logs), the chattiest internals at WARN.
LOG4J2_PROPERTIES = """\
status = error
name = facta-dev-broker
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


# Kafka's command-line tools (the console consumer, ...) log warnings only, to stderr, so
# that their stdout is the data.
TOOLS_LOG4J2_PROPERTIES = """\
status = error
name = facta-kafka-tools
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
"""


# -- where things are -------------------------------------------------------------------------


def cache_root() -> Path:
    """The per-user cache: ``$FACTA_CACHE_DIR``, ``$XDG_CACHE_HOME/facta`` or ``~/.cache/facta``."""
    explicit = (settings().cache_dir or "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "facta"


@dataclass(frozen=True, slots=True)
class KafkaDistribution:
    """A complete Apache Kafka server in the cache.

    ``home`` holds ``libs/`` (every jar on the class path) and ``log4j2.properties``;
    ``fetched_s`` is how long Maven took when this call fetched it, 0.0 when it was cached.
    """

    version: str
    home: Path
    java: str
    fetched_s: float = 0.0

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")

    @property
    def log_config(self) -> Path:
        return self.home / "log4j2.properties"


def java_major_version(java: str) -> int | None:
    """The major version ``java -version`` reports (17 for "17.0.15", 8 for "1.8.0"), or None."""
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME", "").strip()
    candidates = [str(Path(java_home) / "bin" / "java")] if java_home else []
    found = shutil.which("java")
    if found:
        candidates.append(found)
    for java in candidates:
        if os.access(java, os.X_OK):
            major = java_major_version(java)
            if major is not None and major >= MIN_JAVA:
                return java
            if major is not None:
                raise ApacheKafkaError(
                    f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+, but {java} is Java {major}: "
                    f"install OpenJDK {MIN_JAVA} (or set JAVA_HOME), {FALLBACK}"
                )
    raise ApacheKafkaError(
        f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA}+ and Maven: java is not on PATH "
        f"(install OpenJDK {MIN_JAVA}, or set JAVA_HOME), {FALLBACK}"
    )


# -- fetching ---------------------------------------------------------------------------------


def _pom(version: str) -> str:
    def dependency(group: str, artifact: str, ver: str) -> str:
        return (f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
                f"<version>{ver}</version></dependency>\n")

    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>dev.facta.devbroker</groupId>\n"
        f"  <artifactId>apache-kafka-{version}</artifactId>\n"
        "  <version>1</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n"
        + dependency("org.apache.kafka", f"kafka_{SCALA_VERSION}", version)
        + dependency("org.apache.kafka", "kafka-tools", version)
        + dependency("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION)
        + "  </dependencies>\n</project>\n"
    )


def _complete(home: Path, version: str) -> bool:
    """Whether ``home`` holds a finished fetch of ``version``: its manifest and every jar it lists."""
    try:
        manifest = json.loads((home / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    jars = manifest.get("jars") if isinstance(manifest, dict) else None
    if manifest.get("version") != version or not isinstance(jars, list) or not jars:
        return False
    libs = home / "libs"
    return all(isinstance(name, str) and (libs / name).is_file() for name in jars) and (home / "log4j2.properties").is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _maven_failure(output: str) -> str:
    """The first line of Maven's output that says what went wrong."""
    for line in output.splitlines():
        text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if text.startswith("[ERROR]") and len(text) > len("[ERROR] "):
            return text.removeprefix("[ERROR]").strip()
    tail = [line.strip() for line in output.splitlines() if line.strip()]
    return tail[-1] if tail else "no output"


def ensure_distribution(
    version: str = KAFKA_VERSION,
    *,
    cache: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> KafkaDistribution:
    """Apache Kafka ``version`` in the cache, fetched with Maven on the first call.

    Returns at once, without Maven, when the cache holds it already. ``progress`` gets one
    line before a fetch starts (a fetch takes tens of seconds on a cold Maven cache).

    Raises :class:`ApacheKafkaError` (one line) when Java 17+ or Maven is missing, when
    the cache folder cannot be created (``FACTA_CACHE_DIR`` names a file, say), or when
    Maven cannot resolve the artifacts (offline, a missing version); nothing half-fetched
    is left in the cache.
    """
    java = _find_java()
    root = cache if cache is not None else cache_root()
    home = root / f"kafka_{SCALA_VERSION}-{version}"
    if _complete(home, version):
        return KafkaDistribution(version, home, java)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ApacheKafkaError(
            f"cannot use the cache folder {str(root)!r} for Apache Kafka {version} ({exc.strerror or exc}): "
            "set FACTA_CACHE_DIR to a folder you can write to"
        ) from None
    with _locked(root / f"kafka_{SCALA_VERSION}-{version}.lock"):
        if _complete(home, version):  # another process fetched it while we waited
            return KafkaDistribution(version, home, java)
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ApacheKafkaError(
                f"Apache Kafka {version} is fetched from Maven Central with Maven, and mvn is not on PATH "
                f"(install Maven), {FALLBACK}"
            )
        if progress is not None:
            progress(f"fetching Apache Kafka {version} from Maven Central into {home} (once)")
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=f".kafka-{version}-", dir=root))
        try:
            (staging / "pom.xml").write_text(_pom(version))
            command = [
                mvn, "-B", "-q", "-f", str(staging / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}", "-DincludeScope=runtime",
            ]
            try:
                result = subprocess.run(command, cwd=staging, capture_output=True, text=True, timeout=900, check=False)
            except subprocess.TimeoutExpired as exc:
                raise ApacheKafkaError(f"fetching Apache Kafka {version} with Maven took over 15 minutes: "
                                       f"check the network or Maven's settings, {FALLBACK}") from exc
            jars = sorted(p.name for p in (staging / "libs").glob("*.jar")) if (staging / "libs").is_dir() else []
            if result.returncode != 0 or f"kafka_{SCALA_VERSION}-{version}.jar" not in jars:
                raise ApacheKafkaError(
                    f"Maven could not fetch Apache Kafka {version} (org.apache.kafka:kafka_{SCALA_VERSION}:{version}, "
                    f"exit code {result.returncode}): {_maven_failure(result.stdout + result.stderr)}; {FALLBACK}"
                )
            (staging / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
            (staging / "tools-log4j2.properties").write_text(TOOLS_LOG4J2_PROPERTIES)
            (staging / MANIFEST).write_text(json.dumps({"version": version, "jars": jars}, indent=1) + "\n")
            if home.exists():  # an incomplete earlier fetch
                shutil.rmtree(home)
            staging.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return KafkaDistribution(version, home, java, fetched_s=time.monotonic() - started)


# -- configuring and formatting ---------------------------------------------------------------


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters).

    Never one that starts with ``-``: command-line parsers (Kafka's storage tool among
    them) read such a value as an option. Kafka's own ``Uuid.randomUuid`` draws again for
    the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One KRaft node (broker and controller) of a cluster on loopback.

    ``port`` serves clients; ``controller_port`` the quorum. ``voters`` maps every node id
    of the cluster to its controller port. ``data_dir`` holds ``server.properties``, the
    node's log (``broker.log``) and its storage (``kraft``).
    """

    node_id: int
    port: int
    controller_port: int
    voters: tuple[tuple[int, int], ...]
    data_dir: Path
    cluster_id: str

    @property
    def cluster_size(self) -> int:
        return len(self.voters)

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "kraft"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"


def node_properties(spec: NodeSpec) -> str:
    """``server.properties`` for one node (see the module's docstring for the choices)."""
    n = spec.cluster_size
    isr = min(2, n)
    voters = ",".join(f"{node}@{HOST}:{port}" for node, port in spec.voters)
    settings = {
        "process.roles": "broker,controller",
        "node.id": spec.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{spec.port},CONTROLLER://{HOST}:{spec.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{spec.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": spec.storage_dir,
        "num.partitions": 1,
        "default.replication.factor": n,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": n,
        "offsets.topic.num.partitions": 10,  # Kafka's 50 only make a dev node's first group slower
        "transaction.state.log.replication.factor": n,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": 10,
        "group.initial.rebalance.delay.ms": 0,  # a dev node has no fleet of members to wait for
        "unclean.leader.election.enable": "false",
    }
    lines = [f"# written by facta dev broker for node {spec.node_id} of {n}"]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def node_command(dist: KafkaDistribution, spec: NodeSpec) -> list[str]:
    """The command line that runs one node in the foreground (SIGTERM: a controlled shutdown)."""
    return [
        dist.java, *JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={dist.log_config}",
        f"-Dkafka.logs.dir={spec.data_dir}",
        "-cp", dist.classpath,
        "kafka.Kafka", str(spec.properties_path),
    ]


def tool_command(dist: KafkaDistribution, main_class: str, *args: str) -> list[str]:
    """The command line that runs one of Kafka's own tools from the cached jars.

    ``main_class`` is the tool's class, e.g.
    ``org.apache.kafka.tools.consumer.ConsoleConsumer`` (what ``kafka-console-consumer.sh``
    runs). The tool logs warnings to stderr only, so its stdout is its output.
    """
    config = dist.home / "tools-log4j2.properties"
    if not config.is_file():
        config.write_text(TOOLS_LOG4J2_PROPERTIES)
    return [dist.java, "-Xmx256m", f"-Dlog4j2.configurationFile={config}", "-cp", dist.classpath, main_class, *args]


def format_storage(dist: KafkaDistribution, spec: NodeSpec) -> bool:
    """Write the node's ``server.properties`` and format its storage unless it was formatted.

    Returns True when it formatted. Raises :class:`ApacheKafkaError` when the storage
    belongs to another cluster or the format fails.
    """
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    spec.properties_path.write_text(node_properties(spec))
    meta = spec.storage_dir / "meta.properties"
    if meta.is_file():
        found = re.search(r"^cluster\.id=(.+)$", meta.read_text(), flags=re.M)
        if found is not None and found.group(1).strip() != spec.cluster_id:
            raise ApacheKafkaError(
                f"{spec.storage_dir} belongs to Kafka cluster {found.group(1).strip()}, not {spec.cluster_id}: "
                f"use a new data folder"
            )
        return False
    command = [
        dist.java, "-Xmx256m", f"-Dlog4j2.configurationFile={dist.log_config}", "-cp", dist.classpath,
        # --cluster-id=ID: an id from an older layout may start with "-", which "-t ID" would misread
        "kafka.tools.StorageTool", "format", f"--cluster-id={spec.cluster_id}", "-c", str(spec.properties_path),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    log_path = spec.data_dir / "format.log"
    log_path.write_text(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}exit code {result.returncode}\n")
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        causes = [line for line in lines if " INFO " not in line and " WARN " not in line] or lines
        raise ApacheKafkaError(
            f"formatting Kafka storage in {spec.storage_dir} failed (exit code {result.returncode}): "
            f"{causes[-1] if causes else 'no output'} (log: {log_path})"
        )
    return True
