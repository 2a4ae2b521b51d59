"""A case as it is held here, in the contract's words: for the local API and the registry."""

from __future__ import annotations

import base64
from datetime import datetime

from google.protobuf.json_format import ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.store.cases import CaseEvent, CaseView, CostClaimRecord, NoteRecord
from gateway.store.tables import CaseStatus
from pouch.v1 import representation_pb2

STATES = {
    number: CaseStatus(name.removeprefix("CASE_STATE_").lower())
    for name, number in representation_pb2.CaseState.items()
    if number
}
STATE_NUMBERS = {state: number for number, state in STATES.items()}


def timestamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def note_message(note: NoteRecord) -> representation_pb2.CaseNote:
    message = representation_pb2.CaseNote(
        note_id=note.note_id, author_state=note.author_state, created_at=timestamp(note.created_at)
    )
    if note.content:
        (crossed,) = note.content.get("notes", [{}])
        message.text = crossed.get("text", "")
        for attachment in crossed.get("attachments", []):
            message.attachments.add(
                file_name=attachment.get("file_name", ""),
                media_type=attachment.get("media_type", ""),
                content=base64.b64decode(attachment.get("content", "")),
            )
    return message


def claim_message(claim: CostClaimRecord) -> representation_pb2.CostClaim:
    return representation_pb2.CostClaim(
        claim_id=claim.claim_id,
        currency=claim.currency,
        amount_minor=claim.amount_minor,
        description=claim.description or "",
        acknowledged=claim.acknowledged_at is not None,
    )


def case_message(view: CaseView) -> representation_pb2.RepresentationCase:
    record = view.record
    case = representation_pb2.RepresentationCase(
        case_id=record.case_id,
        requesting_state=record.requesting_state,
        representing_state=record.representing_state,
        mission_country=record.mission_country,
        kind=representation_pb2.AssistanceKind.Value(f"ASSISTANCE_KIND_{record.kind.upper()}"),
        state=STATE_NUMBERS[record.state],
        agreement_id=record.agreement_id,
        purpose=record.purpose,
        notes=[note_message(n) for n in view.notes],
        cost_claims=[claim_message(c) for c in view.claims],
        identity_confirmations=view.identity_confirmations,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        next_deadline=timestamp(record.next_deadline),
    )
    person = (record.content or {}).get("person")
    if isinstance(person, dict):
        # Masked or generalised values are still of the field's type; a hashed name is text.
        ParseDict(person, case.person, ignore_unknown_fields=False)
    return case


def case_event_message(event: CaseEvent) -> representation_pb2.CaseEvent:
    """One recorded step of a case: what happened, the state after, who caused it."""
    return representation_pb2.CaseEvent(
        event_kind=event.event_kind,
        state=STATE_NUMBERS[event.state],
        actor_state=event.actor_state or "",
        message_id=event.message_id or "",
        occurred_at=timestamp(event.occurred_at),
    )
