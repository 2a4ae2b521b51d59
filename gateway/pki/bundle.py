"""State trust bundles: what a state hands a partner out of band, signed by its CA.

File format (``pouch.trust-bundle/v3``)::

    {"format": "pouch.trust-bundle/v3",
     "body": {"state": "FR", "ca_certificate": "<PEM>",
              "signing_certificate": "<PEM>", "signing_pq_certificate": "<PEM>",
              "signature_algorithms": "ES256 ML-DSA-44",
              "audit_certificate": "<PEM>", "audit_pq_certificate": "<PEM>",
              "witness_certificate": "<PEM>", "witness_pq_certificate": "<PEM>",
              "peer_endpoint": "host:port",
              "crl_location": "...", "issued_at": "2025-01-31T12:00:00Z",
              "ca_cross_certificate": "<PEM>"},
     "signature": "<base64url, unpadded, DER ECDSA P-256/SHA-256 signature by the CA
                   over the RFC 8785 canonical JSON of body>"}

The signature is DER-encoded (as ``openssl dgst -sha256 -verify`` expects), so a
partner can check a bundle without Pouch.

Guarantees of :func:`load_trust_bundle` (any failure raises :class:`BundleError`
naming the check):

* the body has exactly the fields above, each a string in canonical form (PEM as
  Pouch writes it, ``issued_at`` as ``YYYY-MM-DDTHH:MM:SSZ``), so a
  :class:`TrustBundle` and the file it came from have the same
  :attr:`TrustBundle.digest`, the value agreements pin;
* the signature verifies with the CA certificate in the body;
* that CA is self-signed, a CA, ECDSA P-256, and its subject ``C=`` is the state;
* the signing (ECDSA P-256), audit and witness (Ed25519) certificates, and their
  post-quantum twins (ML-DSA-44), are end-entity certificates issued by that CA whose
  only SAN URI is the state's signing, audit, respectively witness, URI; the audit
  (log-signing) and witness (cosigning) keys are distinct keys in each algorithm: one
  key in both roles is refused;
* ``signature_algorithms`` names the algorithms the state signs messages with:
  ``ES256`` alone, or ``ES256 ML-DSA-44``, in which case (and only then) the bundle
  carries ``signing_pq_certificate`` and hybrid envelope signatures can be asked of it;
* ``ca_cross_certificate`` (optional, only in a bundle issued under a renewed CA) is the
  new CA's certificate issued by the state's previous CA: the same subject and public key
  as ``ca_certificate``, and a CA. The bundle cannot check its issuer; a partner does,
  against the CA it pinned (:mod:`gateway.pki.bundle_chain`), and only then takes the
  new CA;
* a ``pouch.trust-bundle/v1`` bundle (one audit key signed the log and cosigned
  partners') and a ``v2`` one (no post-quantum keys) are refused by name: their state
  issues a current bundle to be pinned instead (``pouch pki upgrade``).

The bundle's signature proves integrity relative to the CA inside it; trust in
that CA comes from the out-of-band exchange and the digest pinned in the agreement.
:func:`sign_bundle` applies the same checks before signing, so Pouch never signs a
bundle it would refuse.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import jcs
from gateway.pki.authority import StateAuthority
from gateway.pki.directory import state_of_ca
from gateway.pki.identity import audit_uri, signing_uri, validate_state_code, witness_uri
from gateway.pki.keys import as_utc, certificate_pem, load_certificates_pem

FORMAT = "pouch.trust-bundle/v3"
RETIRED_FORMATS = {
    "pouch.trust-bundle/v1": "its one audit key both signed the log and cosigned",
    "pouch.trust-bundle/v2": "it holds no post-quantum (ML-DSA-44) audit and witness keys",
}
CRL_OUT_OF_BAND = "out-of-band"

ES256 = "ES256"
MLDSA44 = "ML-DSA-44"
CLASSICAL_SIGNING = (ES256,)
HYBRID_SIGNING = (ES256, MLDSA44)
_SIGNATURE_ALGORITHMS = {" ".join(CLASSICAL_SIGNING), " ".join(HYBRID_SIGNING)}

_BODY_FIELDS = frozenset(
    {
        "state",
        "ca_certificate",
        "signing_certificate",
        "signature_algorithms",
        "audit_certificate",
        "audit_pq_certificate",
        "witness_certificate",
        "witness_pq_certificate",
        "peer_endpoint",
        "crl_location",
        "issued_at",
    }
)
_OPTIONAL_FIELDS = frozenset({"signing_pq_certificate", "ca_cross_certificate"})
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")


class BundleError(ValueError):
    """A trust bundle is malformed, forged, or does not describe one coherent state."""


def validate_peer_endpoint(endpoint: str) -> str:
    """``host:port`` (``[v6]:port`` for IPv6) with a port in 1..65535."""
    host, sep, port = endpoint.rpartition(":")
    if (
        not sep
        or _HOST.fullmatch(host) is None
        or not port.isascii()
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
    ):
        raise ValueError(f"invalid peer endpoint {endpoint!r}: expected HOST:PORT")
    return endpoint


@dataclass(frozen=True)
class TrustBundle:
    state: str
    ca_certificate: x509.Certificate
    signing_certificate: x509.Certificate
    audit_certificate: x509.Certificate
    witness_certificate: x509.Certificate
    audit_pq_certificate: x509.Certificate
    witness_pq_certificate: x509.Certificate
    signing_pq_certificate: x509.Certificate | None
    peer_endpoint: str
    crl_location: str
    issued_at: datetime
    ca_cross_certificate: x509.Certificate | None = None

    @property
    def signature_algorithms(self) -> tuple[str, ...]:
        """The algorithms the state signs messages with: ES256, and ML-DSA-44 if it has
        a post-quantum signing key."""
        return CLASSICAL_SIGNING if self.signing_pq_certificate is None else HYBRID_SIGNING

    def body(self) -> dict[str, str]:
        """The signed body, as it appears in the file."""
        body = {
            "state": self.state,
            "ca_certificate": _pem(self.ca_certificate),
            "signing_certificate": _pem(self.signing_certificate),
            "signature_algorithms": " ".join(self.signature_algorithms),
            "audit_certificate": _pem(self.audit_certificate),
            "audit_pq_certificate": _pem(self.audit_pq_certificate),
            "witness_certificate": _pem(self.witness_certificate),
            "witness_pq_certificate": _pem(self.witness_pq_certificate),
            "peer_endpoint": self.peer_endpoint,
            "crl_location": self.crl_location,
            "issued_at": as_utc(self.issued_at).strftime(_TIME_FORMAT),
        }
        if self.signing_pq_certificate is not None:
            body["signing_pq_certificate"] = _pem(self.signing_pq_certificate)
        if self.ca_cross_certificate is not None:
            body["ca_cross_certificate"] = _pem(self.ca_cross_certificate)
        return body

    def canonical_body(self) -> bytes:
        return jcs.dumps(self.body())

    @property
    def digest(self) -> str:
        """``sha256:`` + hex SHA-256 of the canonical body: what agreements pin."""
        return "sha256:" + hashlib.sha256(self.canonical_body()).hexdigest()

    @property
    def expires_at(self) -> datetime:
        """When the first of the bundle's certificates expires."""
        return min(
            c.not_valid_after_utc
            for c in (
                self.ca_certificate,
                self.signing_certificate,
                self.audit_certificate,
                self.witness_certificate,
                self.audit_pq_certificate,
                self.witness_pq_certificate,
                *([] if self.signing_pq_certificate is None else [self.signing_pq_certificate]),
            )
        )


def _pem(certificate: x509.Certificate) -> str:
    return certificate_pem(certificate).decode("ascii")


def _check_issued(
    what: str,
    cert: x509.Certificate,
    ca: x509.Certificate,
    uri: str,
    key_type: type[ec.EllipticCurvePublicKey]
    | type[ed25519.Ed25519PublicKey]
    | type[mldsa.MLDSA44PublicKey],
) -> None:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise BundleError(f"{what} certificate is not issued by the bundle's CA") from e
    try:
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris != [uri]:
        raise BundleError(f"{what} certificate must carry exactly the SAN URI {uri}, got {uris}")
    public_key = cert.public_key()
    if not isinstance(public_key, key_type):
        raise BundleError(f"{what} certificate has the wrong key type")
    if isinstance(public_key, ec.EllipticCurvePublicKey) and not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise BundleError(f"{what} certificate key must be ECDSA P-256")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise BundleError(f"{what} certificate must not be a CA")
    except x509.ExtensionNotFound:
        pass


def _check_bundle(bundle: TrustBundle) -> None:
    """Every semantic rule of a bundle except the signature."""
    try:
        validate_state_code(bundle.state)
        validate_peer_endpoint(bundle.peer_endpoint)
    except ValueError as e:
        raise BundleError(str(e)) from e
    if not bundle.crl_location:
        raise BundleError("crl_location must not be empty")
    ca = bundle.ca_certificate
    try:
        ca.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise BundleError("CA certificate is not self-signed") from e
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise BundleError("CA certificate's BasicConstraints do not make it a CA")
    ca_key = ca.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey) or not isinstance(
        ca_key.curve, ec.SECP256R1
    ):
        raise BundleError("CA certificate key must be ECDSA P-256")
    try:
        ca_state = state_of_ca(ca)
    except ValueError as e:
        raise BundleError(f"CA certificate: {e}") from e
    if ca_state != bundle.state:
        raise BundleError(f"CA certificate is for state {ca_state}, bundle claims {bundle.state}")
    if bundle.ca_cross_certificate is not None:
        _check_cross_certificate(bundle.ca_cross_certificate, ca)
    _check_issued(
        "signing",
        bundle.signing_certificate,
        ca,
        signing_uri(bundle.state),
        ec.EllipticCurvePublicKey,
    )
    _check_issued(
        "audit",
        bundle.audit_certificate,
        ca,
        audit_uri(bundle.state),
        ed25519.Ed25519PublicKey,
    )
    _check_issued(
        "witness",
        bundle.witness_certificate,
        ca,
        witness_uri(bundle.state),
        ed25519.Ed25519PublicKey,
    )
    _check_issued(
        "post-quantum audit",
        bundle.audit_pq_certificate,
        ca,
        audit_uri(bundle.state),
        mldsa.MLDSA44PublicKey,
    )
    _check_issued(
        "post-quantum witness",
        bundle.witness_pq_certificate,
        ca,
        witness_uri(bundle.state),
        mldsa.MLDSA44PublicKey,
    )
    if bundle.signing_pq_certificate is not None:
        _check_issued(
            "post-quantum signing",
            bundle.signing_pq_certificate,
            ca,
            signing_uri(bundle.state),
            mldsa.MLDSA44PublicKey,
        )
    if _raw_public_key(bundle.audit_certificate) == _raw_public_key(bundle.witness_certificate):
        raise BundleError("the audit and witness certificates hold one key: two roles need two")
    pq_keys = [
        _raw_public_key(c)
        for c in (
            bundle.audit_pq_certificate,
            bundle.witness_pq_certificate,
            bundle.signing_pq_certificate,
        )
        if c is not None
    ]
    if len(set(pq_keys)) != len(pq_keys):
        raise BundleError(
            "two post-quantum certificates hold one key: the audit, witness and signing "
            "roles need one key each"
        )


def _check_cross_certificate(cross: x509.Certificate, ca: x509.Certificate) -> None:
    if cross.subject != ca.subject or cross.public_key() != ca.public_key():
        raise BundleError(
            "ca_cross_certificate must certify the bundle's CA: its subject and public key"
        )
    try:
        is_ca = cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise BundleError("ca_cross_certificate's BasicConstraints do not make it a CA")


def _raw_public_key(certificate: x509.Certificate) -> bytes:
    key = certificate.public_key()
    if isinstance(key, mldsa.MLDSA44PublicKey):
        return key.public_bytes_raw()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    if _BASE64URL.fullmatch(text) is None:
        raise BundleError("signature is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise BundleError("signature is not unpadded base64url") from e


def sign_bundle(
    authority: StateAuthority,
    *,
    signing_certificate: x509.Certificate,
    audit_certificate: x509.Certificate,
    witness_certificate: x509.Certificate,
    audit_pq_certificate: x509.Certificate,
    witness_pq_certificate: x509.Certificate,
    signing_pq_certificate: x509.Certificate | None,
    peer_endpoint: str,
    crl_location: str,
    issued_at: datetime,
    ca_cross_certificate: x509.Certificate | None = None,
) -> bytes:
    """The bundle file for ``authority``'s state, signed by its CA key."""
    bundle = TrustBundle(
        state=authority.state,
        ca_certificate=authority.ca_cert,
        signing_certificate=signing_certificate,
        audit_certificate=audit_certificate,
        witness_certificate=witness_certificate,
        audit_pq_certificate=audit_pq_certificate,
        witness_pq_certificate=witness_pq_certificate,
        signing_pq_certificate=signing_pq_certificate,
        peer_endpoint=peer_endpoint,
        crl_location=crl_location,
        issued_at=as_utc(issued_at).replace(microsecond=0),
        ca_cross_certificate=ca_cross_certificate,
    )
    _check_bundle(bundle)
    canonical = bundle.canonical_body()
    signature = authority.ca_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
    document = {"format": FORMAT, "body": bundle.body(), "signature": _b64url(signature)}
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _single_certificate(body: dict[str, str], key: str) -> x509.Certificate:
    try:
        certificates = load_certificates_pem(body[key].encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise BundleError(f"{key} is not a PEM certificate") from e
    if len(certificates) != 1:
        raise BundleError(f"{key} must hold exactly one certificate")
    return certificates[0]


def _parse_document(data: bytes) -> tuple[dict[str, str], str]:
    try:
        document: Any = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError("trust bundle is not valid JSON") from e
    if not isinstance(document, dict) or set(document) != {"format", "body", "signature"}:
        raise BundleError("trust bundle must be an object with exactly format, body, signature")
    if document["format"] in RETIRED_FORMATS:
        raise BundleError(
            f"trust bundle format {document['format']!r} is retired: "
            f"{RETIRED_FORMATS[document['format']]}; ask its state for its current bundle "
            f"({FORMAT}, made with pouch pki upgrade) and pin that"
        )
    if document["format"] != FORMAT:
        raise BundleError(f"unsupported trust bundle format {document['format']!r}")
    body, signature = document["body"], document["signature"]
    if not isinstance(signature, str):
        raise BundleError("signature must be a string")
    if not isinstance(body, dict):
        raise BundleError("body must be an object")
    if not _BODY_FIELDS <= set(body) <= _BODY_FIELDS | _OPTIONAL_FIELDS:
        missing = sorted(_BODY_FIELDS - set(body))
        extra = sorted(set(body) - _BODY_FIELDS - _OPTIONAL_FIELDS)
        raise BundleError(f"body fields wrong: missing {missing}, unexpected {extra}")
    for key, value in body.items():
        if not isinstance(value, str):
            raise BundleError(f"body field {key} must be a string")
    return body, signature


def load_trust_bundle(source: Path | bytes) -> TrustBundle:
    """Read and fully verify a trust bundle (a file path or the file's bytes)."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    body, signature = _parse_document(data)
    ca = _single_certificate(body, "ca_certificate")
    ca_key = ca.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey):
        raise BundleError("CA certificate key must be ECDSA P-256")
    try:
        ca_key.verify(_unb64url(signature), jcs.dumps(body), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise BundleError("trust bundle signature does not verify with its CA") from e
    try:
        issued_at = datetime.strptime(body["issued_at"], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as e:
        raise BundleError("issued_at must be RFC 3339 UTC, YYYY-MM-DDTHH:MM:SSZ") from e
    if body["signature_algorithms"] not in _SIGNATURE_ALGORITHMS:
        raise BundleError(
            f"signature_algorithms {body['signature_algorithms']!r} is not one of "
            f"{sorted(_SIGNATURE_ALGORITHMS)}"
        )
    bundle = TrustBundle(
        state=body["state"],
        ca_certificate=ca,
        signing_certificate=_single_certificate(body, "signing_certificate"),
        audit_certificate=_single_certificate(body, "audit_certificate"),
        witness_certificate=_single_certificate(body, "witness_certificate"),
        audit_pq_certificate=_single_certificate(body, "audit_pq_certificate"),
        witness_pq_certificate=_single_certificate(body, "witness_pq_certificate"),
        signing_pq_certificate=(
            _single_certificate(body, "signing_pq_certificate")
            if "signing_pq_certificate" in body
            else None
        ),
        peer_endpoint=body["peer_endpoint"],
        crl_location=body["crl_location"],
        issued_at=issued_at,
        ca_cross_certificate=(
            _single_certificate(body, "ca_cross_certificate")
            if "ca_cross_certificate" in body
            else None
        ),
    )
    if body["signature_algorithms"] != " ".join(bundle.signature_algorithms):
        raise BundleError(
            "signature_algorithms names ML-DSA-44 exactly when the bundle carries "
            "signing_pq_certificate"
        )
    _check_bundle(bundle)
    if bundle.body() != body:
        # Non-canonical PEM or time would give the file and the object different digests.
        raise BundleError("trust bundle body is not in canonical form (PEM or issued_at)")
    return bundle
