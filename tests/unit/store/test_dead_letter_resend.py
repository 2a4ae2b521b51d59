"""Putting a dead letter back in the outbox, and counting recent refusals, on both engines.

A message the partner signed for is never requeued; two operators resending one dead
letter at once requeue it once; a purged payload, a partner's message and an unknown
id are each refused with their own reason.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from threading import Barrier

import pytest
from sqlalchemy import Engine

from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.audit.log import AuditLog
from gateway.audit.refusal_counts import recent_refusals
from gateway.errors import NotFound, Rejected
from gateway.store.dead_letters import held_for_resend_within, requeue_within
from gateway.store.inbox import InboundMessage, Inbox
from gateway.store.outbox import Outbox, OutboxItem, OutboxStatus

from .conftest import START, FakeClock, within

WORKER = "worker-1"
DEADLINE = timedelta(days=14)


@pytest.fixture
def outbox(migrated_engine: Engine, clock: FakeClock) -> Outbox:
    return Outbox(migrated_engine, clock=clock)


def _dead(
    outbox: Outbox, engine: Engine, make_item: Callable[..., OutboxItem], message_id: str
) -> None:
    with within(engine) as conn:
        outbox.enqueue_within(conn, [make_item(message_id)])
    (claimed,) = outbox.claim_due(WORKER, limit=1, lease_s=30)
    assert outbox.mark_dead(claimed.message_id, WORKER, reason="DEADLINE_PASSED")


def _refusal(engine: Engine, message_id: str) -> Rejected:
    with pytest.raises(Rejected) as refused, within(engine) as conn:
        held_for_resend_within(conn, message_id)
    return refused.value


def _requeue(engine: Engine, clock: FakeClock, message_id: str) -> bool:
    now = clock()
    with within(engine) as conn:
        return requeue_within(conn, message_id, now=now, deadline_at=now + DEADLINE)


def test_a_dead_letter_goes_back_pending_untried_due_now_with_a_fresh_deadline(
    outbox: Outbox,
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: Callable[..., OutboxItem],
) -> None:
    _dead(outbox, migrated_engine, make_item, "m-1")
    clock.advance(3600)

    with within(migrated_engine) as conn:
        held = held_for_resend_within(conn, "m-1")
    assert (held.recipient_state, held.reason_code) == ("DE", "DEADLINE_PASSED")
    assert _requeue(migrated_engine, clock, "m-1")

    message = outbox.get("m-1")
    assert message is not None
    assert message.status is OutboxStatus.PENDING
    assert (message.attempts, message.next_attempt_at) == (0, clock())
    assert message.deadline_at == clock() + DEADLINE
    assert message.last_error_reason is None and message.lease_until is None
    assert [m.message_id for m in outbox.claim_due(WORKER, limit=5, lease_s=30)] == ["m-1"]
    # Requeued once: it is no dead letter any more.
    assert _refusal(migrated_engine, "m-1").reason == "NOT_DEAD_LETTER"
    assert not _requeue(migrated_engine, clock, "m-1")


def test_a_dead_letter_the_partner_signed_for_is_never_requeued(
    outbox: Outbox,
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: Callable[..., OutboxItem],
) -> None:
    _dead(outbox, migrated_engine, make_item, "m-1")
    # The receipt came, but the worker's lease had lapsed: the row stayed dead.
    with within(migrated_engine) as conn:
        assert outbox.record_receipt_within(conn, "m-1", b"the partner's signed receipt")

    assert _refusal(migrated_engine, "m-1").reason == "ALREADY_DELIVERED"
    assert not _requeue(migrated_engine, clock, "m-1")
    found = outbox.get("m-1")
    assert found is not None and found.status is OutboxStatus.DEAD


def test_a_purged_payload_a_partners_message_and_an_unknown_id_are_refused_by_reason(
    outbox: Outbox,
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: Callable[..., OutboxItem],
    make_inbound: Callable[..., InboundMessage],
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-purged")])
        Inbox(migrated_engine, clock=clock).accept_once_within(conn, make_inbound("m-inbound"))
    outbox.purge_payloads("FR-DE/civil-records")

    assert _refusal(migrated_engine, "m-purged").reason == "PAYLOAD_PURGED"
    assert not _requeue(migrated_engine, clock, "m-purged")
    assert _refusal(migrated_engine, "m-inbound").reason == "NOT_RESENDABLE"
    unknown = _refusal(migrated_engine, "m-unknown")
    assert isinstance(unknown, NotFound)


def test_two_operators_resending_at_once_requeue_the_message_once(
    outbox: Outbox,
    migrated_engine: Engine,
    clock: FakeClock,
    make_item: Callable[..., OutboxItem],
) -> None:
    _dead(outbox, migrated_engine, make_item, "m-1")
    barrier = Barrier(2)

    def requeue() -> bool:
        barrier.wait()
        return _requeue(migrated_engine, clock, "m-1")

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: requeue(), range(2)))
    assert sorted(results) == [False, True]


def test_recent_refusals_are_counted_by_reason_within_the_window_most_first(
    migrated_engine: Engine, clock: FakeClock
) -> None:
    log = AuditLog(migrated_engine, clock=clock)

    def refused(reason: str, hours_ago: float) -> AuditEvent:
        return AuditEvent(
            time=START - timedelta(hours=hours_ago),
            event_kind=EventKind.REFUSED,
            decision=Decision.REFUSED,
            reason_code=reason,
        )

    log.append(
        [
            refused("REPLAY", 30),  # before the window
            refused("QUOTA_EXHAUSTED", 3),
            refused("SCOPE_MISSING", 2),
            refused("SCOPE_MISSING", 1),
            AuditEvent(time=START, event_kind=EventKind.SENT, decision=Decision.ACCEPTED),
        ]
    )
    counts = recent_refusals(migrated_engine, since=START - timedelta(hours=24))
    assert [(c.reason_code, c.count) for c in counts] == [
        ("SCOPE_MISSING", 2),
        ("QUOTA_EXHAUSTED", 1),
    ]
    # An entry's time is kept to the millisecond, as its canonical form states it.
    latest = START - timedelta(hours=1)
    assert counts[0].last_at == latest.replace(microsecond=latest.microsecond // 1000 * 1000)
    assert len(recent_refusals(migrated_engine, since=START - timedelta(hours=24), limit=1)) == 1
