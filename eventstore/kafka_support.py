"""What the relay and the projections' Kafka source share about talking to Kafka: which
errors are worth a retry, which ones only a new producer clears, and a pause that a stop
request cuts short."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["is_transient", "needs_new_producer", "pause"]


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
