"""Sending a civil-record update: the local caller's request, stage by stage.

    validate  -> ValidCivilSubmission   (every field, before anything is stored)
    agreement -> AgreementInForce       (signed by both, in its window)
    policy    -> MinimisedPayload       (only what the agreement lets cross)
    sign      -> Envelope               (the sending state's signing key)
    store     -> durable, in one group-committed transaction (the caller's answer means
                 this happened): the agreement still not suspended or terminated, the
                 outbox row, one unit of the purpose's daily quota counted in the shared
                 database, and the audit entry with the paths the policy removed or
                 transformed

A refusal at any stage is audited with its reason code before it reaches the caller.
Each outcome is an event line (:mod:`gateway.events`): ``submitted`` once the write
committed, ``refused`` with the reason code.

Each stage takes the previous stage's frozen result. :meth:`CivilRecordSender.submit`
returns once the signed envelope is committed to the outbox; delivery is the
dispatcher's job. A caller repeating a ``client_reference`` gets the message it
already submitted (looked up in the write unit itself, or after a refusal, for an
update queued before its agreement ended), so a retried call never sends twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from gateway.agreements.gate import ExchangeUnit
from gateway.audit.refusals import RefusalContext, audit_refusals
from gateway.delivery.context import ExchangeContext
from gateway.envelope.payload import encode_payload
from gateway.errors import Rejected
from gateway.events import REQUEST_ID, Event, emit
from gateway.exchanges.civil_validation import ValidCivilSubmission, validate_submission
from gateway.policy.catalogue import civil_record_payload
from gateway.policy.evaluate import evaluate
from gateway.store.group_commit import WriteUnit
from gateway.store.outbox import Outbox, OutboxItem
from gateway.trust.principal import Principal
from pouch.v1 import civil_pb2, common_pb2

PAYLOAD_TYPE = civil_pb2.CivilRecordUpdate.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Submitted:
    """The caller's answer: the message id, and whether this call created it."""

    message_id: str
    created: bool


class CivilRecordSender:
    """Turns a local caller's submission into a signed envelope in the outbox."""

    def __init__(
        self,
        context: ExchangeContext,
        outbox: Outbox,
    ) -> None:
        self._deadline = context.delivery_deadline
        self._audit = context.audit
        self._group = context.group
        self._state = context.state
        self._gate = context.gate
        self._signer = context.signer
        self._outbox = outbox
        self._clock = context.clock

    async def submit(
        self, principal: Principal, request: civil_pb2.SubmitUpdateRequest
    ) -> Submitted:
        """The update durable in the outbox, or refused (the refusal audited first).

        The stages compute on the event loop and only the write leaves it, so updates
        reach the group committer in the order they were submitted.
        """
        context = RefusalContext(
            "civil_record", principal.subject, request.recipient_state, request.agreement_id
        )
        async with audit_refusals(self._audit, context):
            return await self._submit(principal, request)

    async def _submit(
        self, principal: Principal, request: civil_pb2.SubmitUpdateRequest
    ) -> Submitted:
        now = self._clock()
        submission = validate_submission(request, sender_state=self._state, today=now.date())
        try:
            store, version = self._sign(principal, submission, now)
            submitted = await self._group.write(store)
        except Rejected:
            # A retried update queued before its agreement or policy changed keeps its id.
            earlier = await asyncio.to_thread(
                self._outbox.message_id_for_reference,
                principal.subject,
                submission.client_reference,
            )
            if earlier is not None:
                return Submitted(earlier, created=False)
            raise
        if submitted.created:
            emit(
                Event.SUBMITTED,
                message_id=submitted.message_id,
                agreement_id=submission.agreement_id,
                agreement_version=version,
                partner=submission.recipient_state,
                exchange_type="civil_record",
            )
        return submitted

    def _sign(
        self, principal: Principal, submission: ValidCivilSubmission, now: datetime
    ) -> tuple[WriteUnit[Submitted], int]:
        """The stages up to the signed envelope; the unit that queues it, and the
        agreement version it is signed under."""
        agreement = self._gate.prepare(submission.agreement_id, submission.recipient_state)
        minimised = evaluate(
            agreement.outbound,
            exchange_type="civil_record",
            purpose=submission.purpose,
            kind=submission.event_kind,
            payload=civil_record_payload(submission.update),
            legal_basis=submission.legal_basis.for_policy(),
            today=now.date(),
            hash_key=agreement.hash_key,
        )
        header = agreement.new_header(
            exchange_type=common_pb2.EXCHANGE_TYPE_CIVIL_RECORD,
            purpose=minimised.purpose,
            created_at=now,
            payload_type=PAYLOAD_TYPE,
        )
        payload = encode_payload(minimised.payload)
        envelope, digest = self._signer.sign_with_digest(
            header, payload, hybrid=agreement.hybrid_signatures
        )
        item = OutboxItem(
            message_id=header.message_id,
            agreement_id=agreement.id,
            agreement_version=agreement.version,
            exchange_type="civil_record",
            recipient_state=agreement.partner_state,
            purpose=minimised.purpose,
            envelope=envelope.SerializeToString(),
            deadline_at=now + self._deadline,
            client_reference=submission.client_reference,
            principal=principal.acting,
            kind=minimised.kind,
            envelope_digest=digest,
            request_id=REQUEST_ID.get(),
        )

        def store(conn: Connection) -> Submitted:
            # The outbox row, quota and evidence commit together, only while the agreement
            # is in force: the caller's answer means all three happened. A reference
            # already queued (by this caller before, or by another replica a moment ago)
            # keeps the row from being stored: it is answered with its message and takes
            # nothing.
            def evidence(fresh: bool) -> None:
                if fresh:
                    self._audit.submitted(
                        message_id=header.message_id,
                        agreement=agreement,
                        principal=principal.acting,
                        payload=payload,
                        minimised=minimised,
                        conn=conn,
                    )

            unit = ExchangeUnit(agreement, minimised, "civil-record updates")

            def enqueue() -> bool:
                return self._outbox.enqueue_within(conn, [item]) == 1

            if self._gate.commit_exchange(conn, unit, record=enqueue, evidence=evidence):
                return Submitted(header.message_id, created=True)
            queued = self._outbox.message_id_for_reference_within(
                conn, principal.subject, submission.client_reference
            )
            if queued is None:
                raise RuntimeError("outbox refused a new message id without a prior submission")
            return Submitted(queued, created=False)

        return store, agreement.version
