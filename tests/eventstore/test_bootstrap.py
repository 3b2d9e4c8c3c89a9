"""Kafka bootstrap lists: one check, used by the relay, the projections' Kafka source and
the CLI (issue 10, leftover 2)."""

from __future__ import annotations

import pytest

from facta.eventstore.kafka_support import parse_bootstrap
from facta.eventstore.relay import RelayConfig, RelayError
from facta.projections import KafkaSettings, ProjectionError


@pytest.mark.parametrize(("bootstrap", "pairs"), [
    ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
    (" a:1 , b.example-1.com:65535", [("a", 1), ("b.example-1.com", 65535)]),
    ("[::1]:9092,[fe80::1]:19092", [("::1", 9092), ("fe80::1", 19092)]),
    ("kafka_0:9093", [("kafka_0", 9093)]),
])
def test_good_bootstrap_lists_parse(bootstrap: str, pairs: list[tuple[str, int]]) -> None:
    assert parse_bootstrap(bootstrap) == pairs
    assert RelayConfig(bootstrap=bootstrap).bootstrap == bootstrap
    assert KafkaSettings(bootstrap=bootstrap).bootstrap == bootstrap


@pytest.mark.parametrize(("bootstrap", "reason"), [
    ("127.0.0.1:99999", "port '99999' is not 1 to 65535"),
    ("127.0.0.1:0", "port '0' is not 1 to 65535"),
    ("127.0.0.1:-1", "port '-1' is not 1 to 65535"),
    ("127.0.0.1:٣", "port '٣' is not 1 to 65535"),
    ("a:1,b:0", "port '0' of 'b:0' is not 1 to 65535"),
    ("", "expected host:port[,host:port]"),
    ("nohost", "'nohost' has no host:port; expected host:port[,host:port]"),
    (":9092", "':9092' has no host:port; expected host:port[,host:port]"),
    ("a:1,", "an empty item in the list; expected host:port[,host:port]"),
    ("::1:9092", "write the IPv6 address of '::1:9092' in brackets, e.g. [::1]:9092"),
    ("[::1:9092", "'[::1' is not an IPv6 address in brackets"),
    ("[nothing]:9092", "'[nothing]' is not an IPv6 address in brackets"),
    ("a b:1", "'a b' is not a host name (ASCII letters, digits, '.', '-', '_') or address"),
])
def test_bad_bootstrap_lists_are_one_line_everywhere(bootstrap: str, reason: str) -> None:
    message = f"invalid Kafka bootstrap address {bootstrap!r}: {reason}"
    with pytest.raises(ValueError) as plain:
        parse_bootstrap(bootstrap)
    with pytest.raises(RelayError) as relay:
        RelayConfig(bootstrap=bootstrap)
    with pytest.raises(ProjectionError) as projection:
        KafkaSettings(bootstrap=bootstrap)
    assert str(plain.value) == str(relay.value) == str(projection.value) == message


def test_a_bootstrap_that_is_not_text_is_refused() -> None:
    with pytest.raises(ProjectionError, match=r"^invalid Kafka bootstrap address 9092: expected host:port"):
        KafkaSettings(bootstrap=9092)  # type: ignore[arg-type]


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:99999", "127.0.0.1:0", "nohost"])
def test_waiting_for_a_broker_at_a_bad_bootstrap_is_refused_at_once(bootstrap: str) -> None:
    from facta.dev.devbroker import BrokerError, wait_for_kafka

    with pytest.raises(BrokerError, match=r"^invalid Kafka bootstrap address ") as caught:
        wait_for_kafka(bootstrap, timeout=30.0)
    assert repr(bootstrap) in str(caught.value)
