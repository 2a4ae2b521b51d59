"""Validating a local caller's representation request, note or cost claim, before anything else.

Limits, each refused with a ``BadRequest`` violation naming the field and the rule:

* client reference, agreement id and purpose as for civil records; representing state
  and mission country assigned ISO 3166-1 alpha-2 codes, the representing state not this
  gateway's own; an assistance kind that is not UNSPECIFIED;
* the person: names as for civil records (NFC, no control characters, at most 10 of
  each, 200 characters each), a date of birth that may be partial but not in the future,
  a nationality and a location country that are ISO codes, a locality of at most 200
  characters, a contact of at most 256; a summary of at most 8 KiB of UTF-8;
* a note: text of at most :data:`MAX_NOTE_TEXT_BYTES` (8 KiB) of UTF-8, at most
  :data:`MAX_ATTACHMENTS` (5) attachments, each of 1 byte to
  :data:`MAX_ATTACHMENT_BYTES` (1 MiB), together at most :data:`MAX_NOTE_BYTES` (2 MiB,
  which base64 in the envelope keeps under the gateway's 4 MiB message size); a file
  name of 1 to 255 characters without path separators, control characters or a
  leading dot; a media type of the form ``type/subtype`` (RFC 6838 characters);
* a cost claim: an active ISO 4217 currency, an amount of 1 to 10^15 minor units, a
  description that is a cost category code (``TRAVEL_DOCUMENT_FEE``), never free text;
* a reason for declining, failing or cancelling is a reason code (``NO_CONSULAR_ACCESS``),
  never free text, since it travels as case metadata outside the policy.

:func:`validate_received_content` holds the content of a partner's case message to the
same limits, with the same constants, before the receiving gateway stores it: the
person, the summary, and every note's text and attachments. What the agreement kept
from crossing is not missed there, and a masked or hashed value is not read as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.errors import FieldViolation, ValidationRejected
from gateway.exchanges.case_payload import (
    COST_CATEGORY_RULE,
    MAX_AMOUNT_MINOR,
    REASON_CODE,
    is_case_identifier,
    is_cost_description,
    is_currency,
)
from gateway.exchanges.civil_validation import (
    _AGREEMENT_ID,
    _CLIENT_REFERENCE,
    _PURPOSE,
    MAX_LEGAL_BASIS_CHARS,
    FieldChecker,
    received_message,
)
from gateway.policy.catalogue import kind_name
from gateway.policy.evaluate import LegalBasisFlags
from gateway.policy.transforms import MASK, is_hash_token
from pouch.v1 import representation_pb2

MAX_SUMMARY_BYTES = 8 * 1024
MAX_CONTACT_CHARS = 256
MAX_NOTE_TEXT_BYTES = 8 * 1024
MAX_ATTACHMENTS = 5
MAX_ATTACHMENT_BYTES = 1024 * 1024
MAX_NOTE_BYTES = 2 * 1024 * 1024
MAX_FILE_NAME_CHARS = 255
_MEDIA_TYPE = re.compile(
    r"[a-z][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", re.IGNORECASE
)


@dataclass(frozen=True)
class ValidAssistanceRequest:
    client_reference: str
    representing_state: str
    mission_country: str
    agreement_id: str
    purpose: str
    kind: str
    request: representation_pb2.RequestAssistanceRequest
    legal_basis: LegalBasisFlags


def validate_assistance_request(
    request: representation_pb2.RequestAssistanceRequest, *, own_state: str, today: date
) -> ValidAssistanceRequest:
    check = FieldChecker(today)
    check.pattern("client_reference", request.client_reference, _CLIENT_REFERENCE)
    check.country("representing_state", request.representing_state, required=True)
    if request.representing_state == own_state:
        check.refuse("representing_state", "must differ from the requesting state")
    check.country("mission_country", request.mission_country, required=True)
    check.pattern("agreement_id", request.agreement_id, _AGREEMENT_ID)
    check.pattern("purpose", request.purpose, _PURPOSE)
    kind = kind_name("representation", request.kind) if request.kind else None
    if kind is None:
        check.refuse("kind", "must be a known assistance kind, not UNSPECIFIED")
    check.text(
        "legal_basis.reference",
        request.legal_basis.reference,
        MAX_LEGAL_BASIS_CHARS,
        printable=True,
    )
    _person(check, request.person)
    if len(request.summary.encode("utf-8")) > MAX_SUMMARY_BYTES:
        check.refuse("summary", f"must be at most {MAX_SUMMARY_BYTES} bytes of UTF-8")
    if check.violations or kind is None:
        raise ValidationRejected(check.violations)
    copy = representation_pb2.RequestAssistanceRequest()
    copy.CopyFrom(request)
    return ValidAssistanceRequest(
        client_reference=request.client_reference,
        representing_state=request.representing_state,
        mission_country=request.mission_country,
        agreement_id=request.agreement_id,
        purpose=request.purpose,
        kind=kind,
        request=copy,
        legal_basis=LegalBasisFlags.from_message(request.legal_basis),
    )


def _person(
    check: FieldChecker, person: representation_pb2.AssistedPerson, path: str = "person"
) -> None:
    check.name(f"{path}.name", person.name, required=True)
    born = check.civil_date(
        f"{path}.date_of_birth",
        person.date_of_birth if person.HasField("date_of_birth") else None,
        partial=True,
    )
    if born is not None and born > check.today:
        check.refuse(f"{path}.date_of_birth", "must not be in the future")
    check.country(f"{path}.nationality", person.nationality, required=False)
    if person.HasField("location"):
        check.place(f"{path}.location", person.location)
    check.text(f"{path}.contact", person.contact, MAX_CONTACT_CHARS, printable=True)


def validate_received_content(content: Mapping[str, Any], *, today: date) -> None:
    """Refuse a partner's minimised case content that breaks a limit of the sender's side."""
    check = FieldChecker(today, received=True)
    prefix = "payload.content"
    person = content.get("person")
    if isinstance(person, Mapping):
        parsed = received_message(person, representation_pb2.AssistedPerson)
        _person(check, parsed, f"{prefix}.person")
    summary = content.get("summary")
    if isinstance(summary, str) and len(summary.encode("utf-8")) > MAX_SUMMARY_BYTES:
        check.refuse(f"{prefix}.summary", f"must be at most {MAX_SUMMARY_BYTES} bytes of UTF-8")
    notes = content.get("notes")
    for index, note in enumerate(notes if isinstance(notes, list) else ()):
        if isinstance(note, Mapping):
            parsed_note = received_message(note, representation_pb2.CaseNote)
            check.violations += note_violations(
                parsed_note.text,
                parsed_note.attachments,
                path=f"{prefix}.notes[{index}].",
                received=True,
            )
    if check.violations:
        raise ValidationRejected(check.violations)


def validate_case_id(case_id: str) -> None:
    if not is_case_identifier(case_id):
        raise ValidationRejected([FieldViolation("case_id", "must be a case id (lower-case UUID)")])


def validate_note(request: representation_pb2.AddNoteRequest) -> None:
    violations: list[FieldViolation] = []
    if not is_case_identifier(request.case_id):
        violations.append(FieldViolation("case_id", "must be a case id (lower-case UUID)"))
    violations += note_violations(request.text, request.attachments)
    if violations:
        raise ValidationRejected(violations)


def note_violations(
    text: str,
    attachments: Sequence[representation_pb2.Attachment],
    *,
    path: str = "",
    received: bool = False,
) -> list[FieldViolation]:
    """The limits of one note, on the caller's side and (``received``) a partner's."""
    violations: list[FieldViolation] = []
    if not received and not text.strip() and not attachments:
        violations.append(FieldViolation(f"{path}text", "a note needs text or an attachment"))
    if len(text.encode("utf-8")) > MAX_NOTE_TEXT_BYTES:
        violations.append(
            FieldViolation(f"{path}text", f"must be at most {MAX_NOTE_TEXT_BYTES} bytes of UTF-8")
        )
    if len(attachments) > MAX_ATTACHMENTS:
        violations.append(
            FieldViolation(f"{path}attachments", f"must have at most {MAX_ATTACHMENTS} entries")
        )
    total = 0
    for index, attachment in enumerate(attachments[:MAX_ATTACHMENTS]):
        at = f"{path}attachments[{index}]"
        size = len(attachment.content)
        total += size
        # A partner's agreement may keep the content back; what crosses must still fit.
        if (size == 0 and not received) or size > MAX_ATTACHMENT_BYTES:
            violations.append(
                FieldViolation(f"{at}.content", f"must be 1 to {MAX_ATTACHMENT_BYTES} bytes")
            )
        name = attachment.file_name
        if received and (not name or _transformed(name)):
            pass
        elif (
            not 0 < len(name) <= MAX_FILE_NAME_CHARS
            or name.startswith(".")
            or "/" in name
            or "\\" in name
            or not name.isprintable()
        ):
            violations.append(
                FieldViolation(
                    f"{at}.file_name",
                    f"must be 1 to {MAX_FILE_NAME_CHARS} printable characters, "
                    "without path separators or a leading dot",
                )
            )
        media = attachment.media_type
        media_settled = received and (not media or _transformed(media))
        if not media_settled and not _MEDIA_TYPE.fullmatch(media):
            violations.append(
                FieldViolation(f"{at}.media_type", "must be a media type such as text/plain")
            )
    if total > MAX_NOTE_BYTES:
        violations.append(
            FieldViolation(f"{path}attachments", f"must total at most {MAX_NOTE_BYTES} bytes")
        )
    return violations


def _transformed(value: str) -> bool:
    """A value the agreement masked or hashed: its form is the policy's, not the caller's."""
    return value == MASK or is_hash_token(value)


def validate_reason(reason: str) -> None:
    if reason and not REASON_CODE.fullmatch(reason):
        raise ValidationRejected(
            [FieldViolation("reason", f"must be a reason code matching {REASON_CODE.pattern}")]
        )


def validate_cost_claim(request: representation_pb2.ClaimCostsRequest) -> None:
    violations: list[FieldViolation] = []
    if not is_case_identifier(request.case_id):
        violations.append(FieldViolation("case_id", "must be a case id (lower-case UUID)"))
    if not is_currency(request.currency):
        violations.append(FieldViolation("currency", "must be an active ISO 4217 currency code"))
    if not 0 < request.amount_minor <= MAX_AMOUNT_MINOR:
        violations.append(
            FieldViolation("amount_minor", f"must be 1 to {MAX_AMOUNT_MINOR} minor units")
        )
    if not is_cost_description(request.description):
        violations.append(FieldViolation("description", COST_CATEGORY_RULE))
    if violations:
        raise ValidationRejected(violations)


def validate_acknowledgement(request: representation_pb2.AcknowledgeCostsRequest) -> None:
    violations = [
        FieldViolation(name, "must be a lower-case UUID")
        for name, value in (("case_id", request.case_id), ("claim_id", request.claim_id))
        if not is_case_identifier(value)
    ]
    if violations:
        raise ValidationRejected(violations)
