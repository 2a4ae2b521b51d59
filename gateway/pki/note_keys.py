"""Keys of signed notes: the only place the audit log touches ``cryptography.hazmat``.

The audit log signs checkpoints as C2SP signed notes (c2sp.org/signed-note) and
cosigns the partner's checkpoints as C2SP cosignatures (c2sp.org/tlog-cosignature),
each twice: with Ed25519 (RFC 8032) and with ML-DSA-44 (FIPS 204), so the evidence
outlives a quantum adversary. ``gateway/audit`` builds the bytes; this module only
holds the keys and runs the primitives, so ``gateway/audit`` never sees a hazmat type.

Guarantees:

* :class:`Ed25519Signer` wraps an Ed25519 private key and nothing else, and
  :class:`MLDSA44Signer` an ML-DSA-44 key and nothing else: any other algorithm is
  refused with :class:`ValueError`, so an audit signature is never made with the
  wrong key. Both show ``algorithm``, the raw ``public_key`` and ``sign(message)``.
* Public keys cross the boundary raw: 32 bytes (RFC 8032) or 1312 bytes (FIPS 204),
  which is also what note key IDs hash (:func:`note_key_id`).
* :func:`verify_ed25519`, :func:`verify_mldsa44` and :func:`verify_note_key` answer
  ``True`` or ``False`` and never raise on hostile input (wrong lengths, bytes that
  are not a key): a verifier of untrusted notes must not be crashable by them.
* ML-DSA-44 signs with the empty context string, as c2sp.org/tlog-cosignature
  implies by naming none.
* A partner's public keys are read only from its trust bundle's certificates
  (:func:`audit_public_keys`, :func:`witness_public_keys`), never from the note being
  verified.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa

from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import PrivateKey, load_private_key

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
MLDSA44_PUBLIC_KEY_SIZE = 1312
MLDSA44_SIGNATURE_SIZE = 2420

ED25519 = "Ed25519"
MLDSA44 = "ML-DSA-44"
ALGORITHMS = (ED25519, MLDSA44)

# Signature type bytes assigned by c2sp.org/signed-note ("Signature types").
SIGNATURE_TYPE_ED25519 = 0x01
SIGNATURE_TYPE_COSIGNATURE_V1 = 0x04
SIGNATURE_TYPE_COSIGNATURE_MLDSA44 = 0x06


def note_key_id(key_name: str, signature_type: int, public_key: bytes) -> int:
    """``SHA-256(key name || 0x0A || signature type || public key)[:4]``, big-endian.

    The key ID of c2sp.org/signed-note. The same key under the same name gets a
    different ID per signature type, which is what lets one audit key both sign
    our checkpoints (type 0x01) and cosign the partner's (type 0x04).
    """
    if not 0 <= signature_type <= 0xFF:
        raise ValueError("a note signature type is one byte")
    digest = hashlib.sha256(
        key_name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


class _NoteKeySigner:
    """A private key that signs bytes and shows only its raw public key."""

    __slots__ = ("_key", "_public_key")
    algorithm: ClassVar[str]

    def __init__(self, key: ed25519.Ed25519PrivateKey | mldsa.MLDSA44PrivateKey) -> None:
        self._key = key
        self._public_key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_key(self) -> bytes:
        """The raw public key: 32 bytes (Ed25519) or 1312 bytes (ML-DSA-44)."""
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        """The signature of ``message``: 64 bytes (RFC 8032), or 2420 bytes (FIPS 204,
        hedged, empty context)."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        # Never show key material, not even through a debugger or a log line.
        return f"{type(self).__name__}(public_key={self._public_key[:32].hex()})"


class Ed25519Signer(_NoteKeySigner):
    """An Ed25519 private key that signs bytes and shows only its raw public key."""

    __slots__ = ()
    algorithm = ED25519

    def __init__(self, key: PrivateKey) -> None:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("audit notes are signed with Ed25519 keys only")
        super().__init__(key)

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """The key whose RFC 8032 32-byte private seed is ``seed``."""
        if len(seed) != PUBLIC_KEY_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(ed25519.Ed25519PrivateKey.generate())


class MLDSA44Signer(_NoteKeySigner):
    """An ML-DSA-44 private key that signs bytes and shows only its raw public key."""

    __slots__ = ()
    algorithm = MLDSA44

    def __init__(self, key: PrivateKey) -> None:
        if not isinstance(key, mldsa.MLDSA44PrivateKey):
            raise ValueError("this audit key is an ML-DSA-44 key")
        super().__init__(key)

    @classmethod
    def from_seed(cls, seed: bytes) -> MLDSA44Signer:
        """The key FIPS 204 ``ML-DSA.KeyGen_internal`` derives from the 32-byte ``seed``."""
        if len(seed) != 32:
            raise ValueError("an ML-DSA-44 seed is 32 bytes")
        return cls(mldsa.MLDSA44PrivateKey.from_seed_bytes(seed))

    @classmethod
    def generate(cls) -> MLDSA44Signer:
        return cls(mldsa.MLDSA44PrivateKey.generate())


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


NoteKeySigner = Ed25519Signer | MLDSA44Signer


def verify_mldsa44(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid ML-DSA-44 signature of ``message`` by ``public_key``."""
    if len(public_key) != MLDSA44_PUBLIC_KEY_SIZE or len(signature) != MLDSA44_SIGNATURE_SIZE:
        return False
    try:
        mldsa.MLDSA44PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_note_key(algorithm: str, public_key: bytes, message: bytes, signature: bytes) -> bool:
    """:func:`verify_ed25519` or :func:`verify_mldsa44`, by ``algorithm``."""
    if algorithm == ED25519:
        return verify_ed25519(public_key, message, signature)
    if algorithm == MLDSA44:
        return verify_mldsa44(public_key, message, signature)
    return False


def public_key_size(algorithm: str) -> int:
    """The raw public key size of ``algorithm``; :class:`ValueError` for another."""
    sizes = {ED25519: PUBLIC_KEY_SIZE, MLDSA44: MLDSA44_PUBLIC_KEY_SIZE}
    if algorithm not in sizes:
        raise ValueError(f"unknown note key algorithm {algorithm!r}")
    return sizes[algorithm]


def ed25519_public_key_of(certificate: x509.Certificate) -> bytes:
    """The raw 32-byte Ed25519 public key a certificate binds; other algorithms refused."""
    key = certificate.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("certificate does not hold an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def mldsa44_public_key_of(certificate: x509.Certificate) -> bytes:
    """The raw 1312-byte ML-DSA-44 public key a certificate binds; others refused."""
    key = certificate.public_key()
    if not isinstance(key, mldsa.MLDSA44PublicKey):
        raise ValueError("certificate does not hold an ML-DSA-44 public key")
    return key.public_bytes_raw()


def audit_public_keys(bundle: TrustBundle) -> dict[str, bytes]:
    """The partner's raw audit-log public keys by algorithm, from its trust bundle."""
    return {
        ED25519: ed25519_public_key_of(bundle.audit_certificate),
        MLDSA44: mldsa44_public_key_of(bundle.audit_pq_certificate),
    }


def witness_public_keys(bundle: TrustBundle) -> dict[str, bytes]:
    """The partner's raw witness (cosigning) public keys by algorithm, from its bundle."""
    return {
        ED25519: ed25519_public_key_of(bundle.witness_certificate),
        MLDSA44: mldsa44_public_key_of(bundle.witness_pq_certificate),
    }


def load_audit_signers(directory: StateDirectory) -> tuple[Ed25519Signer, MLDSA44Signer]:
    """Our audit-log keys, from the state directory's ``audit.key`` and ``audit-pq.key``."""
    return (
        Ed25519Signer(load_private_key(directory.audit_key)),
        MLDSA44Signer(load_private_key(directory.audit_pq_key)),
    )


def load_witness_signers(directory: StateDirectory) -> tuple[Ed25519Signer, MLDSA44Signer]:
    """Our witness (cosigning) keys, from ``witness.key`` and ``witness-pq.key``."""
    return (
        Ed25519Signer(load_private_key(directory.witness_key)),
        MLDSA44Signer(load_private_key(directory.witness_pq_key)),
    )
