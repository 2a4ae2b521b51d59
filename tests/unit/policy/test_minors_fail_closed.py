"""A person who cannot be shown to be an adult is minimised under the rules for minors.

Each test first shows the same record, with the person's date of birth known to be an
adult's, crossing under the ordinary rules, then the record without it (or with too
little of it) crossing under the stricter ones. The policies mirror the demo
agreement: the ordinary rules let the event's locality cross and mask the act
reference; the rules for minors drop both.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from gateway.errors import ValidationRejected
from gateway.policy import (
    CompiledPolicy,
    LegalBasisFlags,
    MinimisedPayload,
    PolicySection,
    evaluate,
)

TODAY = date(2026, 6, 1)
KEY = bytes(range(32))
ADULT = {"year": 1970, "month": 4, "day": 2}

CIVIL_FIELDS: dict[str, Any] = {
    "event_type": "allow",
    "event_date": "allow",
    "event_place.country_code": "allow",
    "event_place.locality": "allow",
    "act_reference": "mask",
    "parties[].role": "allow",
    "parties[].person.name": "allow",
    "parties[].person.date_of_birth": "allow",
}
CIVIL_MINOR_FIELDS: dict[str, Any] = {
    "event_type": "allow",
    "event_date": "allow",
    "event_place.country_code": "allow",
    "parties[].role": "allow",
    "parties[].person.name": "allow",
    "parties[].person.date_of_birth": "allow",
}


def _policy(exchange_type: str, rules: dict[str, Any]) -> CompiledPolicy:
    section = PolicySection.model_validate({exchange_type: {"AT->BE": rules}})
    return CompiledPolicy.compile(section, "AT->BE")


def civil_policy(*, minors: bool = True) -> CompiledPolicy:
    rules: dict[str, Any] = {
        "purposes": ["registry_update"],
        "kinds": ["birth", "death", "marriage"],
        "fields": CIVIL_FIELDS,
    }
    if minors:
        rules["minors"] = {"fields": CIVIL_MINOR_FIELDS}
    return _policy("civil_record", rules)


def party(role: str | None, born: dict[str, int] | None, given: str = "Lena") -> dict[str, Any]:
    person: dict[str, Any] = {"name": {"given_names": [given]}}
    if born is not None:
        person["date_of_birth"] = born
    tree: dict[str, Any] = {"person": person}
    if role is not None:
        tree["role"] = f"PARTY_ROLE_{role}"
    return tree


def record(event: str, *parties: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": f"CIVIL_EVENT_TYPE_{event.upper()}",
        "event_date": {"year": 2026, "month": 5, "day": 30},
        "event_place": {"country_code": "AT", "locality": "Eggenberg-Quarter"},
        "act_reference": "ACT-2026-7731",
        "parties": list(parties),
    }


def civil(payload: dict[str, Any], kind: str, policy: CompiledPolicy | None = None) -> Any:
    return evaluate(
        policy or civil_policy(),
        exchange_type="civil_record",
        purpose="registry_update",
        kind=kind,
        payload=payload,
        legal_basis=LegalBasisFlags(),
        today=TODAY,
        hash_key=KEY,
    )


def assert_ordinary(result: MinimisedPayload) -> None:
    assert result.applied_rule_set == "standard"
    assert result.payload["event_place"]["locality"] == "Eggenberg-Quarter"
    assert result.payload["act_reference"] == "***"


def assert_strict(result: MinimisedPayload) -> None:
    assert result.applied_rule_set == "minors"
    assert "locality" not in result.payload["event_place"]
    assert "act_reference" not in result.payload


def test_birth_record_without_the_childs_date_of_birth_is_not_minimised_as_an_adults() -> None:
    # A birth record's child is its SUBJECT; the mother's date of birth says nothing.
    assert_ordinary(
        civil(record("birth", party("SUBJECT", ADULT), party("MOTHER", ADULT)), "birth")
    )
    assert_strict(civil(record("birth", party("SUBJECT", None), party("MOTHER", ADULT)), "birth"))


def test_receiver_reads_a_birth_without_the_childs_date_of_birth_as_a_minors() -> None:
    sent = civil(record("birth", party("SUBJECT", None), party("MOTHER", ADULT)), "birth")
    received = evaluate(
        civil_policy(),
        exchange_type="civil_record",
        purpose="registry_update",
        kind="birth",
        payload=sent.payload,
        legal_basis=LegalBasisFlags(),
        today=TODAY,
        hash_key=KEY,
        strict_receiver=True,
    )
    assert received.applied_rule_set == "minors"
    assert received.payload == sent.payload


def test_death_of_a_person_of_unknown_age_crosses_under_the_rules_for_minors() -> None:
    assert_ordinary(civil(record("death", party("SUBJECT", ADULT)), "death"))
    assert_strict(civil(record("death", party("SUBJECT", None)), "death"))


def test_marriage_with_one_spouse_of_unknown_age_crosses_under_the_rules_for_minors() -> None:
    spouse = party("SPOUSE", ADULT, given="Jan")
    assert_ordinary(civil(record("marriage", spouse, party("SPOUSE", ADULT)), "marriage"))
    assert_strict(civil(record("marriage", spouse, party("SPOUSE", None)), "marriage"))


def test_a_party_whose_role_did_not_cross_counts_as_a_person_concerned() -> None:
    assert_ordinary(civil(record("death", party(None, ADULT)), "death"))
    assert_strict(civil(record("death", party(None, None)), "death"))


def test_a_receiver_without_the_role_leaves_the_decision_to_the_sender_who_saw_it() -> None:
    # The ordinary rules keep the role back: the receiver cannot tell a declarant of
    # unknown age (ordinary rules, the sender's reading) from a subject of unknown age.
    fields = {k: v for k, v in CIVIL_FIELDS.items() if k != "parties[].role"}
    minor_fields = {k: v for k, v in CIVIL_MINOR_FIELDS.items() if k != "parties[].role"}
    rules: dict[str, Any] = {
        "purposes": ["registry_update"],
        "kinds": ["death"],
        "fields": fields,
        "minors": {"fields": minor_fields},
    }
    policy = _policy("civil_record", rules)
    sent = civil(
        record("death", party("SUBJECT", ADULT), party("DECLARANT", None)), "death", policy
    )
    assert_ordinary(sent)
    assert all("role" not in p for p in sent.payload["parties"])
    received = evaluate(
        policy,
        exchange_type="civil_record",
        purpose="registry_update",
        kind="death",
        payload=sent.payload,
        legal_basis=LegalBasisFlags(),
        today=TODAY,
        hash_key=KEY,
        strict_receiver=True,
    )
    assert received.applied_rule_set == "standard"
    assert received.payload == sent.payload


def test_parents_and_declarants_of_unknown_age_do_not_make_the_record_a_minors() -> None:
    declared = record("death", party("SUBJECT", ADULT), party("DECLARANT", None))
    assert_ordinary(civil(declared, "death"))


def test_date_of_birth_with_only_a_possible_minors_year_crosses_under_the_rules_for_minors() -> (
    None
):
    # Born some time in the year 18 years back: still under 18 until the year's end.
    assert_ordinary(civil(record("death", party("SUBJECT", {"year": TODAY.year - 19})), "death"))
    assert_strict(civil(record("death", party("SUBJECT", {"year": TODAY.year - 18})), "death"))


def test_without_rules_for_minors_an_unknown_age_keeps_the_ordinary_rules() -> None:
    # The agreement draws no line by age; a known minor is still refused without rules.
    result = civil(record("death", party("SUBJECT", None)), "death", civil_policy(minors=False))
    assert_ordinary(result)


def test_identity_claim_without_a_date_of_birth_crosses_under_the_rules_for_minors() -> None:
    policy = _policy(
        "identity_confirmation",
        {
            "purposes": ["consular_assistance"],
            "kinds": ["passport"],
            "fields": {
                "claim.document_type": "allow",
                "claim.sex": "allow",
                "claim.date_of_birth": "allow",
            },
            "minors": {"fields": {"claim.document_type": "allow", "claim.date_of_birth": "allow"}},
        },
    )

    def claim(**extra: Any) -> MinimisedPayload:
        tree = {"claim": {"document_type": "DOCUMENT_TYPE_PASSPORT", "sex": "SEX_FEMALE", **extra}}
        return evaluate(
            policy,
            exchange_type="identity_confirmation",
            purpose="consular_assistance",
            kind="passport",
            payload=tree,
            legal_basis=LegalBasisFlags(),
            today=TODAY,
            hash_key=KEY,
        )

    assert claim(date_of_birth=ADULT).payload["claim"]["sex"] == "SEX_FEMALE"
    unknown = claim()
    assert unknown.applied_rule_set == "minors"
    assert "sex" not in unknown.payload["claim"]


def test_assisted_person_without_a_date_of_birth_crosses_under_the_rules_for_minors() -> None:
    policy = _policy(
        "representation",
        {
            "purposes": ["consular_assistance"],
            "kinds": ["lost_documents"],
            "fields": {"kind": "allow", "person": "allow"},
            "minors": {"fields": {"kind": "allow", "person.date_of_birth": "allow"}},
        },
    )

    def case(person: dict[str, Any]) -> MinimisedPayload:
        return evaluate(
            policy,
            exchange_type="representation",
            purpose="consular_assistance",
            kind="lost_documents",
            payload={"kind": "ASSISTANCE_KIND_LOST_DOCUMENTS", "person": person},
            legal_basis=LegalBasisFlags(),
            today=TODAY,
            hash_key=KEY,
        )

    assert case({"contact": "+66", "date_of_birth": ADULT}).payload["person"]["contact"] == "+66"
    unknown = case({"contact": "+66"})
    assert unknown.applied_rule_set == "minors"
    assert "contact" not in unknown.payload.get("person", {})


@pytest.mark.parametrize("year", [2**31, -(2**31) - 1, 10**15])
def test_year_beyond_the_schemas_integer_range_is_refused(year: int) -> None:
    civil(record("death", party("SUBJECT", ADULT)), "death")
    payload = record("death", party("SUBJECT", ADULT))
    payload["event_date"]["year"] = year
    with pytest.raises(ValidationRejected) as refused:
        civil(payload, "death")
    assert [v.field for v in refused.value.violations] == ["event_date.year"]


@pytest.mark.parametrize(
    "date_rules",
    [
        {"parties[].person.date_of_birth.month": "allow"},
        {"parties[].person.date_of_birth.day": "allow", "parties[].person.date_of_birth": "deny"},
        {
            "parties[].person.date_of_birth": "allow",
            "parties[].person.date_of_birth.year": "deny",
        },
        {
            "parties[].person.date_of_birth": "deny",
            "parties[].person.date_of_birth.month": {"generalize": "month"},
        },
    ],
)
def test_agreement_letting_a_birth_month_or_day_cross_without_its_year_is_refused(
    date_rules: dict[str, Any],
) -> None:
    fields = {k: v for k, v in CIVIL_FIELDS.items() if k != "parties[].person.date_of_birth"}
    rules: dict[str, Any] = {
        "purposes": ["registry_update"],
        "kinds": ["birth"],
        "fields": {**fields, "parties[].person.date_of_birth": {"generalize": "year"}},
        "minors": {"fields": CIVIL_MINOR_FIELDS},
    }
    assert _policy("civil_record", rules)  # the year alone may cross
    rules["fields"] = {**fields, **date_rules}
    with pytest.raises(ValueError, match="only with its year"):
        _policy("civil_record", rules)
