"""The policy-section schema refuses what it cannot enforce, and says where."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.policy import CompiledPolicy, Generalize, PolicySection
from gateway.policy.compiled import LeafRule, Op

BRIEF_EXAMPLE = """
civil_record:
  "AT->BE":
    purposes: [civil-status-update, nationality-verification]
    kinds: [birth, death, marriage]
    quota_per_day: {civil-status-update: 5000}
    response_deadline_seconds: 30
    fields:
      event_type: allow
      event_date: allow
      event_place.country_code: allow
      event_place.locality: {generalize: city}
      parties[].person.name.given_names: allow
      parties[].person.date_of_birth: {generalize: year}
      parties[].person.registry_identifier: hash
      act_reference: mask
    minors:
      fields:
        event_type: allow
representation:
  "BE->AT":
    purposes: [consular-assistance]
    kinds: [medical_emergency, lost_documents]
    fields:
      person.name: allow
    special_categories:
      health: {fields: {summary: allow, "notes[].text": mask}, requires: legal_basis}
"""


def section(data: Mapping[str, Any]) -> PolicySection:
    return PolicySection.model_validate(data)


def civil(**rules: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"purposes": ["civil-status-update"], "kinds": ["birth"]}
    return {"civil_record": {"AT->BE": {**base, **rules}}}


def locs(error: ValidationError) -> list[tuple[str | int, ...]]:
    return [tuple(e["loc"]) for e in error.errors()]


def test_yaml_policy_section_from_the_design_validates() -> None:
    parsed = section(yaml.safe_load(BRIEF_EXAMPLE))
    rules = parsed.rules_for("civil_record", "AT->BE")
    assert rules is not None
    assert rules.fields["parties[].person.date_of_birth"] == Generalize(generalize="year")
    assert rules.quota_per_day == {"civil-status-update": 5000}
    assert parsed.directions() == {"AT->BE", "BE->AT"}


def test_rule_for_unknown_path_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        section(civil(fields={"parties[].person.shoe_size": "allow", "event_type": "allow"}))
    (error,) = caught.value.errors()
    assert error["loc"] == ("civil_record", "AT->BE", "fields", "parties[].person.shoe_size")
    assert error["type"] == "unknown_path"
    assert "parties[].person.shoe_size" in error["msg"]


def test_unknown_path_error_keeps_its_location_when_the_section_is_embedded() -> None:
    class Agreement(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        policy: PolicySection

    with pytest.raises(ValidationError) as caught:
        Agreement.model_validate({"policy": civil(minors={"fields": {"claim.mrz": "allow"}})})
    assert locs(caught.value) == [
        ("policy", "civil_record", "AT->BE", "minors", "fields", "claim.mrz")
    ]


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("event_date", "mask"),
        ("event_date.year", "hash"),
        ("act_reference", {"generalize": "year"}),
        ("event_date", {"generalize": "city"}),
        ("parties[].person", {"generalize": "country"}),
    ],
)
def test_action_that_does_not_fit_the_field_is_a_validation_error(path: str, action: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        section(civil(fields={path: action}))
    (error,) = caught.value.errors()
    assert error["loc"][-2:] == ("fields", path)


def test_repeated_message_may_be_named_without_brackets_but_only_once() -> None:
    base = {"purposes": ["consular-assistance"], "kinds": ["lost_documents"]}
    alias = {"notes[].attachments": "deny", "notes": "allow"}
    parsed = section({"representation": {"BE->AT": {**base, "fields": alias}}})
    assert parsed.rules_for("representation", "BE->AT") is not None
    twice = {"notes[].attachments": "deny", "notes[].attachments[]": "allow"}
    with pytest.raises(ValidationError) as caught:
        section({"representation": {"BE->AT": {**base, "fields": twice}}})
    assert locs(caught.value) == [("representation", "BE->AT", "fields", "notes[].attachments[]")]
    for wrong in ("person[].name", "person.name.given_names[]", "notes[]text", ""):
        with pytest.raises(ValidationError):
            section({"representation": {"BE->AT": {**base, "fields": {wrong: "allow"}}}})


def test_special_category_no_kind_of_the_exchange_carries_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        section(civil(special_categories={"health": {"requires": "consent"}}))
    assert locs(caught.value) == [("civil_record", "AT->BE", "special_categories", "health")]


def test_unknown_kind_duplicate_purpose_and_stray_quota_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        section(
            civil(
                purposes=["civil-status-update", "civil-status-update"],
                kinds=["birth", "coronation"],
                quota_per_day={"marketing": 10},
            )
        )
    assert sorted(locs(caught.value), key=str) == sorted(
        [
            ("civil_record", "AT->BE", "purposes", 1),
            ("civil_record", "AT->BE", "kinds", 1),
            ("civil_record", "AT->BE", "quota_per_day", "marketing"),
        ],
        key=str,
    )


@pytest.mark.parametrize(
    "data",
    [
        {"civil_record": {"AT->AT": {"purposes": ["x"], "kinds": ["birth"]}}},
        {"civil_record": {"at->be": {"purposes": ["x"], "kinds": ["birth"]}}},
        {"civil_record": {"AT->BE": {"purposes": [], "kinds": ["birth"]}}},
        {"civil_record": {"AT->BE": {"kinds": ["birth"]}}},
        {"civil_record": {"AT->BE": {"purposes": ["x"], "kinds": ["birth"], "extra": 1}}},
        {"civil_record": {"AT->BE": {"purposes": ["x"], "kinds": ["birth"], "fields": "allow"}}},
        {"consular_chat": {}},
    ],
)
def test_malformed_section_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        section(data)


def test_null_fields_in_yaml_reads_as_no_field_may_cross() -> None:
    parsed = section(
        yaml.safe_load('civil_record: {"AT->BE": {purposes: [p], kinds: [birth], fields:}}')
    )
    rules = parsed.rules_for("civil_record", "AT->BE")
    assert rules is not None and dict(rules.fields) == {}


def test_section_models_are_frozen() -> None:
    parsed = section(civil(fields={"event_type": "allow"}))
    with pytest.raises(ValidationError):
        parsed.civil_record = {}


def test_compiled_policy_does_not_follow_later_changes_to_the_model() -> None:
    parsed = section(civil(fields={"event_type": "allow"}))
    compiled = CompiledPolicy.compile(parsed, "AT->BE")
    rules = parsed.rules_for("civil_record", "AT->BE")
    assert rules is not None
    rules.fields["act_reference"] = "allow"  # type: ignore[index]
    exchange = compiled.exchange("civil_record")
    assert exchange is not None
    tree = exchange.tree("standard", None)
    assert tree is not None
    leaf = tree.children["act_reference"]
    assert isinstance(leaf, LeafRule) and leaf.op is Op.DROP


def test_compile_refuses_a_malformed_direction() -> None:
    with pytest.raises(ValueError, match="SENDER->RECIPIENT"):
        CompiledPolicy.compile(section(civil()), "AT-BE")
