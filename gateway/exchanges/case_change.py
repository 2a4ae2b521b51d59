"""One change to a representation case, applied the same way on both gateways.

The sending gateway applies a :class:`CaseChange` in the transaction that puts the
signed message in its outbox; the receiving gateway applies the same change, from the
verified message, in the transaction that stores it in its inbox. The state, the next
deadline (computed from the agreement both hold), the note or cost claim and the
case event come out the same on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.agreements.gate import AgreementInForce
from gateway.errors import PolicyRejected
from gateway.exchanges.case_deadlines import case_rules, step_deadline
from gateway.exchanges.case_payload import CaseMessage
from gateway.policy.catalogue import ExchangeType
from gateway.policy.evaluate import LegalBasisFlags, MinimisedPayload
from gateway.store.cases import CaseRecord, CaseWrite, CostClaimRecord, NoteRecord
from gateway.store.tables import CaseStatus

EXCHANGE: ExchangeType = "representation"


@dataclass(frozen=True)
class CaseChange:
    """What one action does to the case, once the machine and the policy allowed it."""

    message: CaseMessage
    minimised: MinimisedPayload
    event_kind: str
    new_state: CaseStatus | None = None
    note: NoteRecord | None = None
    claim: CostClaimRecord | None = None


def opened_case(
    *,
    case_id: str,
    agreement: AgreementInForce,
    requesting_state: str,
    representing_state: str,
    mission_country: str,
    kind: str,
    minimised: MinimisedPayload,
    flags: LegalBasisFlags,
    now: datetime,
    client_reference: str | None = None,
    principal: str | None = None,
) -> CaseRecord:
    """A case as both gateways first hold it: SUBMITTED, its first deadline running."""
    deadline = step_deadline(
        case_rules(agreement.loaded.exchanges, requesting_state, representing_state),
        CaseStatus.SUBMITTED,
        now,
    )
    return CaseRecord(
        case_id=case_id,
        requesting_state=requesting_state,
        representing_state=representing_state,
        agreement_id=agreement.id,
        state=CaseStatus.SUBMITTED,
        agreement_version=agreement.version,
        mission_country=mission_country,
        kind=kind,
        purpose=minimised.purpose,
        has_legal_basis=flags.has_legal_basis,
        consent_recorded=flags.consent_recorded,
        rule_set=minimised.applied_rule_set,
        sent_seq=0,
        received_seq=0,
        event_count=0,
        next_deadline=deadline.due,
        deadline_step=deadline.step,
        deadline_missed=False,
        created_at=now,
        updated_at=now,
        payload_purged_at=None,
        client_reference=client_reference,
        principal=principal,
        content=dict(minimised.payload),
    )


def event_kind_for(message: CaseMessage) -> str:
    """The case event an action records: the target state's name, or the action's."""
    if message.action == "open":
        return CaseStatus.SUBMITTED.value
    if message.action == "transition" and message.target_state is not None:
        return message.target_state.value
    return {"note": "note_added", "claim_costs": "costs_claimed"}.get(
        message.action, "costs_acknowledged"
    )


def policy_context(case: CaseRecord) -> dict[str, Any]:
    """The arguments every later message of ``case`` is evaluated with."""
    return {
        "exchange_type": EXCHANGE,
        "purpose": case.purpose,
        "kind": case.kind,
        "legal_basis": LegalBasisFlags(case.has_legal_basis, case.consent_recorded),
        "protected_person": case.rule_set == "minors",
    }


def require_routing(minimised: MinimisedPayload) -> None:
    """A case needs its kind and mission country; an agreement that drops them refuses it."""
    if "kind" not in minimised.payload or "mission_country" not in minimised.payload:
        raise PolicyRejected(
            "the agreement must let a case's kind and mission country cross",
            reason="CASE_ROUTING_NOT_AGREED",
        )


def apply_change(
    write: CaseWrite,
    case: CaseRecord,
    change: CaseChange,
    agreement: AgreementInForce,
    *,
    actor_state: str,
    message_id: str,
    now: datetime,
    sent_seq: int | None = None,
    received_seq: int | None = None,
    notify_registry: bool = False,
) -> None:
    """Change the locked ``case`` as ``change`` says; the same on the sending and receiving side."""
    values: dict[str, Any] = {"updated_at": now}
    if sent_seq is not None:
        values["sent_seq"] = sent_seq
    if received_seq is not None:
        values["received_seq"] = received_seq
    state = case.state
    if change.new_state is not None:
        state = change.new_state
        deadline = step_deadline(
            case_rules(agreement.loaded.exchanges, case.requesting_state, case.representing_state),
            state,
            now,
        )
        values.update(
            state=state,
            next_deadline=deadline.due,
            deadline_step=deadline.step,
            deadline_missed=False,
        )
    if change.note is not None:
        write.add_note(change.note)
    if change.claim is not None:
        write.add_claim(change.claim)
    if change.message.action == "acknowledge_costs":
        write.acknowledge_claim(change.message.claim_id, now)
    write.update_case(case.case_id, **values)
    write.add_event(
        case,
        change.event_kind,
        state,
        actor_state=actor_state,
        message_id=message_id,
        at=now,
        notify_registry=notify_registry,
    )


def change_for(
    message: CaseMessage,
    minimised: MinimisedPayload,
    *,
    author: str,
    case_id: str,
    now: datetime,
) -> CaseChange:
    """The change ``message`` makes, its note or claim as the policy let it cross."""
    return CaseChange(
        message,
        minimised,
        event_kind_for(message),
        new_state=message.target_state if message.action == "transition" else None,
        note=NoteRecord(message.note_id, case_id, author, now, minimised.payload)
        if message.action == "note"
        else None,
        claim=CostClaimRecord(
            message.claim_id,
            case_id,
            message.currency,
            message.amount_minor,
            now,
            None,
            message.description,
        )
        if message.action == "claim_costs"
        else None,
    )
