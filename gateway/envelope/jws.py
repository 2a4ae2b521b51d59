"""Compact JWS with detached payload (RFC 7515 appendix F): ES256, and ML-DSA-44 beside it.

Tokens look like ``<protected>..<signature>``, with RFC 7797's unencoded payload
(the signing input is ``<protected>.`` followed by the payload's bytes), so the
protected header is exactly::

    {"alg": <alg>, "b64": false, "crit": ["b64"], "kid": "sha256:<hex>", "typ": <typ>}

where ``alg`` is ``ES256`` (the ``signature`` of an envelope or receipt) or
``ML-DSA-44`` (its ``pq_signature``, under an agreement with hybrid message
signatures), and ``kid`` is the ``sha256:`` fingerprint of the signer's
message-signing certificate for that algorithm. ``ML-DSA-44`` is the JOSE algorithm
name draft-ietf-cose-dilithium gives FIPS 204's ML-DSA-44 (pure, empty context); its
signature is the raw 2,420-byte string. The header is written as compact JSON with
sorted keys; a token whose header says the same in other JSON is read and accepted
alike. Every envelope and receipt is signed and verified here, so the format is
written out with ``cryptography`` rather than through a general JWS library: the fixed
header is encoded once per key and type, and a token carrying it in exactly that form
is verified without decoding it.

Guarantees:

* :class:`StateSigningKey` only holds a state's message-signing keys: an ECDSA
  P-256 key, and optionally an ML-DSA-44 key (:class:`PostQuantumSigningKey`), each
  with a certificate that carries that state's signing URI as its only SAN URI and
  certifies that very key. It holds no mutable state, so one instance may sign from
  many worker threads at once.
* :func:`verify_detached` fails closed. It accepts a token only if it is
  well-formed and within the size bound of the algorithm the caller expects
  (:data:`MAX_TOKEN_CHARS` for ES256, :data:`MAX_PQ_TOKEN_CHARS` for ML-DSA-44), its
  protected header is exactly the one above for that algorithm (so ``alg`` ``none``,
  HMAC, the other algorithm, another ``typ``, an attached payload or an unknown
  critical extension are all refused), its ``kid`` names the expected certificate,
  the certificate is valid at the time given and holds a key of that algorithm, and
  the signature verifies over the signing input the caller recomputed. Which
  algorithm is expected is the caller's (the field the token came in), never the
  token's. Every failure is a :class:`SignatureRefused` whose message names the check
  and carries no signed content.
* ECDSA signatures are malleable (``s`` and ``n - s`` both verify); nothing here
  keys on the signature's bytes, and digests are taken over the signing input.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.pki.bundle import CLASSICAL_SIGNING, ES256, HYBRID_SIGNING, MLDSA44, TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.identity import signing_uri, validate_state_code
from gateway.pki.keys import (
    PrivateKey,
    as_utc,
    certificate_fingerprint,
    load_certificate,
    load_private_key,
)

ALGORITHM: Final = ES256
PQ_ALGORITHM: Final = MLDSA44
ENVELOPE_TYP: Final = "pouch-envelope+jws"
RECEIPT_TYP: Final = "pouch-receipt+jws"
# Header and 64-byte signature are a few hundred characters; anything far longer is junk.
MAX_TOKEN_CHARS: Final = 2048
# A 2,420-byte ML-DSA-44 signature is 3,227 characters, the header about 200 more.
MAX_PQ_TOKEN_CHARS: Final = 4096
MLDSA44_SIGNATURE_BYTES: Final = 2420
_DETACHED_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.\.[A-Za-z0-9_-]+")
_ES256: Final = ec.ECDSA(hashes.SHA256())
_P256_BYTES: Final = 32
_MAX_CHARS: Final = {ALGORITHM: MAX_TOKEN_CHARS, PQ_ALGORITHM: MAX_PQ_TOKEN_CHARS}
_SIGNATURE_BYTES: Final = {ALGORITHM: 2 * _P256_BYTES, PQ_ALGORITHM: MLDSA44_SIGNATURE_BYTES}


class SignatureRefused(Exception):
    """A detached JWS failed a check; the message names the check, never the content."""


def _san_uris(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def _protected_header(kid: str, typ: str, alg: str) -> dict[str, Any]:
    return {"alg": alg, "b64": False, "crit": ["b64"], "kid": kid, "typ": typ}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=64)
def _protected_segment(kid: str, typ: str, alg: str = ALGORITHM) -> str:
    """The protected header as this module writes it: compact JSON, keys sorted."""
    header = json.dumps(_protected_header(kid, typ, alg), separators=(",", ":"), sort_keys=True)
    return _b64url(header.encode("utf-8"))


@functools.lru_cache(maxsize=64)
def _kid(certificate: x509.Certificate) -> str:
    return certificate_fingerprint(certificate)


def _check_signing_certificate(state: str, certificate: x509.Certificate) -> None:
    if _san_uris(certificate) != [signing_uri(state)]:
        raise ValueError(
            f"not a message-signing certificate of {state}: its only SAN URI "
            f"must be {signing_uri(state)}"
        )


@dataclass(frozen=True)
class PostQuantumSigningKey:
    """A state's ML-DSA-44 message-signing key with its certificate, checked to belong
    together: the second signature of a hybrid envelope or receipt."""

    state: str
    private_key: PrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    kid: str = field(init=False)

    def __post_init__(self) -> None:
        validate_state_code(self.state)
        key = self.private_key
        if not isinstance(key, mldsa.MLDSA44PrivateKey):
            raise ValueError("a post-quantum message-signing key must be ML-DSA-44")
        _check_signing_certificate(self.state, self.certificate)
        public = self.certificate.public_key()
        if not isinstance(public, mldsa.MLDSA44PublicKey) or (
            public.public_bytes_raw() != key.public_key().public_bytes_raw()
        ):
            raise ValueError(
                "the ML-DSA-44 signing key does not belong to the ML-DSA-44 signing certificate"
            )
        object.__setattr__(self, "kid", certificate_fingerprint(self.certificate))

    def sign_detached(self, typ: str, signing_input: bytes) -> str:
        """``<protected>..<signature>`` over ``signing_input``, ``alg`` ``ML-DSA-44``."""
        protected = _protected_segment(self.kid, typ, PQ_ALGORITHM)
        key = self.private_key
        assert isinstance(key, mldsa.MLDSA44PrivateKey)  # checked at construction
        signature = key.sign(protected.encode("ascii") + b"." + signing_input)
        return f"{protected}..{_b64url(signature)}"


@dataclass(frozen=True)
class StateSigningKey:
    """A state's message-signing key with its certificate, checked to belong together,
    and its ML-DSA-44 twin when the state has one (``post_quantum``)."""

    state: str
    private_key: PrivateKey = field(repr=False)
    certificate: x509.Certificate = field(repr=False)
    post_quantum: PostQuantumSigningKey | None = field(default=None, repr=False)
    kid: str = field(init=False)
    # Keys that took over from this one (a rotation taken in by a reload), the last in
    # force: everything holding this signer signs with it from then on.
    _successors: list[StateSigningKey] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        validate_state_code(self.state)
        key = self.private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise ValueError("a message-signing key must be ECDSA P-256 (ES256)")
        _check_signing_certificate(self.state, self.certificate)
        public = self.certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or (
            public.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError("the signing key does not belong to the signing certificate")
        if self.post_quantum is not None and self.post_quantum.state != self.state:
            raise ValueError(
                f"the ML-DSA-44 signing key is {self.post_quantum.state}'s, not {self.state}'s"
            )
        object.__setattr__(self, "kid", certificate_fingerprint(self.certificate))

    @classmethod
    def from_state_directory(cls, directory: StateDirectory) -> Self:
        """The signing keys and certificates of a state directory (``signing.key/.crt``,
        and ``signing-pq.key/.crt`` where it holds them: one without the other is refused)."""
        post_quantum = None
        if directory.signing_pq_key.exists() or directory.signing_pq_cert.exists():
            post_quantum = PostQuantumSigningKey(
                state=directory.state,
                private_key=load_private_key(directory.signing_pq_key),
                certificate=load_certificate(directory.signing_pq_cert),
            )
        return cls(
            state=directory.state,
            private_key=load_private_key(directory.signing_key),
            certificate=load_certificate(directory.signing_cert),
            post_quantum=post_quantum,
        )

    @property
    def in_force(self) -> StateSigningKey:
        """The key that signs: this one, or the last that took over from it."""
        successors = self._successors
        return successors[-1] if successors else self

    def take_over(self, successor: StateSigningKey) -> None:
        """Sign with ``successor`` from now on (a rotated key, once partners hold the
        bundle naming it); one reference swap, so a signature in progress uses one key."""
        if successor.state != self.state:
            raise ValueError(f"a signing key of {successor.state} cannot sign for {self.state}")
        self._successors.append(successor.in_force)

    @property
    def signature_algorithms(self) -> tuple[str, ...]:
        """What this state can sign with: ES256, and ML-DSA-44 with a post-quantum key."""
        return CLASSICAL_SIGNING if self.in_force.post_quantum is None else HYBRID_SIGNING

    def sign_detached(self, typ: str, signing_input: bytes) -> str:
        """``<protected>..<signature>`` over ``signing_input``."""
        signer = self.in_force
        protected = _protected_segment(signer.kid, typ)
        key = signer.private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked at construction
        der = key.sign(protected.encode("ascii") + b"." + signing_input, _ES256)
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
        return f"{protected}..{_b64url(signature)}"

    def sign_pq_detached(self, typ: str, signing_input: bytes) -> str:
        """The ML-DSA-44 token over ``signing_input``; :class:`ValueError` for a state
        without an ML-DSA-44 signing key (a hybrid agreement is not in force there)."""
        post_quantum = self.in_force.post_quantum
        if post_quantum is None:
            raise ValueError(
                f"{self.state} holds no ML-DSA-44 signing key (signing-pq.key): "
                "it cannot sign hybrid"
            )
        return post_quantum.sign_detached(typ, signing_input)


def verify_detached(
    token: str,
    *,
    signing_input: bytes,
    certificate: x509.Certificate,
    typ: str,
    now: datetime,
    alg: str = ALGORITHM,
) -> None:
    """Return if ``token`` is ``certificate``'s ``alg`` signature over ``signing_input``.

    ``alg`` is ``ES256`` (a ``signature`` field) or ``ML-DSA-44`` (a ``pq_signature``
    field); any other is a bug (:class:`ValueError`). Raises :class:`SignatureRefused`
    otherwise (see the module's guarantees).
    """
    if alg not in _MAX_CHARS:
        raise ValueError(f"no JWS algorithm {alg!r} here: {ALGORITHM} or {PQ_ALGORITHM}")
    if len(token) > _MAX_CHARS[alg] or _DETACHED_TOKEN.fullmatch(token) is None:
        raise SignatureRefused("not a compact JWS with detached payload")
    protected, _, encoded_signature = token.partition("..")
    kid = _kid(certificate)
    if protected != _protected_segment(kid, typ, alg):
        # The same header written otherwise, or a refusal.
        _check_header(protected, kid, typ, alg)
    moment = as_utc(now)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise SignatureRefused("the signing certificate is not valid now")
    try:
        signature = _b64url_decode(encoded_signature)
    except (binascii.Error, ValueError) as e:
        raise SignatureRefused("JWS signature does not verify") from e
    if len(signature) != _SIGNATURE_BYTES[alg]:
        raise SignatureRefused("JWS signature does not verify")
    signed = protected.encode("ascii") + b"." + signing_input
    public = certificate.public_key()
    try:
        if alg == PQ_ALGORITHM:
            if not isinstance(public, mldsa.MLDSA44PublicKey):
                raise SignatureRefused("the signing certificate does not hold an ML-DSA-44 key")
            public.verify(signature, signed)
        else:
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise SignatureRefused("the signing certificate does not hold an ECDSA key")
            der = encode_dss_signature(
                int.from_bytes(signature[:_P256_BYTES], "big"),
                int.from_bytes(signature[_P256_BYTES:], "big"),
            )
            public.verify(der, signed, _ES256)
    except InvalidSignature as e:
        raise SignatureRefused("JWS signature does not verify") from e


def signer_among(token: str, bundles: Sequence[TrustBundle]) -> TrustBundle:
    """The bundle among ``bundles`` (at least one) whose signing certificate ``token``'s
    ``kid`` names; the first when none does, so that its check refuses the token."""
    if len(token) > max(_MAX_CHARS.values()):
        return bundles[0]
    protected = token.partition(".")[0]
    try:
        header = json.loads(_b64url_decode(protected))
    except (binascii.Error, ValueError, RecursionError):
        return bundles[0]
    kid = header.get("kid") if isinstance(header, dict) else None
    for bundle in bundles:
        if _kid(bundle.signing_certificate) == kid:
            return bundle
    return bundles[0]


def _check_header(protected: str, kid: str, typ: str, alg: str) -> None:
    """Refuse a protected header that is not, in any JSON spelling, the expected one."""
    try:
        header = json.loads(_b64url_decode(protected))
    except (binascii.Error, ValueError, RecursionError) as e:
        # RecursionError: a header of a thousand nested brackets fits in the size bound.
        raise SignatureRefused("unreadable JWS protected header") from e
    if not isinstance(header, dict):
        raise SignatureRefused("unreadable JWS protected header")
    if header.get("alg") != alg:
        raise SignatureRefused(f"JWS algorithm not allowed (only {alg})")
    if header.get("kid") != kid:
        raise SignatureRefused("JWS key id is not the expected signing certificate")
    if header != _protected_header(kid, typ, alg) or header["b64"] is not False:
        raise SignatureRefused(f"JWS protected header is not the {typ} header")


def verify_post_quantum(
    token: str, *, signing_input: bytes, bundle: TrustBundle, typ: str, now: datetime
) -> None:
    """Return if ``token`` is the ML-DSA-44 signature of ``bundle``'s state over
    ``signing_input``: :class:`SignatureRefused` when it is absent, when the bundle names
    no ML-DSA-44 signing key to check it with (fail closed), or when it does not verify."""
    if not token:
        raise SignatureRefused(
            "the agreement asks for hybrid signatures and it carries no ML-DSA-44 signature"
        )
    if bundle.signing_pq_certificate is None:
        raise SignatureRefused(f"the trust bundle of {bundle.state} names no ML-DSA-44 signing key")
    verify_detached(
        token,
        signing_input=signing_input,
        certificate=bundle.signing_pq_certificate,
        typ=typ,
        now=now,
        alg=PQ_ALGORITHM,
    )
