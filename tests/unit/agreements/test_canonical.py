"""The canonical form: what both parties sign depends on values, never on YAML layout."""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785

from gateway.agreements import EXCHANGES_VALIDATOR, AgreementFile, parse_agreement_text
from gateway.agreements.canonical import CanonicalFormError, canonical_bytes
from gateway.policy.rules import PolicySection

_AT = "sha256:" + "1" * 64
_BE = "sha256:" + "2" * 64

_BLOCK = f"""\
# Austria – Belgium
id: at-be
version: 1
title: "Austria–Belgium"
parties: [AT, BE]
valid_from: 2026-01-01
valid_until: 2027-12-31
status: active
bundles:
  AT: "{_AT}"
  BE: "{_BE}"
retention_days: 30
onward_transfer: forbidden
exchanges:
  civil_record:
    "AT->BE":
      purposes: [registry_update]
      kinds: [birth]
      quota_per_day: {{registry_update: 10}}
      fields:
        event_date: {{generalize: year}}
        parties[].person.registry_identifier: hash
"""

# Same values: other key order, flow style, other quoting, quoted dates, comments,
# CRLF line ends and trailing spaces.
_REORDERED = (
    f"""\
exchanges: {{civil_record: {{'AT->BE': {{fields: {{'parties[].person.registry_identifier': "hash",
  event_date: {{generalize: "year"}}}}, quota_per_day: {{registry_update: 10}},
  purposes: ['registry_update'], kinds: [birth]}}}}}}
onward_transfer: "forbidden"     # no onward transfer
retention_days: 30
bundles: {{BE: '{_BE}', AT: {_AT}}}
status: 'active'
valid_until: "2027-12-31"
valid_from: 2026-01-01
parties:
  - AT
  - BE
title: Austria–Belgium
version: 1
id: "at-be"
"""
).replace("\n", "  \r\n")


def _parse(text: str) -> AgreementFile[PolicySection]:
    return parse_agreement_text(text, file="x.yaml", exchanges_validator=EXCHANGES_VALIDATOR)


def test_canonical_form_ignores_yaml_layout_and_key_order() -> None:
    block, reordered = _parse(_BLOCK), _parse(_REORDERED)
    assert block.canonical == reordered.canonical
    assert block.digest == reordered.digest


def test_canonical_form_is_rfc8785_json_without_signatures() -> None:
    loaded = _parse(_BLOCK)
    document = json.loads(loaded.canonical)
    assert "signatures" not in document
    assert document["valid_from"] == "2026-01-01"
    assert loaded.canonical == rfc8785.dumps(document)
    assert loaded.digest == "sha256:" + hashlib.sha256(loaded.canonical).hexdigest()


def test_signatures_do_not_change_the_digest() -> None:
    signed = _BLOCK + "signatures:\n  - {state: AT, alg: ES256, signature: AAAA}\n"
    assert _parse(signed).digest == _parse(_BLOCK).digest


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("retention_days: 30", "retention_days: 31"),
        ("version: 1", "version: 2"),
        ("event_date: {generalize: year}", "event_date: {generalize: month}"),
        ("registry_identifier: hash", "registry_identifier: allow"),
        ("status: active", "status: suspended"),
    ],
)
def test_any_value_change_changes_the_digest(before: str, after: str) -> None:
    assert before in _BLOCK
    assert _parse(_BLOCK.replace(before, after)).digest != _parse(_BLOCK).digest


def test_values_without_a_json_form_are_refused() -> None:
    with pytest.raises(CanonicalFormError):
        canonical_bytes({"x": {1, 2}})
    with pytest.raises(CanonicalFormError):
        canonical_bytes({"x": float("nan")})
