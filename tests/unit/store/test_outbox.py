"""The outbox: durable enqueue, exclusive leases, and transitions only by the lease holder."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from threading import Barrier
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from gateway.store.outbox import PURGED_REASON, Outbox, OutboxItem, OutboxStatus, RegistryOutcome
from gateway.store.tables import outbox as outbox_table

from .conftest import START, FakeClock, within

MakeItem = Callable[..., OutboxItem]


@pytest.fixture
def outbox(migrated_engine: Engine, clock: FakeClock) -> Outbox:
    return Outbox(migrated_engine, clock=clock)


def test_enqueued_message_is_pending_and_due_at_once(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    item = make_item("m-1")

    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [item]) == 1

    stored = outbox.get("m-1")
    assert stored is not None
    assert stored.status is OutboxStatus.PENDING
    assert stored.envelope == item.envelope
    assert (stored.recipient_state, stored.agreement_version) == ("DE", 3)
    assert stored.attempts == 0
    assert stored.next_attempt_at == stored.created_at == START
    assert stored.claimed_by is None
    assert stored.lease_until is None


def test_resubmitted_message_id_changes_nothing(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    first = outbox.get("m-1")

    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [make_item("m-1", recipient_state="IT")]) == 0
    with within(migrated_engine) as conn:
        assert (
            outbox.enqueue_within(conn, [make_item("m-1"), make_item("m-2"), make_item("m-2")]) == 1
        )

    assert outbox.get("m-1") == first
    assert _count_by_status(migrated_engine)["pending"] == 2


def test_enqueue_many_stores_a_large_batch(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    # More rows than one INSERT carries, so the batch spans several statements.
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, (make_item(f"m-{i:05d}") for i in range(1200))) == 1200
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, []) == 0
    assert _count_by_status(migrated_engine) == {
        "pending": 1200,
        "in_flight": 0,
        "delivered": 0,
        "dead": 0,
    }


def test_timestamps_come_back_as_aware_utc(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    paris_winter = timezone(timedelta(hours=1))
    deadline = datetime(2024, 12, 1, 18, 0, 0, 250000, tzinfo=paris_winter)
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1", deadline_at=deadline)])

    stored = outbox.get("m-1")

    assert stored is not None
    assert stored.deadline_at == deadline
    assert stored.deadline_at.tzinfo is UTC
    assert stored.created_at.tzinfo is UTC


def test_naive_datetimes_are_refused(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_item("m-1", deadline_at=datetime(2024, 12, 1))
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    (claimed,) = outbox.claim_due("worker-a", limit=1, lease_s=30)
    with pytest.raises(ValueError, match="timezone-aware"), within(migrated_engine) as conn:
        outbox.schedule_retry_within(
            conn,
            claimed.message_id,
            "worker-a",
            next_attempt_at=datetime(2024, 12, 1),
            reason="PARTNER_UNAVAILABLE",
        )


def test_message_is_not_claimed_before_its_time(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("later", not_before=START + timedelta(minutes=5))])
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("now")])

    def claim() -> list[str]:
        return [m.message_id for m in outbox.claim_due("worker-a", limit=10, lease_s=3600)]

    assert claim() == ["now"]
    clock.advance(5 * 60 - 1)
    assert claim() == []
    clock.advance(1)
    assert claim() == ["later"]


def test_claim_leases_oldest_due_first_and_counts_the_attempt(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    for minutes_ago, message_id in [(1, "m-young"), (9, "m-old"), (5, "m-mid")]:
        with within(migrated_engine) as conn:
            outbox.enqueue_within(
                conn, [make_item(message_id, not_before=START - timedelta(minutes=minutes_ago))]
            )

    claimed = outbox.claim_due("worker-a", limit=2, lease_s=30)

    assert [m.message_id for m in claimed] == ["m-old", "m-mid"]
    for message in claimed:
        assert message.status is OutboxStatus.IN_FLIGHT
        assert message.claimed_by == "worker-a"
        assert message.lease_until == START + timedelta(seconds=30)
        assert message.attempts == 1
        assert outbox.get(message.message_id) == message


def test_concurrent_claimers_never_get_the_same_message(
    database_url: str,
    outbox: Outbox,
    clock: FakeClock,
    make_item: MakeItem,
    migrated_engine: Engine,
) -> None:
    all_ids = {f"m-{i:04d}" for i in range(300)}
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item(message_id) for message_id in sorted(all_ids)])
    starting_line = Barrier(2)

    def dispatcher(worker_id: str) -> list[str]:
        # Its own engine, hence its own connections: as a second replica would have.
        engine = create_engine(database_url)
        try:
            replica = Outbox(engine, clock=clock)
            starting_line.wait(timeout=10)
            claimed: list[str] = []
            while batch := replica.claim_due(worker_id, limit=7, lease_s=300):
                claimed.extend(m.message_id for m in batch)
            return claimed
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(dispatcher, w) for w in ("worker-a", "worker-b")]
        got_a, got_b = (f.result(timeout=60) for f in futures)

    assert set(got_a).isdisjoint(got_b)
    assert len(got_a) + len(got_b) == len(all_ids)
    assert set(got_a) | set(got_b) == all_ids
    assert _count_by_status(migrated_engine)["in_flight"] == len(all_ids)
    for message_id in got_a[:5] + got_b[:5]:
        message = outbox.get(message_id)
        assert message is not None
        assert message.attempts == 1
        assert message.claimed_by == ("worker-a" if message_id in got_a else "worker-b")


def test_expired_lease_is_reclaimed(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    assert len(outbox.claim_due("worker-a", limit=10, lease_s=30)) == 1

    clock.advance(29)
    assert outbox.claim_due("worker-b", limit=10, lease_s=30) == []

    clock.advance(1)
    (reclaimed,) = outbox.claim_due("worker-b", limit=10, lease_s=30)
    assert reclaimed.message_id == "m-1"
    assert reclaimed.claimed_by == "worker-b"
    assert reclaimed.attempts == 2
    assert reclaimed.lease_until == clock() + timedelta(seconds=30)


def test_worker_without_lease_cannot_complete_message(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    outbox.claim_due("worker-a", limit=1, lease_s=30)
    later = clock() + timedelta(minutes=1)

    # A worker that never held the lease.
    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "m-1", "worker-b") is False
    with within(migrated_engine) as conn:
        assert (
            outbox.schedule_retry_within(conn, "m-1", "worker-b", next_attempt_at=later, reason="x")
            is False
        )
    assert outbox.mark_dead("m-1", "worker-b", reason="x") is False

    # A worker whose lease lapsed, before and after another worker reclaimed it.
    clock.advance(31)
    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "m-1", "worker-a") is False
    outbox.claim_due("worker-b", limit=1, lease_s=30)
    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "m-1", "worker-a") is False
    with within(migrated_engine) as conn:
        assert (
            outbox.schedule_retry_within(conn, "m-1", "worker-a", next_attempt_at=later, reason="x")
            is False
        )
    assert outbox.mark_dead("m-1", "worker-a", reason="x") is False

    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "m-1", "worker-b") is True
    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "m-1", "worker-b") is False
    message = outbox.get("m-1")
    assert message is not None
    assert message.status is OutboxStatus.DELIVERED
    assert message.delivered_at == clock()
    assert message.claimed_by == "worker-b"


def test_unknown_message_cannot_be_completed(outbox: Outbox, migrated_engine: Engine) -> None:
    with within(migrated_engine) as conn:
        assert outbox.mark_delivered_within(conn, "no-such-message", "worker-a") is False


def test_retry_returns_message_to_pending_until_its_time(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    outbox.claim_due("worker-a", limit=1, lease_s=30)
    retry_at = clock() + timedelta(seconds=40)

    with within(migrated_engine) as conn:
        assert outbox.schedule_retry_within(
            conn, "m-1", "worker-a", next_attempt_at=retry_at, reason="PARTNER_UNAVAILABLE"
        )

    message = outbox.get("m-1")
    assert message is not None
    assert message.status is OutboxStatus.PENDING
    assert (message.claimed_by, message.lease_until) == (None, None)
    assert message.last_error_reason == "PARTNER_UNAVAILABLE"
    assert message.next_attempt_at == retry_at
    assert outbox.claim_due("worker-a", limit=1, lease_s=30) == []
    clock.advance(40)
    (again,) = outbox.claim_due("worker-b", limit=1, lease_s=30)
    assert again.attempts == 2


def test_dead_message_is_never_claimed_again(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    outbox.claim_due("worker-a", limit=1, lease_s=30)

    assert outbox.mark_dead("m-1", "worker-a", reason="DEADLINE_EXCEEDED")

    clock.advance(365 * 24 * 3600)
    assert outbox.claim_due("worker-a", limit=10, lease_s=30) == []
    message = outbox.get("m-1")
    assert message is not None
    assert message.status is OutboxStatus.DEAD
    assert message.last_error_reason == "DEADLINE_EXCEEDED"
    assert _count_by_status(migrated_engine) == {
        "pending": 0,
        "in_flight": 0,
        "delivered": 0,
        "dead": 1,
    }


def test_enqueued_message_survives_new_engine(
    database_url: str, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    engine = create_engine(database_url)
    upgrade_to_head(engine)
    with within(migrated_engine) as conn:
        Outbox(engine, clock=clock).enqueue_within(conn, [make_item("m-1")])
    before = Outbox(engine, clock=clock).get("m-1")
    engine.dispose()

    reopened = create_engine(database_url)
    try:
        after = Outbox(reopened, clock=clock).get("m-1")
    finally:
        reopened.dispose()

    assert before is not None
    assert after == before


def test_message_repr_leaves_out_the_envelope(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    assert "signed envelope" not in repr(outbox.get("m-1"))
    assert "signed envelope" not in repr(make_item("m-1"))


def test_client_reference_is_unique_per_principal(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    def submitted(message_id: str, principal: str | None, reference: str | None) -> OutboxItem:
        return replace(make_item(message_id), principal=principal, client_reference=reference)

    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-1", "consul@paris", "req-7")]) == 1
    # The same request resubmitted under a fresh message id is not queued twice.
    with within(migrated_engine) as conn:
        assert not outbox.enqueue_within(conn, [submitted("m-2", "consul@paris", "req-7")])
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-3", "consul@paris", "req-7")]) == 0
    # Another principal may use the same reference; submissions without one never clash.
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-4", "consul@lyon", "req-7")]) == 1
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-5", "consul@paris", "req-8")]) == 1
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-6", "consul@paris", None)]) == 1
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-7", "consul@paris", None)]) == 1
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [submitted("m-8", None, None)]) == 1

    assert outbox.get("m-2") is None
    assert outbox.get("m-3") is None
    first = outbox.find_by_client_reference("consul@paris", "req-7")
    assert first is not None
    assert (first.message_id, first.principal, first.client_reference) == (
        "m-1",
        "consul@paris",
        "req-7",
    )
    assert outbox.find_by_client_reference("consul@nice", "req-7") is None
    with pytest.raises(ValueError, match="principal"):
        submitted("m-9", None, "req-9")


def test_receipt_is_recorded_once(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])

    with within(migrated_engine) as conn:
        assert outbox.record_receipt_within(conn, "m-1", b"signed receipt 1") is True
    with within(migrated_engine) as conn:
        assert outbox.record_receipt_within(conn, "m-1", b"signed receipt 2") is False
    with within(migrated_engine) as conn:
        assert outbox.record_receipt_within(conn, "no-such-message", b"signed receipt") is False

    message = outbox.get("m-1")
    assert message is not None
    assert message.receipt == b"signed receipt 1"
    assert "signed receipt" not in repr(message)


def test_outcome_is_recorded_once(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-1")])
    clock.advance(10)

    with within(migrated_engine) as conn:
        assert (
            outbox.record_outcome_within(conn, "m-1", outcome="rejected", reason="UNKNOWN_RECORD")
            is True
        )
    clock.advance(10)
    with within(migrated_engine) as conn:
        assert (
            outbox.record_outcome_within(conn, "m-1", outcome=RegistryOutcome.APPLIED, reason=None)
            is False
        )
    with within(migrated_engine) as conn:
        assert (
            outbox.record_outcome_within(conn, "no-such-message", outcome="applied", reason=None)
            is False
        )

    message = outbox.get("m-1")
    assert message is not None
    assert message.outcome is RegistryOutcome.REJECTED
    assert message.outcome_reason == "UNKNOWN_RECORD"
    assert message.outcome_at == START + timedelta(seconds=10)
    with pytest.raises(ValueError, match="maybe"), within(migrated_engine) as conn:
        outbox.record_outcome_within(conn, "m-1", outcome="maybe", reason=None)


def test_purged_payload_keeps_row_and_receipt(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    other_agreement = replace(make_item("m-other"), agreement_id="FR-IT/civil-records")
    with within(migrated_engine) as conn:
        outbox.enqueue_within(
            conn, [make_item("m-delivered"), make_item("m-pending"), other_agreement]
        )
    outbox.claim_due("worker-a", limit=1, lease_s=30)
    with within(migrated_engine) as conn:
        outbox.record_receipt_within(conn, "m-delivered", b"signed receipt")
    with within(migrated_engine) as conn:
        outbox.record_outcome_within(conn, "m-delivered", outcome="applied", reason=None)
    with within(migrated_engine) as conn:
        outbox.mark_delivered_within(conn, "m-delivered", "worker-a")
    clock.advance(60)

    assert outbox.purge_payloads("FR-DE/civil-records") == 2
    assert outbox.purge_payloads("FR-DE/civil-records") == 0

    delivered = outbox.get("m-delivered")
    assert delivered is not None
    assert delivered.envelope is None
    assert delivered.payload_purged_at == clock()
    assert delivered.status is OutboxStatus.DELIVERED
    assert delivered.receipt == b"signed receipt"
    assert delivered.outcome is RegistryOutcome.APPLIED
    # Nothing is left to deliver: the undelivered message is dead-lettered, not retried.
    pending = outbox.get("m-pending")
    assert pending is not None
    assert (pending.envelope, pending.status) == (None, OutboxStatus.DEAD)
    assert pending.last_error_reason == PURGED_REASON
    assert outbox.claim_due("worker-a", limit=10, lease_s=30) == [outbox.get("m-other")]
    untouched = outbox.get("m-other")
    assert untouched is not None
    assert untouched.envelope == other_agreement.envelope
    assert untouched.payload_purged_at is None


def test_list_pages_through_messages_in_creation_order(
    outbox: Outbox, clock: FakeClock, make_item: MakeItem, migrated_engine: Engine
) -> None:
    mine = replace(make_item("m-b"), principal="consul@paris")
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [mine, make_item("m-a", recipient_state="IT")])
    clock.advance(1)
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-d"), make_item("m-c")])
    outbox.claim_due("worker-a", limit=1, lease_s=30)

    def page(**filters: Any) -> list[str]:
        return [m.message_id for m in outbox.page(**filters)]

    assert page(limit=10) == ["m-a", "m-b", "m-c", "m-d"]
    assert page(limit=2) == ["m-a", "m-b"]
    assert page(limit=2, after_message_id="m-b") == ["m-c", "m-d"]
    assert page(limit=2, after_message_id="m-d") == []
    assert page(limit=2, after_message_id="no-such-message") == []
    assert page(limit=10, status=OutboxStatus.PENDING) == ["m-b", "m-c", "m-d"]
    assert page(limit=10, status="in_flight") == ["m-a"]
    assert page(limit=10, recipient_state="DE", after_message_id="m-a") == ["m-b", "m-c", "m-d"]
    assert page(limit=10, principal="consul@paris") == ["m-b"]
    assert page(limit=10, exchange_type="civil_record_update", status="pending") == [
        "m-b",
        "m-c",
        "m-d",
    ]
    assert page(limit=10, exchange_type="agreement_notice") == []
    with pytest.raises(ValueError, match="limit"):
        outbox.page(limit=0)


def test_new_fields_are_stored_with_the_message(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    item = replace(
        make_item("m-1"), principal="consul@paris", client_reference="req-1", kind="birth"
    )
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [item])

    stored = outbox.get("m-1")
    assert stored is not None
    assert (stored.principal, stored.client_reference, stored.kind) == (
        "consul@paris",
        "req-1",
        "birth",
    )
    assert (stored.outcome, stored.outcome_reason, stored.outcome_at) == (None, None, None)
    assert (stored.receipt, stored.payload_purged_at) == (None, None)


def test_the_envelope_digest_is_kept_through_claims_and_purges(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    digest = "sha256:" + "5e" * 32
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [replace(make_item("m-1"), envelope_digest=digest)])
    with within(migrated_engine) as conn:
        outbox.enqueue_within(conn, [make_item("m-2")])

    claimed = {m.message_id: m for m in outbox.claim_due("worker-a", limit=2, lease_s=30)}
    assert (claimed["m-1"].envelope_digest, claimed["m-2"].envelope_digest) == (digest, None)
    outbox.purge_payloads("FR-DE/civil-records")
    purged = outbox.get("m-1")
    assert purged is not None
    assert (purged.envelope, purged.envelope_digest) == (None, digest)


@pytest.mark.parametrize("digest", ["", "sha256:" + "AB" * 32, "sha512:" + "ab" * 32, "ab" * 32])
def test_a_malformed_envelope_digest_is_refused(make_item: MakeItem, digest: str) -> None:
    with pytest.raises(ValueError, match="envelope_digest must be 'sha256:' and 64 lowercase"):
        replace(make_item("m-1"), envelope_digest=digest)


def test_the_id_for_a_client_reference_is_found_without_the_envelope(
    outbox: Outbox, make_item: MakeItem, migrated_engine: Engine
) -> None:
    item = replace(make_item("m-ref"), principal="consul@paris", client_reference="req-9")
    with within(migrated_engine) as conn:
        assert outbox.enqueue_within(conn, [item]) == 1

    assert outbox.message_id_for_reference("consul@paris", "req-9") == "m-ref"
    assert outbox.message_id_for_reference("consul@nice", "req-9") is None
    assert outbox.message_id_for_reference("consul@paris", "req-10") is None


def _count_by_status(engine: Engine) -> dict[str, int]:
    """How many messages are in each status; every status is present, zero included."""
    counts = dict.fromkeys((s.value for s in OutboxStatus), 0)
    query = select(outbox_table.c.status, func.count()).group_by(outbox_table.c.status)
    with engine.connect() as conn:
        for status, count in conn.execute(query):
            counts[status] = count
    return counts
