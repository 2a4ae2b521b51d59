"""The dispatcher keeps ``batches_in_flight`` batches out at once, and never more.

AT's gateway runs in this process; in BE's place stands a peer server with BE's own TLS
identity and receipt key. It signs a true receipt for every envelope, but holds each
call until another call is in hand beside it (or its patience runs out), and records
how many calls it ever held at once. With one batch in flight the partner never sees
two; with two, it does, and every update is still delivered once.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from gateway.envelope import ReceiptSigner
from gateway.store.tables import OutboxStatus
from pouch.v1 import envelope_pb2
from tests.integration.civil_builders import update_requests, wait_until
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    StandInPartner,
    at_facing,
    outbox_message,
    true_receipt,
)

UPDATES = 12


class _PairingPartner(StandInPartner):
    def __init__(self, receipts: ReceiptSigner, *, patience_s: float) -> None:
        self._receipts = receipts
        self._patience_s = patience_s
        self._held = threading.Condition()
        self._in_hand = 0
        self.most_at_once = 0
        self.received: list[str] = []

    def receipts_for(
        self, envelopes: list[envelope_pb2.Envelope], context: grpc.ServicerContext
    ) -> list[envelope_pb2.Receipt]:
        with self._held:
            self._in_hand += 1
            self.most_at_once = max(self.most_at_once, self._in_hand)
            self.received.extend(e.message_id for e in envelopes)
            self._held.notify_all()
            self._held.wait_for(lambda: self._in_hand >= 2, timeout=self._patience_s)
        try:
            return [true_receipt(self._receipts, envelope) for envelope in envelopes]
        finally:
            with self._held:
                self._in_hand -= 1


@pytest.mark.parametrize("in_flight", [1, 2])
def test_the_partner_holds_as_many_batches_at_once_as_the_dispatcher_sends(
    tmp_path: Path, in_flight: int
) -> None:
    facing = at_facing(
        tmp_path,
        lambda receipts: _PairingPartner(receipts, patience_s=1.0),  # type: ignore[abstract]
        delivery={**FAST_DELIVERY, "batches_in_flight": in_flight},
    )
    with facing as at:
        requests = update_requests("paired", UPDATES)
        message_ids = [at.caller.submit(request) for request in requests]

        def delivered() -> bool:
            messages = [outbox_message(at.gateway, m) for m in message_ids]
            return all(m is not None and m.status is OutboxStatus.DELIVERED for m in messages)

        wait_until(delivered, timeout_s=60, describe=lambda: f"partner has {at.partner.received}")
        partner = at.partner

    assert partner.most_at_once == in_flight
    assert sorted(partner.received) == sorted(message_ids)  # each sent once
