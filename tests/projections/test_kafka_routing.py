"""Issue 10 item 12: a Kafka projection reads the topics that carry its events.

The relay publishes each event to its stream type's topic (``<prefix>.shopping_cart``);
an event's name may have another prefix (``shop.item_added``). The projection finds the
topics from the aggregates that apply its events, from ``streams = (...)``, or refuses
with one line where it can only guess and the store shows the guess is wrong.
Both dialects, a real broker.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from sqlalchemy import BigInteger, Column, String, select

from facta.domain import Aggregate, AggregateState, DomainEvent, applies
from facta.eventstore import EventStore, RecordedEvent, Repository
from facta.eventstore.relay import Relay, RelayConfig
from facta.projections import Projection, ProjectionError, ProjectionRunner, ReadModel, handles, read_model_table
from facta.projections.replay import ReplayFrom, plan_replay, replay
from facta.projections.runner import KafkaSettings


class ItemAdded(DomainEvent, name="shop.item_added"):
    sku: str
    cents: int


class ItemRemoved(DomainEvent, name="shop.item_removed"):
    """Applied by no aggregate: stored directly, in shopping_cart streams."""

    sku: str
    cents: int


class ShoppingCart(Aggregate, stream_type="shopping_cart"):
    class State(AggregateState):
        total: int = 0

    def add(self, sku: str, cents: int) -> None:
        self._emit(ItemAdded(sku=sku, cents=cents))

    @applies(ItemAdded)
    def _added(self, event: ItemAdded) -> None:
        self.state.total += event.cents


class CartTotals(Projection, name="cart_totals"):
    totals = read_model_table(
        "cart_totals",
        Column("cart_id", String(100), primary_key=True),
        Column("total", BigInteger, nullable=False),
    )

    @handles(ItemAdded)
    def _added(self, rm: ReadModel, event: ItemAdded, record: RecordedEvent) -> None:
        rm.upsert(self.totals, {"cart_id": record.stream_id}, add={"total": event.cents})


class CartNet(Projection, name="cart_net"):
    """Handles an event no aggregate applies: its topic is a guess from the name."""

    net = read_model_table(
        "cart_net",
        Column("cart_id", String(100), primary_key=True),
        Column("total", BigInteger, nullable=False),
    )

    @handles(ItemAdded)
    def _added(self, rm: ReadModel, event: ItemAdded, record: RecordedEvent) -> None:
        rm.upsert(self.net, {"cart_id": record.stream_id}, add={"total": event.cents})

    @handles(ItemRemoved)
    def _removed(self, rm: ReadModel, event: ItemRemoved, record: RecordedEvent) -> None:
        rm.upsert(self.net, {"cart_id": record.stream_id}, add={"total": -event.cents})


class DeclaredCartNet(CartNet, name="cart_net_declared"):
    streams: ClassVar[tuple[str, ...]] = ("shopping_cart",)
    net = read_model_table(
        "cart_net_declared",
        Column("cart_id", String(100), primary_key=True),
        Column("total", BigInteger, nullable=False),
    )


async def _shop(store: EventStore) -> None:
    repo = Repository(store, snapshot_every=None)
    for i, cents in enumerate((500, 250, 125)):
        cart = ShoppingCart(f"cart-{i}")
        cart.add("sku-1", cents)
        cart.add("sku-2", 100)
        await repo.save(cart)
    await store.append("cart-0", "shopping_cart", [ItemRemoved(sku="sku-2", cents=100)], expected_version=2)


def _rows(table: Any) -> Any:
    return lambda conn: sorted(tuple(r) for r in conn.execute(select(table)).all())


async def test_a_kafka_projection_reads_the_stream_types_topics_not_its_event_names_prefix(
    store: EventStore, kafka_broker: Any
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await _shop(store)
    await Relay(store, RelayConfig(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix, partitions=2,
                                   idempotence=kafka_broker.supports_idempotence)).run(once=True)
    settings = KafkaSettings(bootstrap=kafka_broker.bootstrap, topic_prefix=prefix,
                             group_prefix=f"g{uuid.uuid4().hex[:8]}.", session_timeout_ms=6_000,
                             heartbeat_interval_ms=500)

    # Routed by the aggregate that applies shop.item_added.
    assert CartTotals.stream_types() == ["shopping_cart"]
    assert settings.topics(CartTotals) == [f"{prefix}.shopping_cart"]
    applied = await ProjectionRunner(store, CartTotals, kafka=settings).run(once=True)
    assert applied == 6
    assert await store.database.read(_rows(CartTotals.totals)) == [("cart-0", 600), ("cart-1", 350),
                                                                    ("cart-2", 225)]

    # shop.item_removed: no aggregate applies it, so its topic is guessed from its name
    # (<prefix>.shop), and the store shows the guess is wrong: one line, before anything
    # is read, live or replay.
    assert CartNet.stream_types() == ["shop", "shopping_cart"]
    refusal = (
        "projection 'cart_net' handles shop.item_removed, which the store holds in streams of type"
        f" 'shopping_cart' (topic {prefix}.shopping_cart), but it reads {prefix}.shop, {prefix}.shopping_cart,"
        " guessed from the event name since no imported aggregate applies shop.item_removed: import the module"
        " that declares that aggregate, or declare streams = ('shopping_cart',) on the projection"
    )
    with pytest.raises(ProjectionError) as refused:
        await ProjectionRunner(store, CartNet, kafka=settings).run(once=True)
    assert str(refused.value) == refusal
    with pytest.raises(ProjectionError) as refused:
        await plan_replay(store, CartNet, ReplayFrom(offset=0), kafka=settings)
    assert str(refused.value) == refusal

    # Declared: it reads the right topic.
    assert DeclaredCartNet.stream_types() == ["shopping_cart"]
    assert await ProjectionRunner(store, DeclaredCartNet, kafka=settings).run(once=True) == 7
    net = [("cart-0", 500), ("cart-1", 350), ("cart-2", 225)]
    assert await store.database.read(_rows(DeclaredCartNet.net)) == net
    result = await replay(store, DeclaredCartNet, ReplayFrom(offset=0), kafka=settings)
    assert result.events == 7
    assert await store.database.read(_rows(DeclaredCartNet.net)) == net
