"""What the relay and the projections' Kafka source share about talking to Kafka: which
errors are worth a retry, and a pause that a stop request cuts short."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["is_transient", "pause"]


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means Kafka is unreachable or slow (try again later) rather than a
    mistake: connection errors, timeouts (``TimeoutError`` is an ``OSError``), and errors
    Kafka marks retriable."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, RequestTimedOutError

    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, OSError)):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
