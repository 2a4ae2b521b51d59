"""Civil-record update submissions are validated completely, before anything is stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ValidationRejected
from gateway.exchanges.civil_validation import (
    EVENT_KINDS,
    PARTY_RULES,
    ValidCivilSubmission,
    validate_submission,
)
from gateway.exchanges.iso3166 import ALPHA2_CODES, is_state_code
from pouch.v1 import civil_pb2, common_pb2
from tests.unit.exchanges import (
    BUILDERS,
    SENDER,
    TODAY,
    birth,
    civil_date,
    death,
    marriage,
    name_change,
    nationality_acquired,
    party,
    person,
)

Violations = set[tuple[str, str]]


def validate(request: civil_pb2.SubmitUpdateRequest) -> ValidCivilSubmission:
    return validate_submission(request, sender_state=SENDER, today=TODAY)


def violations_of(request: civil_pb2.SubmitUpdateRequest) -> Violations:
    with pytest.raises(ValidationRejected) as caught:
        validate(request)
    return {(v.field, v.rule) for v in caught.value.violations}


def fields_of(request: civil_pb2.SubmitUpdateRequest) -> set[str]:
    return {path for path, _ in violations_of(request)}


# --- the whole submission ------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_valid_submissions_for_every_event_type_pass(kind: str) -> None:
    submission = validate(BUILDERS[kind]())
    assert submission.event_kind == kind
    assert submission.recipient_state == "BE"
    assert submission.legal_basis.reference_present
    assert not submission.legal_basis.consent_recorded


def test_every_event_type_has_a_builder_and_party_rules() -> None:
    assert set(BUILDERS) == set(EVENT_KINDS.values()) == set(PARTY_RULES)
    assert EVENT_KINDS[civil_pb2.CIVIL_EVENT_TYPE_PATERNITY_RECOGNITION] == (
        "paternity_recognition"
    )


def test_accepted_update_is_a_copy_the_caller_cannot_change() -> None:
    request = birth()
    submission = validate(request)
    request.update.parties[0].person.name.given_names[0] = "Changed"
    assert submission.update.parties[0].person.name.given_names[0] == "Lena"
    assert submission.update == birth().update


def test_missing_update_is_refused() -> None:
    request = birth()
    request.ClearField("update")
    assert violations_of(request) == {("update", "required")}


def test_all_violations_are_reported_together() -> None:
    request = birth()
    request.client_reference = ""
    request.recipient_state = "XX"
    request.purpose = "Not A Slug"
    request.update.event_date.month = 13
    request.update.parties[0].person.nationalities.append("EU")
    request.update.parties[1].role = civil_pb2.PARTY_ROLE_SPOUSE
    request.update.act_reference = "x" * 65
    assert fields_of(request) == {
        "client_reference",
        "recipient_state",
        "purpose",
        "update.event_date.month",
        "update.parties[0].person.nationalities[1]",
        "update.parties[1].role",
        "update.parties",
        "update.act_reference",
    }


def test_violation_messages_carry_no_submitted_values() -> None:
    secrets = {
        "client_reference": "Quokka Secret 7731",
        "recipient_state": "QZ",
        "agreement_id": "Zebra-Agreement",
        "purpose": "Purpose Wombat",
        "given": "Wolfgangxylo\x07",
        "family": "Bjo\u0308rnqvist",
        "locality": "Vorarlbergzz\x00",
        "act_reference": "ACT-98765\x1b",
        "registry_identifier": "REG-55501\n",
        "nationality": "ZQ",
        "legal_basis": "Art-Quux\x00",
        "year": "2987",
    }
    request = birth()
    request.client_reference = secrets["client_reference"]
    request.recipient_state = secrets["recipient_state"]
    request.agreement_id = secrets["agreement_id"]
    request.purpose = secrets["purpose"]
    request.legal_basis.reference = secrets["legal_basis"]
    request.update.event_date.year = int(secrets["year"])
    request.update.event_place.locality = secrets["locality"]
    request.update.act_reference = secrets["act_reference"]
    subject = request.update.parties[0].person
    subject.name.given_names[:] = [secrets["given"]]
    subject.name.family_names[:] = [secrets["family"]]
    subject.registry_identifier = secrets["registry_identifier"]
    subject.nationalities[:] = [secrets["nationality"]]
    with pytest.raises(ValidationRejected) as caught:
        validate(request)
    error = caught.value
    assert len(error.violations) >= len(secrets)
    texts = [str(error), error.message, *(f"{v.field} {v.rule}" for v in error.violations)]
    for secret in secrets.values():
        for fragment in {secret, secret.strip(), secret[:5]}:
            for text in texts:
                assert fragment not in text


def test_sender_state_that_is_no_state_code_is_a_bug_not_a_rejection() -> None:
    with pytest.raises(ValueError, match="sender_state"):
        validate_submission(birth(), sender_state="at", today=TODAY)


# --- envelope fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", "has space", "x" * 129, "tab\t", "trailing\n", "ümlaut", "slash/"]
)
def test_client_reference_that_is_no_idempotency_key_is_refused(value: str) -> None:
    request = birth()
    request.client_reference = value
    assert fields_of(request) == {"client_reference"}


def test_client_reference_of_128_safe_characters_passes() -> None:
    request = birth()
    request.client_reference = "Az09._:-" * 16
    assert validate(request).client_reference == request.client_reference


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("agreement_id", ""),
        ("agreement_id", "-leading-dash"),
        ("agreement_id", "Upper"),
        ("agreement_id", "a" * 129),
        ("agreement_id", "under_score"),
        ("purpose", ""),
        ("purpose", "x" * 65),
        ("purpose", "civil status"),
        ("purpose", "Civil"),
    ],
)
def test_agreement_id_and_purpose_that_are_no_slugs_are_refused(field: str, value: str) -> None:
    request = birth()
    setattr(request, field, value)
    assert fields_of(request) == {field}


def test_recipient_equal_to_the_sending_state_is_refused() -> None:
    request = birth()
    request.recipient_state = SENDER
    assert violations_of(request) == {("recipient_state", "must differ from the sending state")}


@pytest.mark.parametrize("code", ["XX", "UK", "EU", "XK", "YU", "gb", "G", "GBR", " GB", ""])
def test_unassigned_country_code_is_refused(code: str) -> None:
    request = death()
    request.recipient_state = code
    request.update.event_place.country_code = code
    subject = request.update.parties[0].person
    subject.place_of_birth.country_code = code
    subject.nationalities[:] = [code]
    assert fields_of(request) == {
        "recipient_state",
        "update.event_place.country_code",
        "update.parties[0].person.place_of_birth.country_code",
        "update.parties[0].person.nationalities[0]",
    }


def test_legal_basis_reference_is_optional_short_and_printable() -> None:
    request = birth()
    request.legal_basis.Clear()
    request.legal_basis.consent_recorded = True
    flags = validate(request).legal_basis
    assert (flags.reference_present, flags.consent_recorded) == (False, True)
    request.legal_basis.reference = "art. 9\x00" + "x" * 200
    assert fields_of(request) == {"legal_basis.reference"}


# --- event ---------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", [civil_pb2.CIVIL_EVENT_TYPE_UNSPECIFIED, 99, -1])
def test_unspecified_or_unknown_event_type_is_refused(event_type: int) -> None:
    request = death()
    request.update.event_type = event_type  # type: ignore[assignment]
    assert fields_of(request) == {"update.event_type"}


@pytest.mark.parametrize(
    ("event_date", "violation"),
    [
        ((2026, 6, 16), ("update.event_date", "must not be in the future")),
        ((2026, 12, 31), ("update.event_date", "must not be in the future")),
        ((2027, 1, 1), ("update.event_date.year", "must be from 1800 to the current year")),
    ],
    ids=["tomorrow", "end-of-this-year", "next-year"],
)
def test_future_event_date_is_refused(
    event_date: tuple[int, int, int], violation: tuple[str, str]
) -> None:
    request = death()
    request.update.event_date.CopyFrom(civil_date(*event_date))
    assert violations_of(request) == {violation}


def test_event_date_today_passes() -> None:
    request = death()
    request.update.event_date.CopyFrom(civil_date(TODAY.year, TODAY.month, TODAY.day))
    validate(request)


@pytest.mark.parametrize(
    ("event_date", "field"),
    [
        ((2023, 2, 29), "update.event_date.day"),
        ((2024, 4, 31), "update.event_date.day"),
        ((2024, 5, 0), "update.event_date.day"),
        ((2024, 0, 10), "update.event_date.month"),
        ((2024, 13, 1), "update.event_date.month"),
        ((1799, 12, 31), "update.event_date.year"),
        ((0, 1, 1), "update.event_date.year"),
    ],
)
def test_event_date_that_is_no_complete_calendar_date_is_refused(
    event_date: tuple[int, int, int], field: str
) -> None:
    request = death()
    request.update.event_date.CopyFrom(civil_date(*event_date))
    assert fields_of(request) == {field}


def test_missing_event_date_and_place_are_refused() -> None:
    request = death()
    request.update.ClearField("event_date")
    request.update.ClearField("event_place")
    assert violations_of(request) == {
        ("update.event_date", "required"),
        ("update.event_place", "required"),
    }


def test_locality_that_is_long_or_has_control_characters_is_refused() -> None:
    request = death()
    request.update.event_place.locality = "L" * 201
    request.update.parties[0].person.place_of_birth.locality = "Graz\u202e"
    assert fields_of(request) == {
        "update.event_place.locality",
        "update.parties[0].person.place_of_birth.locality",
    }


@pytest.mark.parametrize("value", ["A" * 65, "W-1\x7f", "W-1\n"])
def test_act_reference_that_is_long_or_unprintable_is_refused(value: str) -> None:
    request = death()
    request.update.act_reference = value
    assert fields_of(request) == {"update.act_reference"}


# --- persons -------------------------------------------------------------------------


def test_subject_without_any_name_is_refused() -> None:
    request = death()
    request.update.parties[0].person.name.Clear()
    assert violations_of(request) == {
        ("update.parties[0].person.name", "needs at least one given or family name")
    }


def test_spouses_without_names_are_refused_but_other_parties_may_be_unnamed() -> None:
    request = marriage()
    request.update.parties[1].person.ClearField("name")
    assert fields_of(request) == {"update.parties[1].person.name"}
    request = birth()
    request.update.parties[1].person.ClearField("name")
    validate(request)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("", "must not be empty or blank"),
        ("   ", "must not be empty or blank"),
        ("N" * 201, "must be at most 200 characters"),
        ("Ann\x00a", "must not contain control characters"),
        ("Ann\u2028a", "must not contain control characters"),
        ("Ann\u202ea", "must not contain control characters"),
        ("Jose\u0301", "must be Unicode NFC"),
    ],
)
def test_name_that_is_empty_long_uncontrolled_or_not_nfc_is_refused(value: str, rule: str) -> None:
    request = death()
    request.update.parties[0].person.name.family_names.append(value)
    assert violations_of(request) == {("update.parties[0].person.name.family_names[1]", rule)}


def test_names_in_any_script_in_nfc_pass() -> None:
    request = death()
    names = request.update.parties[0].person.name
    names.given_names[:] = ["José", "Zoë", "Μαρία", "محمد", "\u0928\u093f\u0930\u094d\u200d"]
    names.family_names[:] = ["O'Brien-Łukasiewicz", "山田"]
    validate(request)


def test_nationalities_must_be_assigned_and_unique() -> None:
    request = death()
    request.update.parties[0].person.nationalities[:] = ["AT", "BE", "AT", "UK"]
    assert violations_of(request) == {
        ("update.parties[0].person.nationalities[2]", "must not repeat an earlier nationality"),
        (
            "update.parties[0].person.nationalities[3]",
            "must be an assigned ISO 3166-1 alpha-2 code",
        ),
    }


@pytest.mark.parametrize("born", [(1990, 0, 0), (1990, 7, 0), (2026, 5, 20)])
def test_date_of_birth_may_leave_month_or_day_unknown(born: tuple[int, int, int]) -> None:
    request = death()
    request.update.parties[0].person.date_of_birth.CopyFrom(civil_date(*born))
    validate(request)


@pytest.mark.parametrize(
    ("born", "field"),
    [
        ((1990, 0, 5), "update.parties[0].person.date_of_birth.day"),
        ((1990, 2, 30), "update.parties[0].person.date_of_birth.day"),
        ((1990, 13, 0), "update.parties[0].person.date_of_birth.month"),
        ((1700, 1, 1), "update.parties[0].person.date_of_birth.year"),
        ((2026, 5, 21), "update.parties[0].person.date_of_birth"),
        ((2026, 6, 0), "update.parties[0].person.date_of_birth"),
    ],
)
def test_date_of_birth_that_is_broken_or_after_the_event_is_refused(
    born: tuple[int, int, int], field: str
) -> None:
    request = death()
    request.update.parties[0].person.date_of_birth.CopyFrom(civil_date(*born))
    assert fields_of(request) == {field}


def test_date_of_birth_in_the_future_is_refused() -> None:
    request = death()
    request.update.ClearField("event_date")
    request.update.parties[0].person.date_of_birth.CopyFrom(civil_date(2026, 7, 1))
    assert ("update.parties[0].person.date_of_birth", "must not be in the future") in (
        violations_of(request)
    )


def test_any_sex_value_passes() -> None:
    request = death()
    for sex in (common_pb2.SEX_UNSPECIFIED, common_pb2.SEX_OTHER, 42):
        request.update.parties[0].person.sex = sex  # type: ignore[assignment]
        validate(request)


# --- parties -------------------------------------------------------------------------

S = civil_pb2.PARTY_ROLE_SUBJECT
M = civil_pb2.PARTY_ROLE_MOTHER
F = civil_pb2.PARTY_ROLE_FATHER
SP = civil_pb2.PARTY_ROLE_SPOUSE
AP = civil_pb2.PARTY_ROLE_ADOPTIVE_PARENT
D = civil_pb2.PARTY_ROLE_DECLARANT


@pytest.mark.parametrize(
    ("kind", "roles", "rule"),
    [
        ("birth", [S], "birth needs at least 1 FATHER or MOTHER"),
        ("birth", [M], "birth needs exactly 1 SUBJECT"),
        ("birth", [S, S, F], "birth needs exactly 1 SUBJECT"),
        ("death", [], "death needs exactly 1 SUBJECT"),
        ("marriage", [SP], "marriage needs exactly 2 SPOUSE"),
        ("divorce", [SP, SP, SP], "divorce needs exactly 2 SPOUSE"),
        ("annulment", [SP, D], "annulment needs exactly 2 SPOUSE"),
        ("name_change", [D], "name_change needs exactly 1 SUBJECT"),
        ("nationality_acquired", [S, S], "nationality_acquired needs exactly 1 SUBJECT"),
        ("nationality_lost", [], "nationality_lost needs exactly 1 SUBJECT"),
        ("paternity_recognition", [S], "paternity_recognition needs exactly 1 FATHER"),
        ("paternity_recognition", [S, F, F], "paternity_recognition needs exactly 1 FATHER"),
        ("adoption", [S, M], "adoption needs at least 1 ADOPTIVE_PARENT"),
    ],
)
def test_event_without_its_required_parties_is_refused(
    kind: str, roles: list[civil_pb2.PartyRole.ValueType], rule: str
) -> None:
    request = BUILDERS[kind]()
    request.update.ClearField("parties")
    request.update.parties.extend(party(role) for role in roles)
    assert ("update.parties", rule) in violations_of(request)


@pytest.mark.parametrize(
    ("kind", "role"),
    [("birth", SP), ("marriage", S), ("name_change", F), ("death", AP), ("adoption", SP)],
)
def test_role_foreign_to_the_event_is_refused(
    kind: str, role: civil_pb2.PartyRole.ValueType
) -> None:
    request = BUILDERS[kind]()
    request.update.parties.append(party(role))
    index = len(request.update.parties) - 1
    assert fields_of(request) == {f"update.parties[{index}].role"}


@pytest.mark.parametrize("role", [civil_pb2.PARTY_ROLE_UNSPECIFIED, 7, -3])
def test_unspecified_or_unknown_role_is_refused(role: int) -> None:
    request = death()
    request.update.parties.append(civil_pb2.Party(role=role, person=person()))  # type: ignore[arg-type]
    assert fields_of(request) == {"update.parties[1].role"}


def test_second_declarant_is_refused() -> None:
    request = death()
    request.update.parties.extend([party(D), party(D)])
    assert violations_of(request) == {("update.parties", "must have at most 1 DECLARANT")}


def test_parties_and_name_lists_are_bounded() -> None:
    request = death()
    request.update.parties.extend(party(D) for _ in range(10))
    assert violations_of(request) == {("update.parties", "must have at most 10 entries")}
    request = death()
    person_ = request.update.parties[0].person
    person_.name.given_names[:] = ["Anna"] * 11
    person_.nationalities[:] = ["AT"] * 11
    assert fields_of(request) == {
        "update.parties[0].person.name.given_names",
        "update.parties[0].person.nationalities",
    }


def test_registry_identifier_is_short_and_printable() -> None:
    request = death()
    request.update.parties[0].person.registry_identifier = "ZMR-1\t" + "9" * 128
    assert fields_of(request) == {"update.parties[0].person.registry_identifier"}


# --- fields that belong to one event -------------------------------------------------


def test_name_change_needs_a_valid_new_name() -> None:
    request = name_change()
    request.update.ClearField("new_name")
    assert violations_of(request) == {("update.new_name", "required for name_change")}
    request.update.new_name.SetInParent()
    assert violations_of(request) == {
        ("update.new_name", "needs at least one given or family name")
    }
    request.update.new_name.family_names.append("Mu\u0308ller")
    assert violations_of(request) == {("update.new_name.family_names[0]", "must be Unicode NFC")}


def test_new_name_outside_name_change_is_refused() -> None:
    request = death()
    request.update.new_name.given_names.append("Anna")
    assert violations_of(request) == {("update.new_name", "only allowed for name_change")}


@pytest.mark.parametrize(
    ("value", "rule"), [("", "required"), ("EU", "must be an assigned ISO 3166-1 alpha-2 code")]
)
def test_nationality_event_needs_an_assigned_nationality(value: str, rule: str) -> None:
    request = nationality_acquired()
    request.update.nationality = value
    assert violations_of(request) == {("update.nationality", rule)}


def test_nationality_outside_nationality_events_is_refused() -> None:
    request = marriage()
    request.update.nationality = "BE"
    assert violations_of(request) == {
        ("update.nationality", "only allowed for nationality_acquired or nationality_lost")
    }


# --- arbitrary input -----------------------------------------------------------------

_TEXT = st.one_of(
    st.sampled_from(["", "AT", "BE", "GB", "XX", "at-be-2026", "ref-1", "Anna", "José"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=260),
)
_INT32 = st.one_of(st.integers(-2, 14), st.integers(1790, 2030), st.integers(-(2**31), 2**31 - 1))


def _message(cls: Callable[..., Any], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A message whose fields are each either left unset or drawn from their strategy."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda kwargs: cls(**kwargs))


_DATES = _message(common_pb2.CivilDate, year=_INT32, month=_INT32, day=_INT32)
_PLACES = _message(common_pb2.Place, country_code=_TEXT, locality=_TEXT)
_NAMES = _message(
    common_pb2.PersonName,
    given_names=st.lists(_TEXT, max_size=12),
    family_names=st.lists(_TEXT, max_size=12),
)
_PERSONS = _message(
    civil_pb2.Person,
    name=_NAMES,
    date_of_birth=_DATES,
    place_of_birth=_PLACES,
    sex=_INT32,
    nationalities=st.lists(_TEXT, max_size=12),
    registry_identifier=_TEXT,
)
_UPDATES = _message(
    civil_pb2.CivilRecordUpdate,
    event_type=_INT32,
    event_date=_DATES,
    event_place=_PLACES,
    parties=st.lists(_message(civil_pb2.Party, role=_INT32, person=_PERSONS), max_size=12),
    act_reference=_TEXT,
    new_name=_NAMES,
    nationality=_TEXT,
)
_REQUESTS = _message(
    civil_pb2.SubmitUpdateRequest,
    client_reference=_TEXT,
    recipient_state=_TEXT,
    agreement_id=_TEXT,
    purpose=_TEXT,
    update=_UPDATES,
    legal_basis=_message(common_pb2.LegalBasis, reference=_TEXT, consent_recorded=st.booleans()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=_REQUESTS,
    sender=st.sampled_from(sorted(ALPHA2_CODES)),
    today=st.dates(date(1800, 1, 1), date(2200, 12, 31)),
)
def test_arbitrary_requests_raise_nothing_but_validation_rejected(
    request: civil_pb2.SubmitUpdateRequest, sender: str, today: date
) -> None:
    try:
        submission = validate_submission(request, sender_state=sender, today=today)
    except ValidationRejected as error:
        assert error.violations
        assert all(v.field and v.rule for v in error.violations)
    else:
        assert submission.event_kind in PARTY_RULES


# --- the country list ----------------------------------------------------------------

_TZ_ISO3166 = Path("/usr/share/zoneinfo/iso3166.tab")


def test_country_list_holds_exactly_the_assigned_codes() -> None:
    assert len(ALPHA2_CODES) == 249
    assert all(is_state_code(code) for code in ("AT", "BE", "GB", "SS", "BQ", "AX", "CW"))
    assert not any(is_state_code(code) for code in ("UK", "EU", "XK", "AN", "CS", "gb", ""))


@pytest.mark.skipif(not _TZ_ISO3166.is_file(), reason="no tzdata iso3166.tab on this system")
def test_country_list_agrees_with_tzdata() -> None:
    lines = _TZ_ISO3166.read_text(encoding="utf-8").splitlines()
    tzdata = {line.split("\t")[0] for line in lines if line and not line.startswith("#")}
    assert tzdata == ALPHA2_CODES
