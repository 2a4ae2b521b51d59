"""Retention: finished payloads go after the agreement's period, nothing in flight, no evidence."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from gateway.pki.sealing import KEY_BYTES, PayloadSealer, SealingKeys
from gateway.store.inbox import InboundMessage, Inbox, InboxEntry, InboxStatus
from gateway.store.outbox import (
    Outbox,
    OutboxItem,
    OutboxMessage,
    OutboxStatus,
    RegistryOutcome,
)
from gateway.store.retention import RetentionPurger

from .conftest import START, FakeClock, within

MakeItem = Callable[..., OutboxItem]
MakeInbound = Callable[..., InboundMessage]

AGREEMENT = "FR-DE/civil-records"
DAY = 86400.0
WORKER = "worker-1"


class Store:
    """An outbox, an inbox and the purger over them, all sealing with one key."""

    def __init__(self, engine: Engine, clock: FakeClock) -> None:
        sealer = PayloadSealer(SealingKeys(secrets.token_bytes(KEY_BYTES)))
        self.engine = engine
        self.outbox = Outbox(engine, clock=clock, sealer=sealer)
        self.inbox = Inbox(engine, clock=clock, sealer=sealer)
        self.purger = RetentionPurger(engine, self.outbox, self.inbox, clock=clock)

    def delivered(self, item: OutboxItem, *, outcome: bool = True) -> None:
        with within(self.engine) as conn:
            self.outbox.enqueue_within(conn, [item])
        self.outbox.claim_due(WORKER, limit=1000, lease_s=60)
        with within(self.engine) as conn:
            assert self.outbox.mark_delivered_within(conn, item.message_id, WORKER)
        with within(self.engine) as conn:
            assert self.outbox.record_receipt_within(conn, item.message_id, b"signed receipt")
        if outcome:
            with within(self.engine) as conn:
                self.outbox.record_outcome_within(
                    conn, item.message_id, outcome=RegistryOutcome.APPLIED, reason=None
                )

    def dead(self, item: OutboxItem) -> None:
        with within(self.engine) as conn:
            self.outbox.enqueue_within(conn, [item])
        self.outbox.claim_due(WORKER, limit=1000, lease_s=60)
        assert self.outbox.mark_dead(item.message_id, WORKER, reason="DEADLINE_PASSED")

    def acknowledged(self, message: InboundMessage, *, later_answer: bool = False) -> None:
        with within(self.engine) as conn:
            assert self.inbox.accept_once_within(conn, message)
        if later_answer:
            with within(self.engine) as conn:
                assert self.inbox.mark_handed_over_within(conn, message.message_id)
            assert self.inbox.record_outcome(message.message_id, "applied")
        else:
            with within(self.engine) as conn:
                assert self.inbox.mark_handed_over_within(conn, message.message_id, applied=True)
        with within(self.engine) as conn:
            assert self.inbox.mark_ack_sent_within(conn, message.message_id)

    def outbox_envelope(self, message_id: str) -> bytes | None:
        message = self.outbox.get(message_id)
        assert message is not None
        return message.envelope

    def inbox_envelope(self, message_id: str) -> bytes | None:
        entry = self.inbox.get(message_id)
        assert entry is not None
        return entry.envelope


def without(row: OutboxMessage | InboxEntry, *names: str) -> dict[str, object]:
    """Every field of ``row`` but ``names``."""
    values = asdict(row)
    for name in names:
        del values[name]
    return values


@pytest.fixture
def store(migrated_engine: Engine, clock: FakeClock) -> Store:
    return Store(migrated_engine, clock)


def test_retention_purges_finished_payloads_after_the_agreement_period(
    store: Store, clock: FakeClock, make_item: MakeItem, make_inbound: MakeInbound
) -> None:
    store.delivered(make_item("out-delivered"))
    store.dead(make_item("out-dead"))
    store.delivered(replace(make_item("out-long"), agreement_id="FR-IT/civil-records"))
    store.acknowledged(make_inbound("in-acked"))
    store.acknowledged(make_inbound("in-acked-later"), later_answer=True)
    retention = {AGREEMENT: 30, "FR-IT/civil-records": 90}

    clock.advance(30 * DAY)  # exactly the period: not yet older than it
    report = store.purger.purge_expired(retention)
    assert report.total == 0
    assert store.outbox_envelope("out-delivered") == make_item("out-delivered").envelope

    clock.advance(1)
    report = store.purger.purge_expired(retention)

    assert report.outbox_purged == {AGREEMENT: 2, "FR-IT/civil-records": 0}
    assert report.inbox_purged == {AGREEMENT: 2, "FR-IT/civil-records": 0}
    assert report.without_retention == ()
    for message_id in ("out-delivered", "out-dead"):
        message = store.outbox.get(message_id)
        assert message is not None
        assert message.envelope is None
        assert message.payload_purged_at == START + timedelta(days=30, seconds=1)
    for message_id in ("in-acked", "in-acked-later"):
        entry = store.inbox.get(message_id)
        assert entry is not None
        assert entry.envelope is None
        assert entry.payload_purged_at == START + timedelta(days=30, seconds=1)
    # The longer agreement keeps its payload until its own period has passed.
    assert store.outbox_envelope("out-long") is not None
    clock.advance(60 * DAY)
    assert store.purger.purge_expired(retention).outbox_purged["FR-IT/civil-records"] == 1
    assert store.outbox_envelope("out-long") is None
    # Purging again finds nothing left to purge.
    assert store.purger.purge_expired(retention).total == 0


def test_retention_never_purges_messages_in_flight(
    store: Store,
    clock: FakeClock,
    make_item: MakeItem,
    make_inbound: MakeInbound,
    migrated_engine: Engine,
) -> None:
    store.delivered(make_item("out-awaiting-outcome"), outcome=False)
    with within(migrated_engine) as conn:
        store.outbox.enqueue_within(conn, [make_item("out-in-flight")])
    store.outbox.claim_due(WORKER, limit=1, lease_s=400 * DAY)
    with within(migrated_engine) as conn:
        store.outbox.enqueue_within(conn, [make_item("out-pending")])
    with within(migrated_engine) as conn:
        store.outbox.enqueue_within(
            conn, [make_item("out-later", not_before=START + timedelta(days=5))]
        )
    with within(migrated_engine) as conn:
        store.inbox.accept_once_within(conn, make_inbound("in-received"))
    with within(migrated_engine) as conn:
        store.inbox.accept_once_within(conn, make_inbound("in-handed-over"))
    with within(migrated_engine) as conn:
        store.inbox.mark_handed_over_within(conn, "in-handed-over")
    with within(migrated_engine) as conn:
        store.inbox.accept_once_within(conn, make_inbound("in-answered"))
    with within(migrated_engine) as conn:
        store.inbox.mark_handed_over_within(
            conn, "in-answered", applied=False, reason="UNKNOWN_PERSON"
        )

    clock.advance(365 * DAY)
    report = store.purger.purge_expired({AGREEMENT: 1})

    assert report.total == 0
    outbox_status = {
        "out-pending": OutboxStatus.PENDING,
        "out-in-flight": OutboxStatus.IN_FLIGHT,
        "out-later": OutboxStatus.PENDING,
        "out-awaiting-outcome": OutboxStatus.DELIVERED,
    }
    for message_id, status in outbox_status.items():
        message = store.outbox.get(message_id)
        assert message is not None
        assert message.status is status
        assert message.envelope == make_item(message_id).envelope
        assert message.payload_purged_at is None
    for message_id in ("in-received", "in-handed-over", "in-answered"):
        entry = store.inbox.get(message_id)
        assert entry is not None
        assert not entry.ack_sent
        assert entry.envelope == make_inbound(message_id).envelope
        assert entry.payload_purged_at is None

    # Once the acknowledgement owed went back, the message is finished and purged.
    with within(migrated_engine) as conn:
        assert store.inbox.mark_ack_sent_within(conn, "in-answered")
    assert store.purger.purge_expired({AGREEMENT: 1}).inbox_purged == {AGREEMENT: 1}
    assert store.inbox_envelope("in-answered") is None


def test_purged_rows_keep_receipts_and_outcomes(
    store: Store, clock: FakeClock, make_item: MakeItem, make_inbound: MakeInbound
) -> None:
    store.delivered(make_item("out-1"))
    store.acknowledged(make_inbound("in-1"))
    sent_before = store.outbox.get("out-1")
    received_before = store.inbox.get("in-1")

    clock.advance(8 * DAY)
    assert store.purger.purge_expired({AGREEMENT: 7}).total == 2

    sent, received = store.outbox.get("out-1"), store.inbox.get("in-1")
    assert sent is not None and sent_before is not None
    assert received is not None and received_before is not None
    assert sent.receipt == b"signed receipt"
    assert sent.outcome is RegistryOutcome.APPLIED
    assert sent.status is OutboxStatus.DELIVERED
    assert sent.delivered_at == sent_before.delivered_at
    assert without(sent, "envelope", "payload_purged_at", "updated_at") == without(
        sent_before, "envelope", "payload_purged_at", "updated_at"
    )
    assert received.status is InboxStatus.HANDED_OVER
    assert received.registry_outcome == "applied"
    assert received.ack_sent
    assert without(received, "envelope", "payload_purged_at") == without(
        received_before, "envelope", "payload_purged_at"
    )


def test_agreement_without_known_retention_keeps_its_payloads_and_is_reported(
    store: Store, clock: FakeClock, make_item: MakeItem, make_inbound: MakeInbound
) -> None:
    store.delivered(replace(make_item("out-1"), agreement_id="FR-ES/removed"))
    store.acknowledged(make_inbound("in-1"))

    clock.advance(3650 * DAY)
    report = store.purger.purge_expired({})

    assert report.total == 0
    assert report.without_retention == (AGREEMENT, "FR-ES/removed")
    assert store.outbox_envelope("out-1") is not None
    assert store.inbox_envelope("in-1") is not None


@pytest.mark.parametrize("days", [0, -1, True, 1.5])
def test_retention_that_is_not_a_positive_whole_day_is_refused(store: Store, days: object) -> None:
    with pytest.raises(ValueError, match="positive whole day"):
        store.purger.purge_expired({AGREEMENT: days})  # type: ignore[dict-item]
