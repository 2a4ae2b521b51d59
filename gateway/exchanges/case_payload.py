"""What one representation-case message carries: strict case metadata, governed content.

The envelope payload is RFC 8785 JSON (:mod:`gateway.envelope.payload`) of::

    {"case": {...metadata...}, "content": {...}}

* ``case`` is metadata that is not personal data: the case id, the action, the
  sender's sequence number for the case, and per action the target state and a reason
  code, a note id, or a cost claim (id, ISO 4217 currency, amount in minor units, a
  cost category code such as ``TRAVEL_DOCUMENT_FEE``: a code, never free text, since
  it crosses outside the policy). It is validated strictly: a key not listed for the
  action, a missing key or a value of the wrong form is refused, naming the key.
* ``content`` is the crossing part of a representation case as the policy catalogue
  describes it (``kind``, ``mission_country``, ``person.*``, ``summary``,
  ``notes[].text``, ``notes[].attachments``) and is evaluated by the policy as a
  whole, never read before it passed. An ``open`` carries kind, mission country,
  person and summary; a ``note`` carries one note; the other actions carry none.

Actions: ``open`` (the requesting state creates the case), ``transition``,
``note``, ``claim_costs``, ``acknowledge_costs``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from gateway.envelope.payload import decode_payload, encode_payload
from gateway.errors import FieldViolation, ValidationRejected
from gateway.exchanges.iso4217 import is_currency_code
from gateway.store.tables import CaseStatus

CaseAction = Literal["open", "transition", "note", "claim_costs", "acknowledge_costs"]
ACTIONS: tuple[CaseAction, ...] = get_args(CaseAction)

MAX_SEQUENCE = 2**31 - 1
MAX_AMOUNT_MINOR = 10**15
MAX_COST_DESCRIPTION_CHARS = 64
COST_CATEGORY_RULE = "must be a cost category code: A-Z, 0-9 and '_', at most 64 characters"
_COST_CATEGORY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
REASON_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")

_COMMON = frozenset({"case_id", "action", "sequence"})
_KEYS: Mapping[str, frozenset[str]] = {
    "open": _COMMON | {"has_legal_basis", "consent_recorded"},
    "transition": _COMMON | {"target_state", "reason_code"},
    "note": _COMMON | {"note_id"},
    "claim_costs": _COMMON | {"claim_id", "currency", "amount_minor", "description"},
    "acknowledge_costs": _COMMON | {"claim_id"},
}
_OPTIONAL = frozenset({"reason_code", "description"})


@dataclass(frozen=True)
class CaseMessage:
    """The metadata of one case message; fields not used by the action are empty."""

    case_id: str
    action: CaseAction
    sequence: int
    target_state: CaseStatus | None = None
    reason_code: str = ""
    note_id: str = ""
    claim_id: str = ""
    currency: str = ""
    amount_minor: int = 0
    description: str = ""
    has_legal_basis: bool = False
    consent_recorded: bool = False

    def metadata(self) -> dict[str, Any]:
        tree: dict[str, Any] = {
            "case_id": self.case_id,
            "action": self.action,
            "sequence": self.sequence,
        }
        extras: dict[str, dict[str, Any]] = {
            "open": {
                "has_legal_basis": self.has_legal_basis,
                "consent_recorded": self.consent_recorded,
            },
            "transition": {
                "target_state": self.target_state.value if self.target_state else "",
                "reason_code": self.reason_code,
            },
            "note": {"note_id": self.note_id},
            "claim_costs": {
                "claim_id": self.claim_id,
                "currency": self.currency,
                "amount_minor": self.amount_minor,
                "description": self.description,
            },
            "acknowledge_costs": {"claim_id": self.claim_id},
        }
        extra = extras[self.action]
        tree.update({k: v for k, v in extra.items() if v != "" or k not in _OPTIONAL})
        return tree


def encode_case_payload(message: CaseMessage, content: Mapping[str, Any]) -> bytes:
    tree: dict[str, Any] = {"case": message.metadata()}
    if content:
        tree["content"] = dict(content)
    return encode_payload(tree)


@dataclass(frozen=True)
class DecodedCasePayload:
    """A case message's metadata, checked, and its content, not yet evaluated."""

    message: CaseMessage
    content: Mapping[str, Any]


def decode_case_payload(data: bytes) -> DecodedCasePayload:
    """Split and check a received payload; :class:`ValidationRejected` names the key."""
    tree = decode_payload(data)
    unknown = sorted(set(tree) - {"case", "content"})
    if unknown:
        raise _refused([FieldViolation(f"payload.{_name(k)}", "unknown key") for k in unknown])
    meta, content = tree.get("case"), tree.get("content", {})
    if not isinstance(meta, dict):
        raise _refused([FieldViolation("payload.case", "must be an object")])
    if not isinstance(content, dict):
        raise _refused([FieldViolation("payload.content", "must be an object")])
    return DecodedCasePayload(_parse_metadata(meta), content)


def _parse_metadata(meta: Mapping[str, Any]) -> CaseMessage:
    action = meta.get("action")
    if action not in ACTIONS:
        raise _refused([FieldViolation("payload.case.action", f"must be one of {ACTIONS}")])
    allowed = _KEYS[action]
    problems = [
        FieldViolation(f"payload.case.{_name(k)}", f"unknown key for {action}")
        for k in sorted(set(meta) - allowed, key=str)
    ]
    problems += [
        FieldViolation(f"payload.case.{k}", "required")
        for k in sorted(allowed - _OPTIONAL - set(meta))
    ]
    if problems:
        raise _refused(problems)
    check = _MetadataCheck(meta)
    message = CaseMessage(
        case_id=check.uuid("case_id"),
        action=action,
        sequence=check.integer("sequence", 1, MAX_SEQUENCE),
        target_state=check.state("target_state") if "target_state" in allowed else None,
        reason_code=check.reason_code("reason_code") if "reason_code" in meta else "",
        note_id=check.uuid("note_id") if "note_id" in allowed else "",
        claim_id=check.uuid("claim_id") if "claim_id" in allowed else "",
        currency=check.currency("currency") if "currency" in allowed else "",
        amount_minor=(
            check.integer("amount_minor", 1, MAX_AMOUNT_MINOR) if "amount_minor" in allowed else 0
        ),
        description=check.description("description") if "description" in meta else "",
        has_legal_basis=check.flag("has_legal_basis") if "has_legal_basis" in allowed else False,
        consent_recorded=check.flag("consent_recorded") if "consent_recorded" in allowed else False,
    )
    if check.violations:
        raise _refused(check.violations)
    return message


class _MetadataCheck:
    def __init__(self, meta: Mapping[str, Any]) -> None:
        self._meta = meta
        self.violations: list[FieldViolation] = []

    def _refuse(self, key: str, rule: str) -> None:
        self.violations.append(FieldViolation(f"payload.case.{key}", rule))

    def uuid(self, key: str) -> str:
        value = self._meta.get(key)
        if not isinstance(value, str) or not is_case_identifier(value):
            self._refuse(key, "must be a lower-case UUID")
            return ""
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self._refuse(key, f"must be a whole number from {low} to {high}")
            return 0
        return value

    def flag(self, key: str) -> bool:
        value = self._meta.get(key)
        if not isinstance(value, bool):
            self._refuse(key, "must be true or false")
            return False
        return value

    def state(self, key: str) -> CaseStatus | None:
        value = self._meta.get(key)
        try:
            return CaseStatus(str(value))
        except ValueError:
            self._refuse(key, "must be a case state")
            return None

    def reason_code(self, key: str) -> str:
        value = self._meta.get(key)
        if not isinstance(value, str) or not REASON_CODE.fullmatch(value):
            self._refuse(key, f"must match {REASON_CODE.pattern}")
            return ""
        return value

    def currency(self, key: str) -> str:
        value = self._meta.get(key)
        if not isinstance(value, str) or not is_currency_code(value):
            self._refuse(key, "must be an active ISO 4217 currency code")
            return ""
        return value

    def description(self, key: str) -> str:
        value = self._meta.get(key)
        if not isinstance(value, str) or not is_cost_description(value):
            self._refuse(key, COST_CATEGORY_RULE)
            return ""
        return value


def is_case_identifier(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def is_cost_description(value: str) -> bool:
    """A cost claim's description is a category code: it crosses as metadata, outside the
    policy, so it must not be able to carry a name, a place or a circumstance."""
    return _COST_CATEGORY.fullmatch(value) is not None


def is_currency(value: str) -> bool:
    return _CURRENCY.fullmatch(value) is not None and is_currency_code(value)


def _name(key: object) -> str:
    return key if isinstance(key, str) and key.isascii() and key.isidentifier() else "?"


def _refused(violations: list[FieldViolation]) -> ValidationRejected:
    return ValidationRejected(violations, reason="MALFORMED_CASE_MESSAGE")
