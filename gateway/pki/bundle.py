"""State trust bundles: what a state hands a partner out of band, signed by its CA.

File format (``pouch.trust-bundle/v2``)::

    {"format": "pouch.trust-bundle/v2",
     "body": {"state": "FR", "ca_certificate": "<PEM>", "signing_certificate": "<PEM>",
              "audit_certificate": "<PEM>", "witness_certificate": "<PEM>",
              "peer_endpoint": "host:port",
              "crl_location": "...", "issued_at": "2025-01-31T12:00:00Z"},
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
* the signing (ECDSA P-256), audit and witness (Ed25519) certificates are end-entity
  certificates issued by that CA whose only SAN URI is the state's signing, audit,
  respectively witness, URI, and the audit (log-signing) and witness (cosigning) keys
  are two keys: one key in both roles is refused;
* a ``pouch.trust-bundle/v1`` bundle, whose one audit key signed the log and cosigned
  partners', is refused by name: its state issues a v2 bundle to be pinned instead.

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
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import jcs
from gateway.pki.authority import StateAuthority
from gateway.pki.directory import state_of_ca
from gateway.pki.identity import audit_uri, signing_uri, validate_state_code, witness_uri
from gateway.pki.keys import as_utc, certificate_pem, load_certificates_pem

FORMAT = "pouch.trust-bundle/v2"
RETIRED_FORMATS = frozenset({"pouch.trust-bundle/v1"})
CRL_OUT_OF_BAND = "out-of-band"

_BODY_FIELDS = frozenset(
    {
        "state",
        "ca_certificate",
        "signing_certificate",
        "audit_certificate",
        "witness_certificate",
        "peer_endpoint",
        "crl_location",
        "issued_at",
    }
)
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
    peer_endpoint: str
    crl_location: str
    issued_at: datetime

    def body(self) -> dict[str, str]:
        """The signed body, as it appears in the file."""
        return {
            "state": self.state,
            "ca_certificate": certificate_pem(self.ca_certificate).decode("ascii"),
            "signing_certificate": certificate_pem(self.signing_certificate).decode("ascii"),
            "audit_certificate": certificate_pem(self.audit_certificate).decode("ascii"),
            "witness_certificate": certificate_pem(self.witness_certificate).decode("ascii"),
            "peer_endpoint": self.peer_endpoint,
            "crl_location": self.crl_location,
            "issued_at": as_utc(self.issued_at).strftime(_TIME_FORMAT),
        }

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
            )
        )


def _check_issued(
    what: str,
    cert: x509.Certificate,
    ca: x509.Certificate,
    uri: str,
    key_type: type[ec.EllipticCurvePublicKey] | type[ed25519.Ed25519PublicKey],
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
    if _raw_public_key(bundle.audit_certificate) == _raw_public_key(bundle.witness_certificate):
        raise BundleError("the audit and witness certificates hold one key: two roles need two")


def _raw_public_key(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


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
    peer_endpoint: str,
    crl_location: str,
    issued_at: datetime,
) -> bytes:
    """The bundle file for ``authority``'s state, signed by its CA key."""
    bundle = TrustBundle(
        state=authority.state,
        ca_certificate=authority.ca_cert,
        signing_certificate=signing_certificate,
        audit_certificate=audit_certificate,
        witness_certificate=witness_certificate,
        peer_endpoint=peer_endpoint,
        crl_location=crl_location,
        issued_at=as_utc(issued_at).replace(microsecond=0),
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
            f"trust bundle format {document['format']!r} is retired: its one audit key both "
            "signed the log and cosigned; ask its state for its current bundle "
            f"({FORMAT}, with a separate witness key) and pin that"
        )
    if document["format"] != FORMAT:
        raise BundleError(f"unsupported trust bundle format {document['format']!r}")
    body, signature = document["body"], document["signature"]
    if not isinstance(signature, str):
        raise BundleError("signature must be a string")
    if not isinstance(body, dict):
        raise BundleError("body must be an object")
    if set(body) != _BODY_FIELDS:
        missing, extra = sorted(_BODY_FIELDS - set(body)), sorted(set(body) - _BODY_FIELDS)
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
    bundle = TrustBundle(
        state=body["state"],
        ca_certificate=ca,
        signing_certificate=_single_certificate(body, "signing_certificate"),
        audit_certificate=_single_certificate(body, "audit_certificate"),
        witness_certificate=_single_certificate(body, "witness_certificate"),
        peer_endpoint=body["peer_endpoint"],
        crl_location=body["crl_location"],
        issued_at=issued_at,
    )
    _check_bundle(bundle)
    if bundle.body() != body:
        # Non-canonical PEM or time would give the file and the object different digests.
        raise BundleError("trust bundle body is not in canonical form (PEM or issued_at)")
    return bundle
