"""Shared material for the agreement tests: state PKIs, agreement texts, a policy-shaped
validator and the malformed vectors under ``tests/vectors/agreements/``.

Nothing here holds state between tests: PKIs are created read-only per test module,
and every agreement file a test changes is written under that test's ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from gateway.agreements import AgreementRegistry, load_agreement, sign_agreement
from gateway.agreements.loader import render_signatures
from gateway.agreements.model import EXCHANGES_VALIDATOR, AgreementSignature
from gateway.pki import StateDirectory, TrustBundle, init_state, load_trust_bundle
from gateway.pki.agreement_signature import AgreementSigner
from gateway.pki.bundle import CLASSICAL_SIGNING
from gateway.policy.rules import PolicySection

REPO = Path(__file__).resolve().parents[3]
POLICIES = REPO / "policies"
VECTORS = REPO / "tests" / "vectors" / "agreements"

#: The day every registry in these tests believes it is (unless a test moves it).
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def vector(name: str) -> Path:
    """A malformed agreement file kept as a regression vector."""
    path = VECTORS / name
    assert path.is_file(), f"missing test vector {path}"
    return path


def make_state(state: str, root: Path) -> StateDirectory:
    return init_state(
        state,
        root,
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=NOW - timedelta(days=30),
    )


def bundle_of(directory: StateDirectory) -> TrustBundle:
    return load_trust_bundle(directory.bundle)


class _Direction(BaseModel):
    """What gateway.policy's per-direction model is expected to look like (stand-in)."""

    model_config = ConfigDict(extra="forbid")
    purposes: list[str]
    kinds: list[str]
    quota_per_day: dict[str, int] = {}
    response_deadline_seconds: int
    fields: dict[str, Any]
    special_categories: dict[str, Any] = {}
    minors: dict[str, Any] = {}
    name_matching: dict[str, Any] = {}
    deadlines: dict[str, Any] = {}


PolicyShape = dict[
    Literal["civil_record", "identity_confirmation", "representation"],
    dict[str, _Direction],
]

#: A policy-shaped exchanges validator, to show how the real schema plugs in.
policy_like_exchanges = TypeAdapter(PolicyShape).validate_python


def agreement_text(
    *,
    bundles: dict[str, str],
    parties: tuple[str, str] = ("AT", "BE"),
    agreement_id: str = "at-be-test",
    status: str = "active",
    valid_from: date = date(2026, 1, 1),
    valid_until: date = date(2027, 12, 31),
    title: str = "Test agreement",
) -> str:
    first, second = parties
    return f"""\
# A test agreement.
id: {agreement_id}
version: 2
title: {title}
parties: [{first}, {second}]
valid_from: {valid_from.isoformat()}
valid_until: {valid_until.isoformat()}
status: {status}
bundles:
  {first}: "{bundles[first]}"
  {second}: "{bundles[second]}"
retention_days: 30
onward_transfer: forbidden
exchanges:
  identity_confirmation:
    "{first}->{second}":
      purposes: [emergency_travel_document]
      kinds: [passport]
      quota_per_day: {{emergency_travel_document: 10}}
      response_deadline_seconds: 3600
      fields:
        claim.document_number: hash
        claim.name.family_names: allow
"""


def write_agreement(directory: Path, text: str, name: str = "agreement.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def sign_as(path: Path, state: StateDirectory) -> AgreementSignature:
    return sign_agreement(
        path,
        key_path=state.signing_key,
        cert_path=state.signing_cert,
        exchanges_validator=EXCHANGES_VALIDATOR,
    )


def add_foreign_signature(path: Path, state: StateDirectory) -> None:
    """Append a signature by ``state`` even if it is not a party (what an attacker can do)."""
    loaded = load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
    signer = AgreementSigner.load(state.signing_key, state.signing_cert)
    foreign = AgreementSignature(
        state=signer.state,
        key_id=signer.key_id,
        alg="ES256",
        signature=signer.sign(loaded.canonical),
    )
    text = path.read_text(encoding="utf-8")
    head = text.split("signatures:\n")[0].rstrip() + "\n"
    path.write_text(
        head + render_signatures([*loaded.agreement.signatures, foreign]), encoding="utf-8"
    )


class MovableClock:
    """A clock a test can move; registries read it on every lookup."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def registry(
    directory: Path,
    bundles: Iterable[TrustBundle],
    *,
    own_state: str = "AT",
    clock: MovableClock | None = None,
    own_signature_algorithms: Collection[str] = CLASSICAL_SIGNING,
) -> AgreementRegistry[PolicySection]:
    return AgreementRegistry(
        directory,
        own_state=own_state,
        bundles=bundles,
        clock=clock if clock is not None else MovableClock(),
        exchanges_validator=EXCHANGES_VALIDATOR,
        own_signature_algorithms=own_signature_algorithms,
    )
