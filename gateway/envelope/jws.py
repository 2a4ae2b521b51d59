"""Compact JWS with detached payload (RFC 7515 appendix F), ES256 only.

Tokens look like ``<protected>..<signature>``, with RFC 7797's unencoded payload
(the signing input is ``<protected>.`` followed by the payload's bytes), so the
protected header is exactly::

    {"alg": "ES256", "b64": false, "crit": ["b64"], "kid": "sha256:<hex>", "typ": <typ>}

where ``kid`` is the ``sha256:`` fingerprint of the signer's message-signing
certificate. It is written as compact JSON with sorted keys; a token whose header
says the same in other JSON is read and accepted alike. Every envelope and receipt is
signed and verified here, so the format is written out with ``cryptography``'s ECDSA
rather than through a general JWS library: the fixed header is encoded once per key
and type, and a token carrying it in exactly that form is verified without decoding it.

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

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

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
_ES256: Final = ec.ECDSA(hashes.SHA256())
_P256_BYTES: Final = 32


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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=64)
def _protected_segment(kid: str, typ: str) -> str:
    """The protected header as this module writes it: compact JSON, keys sorted."""
    header = json.dumps(_protected_header(kid, typ), separators=(",", ":"), sort_keys=True)
    return _b64url(header.encode("utf-8"))


@functools.lru_cache(maxsize=64)
def _kid(certificate: x509.Certificate) -> str:
    return certificate_fingerprint(certificate)


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
        protected = _protected_segment(self.kid, typ)
        key = self.private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked at construction
        der = key.sign(protected.encode("ascii") + b"." + signing_input, _ES256)
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
        return f"{protected}..{_b64url(signature)}"


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
    protected, _, encoded_signature = token.partition("..")
    kid = _kid(certificate)
    if protected != _protected_segment(kid, typ):
        _check_header(protected, kid, typ)  # the same header written otherwise, or a refusal
    moment = as_utc(now)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureRefused("the signing certificate is not valid now")
    public = certificate.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureRefused("the signing certificate does not hold an ECDSA key")
    try:
        signature = _b64url_decode(encoded_signature)
    except (binascii.Error, ValueError) as e:
        raise SignatureRefused("JWS signature does not verify") from e
    if len(signature) != 2 * _P256_BYTES:
        raise SignatureRefused("JWS signature does not verify")
    der = encode_dss_signature(
        int.from_bytes(signature[:_P256_BYTES], "big"),
        int.from_bytes(signature[_P256_BYTES:], "big"),
    )
    try:
        public.verify(der, protected.encode("ascii") + b"." + signing_input, _ES256)
    except InvalidSignature as e:
        raise SignatureRefused("JWS signature does not verify") from e


def _check_header(protected: str, kid: str, typ: str) -> None:
    """Refuse a protected header that is not, in any JSON spelling, the expected one."""
    try:
        header = json.loads(_b64url_decode(protected))
    except (binascii.Error, ValueError) as e:
        raise SignatureRefused("unreadable JWS protected header") from e
    if not isinstance(header, dict):
        raise SignatureRefused("unreadable JWS protected header")
    if header.get("alg") != ALGORITHM:
        raise SignatureRefused(f"JWS algorithm not allowed (only {ALGORITHM})")
    if header.get("kid") != kid:
        raise SignatureRefused("JWS key id is not the expected signing certificate")
    if header != _protected_header(kid, typ) or header["b64"] is not False:
        raise SignatureRefused(f"JWS protected header is not the {typ} header")
