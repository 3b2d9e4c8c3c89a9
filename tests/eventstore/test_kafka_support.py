"""Which Kafka errors the relay retries, which ones make it start a new producer, and which
ones stop it (eventstore/kafka_support.py). No broker needed: the errors are built the way
aiokafka builds them from a produce response (``for_code`` of the broker's error code)."""

from __future__ import annotations

import asyncio

import aiokafka.errors as errors
import pytest

from facta.eventstore.kafka_support import is_transient, needs_new_producer
from facta.eventstore.relay import RelayConfig, RelayError, new_topic

# Broker error codes (the Kafka protocol's) that say the producer's idempotence session is
# broken, and aiokafka's own ProducerFenced, which it raises for INVALID_PRODUCER_EPOCH.
SESSION_CODES = {
    45: "OutOfOrderSequenceNumber",
    46: "DuplicateSequenceNumber",
    47: "InvalidProducerEpoch",
    49: "InvalidProducerIdMapping",
    59: "UnknownProducerId",
}
# Errors about the records or the request themselves: a new producer would meet them again.
RECORD_CODES = {
    2: "CorruptRecordException",
    10: "MessageSizeTooLargeError",
    17: "InvalidTopicError",
    18: "RecordListTooLargeError",
    29: "TopicAuthorizationFailedError",
    32: "InvalidTimestampError",
    44: "PolicyViolationError",
}
# Kafka unreachable or in a leader change: the same producer, retried, gets through.
TRANSIENT_CODES = {6: "NotLeaderForPartitionError", 19: "NotEnoughReplicasError", 7: "RequestTimedOutError"}


@pytest.mark.parametrize("code", sorted(SESSION_CODES))
def test_producer_session_errors_from_the_broker_need_a_new_producer(code: int) -> None:
    error = errors.for_code(code)
    assert error.__name__ == SESSION_CODES[code], "aiokafka maps this broker code to the class named here"
    assert needs_new_producer(error())
    assert not is_transient(error()), f"{error.__name__} would be retried on the same producer"


def test_aiokafkas_producer_fenced_needs_a_new_producer() -> None:
    fenced = errors.ProducerFenced()
    assert needs_new_producer(fenced) and not is_transient(fenced)


@pytest.mark.parametrize("code", sorted(RECORD_CODES))
def test_record_errors_are_neither_transient_nor_cleared_by_a_new_producer(code: int) -> None:
    error = errors.for_code(code)
    assert error.__name__ == RECORD_CODES[code]
    assert not needs_new_producer(error()) and not is_transient(error())


def test_client_side_record_errors_stop_the_relay_too() -> None:
    for exc in (errors.RecordTooLargeError("too big"), errors.MessageSizeTooLargeError(),
                errors.KafkaError("Unexpected error during batch delivery")):
        assert not needs_new_producer(exc) and not is_transient(exc), type(exc).__name__


@pytest.mark.parametrize("code", sorted(TRANSIENT_CODES))
def test_transient_broker_errors_are_retried_not_new_sessions(code: int) -> None:
    error = errors.for_code(code)
    assert error.__name__ == TRANSIENT_CODES[code]
    assert is_transient(error()) and not needs_new_producer(error())


def test_connection_errors_and_timeouts_are_transient() -> None:
    for exc in (errors.KafkaConnectionError("refused"), errors.KafkaTimeoutError(), TimeoutError(),
                ConnectionRefusedError()):
        assert is_transient(exc) and not needs_new_producer(exc), type(exc).__name__


def test_non_kafka_errors_are_neither() -> None:
    for exc in (ValueError("x"), RuntimeError("y")):
        assert not is_transient(exc) and not needs_new_producer(exc)


# -- replication factor and other settings ----------------------------------------------------


def test_replication_factor_defaults_to_the_clusters_own() -> None:
    assert RelayConfig(bootstrap="127.0.0.1:9092").replication_factor is None
    topic = new_topic("facta.ride", 3, None)
    assert (topic.num_partitions, topic.replication_factor) == (3, -1), "-1: the broker's default.replication.factor"
    topic = new_topic("facta.ride", 5, 2)
    assert (topic.num_partitions, topic.replication_factor) == (5, 2)


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("replication_factor", 0, "replication factor 0"),
    ("partitions", -1, "partitions -1"),
    ("batch_size", 0, "batch size 0"),
    ("request_timeout_ms", 0, "request timeout 0 ms"),
])
def test_bad_settings_are_one_line_errors_naming_the_value(field: str, value: int, shown: str) -> None:
    with pytest.raises(RelayError) as info:
        RelayConfig(bootstrap="127.0.0.1:9092", **{field: value})
    assert shown in str(info.value) and "\n" not in str(info.value)


# -- describe and stop_quietly: one of each for the relay, the locks and the projections (issue 11, item 9)


def test_describe_is_one_line_naming_the_type_once() -> None:
    from sqlalchemy.exc import OperationalError

    from facta.eventstore._diagnostics import describe

    assert describe(ValueError("bad\n  value\tthere")) == "ValueError: bad value there"
    assert describe(ValueError()) == "ValueError"
    # aiokafka's errors start their text with their type: not named twice (the relay and
    # the locks used to print "KafkaConnectionError: KafkaConnectionError: ...").
    assert describe(errors.KafkaConnectionError("no route")) == "KafkaConnectionError: no route"
    assert describe(errors.KafkaConnectionError()) == "KafkaConnectionError"
    assert describe(ValueError("ValueErrors all the way")) == "ValueError: ValueErrors all the way"
    # A SQLAlchemy error is shown as the driver's, without the statement.
    wrapped = OperationalError("SELECT 1", {}, ConnectionResetError("connection reset"))
    assert describe(wrapped) == "ConnectionResetError: connection reset"
    assert describe(ValueError("x" * 400), limit=300) == "ValueError: " + "x" * 300 + "..."
    assert describe(ValueError("x" * 300), limit=300) == "ValueError: " + "x" * 300


class _Part:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class _HangingConsumer:
    """stop() never ends (a leave waiting for a join in flight)."""

    def __init__(self) -> None:
        self._fetcher, self._client = _Part(), _Part()
        self.cancelled = False

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


class _HangingProducer(_HangingConsumer):
    """stop() never ends (a flush waiting for acknowledgements)."""

    def __init__(self) -> None:
        super().__init__()
        del self._fetcher, self._client
        self._sender, self.client = _Part(), _Part()


class _FailingClient:
    async def stop(self) -> None:
        raise RuntimeError("already closed")


async def test_stop_quietly_abandons_a_hanging_stop_and_closes_the_parts() -> None:
    from facta.eventstore.kafka_support import stop_quietly

    consumer, producer = _HangingConsumer(), _HangingProducer()
    await stop_quietly(consumer, 0.01, unwind_s=1.0)
    assert consumer.cancelled and consumer._fetcher.closed and consumer._client.closed
    stop = asyncio.Event()
    stop.set()  # set already: the grace period starts at once
    await stop_quietly(producer, 0.01, stop=stop, unwind_s=1.0)
    assert producer.cancelled and producer._sender.closed and producer.client.closed
    # A deadline that has passed: the client gets past_until_s, not within_s.
    late = _HangingProducer()
    done = asyncio.ensure_future(stop_quietly(late, 3600, stop=asyncio.Event(), until=0.0, past_until_s=0.01,
                                              unwind_s=1.0))
    await asyncio.wait_for(done, 60)
    assert late.cancelled and late._sender.closed
    await stop_quietly(None, 0.01)  # nothing to stop
    await stop_quietly(_FailingClient(), 0.01)  # what stop() raises is not raised
