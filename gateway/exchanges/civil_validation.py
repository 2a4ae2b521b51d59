"""Validation of civil-record update submissions, before anything is stored or sent.

:func:`validate_submission` is the first stage of a civil-record update's path: it takes
the caller's ``SubmitUpdateRequest`` as it arrived and returns a
:class:`ValidCivilSubmission`, which later stages (agreement check, policy, outbox)
accept instead of the raw request. It guarantees:

* every rule is checked and **all** broken rules are reported together, in one
  :class:`~gateway.errors.ValidationRejected`; nothing else is raised for any message
  the protobuf runtime can hold;
* each violation names the field by its path in proto field names, repeated fields with
  their index (``update.parties[1].person.date_of_birth.month``), and the rule; it never
  repeats a submitted value, since names, dates and places are personal data;
* rules fail closed: an event type or party role this module has no rules for is
  refused, and so is a field that makes no sense for the event;
* the accepted update is a copy, so the caller cannot change it after validation.

Dates follow ``CivilDate``: an event date must be complete; a date of birth may leave
the month, or the day, 0 for "unknown". A partial date is compared by its earliest
possible day, so it is refused only when it cannot be right.

:func:`validate_received_update` holds a partner's minimised update to the same rules
for what it carries (real dates, plausible years, the same string and list limits),
before the receiving gateway receipts, counts or stores it. What must be present is
the agreement's to decide there, so a missing field, role or name, and a date the
agreement generalised, are not refused.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeAlias, TypeVar

from google.protobuf.json_format import ParseError
from google.protobuf.message import Message

from gateway.envelope.payload import MALFORMED
from gateway.errors import FieldViolation, ValidationRejected
from gateway.exchanges.iso3166 import is_state_code
from gateway.policy.evaluate import LegalBasisFlags as PolicyLegalBasis
from gateway.protojson import parse_dict
from pouch.v1 import civil_pb2, common_pb2

MAX_PARTIES = 10
MAX_LIST_ITEMS = 10
MAX_NAME_CHARS = 200
MAX_LOCALITY_CHARS = 200
MAX_ACT_REFERENCE_CHARS = 64
MAX_REGISTRY_IDENTIFIER_CHARS = 128
MAX_LEGAL_BASIS_CHARS = 200
EARLIEST_YEAR = 1800

_CLIENT_REFERENCE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_AGREEMENT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
_PURPOSE = re.compile(r"[a-z0-9_-]{1,64}")
# Bidirectional overrides and isolates reorder what a clerk sees on screen.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROL_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

_ISO_CODE = "must be an assigned ISO 3166-1 alpha-2 code"

Role: TypeAlias = civil_pb2.PartyRole.ValueType
SUBJECT = civil_pb2.PARTY_ROLE_SUBJECT
MOTHER = civil_pb2.PARTY_ROLE_MOTHER
FATHER = civil_pb2.PARTY_ROLE_FATHER
SPOUSE = civil_pb2.PARTY_ROLE_SPOUSE
ADOPTIVE_PARENT = civil_pb2.PARTY_ROLE_ADOPTIVE_PARENT
DECLARANT = civil_pb2.PARTY_ROLE_DECLARANT


def _kind_of(value_name: str) -> str:
    return value_name.removeprefix("CIVIL_EVENT_TYPE_").lower()


EVENT_KINDS: Mapping[int, str] = {
    value.number: _kind_of(value.name)
    for value in civil_pb2.CivilEventType.DESCRIPTOR.values
    if value.number != civil_pb2.CIVIL_EVENT_TYPE_UNSPECIFIED
}
"""Event type number to the kind name agreements list (``birth``, ``name_change``...)."""


def _role_name(role: int) -> str:
    return civil_pb2.PartyRole.Name(role).removeprefix("PARTY_ROLE_")  # type: ignore[arg-type]


@dataclass(frozen=True)
class RoleCount:
    """How many parties with one of ``roles`` an event needs (``most`` None: no cap)."""

    roles: frozenset[Role]
    least: int
    most: int | None

    def rule(self, kind: str) -> str:
        names = " or ".join(sorted(_role_name(r) for r in self.roles))
        if self.least == self.most:
            return f"{kind} needs exactly {self.least} {names}"
        return f"{kind} needs at least {self.least} {names}"


@dataclass(frozen=True)
class PartyRules:
    """The parties an event needs, and the roles it admits at all."""

    counts: tuple[RoleCount, ...]
    allowed: frozenset[Role]


def _one(role: Role) -> RoleCount:
    return RoleCount(frozenset({role}), 1, 1)


_SOLE_SUBJECT = PartyRules((_one(SUBJECT),), frozenset({SUBJECT, DECLARANT}))
_COUPLE = PartyRules((RoleCount(frozenset({SPOUSE}), 2, 2),), frozenset({SPOUSE, DECLARANT}))

PARTY_RULES: Mapping[str, PartyRules] = {
    "birth": PartyRules(
        (_one(SUBJECT), RoleCount(frozenset({MOTHER, FATHER}), 1, None)),
        frozenset({SUBJECT, MOTHER, FATHER, DECLARANT}),
    ),
    "death": PartyRules((_one(SUBJECT),), frozenset({SUBJECT, MOTHER, FATHER, SPOUSE, DECLARANT})),
    "marriage": _COUPLE,
    "divorce": _COUPLE,
    "annulment": _COUPLE,
    "name_change": _SOLE_SUBJECT,
    "nationality_acquired": _SOLE_SUBJECT,
    "nationality_lost": _SOLE_SUBJECT,
    "paternity_recognition": PartyRules(
        (_one(SUBJECT), _one(FATHER)), frozenset({SUBJECT, MOTHER, FATHER, DECLARANT})
    ),
    "adoption": PartyRules(
        (_one(SUBJECT), RoleCount(frozenset({ADOPTIVE_PARENT}), 1, None)),
        frozenset({SUBJECT, MOTHER, FATHER, ADOPTIVE_PARENT, DECLARANT}),
    ),
}
"""Required parties per event kind (ICCS practice). A kind missing here is refused."""

# The people an event is about: they must be named.
_PRINCIPAL_ROLES = frozenset({SUBJECT, SPOUSE})
_NATIONALITY_KINDS = ("nationality_acquired", "nationality_lost")


@dataclass(frozen=True)
class LegalBasisFlags:
    """What the request says about its legal ground, without the reference text."""

    reference_present: bool
    consent_recorded: bool

    def for_policy(self) -> PolicyLegalBasis:
        """The same flags as the policy stage reads them."""
        return PolicyLegalBasis(
            has_legal_basis=self.reference_present, consent_recorded=self.consent_recorded
        )


@dataclass(frozen=True)
class ValidCivilSubmission:
    """A civil-record update submission that passed every rule of this module."""

    client_reference: str
    recipient_state: str
    agreement_id: str
    purpose: str
    update: civil_pb2.CivilRecordUpdate
    event_kind: str
    legal_basis: LegalBasisFlags


def validate_submission(
    request: civil_pb2.SubmitUpdateRequest, *, sender_state: str, today: date
) -> ValidCivilSubmission:
    """Check a submission against every rule; raise one ValidationRejected listing all.

    ``sender_state`` is the authenticated caller's state and ``today`` the gateway's
    date; both come from trusted stages, so a malformed ``sender_state`` is a bug.
    """
    if not is_state_code(sender_state):
        raise ValueError("sender_state must be an assigned ISO 3166-1 alpha-2 code")
    check = FieldChecker(today)
    check.pattern("client_reference", request.client_reference, _CLIENT_REFERENCE)
    check.country("recipient_state", request.recipient_state, required=True)
    if request.recipient_state == sender_state:
        check.refuse("recipient_state", "must differ from the sending state")
    check.pattern("agreement_id", request.agreement_id, _AGREEMENT_ID)
    check.pattern("purpose", request.purpose, _PURPOSE)
    check.text(
        "legal_basis.reference",
        request.legal_basis.reference,
        MAX_LEGAL_BASIS_CHARS,
        printable=True,
    )
    kind = None
    if request.HasField("update"):
        kind = check.update(request.update)
    else:
        check.refuse("update", "required")
    if check.violations or kind is None:
        raise ValidationRejected(check.violations)
    update = civil_pb2.CivilRecordUpdate()
    update.CopyFrom(request.update)
    return ValidCivilSubmission(
        client_reference=request.client_reference,
        recipient_state=request.recipient_state,
        agreement_id=request.agreement_id,
        purpose=request.purpose,
        update=update,
        event_kind=kind,
        legal_basis=LegalBasisFlags(
            reference_present=bool(request.legal_basis.reference.strip()),
            consent_recorded=request.legal_basis.consent_recorded,
        ),
    )


def validate_received_update(tree: Mapping[str, Any], *, today: date) -> None:
    """Refuse a partner's minimised update that breaks a rule for what it carries."""
    update = received_message(tree, civil_pb2.CivilRecordUpdate)
    check = FieldChecker(today, received=True)
    check.update(update)
    if check.violations:
        raise ValidationRejected(check.violations)


M = TypeVar("M", bound=Message)


def received_message(tree: Mapping[str, Any], message_class: type[M]) -> M:
    """A partner's payload tree as ``message_class``, or MALFORMED_PAYLOAD."""
    try:
        return parse_dict(dict(tree), message_class)
    except (ParseError, ValueError, TypeError) as e:
        name = message_class.DESCRIPTOR.full_name
        raise ValidationRejected(
            [FieldViolation("payload", f"must be a {name}")], reason=MALFORMED
        ) from e


class FieldChecker:
    """Collects violations; each method checks one part and never raises.

    ``received``: the message is a partner's, minimised under the agreement, so only
    what it carries is checked, not what it lacks.
    """

    def __init__(self, today: date, *, received: bool = False) -> None:
        self.today = today
        self.received = received
        self.violations: list[FieldViolation] = []

    def absent(self, path: str, rule: str = "required") -> None:
        """A field is missing: refused from a caller, the agreement's choice from a partner."""
        if not self.received:
            self.refuse(path, rule)

    def refuse(self, path: str, rule: str) -> None:
        self.violations.append(FieldViolation(path, rule))

    def pattern(self, path: str, value: str, pattern: re.Pattern[str]) -> None:
        if not value:
            self.refuse(path, "required")
        elif pattern.fullmatch(value) is None:
            self.refuse(path, f"must match {pattern.pattern}")

    def country(self, path: str, value: str, *, required: bool) -> None:
        if not value:
            if required:
                self.absent(path)
        elif not is_state_code(value):
            self.refuse(path, _ISO_CODE)

    def text(self, path: str, value: str, limit: int, *, printable: bool = False) -> None:
        if len(value) > limit:
            self.refuse(path, f"must be at most {limit} characters")
        if printable and not value.isprintable():
            self.refuse(path, "must contain only printable characters")
        elif not printable and _has_control_character(value):
            self.refuse(path, "must not contain control characters")

    def bounded(self, path: str, items: int, limit: int) -> bool:
        if items > limit:
            self.refuse(path, f"must have at most {limit} entries")
            return False
        return True

    def update(self, update: civil_pb2.CivilRecordUpdate) -> str | None:
        kind = self.event_type(update.event_type)
        event_date = self.civil_date(
            "update.event_date",
            update.event_date if update.HasField("event_date") else None,
            partial=self.received,
        )
        if event_date is not None and event_date > self.today:
            self.refuse("update.event_date", "must not be in the future")
        if update.HasField("event_place"):
            self.place("update.event_place", update.event_place)
        else:
            self.absent("update.event_place")
        self.text(
            "update.act_reference", update.act_reference, MAX_ACT_REFERENCE_CHARS, printable=True
        )
        self.parties(update, kind, event_date)
        if kind == "name_change":
            if update.HasField("new_name"):
                self.name("update.new_name", update.new_name, required=True)
            else:
                self.absent("update.new_name", "required for name_change")
        elif update.HasField("new_name"):
            self.refuse("update.new_name", "only allowed for name_change")
        if kind in _NATIONALITY_KINDS:
            self.country("update.nationality", update.nationality, required=True)
        elif update.nationality:
            self.refuse(
                "update.nationality", "only allowed for nationality_acquired or nationality_lost"
            )
        return kind

    def event_type(self, event_type: int) -> str | None:
        if event_type == civil_pb2.CIVIL_EVENT_TYPE_UNSPECIFIED:
            self.absent("update.event_type", "must not be UNSPECIFIED")
            return None
        kind = EVENT_KINDS.get(event_type)
        if kind is None or kind not in PARTY_RULES:
            self.refuse("update.event_type", "must be a known civil event type")
            return None
        return kind

    def civil_date(
        self, path: str, value: common_pb2.CivilDate | None, *, partial: bool
    ) -> date | None:
        """The earliest day the date can stand for, or None when it is missing or broken."""
        if value is None:
            if not partial:
                self.refuse(path, "required")
            return None
        broken = len(self.violations)
        if not EARLIEST_YEAR <= value.year <= self.today.year:
            self.refuse(f"{path}.year", f"must be from {EARLIEST_YEAR} to the current year")
        unknown = " (or 0 for unknown)" if partial else ""
        if not (partial and value.month == 0) and not 1 <= value.month <= 12:
            self.refuse(f"{path}.month", f"must be 1 to 12{unknown}")
        elif partial and value.month == 0 and value.day != 0:
            self.refuse(f"{path}.day", "must be 0 when the month is unknown")
        elif not (partial and value.day == 0):
            # A leap year stands in for a broken year, so only the year is reported.
            year = value.year if EARLIEST_YEAR <= value.year <= self.today.year else 2000
            last = calendar.monthrange(year, value.month)[1] if value.month else 31
            if not 1 <= value.day <= last:
                self.refuse(f"{path}.day", f"must be a day of the given month{unknown}")
        if len(self.violations) > broken:
            return None
        return date(value.year, value.month or 1, value.day or 1)

    def place(self, path: str, place: common_pb2.Place) -> None:
        self.country(f"{path}.country_code", place.country_code, required=True)
        self.text(f"{path}.locality", place.locality, MAX_LOCALITY_CHARS)

    def parties(
        self, update: civil_pb2.CivilRecordUpdate, kind: str | None, event_date: date | None
    ) -> None:
        if not self.bounded("update.parties", len(update.parties), MAX_PARTIES):
            return
        rules = PARTY_RULES.get(kind) if kind is not None else None
        for index, party in enumerate(update.parties):
            path = f"update.parties[{index}]"
            self.role(f"{path}.role", party.role, kind, rules)
            self.person(f"{path}.person", party, event_date)
        roles = [party.role for party in update.parties]
        if roles.count(DECLARANT) > 1:
            self.refuse("update.parties", "must have at most 1 DECLARANT")
        if rules is None or kind is None:
            return
        for count in rules.counts:
            if self.received and count.most is None:
                continue
            found = sum(1 for role in roles if role in count.roles)
            too_few = found < count.least and not self.received
            if too_few or (count.most is not None and found > count.most):
                self.refuse("update.parties", count.rule(kind))

    def role(self, path: str, role: int, kind: str | None, rules: PartyRules | None) -> None:
        if role == civil_pb2.PARTY_ROLE_UNSPECIFIED:
            self.absent(path, "must not be UNSPECIFIED")
        elif role not in civil_pb2.PartyRole.values():
            self.refuse(path, "must be a known party role")
        elif rules is not None and role not in rules.allowed:
            self.refuse(path, f"{_role_name(role)} is not a party to {kind}")

    def person(self, path: str, party: civil_pb2.Party, event_date: date | None) -> None:
        person = party.person
        self.name(f"{path}.name", person.name, required=party.role in _PRINCIPAL_ROLES)
        born = self.civil_date(
            f"{path}.date_of_birth",
            person.date_of_birth if person.HasField("date_of_birth") else None,
            partial=True,
        )
        if born is not None and born > self.today:
            self.refuse(f"{path}.date_of_birth", "must not be in the future")
        elif born is not None and event_date is not None and born > event_date:
            self.refuse(f"{path}.date_of_birth", "must not be after the event date")
        if person.HasField("place_of_birth"):
            self.place(f"{path}.place_of_birth", person.place_of_birth)
        path_n = f"{path}.nationalities"
        if self.bounded(path_n, len(person.nationalities), MAX_LIST_ITEMS):
            seen: set[str] = set()
            for index, code in enumerate(person.nationalities):
                self.country(f"{path_n}[{index}]", code, required=True)
                if code in seen:
                    self.refuse(f"{path_n}[{index}]", "must not repeat an earlier nationality")
                seen.add(code)
        self.text(
            f"{path}.registry_identifier",
            person.registry_identifier,
            MAX_REGISTRY_IDENTIFIER_CHARS,
            printable=True,
        )

    def name(self, path: str, name: common_pb2.PersonName, *, required: bool) -> None:
        if required and not name.given_names and not name.family_names:
            self.absent(path, "needs at least one given or family name")
        for field, values in (
            ("given_names", name.given_names),
            ("family_names", name.family_names),
        ):
            if self.bounded(f"{path}.{field}", len(values), MAX_LIST_ITEMS):
                for index, value in enumerate(values):
                    self.name_part(f"{path}.{field}[{index}]", value)

    def name_part(self, path: str, value: str) -> None:
        if not value.strip():
            self.refuse(path, "must not be empty or blank")
            return
        self.text(path, value, MAX_NAME_CHARS)
        if not unicodedata.is_normalized("NFC", value):
            self.refuse(path, "must be Unicode NFC")


def _has_control_character(value: str) -> bool:
    # Every category looked for (and each bidi control, a format character) is one that
    # str.isprintable() already rejects, so a printable value is settled in one C call.
    return not value.isprintable() and any(
        unicodedata.category(char) in _CONTROL_CATEGORIES or char in _BIDI_CONTROLS
        for char in value
    )
