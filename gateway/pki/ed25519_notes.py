"""Ed25519 for signed notes: the only place the audit log touches ``cryptography.hazmat``.

The audit log signs checkpoints as C2SP signed notes (c2sp.org/signed-note) and
cosigns the partner's checkpoints as C2SP cosignatures (c2sp.org/tlog-cosignature).
Both are Ed25519 over bytes that ``gateway/audit`` builds; this module only holds
the key and runs the primitive, so ``gateway/audit`` never sees a hazmat type.

Guarantees:

* :class:`Ed25519Signer` wraps an Ed25519 private key and nothing else: an ECDSA key
  (the other algorithm :func:`gateway.pki.keys.load_private_key` accepts) is refused
  with :class:`ValueError`, so an audit signature is never made with the wrong key.
* Public keys cross the boundary as their raw 32-byte RFC 8032 encoding, which is
  also what note key IDs hash (:func:`note_key_id`).
* :func:`verify_ed25519` answers ``True`` or ``False`` and never raises on hostile
  input (wrong lengths, bytes that are not a curve point): a verifier of untrusted
  notes must not be crashable by them.
* The partner's audit public key is read only from its trust bundle's audit
  certificate (:func:`audit_public_key`), never from the note being verified.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import PrivateKey, load_private_key

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64

# Signature type bytes assigned by c2sp.org/signed-note ("Signature types").
SIGNATURE_TYPE_ED25519 = 0x01
SIGNATURE_TYPE_COSIGNATURE_V1 = 0x04


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


class Ed25519Signer:
    """An Ed25519 private key that signs bytes and shows only its raw public key."""

    __slots__ = ("_key", "_public_key")

    def __init__(self, key: PrivateKey) -> None:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("audit notes are signed with Ed25519 keys only")
        self._key = key
        self._public_key = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """The key whose RFC 8032 32-byte private seed is ``seed``."""
        if len(seed) != PUBLIC_KEY_SIZE:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        """The 64-byte RFC 8032 signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        # Never show key material, not even through a debugger or a log line.
        return f"Ed25519Signer(public_key={self._public_key.hex()})"


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def ed25519_public_key_of(certificate: x509.Certificate) -> bytes:
    """The raw 32-byte Ed25519 public key a certificate binds; other algorithms refused."""
    key = certificate.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("certificate does not hold an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def audit_public_key(bundle: TrustBundle) -> bytes:
    """The partner's raw audit-log public key, from its trust bundle's audit certificate."""
    return ed25519_public_key_of(bundle.audit_certificate)


def load_audit_signer(directory: StateDirectory) -> Ed25519Signer:
    """Our audit-log key, from the state directory's ``audit.key``."""
    return Ed25519Signer(load_private_key(directory.audit_key))


def witness_public_key(bundle: TrustBundle) -> bytes:
    """The partner's raw witness (cosigning) public key, from its witness certificate."""
    return ed25519_public_key_of(bundle.witness_certificate)


def load_witness_signer(directory: StateDirectory) -> Ed25519Signer:
    """Our witness (cosigning) key, from the state directory's ``witness.key``."""
    return Ed25519Signer(load_private_key(directory.witness_key))
