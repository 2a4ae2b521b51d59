"""A partner whose receipt does not bind what was sent has not taken the update.

AT's gateway runs in this process; in BE's place stands a peer server with BE's own
TLS identity and receipt key that signs for every envelope, single or in a batch, but
binds another digest. AT must keep each update for another attempt (``RECEIPT_INVALID``)
and never count it delivered.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gateway.envelope import ReceiptSigner
from gateway.store.tables import OutboxStatus
from pouch.v1 import common_pb2, envelope_pb2, peer_pb2
from tests.integration.civil_builders import update_requests, wait_until
from tests.integration.exchange_fixtures import StandInPartner, at_facing, outbox_message

OTHER_DIGEST = "sha256:" + "0" * 64
SIGNED_FOR = frozenset({common_pb2.DELIVERY_STATE_DELIVERED, common_pb2.DELIVERY_STATE_APPLIED})


class _MisbindingPartner(StandInPartner):
    """Signs a genuine receipt for each envelope, over a digest of something else."""

    def __init__(self, receipts: ReceiptSigner, *, batches: bool) -> None:
        self._receipts = receipts
        self._batches = batches
        self._lock = threading.Lock()
        self.seen: list[str] = []

    def receipts_for(
        self, envelopes: list[envelope_pb2.Envelope], context: grpc.ServicerContext
    ) -> list[envelope_pb2.Receipt]:
        with self._lock:
            self.seen.extend(envelope.message_id for envelope in envelopes)
        return [
            self._receipts.sign_receipt(
                message_id=envelope.message_id,
                request_digest=OTHER_DIGEST,
                outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
                reason_code="",
                issued_at=datetime.now(UTC),
            )
            for envelope in envelopes
        ]

    def DeliverBatch(
        self, request: peer_pb2.DeliverBatchRequest, context: grpc.ServicerContext
    ) -> peer_pb2.DeliverBatchResponse:
        if not self._batches:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "an older release")
        return super().DeliverBatch(request, context)


@pytest.mark.parametrize("batches", [True, False], ids=["batch calls", "single calls"])
def test_a_receipt_binding_another_digest_leaves_each_update_undelivered(
    tmp_path: Path, batches: bool
) -> None:
    facing = at_facing(
        tmp_path,
        lambda receipts: _MisbindingPartner(receipts, batches=batches),  # type: ignore[abstract]
    )
    with facing as at:
        requests = update_requests("misbound", 3)
        message_ids = [at.caller.submit(request) for request in requests]

        def retried() -> bool:
            messages = [outbox_message(at.gateway, m) for m in message_ids]
            return all(m is not None and m.attempts >= 2 for m in messages)

        wait_until(retried, timeout_s=30, describe=lambda: f"partner saw {at.partner.seen}")

        for message_id in message_ids:
            message = outbox_message(at.gateway, message_id)
            assert message is not None
            assert message.status in (OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT)
            assert message.delivered_at is None
            assert message.last_error_reason == "RECEIPT_INVALID"
            assert at.caller.status(message_id).state not in SIGNED_FOR
        assert set(at.partner.seen) == set(message_ids)
