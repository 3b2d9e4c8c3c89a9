"""Development tools: a local Kafka broker or cluster for `facta dev broker`, `facta demo
--kafka` and the test suite (:mod:`facta.dev.devbroker`), and the Apache Kafka
distribution it runs, fetched once with Maven (:mod:`facta.dev.apache_kafka`).

Not part of the library: nothing in ``facta.domain``, ``facta.eventstore`` or
``facta.projections`` imports it.
"""
