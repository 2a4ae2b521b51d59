"""Agreement files: strict schema, errors that name the file, the line and the rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.agreements import (
    EXCHANGES_VALIDATOR,
    AgreementFileError,
    DeclaredStatus,
    OnwardTransfer,
    load_agreement,
    parse_agreement_text,
)
from tests.unit.agreements import POLICIES, agreement_text, policy_like_exchanges, vector

_DIGEST = "sha256:" + "ab" * 32
_BUNDLES = {"AT": _DIGEST, "BE": _DIGEST.replace("ab", "cd")}


def _errors(text: str, file: str = "policies/x.yaml") -> list[str]:
    with pytest.raises(AgreementFileError) as caught:
        parse_agreement_text(text, file=file, exchanges_validator=policy_like_exchanges)
    return [str(issue) for issue in caught.value.issues]


def test_malformed_agreement_error_names_file_line_and_rule() -> None:
    path = vector("missing-purposes.yaml")
    with pytest.raises(AgreementFileError) as caught:
        load_agreement(path, exchanges_validator=policy_like_exchanges)
    assert (
        str(caught.value) == f'{path}:14: exchanges.civil_record."AT->BE".purposes: field required'
    )
    (issue,) = caught.value.issues
    assert (issue.file, issue.line, issue.path, issue.rule) == (
        str(path),
        14,
        'exchanges.civil_record."AT->BE".purposes',
        "field required",
    )


def test_unknown_key_is_an_error_with_its_line() -> None:
    path = vector("unknown-key.yaml")
    with pytest.raises(AgreementFileError) as caught:
        load_agreement(path, exchanges_validator=policy_like_exchanges)
    assert str(caught.value).splitlines() == [
        f"{path}:2: retention_days: field required",
        f"{path}:12: retension_days: unknown key",
        f'{path}:21: exchanges.identity_confirmation."AT->BE".notes: unknown key',
    ]


def test_duplicate_key_is_an_error() -> None:
    path = vector("duplicate-key.yaml")
    with pytest.raises(AgreementFileError) as caught:
        load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
    assert str(caught.value) == f"{path}:14: status: duplicate key (first at line 8)"


def test_duplicate_key_deep_in_exchanges_is_an_error() -> None:
    text = agreement_text(bundles=_BUNDLES).replace(
        "        claim.name.family_names: allow\n",
        "        claim.name.family_names: allow\n        claim.document_number: allow\n",
    )
    assert _errors(text) == [
        'policies/x.yaml:24: exchanges.identity_confirmation."AT->BE".fields'
        '."claim.document_number": duplicate key (first at line 22)'
    ]


def test_yaml_aliases_are_refused() -> None:
    text = agreement_text(bundles=_BUNDLES) + "x: &big [1, 2]\ny: *big\n"
    assert _errors(text) == [
        "policies/x.yaml:25: (top level): invalid YAML: aliases are not allowed"
    ]


def test_norway_problem_is_caught_with_a_hint() -> None:
    text = agreement_text(bundles=_BUNDLES).replace("parties: [AT, BE]", "parties: [NO, BE]")
    errors = _errors(text)
    assert (
        "policies/x.yaml:5: parties[0]: must be a string "
        "(quote it: YAML reads yes, no, on, off as booleans)"
    ) in errors


def test_top_level_rules_each_name_their_line() -> None:
    text = (
        agreement_text(bundles=_BUNDLES)
        .replace("id: at-be-test", "id: AT_BE")
        .replace("version: 2", 'version: "2"')
        .replace("valid_until: 2027-12-31", "valid_until: 2025-12-31")
        .replace("status: active", "status: dormant")
        .replace("retention_days: 30", "retention_days: 4000")
        .replace("onward_transfer: forbidden", "onward_transfer: allowed")
    )
    assert _errors(text) == [
        "policies/x.yaml:2: id: must be a slug: lowercase ASCII letters and digits "
        "in hyphen-separated words, at most 64 characters",
        "policies/x.yaml:3: version: must be a valid integer",
        "policies/x.yaml:7: valid_until: must be after valid_from (2026-01-01)",
        "policies/x.yaml:8: status: must be 'active', 'suspended' or 'terminated'",
        "policies/x.yaml:12: retention_days: must be less than or equal to 3650",
        "policies/x.yaml:13: onward_transfer: must be 'forbidden' or 'allowed_with_consent'",
    ]


def test_parties_must_be_two_distinct_states_with_one_pinned_bundle_each() -> None:
    same = agreement_text(bundles=_BUNDLES).replace("parties: [AT, BE]", "parties: [AT, AT]")
    assert "policies/x.yaml:5: parties: the two parties must be different states" in _errors(same)
    three = agreement_text(bundles=_BUNDLES).replace("parties: [AT, BE]", "parties: [AT, BE, FR]")
    assert "policies/x.yaml:5: parties: must list exactly two states, e.g. [AT, BE]" in _errors(
        three
    )
    wrong_pin = agreement_text(bundles=_BUNDLES).replace('  BE: "', '  FR: "')
    assert _errors(wrong_pin) == [
        "policies/x.yaml:9: bundles: must pin exactly the parties' bundles (AT, BE), got AT, FR"
    ]


def test_signature_entries_are_strict() -> None:
    malformed = agreement_text(bundles=_BUNDLES) + (
        "signatures:\n  - state: AT\n    alg: RS256\n    signature: abc=\n    note: x\n"
    )
    assert _errors(malformed) == [
        "policies/x.yaml:26: signatures[0].alg: must be 'ES256'",
        "policies/x.yaml:27: signatures[0].signature: must be unpadded base64url",
        "policies/x.yaml:28: signatures[0].note: unknown key",
    ]
    twice = agreement_text(bundles=_BUNDLES) + (
        "signatures:\n  - {state: AT, alg: ES256, signature: abc}\n"
        "  - {state: AT, alg: ES256, signature: abd}\n"
    )
    assert _errors(twice) == ["policies/x.yaml:24: signatures: more than one signature by AT"]


def test_date_times_and_tags_are_not_plain_agreement_data() -> None:
    with_time = agreement_text(bundles=_BUNDLES).replace(
        "valid_until: 2027-12-31", "valid_until: 2027-12-31T00:00:00Z"
    )
    assert _errors(with_time) == [
        "policies/x.yaml:7: valid_until: date-times are not allowed, only dates (YYYY-MM-DD)"
    ]
    tagged = agreement_text(bundles=_BUNDLES).replace("title: Test", "title: !!binary Test")
    assert _errors(tagged) == ["policies/x.yaml:4: title: YAML tags are not allowed"]


def test_empty_and_non_mapping_files_are_errors() -> None:
    assert _errors("# nothing\n") == ["policies/x.yaml:1: (top level): file is empty"]
    assert _errors("- a\n- b\n") == [
        "policies/x.yaml:1: (top level): an agreement must be a mapping"
    ]
    assert _errors("id: [unclosed\n")[0].startswith("policies/x.yaml:2: (top level): invalid YAML")


def test_unsigned_agreement_is_valid_schema() -> None:
    loaded = parse_agreement_text(
        agreement_text(bundles=_BUNDLES), file="x.yaml", exchanges_validator=policy_like_exchanges
    )
    assert loaded.agreement.signatures == ()
    assert loaded.agreement.partner_of("AT") == "BE"
    assert loaded.exchanges["identity_confirmation"]["AT->BE"].purposes == [
        "emergency_travel_document"
    ]


@pytest.mark.parametrize("validator", [EXCHANGES_VALIDATOR, policy_like_exchanges])
def test_example_policies_all_validate(validator: Callable[[Any], Any]) -> None:
    examples = sorted(POLICIES.glob("*.yaml"))
    assert len(examples) >= 3
    pairs = set()
    for path in examples:
        loaded = load_agreement(path, exchanges_validator=validator)
        agreement = loaded.agreement
        assert agreement.status is DeclaredStatus.ACTIVE
        assert agreement.onward_transfer in set(OnwardTransfer)
        assert agreement.signatures == (), f"{path} must be committed unsigned"
        pairs.add(frozenset(agreement.parties))
    assert len(pairs) == len(examples), "examples should cover different pairs of states"


def test_example_policies_differ_in_retention() -> None:
    retention = {
        load_agreement(p, exchanges_validator=EXCHANGES_VALIDATOR).agreement.retention_days
        for p in POLICIES.glob("*.yaml")
    }
    assert len(retention) >= 3


def test_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: Türkiye\n".encode("latin-1"))
    with pytest.raises(AgreementFileError) as caught:
        load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
    assert str(caught.value) == f"{path}:1: (top level): file is not UTF-8 text"
