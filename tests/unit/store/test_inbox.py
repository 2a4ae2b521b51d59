"""The inbox: each message id stored exactly once, and only ever moving forward."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from threading import Barrier

import pytest
from sqlalchemy import Engine

from gateway.errors import ReplayRejected
from gateway.store.inbox import InboundMessage, Inbox, InboxMessage, InboxStatus

from .conftest import START, FakeClock, within

MakeInbound = Callable[..., InboundMessage]


@pytest.fixture
def inbox(migrated_engine: Engine, clock: FakeClock) -> Inbox:
    return Inbox(migrated_engine, clock=clock)


def test_new_message_is_stored_as_received(
    inbox: Inbox, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    message = make_inbound("m-1")

    with within(migrated_engine) as conn:
        assert inbox.accept_once_within(conn, message) is True

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.status is InboxStatus.RECEIVED
    assert entry.received_at == START
    assert entry.envelope == message.envelope
    assert entry.sender_state == "FR"
    assert entry.registry_outcome is None
    assert inbox.get("m-2") is None


def test_redelivered_message_is_a_duplicate_not_an_error(
    inbox: Inbox, clock: FakeClock, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-1"))
    clock.advance(60)

    with within(migrated_engine) as conn:
        assert inbox.accept_once_within(conn, make_inbound("m-1")) is False

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.received_at == START


def test_message_id_held_by_another_sender_is_refused(
    inbox: Inbox, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-1", sender_state="FR"))

    with pytest.raises(ReplayRejected), within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-1", sender_state="IT"))

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.sender_state == "FR"


def test_inbox_accepts_message_id_once_even_under_concurrency(
    inbox: Inbox, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    receivers = 6
    message_ids = [f"m-{i}" for i in range(12)]
    in_step = Barrier(receivers)

    def receive() -> list[str]:
        accepted = []
        for message_id in message_ids:
            # Every receiver delivers the same id at the same moment.
            in_step.wait(timeout=10)
            with within(migrated_engine) as conn:
                stored = inbox.accept_once_within(conn, make_inbound(message_id))
            if stored:
                accepted.append(message_id)
        return accepted

    with ThreadPoolExecutor(max_workers=receivers) as pool:
        futures = [pool.submit(receive) for _ in range(receivers)]
        accepted = Counter(m for f in futures for m in f.result(timeout=60))

    assert accepted == Counter(message_ids)


def test_message_moves_forward_only(
    inbox: Inbox, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-1"))

    assert inbox.record_outcome("m-1", "applied") is False
    with within(migrated_engine) as conn:
        assert inbox.mark_handed_over_within(conn, "m-1") is True
    with within(migrated_engine) as conn:
        assert inbox.mark_handed_over_within(conn, "m-1") is False
    assert inbox.record_outcome("m-1", "rejected: unknown birth record") is True
    assert inbox.record_outcome("m-1", "applied") is False

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.status is InboxStatus.ACKNOWLEDGED
    assert entry.registry_outcome == "rejected: unknown birth record"
    with within(migrated_engine) as conn:
        assert inbox.mark_handed_over_within(conn, "no-such-message") is False


def test_kind_and_purpose_are_stored_with_the_message(
    inbox: Inbox, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        inbox.accept_once_within(
            conn, replace(make_inbound("m-1"), kind="birth", purpose="civil-status-update")
        )

    entry = inbox.get("m-1")
    assert entry is not None
    assert (entry.kind, entry.purpose) == ("birth", "civil-status-update")
    assert (entry.registry_reason, entry.handed_over_at, entry.payload_purged_at) == (
        None,
        None,
        None,
    )
    assert entry.ack_sent is False


def test_pending_handover_lists_received_messages_oldest_first(
    inbox: Inbox, clock: FakeClock, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-c"))
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-b"))
    clock.advance(1)
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-a"))
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-handed"))
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-handed", applied=True)

    pending = inbox.pending_handover(10)

    assert [m.message_id for m in pending] == ["m-b", "m-c", "m-a"]
    assert all(isinstance(m, InboxMessage) and m.envelope for m in pending)
    assert [m.message_id for m in inbox.pending_handover(2)] == ["m-b", "m-c"]
    with pytest.raises(ValueError, match="limit"):
        inbox.pending_handover(0)


def test_handover_records_the_registry_answer_once(
    inbox: Inbox, clock: FakeClock, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, make_inbound("m-1"))
    clock.advance(5)

    with pytest.raises(ValueError, match="reason"), within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-1", reason="UNKNOWN_RECORD")
    with within(migrated_engine) as conn:
        assert (
            inbox.mark_handed_over_within(conn, "m-1", applied=False, reason="UNKNOWN_RECORD")
            is True
        )
    with within(migrated_engine) as conn:
        assert inbox.mark_handed_over_within(conn, "m-1", applied=True) is False
    assert inbox.record_outcome("m-1", "applied") is False

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.status is InboxStatus.HANDED_OVER
    assert (entry.registry_outcome, entry.registry_reason) == ("rejected", "UNKNOWN_RECORD")
    assert entry.handed_over_at == START + timedelta(seconds=5)


def test_unacknowledged_lists_answers_whose_ack_is_owed(
    inbox: Inbox, clock: FakeClock, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    for message_id in ("m-1", "m-2", "m-3", "m-4"):
        with within(migrated_engine) as conn:
            inbox.accept_once_within(conn, make_inbound(message_id))
        clock.advance(1)
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-1", applied=True)
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-2")  # the registry answers later
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-3")
    inbox.record_outcome("m-3", "applied")

    assert [m.message_id for m in inbox.unacknowledged(10)] == ["m-1", "m-3"]

    # No acknowledgement without an answer to carry.
    with within(migrated_engine) as conn:
        assert inbox.mark_ack_sent_within(conn, "m-2") is False
    with within(migrated_engine) as conn:
        assert inbox.mark_ack_sent_within(conn, "m-4") is False
    with within(migrated_engine) as conn:
        assert inbox.mark_ack_sent_within(conn, "m-1") is True
    with within(migrated_engine) as conn:
        assert inbox.mark_ack_sent_within(conn, "m-1") is False
    assert [m.message_id for m in inbox.unacknowledged(10)] == ["m-3"]
    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.ack_sent is True


def test_purged_payload_keeps_the_inbox_row(
    inbox: Inbox, clock: FakeClock, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    other = replace(make_inbound("m-other"), agreement_id="FR-IT/civil-records")
    done_with_digest = replace(make_inbound("m-done"), request_digest="sha256:" + "cd" * 32)
    for message in (done_with_digest, make_inbound("m-waiting"), other):
        with within(migrated_engine) as conn:
            inbox.accept_once_within(conn, message)
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-done", applied=True)
    clock.advance(60)

    assert inbox.purge_payloads("FR-DE/civil-records") == 2
    assert inbox.purge_payloads("FR-DE/civil-records") == 0

    done = inbox.get("m-done")
    assert done is not None
    assert (done.envelope, done.payload_purged_at) == (None, clock())
    assert (done.status, done.registry_outcome) == (InboxStatus.HANDED_OVER, "applied")
    # The acknowledgement is still owed, bound to the kept digest; only the payload is gone.
    assert [m.message_id for m in inbox.unacknowledged(10)] == ["m-done"]
    # A purged message still awaits hand-over, without its payload, so that it can be
    # closed as rejected and the sender still gets an answer.
    waiting = inbox.pending_handover(10)
    assert [(m.message_id, m.envelope is None) for m in waiting] == [
        ("m-other", False),
        ("m-waiting", True),
    ]
    # A redelivery of a purged message is still recognised as a duplicate.
    with within(migrated_engine) as conn:
        assert inbox.accept_once_within(conn, make_inbound("m-waiting")) is False


def test_an_owed_acknowledgement_carries_the_stored_digest_and_no_envelope(
    inbox: Inbox, make_inbound: MakeInbound, migrated_engine: Engine
) -> None:
    digest = "sha256:" + "ab" * 32
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, replace(make_inbound("m-new"), request_digest=digest))
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, "m-new", applied=False, reason="UNKNOWN_RECORD")

    owed = {m.message_id: m for m in inbox.unacknowledged(10)}

    assert owed["m-new"].request_digest == digest
    assert (owed["m-new"].registry_outcome, owed["m-new"].registry_reason) == (
        "rejected",
        "UNKNOWN_RECORD",
    )


@pytest.mark.parametrize("digest", ["", "sha256:AB" + "0" * 62, "sha512:" + "0" * 64])
def test_a_malformed_request_digest_is_never_stored(make_inbound: MakeInbound, digest: str) -> None:
    with pytest.raises(ValueError, match="request_digest"):
        replace(make_inbound("m-1"), request_digest=digest)
