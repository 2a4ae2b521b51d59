"""Validation of identity-confirmation requests, before anything is asked or sent.

:func:`validate_query` is the first stage of a confirmation's path: it takes the
caller's ``ConfirmIdentityRequest`` as it arrived and returns a
:class:`ValidIdentityQuery`. It guarantees:

* every rule is checked and all broken rules are reported together, naming the field
  by its proto path (``claim.date_of_birth.month``) and the rule, never a value;
* the claim names a document type and holds something to compare beyond it: a
  document number, or a date of birth to search by;
* an MRZ, when given, passes every ICAO 9303 check digit and agrees with the claim's
  other fields; fields the caller left empty are taken from it (document number, date
  of birth, sex, nationality, and names unless the MRZ truncated them), so a consulate
  holding only a scanned document can ask;
* names are put into the agreement's comparison form later, by the sending stage,
  which knows the agreement; here they only have to be well formed.

:func:`validate_received_claim` holds a partner's minimised claim to the same rules
for what it carries, before the responding gateway spends its id or its quota; a
hashed value is checked only for being a hash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from gateway.errors import ValidationRejected
from gateway.exchanges.civil_validation import (
    MAX_LEGAL_BASIS_CHARS,
    FieldChecker,
    LegalBasisFlags,
    received_message,
)
from gateway.exchanges.mrz import MachineReadableZone, mrz_state_to_alpha2, parse_mrz
from gateway.policy.catalogue import kind_name
from gateway.policy.transforms import is_hash_token
from pouch.v1 import common_pb2, identity_pb2

MAX_DOCUMENT_NUMBER_CHARS = 32
MAX_MRZ_CHARS = 100
_AGREEMENT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_PURPOSE = re.compile(r"[a-z0-9_-]{1,64}")
_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Document numbers as printed: letters and digits, optionally grouped by spaces or hyphens.
_DOCUMENT_NUMBER = re.compile(r"[A-Za-z0-9]+(?:[ -][A-Za-z0-9]+)*")
_MRZ_SEX: dict[str, common_pb2.Sex.ValueType] = {
    "F": common_pb2.SEX_FEMALE,
    "M": common_pb2.SEX_MALE,
    "X": common_pb2.SEX_OTHER,
}


def comparable_document_number(value: str) -> str:
    """The number as documents print it in their MRZ: upper case, no spaces or hyphens."""
    return value.replace(" ", "").replace("-", "").upper()


@dataclass(frozen=True)
class ValidIdentityQuery:
    """A confirmation request that passed every rule of this module."""

    partner_state: str
    agreement_id: str
    purpose: str
    claim: identity_pb2.IdentityClaim
    document_kind: str
    case_id: str | None
    legal_basis: LegalBasisFlags
    mrz_format: str | None


def validate_query(
    request: identity_pb2.ConfirmIdentityRequest, *, requester_state: str, today: date
) -> ValidIdentityQuery:
    """Check a request against every rule; raise one ValidationRejected listing all."""
    check = FieldChecker(today)
    check.country("partner_state", request.partner_state, required=True)
    if request.partner_state == requester_state:
        check.refuse("partner_state", "must differ from the requesting state")
    check.pattern("agreement_id", request.agreement_id, _AGREEMENT_ID)
    check.pattern("purpose", request.purpose, _PURPOSE)
    if request.case_id and _CASE_ID.fullmatch(request.case_id) is None:
        check.refuse("case_id", f"must match {_CASE_ID.pattern}")
    check.text(
        "legal_basis.reference",
        request.legal_basis.reference,
        MAX_LEGAL_BASIS_CHARS,
        printable=True,
    )
    claim = identity_pb2.IdentityClaim()
    claim.CopyFrom(request.claim)
    kind = _document_kind(check, claim.document_type)
    zone = _machine_readable_zone(check, claim.mrz, today)
    if zone is not None:
        _agree_with_zone(check, claim, zone)
    _claim_fields(check, claim)
    if check.violations or kind is None:
        raise ValidationRejected(check.violations)
    return ValidIdentityQuery(
        partner_state=request.partner_state,
        agreement_id=request.agreement_id,
        purpose=request.purpose,
        claim=claim,
        document_kind=kind,
        case_id=request.case_id or None,
        legal_basis=LegalBasisFlags(
            reference_present=bool(request.legal_basis.reference.strip()),
            consent_recorded=request.legal_basis.consent_recorded,
        ),
        mrz_format=zone.format if zone is not None else None,
    )


def validate_received_claim(tree: Mapping[str, Any], *, today: date) -> None:
    """Refuse a partner's minimised claim (the payload's ``claim``) that breaks a rule."""
    claim = received_message(tree, identity_pb2.IdentityClaim)
    check = FieldChecker(today, received=True)
    if claim.document_type and kind_name("identity_confirmation", claim.document_type) is None:
        check.refuse("claim.document_type", "must be a known document type")
    if is_hash_token(claim.document_number):
        claim.document_number = ""
    _claim_fields(check, claim)
    if check.violations:
        raise ValidationRejected(check.violations)


def _document_kind(check: FieldChecker, document_type: int) -> str | None:
    if document_type == identity_pb2.DOCUMENT_TYPE_UNSPECIFIED:
        check.refuse("claim.document_type", "required")
        return None
    kind = kind_name("identity_confirmation", document_type)
    if kind is None:
        check.refuse("claim.document_type", "must be a known document type")
    return kind


def _machine_readable_zone(
    check: FieldChecker, text: str, today: date
) -> MachineReadableZone | None:
    if not text:
        return None
    if len(text) > MAX_MRZ_CHARS:
        check.refuse("claim.mrz", f"must be at most {MAX_MRZ_CHARS} characters")
        return None
    try:
        return parse_mrz(text, today=today, field="claim.mrz")
    except ValidationRejected as e:
        check.violations.extend(e.violations)
        return None


def _agree_with_zone(
    check: FieldChecker, claim: identity_pb2.IdentityClaim, zone: MachineReadableZone
) -> None:
    """Fill what the caller left empty from the MRZ; refuse what contradicts it."""
    disagrees = "disagrees with claim.mrz"
    if not claim.document_number:
        claim.document_number = zone.document_number
    elif comparable_document_number(claim.document_number) != zone.document_number:
        check.refuse("claim.document_number", disagrees)
    born = common_pb2.CivilDate(
        year=zone.date_of_birth.year, month=zone.date_of_birth.month, day=zone.date_of_birth.day
    )
    if not claim.HasField("date_of_birth"):
        claim.date_of_birth.CopyFrom(born)
    elif claim.date_of_birth != born:
        check.refuse("claim.date_of_birth", disagrees)
    sex = _MRZ_SEX.get(zone.sex)
    if sex is not None and claim.sex == common_pb2.SEX_UNSPECIFIED:
        claim.sex = sex
    elif sex is not None and claim.sex != sex:
        check.refuse("claim.sex", disagrees)
    nationality = mrz_state_to_alpha2(zone.nationality)
    if nationality is not None and not claim.nationality:
        claim.nationality = nationality
    elif nationality is not None and claim.nationality != nationality:
        check.refuse("claim.nationality", disagrees)
    has_names = claim.name.given_names or claim.name.family_names
    if not has_names and not zone.names_truncated:
        claim.name.family_names.extend(zone.primary_identifier)
        claim.name.given_names.extend(zone.secondary_identifier)


def _claim_fields(check: FieldChecker, claim: identity_pb2.IdentityClaim) -> None:
    number = claim.document_number
    if len(number) > MAX_DOCUMENT_NUMBER_CHARS:
        check.refuse(
            "claim.document_number", f"must be at most {MAX_DOCUMENT_NUMBER_CHARS} characters"
        )
    elif number and _DOCUMENT_NUMBER.fullmatch(number) is None:
        check.refuse(
            "claim.document_number", "letters and digits, grouped by single spaces or hyphens"
        )
    check.name("claim.name", claim.name, required=False)
    born = check.civil_date(
        "claim.date_of_birth",
        claim.date_of_birth if claim.HasField("date_of_birth") else None,
        partial=True,
    )
    if born is not None and born > check.today:
        check.refuse("claim.date_of_birth", "must not be in the future")
    if claim.sex not in common_pb2.Sex.values():
        check.refuse("claim.sex", "must be a known sex code")
    check.country("claim.nationality", claim.nationality, required=False)
    if not number and not claim.HasField("date_of_birth"):
        check.absent("claim", "needs a document number or a date of birth to compare")
    if number:
        claim.document_number = comparable_document_number(number)
