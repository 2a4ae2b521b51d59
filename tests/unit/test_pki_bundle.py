"""Trust bundles: only a coherent bundle signed by its own state's CA loads."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.pki import (
    BundleError,
    StateAuthority,
    gateway_uri,
    init_state,
    load_certificate,
    load_trust_bundle,
    sign_bundle,
)
from gateway.pki.identity import witness_uri

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class State:
    authority: StateAuthority
    signing: x509.Certificate
    audit: x509.Certificate
    witness: x509.Certificate
    bundle: bytes


def _state(code: str) -> State:
    authority = StateAuthority.create(code, now=NOW)
    signing = authority.issue_signing_certificate(now=NOW).certificate
    audit = authority.issue_audit_certificate(now=NOW).certificate
    witness = authority.issue_audit_certificate(now=NOW, witness=True).certificate
    bundle = sign_bundle(
        authority,
        signing_certificate=signing,
        audit_certificate=audit,
        witness_certificate=witness,
        peer_endpoint=f"gw.{code.lower()}.example:8443",
        crl_location=f"https://pki.{code.lower()}.example/crl.pem",
        issued_at=NOW,
    )
    return State(authority, signing, audit, witness, bundle)


@pytest.fixture
def fr() -> State:
    return _state("FR")


@pytest.fixture
def de() -> State:
    return _state("DE")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _signature(body: Any, key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.sign(rfc8785.dumps(body), ec.ECDSA(hashes.SHA256()))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _edited(
    bundle: bytes, edit: Callable[[dict[str, Any]], None], *, resign_with: Any = None
) -> bytes:
    """The bundle with ``edit`` applied to its body, re-signed if a key is given."""
    document = json.loads(bundle)
    edit(document["body"])
    if resign_with is not None:
        document["signature"] = _signature(document["body"], resign_with)
    return json.dumps(document).encode()


def test_signed_bundle_loads_with_every_field(fr: State) -> None:
    bundle = load_trust_bundle(fr.bundle)
    assert bundle.state == "FR"
    assert bundle.ca_certificate == fr.authority.ca_cert
    assert bundle.signing_certificate == fr.signing
    assert bundle.audit_certificate == fr.audit
    assert bundle.witness_certificate == fr.witness
    assert bundle.peer_endpoint == "gw.fr.example:8443"
    assert bundle.crl_location == "https://pki.fr.example/crl.pem"
    assert bundle.issued_at == NOW
    assert json.loads(fr.bundle)["format"] == "pouch.trust-bundle/v2"


def test_bundle_digest_is_sha256_of_the_canonical_body(fr: State) -> None:
    body = json.loads(fr.bundle)["body"]
    expected = "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    assert load_trust_bundle(fr.bundle).digest == expected


def test_bundle_digest_does_not_depend_on_file_formatting(fr: State) -> None:
    compact = json.dumps(json.loads(fr.bundle), separators=(",", ":")).encode()
    assert load_trust_bundle(compact).digest == load_trust_bundle(fr.bundle).digest


def test_bundle_loads_from_a_path(fr: State, tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_bytes(fr.bundle)
    assert load_trust_bundle(tmp_path / "bundle.json").state == "FR"


def test_bundle_expires_with_its_first_certificate(fr: State) -> None:
    assert load_trust_bundle(fr.bundle).expires_at == fr.signing.not_valid_after_utc


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("peer_endpoint", "evil.example:8443"),
        ("crl_location", "https://evil.example/crl.pem"),
        ("issued_at", "2025-01-16T12:00:00Z"),
        ("state", "DE"),
    ],
)
def test_bundle_with_tampered_field_is_refused(fr: State, field: str, value: str) -> None:
    def tamper(body: dict[str, Any]) -> None:
        body[field] = value

    with pytest.raises(BundleError, match="signature does not verify"):
        load_trust_bundle(_edited(fr.bundle, tamper))


def test_bundle_with_tampered_endpoint_is_refused(fr: State) -> None:
    def tamper(body: dict[str, Any]) -> None:
        body["peer_endpoint"] = "attacker.example:443"

    with pytest.raises(BundleError, match="signature"):
        load_trust_bundle(_edited(fr.bundle, tamper))


def test_bundle_with_swapped_ca_is_refused(fr: State, de: State) -> None:
    def swap(body: dict[str, Any]) -> None:
        body["ca_certificate"] = _pem(de.authority.ca_cert)

    with pytest.raises(BundleError, match="signature does not verify"):
        load_trust_bundle(_edited(fr.bundle, swap))


def test_bundle_of_one_state_claiming_to_be_another_is_refused(de: State) -> None:
    def claim_fr(body: dict[str, Any]) -> None:
        body["state"] = "FR"

    forged = _edited(de.bundle, claim_fr, resign_with=de.authority.ca_key)
    with pytest.raises(BundleError, match="CA certificate is for state DE, bundle claims FR"):
        load_trust_bundle(forged)


def test_bundle_with_signing_certificate_of_another_ca_is_refused(fr: State, de: State) -> None:
    def swap(body: dict[str, Any]) -> None:
        body["signing_certificate"] = _pem(de.signing)

    forged = _edited(fr.bundle, swap, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="signing certificate is not issued by the bundle's CA"):
        load_trust_bundle(forged)


def test_bundle_with_gateway_certificate_as_signing_certificate_is_refused(fr: State) -> None:
    gateway = fr.authority.issue_gateway_certificate(
        dns_names=[], ip_addresses=[], now=NOW
    ).certificate

    def swap(body: dict[str, Any]) -> None:
        body["signing_certificate"] = _pem(gateway)

    forged = _edited(fr.bundle, swap, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="exactly the SAN URI urn:pouch:state:FR:signing"):
        load_trust_bundle(forged)


def test_bundle_with_signing_certificate_claiming_extra_identity_is_refused(fr: State) -> None:
    extra = fr.authority.issue_certificate(
        common_name="signing",
        san_uris=["urn:pouch:state:FR:signing", gateway_uri("FR")],
        server_auth=False,
        client_auth=False,
        now=NOW,
        validity_days=30,
    ).certificate

    def swap(body: dict[str, Any]) -> None:
        body["signing_certificate"] = _pem(extra)

    forged = _edited(fr.bundle, swap, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="exactly the SAN URI"):
        load_trust_bundle(forged)


def test_bundle_with_audit_and_signing_certificates_swapped_is_refused(fr: State) -> None:
    def swap(body: dict[str, Any]) -> None:
        body["signing_certificate"], body["audit_certificate"] = (
            body["audit_certificate"],
            body["signing_certificate"],
        )

    forged = _edited(fr.bundle, swap, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="SAN URI"):
        load_trust_bundle(forged)


def test_bundle_with_non_canonical_pem_is_refused(fr: State) -> None:
    def crlf(body: dict[str, Any]) -> None:
        body["ca_certificate"] = body["ca_certificate"].replace("\n", "\r\n")

    forged = _edited(fr.bundle, crlf, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="canonical"):
        load_trust_bundle(forged)


def test_bundle_with_unexpected_field_is_refused(fr: State) -> None:
    def add(body: dict[str, Any]) -> None:
        body["note"] = "trust me"

    forged = _edited(fr.bundle, add, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match=r"unexpected \['note'\]"):
        load_trust_bundle(forged)


def test_bundle_with_missing_field_is_refused(fr: State) -> None:
    def drop(body: dict[str, Any]) -> None:
        del body["crl_location"]

    forged = _edited(fr.bundle, drop, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match=r"missing \['crl_location'\]"):
        load_trust_bundle(forged)


def test_bundle_of_unknown_format_is_refused(fr: State) -> None:
    document = json.loads(fr.bundle)
    document["format"] = "pouch.trust-bundle/v3"
    with pytest.raises(BundleError, match="unsupported trust bundle format"):
        load_trust_bundle(json.dumps(document).encode())


def test_a_bundle_of_the_retired_one_key_format_is_refused_by_name(fr: State) -> None:
    document = json.loads(fr.bundle)
    document["format"] = "pouch.trust-bundle/v1"
    with pytest.raises(BundleError, match="is retired: its one audit key both signed the log"):
        load_trust_bundle(json.dumps(document).encode())


def test_a_bundle_offering_the_audit_key_as_witness_key_is_refused(fr: State) -> None:
    # One key in both roles: the mistake key separation exists to prevent.
    with pytest.raises(BundleError, match="audit and witness certificates hold one key"):
        sign_bundle(
            fr.authority,
            signing_certificate=fr.signing,
            audit_certificate=fr.audit,
            witness_certificate=fr.authority.issue_certificate(
                common_name="Pouch witness FR",
                san_uris=[witness_uri("FR")],
                server_auth=False,
                client_auth=False,
                now=NOW,
                validity_days=30,
                public_key=fr.audit.public_key(),  # type: ignore[arg-type]
            ).certificate,
            peer_endpoint="gw.fr.example:8443",
            crl_location="x",
            issued_at=NOW,
        )


@pytest.mark.parametrize("signature", ["", "AAAA====", "not base64!", "AAAA"])
def test_bundle_with_malformed_signature_is_refused(fr: State, signature: str) -> None:
    document = json.loads(fr.bundle)
    document["signature"] = signature
    with pytest.raises(BundleError, match="signature"):
        load_trust_bundle(json.dumps(document).encode())


@pytest.mark.parametrize("data", [b"", b"[]", b"{", "é".encode("latin-1")])
def test_garbage_is_not_a_bundle(data: bytes) -> None:
    with pytest.raises(BundleError):
        load_trust_bundle(data)


def test_bundle_error_is_a_value_error() -> None:
    assert issubclass(BundleError, ValueError)


def test_sign_bundle_refuses_what_load_would_refuse(fr: State, de: State) -> None:
    with pytest.raises(BundleError, match="peer endpoint"):
        sign_bundle(
            fr.authority,
            signing_certificate=fr.signing,
            audit_certificate=fr.audit,
            witness_certificate=fr.witness,
            peer_endpoint="gw.fr.example",
            crl_location="x",
            issued_at=NOW,
        )
    with pytest.raises(BundleError, match="not issued by the bundle's CA"):
        sign_bundle(
            fr.authority,
            signing_certificate=de.signing,
            audit_certificate=fr.audit,
            witness_certificate=fr.witness,
            peer_endpoint="gw.fr.example:8443",
            crl_location="x",
            issued_at=NOW,
        )


def test_bundle_written_by_init_state_matches_the_state_directory(tmp_path: Path) -> None:
    directory = init_state(
        "FR",
        tmp_path / "fr",
        dns_names=[],
        ip_addresses=["::1"],
        peer_endpoint="[::1]:8443",
        crl_location=None,
        now=NOW + timedelta(microseconds=5),
    )
    bundle = load_trust_bundle(directory.bundle)
    assert bundle.ca_certificate == load_certificate(directory.ca_cert)
    assert bundle.signing_certificate == load_certificate(directory.signing_cert)
    assert bundle.audit_certificate == load_certificate(directory.audit_cert)
    assert bundle.crl_location == "out-of-band"
    assert bundle.issued_at == NOW
