"""What the relay and the projections' Kafka source share about talking to Kafka: which
errors are worth a retry, which ones only a new producer clears, and a pause that a stop
request cuts short."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re

from facta.errors import InvalidValue

__all__ = ["bootstrap_problem", "is_transient", "needs_new_producer", "parse_bootstrap", "pause"]

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


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
