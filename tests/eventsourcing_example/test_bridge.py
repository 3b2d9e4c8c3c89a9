"""facta.eventsourcing.events: facta event classes read the payloads eventsourcing's
JSONTranscoder made (through eventsourcing's own Mapper here), exactly, and refuse what
they cannot read with one line."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import get_topic

from facta.domain import EventRegistry
from facta.errors import EventDecodeError, EventRegistryError
from facta.eventsourcing.events import (
    OPAQUE_KEY,
    OpaqueEvent,
    TranscodedEvent,
    Transcodings,
    topic_of,
    untranscode,
)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


class PointAsList(Transcoding):
    """A user's own transcoding, registered with the application and with facta."""

    type = Point
    name = "point_list"

    def encode(self, obj: Point) -> list[int]:
        return [obj.x, obj.y]

    def decode(self, data: list[int]) -> dict[str, int]:
        return {"x": data[0], "y": data[1]}


class Parcel(Aggregate):
    @event("Sent")
    def __init__(self, weight: Decimal, recipient: UUID, due: dt.datetime, route: list[Point],
                 tags: dict[str, UUID]) -> None:
        self.weight = weight

    @event("Weighed")
    def weigh(self, weight: Decimal) -> None:
        self.weight = weight


def mapper(*extra: Transcoding) -> Mapper[UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), *extra):
        transcoder.register(transcoding)
    return Mapper(transcoder)


def stored_payloads(*extra: Transcoding) -> tuple[Parcel, list[Any]]:
    """A parcel's events as eventsourcing stores them: (topic, state bytes) pairs."""
    recipient, tagged = UUID(int=7), uuid4()
    due = dt.datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    parcel = Parcel(weight=Decimal("1.250"), recipient=recipient, due=due, route=[Point(1, 2), Point(3, 4)],
                    tags={"insurer": tagged})
    parcel.weigh(Decimal("-0.00"))
    stored = [mapper(*extra).to_stored_event(e) for e in parcel.collect_events()]
    return parcel, stored


def declare(registry: EventRegistry, transcodings: Transcodings) -> tuple[type[TranscodedEvent], type[TranscodedEvent]]:

    class ParcelSent(TranscodedEvent, topic=Parcel.Sent, registry=registry, transcodings=transcodings):
        weight: Decimal
        recipient: UUID
        due: dt.datetime
        route: list[dict[str, int]]
        tags: dict[str, UUID]

    class ParcelWeighed(TranscodedEvent, topic="tests.eventsourcing_example.test_bridge:Parcel.Weighed",
                        registry=registry, transcodings=transcodings):
        weight: Decimal

    return ParcelSent, ParcelWeighed


def test_payloads_from_eventsourcings_mapper_decode_exactly() -> None:
    transcodings = Transcodings()
    transcodings.register(PointAsList())
    registry = EventRegistry()
    sent_cls, weighed_cls = declare(registry, transcodings)
    parcel, (sent, weighed) = stored_payloads(PointAsList())
    assert sent.topic == get_topic(Parcel.Sent) == "tests.eventsourcing_example.test_bridge:Parcel.Sent"
    assert json.loads(sent.state)["weight"] == {"_type_": "decimal_str", "_data_": "1.250"}

    for _ in range(2):  # the second decode takes the registry's cached validator
        decoded = registry.decode(sent.topic, 1, sent.state.decode(), position=1)
        assert isinstance(decoded, sent_cls)
        assert decoded.weight == Decimal("1.250") and str(decoded.weight) == "1.250"
        assert decoded.recipient == UUID(int=7)
        assert decoded.due == dt.datetime(2026, 12, 1, 9, 30, 15, 123456,
                                          tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
        assert decoded.due.utcoffset() == dt.timedelta(hours=5, minutes=30)
        assert decoded.route == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
        assert decoded.tags == {"insurer": next(iter(json_uuids(sent.state)))}
        assert decoded.timestamp == parcel.created_on  # every eventsourcing event's timestamp

    again = registry.decode(weighed.topic, 1, weighed.state, position=2)  # bytes decode too
    assert isinstance(again, weighed_cls)
    assert str(again.weight) == "-0.00"  # Decimal keeps its sign and places
    assert again.timestamp == parcel.modified_on


def json_uuids(state: bytes) -> list[UUID]:
    tags = json.loads(state)["tags"]
    return [UUID(v["_data_"]) for v in tags.values()]


def test_fields_not_declared_are_ignored_and_the_created_events_topic_too() -> None:
    registry = EventRegistry()

    class Sent(TranscodedEvent, topic=Parcel.Sent, registry=registry):
        weight: Decimal

    _, (sent, _) = stored_payloads(PointAsList())
    assert "originator_topic" in json.loads(sent.state)
    # the route's transcoding is unknown to the default transcodings: refused even though
    # the field is not declared (a payload is unwrapped whole, as eventsourcing decodes it)
    with pytest.raises(EventDecodeError, match="transcoding 'point_list' is not registered with facta"):
        registry.decode(sent.topic, 1, sent.state.decode(), position=5)


def test_an_unknown_transcoding_is_one_line_naming_it() -> None:
    registry = EventRegistry()

    class Sent(TranscodedEvent, topic="x:Sent", registry=registry):
        weight: Decimal

    payload = '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T00:00:00+00:00"},"weight":{"_type_":"money","_data_":"1"}}'
    with pytest.raises(EventDecodeError) as caught:
        registry.decode("x:Sent", 1, payload, position=9)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot decode 'x:Sent' v1 at position 9: ")
    assert "transcoding 'money' is not registered with facta (known: datetime_iso, decimal_str, uuid_hex)" in message


@pytest.mark.parametrize(("payload", "problem"), [
    ('{"timestamp":{"_type_":"datetime_iso","_data_":"yesterday"},"weight":"1"}', "Invalid isoformat string"),
    ('{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T00:00:00+00:00"},"weight":{"_type_":"decimal_str","_data_":"1,5"}}',
     "decimal_str data '1,5' is not a decimal number"),
    ('{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T00:00:00+00:00"},"weight":{"_type_":"uuid_hex","_data_":7}}',
     "uuid_hex data must be a str, got int"),
    ('{"weight":"1"}', "timestamp: Field required"),
])
def test_bad_transcoded_data_is_one_line(payload: str, problem: str) -> None:
    registry = EventRegistry()

    class Sent(TranscodedEvent, topic="x:Sent", registry=registry):
        weight: Any

    with pytest.raises(EventDecodeError) as caught:
        registry.decode("x:Sent", 1, payload, position=3)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def opaque(data: bytes) -> str:
    return json.dumps({OPAQUE_KEY: {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}})


def test_an_opaque_payload_is_refused_by_a_transcoded_event_and_read_by_an_opaque_one() -> None:
    ciphered = b"\x8f\x00 not json \xff"
    registry, sealed_registry = EventRegistry(), EventRegistry()

    class Sent(TranscodedEvent, topic="x:Sent", registry=registry):
        weight: Decimal

    class SealedSent(OpaqueEvent, topic="x:Sent", registry=sealed_registry):
        pass

    with pytest.raises(EventDecodeError) as caught:
        registry.decode("x:Sent", 1, opaque(ciphered), position=4)
    digest = hashlib.sha256(ciphered).hexdigest()
    assert str(caught.value) == (
        f"cannot decode 'x:Sent' v1 at position 4: payload: Value error, the payload is opaque (13 bytes, sha256"
        f" {digest}): ciphered or compressed by the application, so facta cannot read its fields; declare 'x:Sent'"
        " with OpaqueEvent (facta.eventsourcing.events) to read such events"
    )
    sealed = sealed_registry.decode("x:Sent", 1, opaque(ciphered), position=4)
    assert isinstance(sealed, SealedSent) and (sealed.length, sealed.sha256) == (13, digest)
    with pytest.raises(EventDecodeError, match="is not facta's '\\$opaque' placeholder but readable JSON"):
        sealed_registry.decode("x:Sent", 1, '{"weight": "1"}', position=5)


def test_untranscode_decodes_innermost_first_and_keeps_other_objects() -> None:
    uid = uuid4()
    value = {"a": [{"_type_": "uuid_hex", "_data_": uid.hex}], "b": {"_type_": "x"}, "c": {"_type_": "decimal_str",
                                                                                       "_data_": "2", "more": 1}}
    assert untranscode(value) == {"a": [uid], "b": {"_type_": "x"}, "c": {"_type_": "decimal_str", "_data_": "2",
                                                                         "more": 1}}


def test_declarations_are_named_by_topic() -> None:
    assert topic_of(Parcel.Weighed) == get_topic(Parcel.Weighed)
    with pytest.raises(EventRegistryError, match="is named by its eventsourcing topic: pass topic=..., not name="):
        class Bad(TranscodedEvent, name="parcel.sent"):  # type: ignore[call-arg]
            pass
    with pytest.raises(EventRegistryError, match="topic must be an eventsourcing event class or its topic str, got int 3"):
        class Worse(TranscodedEvent, topic=3):  # type: ignore[arg-type]
            pass
    with pytest.raises(EventRegistryError, match="a transcoding needs a non-empty str name"):
        Transcodings().register(object())  # type: ignore[arg-type]
    transcodings = Transcodings()
    transcodings.register(PointAsList())
    transcodings.register(PointAsList())  # the same class again: the same decoder
    with pytest.raises(EventRegistryError, match="transcoding 'point_list' is registered already"):
        class Other(PointAsList):
            def decode(self, data: list[int]) -> dict[str, int]:
                return {}
        transcodings.register(Other())


def test_a_standard_transcoding_may_be_taken_over() -> None:
    class CentsAsInt(Transcoding):  # an application that stores decimals as whole cents
        type = Decimal
        name = "decimal_str"

        def encode(self, obj: Decimal) -> int:
            return int(obj * 100)

        def decode(self, data: int) -> Decimal:
            return Decimal(data) / 100

    transcodings = Transcodings()
    transcodings.register(CentsAsInt())
    assert untranscode({"_type_": "decimal_str", "_data_": 1250}, transcodings) == Decimal("12.5")
    assert untranscode({"_type_": "decimal_str", "_data_": "1.5"}) == Decimal("1.5")  # the default ones are untouched
