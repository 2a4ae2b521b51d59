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
from cryptography.hazmat.primitives.asymmetric import ec, mldsa

from gateway.pki import (
    BundleError,
    StateAuthority,
    gateway_uri,
    init_state,
    load_certificate,
    load_trust_bundle,
    sign_bundle,
)
from gateway.pki.identity import audit_uri, signing_uri, witness_uri
from gateway.pki.keys import PublicKey

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class State:
    authority: StateAuthority
    signing: x509.Certificate
    audit: x509.Certificate
    witness: x509.Certificate
    audit_pq: x509.Certificate
    witness_pq: x509.Certificate
    signing_pq: x509.Certificate
    bundle: bytes

    def certificates(self, **replaced: x509.Certificate | None) -> dict[str, Any]:
        """The keyword arguments of :func:`sign_bundle` for this state's certificates."""
        return {
            "signing_certificate": self.signing,
            "audit_certificate": self.audit,
            "witness_certificate": self.witness,
            "audit_pq_certificate": self.audit_pq,
            "witness_pq_certificate": self.witness_pq,
            "signing_pq_certificate": self.signing_pq,
            **replaced,
        }


def _state(code: str) -> State:
    authority = StateAuthority.create(code, now=NOW)
    signing = authority.issue_signing_certificate(now=NOW).certificate
    audit = authority.issue_audit_certificate(now=NOW).certificate
    witness = authority.issue_audit_certificate(now=NOW, witness=True).certificate
    audit_pq = authority.issue_audit_certificate(now=NOW, post_quantum=True).certificate
    witness_pq = authority.issue_audit_certificate(
        now=NOW, witness=True, post_quantum=True
    ).certificate
    signing_pq = authority.issue_signing_certificate(now=NOW, post_quantum=True).certificate
    bundle = sign_bundle(
        authority,
        signing_certificate=signing,
        audit_certificate=audit,
        witness_certificate=witness,
        audit_pq_certificate=audit_pq,
        witness_pq_certificate=witness_pq,
        signing_pq_certificate=signing_pq,
        peer_endpoint=f"gw.{code.lower()}.example:8443",
        crl_location=f"https://pki.{code.lower()}.example/crl.pem",
        issued_at=NOW,
    )
    return State(authority, signing, audit, witness, audit_pq, witness_pq, signing_pq, bundle)


def _with_key(state: State, uri: str, public_key: PublicKey) -> x509.Certificate:
    """A certificate of ``state``'s CA binding ``public_key`` to ``uri``: a key of one
    role certified again for another."""
    return state.authority.issue_certificate(
        common_name=f"Pouch {uri}",
        san_uris=[uri],
        server_auth=False,
        client_auth=False,
        now=NOW,
        validity_days=30,
        public_key=public_key,
    ).certificate


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
    assert bundle.audit_pq_certificate == fr.audit_pq
    assert bundle.witness_pq_certificate == fr.witness_pq
    assert bundle.signing_pq_certificate == fr.signing_pq
    assert bundle.signature_algorithms == ("ES256", "ML-DSA-44")
    assert bundle.peer_endpoint == "gw.fr.example:8443"
    assert bundle.crl_location == "https://pki.fr.example/crl.pem"
    assert bundle.issued_at == NOW
    document = json.loads(fr.bundle)
    assert document["format"] == "pouch.trust-bundle/v3"
    assert document["body"]["signature_algorithms"] == "ES256 ML-DSA-44"
    for field in ("audit_pq_certificate", "witness_pq_certificate", "signing_pq_certificate"):
        assert isinstance(
            x509.load_pem_x509_certificate(document["body"][field].encode()).public_key(),
            mldsa.MLDSA44PublicKey,
        )


def test_a_bundle_without_a_post_quantum_signing_key_signs_es256_only(fr: State) -> None:
    data = sign_bundle(
        fr.authority,
        **fr.certificates(signing_pq_certificate=None),
        peer_endpoint="gw.fr.example:8443",
        crl_location="x",
        issued_at=NOW,
    )
    bundle = load_trust_bundle(data)
    assert bundle.signing_pq_certificate is None
    assert bundle.signature_algorithms == ("ES256",)
    body = json.loads(data)["body"]
    assert body["signature_algorithms"] == "ES256"
    assert "signing_pq_certificate" not in body


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda body: body.update(signature_algorithms="ES256"), id="pq-key-unnamed"),
        pytest.param(lambda body: body.pop("signing_pq_certificate"), id="named-without-pq-key"),
        pytest.param(lambda body: body.update(signature_algorithms="ML-DSA-44"), id="pq-only"),
        pytest.param(
            lambda body: body.update(signature_algorithms="ML-DSA-44 ES256"), id="reordered"
        ),
    ],
)
def test_signature_algorithms_must_name_exactly_the_keys_the_bundle_holds(
    fr: State, edit: Callable[[dict[str, Any]], None]
) -> None:
    # A partner asks for hybrid signatures from what this field says: it cannot claim a
    # key the bundle lacks, nor hide one it holds.
    forged = _edited(fr.bundle, edit, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="signature_algorithms"):
        load_trust_bundle(forged)


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
    # A post-quantum certificate that expires first sets the bundle's expiry.
    soon = fr.authority.issue_audit_certificate(
        now=NOW - timedelta(days=300), validity_days=301, post_quantum=True
    ).certificate
    data = sign_bundle(
        fr.authority,
        **fr.certificates(audit_pq_certificate=soon),
        peer_endpoint="gw.fr.example:8443",
        crl_location="x",
        issued_at=NOW,
    )
    assert load_trust_bundle(data).expires_at == soon.not_valid_after_utc


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
    document["format"] = "pouch.trust-bundle/v4"
    with pytest.raises(BundleError, match="unsupported trust bundle format"):
        load_trust_bundle(json.dumps(document).encode())


def test_a_bundle_of_the_retired_one_key_format_is_refused_by_name(fr: State) -> None:
    document = json.loads(fr.bundle)
    document["format"] = "pouch.trust-bundle/v1"
    with pytest.raises(BundleError, match="is retired: its one audit key both signed the log"):
        load_trust_bundle(json.dumps(document).encode())


def test_a_bundle_of_the_retired_classical_format_is_refused_by_name(fr: State) -> None:
    # As a state made before post-quantum keys wrote it: no ML-DSA-44 certificates, and
    # genuinely signed by its CA.
    def v2(body: dict[str, Any]) -> None:
        for field in (
            "audit_pq_certificate",
            "witness_pq_certificate",
            "signing_pq_certificate",
            "signature_algorithms",
        ):
            del body[field]

    document = json.loads(_edited(fr.bundle, v2, resign_with=fr.authority.ca_key))
    document["format"] = "pouch.trust-bundle/v2"
    with pytest.raises(BundleError, match="is retired: it holds no post-quantum") as refused:
        load_trust_bundle(json.dumps(document).encode())
    assert "pouch pki upgrade" in str(refused.value)


def test_a_bundle_offering_the_audit_key_as_witness_key_is_refused(fr: State) -> None:
    # One key in both roles: the mistake key separation exists to prevent.
    witness = _with_key(fr, witness_uri("FR"), fr.audit.public_key())  # type: ignore[arg-type]
    with pytest.raises(BundleError, match="audit and witness certificates hold one key"):
        sign_bundle(
            fr.authority,
            **fr.certificates(witness_certificate=witness),
            peer_endpoint="gw.fr.example:8443",
            crl_location="x",
            issued_at=NOW,
        )

    # Nor does the loader take such a bundle, signed by the state's own CA.
    def one_key(body: dict[str, Any]) -> None:
        body["witness_certificate"] = _pem(witness)

    with pytest.raises(BundleError, match="audit and witness certificates hold one key"):
        load_trust_bundle(_edited(fr.bundle, one_key, resign_with=fr.authority.ca_key))


# The SAN URI of each post-quantum certificate field's role.
_PQ_ROLES = {
    "audit_pq_certificate": audit_uri,
    "witness_pq_certificate": witness_uri,
    "signing_pq_certificate": signing_uri,
}


@pytest.mark.parametrize(
    ("field", "owner"),
    [
        pytest.param("witness_pq_certificate", "audit_pq", id="audit-key-as-witness"),
        pytest.param("audit_pq_certificate", "witness_pq", id="witness-key-as-audit"),
        pytest.param("signing_pq_certificate", "audit_pq", id="audit-key-as-signing"),
        pytest.param("signing_pq_certificate", "witness_pq", id="witness-key-as-signing"),
    ],
)
def test_a_bundle_offering_one_post_quantum_key_in_two_roles_is_refused(
    fr: State, field: str, owner: str
) -> None:
    # Certified again by the state's own CA with the other role's URI: only the key says
    # it already serves a role.
    key = getattr(fr, owner).public_key()
    certificate = _with_key(fr, _PQ_ROLES[field]("FR"), key)
    with pytest.raises(BundleError, match="two post-quantum certificates hold one key"):
        sign_bundle(
            fr.authority,
            **fr.certificates(**{field: certificate}),
            peer_endpoint="gw.fr.example:8443",
            crl_location="x",
            issued_at=NOW,
        )

    def one_key(body: dict[str, Any]) -> None:
        body[field] = _pem(certificate)

    with pytest.raises(BundleError, match="two post-quantum certificates hold one key"):
        load_trust_bundle(_edited(fr.bundle, one_key, resign_with=fr.authority.ca_key))


@pytest.mark.parametrize(
    ("field", "other"),
    [
        pytest.param("audit_pq_certificate", "audit_certificate", id="classical-audit-as-pq"),
        pytest.param("witness_pq_certificate", "witness_certificate", id="classical-witness-as-pq"),
        pytest.param("audit_certificate", "audit_pq_certificate", id="pq-audit-as-classical"),
        pytest.param("signing_pq_certificate", "signing_certificate", id="es256-as-pq-signing"),
    ],
)
def test_a_bundle_with_a_key_of_the_wrong_algorithm_in_a_role_is_refused(
    fr: State, field: str, other: str
) -> None:
    def swap(body: dict[str, Any]) -> None:
        body[field] = body[other]

    forged = _edited(fr.bundle, swap, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="wrong key type"):
        load_trust_bundle(forged)


def test_a_post_quantum_certificate_of_another_state_is_refused(fr: State, de: State) -> None:
    def swap(body: dict[str, Any]) -> None:
        body["witness_pq_certificate"] = _pem(de.witness_pq)

    forged = _edited(fr.bundle, swap, resign_with=fr.authority.ca_key)
    with pytest.raises(BundleError, match="post-quantum witness certificate is not issued"):
        load_trust_bundle(forged)


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
            **fr.certificates(),
            peer_endpoint="gw.fr.example",
            crl_location="x",
            issued_at=NOW,
        )
    with pytest.raises(BundleError, match="not issued by the bundle's CA"):
        sign_bundle(
            fr.authority,
            **fr.certificates(signing_certificate=de.signing),
            peer_endpoint="gw.fr.example:8443",
            crl_location="x",
            issued_at=NOW,
        )
    with pytest.raises(BundleError, match="post-quantum audit certificate is not issued"):
        sign_bundle(
            fr.authority,
            **fr.certificates(audit_pq_certificate=de.audit_pq),
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
    assert bundle.witness_certificate == load_certificate(directory.witness_cert)
    assert bundle.audit_pq_certificate == load_certificate(directory.audit_pq_cert)
    assert bundle.witness_pq_certificate == load_certificate(directory.witness_pq_cert)
    assert bundle.signing_pq_certificate == load_certificate(directory.signing_pq_cert)
    assert bundle.signature_algorithms == ("ES256", "ML-DSA-44")
    assert bundle.crl_location == "out-of-band"
    assert bundle.issued_at == NOW
