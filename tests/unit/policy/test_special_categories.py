"""Special categories pass only when agreed and grounded; protected persons get minor rules."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from gateway.errors import PolicyRejected, ValidationRejected
from gateway.policy import (
    MASK,
    CompiledPolicy,
    LegalBasisFlags,
    MinimisedPayload,
    PolicySection,
    evaluate,
    representation_payload,
)
from pouch.v1 import common_pb2, representation_pb2

TODAY = date(2025, 6, 1)
KEY = bytes(range(32))
NO_BASIS = LegalBasisFlags()
BASIS = LegalBasisFlags(has_legal_basis=True)


def compiled(data: dict[str, Any]) -> CompiledPolicy:
    return CompiledPolicy.compile(PolicySection.model_validate(data), "AT->BE")


def run(
    policy: CompiledPolicy,
    payload: dict[str, Any],
    *,
    kind: str,
    legal_basis: LegalBasisFlags = NO_BASIS,
    protected_person: bool = False,
) -> MinimisedPayload:
    return evaluate(
        policy,
        exchange_type="representation",
        purpose="consular-assistance",
        kind=kind,
        payload=payload,
        legal_basis=legal_basis,
        today=TODAY,
        hash_key=KEY,
        protected_person=protected_person,
    )


REPRESENTATION: dict[str, Any] = {
    "representation": {
        "AT->BE": {
            "purposes": ["consular-assistance"],
            "kinds": ["medical_emergency", "detention_visit", "lost_documents"],
            "fields": {"person.name": "allow", "person.location": {"generalize": "city"}},
            "special_categories": {
                "health": {
                    "requires": "legal_basis",
                    "fields": {"summary": "allow", "notes[].text": "mask"},
                }
            },
        }
    }
}


def assistance_case() -> dict[str, Any]:
    return representation_payload(
        person=representation_pb2.AssistedPerson(
            name=common_pb2.PersonName(given_names=["Piet"], family_names=["Claes"]),
            date_of_birth=common_pb2.CivilDate(year=1971, month=8, day=9),
            location=common_pb2.Place(country_code="TH", locality="Chiang Mai Ram Hospital"),
            contact="+32 470 55 12 12",
        ),
        summary="cardiac arrest, intensive care",
        notes=[
            representation_pb2.CaseNote(
                note_id="n-1",
                text="transfer needs insurer approval",
                attachments=[representation_pb2.Attachment(file_name="ecg.pdf", content=b"%PDF")],
            )
        ],
    )


def represent(kind: str, legal_basis: LegalBasisFlags = NO_BASIS) -> MinimisedPayload:
    return run(compiled(REPRESENTATION), assistance_case(), kind=kind, legal_basis=legal_basis)


def test_special_category_without_legal_basis_is_refused() -> None:
    for flags in (NO_BASIS, LegalBasisFlags(consent_recorded=True)):
        with pytest.raises(PolicyRejected) as caught:
            represent("medical_emergency", flags)
        assert caught.value.reason == "SPECIAL_CATEGORY_WITHOUT_BASIS"


def test_special_category_not_in_agreement_is_refused() -> None:
    with pytest.raises(PolicyRejected) as caught:
        represent("detention_visit", BASIS)
    assert caught.value.reason == "SPECIAL_CATEGORY_NOT_AGREED"


def test_special_category_with_legal_basis_passes_under_its_rules() -> None:
    flags = LegalBasisFlags.from_message(common_pb2.LegalBasis(reference="GDPR art. 9(2)(c)"))
    result = represent("medical_emergency", flags)
    assert result.categories == ("health",)
    assert result.payload == {
        "person": {
            "name": {"given_names": ["Piet"], "family_names": ["Claes"]},
            "location": {"country_code": "TH", "locality": "Chiang Mai Ram Hospital"},
        },
        "summary": "cardiac arrest, intensive care",
        "notes": [{"text": MASK}],
    }
    assert "notes[].attachments[].file_name" in result.removed_paths


def test_narrative_of_an_ordinary_case_follows_the_ordinary_rules() -> None:
    result = represent("lost_documents")
    assert result.categories == ()
    assert "summary" not in result.payload and "notes" not in result.payload


def test_legal_basis_with_blank_reference_is_no_legal_basis() -> None:
    flags = LegalBasisFlags.from_message(common_pb2.LegalBasis(reference="   "))
    assert flags == NO_BASIS
    assert LegalBasisFlags.from_message(None) == NO_BASIS


def test_assisted_minor_flag_and_protected_kinds_select_the_minor_rules() -> None:
    data: dict[str, Any] = {
        "representation": {
            "AT->BE": {
                "purposes": ["consular-assistance"],
                "kinds": ["lost_documents", "victim_of_trafficking"],
                "fields": {"person": "allow"},
                "special_categories": {"victim_status": {"requires": "legal_basis_or_consent"}},
                "minors": {"fields": {"person.nationality": "allow"}},
            }
        }
    }
    policy = compiled(data)
    born = {"year": 1980, "month": 1, "day": 1}
    adult = {"person": {"nationality": "AT", "contact": "x", "date_of_birth": born}}
    assert run(policy, adult, kind="lost_documents").applied_rule_set == "standard"
    flagged = {"person": {"nationality": "AT", "contact": "x", "is_minor": True}}
    assert run(policy, flagged, kind="lost_documents").payload == {"person": {"nationality": "AT"}}
    victim = run(
        policy,
        adult,
        kind="victim_of_trafficking",
        legal_basis=LegalBasisFlags(consent_recorded=True),
    )
    assert victim.applied_rule_set == "minors"
    protected = run(policy, adult, kind="lost_documents", protected_person=True)
    assert protected.applied_rule_set == "minors"


def test_special_category_rule_tightens_but_never_loosens_a_person_field() -> None:
    data: dict[str, Any] = {
        "representation": {
            "AT->BE": {
                "purposes": ["consular-assistance"],
                "kinds": ["lost_documents", "victim_of_crime"],
                "fields": {"person.name": "allow", "person.location": "allow"},
                "special_categories": {
                    "victim_status": {
                        "requires": "legal_basis",
                        "fields": {
                            "person.location.locality": "deny",
                            "person.name.family_names": "hash",
                            "person.contact": "allow",
                        },
                    }
                },
            }
        }
    }
    policy = compiled(data)
    ordinary = run(policy, assistance_case(), kind="lost_documents")
    victim = run(policy, assistance_case(), kind="victim_of_crime", legal_basis=BASIS)
    assert ordinary.payload["person"]["location"]["locality"] == "Chiang Mai Ram Hospital"
    assert victim.payload["person"]["location"] == {"country_code": "TH"}
    assert victim.payload["person"]["name"]["family_names"][0].startswith("hmac-sha256:")
    assert "contact" not in victim.payload["person"]


def test_declared_kind_that_contradicts_the_case_is_a_validation_error() -> None:
    payload = representation_payload(kind=representation_pb2.ASSISTANCE_KIND_MEDICAL_EMERGENCY)
    with pytest.raises(ValidationRejected) as caught:
        run(compiled(REPRESENTATION), payload, kind="lost_documents")
    assert [v.field for v in caught.value.violations] == ["kind"]
