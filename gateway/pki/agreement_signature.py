"""The signature a state puts on an agreement's canonical form.

Format: ECDSA P-256 over SHA-256 of the canonical bytes, encoded JWS-ES256 style
as unpadded base64url of the raw ``r || s`` (32 bytes each, big-endian), so a
partner can check it with any JOSE library or ``openssl`` after re-encoding.

Guarantees:

* :meth:`AgreementSigner.load` only signs with a state's message-signing key: the
  certificate must name exactly one state in its subject ``C=``, carry that
  state's signing URI as its only SAN URI, hold an ECDSA P-256 key, and the
  private key must be the one the certificate certifies. A TLS, client or audit
  key is refused, so an agreement signature always means "this state's signing
  key".
* :func:`verify_agreement_signature` fails closed: any malformed encoding, wrong
  length, wrong key type or invalid signature yields ``False``, never an
  exception and never ``True``.
* ``key_id`` is the signing certificate's ``sha256:`` fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID

from gateway.pki.identity import signing_uri, validate_state_code
from gateway.pki.keys import certificate_fingerprint, load_certificate, load_private_key

ALGORITHM: Final = "ES256"
_COORDINATE_BYTES = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_signature(text: str) -> bytes | None:
    if _BASE64URL.fullmatch(text) is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 2 * _COORDINATE_BYTES else None


def state_of_certificate(certificate: x509.Certificate) -> str:
    """The state a certificate's subject names in its single ``C=``."""
    values = certificate.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str):
        raise ValueError("certificate subject must carry exactly one C= (the state code)")
    return validate_state_code(values[0].value)


def _san_uris(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


@dataclass(frozen=True)
class AgreementSigner:
    """A state's message-signing key, checked against its certificate."""

    state: str
    key_id: str
    _key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def load(cls, key_path: Path, cert_path: Path) -> AgreementSigner:
        certificate = load_certificate(cert_path)
        state = state_of_certificate(certificate)
        if _san_uris(certificate) != [signing_uri(state)]:
            raise ValueError(
                f"{cert_path}: not a message-signing certificate "
                f"(its only SAN URI must be {signing_uri(state)})"
            )
        key = load_private_key(key_path)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: agreement signatures need an ECDSA P-256 key")
        public = certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or (
            public.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError(f"{key_path}: this key does not belong to certificate {cert_path}")
        return cls(state=state, key_id=certificate_fingerprint(certificate), _key=key)

    def sign(self, canonical: bytes) -> str:
        """base64url(r || s) of the ES256 signature over ``canonical``."""
        r, s = decode_dss_signature(self._key.sign(canonical, ec.ECDSA(hashes.SHA256())))
        return _b64url(r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big"))


def verify_agreement_signature(
    certificate: x509.Certificate, canonical: bytes, signature: str
) -> bool:
    """Whether ``signature`` is a valid ES256 signature by ``certificate``'s key."""
    raw = _raw_signature(signature)
    public = certificate.public_key()
    if raw is None or not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    if not isinstance(public.curve, ec.SECP256R1):
        return False
    r = int.from_bytes(raw[:_COORDINATE_BYTES], "big")
    s = int.from_bytes(raw[_COORDINATE_BYTES:], "big")
    try:
        public.verify(encode_dss_signature(r, s), canonical, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
