"""The policy stage refuses what the agreement does not cover and strips what it forbids."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from gateway.errors import PolicyRejected, ValidationRejected
from gateway.policy import (
    MASK,
    CompiledPolicy,
    LegalBasisFlags,
    MinimisedPayload,
    PolicyFieldsRejected,
    PolicySection,
    civil_record_payload,
    evaluate,
)
from pouch.v1 import civil_pb2, common_pb2

TODAY = date(2025, 6, 1)
KEY = bytes(range(32))
NO_BASIS = LegalBasisFlags()
BASIS = LegalBasisFlags(has_legal_basis=True)

CIVIL_FIELDS: dict[str, Any] = {
    "event_type": "allow",
    "event_date": "allow",
    "event_place": {"generalize": "country"},
    "parties[].role": "allow",
    "parties[].person.name.given_names": "allow",
    "parties[].person.name.family_names": "allow",
    "parties[].person.date_of_birth": {"generalize": "year"},
    "parties[].person.registry_identifier": "hash",
    "act_reference": "mask",
}
MINOR_FIELDS: dict[str, Any] = {
    "event_type": "allow",
    "event_date": {"generalize": "month"},
    "parties[].role": "allow",
    "parties[].person.registry_identifier": "hash",
}


def compiled(data: dict[str, Any], direction: str = "AT->BE") -> CompiledPolicy:
    return CompiledPolicy.compile(PolicySection.model_validate(data), direction)


def civil_policy(**overrides: Any) -> CompiledPolicy:
    rules: dict[str, Any] = {
        "purposes": ["civil-status-update"],
        "kinds": ["birth", "marriage"],
        "fields": CIVIL_FIELDS,
        "minors": {"fields": MINOR_FIELDS},
    }
    rules.update(overrides)
    return compiled({"civil_record": {"AT->BE": rules}})


def person(given: str, family: str, born: tuple[int, int, int], ident: str) -> civil_pb2.Person:
    year, month, day = born
    return civil_pb2.Person(
        name=common_pb2.PersonName(given_names=[given], family_names=[family]),
        date_of_birth=common_pb2.CivilDate(year=year, month=month, day=day),
        place_of_birth=common_pb2.Place(country_code="AT", locality="Hallstatt-Lahn"),
        registry_identifier=ident,
    )


def marriage() -> dict[str, Any]:
    update = civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_MARRIAGE,
        event_date=common_pb2.CivilDate(year=2025, month=5, day=17),
        event_place=common_pb2.Place(country_code="BE", locality="Ixelles-Flagey"),
        parties=[
            civil_pb2.Party(
                role=civil_pb2.PARTY_ROLE_SPOUSE,
                person=person("Amelie", "Gruber-Kovac", (1988, 3, 14), "AT-REG-778812"),
            ),
            civil_pb2.Party(
                role=civil_pb2.PARTY_ROLE_SPOUSE,
                person=person("Jonas", "Peeters", (1986, 11, 2), "AT-REG-114477"),
            ),
        ],
        act_reference="W-2025-0042117",
    )
    return civil_record_payload(update)


def birth(born: tuple[int, int, int] = (2025, 3, 1)) -> dict[str, Any]:
    update = civil_pb2.CivilRecordUpdate(
        event_type=civil_pb2.CIVIL_EVENT_TYPE_BIRTH,
        event_date=common_pb2.CivilDate(year=born[0], month=born[1], day=born[2]),
        parties=[
            civil_pb2.Party(
                role=civil_pb2.PARTY_ROLE_SUBJECT,
                person=person("Lina", "Gruber-Kovac", born, "AT-REG-990001"),
            )
        ],
        act_reference="G-2025-0000311",
    )
    return civil_record_payload(update)


def run(
    policy: CompiledPolicy,
    payload: dict[str, Any],
    *,
    kind: str = "marriage",
    purpose: str | None = "civil-status-update",
    exchange_type: Any = "civil_record",
    legal_basis: LegalBasisFlags = NO_BASIS,
    strict_receiver: bool = False,
    protected_person: bool = False,
) -> MinimisedPayload:
    return evaluate(
        policy,
        exchange_type=exchange_type,
        purpose=purpose,
        kind=kind,
        payload=payload,
        legal_basis=legal_basis,
        today=TODAY,
        hash_key=KEY,
        strict_receiver=strict_receiver,
        protected_person=protected_person,
    )


def reason_of(policy: CompiledPolicy, payload: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(PolicyRejected) as caught:
        run(policy, payload, **kwargs)
    return caught.value.reason


@pytest.mark.parametrize("purpose", [None, "", "  "])
def test_request_without_declared_purpose_is_refused(purpose: str | None) -> None:
    assert reason_of(civil_policy(), marriage(), purpose=purpose) == "PURPOSE_MISSING"


def test_purpose_not_listed_is_refused() -> None:
    assert reason_of(civil_policy(), marriage(), purpose="marketing") == "PURPOSE_NOT_AGREED"


def test_kind_not_agreed_is_refused() -> None:
    payload = marriage() | {"event_type": "CIVIL_EVENT_TYPE_DIVORCE"}
    assert reason_of(civil_policy(), payload, kind="divorce") == "KIND_NOT_AGREED"
    assert reason_of(civil_policy(), payload, kind="not-a-kind") == "KIND_NOT_AGREED"


def test_declared_kind_that_contradicts_the_payload_is_a_validation_error() -> None:
    with pytest.raises(ValidationRejected) as caught:
        run(civil_policy(), marriage(), kind="birth")
    assert [v.field for v in caught.value.violations] == ["event_type"]


def test_exchange_not_agreed_in_this_direction_is_refused() -> None:
    other_way = CompiledPolicy.compile(
        PolicySection.model_validate(
            {"civil_record": {"AT->BE": {"purposes": ["p"], "kinds": ["birth"]}}}
        ),
        "BE->AT",
    )
    assert reason_of(other_way, marriage()) == "DIRECTION_NOT_AGREED"
    assert reason_of(civil_policy(), {}, exchange_type="identity_confirmation") == (
        "DIRECTION_NOT_AGREED"
    )


def test_minor_record_gets_stricter_rules() -> None:
    result = run(civil_policy(), birth(), kind="birth")
    assert result.applied_rule_set == "minors"
    (party,) = result.payload["parties"]
    assert set(party) == {"role", "person"}
    assert set(party["person"]) == {"registry_identifier"}
    assert result.payload["event_date"] == {"year": 2025, "month": 3}
    adult = run(civil_policy(), birth(born=(2007, 5, 31)), kind="birth")
    assert adult.applied_rule_set == "standard"


@pytest.mark.parametrize(
    ("born", "minor"),
    [((2007, 6, 1), False), ((2007, 6, 2), True), ((2007, 6, 0), True), ((2007, 0, 0), True)],
)
def test_age_of_majority_takes_the_latest_possible_birth_date(
    born: tuple[int, int, int], minor: bool
) -> None:
    payload = birth()
    payload["parties"][0]["person"]["date_of_birth"] = {
        k: v for k, v in zip(("year", "month", "day"), born, strict=True) if v
    }
    result = run(civil_policy(), payload, kind="birth")
    assert (result.applied_rule_set == "minors") is minor


def test_minor_without_minor_rules_is_refused() -> None:
    policy = civil_policy(minors=None)
    assert reason_of(policy, birth(), kind="birth") == "MINOR_WITHOUT_RULES"


def test_impossible_birth_date_is_a_validation_error() -> None:
    payload = birth()
    payload["parties"][0]["person"]["date_of_birth"] = {"year": 2001, "month": 2, "day": 30}
    with pytest.raises(ValidationRejected) as caught:
        run(civil_policy(), payload, kind="birth")
    assert [v.field for v in caught.value.violations] == ["parties[].person.date_of_birth"]


@pytest.mark.parametrize("fields", [{}, None, "missing"])
def test_empty_field_rules_deny_everything(fields: Any) -> None:
    rules: dict[str, Any] = {"purposes": ["civil-status-update"], "kinds": ["marriage"]}
    if fields != "missing":
        rules["fields"] = fields
    policy = compiled({"civil_record": {"AT->BE": rules}})
    result = run(policy, marriage())
    assert result.payload == {}
    assert "act_reference" in result.removed_paths
    assert "parties[].person.registry_identifier" in result.removed_paths
    assert result.transformed_paths == ()


def test_hash_links_same_value_under_same_key_only() -> None:
    policy = civil_policy()
    first = run(policy, marriage())
    again = run(policy, marriage())
    other_key = evaluate(
        policy,
        exchange_type="civil_record",
        purpose="civil-status-update",
        kind="marriage",
        payload=marriage(),
        legal_basis=NO_BASIS,
        today=TODAY,
        hash_key=bytes(32),
    )

    def tokens(result: MinimisedPayload) -> list[str]:
        return [p["person"]["registry_identifier"] for p in result.payload["parties"]]

    assert tokens(first) == tokens(again)
    assert tokens(first)[0] != tokens(first)[1]
    assert all(t.startswith("hmac-sha256:") for t in tokens(first))
    assert not set(tokens(first)) & set(tokens(other_key))


def test_generalize_date_to_year() -> None:
    result = run(civil_policy(), marriage())
    dates = [p["person"]["date_of_birth"] for p in result.payload["parties"]]
    assert dates == [{"year": 1988}, {"year": 1986}]
    assert "parties[].person.date_of_birth" in result.transformed_paths
    assert "parties[].person.date_of_birth.day" in result.removed_paths
    assert result.payload["event_place"] == {"country_code": "BE"}


def test_mask_hides_the_value_and_its_length() -> None:
    result = run(civil_policy(), marriage())
    assert result.payload["act_reference"] == MASK
    assert "act_reference" in result.transformed_paths


def test_receiver_strict_mode_refuses_field_not_agreed() -> None:
    sender = civil_policy(fields={**CIVIL_FIELDS, "parties[].person.place_of_birth": "allow"})
    sent = run(sender, marriage())
    receiver = civil_policy()
    with pytest.raises(PolicyFieldsRejected) as caught:
        run(receiver, dict(sent.payload), strict_receiver=True)
    assert caught.value.reason == "FIELD_NOT_AGREED"
    assert caught.value.paths == (
        "parties[].person.place_of_birth.country_code",
        "parties[].person.place_of_birth.locality",
    )
    lenient = run(receiver, dict(sent.payload))
    assert "place_of_birth" not in json.dumps(lenient.payload)


def test_receiver_strict_mode_refuses_a_field_that_arrives_unmasked() -> None:
    raw = run(civil_policy(fields={**CIVIL_FIELDS, "act_reference": "allow"}), marriage())
    with pytest.raises(PolicyFieldsRejected) as caught:
        run(civil_policy(), dict(raw.payload), strict_receiver=True)
    assert caught.value.reason == "FIELD_NOT_MINIMISED"
    assert caught.value.paths == ("act_reference",)


def test_receiver_re_evaluation_of_a_minimised_payload_changes_nothing() -> None:
    sent = run(civil_policy(), marriage())
    received = run(civil_policy(), dict(sent.payload), strict_receiver=True)
    assert received.payload == sent.payload
    assert received.removed_paths == ()


def test_removed_and_transformed_paths_carry_no_values() -> None:
    payload = marriage()
    payload["nickname"] = "Mimi"
    payload["Gruber Kovac"] = "1"
    result = run(civil_policy(), payload)
    reported = json.dumps([result.removed_paths, result.transformed_paths])
    for value in ("Amelie", "Gruber", "1988", "AT-REG", "W-2025", "Ixelles", "Hallstatt", "Mimi"):
        assert value not in reported
    assert all("[0]" not in p and "[1]" not in p for p in result.removed_paths)
    assert "nickname" in result.removed_paths and "?" in result.removed_paths
    assert "parties[].person.place_of_birth.locality" in result.removed_paths


def test_payload_that_does_not_fit_the_schema_is_a_validation_error() -> None:
    payload = marriage()
    payload["parties"] = {"person": {}}
    with pytest.raises(ValidationRejected) as caught:
        run(civil_policy(), payload)
    assert [v.field for v in caught.value.violations] == ["parties[]"]
    payload = marriage()
    payload["act_reference"] = 42
    with pytest.raises(ValidationRejected):
        run(civil_policy(), payload)


def test_refusal_messages_carry_no_payload_values() -> None:
    payload = marriage()
    attempts: list[dict[str, Any]] = [{"purpose": "Amelie"}, {"kind": "Amelie"}]
    for kwargs in attempts:
        with pytest.raises(PolicyRejected) as caught:
            run(civil_policy(), payload, **kwargs)
        assert "Amelie" not in caught.value.message


def test_short_linkage_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        evaluate(
            civil_policy(),
            exchange_type="civil_record",
            purpose="civil-status-update",
            kind="marriage",
            payload=marriage(),
            legal_basis=NO_BASIS,
            today=TODAY,
            hash_key=b"short",
        )
