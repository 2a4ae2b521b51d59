"""The inbox: each message id stored exactly once, and only ever moving forward."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from sqlalchemy import Engine

from gateway.errors import ReplayRejected
from gateway.store.inbox import InboundMessage, Inbox, InboxStatus

from .conftest import START, FakeClock

MakeInbound = Callable[..., InboundMessage]


@pytest.fixture
def inbox(migrated_engine: Engine, clock: FakeClock) -> Inbox:
    return Inbox(migrated_engine, clock=clock)


def test_new_message_is_stored_as_received(inbox: Inbox, make_inbound: MakeInbound) -> None:
    message = make_inbound("m-1")

    assert inbox.accept_once(message) is True

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.status is InboxStatus.RECEIVED
    assert entry.received_at == START
    assert entry.envelope == message.envelope
    assert entry.sender_state == "FR"
    assert entry.registry_outcome is None
    assert inbox.get("m-2") is None


def test_redelivered_message_is_a_duplicate_not_an_error(
    inbox: Inbox, clock: FakeClock, make_inbound: MakeInbound
) -> None:
    inbox.accept_once(make_inbound("m-1"))
    clock.advance(60)

    assert inbox.accept_once(make_inbound("m-1")) is False

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.received_at == START


def test_message_id_held_by_another_sender_is_refused(
    inbox: Inbox, make_inbound: MakeInbound
) -> None:
    inbox.accept_once(make_inbound("m-1", sender_state="FR"))

    with pytest.raises(ReplayRejected):
        inbox.accept_once(make_inbound("m-1", sender_state="IT"))

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.sender_state == "FR"


def test_inbox_accepts_message_id_once_even_under_concurrency(
    inbox: Inbox, make_inbound: MakeInbound
) -> None:
    receivers = 6
    message_ids = [f"m-{i}" for i in range(12)]
    in_step = Barrier(receivers)

    def receive() -> list[str]:
        accepted = []
        for message_id in message_ids:
            # Every receiver delivers the same id at the same moment.
            in_step.wait(timeout=10)
            if inbox.accept_once(make_inbound(message_id)):
                accepted.append(message_id)
        return accepted

    with ThreadPoolExecutor(max_workers=receivers) as pool:
        futures = [pool.submit(receive) for _ in range(receivers)]
        accepted = Counter(m for f in futures for m in f.result(timeout=60))

    assert accepted == Counter(message_ids)


def test_message_moves_forward_only(inbox: Inbox, make_inbound: MakeInbound) -> None:
    inbox.accept_once(make_inbound("m-1"))

    assert inbox.record_outcome("m-1", "applied") is False
    assert inbox.mark_handed_over("m-1") is True
    assert inbox.mark_handed_over("m-1") is False
    assert inbox.record_outcome("m-1", "rejected: unknown birth record") is True
    assert inbox.record_outcome("m-1", "applied") is False

    entry = inbox.get("m-1")
    assert entry is not None
    assert entry.status is InboxStatus.ACKNOWLEDGED
    assert entry.registry_outcome == "rejected: unknown birth record"
    assert inbox.mark_handed_over("no-such-message") is False
