"""The outbox and the inbox report what they still hold, per partner and stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Engine

from gateway.store.backlog import InboxStage, StageBacklog
from gateway.store.inbox import InboundMessage, Inbox
from gateway.store.outbox import Outbox, OutboxItem

from .conftest import START, FakeClock, within


def _by_key(rows: list[StageBacklog]) -> dict[tuple[str, str], tuple[int, datetime]]:
    keyed = {(row.partner, row.stage): (row.count, row.oldest) for row in rows}
    assert len(keyed) == len(rows), "one row per partner and stage"
    return keyed


def test_the_outbox_counts_what_is_not_delivered_per_partner_and_status(
    migrated_engine: Engine, clock: FakeClock, make_item: Callable[..., OutboxItem]
) -> None:
    outbox = Outbox(migrated_engine, clock=clock)
    assert outbox.backlog() == []
    for number in range(5):
        with within(migrated_engine) as conn:
            outbox.enqueue_within(conn, [make_item(f"m-de-{number}")])
        clock.advance(10)
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-it-0", recipient_state="IT")])
    claimed = outbox.claim_due("w1", limit=3, lease_s=60)  # the three oldest to Germany
    assert [m.message_id for m in claimed] == ["m-de-0", "m-de-1", "m-de-2"]
    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "m-de-0", "w1")
    assert outbox.mark_dead("m-de-1", "w1", reason="DEADLINE")

    assert _by_key(outbox.backlog()) == {
        ("DE", "in_flight"): (1, START + timedelta(seconds=20)),
        ("DE", "dead"): (1, START + timedelta(seconds=10)),
        ("DE", "pending"): (2, START + timedelta(seconds=30)),
        ("IT", "pending"): (1, START + timedelta(seconds=50)),
    }


def test_the_inbox_counts_each_unfinished_stage_per_sender(
    migrated_engine: Engine, clock: FakeClock, make_inbound: Callable[..., InboundMessage]
) -> None:
    inbox = Inbox(migrated_engine, clock=clock)
    assert inbox.backlog() == []

    def received(message_id: str, *, sender_state: str = "FR") -> str:
        message = make_inbound(message_id, sender_state=sender_state)
        message = replace(message, request_digest="sha256:" + "ab" * 32)
        with within(migrated_engine) as conn:
            assert inbox.accept_once_within(conn, message)
        clock.advance(1)
        return message_id

    received("m-waiting")
    unanswered = received("m-unanswered")
    owed = received("m-owed")
    settled = received("m-settled")
    older = received("m-older", sender_state="IT")
    received("m-waiting-it", sender_state="IT")
    with within(migrated_engine) as conn:
        assert inbox.mark_handed_over_within(conn, unanswered)
    for message_id in (owed, settled, older):
        with within(migrated_engine) as conn:
            assert inbox.mark_handed_over_within(conn, message_id, applied=True)
    with within(migrated_engine) as conn:
        assert inbox.mark_ack_sent_within(conn, settled)
    assert inbox.purge_payloads("FR-DE/civil-records") == 6  # every one of them

    assert _by_key(inbox.backlog()) == {
        ("FR", InboxStage.HANDOVER.value): (1, START),
        ("FR", InboxStage.REGISTRY_ANSWER.value): (1, START + timedelta(seconds=1)),
        ("FR", InboxStage.ACKNOWLEDGEMENT.value): (1, START + timedelta(seconds=2)),
        # Purged, and the digest kept: its receipt can still be made.
        ("IT", InboxStage.ACKNOWLEDGEMENT.value): (1, START + timedelta(seconds=4)),
        ("IT", InboxStage.HANDOVER.value): (1, START + timedelta(seconds=5)),
    }
