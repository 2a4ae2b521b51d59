"""Compact JWS with detached payload (RFC 7515 appendix F), ES256 only.

The one module of the envelope package that imports ``jwt``. Tokens look like
``<protected>..<signature>``. pyjwt's detached mode is RFC 7797's unencoded
payload, so the protected header is exactly::

    {"alg": "ES256", "b64": false, "crit": ["b64"], "kid": "sha256:<hex>", "typ": <typ>}

where ``kid`` is the ``sha256:`` fingerprint of the signer's message-signing
certificate.

Guarantees:

* :class:`StateSigningKey` only holds a state's message-signing key: an ECDSA
  P-256 key whose certificate carries that state's signing URI as its only SAN URI
  and certifies that very key. It holds no mutable state, so one instance may sign
  from many worker threads at once.
* :func:`verify_detached` fails closed. It accepts a token only if it is
  well-formed, its protected header is exactly the one above (so ``alg`` ``none``,
  HMAC, another ``typ``, an attached payload or an unknown critical extension are
  all refused), its ``kid`` names the expected certificate, the certificate is
  valid at the time given, and the ES256 signature verifies over the signing input
  the caller recomputed. Every failure is a :class:`SignatureRefused` whose message
  names the check and carries no signed content.
* ECDSA signatures are malleable (``s`` and ``n - s`` both verify); nothing here
  keys on the signature's bytes, and digests are taken over the signing input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Self

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.pki.directory import StateDirectory
from gateway.pki.identity import signing_uri, validate_state_code
from gateway.pki.keys import (
    PrivateKey,
    as_utc,
    certificate_fingerprint,
    load_certificate,
    load_private_key,
)

ALGORITHM: Final = "ES256"
ENVELOPE_TYP: Final = "pouch-envelope+jws"
RECEIPT_TYP: Final = "pouch-receipt+jws"
# Header and 64-byte signature are a few hundred characters; anything far longer is junk.
MAX_TOKEN_CHARS: Final = 2048
_DETACHED_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+")
# Our own instance: a global registration of another algorithm cannot widen it.
_JWS: Final = jwt.api_jws.PyJWS(algorithms=[ALGORITHM])


class SignatureRefused(Exception):
    """A detached JWS failed a check; the message names the check, never the content."""


def _san_uris(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def _protected_header(kid: str, typ: str) -> dict[str, Any]:
    return {"alg": ALGORITHM, "b64": False, "crit": ["b64"], "kid": kid, "typ": typ}


@dataclass(frozen=True)
class StateSigningKey:
    """A state's message-signing key with its certificate, checked to belong together."""

    state: str
    private_key: PrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    kid: str = field(init=False)

    def __post_init__(self) -> None:
        validate_state_code(self.state)
        key = self.private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("a message-signing key must be ECDSA P-256 (ES256)")
        if _san_uris(self.certificate) != [signing_uri(self.state)]:
            raise ValueError(
                f"not a message-signing certificate of {self.state}: its only SAN URI "
                f"must be {signing_uri(self.state)}"
            )
        public = self.certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or (
            public.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError("the signing key does not belong to the signing certificate")
        object.__setattr__(self, "kid", certificate_fingerprint(self.certificate))

    @classmethod
    def from_state_directory(cls, directory: StateDirectory) -> Self:
        """The signing key and certificate of a state directory (``signing.key/.crt``)."""
        return cls(
            state=directory.state,
            private_key=load_private_key(directory.signing_key),
            certificate=load_certificate(directory.signing_cert),
        )

    def sign_detached(self, typ: str, signing_input: bytes) -> str:
        """``<protected>..<signature>`` over ``signing_input``."""
        return _JWS.encode(
            signing_input,
            self.private_key,
            algorithm=ALGORITHM,
            headers=_protected_header(self.kid, typ),
            is_payload_detached=True,
        )


def verify_detached(
    token: str,
    *,
    signing_input: bytes,
    certificate: x509.Certificate,
    typ: str,
    now: datetime,
) -> None:
    """Return if ``token`` is ``certificate``'s ES256 signature over ``signing_input``.

    Raises :class:`SignatureRefused` otherwise (see the module's guarantees).
    """
    if len(token) > MAX_TOKEN_CHARS or _DETACHED_TOKEN.fullmatch(token) is None:
        raise SignatureRefused("not a compact JWS with detached payload")
    try:
        header = _JWS.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise SignatureRefused("unreadable JWS protected header") from e
    if header.get("alg") != ALGORITHM:
        raise SignatureRefused(f"JWS algorithm not allowed (only {ALGORITHM})")
    kid = certificate_fingerprint(certificate)
    if header.get("kid") != kid:
        raise SignatureRefused("JWS key id is not the expected signing certificate")
    if header != _protected_header(kid, typ) or header["b64"] is not False:
        raise SignatureRefused(f"JWS protected header is not the {typ} header")
    moment = as_utc(now)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureRefused("the signing certificate is not valid now")
    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureRefused("the signing certificate does not hold an ECDSA key")
    try:
        _JWS.decode_complete(
            token, key=public, algorithms=[ALGORITHM], detached_payload=signing_input
        )
    except (jwt.PyJWTError, ValueError) as e:
        raise SignatureRefused("JWS signature does not verify") from e
