"""Relay status and the audit filter check from Python (facta.eventstore.relay_status,
facta.eventstore.audit.unknown_filter_values): what `facta relay status|skip` and
`facta audit events` use, on both dialects, with no Kafka."""

from __future__ import annotations

import pytest

from facta.eventstore import EventStore
from facta.eventstore.audit import AuditError, UnknownValue, unknown_filter_values
from facta.eventstore.relay import RelayError, _save_checkpoint
from facta.eventstore.relay_status import relay_names, relay_status

from ._audit_scenario import ACCOUNT, RIDE, build


async def test_the_default_relay_before_it_ran_lags_by_the_whole_log(store: EventStore) -> None:
    await build(store)
    head = await store.head_position()
    relay, status = await relay_status(store, or_default=True)
    assert relay.config.name == "default"
    assert (status.name, status.checkpoint, status.head, status.lag, status.updated_at, status.skips) == \
        ("default", 0, head, head, None, ())
    assert await relay_names(store) == []
    with pytest.raises(RelayError, match=r"^no relay named 'default' has run on this store \(relays: none\)$"):
        await relay_status(store)


async def test_a_relay_that_ran_has_a_status_and_takes_skips(store: EventStore) -> None:
    await build(store)
    head = await store.head_position()
    # A relay "ran": its checkpoint row exists (what Relay.run writes after a page).
    await store.database.write(_save_checkpoint, "feed", 3)
    assert await relay_names(store) == ["feed"]
    relay, status = await relay_status(store, "feed")
    assert (status.checkpoint, status.head, status.lag) == (3, head, head - 3)
    assert status.updated_at is not None and status.updated_at.tzinfo is not None
    skip, new = await relay.skip(head, "too large", "operator")
    assert new and skip.position == head and skip.skipped_by == "operator"
    _, status = await relay_status(store, "feed")
    assert [s.position for s in status.skips] == [head]
    with pytest.raises(RelayError, match=r"^no relay named 'fede' has run on this store \(relays: 'feed'\)$"):
        await relay_status(store, "fede")
    with pytest.raises(RelayError, match=r"no relay named \$'ty\\u202epo' has run"):
        await relay_status(store, "ty\u202epo", or_default=True)


async def test_unknown_filter_values_name_the_typos_and_close_values(store: EventStore) -> None:
    await build(store)
    found = await unknown_filter_values(store, {
        "event_type": ["account.deposited", "account.depositd"], "stream_type": ["acount"],
        "actor": ["alice", "nobody-at-all"], "correlation_id": [RIDE, "ride-audit-2"],
    })
    assert found == [
        UnknownValue("event_type", "account.depositd", ("account.deposited",)),
        UnknownValue("stream_type", "acount", ("account",)),
        UnknownValue("actor", "nobody-at-all", ()),
        UnknownValue("correlation_id", "ride-audit-2", ()),  # correlation ids are not listed
    ]
    assert await unknown_filter_values(store, {"actor": [], "stream_type": ["ride"]}) == []
    with pytest.raises(AuditError, match="column 'payload'"):
        await unknown_filter_values(store, {"payload": [ACCOUNT]})
