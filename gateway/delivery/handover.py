"""After the receipt: handing inbound updates to the registry, and its answer back.

Two loops run on the receiving gateway, both driven by what the inbox holds, so a
crash at any moment only delays them:

- :class:`RegistryHandover` gives each received update to the registry adapter.
  Adapters de-duplicate by message id, so an update handed over again after a crash
  is applied once. A registry that is down leaves the update for the next round.
- :class:`Acknowledger` signs the registry's business decision (applied, or
  rejected with its reason) as a receipt and sends it to the sender, until the
  sender has taken it; the decisions for one sender travel together in
  ``AcknowledgeBatch`` calls.

On the sending gateway, :class:`OutcomeRecorder` checks such a receipt against the
partner's signing key and the digest of what was delivered, and records it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import grpc
import grpc.aio
from google.protobuf.json_format import ParseError
from sqlalchemy import Connection

from adapters.base import (
    BatchRegistryAdapter,
    InboundUpdate,
    RegistryAdapter,
    RegistryUnavailable,
)
from gateway.audit.entry import Decision, EventKind
from gateway.audit.recorder import AuditRecorder
from gateway.delivery.batches import chunks, refusal_code
from gateway.delivery.partners import PartnerChannels
from gateway.envelope import ReceiptSigner, envelope_digest, verify_receipt
from gateway.errors import NotFound, PouchError, StorageUnavailable, unexpected_summary
from gateway.exchanges.payload import decode_payload
from gateway.pki.bundle import TrustBundle
from gateway.protojson import parse_dict
from gateway.store.group_commit import GroupCommit, WriteUnit
from gateway.store.inbox import Inbox, InboxEntry, OwedAcknowledgement
from gateway.store.outbox import Outbox
from pouch.v1 import civil_pb2, envelope_pb2, peer_pb2

log = logging.getLogger(__name__)


class RegistryHandover:
    """Hands received civil-record updates to the registry, oldest first.

    The registry sees the updates in the order they were received: a batch at a time
    to an adapter that takes batches (:class:`~adapters.base.BatchRegistryAdapter`),
    else one at a time. What it answered is recorded, with its audit entry, in one
    group-commit unit per update; the writes of a batch are awaited together, so they
    share commits. A crash before the write hands the update over again
    (the registry adapter is told the message id, and applies it once).
    """

    def __init__(
        self,
        *,
        inbox: Inbox,
        adapter: RegistryAdapter,
        batch_size: int,
        audit: AuditRecorder,
        group: GroupCommit,
    ) -> None:
        self._audit = audit
        self._inbox = inbox
        self._adapter = adapter
        self._batch = batch_size
        self._group = group

    async def run_once(self) -> bool:
        pending = await asyncio.to_thread(self._inbox.pending_handover, self._batch)
        writes: list[asyncio.Task[None]] = []

        def record(
            entry: InboxEntry, applied: bool, reason: str | None, version: int | None
        ) -> None:
            unit = self._record(entry, applied, reason, version)
            writes.append(asyncio.ensure_future(self._group.write(unit)))

        try:
            handed: list[tuple[InboxEntry, InboundUpdate, int]] = []
            for entry in pending:
                given = self._update(entry)
                if isinstance(given, str):  # refused before the registry saw it
                    record(entry, False, given, None)
                else:
                    handed.append((entry, *given))
            if not handed:
                return bool(pending)
            if isinstance(self._adapter, BatchRegistryAdapter):
                outcomes = await self._adapter.apply_many([item for _, item, _ in handed])
                for (entry, _, version), outcome in zip(handed, outcomes, strict=True):
                    record(entry, outcome.applied, outcome.reason_code or None, version)
                return True
            for entry, item, version in handed:
                outcome = await self._adapter.apply(item)
                record(entry, outcome.applied, outcome.reason_code or None, version)
        except RegistryUnavailable as e:
            log.warning("registry unavailable (%s); will hand over later", e.reason)
            return False
        finally:
            await asyncio.gather(*writes)
        return True

    @staticmethod
    def _update(entry: InboxEntry) -> tuple[InboundUpdate, int] | str:
        """What the registry is given for ``entry`` and the agreement version it came
        under, or why the registry is not given anything."""
        if entry.envelope is None:  # purged by termination before the registry saw it
            return "PAYLOAD_PURGED"
        envelope = envelope_pb2.Envelope.FromString(entry.envelope)
        try:
            update = parse_dict(decode_payload(envelope.payload), civil_pb2.CivilRecordUpdate)
        except (ParseError, PouchError):
            return "PAYLOAD_NOT_A_CIVIL_RECORD"
        handed = InboundUpdate(
            message_id=entry.message_id,
            sender_state=entry.sender_state,
            agreement_id=entry.agreement_id,
            purpose=envelope.purpose,
            update=update,
        )
        return handed, envelope.agreement.version

    def _record(
        self, entry: InboxEntry, applied: bool, reason: str | None, version: int | None
    ) -> WriteUnit[None]:
        """The unit recording what the registry answered, with its audit entry."""

        def store(conn: Connection) -> None:
            self._inbox.mark_handed_over_within(
                conn, entry.message_id, applied=applied, reason=reason
            )
            if version is None:
                return  # refused before the registry saw it: nothing was delivered
            self._audit.record(
                EventKind.DELIVERED,
                Decision.APPLIED if applied else Decision.REJECTED,
                message_id=entry.message_id,
                agreement_id=entry.agreement_id,
                agreement_version=version,
                exchange_type=entry.exchange_type,
                purpose=entry.purpose,
                peer_state=entry.sender_state,
                reason_code=reason,
                conn=conn,
            )

        return store


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
        group: GroupCommit,
    ) -> None:
        self._group = group
        self._inbox = inbox
        self._signer = signer
        self._partners = partners
        self._clock = clock
        self._batch = batch_size
        self._timeout = call_timeout_s

    async def run_once(self) -> bool:
        waiting = await asyncio.to_thread(self._inbox.unacknowledged, self._batch)
        by_sender: dict[str, list[tuple[OwedAcknowledgement, envelope_pb2.Receipt]]] = {}
        for owed in waiting:
            try:
                receipt = self._receipt(owed)
            except Exception as e:  # one row that cannot be signed must not hold back the rest
                log.error(
                    "cannot acknowledge message %s to %s: %s",
                    owed.message_id,
                    owed.sender_state,
                    unexpected_summary(e),
                )
                continue
            by_sender.setdefault(owed.sender_state, []).append((owed, receipt))
        sent = await asyncio.gather(
            *(
                self._send(sender, chunk)
                for sender, signed in by_sender.items()
                for chunk in chunks(signed, lambda item: item[1].ByteSize())
            )
        )
        return any(sent)

    def _receipt(self, owed: OwedAcknowledgement) -> envelope_pb2.Receipt:
        """The registry's decision on ``owed``'s message, signed for its sender."""
        applied = owed.registry_outcome == "applied"
        digest = owed.request_digest
        if digest is None:  # stored before digests were kept: recomputed from the envelope
            if owed.envelope is None:
                raise ValueError("the message's payload is purged and no digest was kept")
            digest = envelope_digest(envelope_pb2.Envelope.FromString(owed.envelope))
        return self._signer.sign_receipt(
            message_id=owed.message_id,
            request_digest=digest,
            outcome=(
                envelope_pb2.RECEIPT_OUTCOME_APPLIED
                if applied
                else envelope_pb2.RECEIPT_OUTCOME_REJECTED
            ),
            reason_code="" if applied else (owed.registry_reason or "REJECTED"),
            issued_at=self._clock(),
        )

    async def _send(
        self, sender: str, chunk: list[tuple[OwedAcknowledgement, envelope_pb2.Receipt]]
    ) -> bool:
        """One ``AcknowledgeBatch`` call for ``chunk`` (or one ``Acknowledge`` each, to a
        sender without batch methods); records the ones taken, True if any was."""
        if len(chunk) == 1 or not self._partners.takes_batches(sender):
            return any(await asyncio.gather(*(self._send_one(*item) for item in chunk)))
        try:
            answer = await self._partners.peer(sender).AcknowledgeBatch(
                peer_pb2.AcknowledgeBatchRequest(receipts=[receipt for _, receipt in chunk]),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as e:
            if self._partners.batch_failed(sender, e.code()):
                return any(await asyncio.gather(*(self._send_one(*item) for item in chunk)))
            log.info("acknowledgements to %s not taken yet: %s", sender, e.code().name)
            return False
        if len(answer.results) != len(chunk):
            log.warning("partner %s answered a batch with a wrong number of results", sender)
            return False
        taken = []
        for (owed, _), result in zip(chunk, answer.results, strict=True):
            if result.HasField("refusal"):
                log.info(
                    "acknowledgement to %s not taken yet: %s",
                    sender,
                    result.refusal.reason or refusal_code(result.refusal).name,
                )
            else:
                taken.append(owed)
        await asyncio.gather(*(self._taken(owed) for owed in taken))
        return bool(taken)

    async def _send_one(self, owed: OwedAcknowledgement, receipt: envelope_pb2.Receipt) -> bool:
        try:
            await self._partners.peer(owed.sender_state).Acknowledge(
                peer_pb2.AcknowledgeRequest(receipt=receipt), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            log.info("acknowledgement to %s not taken yet: %s", owed.sender_state, e.code().name)
            return False
        await self._taken(owed)
        return True

    async def _taken(self, owed: OwedAcknowledgement) -> None:
        await self._group.write(
            lambda conn: self._inbox.mark_ack_sent_within(conn, owed.message_id)
        )


class OutcomeRecorder:
    """The sender's side of ``Acknowledge``: the partner registry's signed decision."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        bundles: Mapping[str, TrustBundle],
        clock: Callable[[], datetime],
        audit: AuditRecorder,
        group: GroupCommit,
    ) -> None:
        self._audit = audit
        self._group = group
        self._outbox = outbox
        self._bundles = dict(bundles)
        self._clock = clock

    async def acknowledge(self, peer_state: str, receipt: envelope_pb2.Receipt) -> None:
        """Verify the partner's decision on the event loop; record it in one unit."""
        self.verify(peer_state, receipt)
        await self.record(peer_state, receipt)

    def verify(self, peer_state: str, receipt: envelope_pb2.Receipt) -> None:
        """:class:`PouchError` unless ``receipt`` is a decision ``peer_state`` signed."""
        # The decision binds the digest of the attempt the partner stored first; after a
        # lost receipt our recorded delivery receipt may bind a later attempt of the same
        # message (same id and payload, fresh signature), so the id is what must match.
        verify_receipt(
            receipt,
            receiver_bundle=self._bundles[peer_state],
            expected_message_id=receipt.message_id,
            expected_request_digest=receipt.request_digest,
            now=self._clock(),
        )

    def faults(
        self, peer_state: str, receipts: Sequence[envelope_pb2.Receipt]
    ) -> list[Exception | None]:
        """:meth:`verify` for each of ``receipts``: what it raised, or ``None``. Safe on
        a worker thread (the signature library lets the event loop run meanwhile)."""
        found: list[Exception | None] = []
        for receipt in receipts:
            try:
                self.verify(peer_state, receipt)
            except Exception as e:  # each receipt's fault is its own answer
                found.append(e)
            else:
                found.append(None)
        return found

    async def record(self, peer_state: str, receipt: envelope_pb2.Receipt) -> None:
        """Record a decision :meth:`verify` accepted, with its audit entry, in one unit."""
        applied = receipt.outcome == envelope_pb2.RECEIPT_OUTCOME_APPLIED

        def record(conn: Connection) -> PouchError | None:
            # The decision and its audit entry commit together, once, and only for a
            # message of ours to this partner whose delivery we have recorded. A refusal
            # is returned, not raised, so that it costs the other units of the batch nothing.
            message = self._outbox.heading_within(conn, receipt.message_id)
            if message is None or message.recipient_state != peer_state:
                return NotFound("no message to this partner has that id")
            if not message.receipted:
                # Delivered, but our dispatcher has not recorded the delivery receipt yet.
                return StorageUnavailable("delivery not yet recorded", retry_after_s=1.0)
            recorded = self._outbox.record_outcome_within(
                conn,
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
                    conn=conn,
                )
            return None

        refusal = await self._group.write(record)
        if refusal is not None:
            raise refusal
