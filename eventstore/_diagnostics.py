"""How facta shows a caught exception inside its own one-line messages: the relay's and
the projections' Kafka errors, a worker's lost lock, a failing projection handler."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

__all__ = ["describe"]


def describe(exc: BaseException, *, limit: int | None = None) -> str:
    """``exc`` on one line: ``TypeName: message`` with its white space folded, or the type
    name alone when the message is empty. A message that already starts with the type
    name (aiokafka's errors do: ``KafkaConnectionError: ...``) is not prefixed again, and
    a SQLAlchemy ``DBAPIError`` is shown as the driver's exception it wraps (without the
    SQL statement). ``limit``: at most that many characters of the message, then ``...``.
    No I/O; never raises."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        exc = exc.orig
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    if not text:
        return name
    return text if text == name or text.startswith(f"{name}: ") else f"{name}: {text}"
