"""After the receipt: handing inbound updates to the registry, and its answer back.

Two loops run on the receiving gateway, both driven by what the inbox holds, so a
crash at any moment only delays them:

- :class:`RegistryHandover` gives each received update to the registry adapter.
  Adapters de-duplicate by message id, so an update handed over again after a crash
  is applied once. A registry that is down leaves the update for another try after
  the ``[delivery]`` backoff, until the deadline, when it is given up as a dead letter
  (:mod:`gateway.delivery.inbound_retry`); the registry's failure is logged when it
  starts, at most once a minute while it lasts, and when it ends
  (:mod:`gateway.delivery.outages`).
- :class:`~gateway.delivery.acknowledger.Acknowledger` signs the registry's business
  decision as a receipt and sends it to the sender, bounded the same way.

On the sending gateway, :class:`OutcomeRecorder` checks such a receipt against the
partner's signing keys and the digest of what was delivered, and records it once;
for a message under an agreement with hybrid message signatures, only a receipt that
carries the ML-DSA-44 signature as well (``RECEIPT_PQ_SIGNATURE``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from google.protobuf.json_format import ParseError
from sqlalchemy import Connection

from adapters.base import (
    BatchRegistryAdapter,
    InboundUpdate,
    RegistryAdapter,
    RegistryUnavailable,
)
from gateway.audit.entry import Decision, EventKind
from gateway.delivery.acknowledger import Acknowledger
from gateway.delivery.context import ExchangeContext
from gateway.delivery.inbound_retry import Failure, InboundFailures
from gateway.delivery.outages import DependencyWatch
from gateway.envelope import RECEIPT_PQ_SIGNATURE, verify_receipt
from gateway.envelope.payload import decode_payload
from gateway.errors import AuthenticationRejected, NotFound, PouchError, StorageUnavailable
from gateway.events import Event, emit
from gateway.pki.bundle import TrustBundle
from gateway.pki.bundle_chain import PartnerBundles, verifying_bundles
from gateway.protojson import parse_dict
from gateway.store.group_commit import WriteUnit
from gateway.store.inbox import Inbox, InboxEntry
from gateway.store.outbox import Outbox
from pouch.v1 import civil_pb2, envelope_pb2

__all__ = ["Acknowledger", "OutcomeRecorder", "RegistryHandover"]


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
        context: ExchangeContext,
        inbox: Inbox,
        adapter: RegistryAdapter,
        failures: InboundFailures,
    ) -> None:
        self._batch = context.delivery.batch_size
        self._audit = context.audit
        self._inbox = inbox
        self._adapter = adapter
        self._group = context.group
        self._failures = failures
        self.watch = DependencyWatch("registry", activity="handover")

    async def run_once(self) -> bool:
        """One round over the updates due; True if any was settled (answered or given up)."""
        pending = await asyncio.to_thread(self._inbox.pending_handover, self._batch)
        writes: list[asyncio.Task[None]] = []
        answered: set[str] = set()

        def record(
            entry: InboxEntry, applied: bool, reason: str | None, version: int | None
        ) -> None:
            answered.add(entry.message_id)
            unit = self._record(entry, applied, reason, version)
            writes.append(
                asyncio.ensure_future(self._written(unit, entry, applied, reason, version))
            )

        handed: list[tuple[InboxEntry, InboundUpdate, int]] = []
        try:
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
            else:
                for entry, item, version in handed:
                    outcome = await self._adapter.apply(item)
                    record(entry, outcome.applied, outcome.reason_code or None, version)
        except RegistryUnavailable as e:
            waiting = [entry for entry, _, _ in handed if entry.message_id not in answered]
            self.watch.failed(e.reason, [entry.message_id for entry in waiting])
            dead = await self._failures.record([Failure(entry, e.reason) for entry in waiting])
            return bool(answered) or dead > 0
        finally:
            await asyncio.gather(*writes)
        self.watch.succeeded()
        return True

    async def _written(
        self,
        unit: WriteUnit[None],
        entry: InboxEntry,
        applied: bool,
        reason: str | None,
        version: int | None,
    ) -> None:
        await self._group.write(unit)
        if version is not None:
            emit(
                Event.HANDED_OVER,
                message_id=entry.message_id,
                agreement_id=entry.agreement_id,
                agreement_version=version,
                partner=entry.sender_state,
                exchange_type=entry.exchange_type,
            )
        emit(
            Event.APPLIED if applied else Event.REJECTED,
            message_id=entry.message_id,
            agreement_id=entry.agreement_id,
            agreement_version=version,
            partner=entry.sender_state,
            exchange_type=entry.exchange_type,
            reason=reason,
        )

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


class OutcomeRecorder:
    """The sender's side of ``Acknowledge``: the partner registry's signed decision."""

    def __init__(
        self,
        context: ExchangeContext,
        outbox: Outbox,
        bundles: Mapping[str, TrustBundle],
    ) -> None:
        self._audit = context.audit
        self._group = context.group
        self._outbox = outbox
        # Live when it is the channels' PartnerBundles: an announced bundle counts at once.
        self._bundles: Mapping[str, TrustBundle] = (
            bundles if isinstance(bundles, PartnerBundles) else dict(bundles)
        )
        self._clock = context.clock
        self._hybrid_signatures = context.gate.registry.hybrid_signatures

    async def acknowledge(self, peer_state: str, receipt: envelope_pb2.Receipt) -> None:
        """Verify the partner's decision on the event loop; record it in one unit."""
        self.verify(peer_state, receipt)
        await self.record(peer_state, receipt)

    def verify(self, peer_state: str, receipt: envelope_pb2.Receipt) -> None:
        """:class:`PouchError` unless ``receipt`` is a decision ``peer_state`` signed
        (with an ML-DSA-44 signature, where it has one, that verifies too; whether its
        message's agreement requires one, :meth:`record` asks)."""
        # The decision binds the digest of the attempt the partner stored first; after a
        # lost receipt our recorded delivery receipt may bind a later attempt of the same
        # message (same id and payload, fresh signature), so the id is what must match.
        now = self._clock()
        verify_receipt(
            receipt,
            receiver_bundle=self._bundles[peer_state],
            expected_message_id=receipt.message_id,
            expected_request_digest=receipt.request_digest,
            now=now,
            in_overlap=verifying_bundles(self._bundles, peer_state, now)[1:],
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
        answer: list[tuple[int, str | None]] = []  # version and request id, once recorded

        def record(conn: Connection) -> PouchError | None:
            # The decision and its audit entry commit together, once, and only for a
            # message of ours to this partner whose delivery we have recorded. A refusal
            # is returned, not raised, so that it costs the other units of the batch nothing.
            message = self._outbox.heading_within(conn, receipt.message_id)
            if message is None or message.recipient_state != peer_state:
                return NotFound("no message to this partner has that id")
            if self._hybrid_signatures(message.agreement_id) and not receipt.pq_signature:
                # verify() checked the ML-DSA-44 signature of a receipt that has one.
                return AuthenticationRejected(
                    "the agreement asks for hybrid signatures and the decision carries "
                    "no ML-DSA-44 signature",
                    reason=RECEIPT_PQ_SIGNATURE,
                )
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
                answer.append((message.agreement_version, message.request_id))
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
        if answer:
            emit(
                Event.RECEIPTED,
                message_id=receipt.message_id,
                agreement_version=answer[0][0],
                request_id=answer[0][1],
                partner=peer_state,
                kind="applied" if applied else "rejected",
                reason=receipt.reason_code or None,
            )
