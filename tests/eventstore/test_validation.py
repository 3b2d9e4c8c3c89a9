"""What the store refuses before any I/O, and what it stores exactly (issue 10, items 3, 8
and 21), on SQLite and PostgreSQL: every refusal is one line naming the field and the
limit, and leaves the database untouched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import Field
from sqlalchemy import text

from facta.domain import Aggregate, AggregateState, DomainEvent, PendingEvent, applies
from facta.eventstore import (
    DatabaseURLError,
    EventStore,
    InvalidValue,
    Repository,
    Snapshot,
    StreamAppend,
    audit,
)
from facta.eventstore.validation import INT32, INT64, MAX_DEPTH, MAX_INT_DIGITS, TEXT_LIMITS


class FareCharged(DomainEvent, name="vtest.fare_charged"):
    amount: float
    note: str = ""


class Loose(DomainEvent, name="vtest.loose"):
    """An event with untyped fields."""

    value: Any = None
    items: list[Any] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)


class Stamped(DomainEvent, name="vtest.stamped"):
    at: datetime


class Meter(Aggregate, stream_type="vtest_meter"):
    class State(AggregateState):
        total: float = 0.0

    def charge(self, amount: float) -> None:
        self._emit(FareCharged(amount=amount))

    @applies(FareCharged)
    def _charged(self, event: FareCharged) -> None:
        self.state.total *= event.amount


def sid() -> str:
    return f"v-{uuid.uuid4().hex[:10]}"


async def count_rows(store: EventStore, table: str = "facta_events") -> int:
    query = text(f"SELECT count(*) FROM {table}")
    return int(await store.database.read(lambda conn: conn.execute(query).scalar_one()))


async def refused(store: EventStore, match: str, call: Any) -> str:
    """Run ``call()``; it must raise one-line InvalidValue matching ``match`` and write nothing."""
    before = await count_rows(store), await count_rows(store, "facta_snapshots")
    with pytest.raises(InvalidValue, match=match) as caught:
        await call()
    message = str(caught.value)
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)
    assert (await count_rows(store), await count_rows(store, "facta_snapshots")) == before
    return message


def test_the_table_of_limits_is_the_schema() -> None:
    from facta.eventstore import schema

    assert TEXT_LIMITS == {
        "stream id": 255, "stream type": 100, "event type": 200, "actor": 255, "correlation id": 255,
        "causation id": 255, "state schema": 200, "relay name": 200, "tracking name": 200,
        "projection name": 200, "skipped by": 200, "skip reason": 1000,  # a skip's reason is TEXT: 1000 is facta's own limit
    }
    assert schema.projection_skips.c.skipped_by.type.length == TEXT_LIMITS["skipped by"]  # type: ignore[attr-defined]
    assert schema.relay_skips.c.skipped_by.type.length == TEXT_LIMITS["skipped by"]  # type: ignore[attr-defined]
    assert schema.events.c.stream_id.type.length == TEXT_LIMITS["stream id"]  # type: ignore[attr-defined]
    assert schema.tracking.c.name.type.length == TEXT_LIMITS["tracking name"]  # type: ignore[attr-defined]


# -- item 3: not-a-number -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_float_is_refused_naming_type_and_field(store: EventStore, value: float) -> None:
    message = await refused(
        store, "facta stores only finite floats",
        lambda: store.append(sid(), "ride", [FareCharged(amount=value)], expected_version=0),
    )
    assert message == f"vtest.fare_charged: field 'amount' is {value!r}; facta stores only finite floats"


@pytest.mark.parametrize(("event", "path"), [
    (Loose(value=float("nan")), "value"),
    (Loose(items=[1.0, [2.0, float("inf")]]), "items[1][1]"),
    (Loose(extra={"a": {"b": float("-inf")}}), "extra.a.b"),
    (Loose(extra={"odd key": float("nan")}), "extra['odd key']"),
])
async def test_non_finite_float_nested_or_untyped_is_refused(store: EventStore, event: Loose, path: str) -> None:
    message = await refused(store, "finite floats", lambda: store.append(sid(), "x", [event], expected_version=0))
    assert message.startswith(f"vtest.loose: field {path!r} is ")


async def test_non_finite_float_in_aggregate_state_is_refused(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=2)
    meter = Meter(sid())
    meter.state.total = float("inf")
    meter.charge(0.0)  # inf * 0.0 = nan
    meter.charge(2.0)
    message = await refused(store, "finite floats", lambda: repo.save(meter))
    assert message == f"vtest_meter {meter.id!r} state: field 'total' is nan; facta stores only finite floats"


async def test_snapshot_state_text_must_be_storable(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "x", [FareCharged(amount=1.0)], expected_version=0)
    for state, match in [
        ('{"total": NaN}', "'total' is nan"),
        ('{"total": -0.0}', "'total' is -0.0"),
        ('{"total": "a\\u0000b"}', "NUL"),
        ('{"total": ', "not valid JSON"),
    ]:
        snap = Snapshot(stream, "x", 1, state, "x.state/v1")
        await refused(store, match, lambda snap=snap: store.save_snapshot(snap))
    await store.save_snapshot(Snapshot(stream, "x", 1, '{"total": 1e+20}', "x.state/v1"))
    stored = await store.latest_snapshot(stream)
    assert stored is not None
    assert stored.state.replace(" ", "") == '{"total":100000000000000000000.0}'


# -- item 8: text the database cannot hold ------------------------------------------------------


async def test_nul_in_payload_string_is_refused(store: EventStore) -> None:
    message = await refused(
        store, "NUL", lambda: store.append(sid(), "x", [FareCharged(amount=1.0, note="a\x00b")], expected_version=0)
    )
    assert message == "vtest.fare_charged: field 'note' contains the NUL character (\\x00), which PostgreSQL cannot store"
    await refused(store, "key 'a\\\\x00' of 'extra'", lambda: store.append(
        sid(), "x", [Loose(extra={"a\x00": 1})], expected_version=0))


async def test_lone_surrogate_in_payload_is_refused(store: EventStore) -> None:
    message = await refused(
        store, "surrogate", lambda: store.append(sid(), "x", [FareCharged(amount=1.0, note="a\udc80")], expected_version=0)
    )
    assert message == "vtest.fare_charged: field 'note' contains a lone surrogate ('\\udc80'), which is not Unicode text"


@pytest.mark.parametrize(("field", "value", "match"), [
    ("stream id", "a\x00b", "stream id 'a\\\\x00b' contains the NUL character"),
    ("stream id", "s" * 256, "stream id 's{40}…' is 256 characters long; facta stores at most 255"),
    ("stream id", "a\ud800", "stream id 'a\\\\ud800' contains a lone surrogate"),
    ("stream id", "", "stream id must not be empty"),
    ("stream id", 7, "stream id must be a string, got int 7"),
    ("stream type", "t" * 101, "stream type 't{40}…' is 101 characters long; facta stores at most 100"),
    ("stream type", "t\x00", "stream type 't\\\\x00' contains the NUL"),
    ("actor", "a" * 256, "actor 'a{40}…' is 256 characters long; facta stores at most 255"),
    ("correlation_id", "c" * 256, "correlation id 'c{40}…' is 256 characters long; facta stores at most 255"),
    ("causation_id", "c" * 256, "causation id 'c{40}…' is 256 characters long; facta stores at most 255"),
    ("actor", "a\x00", "actor 'a\\\\x00' contains the NUL"),
])
async def test_texts_of_an_append_are_checked_on_both_dialects(
    store: EventStore, field: str, value: Any, match: str
) -> None:
    args: dict[str, Any] = {"stream_id": sid(), "stream_type": "x"}
    metadata: dict[str, Any] = {}
    if field in ("stream id", "stream type"):
        args[field.replace(" ", "_")] = value
    else:
        metadata[field] = value
    await refused(store, match, lambda: store.append(
        args["stream_id"], args["stream_type"], [FareCharged(amount=1.0)], expected_version=0, **metadata))


async def test_event_type_name_over_the_limit_is_refused(store: EventStore) -> None:
    name = "e" * 201

    class LongName(DomainEvent, name=name):
        pass

    await refused(store, "event type 'e{40}…' is 201 characters long; facta stores at most 200",
                  lambda: store.append(sid(), "x", [LongName()], expected_version=0))


async def test_event_class_names_and_versions_are_checked(store: EventStore) -> None:
    class Nul(DomainEvent, name="vtest.n\x00ul"):
        pass

    class Huge(DomainEvent, name="vtest.huge", version=2**31):
        pass

    await refused(store, r"^event type 'vtest.n\\x00ul' contains the NUL character",
                  lambda: store.append(sid(), "x", [Nul()], expected_version=0))
    await refused(store, r"^event 'vtest.huge': schema version 2147483648 is out of range: facta takes 1 to 2147483647$",
                  lambda: store.append(sid(), "x", [Huge()], expected_version=0))


async def test_texts_at_the_limit_are_stored_exactly(store: EventStore) -> None:
    stream = "é" * TEXT_LIMITS["stream id"]
    actor = "😀" * TEXT_LIMITS["actor"]
    await store.append(stream, "t" * TEXT_LIMITS["stream type"], [FareCharged(amount=1.0, note="a\\u0000b\uffff😀")],
                       expected_version=0, actor=actor, correlation_id="", causation_id="c" * 255)
    (record,) = await store.read_stream(stream)
    assert (record.stream_id, record.stream_type, record.actor, record.correlation_id, record.causation_id) == (
        stream, "t" * 100, actor, "", "c" * 255)
    assert record.event == FareCharged(amount=1.0, note="a\\u0000b\uffff😀")


async def test_every_read_checks_its_texts(store: EventStore) -> None:
    bad = "a\x00b"
    for call in [
        lambda: store.stream_version(bad),
        lambda: store.stream_type(bad),
        lambda: store.read_stream(bad),
        lambda: store.latest_snapshot(bad),
        lambda: store.read_log(event_types=[bad]),
        lambda: store.read_log(stream_types=["t" * 101]),
        lambda: store.read_log_window(event_types=["e" * 201]),
        lambda: _drain(store.iter_log(event_types=[bad])),
        lambda: audit.history(store, bad),
        lambda: audit.state_at(store, bad),
        lambda: audit.diff(store, bad, 0, 1),
        lambda: audit.trace(store, "c" * 256),
        lambda: audit.events(store, actor=bad),
        lambda: audit.events(store, correlation_id="c" * 256),
        lambda: audit.events(store, types=[bad]),
        lambda: audit.events(store, stream_types=[bad]),
        lambda: Repository(store).get(Meter, bad),
    ]:
        await refused(store, r"(NUL|at most)", call)
    message = await refused(store, "single str", lambda: store.read_log(event_types="vtest.loose"))  # type: ignore[arg-type]
    assert message == "event_types must be a list of names, not a single str 'vtest.loose'"
    message = await refused(store, "list", lambda: store.read_log(event_types=(t for t in ["vtest.loose"])))
    assert message == "event_types must be a list of names, got generator"


async def _drain(iterator: Any) -> list[Any]:
    return [r async for r in iterator]


# -- item 21: numbers, sizes, nesting, URLs ------------------------------------------------------


async def test_sizes_and_limits_of_the_read_api(store: EventStore) -> None:
    stream = sid()
    await store.append(stream, "x", [FareCharged(amount=float(i)) for i in range(3)], expected_version=0)
    message = await refused(store, "page_size", lambda: _drain(store.iter_log(page_size=0)))
    assert message == f"page_size 0 is out of range: facta takes 1 to {INT64[1]}"
    for call, name in [
        (lambda: store.read_stream(stream, limit=-1), "limit"),
        (lambda: store.read_stream(stream, limit=0), "limit"),
        (lambda: store.read_log_window(limit=0), "limit"),
        (lambda: store.read_log(limit=-1), "limit"),
        (lambda: store.read_log_window(limit=-1), "limit"),
        (lambda: store.read_log_rows(limit=-5), "limit"),
        (lambda: store.read_log(after=2**63), "after"),
        (lambda: store.read_log_rows(after=-(2**63) - 1), "after"),
        (lambda: _drain(store.iter_log(until=2**64)), "until"),
        (lambda: store.read_stream(stream, from_version=2**31), "from_version"),
        (lambda: store.read_stream(stream, to_version=-(2**31) - 1), "to_version"),
        (lambda: store.latest_snapshot(stream, max_version=2**31), "max_version"),
        (lambda: store.read_stream(stream, limit=1.5), "limit"),
        (lambda: store.read_stream(stream, limit=True), "limit"),
        (lambda: store.get_event(str(uuid.uuid4())), "event id"),
        (lambda: audit.events(store, after_position=2**63), "after_position"),
        (lambda: audit.events(store, before_position=-(2**63) - 1), "before_position"),
        (lambda: audit.state_at(store, stream, at_version=2**31), "at_version"),
        (lambda: audit.diff(store, stream, 0, 2**31), "to_version"),
        (lambda: Repository(store).get(Meter, stream, at_version=2**31), "at_version"),
    ]:
        assert (await refused(store, name, call)).startswith(name)
    # The right answers at the edges of the ranges.
    assert [r.version for r in await store.read_stream(stream, from_version=INT32[0], to_version=INT32[1])] == [1, 2, 3]
    assert len(await store.read_log(after=INT64[0], limit=INT64[1])) == 3
    assert [r.version async for r in store.iter_log(page_size=1, until=INT64[1])] == [1, 2, 3]
    assert await store.read_log(after=INT64[1]) == []


@pytest.mark.parametrize("expected", [2**31, 2**31 - 1, -1, 2**63, 1.0, True])
async def test_expected_version_outside_int32_is_refused(store: EventStore, expected: Any) -> None:
    message = await refused(store, "expected version", lambda: store.append(
        sid(), "x", [FareCharged(amount=1.0)], expected_version=expected))
    assert message in (
        f"stream {message.split(chr(39))[1]!r}: expected version {expected!r} is out of range: facta takes 0 to 2147483647",
        f"stream {message.split(chr(39))[1]!r}: expected version must be an integer, got {type(expected).__name__} {expected!r}",
        f"stream {message.split(chr(39))[1]!r}: expected version {expected} and 1 more would pass the largest version"
        " facta stores, 2147483647",
    )


async def test_deep_nesting_is_refused_and_the_deepest_allowed_reads_back(store: EventStore) -> None:
    deep: Any = 1
    for _ in range(1000):
        deep = [deep]
    message = await refused(store, "nested", lambda: store.append(sid(), "x", [Loose(value=deep)], expected_version=0))
    assert message.startswith("vtest.loose: field 'value")
    assert message.endswith(f"is nested deeper than {MAX_DEPTH} levels; facta stores at most {MAX_DEPTH}")
    ok: Any = 1
    for _ in range(MAX_DEPTH - 1):  # the event's own object is the first level
        ok = [ok]
    stream = sid()
    await store.append(stream, "x", [Loose(value=ok)], expected_version=0)
    (record,) = await store.read_stream(stream)
    assert record.event == Loose(value=ok)


async def test_long_integers(store: EventStore) -> None:
    big = -(10**MAX_INT_DIGITS - 1)
    stream = sid()
    await store.append(stream, "x", [Loose(value=big, items=[2**64, -(2**63) - 1])], expected_version=0)
    (record,) = await store.read_stream(stream)
    assert record.event == Loose(value=big, items=[2**64, -(2**63) - 1])
    await refused(store, f"more than {MAX_INT_DIGITS} digits",
                  lambda: store.append(sid(), "x", [Loose(value=10**MAX_INT_DIGITS)], expected_version=0))


@pytest.mark.parametrize("value", [1e20, -1e20, 1e16, 1.2345e-7, 5e-324, 1.7976931348623157e308, 0.1, 3.0, 1e-5])
async def test_floats_read_back_as_the_same_float(store: EventStore, value: float) -> None:
    stream = sid()
    await store.append(stream, "x", [Loose(value=value, items=[value], extra={"f": value}),
                                      FareCharged(amount=value)], expected_version=0)
    loose, fare = (r.event for r in await store.read_stream(stream))
    assert isinstance(loose, Loose) and isinstance(fare, FareCharged)
    for got in (loose.value, loose.items[0], loose.extra["f"], fare.amount):
        assert type(got) is float and got.hex() == value.hex()
    # ints stay ints
    await store.append(stream, "x", [Loose(value=10**20)], expected_version=2)
    (last,) = await store.read_stream(stream, from_version=3)
    assert type(last.event.value) is int and last.event.value == 10**20  # type: ignore[attr-defined]


async def test_negative_zero_is_refused(store: EventStore) -> None:
    message = await refused(store, "-0.0", lambda: store.append(sid(), "x", [FareCharged(amount=-0.0)], expected_version=0))
    assert message == ("vtest.fare_charged: field 'amount' is -0.0, which PostgreSQL's jsonb stores as 0.0;"
                       " facta stores 0.0 only")


@pytest.mark.parametrize(("value", "says"), [
    ((1, 2), "holds tuple (1, 2), which reads back as list [1, 2]"),
    ({1: "a"}, "key 1 of field 'value' does not read back as it is (its type is int)"),
    (datetime(2020, 1, 1, tzinfo=UTC), "holds datetime"),
    (uuid.UUID(int=1), "holds UUID"),
])
async def test_untyped_values_that_would_come_back_different_are_refused(
    store: EventStore, value: Any, says: str
) -> None:
    message = await refused(store, "reads back", lambda: store.append(sid(), "x", [Loose(value=value)], expected_version=0))
    assert says in message and message.endswith("facta stores only what reads back as written")


async def test_utc_offset_with_seconds_is_refused(store: EventStore) -> None:
    odd = datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=17)))
    await refused(store, "field 'at'", lambda: store.append(sid(), "x", [Stamped(at=odd)], expected_version=0))
    fine = datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=-23, minutes=-59)))
    stream = sid()
    await store.append(stream, "x", [Stamped(at=fine)], expected_version=0)
    (record,) = await store.read_stream(stream)
    assert record.event == Stamped(at=fine) and record.event.at.utcoffset() == fine.utcoffset()  # type: ignore[attr-defined]


async def test_pending_event_metadata_is_checked(store: EventStore) -> None:
    for pending, match in [
        (PendingEvent(FareCharged(amount=1.0), "not-a-uuid"), "event id must be a uuid.UUID"),  # type: ignore[arg-type]
        (PendingEvent(FareCharged(amount=1.0), uuid.uuid4(), datetime(2020, 1, 1)), "naive"),
        (PendingEvent(FareCharged(amount=1.0), uuid.uuid4(),
                      datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))), "outside the years 1 to 9999"),
    ]:
        await refused(store, match, lambda pending=pending: store.append(sid(), "x", [pending], expected_version=0))


async def test_a_bad_event_in_a_multi_stream_append_writes_nothing(store: EventStore) -> None:
    good, bad = sid(), sid()
    await refused(store, "finite", lambda: store.append_many([
        StreamAppend(good, "x", [FareCharged(amount=1.0)], 0),
        StreamAppend(bad, "x", [FareCharged(amount=2.0), FareCharged(amount=float("nan"))], 0),
    ]))
    assert await store.stream_version(good) == 0


@pytest.mark.parametrize("url", [
    "postgresql://127.0.0.1:99999/x",
    "postgresql+asyncpg://127.0.0.1:0/x",
    "postgresql:///x?port=70000",
    "postgresql:///x?host=127.0.0.1:99999",
])
async def test_database_url_with_an_impossible_port_is_one_line(url: str) -> None:
    with pytest.raises(DatabaseURLError, match=r"invalid port '\d+' in database URL .*: a port is 1 to 65535$"):
        await EventStore.open(url)


def test_cli_names_the_bad_port(tmp_path: Any) -> None:
    import shutil
    import subprocess
    import sys

    command = [shutil.which("facta")] if shutil.which("facta") else [sys.executable, "-m", "facta.replay.cli"]
    result = subprocess.run(
        [*command, "db", "current", "--database-url", "postgresql://127.0.0.1:99999/x"],  # type: ignore[list-item]
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )
    assert result.returncode == 2  # a usage error: refused while parsing --database-url
    assert result.stderr == (
        "facta: error: Invalid value for '--database-url': invalid port '99999' in database URL"
        " 'postgresql://127.0.0.1:99999/x': a port is 1 to 65535 (see 'facta db current --help')\n"
    )
