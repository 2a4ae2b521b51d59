"""The demo's agreement between two states, written, signed by both and keyed.

The text follows the shape of ``policies/``, in both directions: civil-status
notifications, with a stricter rule set for records of minors; identity
confirmations, with the document number compared as a keyed hash; and
representation cases, where a victim's whereabouts and contact never cross in
clear. Both parties sign the canonical form with their signing keys, and both
gateways receive the same hashing key (the out-of-band exchange of a real
deployment).
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
IDENTITY_PURPOSES = ("emergency_travel_document", "consular_assistance")
REPRESENTATION_PURPOSE = "consular_assistance"

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


_IDENTITY_FIELDS = """\
        claim.document_type: allow
        claim.document_number: hash
        claim.name.given_names: allow
        claim.name.family_names: allow
        claim.date_of_birth: allow
        claim.sex: allow
        claim.nationality: allow
        claim.mrz: deny"""

_IDENTITY_MINOR_FIELDS = """\
          claim.document_type: allow
          claim.document_number: hash
          claim.name.given_names: allow
          claim.name.family_names: allow
          claim.date_of_birth: {generalize: year}
          claim.nationality: allow"""


def _identity_direction(sender: str, recipient: str, daily_quota: int) -> str:
    purposes = ", ".join(IDENTITY_PURPOSES)
    quotas = ", ".join(f"{p}: {daily_quota}" for p in IDENTITY_PURPOSES)
    return f"""\
    "{sender}->{recipient}":
      purposes: [{purposes}]
      kinds: [passport, identity_card, emergency_travel_document]
      quota_per_day: {{{quotas}}}
      response_deadline_seconds: 10
      fields:
{_IDENTITY_FIELDS}
      minors:
        fields:
{_IDENTITY_MINOR_FIELDS}
"""


_CASE_FIELDS = """\
        kind: allow
        mission_country: allow
        person.name.given_names: allow
        person.name.family_names: allow
        person.date_of_birth: allow
        person.nationality: allow
        person.location.country_code: allow
        person.location.locality: allow
        person.contact: allow
        person.is_minor: allow
        summary: allow
        notes[].text: allow
        notes[].attachments: allow"""

_CASE_MINOR_FIELDS = """\
          kind: allow
          mission_country: allow
          person.name.given_names: allow
          person.name.family_names: allow
          person.date_of_birth: allow
          person.nationality: allow
          person.location.country_code: allow
          person.location.locality: {generalize: city}
          person.contact: deny
          person.is_minor: allow
          summary: allow
          notes[].text: allow
          notes[].attachments: deny"""

_CASE_KINDS = (
    "emergency_travel_document, detention_visit, death_and_repatriation, medical_emergency, "
    "evacuation, lost_documents, emergency_funds, victim_of_crime, victim_of_trafficking, "
    "family_liaison"
)


def _representation_direction(sender: str, recipient: str, daily_quota: int) -> str:
    # Special categories: health and criminal data on a recorded legal basis; a victim's
    # whereabouts stay at city level and their contact is masked, on recorded consent.
    return f"""\
    "{sender}->{recipient}":
      purposes: [{REPRESENTATION_PURPOSE}]
      kinds: [{_CASE_KINDS}]
      quota_per_day: {{{REPRESENTATION_PURPOSE}: {daily_quota}}}
      response_deadline_seconds: 172800
      fields:
{_CASE_FIELDS}
      special_categories:
        health:
          requires: legal_basis
          fields:
            summary: allow
            notes[].text: allow
            notes[].attachments: deny
        criminal_data:
          requires: legal_basis
          fields:
            summary: allow
            notes[].text: allow
            notes[].attachments: deny
        victim_status:
          requires: consent
          fields:
            summary: allow
            notes[].text: allow
            notes[].attachments: deny
            person.location.locality: {{generalize: city}}
            person.contact: mask
      minors:
        fields:
{_CASE_MINOR_FIELDS}
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
title: {a}–{b} civil-status records, identity confirmations, consular representation (demo)
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
{_direction(a, b, daily_quota)}{_direction(b, a, daily_quota)}\
  identity_confirmation:
{_identity_direction(a, b, daily_quota)}{_identity_direction(b, a, daily_quota)}\
  representation:
{_representation_direction(a, b, daily_quota)}{_representation_direction(b, a, daily_quota)}"""


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
