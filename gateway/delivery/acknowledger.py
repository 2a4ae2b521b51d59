"""Sending our registry's decision on a partner's message back to the partner, bounded.

:class:`Acknowledger` signs the registry's business decision (applied, or rejected with
its reason) as a receipt and sends it to the sender, signed as the message's agreement
asks (:mod:`gateway.delivery.receipts`); the decisions for one sender travel together
in ``AcknowledgeBatch`` calls. It promises:

* a decision the sender took is recorded once (``acknowledged``);
* a permanent refusal by the sender (``NOT_FOUND`` for a message it does not know, and
  the other refusals :data:`~gateway.errors.PERMANENT_REFUSALS` names) is
  not sent again: the acknowledgement is a dead letter at once, with the sender's code;
* anything else (the sender down, busy, not yet ready) is tried again after the
  ``[delivery]`` backoff, until the deadline, then given up
  (:mod:`gateway.delivery.inbound_retry`);
* a sender that keeps failing is logged when it starts, at most once a minute while it
  lasts, and when it recovers (:mod:`gateway.delivery.outages`), never once per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import grpc
import grpc.aio

from gateway.config import DeliverySection
from gateway.delivery.batches import chunks
from gateway.delivery.inbound_retry import Failure, InboundFailures
from gateway.delivery.outages import DependencyWatch
from gateway.delivery.partners import PartnerChannels
from gateway.delivery.receipts import AgreementReceipts
from gateway.errors import (
    PartnerRefused,
    PartnerUnavailable,
    PouchError,
    from_call,
    from_status,
)
from gateway.events import Event, emit
from gateway.store.inbox import OwedAcknowledgement
from pouch.v1 import envelope_pb2, peer_pb2

_Signed = tuple[OwedAcknowledgement, envelope_pb2.Receipt]


class Acknowledger:
    def __init__(
        self,
        failures: InboundFailures,
        receipts: AgreementReceipts,
        partners: PartnerChannels,
        delivery: DeliverySection,
        clock: Callable[[], datetime],
    ) -> None:
        """Owed acknowledgements are read from, and settled in, ``failures``' inbox,
        through its group committer; ``delivery`` gives the batch size and call timeout."""
        self._group = failures.group
        self._inbox = failures.inbox
        self._signer = receipts
        self._partners = partners
        self._clock = clock
        self._batch = delivery.batch_size
        self._timeout = delivery.call_timeout_seconds
        self._failures = failures
        self._watches: dict[str, DependencyWatch] = {}

    def watch(self, sender: str) -> DependencyWatch:
        """How acknowledgements to ``sender`` fare."""
        found = self._watches.get(sender)
        if found is None:
            found = self._watches[sender] = DependencyWatch(
                "partner", activity="acknowledgement", partner=sender
            )
        return found

    async def run_once(self) -> bool:
        """One round over the acknowledgements due; True if any was settled for good."""
        waiting = await asyncio.to_thread(self._inbox.unacknowledged, self._batch)
        by_sender: dict[str, list[_Signed]] = {}
        unsigned: list[Failure] = []
        for owed in waiting:
            try:
                receipt = self._receipt(owed)
            except Exception:  # one row that cannot be signed must not hold back the rest
                unsigned.append(Failure(owed, "RECEIPT_NOT_SIGNED"))
                continue
            by_sender.setdefault(owed.sender_state, []).append((owed, receipt))
        dead = await self._failures.record(unsigned)
        settled = await asyncio.gather(
            *(
                self._send(sender, chunk)
                for sender, signed in by_sender.items()
                for chunk in chunks(signed, lambda item: item[1].ByteSize())
            )
        )
        return any(settled) or dead > 0

    def _receipt(self, owed: OwedAcknowledgement) -> envelope_pb2.Receipt:
        """The registry's decision on ``owed``'s message, signed for its sender."""
        applied = owed.registry_outcome == "applied"
        return self._signer.sign(
            agreement_id=owed.agreement_id,
            message_id=owed.message_id,
            request_digest=owed.request_digest,
            outcome=(
                envelope_pb2.RECEIPT_OUTCOME_APPLIED
                if applied
                else envelope_pb2.RECEIPT_OUTCOME_REJECTED
            ),
            reason_code="" if applied else (owed.registry_reason or "REJECTED"),
            issued_at=self._clock(),
        )

    async def _send(self, sender: str, chunk: list[_Signed]) -> bool:
        """One ``AcknowledgeBatch`` call for ``chunk`` (or one ``Acknowledge`` each, to a
        sender without batch methods); True if any was settled for good."""
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
            return await self._refused(sender, [o for o, _ in chunk], from_call(e, who=sender))
        if len(answer.results) != len(chunk):
            return await self._refused(
                sender,
                [o for o, _ in chunk],
                PartnerUnavailable("the answer is invalid", reason="BATCH_ANSWER_INVALID"),
            )
        taken: list[OwedAcknowledgement] = []
        failed: list[Failure] = []
        for (owed, _), result in zip(chunk, answer.results, strict=True):
            if result.HasField("refusal"):
                refusal = from_status(result.refusal.code, result.refusal.reason, who=sender)
                failed.append(
                    Failure(owed, refusal.reason, permanent=isinstance(refusal, PartnerRefused))
                )
            else:
                taken.append(owed)
        if taken:
            self.watch(sender).succeeded()
        elif failed:
            self._watch_failed(sender, failed)
        await asyncio.gather(*(self._taken(owed) for owed in taken))
        dead = await self._failures.record(failed)
        return bool(taken) or dead > 0

    async def _send_one(self, owed: OwedAcknowledgement, receipt: envelope_pb2.Receipt) -> bool:
        try:
            await self._partners.peer(owed.sender_state).Acknowledge(
                peer_pb2.AcknowledgeRequest(receipt=receipt), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as e:
            return await self._refused(
                owed.sender_state, [owed], from_call(e, who=owed.sender_state)
            )
        self.watch(owed.sender_state).succeeded()
        await self._taken(owed)
        return True

    async def _refused(
        self,
        sender: str,
        owed: list[OwedAcknowledgement],
        refusal: PouchError,
    ) -> bool:
        """The sender did not take ``owed``: given up if it refused them for good, else
        tried again later; True if any was given up."""
        permanent = isinstance(refusal, PartnerRefused)
        failed = [Failure(o, refusal.reason, permanent=permanent) for o in owed]
        self._watch_failed(sender, failed)
        return await self._failures.record(failed) > 0

    def _watch_failed(self, sender: str, failed: list[Failure]) -> None:
        # A permanent refusal is the partner answering, not the partner failing.
        temporary = [f for f in failed if not f.permanent]
        if temporary:
            self.watch(sender).failed(
                temporary[0].reason, [f.message.message_id for f in temporary]
            )
        elif failed:
            self.watch(sender).succeeded()

    async def _taken(self, owed: OwedAcknowledgement) -> None:
        await self._group.write(
            lambda conn: self._inbox.mark_ack_sent_within(conn, owed.message_id)
        )
        emit(
            Event.ACKNOWLEDGED,
            message_id=owed.message_id,
            agreement_id=owed.agreement_id,
            partner=owed.sender_state,
            exchange_type=owed.exchange_type,
            reason=owed.registry_reason,
            kind="applied" if owed.registry_outcome == "applied" else "rejected",
        )
