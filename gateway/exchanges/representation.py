"""Acting on a representation case from the local API: each action one signed message.

    validate  -> the request's every field, before anything is read or stored
    case      -> the case, held here, with this state a party in the role the action needs
    machine   -> the move is in :data:`~gateway.exchanges.case_machine.TRANSITIONS`
    agreement -> AgreementInForce (the case's agreement, signed by both)
    policy    -> MinimisedPayload (the crossing content, evaluated as a whole)
    commit    -> ONE group-committed transaction: the agreement still in force, the case
                 row locked and re-checked (a new case: inserted, with one unit of the
                 purpose's daily allowance), the next sequence number, the envelope
                 signed, put in the outbox, the case changed, its event appended, and the
                 case_transition audit entry; the caller's answer means all of it is
                 durable

A refusal at any stage is audited with its reason code before it reaches the caller.
The dispatcher delivers the message; the partner applies it to its copy of the case
(:mod:`gateway.exchanges.representation_inbound`).
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from gateway.agreements.gate import AgreementInForce, ExchangeUnit
from gateway.audit.entry import Decision, EventKind
from gateway.audit.refusals import RefusalContext, audit_refusals
from gateway.delivery.context import ExchangeContext
from gateway.errors import NotFound, PermissionRejected
from gateway.events import REQUEST_ID, Event, emit
from gateway.exchanges import case_machine
from gateway.exchanges.case_change import (
    EXCHANGE,
    CaseChange,
    apply_change,
    change_for,
    event_kind_for,
    opened_case,
    policy_context,
    require_routing,
)
from gateway.exchanges.case_machine import CaseRole, CaseStatus, check_transition, role_of
from gateway.exchanges.case_payload import CaseMessage, encode_case_payload
from gateway.exchanges.representation_validation import (
    validate_acknowledgement,
    validate_assistance_request,
    validate_case_id,
    validate_cost_claim,
    validate_note,
    validate_reason,
)
from gateway.policy.catalogue import representation_payload
from gateway.policy.evaluate import evaluate
from gateway.store.cases import (
    CaseRecord,
    CaseStore,
    CaseView,
    CaseWrite,
    CostClaimRecord,
    NoteRecord,
)
from gateway.store.outbox import Outbox, OutboxItem
from gateway.trust.principal import Principal
from pouch.v1 import common_pb2, representation_pb2

PAYLOAD_TYPE = representation_pb2.RepresentationCase.DESCRIPTOR.full_name


class RepresentationDesk:
    """The local API's actions on representation cases, for this gateway's state."""

    def __init__(
        self,
        context: ExchangeContext,
        outbox: Outbox,
        cases: CaseStore,
    ) -> None:
        self._deadline = context.delivery_deadline
        self._state = context.state
        self._gate = context.gate
        self._signer = context.signer
        self._outbox = outbox
        self._cases = cases
        self._clock = context.clock
        self._audit = context.audit

    # -- the actions (blocking: call them from a worker thread) ------------

    def request_assistance(
        self, principal: Principal, request: representation_pb2.RequestAssistanceRequest
    ) -> CaseRecord:
        with self._refusals_audited(principal, request.representing_state, request.agreement_id):
            return self._open(principal, request)

    def transition(
        self, principal: Principal, case_id: str, target: CaseStatus | None, reason: str
    ) -> CaseView:
        """Move the case to ``target`` and sign the step for the partner; the case after it."""
        with self._refusals_audited(principal, None, None):
            validate_case_id(case_id)
            validate_reason(reason)
            case = self._case(case_id)
            if target is None:
                raise case_machine.IllegalTransition(
                    f"a case in state {case.state.value} cannot be moved to an unspecified state"
                )
            check_transition(case.state, target, self._role(case))
            message = CaseMessage(case_id, "transition", 0, target_state=target, reason_code=reason)
            self._act(principal, case, message, {}, new_state=target)
            view = self._cases.view(case_id)
            assert view is not None  # cases are never deleted
            return view

    def add_note(
        self, principal: Principal, request: representation_pb2.AddNoteRequest
    ) -> NoteRecord:
        with self._refusals_audited(principal, None, None):
            validate_note(request)
            case = self._case(request.case_id)
            self._role(case)
            note_id = str(uuid.uuid4())
            note = representation_pb2.CaseNote(text=request.text, attachments=request.attachments)
            content = representation_payload(notes=[note])
            message = CaseMessage(case.case_id, "note", 0, note_id=note_id)
            self._act(principal, case, message, content)
            view = self._cases.view(case.case_id)
            assert view is not None
            return next(n for n in view.notes if n.note_id == note_id)

    def claim_costs(
        self, principal: Principal, request: representation_pb2.ClaimCostsRequest
    ) -> CostClaimRecord:
        with self._refusals_audited(principal, None, None):
            validate_cost_claim(request)
            case = self._case(request.case_id)
            self._require_role(case, CaseRole.REPRESENTING, "claim costs")
            case_machine.check_cost_claim(case.state)
            message = CaseMessage(
                case.case_id,
                "claim_costs",
                0,
                claim_id=str(uuid.uuid4()),
                currency=request.currency,
                amount_minor=request.amount_minor,
                description=request.description,
            )
            self._act(principal, case, message, {})
            return self._claim(case.case_id, message.claim_id)

    def acknowledge_costs(
        self, principal: Principal, request: representation_pb2.AcknowledgeCostsRequest
    ) -> CostClaimRecord:
        """Acknowledging a claim twice answers with the claim as acknowledged the first time."""
        with self._refusals_audited(principal, None, None):
            validate_acknowledgement(request)
            case = self._case(request.case_id)
            self._require_role(case, CaseRole.REQUESTING, "acknowledge costs")
            claim = self._claim(case.case_id, request.claim_id)
            if claim.acknowledged_at is not None:
                return claim
            message = CaseMessage(case.case_id, "acknowledge_costs", 0, claim_id=claim.claim_id)
            self._act(principal, case, message, {})
            return self._claim(case.case_id, claim.claim_id)

    # -- stages ------------------------------------------------------------

    def _open(
        self, principal: Principal, request: representation_pb2.RequestAssistanceRequest
    ) -> CaseRecord:
        now = self._clock()
        valid = validate_assistance_request(request, own_state=self._state, today=now.date())
        earlier = self._cases.find_by_client_reference(principal.subject, valid.client_reference)
        if earlier is not None:
            return earlier
        agreement = self._gate.prepare(valid.agreement_id, valid.representing_state)
        minimised = evaluate(
            agreement.outbound,
            exchange_type=EXCHANGE,
            purpose=valid.purpose,
            kind=valid.kind,
            payload=representation_payload(
                kind=request.kind,
                mission_country=request.mission_country,
                person=request.person,
                summary=request.summary,
            ),
            legal_basis=valid.legal_basis,
            today=now.date(),
            hash_key=agreement.hash_key,
        )
        require_routing(minimised)
        case = opened_case(
            case_id=str(uuid.uuid4()),
            agreement=agreement,
            requesting_state=self._state,
            representing_state=agreement.partner_state,
            mission_country=valid.mission_country,
            kind=valid.kind,
            minimised=minimised,
            flags=valid.legal_basis,
            now=now,
            client_reference=valid.client_reference,
            principal=principal.acting,
        )
        message = CaseMessage(
            case.case_id,
            "open",
            1,
            has_legal_basis=case.has_legal_basis,
            consent_recorded=case.consent_recorded,
        )

        request_id = REQUEST_ID.get()

        def open_case(write: CaseWrite) -> CaseRecord | None:
            # The case, its quota, its first message and the evidence commit together, and
            # only while the agreement is in force; a reference already used takes nothing.
            def evidence(fresh: bool) -> None:
                if fresh:
                    change = CaseChange(message, minimised, "submitted")
                    self._commit(write, agreement, case, change, now, request_id)
                    self._audit_sent(principal, case, message, write.conn)

            unit = ExchangeUnit(agreement, minimised, "cases")
            inserted = functools.partial(write.insert_case, case)
            fresh = self._gate.commit_exchange(write.conn, unit, record=inserted, evidence=evidence)
            return case if fresh else None

        winner = self._cases.write(open_case)
        if winner is not None:
            self._transition_event(case, message)
        if winner is None:  # a concurrent call with the same reference committed first
            found = self._cases.find_by_client_reference(principal.subject, valid.client_reference)
            if found is None:
                raise RuntimeError("a case insert was refused without a prior case")
            return found
        return self._cases.get(case.case_id) or case

    def _act(
        self,
        principal: Principal,
        case: CaseRecord,
        message: CaseMessage,
        content: Mapping[str, Any],
        *,
        new_state: CaseStatus | None = None,
    ) -> None:
        now = self._clock()
        agreement = self._gate.prepare(case.agreement_id, self._partner(case))
        minimised = evaluate(
            agreement.outbound,
            payload=content,
            today=now.date(),
            hash_key=agreement.hash_key,
            **policy_context(case),
        )
        change = change_for(message, minimised, author=self._state, case_id=case.case_id, now=now)
        if new_state is not None:
            change = dataclasses.replace(change, new_state=new_state)

        request_id = REQUEST_ID.get()

        def act(write: CaseWrite) -> None:
            self._gate.confirm_within(write.conn, agreement)
            locked = write.lock(case.case_id)
            if locked is None:
                raise NotFound("no such case")
            if new_state is not None:  # re-check under the lock: the partner may have moved it
                check_transition(locked.state, new_state, self._role(locked))
            self._commit(write, agreement, locked, change, now, request_id)
            self._audit_sent(principal, locked, change.message, write.conn)

        self._cases.write(act)
        self._transition_event(case, change.message)

    def _transition_event(self, case: CaseRecord, message: CaseMessage) -> None:
        """The ``case_event`` line of a committed change of ours (kind: the transition)."""
        emit(
            Event.CASE_EVENT,
            case_id=case.case_id,
            agreement_id=case.agreement_id,
            agreement_version=case.agreement_version,
            partner=self._partner(case),
            exchange_type=EXCHANGE,
            kind=event_kind_for(message),
        )

    def _commit(
        self,
        write: CaseWrite,
        agreement: AgreementInForce,
        case: CaseRecord,
        change: CaseChange,
        now: datetime,
        request_id: str | None,
    ) -> None:
        """Sign the message with the case's next sequence number and change the case with it.

        ``request_id`` is the call's, taken before the write left its thread: the message's
        later stages log under it."""
        sequence = case.sent_seq + 1
        message = CaseMessage(**{**change.message.__dict__, "sequence": sequence})
        header = agreement.new_header(
            exchange_type=common_pb2.EXCHANGE_TYPE_REPRESENTATION,
            purpose=case.purpose,
            created_at=now,
            payload_type=PAYLOAD_TYPE,
        )
        payload = encode_case_payload(message, change.minimised.payload)
        envelope, digest = self._signer.sign_with_digest(
            header, payload, hybrid=agreement.hybrid_signatures
        )
        self._outbox.enqueue_within(
            write.conn,
            [
                OutboxItem(
                    message_id=header.message_id,
                    agreement_id=agreement.id,
                    agreement_version=agreement.version,
                    exchange_type=EXCHANGE,
                    recipient_state=agreement.partner_state,
                    purpose=case.purpose,
                    envelope=envelope.SerializeToString(),
                    deadline_at=now + self._deadline,
                    kind=case.kind,
                    envelope_digest=digest,
                    request_id=request_id,
                )
            ],
        )
        apply_change(
            write,
            case,
            change,
            agreement,
            actor_state=self._state,
            message_id=header.message_id,
            now=now,
            sent_seq=sequence,
        )

    # -- helpers -----------------------------------------------------------

    def _case(self, case_id: str) -> CaseRecord:
        case = self._cases.get(case_id)
        if case is None or not case.party(self._state):
            raise NotFound("no case with that id is held by this state")
        return case

    def _partner(self, case: CaseRecord) -> str:
        return (
            case.representing_state
            if case.requesting_state == self._state
            else case.requesting_state
        )

    def _role(self, case: CaseRecord) -> CaseRole:
        role = role_of(
            self._state,
            requesting_state=case.requesting_state,
            representing_state=case.representing_state,
        )
        if role is None:
            raise NotFound("no case with that id is held by this state")
        return role

    def _require_role(self, case: CaseRecord, role: CaseRole, action: str) -> None:
        if self._role(case) is not role:
            raise PermissionRejected(
                f"only the {role.value} state may {action}", reason="WRONG_CASE_ROLE"
            )

    def _claim(self, case_id: str, claim_id: str) -> CostClaimRecord:
        view = self._cases.view(case_id)
        found = [c for c in view.claims if c.claim_id == claim_id] if view else []
        if not found:
            raise NotFound("no cost claim with that id on this case")
        return found[0]

    def _audit_sent(
        self,
        principal: Principal,
        case: CaseRecord,
        message: CaseMessage,
        conn: Connection,
    ) -> None:
        self._audit.record(
            EventKind.CASE_TRANSITION,
            Decision.ACCEPTED,
            agreement_id=case.agreement_id,
            agreement_version=case.agreement_version,
            exchange_type=EXCHANGE,
            purpose=case.purpose,
            peer_state=self._partner(case),
            principal=principal.acting,
            reason_code=f"CASE_{event_kind_for(message).upper()}",
            conn=conn,
        )

    def _refusals_audited(
        self, principal: Principal, peer_state: str | None, agreement_id: str | None
    ) -> audit_refusals:
        context = RefusalContext(EXCHANGE, principal.subject, peer_state, agreement_id)
        return audit_refusals(self._audit, context)
