"""The modelling kit: event registration, decoding, upcasting, the aggregate base."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from facta.domain import (
    Aggregate,
    AggregateState,
    DomainError,
    DomainEvent,
    EventDecodeError,
    EventRegistry,
    EventRegistryError,
    UnknownEventType,
    applies,
)

registry = EventRegistry()


class Renamed(DomainEvent, name="kit.renamed", version=2, registry=registry):
    name: str
    reason: str


@registry.upcaster("kit.renamed", 1)
def _v1(data: dict[str, object]) -> dict[str, object]:
    return {"name": data["new_name"], "reason": "unknown"}


def test_events_carry_name_and_version_and_are_frozen() -> None:
    event = Renamed(name="a", reason="b")
    assert (Renamed.event_type, Renamed.schema_version) == ("kit.renamed", 2)
    with pytest.raises(ValidationError, match="frozen"):
        event.name = "c"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="reason"):
        Renamed(name="a")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Extra inputs"):
        Renamed(name="a", reason="b", colour="red")  # type: ignore[call-arg]


def test_decode_current_and_upcast_older_versions() -> None:
    assert registry.decode("kit.renamed", 2, '{"name": "x", "reason": "y"}') == Renamed(name="x", reason="y")
    assert registry.decode("kit.renamed", 2, {"name": "x", "reason": "y"}) == Renamed(name="x", reason="y")
    assert registry.decode("kit.renamed", 1, '{"new_name": "x"}') == Renamed(name="x", reason="unknown")


@pytest.mark.parametrize(("args", "error", "message"), [
    (("kit.nope", 1, "{}", 7), UnknownEventType, "unknown event type 'kit.nope' at position 7: register its class"),
    (("kit.renamed", 3, "{}", 8), EventDecodeError, "'kit.renamed' v3 at position 8: stored version is newer"),
    (("kit.renamed", 2, "{not json", 9), EventDecodeError, "'kit.renamed' v2 at position 9: "),
    (("kit.renamed", 2, '{"name": 1, "reason": "r"}', 10), EventDecodeError, "at position 10: name: Input should be"),
    (("kit.renamed", 0, "{}", 11), EventDecodeError, "no upcaster from v0 to v1"),
])
def test_decode_errors_name_type_version_and_position(args: tuple[object, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        registry.decode(*args)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_registration_mistakes_are_refused() -> None:
    with pytest.raises(EventRegistryError, match="already registered"):
        class Clash(DomainEvent, name="kit.renamed", registry=registry):
            x: int
    with pytest.raises(EventRegistryError, match="version >= 1"):
        class Zero(DomainEvent, name="kit.zero", version=0, registry=registry):
            x: int
    with pytest.raises(EventRegistryError, match="registered twice"):
        registry.upcaster("kit.renamed", 1)(lambda d: d)
    assert "kit.zero" not in registry


class Toggled(DomainEvent, name="kit.toggled"):
    on: bool


class Unhandled(DomainEvent, name="kit.unhandled"):
    pass


class Switch(Aggregate, stream_type="switch"):
    class State(AggregateState):
        on: bool = False
        flips: int = 0

    def flip(self) -> None:
        self._emit(Toggled(on=not self.state.on))

    def break_it(self) -> None:
        self._emit(Unhandled())

    @applies(Toggled)
    def _toggled(self, event: Toggled) -> None:
        self.state.on = event.on
        self.state.flips += 1


def test_aggregate_tracks_version_and_pending_events() -> None:
    switch = Switch("s-1")
    switch.flip()
    switch.flip()
    assert (switch.version, switch.saved_version, switch.state.flips) == (2, 0, 2)
    pending = switch.pending_events
    assert [p.event for p in pending] == [Toggled(on=True), Toggled(on=False)]
    assert len({p.event_id for p in pending}) == 2 and all(p.occurred_at.tzinfo for p in pending)
    switch.mark_saved()
    assert (switch.pending_events, switch.saved_version) == ([], 2)


def test_rehydrate_reproduces_state_from_events_or_a_snapshot() -> None:
    switch = Switch("s-2")
    for _ in range(3):
        switch.flip()
    events = [p.event for p in switch.pending_events]
    again = Switch.rehydrate("s-2", events)
    assert (again.version, again.state) == (switch.version, switch.state)
    partial = Switch.rehydrate("s-2", events[2:], state=Switch.rehydrate("s-2", events[:2]).state, version=2)
    assert (partial.version, partial.state) == (switch.version, switch.state)


def test_aggregate_mistakes_are_clear() -> None:
    with pytest.raises(DomainError, match="id must be a non-empty string, got ''"):
        Switch("")
    with pytest.raises(EventRegistryError, match="Switch has no handler for Unhandled"):
        Switch("s-3").break_it()
    with pytest.raises(EventRegistryError, match="two handlers for Toggled"):
        class Twice(Aggregate, stream_type="twice"):
            @applies(Toggled)
            def _a(self, event: Toggled) -> None:
                pass

            @applies(Toggled)
            def _b(self, event: Toggled) -> None:
                pass


def test_subclasses_inherit_and_override_handlers() -> None:
    class LoudSwitch(Switch, stream_type="loud_switch"):
        @applies(Toggled)
        def _toggled(self, event: Toggled) -> None:
            super()._toggled(event)
            self.state.flips += 10

    loud = LoudSwitch("l-1")
    loud.flip()
    assert (loud.state.on, loud.state.flips, loud.stream_type, Switch.stream_type) == (True, 11, "loud_switch", "switch")


def test_decode_fast_lane_keeps_errors_and_follows_re_registration() -> None:
    """After a first decode the registry keeps the class's JSON validator for that (type,
    version); the same payloads decode to equal events, bad ones still raise the full
    EventDecodeError, and registering the class again (a new version) drops the lane, so
    the old version is upcast."""
    lane = EventRegistry()

    def point_class(version: int) -> type[DomainEvent]:
        class Point(DomainEvent, name="kit.point", version=version, registry=lane):
            x: int
            y: int = 0
        return Point

    v1 = point_class(1)
    assert lane.decode("kit.point", 1, '{"x": 1}') == v1(x=1)
    assert ("kit.point", 1) in lane._json_validators
    assert lane.decode("kit.point", 1, b'{"x": 2, "y": 3}') == v1(x=2, y=3)
    with pytest.raises(EventDecodeError, match="'kit.point' v1 at position 4: x: Input should be a valid integer"):
        lane.decode("kit.point", 1, '{"x": "a"}', 4)
    with pytest.raises(EventDecodeError, match="at position 5: colour: Extra inputs are not permitted"):
        lane.decode("kit.point", 1, '{"x": 1, "colour": "red"}', 5)

    v2 = point_class(2)
    assert ("kit.point", 1) not in lane._json_validators
    lane.upcaster("kit.point", 1)(lambda data: {**data, "y": -1})
    assert lane.decode("kit.point", 1, '{"x": 1}') == v2(x=1, y=-1)
    assert lane.decode("kit.point", 2, '{"x": 1}') == v2(x=1, y=0)
