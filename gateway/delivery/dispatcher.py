"""The dispatcher: delivers what the outbox holds, until the partner has signed for it.

Guarantees:

- A message leaves only while its agreement is in force; once an agreement is
  suspended or terminated, queued messages under it are dead-lettered, not sent.
  Before the first message under an agreement leaves, the partner is asked to confirm
  it holds the same hashing key (:mod:`gateway.delivery.agreement_confirmation`); a
  mismatch dead-letters them unsent. Every call also states our fingerprint, which
  the partner's receiver checks before storing, should the partner not have been asked.
- A message's first attempt sends the envelope as it was signed when queued, if that
  signature is younger than ``resign_after_seconds`` (well inside the partner's clock
  window), and checks the receipt against the digest stored with it. Every other
  attempt signs the envelope afresh with a new creation time (same message id, same
  payload): a partner that was down for days does not refuse it as stale, and a
  signing key rotated since the message was queued signs the retry. The partner's
  inbox recognises the id and never applies it twice.
- A message counts as delivered only with the partner's signed receipt binding the
  digest of what was sent; under an agreement with hybrid message signatures, signed
  ES256 and ML-DSA-44, as every attempt of the message is. Anything less is retried
  with exponential backoff and jitter until the message's deadline, then
  dead-lettered with a reason code.
- A partner's permanent refusal (policy, agreement, validation, signature) is a
  dead letter at once, with the partner's reason code.
- The messages of one claimed batch that go to one partner travel together in
  ``DeliverBatch`` calls (:mod:`gateway.delivery.batches`), each answered and recorded
  as if it had been sent alone; a partner without batch methods gets one ``Deliver``
  call per message.
- One dispatcher keeps up to ``batches_in_flight`` claimed batches out at once, so that
  its own work on one batch (claiming, signing, settling) overlaps the partner's work on
  another; like replicas, its batches hold disjoint messages.
- A partner that fails (down, busy, its receipts unusable) is logged when it starts,
  at most once a minute while it lasts and when it recovers, with counts and message
  ids (:mod:`gateway.delivery.outages`); each message's own stages are event lines
  (``sent``, ``retry_scheduled`` at DEBUG, ``dead_lettered``).
- Several dispatchers (replicas on one PostgreSQL) claim disjoint messages under a
  lease (``FOR UPDATE SKIP LOCKED``); a dispatcher that lost its lease cannot
  complete a message another one now holds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import grpc
import grpc.aio
from sqlalchemy import Connection

from gateway.audit.entry import Decision, EventKind
from gateway.delivery.backoff import delivery_backoff
from gateway.delivery.batches import chunks
from gateway.delivery.context import ExchangeContext
from gateway.delivery.outages import DependencyWatch
from gateway.delivery.partners import PartnerChannels
from gateway.delivery.polling import pause
from gateway.envelope import (
    header_from_envelope,
    utc_millis,
    verify_receipt,
)
from gateway.envelope.header import datetime_of
from gateway.errors import (
    PERMANENT_REFUSALS,
    AgreementRejected,
    PouchError,
    Unavailable,
    from_call,
    from_status,
    unexpected_summary,
)
from gateway.events import Event, emit
from gateway.pki.bundle_chain import verifying_bundles
from gateway.store.outbox import Outbox, OutboxMessage
from pouch.v1 import envelope_pb2, peer_pb2

if TYPE_CHECKING:
    from gateway.delivery.agreement_confirmation import AgreementConfirmation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Outgoing:
    """A message as it goes on this attempt, with the digest its receipt must bind."""

    message: OutboxMessage
    envelope: envelope_pb2.Envelope
    digest: str
    size: int


@dataclass(frozen=True)
class _Refused:
    """The partner's refusal of one message: its status code and our reason code."""

    code: grpc.StatusCode
    reason: str


@dataclass(frozen=True)
class _BadReceipt:
    """A receipt the partner answered with that does not prove the delivery."""

    reason: str


Answer = envelope_pb2.Receipt | _Refused | _BadReceipt
"""What the partner answered one message, its receipt verified: only a receipt that
proves the delivery stays a receipt."""


def _refused(result: peer_pb2.DeliveryResult) -> _Refused:
    return _refusal(from_status(result.refusal.code, result.refusal.reason, who="the partner"))


def _refusal(error: PouchError) -> _Refused:
    return _Refused(error.partner_code or grpc.StatusCode.UNKNOWN, error.reason)


class Dispatcher:
    """One dispatcher loop; run one per process, as many processes as you like."""

    def __init__(
        self,
        context: ExchangeContext,
        outbox: Outbox,
        partners: PartnerChannels,
        confirmation: AgreementConfirmation | None = None,
    ) -> None:
        self._confirmation = confirmation
        self._audit = context.audit
        self._group = context.group
        # One id per dispatcher: a lease names the worker that holds it.
        self._worker = f"{context.state}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._outbox = outbox
        self._gate = context.gate
        self._signer = context.signer
        self._hybrid_signatures = context.gate.registry.hybrid_signatures
        self._partners = partners
        self._bundles = partners.bundles
        self._settings = context.delivery
        self._metrics = context.metrics
        self._clock = context.clock
        self._rng = random.SystemRandom()
        self._backoff = delivery_backoff(context.delivery)
        self._watches: dict[str, DependencyWatch] = {}
        self.wake = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until ``stopping``, with up to ``batches_in_flight`` batches out at once
        (each claim takes messages no other holds)."""
        await asyncio.gather(
            *(self._deliver_until(stopping) for _ in range(self._settings.batches_in_flight))
        )

    async def _deliver_until(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            # Cleared before the claim, so a submission during this round is not missed.
            self.wake.clear()
            try:
                delivered_any = await self.run_once()
            except PouchError as e:
                log.warning("dispatcher %s: %s (%s)", self._worker, e.reason, type(e).__name__)
                delivered_any = False
            except Exception as e:  # a bug in one round must not stop delivery for good
                log.error("dispatcher %s round failed: %s", self._worker, unexpected_summary(e))
                delivered_any = False
            if not delivered_any:
                await pause(stopping, self.wake, self._settings.poll_interval_seconds)

    async def run_once(self) -> bool:
        """Claim one batch and try each message once; True if there was work."""
        batch = await asyncio.to_thread(
            self._outbox.claim_due,
            self._worker,
            limit=self._settings.batch_size,
            lease_s=self._settings.lease_seconds,
        )
        if batch:
            # The agreement of each message is read once per batch, as the batch is taken.
            refusals = {
                key: await self._refusal_before_sending(*key)
                for key in {
                    (m.agreement_id, m.recipient_state)
                    for m in batch
                    if m.exchange_type != "agreement_notice"
                }
            }
            ready = await asyncio.gather(
                *(self._ready(m, refusals.get((m.agreement_id, m.recipient_state))) for m in batch)
            )
            by_partner: dict[str, list[_Outgoing]] = {}
            for outgoing in ready:
                if outgoing is not None:
                    by_partner.setdefault(outgoing.message.recipient_state, []).append(outgoing)
            await asyncio.gather(
                *(
                    self._send(partner, chunk)
                    for partner, outgoing in by_partner.items()
                    for chunk in chunks(outgoing, lambda o: o.size)
                )
            )
        return bool(batch)

    async def _refusal_before_sending(
        self, agreement_id: str, recipient_state: str
    ) -> AgreementRejected | None:
        if self._confirmation is None:
            return await asyncio.to_thread(self._refusal, agreement_id, recipient_state)
        try:
            await self._confirmation.ensure(agreement_id, recipient_state)
        except AgreementRejected as e:
            return e
        except Unavailable:
            # Not asked (the partner is down or busy): what goes states our fingerprint,
            # which its receiver checks before storing; the send is retried as usual.
            return None
        return None

    def watch(self, partner: str) -> DependencyWatch:
        """How deliveries to ``partner`` fare."""
        found = self._watches.get(partner)
        if found is None:
            found = self._watches[partner] = DependencyWatch(
                "partner", activity="delivery", partner=partner
            )
        return found

    def _refusal(self, agreement_id: str, recipient_state: str) -> AgreementRejected | None:
        try:
            self._gate.in_force(agreement_id, recipient_state)
        except AgreementRejected as e:
            return e
        return None

    async def _ready(
        self, message: OutboxMessage, refusal: AgreementRejected | None
    ) -> _Outgoing | None:
        """The message as it goes on this attempt (as queued, or signed afresh), or
        ``None`` once it is dead-lettered."""
        now = self._clock()
        if message.deadline_at <= now:
            await self._dead(message, "DEADLINE_PASSED")
            return None
        if message.envelope is None:
            await self._dead(message, "PAYLOAD_PURGED")
            return None
        if refusal is not None:
            await self._dead(message, f"AGREEMENT_{refusal.reason}")
            return None
        stored = envelope_pb2.Envelope.FromString(message.envelope)
        if (
            message.attempts == 1
            and message.envelope_digest is not None
            and self._fresh(stored, now)
        ):
            return _Outgoing(message, stored, message.envelope_digest, len(message.envelope))
        header = dataclasses.replace(header_from_envelope(stored), created_at=utc_millis(now))
        envelope, digest = self._signer.sign_with_digest(
            header, stored.payload, hybrid=self._hybrid_signatures(message.agreement_id)
        )
        return _Outgoing(message, envelope, digest, len(message.envelope))

    def _fresh(self, stored: envelope_pb2.Envelope, now: datetime) -> bool:
        """Whether ``stored`` was signed less than ``resign_after_seconds`` before ``now``
        (and not after it: a clock set back is no reason to trust an old stamp)."""
        created = datetime_of(stored.created_at)
        if created is None:
            return False
        return 0 <= (now - created).total_seconds() < self._settings.resign_after_seconds

    async def _send(self, partner: str, chunk: list[_Outgoing]) -> None:
        """One ``DeliverBatch`` call for ``chunk``, or one ``Deliver`` each where the
        partner does not take batches (or alone, where one call is all there is)."""
        if len(chunk) == 1 or not self._partners.takes_batches(partner):
            await asyncio.gather(*(self._send_one(o) for o in chunk))
            return
        try:
            answer = await self._partners.peer(partner).DeliverBatch(
                peer_pb2.DeliverBatchRequest(
                    envelopes=[o.envelope for o in chunk],
                    hash_key_fingerprints=self._stated(o.message for o in chunk),
                ),
                timeout=self._settings.call_timeout_seconds,
            )
        except grpc.aio.AioRpcError as e:
            if self._partners.batch_failed(partner, e.code()):
                await asyncio.gather(*(self._send_one(o) for o in chunk))
                return
            refused = _refusal(from_call(e, who=f"partner {partner}"))
            await asyncio.gather(*(self._settle(o, refused) for o in chunk))
            return
        if len(answer.results) != len(chunk):
            log.warning("partner %s answered a batch with a wrong number of results", partner)
            await asyncio.gather(*(self._retry(o.message, "BATCH_ANSWER_INVALID") for o in chunk))
            return
        # The receipts' signatures are checked off the event loop, all in one hand-over:
        # the signature library lets other threads run meanwhile.
        answers = await asyncio.to_thread(
            lambda: [
                self._checked(o, result.receipt) if result.HasField("receipt") else _refused(result)
                for o, result in zip(chunk, answer.results, strict=True)
            ]
        )
        await asyncio.gather(*(self._settle(o, a) for o, a in zip(chunk, answers, strict=True)))

    async def _send_one(self, outgoing: _Outgoing) -> None:
        message = outgoing.message
        try:
            answer = await self._partners.peer(message.recipient_state).Deliver(
                peer_pb2.DeliverRequest(
                    envelope=outgoing.envelope, hash_key_fingerprints=self._stated([message])
                ),
                timeout=self._settings.call_timeout_seconds,
            )
        except grpc.aio.AioRpcError as e:
            refused = _refusal(from_call(e, who=f"partner {message.recipient_state}"))
            await self._settle(outgoing, refused)
            return
        await self._settle(outgoing, self._checked(outgoing, answer.receipt))

    def _stated(self, messages: Iterable[OutboxMessage]) -> dict[str, str]:
        if self._confirmation is None:
            return {}
        return self._confirmation.stated({m.agreement_id for m in messages})

    def _checked(self, outgoing: _Outgoing, receipt: envelope_pb2.Receipt) -> Answer:
        """``receipt`` if it is the partner's signed receipt for what was sent, else why not."""
        message = outgoing.message
        now = self._clock()
        try:
            verify_receipt(
                receipt,
                receiver_bundle=self._bundles[message.recipient_state],
                expected_message_id=message.message_id,
                expected_request_digest=outgoing.digest,
                now=now,
                hybrid=self._hybrid_signatures(message.agreement_id),
                in_overlap=verifying_bundles(self._bundles, message.recipient_state, now)[1:],
            )
        except PouchError as e:
            return _BadReceipt(e.reason)
        return receipt

    async def _settle(self, outgoing: _Outgoing, answer: Answer) -> None:
        """Record what the partner answered one message: delivered, retried or dead."""
        message = outgoing.message
        watch = self.watch(message.recipient_state)
        if isinstance(answer, _Refused):
            if answer.code in PERMANENT_REFUSALS:
                watch.succeeded()  # the partner answered: it refused this message for good
                await self._dead(message, answer.reason)
            else:
                reason = f"PARTNER_{answer.code.name}"
                watch.failed(reason, [message.message_id])
                await self._retry(message, reason)
            return
        if isinstance(answer, _BadReceipt):
            watch.failed("RECEIPT_INVALID", [message.message_id])
            await self._retry(message, "RECEIPT_INVALID")
            return
        watch.succeeded()
        receipt = answer.SerializeToString()

        def delivered(conn: Connection) -> bool:
            # The receipt, the delivery and its audit entry commit together.
            self._outbox.record_receipt_within(conn, message.message_id, receipt)
            if not self._outbox.mark_delivered_within(conn, message.message_id, self._worker):
                return False
            self._audit_record(message, EventKind.SENT, Decision.ACCEPTED, None, conn)
            return True

        if await self._group.write(delivered):
            self._metrics.deliveries.labels(message.recipient_state, "delivered").inc()
            self._event(Event.SENT, message, None)

    async def _audit_event(
        self, message: OutboxMessage, kind: EventKind, decision: Decision, reason: str | None
    ) -> None:
        await asyncio.to_thread(self._audit_record, message, kind, decision, reason, None)

    def _audit_record(
        self,
        message: OutboxMessage,
        kind: EventKind,
        decision: Decision,
        reason: str | None,
        conn: Connection | None,
    ) -> None:
        self._audit.record(
            kind,
            decision,
            message_id=message.message_id,
            agreement_id=message.agreement_id,
            agreement_version=message.agreement_version,
            exchange_type=message.exchange_type,
            purpose=message.purpose,
            peer_state=message.recipient_state,
            reason_code=reason,
            conn=conn,
        )

    async def _retry(self, message: OutboxMessage, reason: str) -> None:
        def schedule(conn: Connection) -> datetime | None:
            # The delay counts from when the failure is recorded, however long the write
            # waited for its turn; the failure's audit entry commits with it.
            now = self._clock()
            when = self._backoff.next_attempt(message.attempts, now, message.deadline_at, self._rng)
            if when is None:
                return None
            self._outbox.schedule_retry_within(
                conn, message.message_id, self._worker, next_attempt_at=when, reason=reason
            )
            self._audit_record(message, EventKind.FAILED, Decision.FAILED, reason, conn)
            return when

        if await self._group.write(schedule) is None:
            await self._dead(message, f"DEADLINE_PASSED_AFTER_{reason}")
            return
        self._metrics.deliveries.labels(message.recipient_state, "retry").inc()
        self._event(Event.RETRY_SCHEDULED, message, reason)

    async def _dead(self, message: OutboxMessage, reason: str) -> None:
        await asyncio.to_thread(
            self._outbox.mark_dead, message.message_id, self._worker, reason=reason
        )
        self._metrics.deliveries.labels(message.recipient_state, "dead_letter").inc()
        await self._audit_event(message, EventKind.DEAD_LETTERED, Decision.FAILED, reason)
        self._event(Event.DEAD_LETTERED, message, reason)

    @staticmethod
    def _event(event: Event, message: OutboxMessage, reason: str | None) -> None:
        emit(
            event,
            message_id=message.message_id,
            agreement_id=message.agreement_id,
            agreement_version=message.agreement_version,
            partner=message.recipient_state,
            exchange_type=message.exchange_type,
            kind=message.kind,
            reason=reason,
            attempts=message.attempts,
            request_id=message.request_id,
        )
