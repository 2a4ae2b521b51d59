"""Applying a partner's signed case message to this gateway's copy of the case.

Called by :class:`gateway.delivery.receiver.InboundReceiver` once the envelope is
verified (signature of the sending state, clock window, addressed to us), in stages:

    agreement -> in force here, and the same text (digest pinned)
    metadata  -> the ``case`` part checked strictly (unknown keys refused)
    case      -> held here (or being opened), the sender a party to it, under the
                 agreement the envelope names
    policy    -> the ``content`` part re-evaluated strictly, in the case's context
    fields    -> what the content carries held to the sender's limits (person, summary,
                 note text, attachment size, count and total), the same constants
    store     -> ONE group-commit unit: the agreement still in force, the inbox row
                 (exactly once per message id), for a new case the purpose's daily
                 allowance, the case row locked, the sequence checked, the machine
                 checked for the sender's role, the change applied, its event appended
                 for the registry, and its audit entry

Messages of one case apply in the order their sender numbered them: one that arrives
before its predecessor is answered ``UNAVAILABLE`` (``CASE_MESSAGE_OUT_OF_ORDER``) and
nothing is stored, so the sender's dispatcher retries it later. A move the machine does
not allow the sender, a sender that is not a party, or a message for a case under
another agreement is refused and changes nothing; the sender dead-letters it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection

from gateway.agreements.gate import AgreementInForce, ExchangeUnit
from gateway.audit.entry import Decision, EventKind
from gateway.delivery.context import ExchangeContext
from gateway.envelope import VerifiedEnvelope
from gateway.errors import (
    FieldViolation,
    PermissionRejected,
    ReplayRejected,
    Unavailable,
    ValidationRejected,
)
from gateway.exchanges import case_machine
from gateway.exchanges.case_change import (
    EXCHANGE,
    CaseChange,
    apply_change,
    change_for,
    opened_case,
    policy_context,
    require_routing,
)
from gateway.exchanges.case_machine import CaseRole, role_of
from gateway.exchanges.case_payload import CaseMessage, DecodedCasePayload, decode_case_payload
from gateway.exchanges.iso3166 import is_state_code
from gateway.exchanges.representation_validation import validate_received_content
from gateway.policy.catalogue import kind_name
from gateway.policy.evaluate import LegalBasisFlags, MinimisedPayload, evaluate
from gateway.store.cases import CaseRecord, CaseStore, CaseWrite
from gateway.store.inbox import InboundMessage, Inbox

RETRY_OUT_OF_ORDER_S = 1.0


class CaseMessageOutOfOrder(Unavailable):
    reason = "CASE_MESSAGE_OUT_OF_ORDER"


class CaseInbound:
    """The receiving side of representation-case messages."""

    def __init__(
        self,
        context: ExchangeContext,
        inbox: Inbox,
        cases: CaseStore,
    ) -> None:
        self._state = context.state
        self._gate = context.gate
        self._inbox = inbox
        self._cases = cases
        self._clock = context.clock
        self._audit = context.audit

    def receive(
        self,
        peer_state: str,
        verified: VerifiedEnvelope,
        envelope: bytes,
        *,
        received: Callable[[Connection, bool], None] | None = None,
    ) -> bool:
        """Blocking. Apply the message; ``False`` if it was already stored (a duplicate).

        ``received`` writes the receiver's own evidence of the message (told whether it
        was new) in the same transaction as the case's change.
        """
        header = verified.header
        agreement = self._gate.receiving(verified, peer_state)
        decoded = decode_case_payload(verified.payload)
        message = decoded.message
        now = self._clock()
        if message.action == "open":
            case, minimised = self._opened(peer_state, agreement, decoded, header.purpose, now)
        else:
            case = self._held(peer_state, agreement, message)
            if header.purpose != case.purpose:
                raise PermissionRejected(
                    "the message declares another purpose than its case", reason="PURPOSE_MISMATCH"
                )
            minimised = evaluate(
                agreement.inbound,
                payload=decoded.content,
                today=now.date(),
                hash_key=agreement.hash_key,
                strict_receiver=True,
                **policy_context(case),
            )
        validate_received_content(minimised.payload, today=now.date())
        change = change_for(message, minimised, author=peer_state, case_id=case.case_id, now=now)

        def accept(write: CaseWrite) -> bool:
            # The inbox row, the case's change, a new case's quota and the evidence commit
            # together, and only while the agreement is in force; a duplicate changes nothing.
            def stored() -> bool:
                fresh = self._inbox.accept_once_within(
                    write.conn,
                    InboundMessage(
                        message_id=header.message_id,
                        sender_state=peer_state,
                        agreement_id=agreement.id,
                        exchange_type=EXCHANGE,
                        envelope=envelope,
                        kind=case.kind,
                        purpose=case.purpose,
                        request_digest=verified.digest,
                    ),
                    applied=True,
                )
                if received is not None:
                    received(write.conn, fresh)
                if fresh and message.action == "open" and not write.insert_case(case):
                    raise ReplayRejected("a case with this id is already held")
                return fresh

            def evidence(fresh: bool) -> None:
                if not fresh:
                    return
                self._apply(write, agreement, peer_state, case.case_id, change, header.message_id)
                self._audit.record(
                    EventKind.CASE_TRANSITION,
                    Decision.ACCEPTED,
                    message_id=header.message_id,
                    agreement_id=agreement.id,
                    agreement_version=agreement.version,
                    exchange_type=EXCHANGE,
                    purpose=case.purpose,
                    peer_state=peer_state,
                    principal=f"state:{peer_state}",
                    reason_code=f"CASE_{change.event_kind.upper()}",
                    conn=write.conn,
                )

            # Only the message that opens a case takes a unit of the quota.
            unit = ExchangeUnit(agreement, minimised if message.action == "open" else None, "cases")
            return self._gate.commit_exchange(write.conn, unit, record=stored, evidence=evidence)

        return self._cases.write(accept)

    def _opened(
        self,
        peer_state: str,
        agreement: AgreementInForce,
        decoded: DecodedCasePayload,
        purpose: str,
        now: datetime,
    ) -> tuple[CaseRecord, MinimisedPayload]:
        message = decoded.message
        if message.sequence != 1:
            raise ValidationRejected([FieldViolation("payload.case.sequence", "must be 1 to open")])
        stated = decoded.content.get("kind", "")
        kind = kind_name(EXCHANGE, stated) if isinstance(stated, str) else None
        if kind is None:
            raise ValidationRejected([FieldViolation("payload.content.kind", "required")])
        flags = LegalBasisFlags(message.has_legal_basis, message.consent_recorded)
        minimised = evaluate(
            agreement.inbound,
            exchange_type=EXCHANGE,
            purpose=purpose,
            kind=kind,
            payload=decoded.content,
            legal_basis=flags,
            today=now.date(),
            hash_key=agreement.hash_key,
            strict_receiver=True,
        )
        require_routing(minimised)
        mission = minimised.payload["mission_country"]
        if not isinstance(mission, str) or not is_state_code(mission):
            raise ValidationRejected(
                [FieldViolation("payload.content.mission_country", "must be an ISO 3166-1 code")]
            )
        case = opened_case(
            case_id=message.case_id,
            agreement=agreement,
            requesting_state=peer_state,
            representing_state=self._state,
            mission_country=mission,
            kind=kind,
            minimised=minimised,
            flags=flags,
            now=now,
        )
        return case, minimised

    def _held(
        self, peer_state: str, agreement: AgreementInForce, message: CaseMessage
    ) -> CaseRecord:
        case = self._cases.get(message.case_id)
        if case is None:
            # Its opening message may still be on its way: let the sender try again.
            raise CaseMessageOutOfOrder(
                "the case is not known here yet", retry_after_s=RETRY_OUT_OF_ORDER_S
            )
        if not case.party(peer_state) or not case.party(self._state):
            raise PermissionRejected("the sender is not a party to this case", reason="NOT_A_PARTY")
        if case.agreement_id != agreement.id:
            raise PermissionRejected(
                "the message names another agreement than its case", reason="AGREEMENT_MISMATCH"
            )
        return case

    def _apply(
        self,
        write: CaseWrite,
        agreement: AgreementInForce,
        peer_state: str,
        case_id: str,
        change: CaseChange,
        message_id: str,
    ) -> None:
        case = write.lock(case_id)
        assert case is not None  # held or inserted in this transaction
        message = change.message
        expected = case.received_seq + 1
        if message.sequence < expected:
            raise ReplayRejected("this case message was already applied under another id")
        if message.sequence > expected:
            raise CaseMessageOutOfOrder(
                "an earlier message of this case has not arrived yet",
                retry_after_s=RETRY_OUT_OF_ORDER_S,
            )
        role = role_of(
            peer_state,
            requesting_state=case.requesting_state,
            representing_state=case.representing_state,
        )
        assert role is not None  # checked by _held or set by _opened
        _check_sender(write, case, role, message)
        apply_change(
            write,
            case,
            change,
            agreement,
            actor_state=peer_state,
            message_id=message_id,
            now=self._clock(),
            received_seq=message.sequence,
            notify_registry=True,
        )


def _check_sender(write: CaseWrite, case: CaseRecord, role: CaseRole, message: CaseMessage) -> None:
    """What the machine allows the sender's role; the same rules the sender's gateway applied."""
    action = message.action
    if action == "open":
        if role is not CaseRole.REQUESTING or case.event_count:
            raise case_machine.IllegalTransition("only the requesting state opens a case")
    elif action == "transition":
        assert message.target_state is not None
        case_machine.check_transition(case.state, message.target_state, role)
    elif action == "claim_costs":
        if role is not CaseRole.REPRESENTING:
            raise case_machine.IllegalTransition("only the representing state claims costs")
        case_machine.check_cost_claim(case.state)
    elif action == "acknowledge_costs":
        if role is not CaseRole.REQUESTING:
            raise case_machine.IllegalTransition("only the requesting state acknowledges costs")
        claim = write.claim(case.case_id, message.claim_id)
        if claim is None or claim.acknowledged_at is not None:
            raise case_machine.IllegalTransition(
                "no such unacknowledged cost claim on this case", reason="CLAIM_NOT_OPEN"
            )
