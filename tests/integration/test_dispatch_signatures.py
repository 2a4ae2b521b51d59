"""Which signature an attempt carries: the one made when the message was queued, or a
new one.

AT's gateway runs in this process; in BE's place stands a peer server with BE's own TLS
identity and receipt key, which keeps every envelope it is sent and signs a true receipt
for it (binding the digest of the bytes it got). A first attempt soon after queueing
sends the stored envelope byte for byte, checked against the digest stored with it; a
retry, or a first attempt once ``resign_after_seconds`` have passed, carries a new
signature and creation time over the same payload, and is still delivered once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import grpc

from gateway.envelope import ReceiptSigner, envelope_digest
from gateway.store.outbox import OutboxMessage
from gateway.store.tables import OutboxStatus
from pouch.v1 import envelope_pb2
from tests.integration.civil_builders import update_requests, wait_until
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    FacingPartner,
    StandInPartner,
    at_facing,
    outbox_message,
    true_receipt,
)

UPDATES = 3


class _KeepingPartner(StandInPartner):
    """Keeps what it is sent; refuses the first ``refuse_first`` calls as unavailable."""

    def __init__(self, receipts: ReceiptSigner, *, refuse_first: int = 0) -> None:
        self._receipts = receipts
        self._lock = threading.Lock()
        self._refusals_left = refuse_first
        self.attempts: dict[str, list[envelope_pb2.Envelope]] = {}

    def receipts_for(
        self, envelopes: list[envelope_pb2.Envelope], context: grpc.ServicerContext
    ) -> list[envelope_pb2.Receipt]:
        with self._lock:
            for envelope in envelopes:
                self.attempts.setdefault(envelope.message_id, []).append(envelope)
            refuse = self._refusals_left > 0
            if refuse:
                self._refusals_left -= 1
        if refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return [true_receipt(self._receipts, envelope) for envelope in envelopes]


def _deliver(
    tmp_path: Path, *, refuse_first: int = 0, delivery: Mapping[str, float] = FAST_DELIVERY
) -> tuple[list[OutboxMessage], _KeepingPartner]:
    """Submit ``UPDATES`` updates to AT and wait until each is delivered; the outbox rows
    and what the partner was sent."""

    def partner_of(receipts: ReceiptSigner) -> _KeepingPartner:
        return _KeepingPartner(receipts, refuse_first=refuse_first)  # type: ignore[abstract]

    facing: FacingPartner[_KeepingPartner]
    with at_facing(tmp_path, partner_of, delivery=delivery) as facing:
        message_ids = [facing.caller.submit(r) for r in update_requests("signed", UPDATES)]

        def rows() -> list[OutboxMessage | None]:
            return [outbox_message(facing.gateway, m) for m in message_ids]

        wait_until(
            lambda: all(m is not None and m.status is OutboxStatus.DELIVERED for m in rows()),
            timeout_s=60,
            describe=lambda: f"outbox {[m and m.status for m in rows()]}",
        )
        delivered = [m for m in rows() if m is not None]
    return delivered, facing.partner


def test_a_first_attempt_sends_the_envelope_as_it_was_queued(tmp_path: Path) -> None:
    delivered, partner = _deliver(tmp_path)

    for message in delivered:
        (sent,) = partner.attempts[message.message_id]
        assert sent.SerializeToString() == message.envelope
        assert message.envelope_digest == envelope_digest(sent)
        assert message.attempts == 1


def test_a_retry_is_signed_afresh_over_the_same_payload(tmp_path: Path) -> None:
    delivered, partner = _deliver(tmp_path, refuse_first=1)

    retried = [m for m in delivered if len(partner.attempts[m.message_id]) == 2]
    assert retried, "the refused call carried no message"
    for message in retried:
        first, second = partner.attempts[message.message_id]
        assert message.envelope is not None
        assert first.SerializeToString() == message.envelope
        assert second.signature != first.signature
        assert second.created_at.ToDatetime() > first.created_at.ToDatetime()
        assert second.payload == first.payload
        assert message.receipt is not None
        receipt = envelope_pb2.Receipt.FromString(message.receipt)
        assert receipt.request_digest == envelope_digest(second) != message.envelope_digest


def test_an_envelope_queued_longer_ago_than_resign_after_is_signed_afresh(tmp_path: Path) -> None:
    # Every envelope is older than a millisecond by the time the dispatcher claims it.
    delivery = {**FAST_DELIVERY, "resign_after_seconds": 0.001}
    delivered, partner = _deliver(tmp_path, delivery=delivery)

    for message in delivered:
        (sent,) = partner.attempts[message.message_id]
        assert message.envelope is not None
        stored = envelope_pb2.Envelope.FromString(message.envelope)
        assert sent.signature != stored.signature
        assert sent.created_at.ToDatetime() > stored.created_at.ToDatetime()
        assert sent.payload == stored.payload
