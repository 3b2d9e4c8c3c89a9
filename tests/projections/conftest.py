"""Fixtures for the projection tests.

The database fixtures (``migrated_url``, ``backend_url``, ...) come from tests/conftest.py;
the Kafka ones are tests/kafka/conftest.py's, imported here so both folders share one
definition (a fresh broker per test, chosen by ``FACTA_TEST_KAFKA``).
"""

from __future__ import annotations

from ..kafka.conftest import (
    kafka_bootstrap,
    kafka_broker,
    managed_kafka_broker,
    prefix,
    topic_name,
)

__all__ = ["kafka_bootstrap", "kafka_broker", "managed_kafka_broker", "prefix", "topic_name"]
