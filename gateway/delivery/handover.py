"""After the receipt: handing inbound updates to the registry, and its answer back.

Two loops run on the receiving gateway, both driven by what the inbox holds, so a
crash at any moment only delays them:

- :class:`RegistryHandover` gives each received update to the registry adapter.
  Adapters de-duplicate by message id, so an update handed over again after a crash
  is applied once. A registry that is down leaves the update for the next round.
- :class:`Acknowledger` signs the registry's business decision (applied, or
  rejected with its reason) as a receipt and sends it to the sender, until the
  sender has taken it.

On the sending gateway, :class:`OutcomeRecorder` checks such a receipt against the
partner's signing key and the digest of what was delivered, and records it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime

import grpc
import grpc.aio
from google.protobuf.json_format import ParseDict, ParseError

from adapters.base import InboundUpdate, RegistryAdapter, RegistryUnavailable
from gateway.audit.entry import Decision, EventKind
from gateway.audit.recorder import AuditRecorder
from gateway.delivery.partners import PartnerChannels
from gateway.envelope import ReceiptSigner, envelope_digest, verify_receipt
from gateway.errors import NotFound, PouchError, StorageUnavailable
from gateway.exchanges.payload import decode_payload
from gateway.pki.bundle import TrustBundle
from gateway.store.inbox import Inbox, InboxEntry
from gateway.store.outbox import Outbox
from pouch.v1 import civil_pb2, envelope_pb2, peer_pb2

log = logging.getLogger(__name__)


class RegistryHandover:
    def __init__(
        self, *, inbox: Inbox, adapter: RegistryAdapter, batch_size: int, audit: AuditRecorder
    ) -> None:
        self._audit = audit
        self._inbox = inbox
        self._adapter = adapter
        self._batch = batch_size

    async def run_once(self) -> bool:
        pending = await asyncio.to_thread(self._inbox.pending_handover, self._batch)
        for entry in pending:
            if not await self._hand_over(entry):
                return False
        return bool(pending)

    async def _hand_over(self, entry: InboxEntry) -> bool:
        if entry.envelope is None:  # purged by termination before the registry saw it
            await asyncio.to_thread(
                self._inbox.mark_handed_over,
                entry.message_id,
                applied=False,
                reason="PAYLOAD_PURGED",
            )
            return True
        envelope = envelope_pb2.Envelope.FromString(entry.envelope)
        update = civil_pb2.CivilRecordUpdate()
        try:
            ParseDict(decode_payload(envelope.payload), update)
        except (ParseError, PouchError):
            await asyncio.to_thread(
                self._inbox.mark_handed_over,
                entry.message_id,
                applied=False,
                reason="PAYLOAD_NOT_A_CIVIL_RECORD",
            )
            return True
        try:
            outcome = await self._adapter.apply(
                InboundUpdate(
                    message_id=entry.message_id,
                    sender_state=entry.sender_state,
                    agreement_id=entry.agreement_id,
                    purpose=envelope.purpose,
                    update=update,
                )
            )
        except RegistryUnavailable as e:
            log.warning("registry unavailable (%s); will hand over later", e.reason)
            return False
        await asyncio.to_thread(
            self._inbox.mark_handed_over,
            entry.message_id,
            applied=outcome.applied,
            reason=outcome.reason_code,
        )
        await asyncio.to_thread(
            self._audit.record,
            EventKind.DELIVERED,
            Decision.APPLIED if outcome.applied else Decision.REJECTED,
            message_id=entry.message_id,
            agreement_id=entry.agreement_id,
            agreement_version=envelope.agreement.version,
            exchange_type=entry.exchange_type,
            purpose=envelope.purpose,
            peer_state=entry.sender_state,
            reason_code=outcome.reason_code or None,
        )
        return True


class Acknowledger:
    def __init__(
        self,
        *,
        inbox: Inbox,
        signer: ReceiptSigner,
        partners: PartnerChannels,
        clock: Callable[[], datetime],
        batch_size: int,
        call_timeout_s: float,
    ) -> None:
        self._inbox = inbox
        self._signer = signer
        self._partners = partners
        self._clock = clock
        self._batch = batch_size
        self._timeout = call_timeout_s

    async def run_once(self) -> bool:
        waiting = await asyncio.to_thread(self._inbox.unacknowledged, self._batch)
        sent = 0
        for entry in waiting:
            if await self._acknowledge(entry):
                sent += 1
        return sent > 0

    async def _acknowledge(self, entry: InboxEntry) -> bool:
        applied = entry.registry_outcome == "applied"
        digest = (
            envelope_digest(envelope_pb2.Envelope.FromString(entry.envelope))
            if entry.envelope is not None
            else ""
        )
        receipt = await asyncio.to_thread(
            self._signer.sign_receipt,
            message_id=entry.message_id,
            request_digest=digest,
            outcome=(
                envelope_pb2.RECEIPT_OUTCOME_APPLIED
                if applied
                else envelope_pb2.RECEIPT_OUTCOME_REJECTED
            ),
            reason_code="" if applied else (entry.registry_reason or "REJECTED"),
            issued_at=self._clock(),
        )
        try:
            await self._partners.peer(entry.sender_state).Acknowledge(
                peer_pb2.AcknowledgeRequest(receipt=receipt), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            log.info("acknowledgement to %s not taken yet: %s", entry.sender_state, e.code().name)
            return False
        await asyncio.to_thread(self._inbox.mark_ack_sent, entry.message_id)
        return True


class OutcomeRecorder:
    """The sender's side of ``Acknowledge``: the partner registry's signed decision."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        bundles: Mapping[str, TrustBundle],
        clock: Callable[[], datetime],
        audit: AuditRecorder,
    ) -> None:
        self._audit = audit
        self._outbox = outbox
        self._bundles = dict(bundles)
        self._clock = clock

    def acknowledge(self, peer_state: str, receipt: envelope_pb2.Receipt) -> None:
        """Blocking: call it from a worker thread."""
        message = self._outbox.get(receipt.message_id)
        if message is None or message.recipient_state != peer_state:
            raise NotFound("no message to this partner has that id")
        if message.receipt is None:
            # Delivered, but our dispatcher has not recorded the delivery receipt yet.
            raise StorageUnavailable("delivery not yet recorded", retry_after_s=1.0)
        # The decision binds the digest of the attempt the partner stored first; after a
        # lost receipt our recorded delivery receipt may bind a later attempt of the same
        # message (same id and payload, fresh signature), so the id is what must match.
        verify_receipt(
            receipt,
            receiver_bundle=self._bundles[peer_state],
            expected_message_id=message.message_id,
            expected_request_digest=receipt.request_digest,
            now=self._clock(),
        )
        applied = receipt.outcome == envelope_pb2.RECEIPT_OUTCOME_APPLIED
        recorded = self._outbox.record_outcome(
            message.message_id,
            outcome="applied" if applied else "rejected",
            reason=receipt.reason_code or None,
        )
        if recorded:
            self._audit.record(
                EventKind.RECEIPTED,
                Decision.APPLIED if applied else Decision.REJECTED,
                message_id=message.message_id,
                agreement_id=message.agreement_id,
                agreement_version=message.agreement_version,
                exchange_type=message.exchange_type,
                purpose=message.purpose,
                peer_state=peer_state,
                reason_code=receipt.reason_code or None,
            )
