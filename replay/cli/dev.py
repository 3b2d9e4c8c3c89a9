"""`facta dev broker`: a local Kafka broker or cluster (:mod:`facta.dev.devbroker`) in the
foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import click

from facta.dev.devbroker import BrokerCluster, BrokerError, default_kind, port_is_free, start_broker, start_cluster
from facta.domain import FactaError

from .app import cli, fail, usage_error
from .options import Folder, WholeNumber
from .output import echo_json, printable, shown


@cli.group()
def dev() -> None:
    """Tools for development: a local Kafka broker or cluster."""


@dev.command("broker")
@click.option("--kind", type=click.Choice(["apache", "noida", "tansu"]), default=None,
              help="apache: Apache Kafka itself, fetched from Maven Central once (needs Java 17+ and Maven; "
                   "the default when java is on PATH). noida (keeps data on disk) and tansu (memory only) are "
                   "stand-ins from PyPI for quick runs.")
@click.option("--nodes", type=WholeNumber(1, 9, "node count"), default=1, show_default=True,
              help="apache only: KRaft nodes, each broker and controller, on consecutive ports from --port; "
                   "3 gives replication factor 3 and min.insync.replicas 2.")
@click.option("--port", type=WholeNumber(0, 65535, "TCP port"), default=9092, show_default=True,
              help="Port on 127.0.0.1 (the first node's with --nodes); 0 picks a free one.")
@click.option("--data-dir", type=Folder(), default=".facta-broker", show_default=True,
              help="Where the broker keeps its data and its log (a cluster: one folder per node).")
@click.option("--json", "as_json", is_flag=True, help="Print where it listens as one JSON line once it answers.")
def dev_broker(kind: str | None, nodes: int, port: int, data_dir: str, as_json: bool) -> None:
    """Run a Kafka broker (or a cluster) in the foreground until Ctrl-C or SIGTERM.

    The first apache run fetches Apache Kafka with Maven into the user's cache
    (~/.cache/facta, or FACTA_CACHE_DIR) and later runs start offline from there. A data
    folder started before keeps its topics and records.

    \b
    Examples:
      facta dev broker
      facta dev broker --nodes 3 --port 19092
      facta dev broker --kind noida --port 0
    """
    chosen = kind or default_kind()
    if nodes > 1 and chosen != "apache":
        raise usage_error(f"--nodes {nodes} needs --kind apache: the {chosen} stand-in runs a single node")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def progress(line: str) -> None:
        click.echo(printable(line), err=True)

    started = time.monotonic()
    try:
        if port and not port_is_free(port):
            raise BrokerError(f"port {port} on 127.0.0.1 is in use: pick another with --port")
        target: Any
        if chosen == "apache":
            target = start_cluster(nodes, data_dir, port or None, progress=progress)
        else:
            target = start_broker(chosen, data_dir=data_dir, port=port or None)  # type: ignore[arg-type]
    except FactaError as exc:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        fail(str(exc))
    startup_s = time.monotonic() - started
    members = target.nodes if isinstance(target, BrokerCluster) else [target]
    try:
        what = (f"Apache Kafka {target.distribution.version}" if isinstance(target, BrokerCluster) and
                target.distribution is not None else chosen)
        shape = f"{nodes}-node cluster" if nodes > 1 else "broker"
        keeps = "keeps data in" if target.keeps_data else "keeps data in memory only; logs to"
        pids = ", ".join(str(m.pid) for m in members)
        if as_json:
            echo_json({
                "kind": chosen, "version": what.removeprefix("Apache Kafka ") if chosen == "apache" else None,
                "nodes": [{"node_id": m.node_id, "bootstrap": m.bootstrap, "pid": m.pid, "data_dir": str(m.data_dir),
                           "log": str(m.log_path)} for m in members],
                "bootstrap": target.bootstrap, "startup_s": round(startup_s, 2), "data_dir": data_dir,
            })
        else:
            click.echo(f"{what} {shape} listening on {target.bootstrap} (pid {pids}; {keeps} {shown(data_dir)}); "
                       f"started in {startup_s:.1f} s")
            click.echo(f"export FACTA_KAFKA_BOOTSTRAP={target.bootstrap}")
        sys.stdout.flush()
        click.echo("press Ctrl-C to stop", err=True)
        while not stop.wait(0.2):
            dead = [m for m in members if not m.running]
            if dead:
                click.echo(printable(f"facta: error: the {dead[0].description} broker exited with code "
                                      f"{dead[0].returncode} (log: {dead[0].log_path})"), err=True)
                target.stop()
                sys.exit(1)
    finally:
        codes = target.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if isinstance(codes, dict) and len(codes) > 1:
        code_text = ", ".join(f"node {node}: {code}" for node, code in codes.items())
    else:
        code_text = str(next(iter(codes.values())) if isinstance(codes, dict) else codes)
    click.echo(f"{what} {shape} stopped (exit code {code_text})", err=True)
