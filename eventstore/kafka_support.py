"""What the relay and the projections' Kafka source share about talking to Kafka: which
errors are worth a retry, which ones only a new producer clears, a pause that a stop
request cuts short, how a producer or consumer is stopped without hanging, and which
partition a stream's events go to."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from typing import Any

from facta.errors import InvalidValue

__all__ = ["bootstrap_problem", "is_transient", "needs_new_producer", "parse_bootstrap", "partition_for", "pause",
           "stop_quietly"]

_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?")


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs of a Kafka bootstrap list ``host:port[,host:port]``
    (spaces around each item allowed). A host is a name or IPv4 address (ASCII letters,
    digits, '.', '-', '_') or an IPv6 address in brackets (``[::1]:9092``, returned
    without them); a port is 1 to 65535.

    Raises :class:`~facta.errors.InvalidValue` (a ``ValueError``) with one line naming the bad value (``invalid Kafka bootstrap
    address 'x:0': port 0 is outside 1 to 65535``). No I/O.
    """
    problem = bootstrap_problem(bootstrap)
    if problem is not None:
        raise InvalidValue(problem)
    pairs = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        pairs.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return pairs


def bootstrap_problem(bootstrap: object) -> str | None:
    """None when ``bootstrap`` is a valid bootstrap list (see :func:`parse_bootstrap`), else
    the one-line reason, naming the bad value."""
    expected = "expected host:port[,host:port]"
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        return f"invalid Kafka bootstrap address {bootstrap!r}: {expected}"
    shown = bootstrap if len(bootstrap) <= 200 else f"{bootstrap[:200]}...({len(bootstrap)} characters)"
    for item in bootstrap.split(","):
        item = item.strip()
        host, sep, port = item.rpartition(":")
        if not item:
            return f"invalid Kafka bootstrap address {shown!r}: an empty item in the list; {expected}"
        if not sep or not host:
            return f"invalid Kafka bootstrap address {shown!r}: {item!r} has no host:port; {expected}"
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
            except ValueError:
                return f"invalid Kafka bootstrap address {shown!r}: {host!r} is not an IPv6 address in brackets"
            if not host.endswith("]"):
                return f"invalid Kafka bootstrap address {shown!r}: {host!r} is not an IPv6 address in brackets"
        elif ":" in host:
            return (f"invalid Kafka bootstrap address {shown!r}: write the IPv6 address of {item!r} in brackets,"
                    f" e.g. [::1]:9092")
        elif not _HOST_NAME.fullmatch(host):
            return (f"invalid Kafka bootstrap address {shown!r}: {host!r} is not a host name"
                    " (ASCII letters, digits, '.', '-', '_') or address")
        if not (port.isascii() and port.isdigit()) or len(port) > 5 or not 1 <= int(port) <= 65535:
            where = "" if item == bootstrap.strip() else f" of {item!r}"
            return f"invalid Kafka bootstrap address {shown!r}: port {port!r}{where} is not 1 to 65535"
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means Kafka is unreachable or slow (try again later) rather than a
    mistake: connection errors, timeouts (``TimeoutError`` is an ``OSError``), and errors
    Kafka marks retriable."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, RequestTimedOutError

    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, OSError)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


def needs_new_producer(exc: BaseException) -> bool:
    """Whether ``exc`` says the idempotent producer's session is broken: the broker and
    this producer disagree about its producer id, epoch or sequence numbers. Retrying
    with the same producer cannot help (its next batches carry the same state), and
    nothing is wrong with the records, so a new producer, which gets a new producer id
    and starts its sequences at 0, clears it.

    The errors, as aiokafka 0.14 names them:

    - ``OutOfOrderSequenceNumber``: a batch's sequence is not the next one the broker
      expects, e.g. after an earlier batch of the partition expired unsent, or a broker
      lost the producer's state (a broker that restarted without it);
    - ``DuplicateSequenceNumber``: aiokafka treats it as success in produce responses;
      here in case it surfaces elsewhere;
    - ``UnknownProducerId``: the broker no longer knows the producer id (its state was
      removed, e.g. by retention);
    - ``InvalidProducerIdMapping``, ``InvalidProducerEpoch`` and ``ProducerFenced``
      (aiokafka reports ``InvalidProducerEpoch`` in a produce response as
      ``ProducerFenced``): the id or epoch is no longer valid.

    The relay does not use transactions, so "fenced" cannot mean another live instance
    owns its transactional id (one relay is active per store and name anyway).
    """
    from aiokafka.errors import (
        DuplicateSequenceNumber,
        InvalidProducerEpoch,
        InvalidProducerIdMapping,
        OutOfOrderSequenceNumber,
        ProducerFenced,
        UnknownProducerId,
    )

    return isinstance(exc, (OutOfOrderSequenceNumber, DuplicateSequenceNumber, UnknownProducerId,
                            InvalidProducerIdMapping, InvalidProducerEpoch, ProducerFenced))


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The partition of ``partitions`` (a topic's, sorted) that aiokafka's default
    partitioner, the producer's own (murmur2, as Java's client), picks for ``key``: where
    the relay sends a stream's events (the key is the stream id), and where a
    read-your-writes wait (:mod:`facta.projections.wait`) looks for them."""
    from aiokafka.partitioner import DefaultPartitioner  # lazy: aiokafka

    return int(DefaultPartitioner()(key, partitions, partitions))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile (also the worker locks' wait
    between attempts)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def stop_quietly(
    client: Any,
    within_s: float = 30.0,
    *,
    stop: asyncio.Event | None = None,
    until: float | None = None,
    past_until_s: float | None = None,
    unwind_s: float = 5.0,
) -> None:
    """Stop an aiokafka producer or consumer (None: nothing to do) without letting it hang
    the caller; never raises what the client raises. ``within_s``: see below (30 s unless
    given).

    ``client.stop()`` first finishes what the client holds: a producer waits until every
    record it holds is acknowledged or has expired (its request timeout), which keeps a
    request of an abandoned producer from landing after a new producer's; a consumer
    leaves its group, which waits for a join in flight (Kafka completes a join once every
    member it knows has rejoined, waiting for a dead one until its session timeout).

    With ``stop`` (not set yet), that is awaited until ``stop`` is set or the loop time
    ``until`` passes (None: no deadline); then, and at once without ``stop``, the client
    gets ``within_s`` seconds more, at most ``past_until_s`` when it was ``until`` that
    passed. After that the stop is abandoned: its task is cancelled (given ``unwind_s``
    seconds to unwind) and the parts that ``stop()`` would have closed after its flush or
    its leave are closed, 5 s each: a producer's sender and connections, a consumer's
    fetcher and connections (aiokafka has no public way to skip the flush or the leave).
    A producer's records left so are republished by the relay's next run from its
    checkpoint; a consumer left so is dropped by its group after its session timeout, as
    a killed one would be."""
    if client is None:
        return
    stopping = asyncio.ensure_future(client.stop())
    if stop is not None and not stop.is_set():
        waiting = asyncio.ensure_future(stop.wait())
        timeout = None if until is None else max(0.0, until - asyncio.get_running_loop().time())
        try:
            await asyncio.wait({stopping, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not stopping.done() and not stop.is_set() and past_until_s is not None:  # the deadline passed
            within_s = min(within_s, past_until_s)
    if not stopping.done():
        await asyncio.wait({stopping}, timeout=within_s)
    if not stopping.done():
        stopping.cancel()  # leaves the flush, or the join in flight
        await asyncio.wait({stopping}, timeout=unwind_s)
        for name in ("_sender", "_fetcher", "client", "_client"):  # a producer's two, a consumer's two
            part = getattr(client, name, None)
            if part is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(part.close(), 5.0)
    if stopping.done() and not stopping.cancelled():
        stopping.exception()  # retrieved: a failure to stop changes nothing here
