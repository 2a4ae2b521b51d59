"""The demo's agreement between two states, written, signed by both and keyed.

The text follows the shape of ``policies/``: civil-status notifications in both
directions, with a stricter rule set for records of minors. Both parties sign the
canonical form with their signing keys, and both gateways receive the same
hashing key (the out-of-band exchange of a real deployment).
"""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from pathlib import Path

from gateway.agreements.loader import sign_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.directory import StateDirectory

CIVIL_PURPOSE = "civil_status_update"

_FIELDS = """\
        event_type: allow
        event_date: allow
        event_place.country_code: allow
        event_place.locality: allow
        act_reference: mask
        parties[].role: allow
        parties[].person.name.given_names: allow
        parties[].person.name.family_names: allow
        parties[].person.date_of_birth: allow
        parties[].person.place_of_birth: {generalize: city}
        parties[].person.sex: allow
        parties[].person.nationalities: allow
        parties[].person.registry_identifier: hash
        new_name.given_names: allow
        new_name.family_names: allow
        nationality: allow"""

# For a child: the place of birth only to country level, parents' identifiers hashed.
_MINOR_FIELDS = """\
          event_type: allow
          event_date: allow
          event_place.country_code: allow
          parties[].role: allow
          parties[].person.name.given_names: allow
          parties[].person.name.family_names: allow
          parties[].person.date_of_birth: allow
          parties[].person.place_of_birth: {generalize: country}
          parties[].person.sex: allow
          parties[].person.nationalities: allow
          parties[].person.registry_identifier: hash"""


def _direction(sender: str, recipient: str, daily_quota: int) -> str:
    return f"""\
    "{sender}->{recipient}":
      purposes: [{CIVIL_PURPOSE}]
      kinds: [birth, death, marriage, divorce, name_change, nationality_acquired]
      quota_per_day: {{{CIVIL_PURPOSE}: {daily_quota}}}
      response_deadline_seconds: 604800
      fields:
{_FIELDS}
      minors:
        fields:
{_MINOR_FIELDS}
"""


def civil_agreement_text(
    agreement_id: str,
    first: StateDirectory,
    second: StateDirectory,
    *,
    today: date,
    daily_quota: int = 100_000,
) -> str:
    a, b = first.state, second.state
    return f"""\
id: {agreement_id}
version: 1
title: {a}–{b} exchange of civil-status records (demonstration)
parties: [{a}, {b}]
valid_from: {today - timedelta(days=1)}
valid_until: {today + timedelta(days=365)}
status: active
bundles:
  {a}: "{load_trust_bundle(first.bundle).digest}"
  {b}: "{load_trust_bundle(second.bundle).digest}"
retention_days: 90
onward_transfer: forbidden
exchanges:
  civil_record:
{_direction(a, b, daily_quota)}{_direction(b, a, daily_quota)}"""


def write_signed_agreement(
    agreement_id: str,
    first: StateDirectory,
    second: StateDirectory,
    destinations: list[Path],
    *,
    today: date,
    daily_quota: int = 100_000,
) -> None:
    """Write, sign by both parties, and copy to each gateway's agreements directory."""
    text = civil_agreement_text(agreement_id, first, second, today=today, daily_quota=daily_quota)
    staging = destinations[0] / f"{agreement_id}.yaml"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_text(text, encoding="utf-8")
    for party in (first, second):
        sign_agreement(
            staging,
            key_path=party.signing_key,
            cert_path=party.signing_cert,
            exchanges_validator=EXCHANGES_VALIDATOR,
        )
    signed = staging.read_bytes()
    for destination in destinations[1:]:
        destination.mkdir(parents=True, exist_ok=True)
        (destination / f"{agreement_id}.yaml").write_bytes(signed)


def write_hash_key(agreement_id: str, directories: list[Path]) -> None:
    """One random key, given to both gateways (in reality: exchanged out of band)."""
    key = secrets.token_hex(32)
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{agreement_id}.key"
        path.write_text(key + "\n", encoding="ascii")
        path.chmod(0o600)
