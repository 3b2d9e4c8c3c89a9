"""Fixtures for the projection tests.

The database fixtures (``migrated_url``, ``backend_url``, ...) come from tests/conftest.py
and the Kafka ones (``kafka_broker``, ``managed_kafka_broker``, ``kafka_cluster``, ...)
from tests/kafka_fixtures.py, which it loads for the whole suite.
"""
