"""The acknowledger binds each decision to the digest of the envelope as first stored,
kept with the message, so that not even a purged payload leaves it unbound."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import Engine

from gateway.config import DeliverySection
from gateway.delivery.handover import Acknowledger
from gateway.delivery.inbound_retry import InboundFailures, RetryPolicy
from gateway.delivery.receipts import AgreementReceipts
from gateway.envelope import envelope_digest, verify_receipt
from gateway.store.group_commit import GroupCommit
from gateway.store.inbox import InboundMessage, Inbox
from pouch.v1 import envelope_pb2, peer_pb2
from tests.unit.envelope import SENDER, make_pki

from .conftest import FakeClock, within


@dataclass
class _Sender:
    """The sending gateway's peer API as the acknowledger sees it: it takes every decision."""

    taken: list[envelope_pb2.Receipt] = field(default_factory=list)

    async def Acknowledge(self, request: peer_pb2.AcknowledgeRequest, **_: Any) -> None:
        self.taken.append(request.receipt)

    async def AcknowledgeBatch(
        self, request: peer_pb2.AcknowledgeBatchRequest, **_: Any
    ) -> peer_pb2.AcknowledgeBatchResponse:
        self.taken.extend(request.receipts)
        return peer_pb2.AcknowledgeBatchResponse(
            results=[peer_pb2.AcknowledgeResult() for _ in request.receipts]
        )


@dataclass
class _Partners:
    sender: _Sender

    def peer(self, state: str) -> _Sender:
        assert state == SENDER
        return self.sender

    def takes_batches(self, state: str) -> bool:
        return True

    def batch_failed(self, state: str, code: grpc.StatusCode) -> bool:
        return False


def _inbound(envelope: envelope_pb2.Envelope, digest: str | None) -> InboundMessage:
    return InboundMessage(
        message_id=envelope.message_id,
        sender_state=SENDER,
        agreement_id=envelope.agreement.id,
        exchange_type="civil_record",
        envelope=envelope.SerializeToString(),
        request_digest=digest,
    )


def _acknowledge_once(
    inbox: Inbox,
    engine: Engine,
    signer: Any,
    sender: _Sender,
    *,
    batch_size: int,
    now: Any,
    inbox_clock: Any = None,
) -> bool:
    group = GroupCommit(engine)
    acknowledger = Acknowledger(
        InboundFailures(
            inbox=inbox,
            policy=RetryPolicy.from_settings(DeliverySection(), inbox_clock or (lambda: now)),
            group=group,
        ),
        AgreementReceipts(signer, hybrid_signatures=lambda _agreement_id: False),
        _Partners(sender),  # type: ignore[arg-type]
        DeliverySection(batch_size=batch_size, call_timeout_seconds=1.0),
        lambda: now,
    )
    try:
        return asyncio.run(acknowledger.run_once())
    finally:
        group.close()


def test_each_decision_binds_the_kept_digest(
    tmp_path: Path, migrated_engine: Engine, clock: FakeClock
) -> None:
    pki = make_pki(tmp_path)
    inbox = Inbox(migrated_engine, clock=clock)
    kept, older = pki.envelope(), pki.envelope(agreement_id="be-fr-older")
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, _inbound(kept, envelope_digest(kept)))
    with within(migrated_engine) as conn:
        inbox.accept_once_within(conn, _inbound(older, envelope_digest(older)))
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(conn, kept.message_id, applied=True)
    with within(migrated_engine) as conn:
        inbox.mark_handed_over_within(
            conn, older.message_id, applied=False, reason="UNKNOWN_RECORD"
        )
    assert inbox.purge_payloads(kept.agreement.id) == 1  # the digest outlives the payload
    sender = _Sender()
    taken = _acknowledge_once(
        inbox, migrated_engine, pki.own.receipts, sender, batch_size=10, now=pki.now
    )
    assert taken is True

    decisions = {receipt.message_id: receipt for receipt in sender.taken}
    for envelope in (kept, older):
        verify_receipt(
            decisions[envelope.message_id],
            receiver_bundle=pki.own.bundle,
            expected_message_id=envelope.message_id,
            expected_request_digest=envelope_digest(envelope),
            now=pki.now,
        )
    assert decisions[older.message_id].reason_code == "UNKNOWN_RECORD"
    assert inbox.unacknowledged(10) == []
