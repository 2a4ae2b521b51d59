"""Cosignatures of checkpoints: C2SP tlog-cosignature, the Ed25519 ``cosignature/v1`` type.

A cosignature is a note signature line on the cosigned checkpoint::

    — <cosigner key name> base64(key ID || timestamp || Ed25519 signature)

* key ID = ``SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]`` (type 0x04);
* timestamp = 8 bytes, big-endian POSIX seconds, at most 2^63 - 1;
* the signature is over ``cosignature/v1\\ntime <timestamp>\\n`` followed by the whole
  checkpoint body (:func:`cosigned_message`), extension lines included.

Semantics (the specification's): as of the timestamp, this is the largest tree
consistent with everything the cosigner has seen of the log with this origin.
In Pouch the partner's gateway is the cosigner, with its audit key.

Guarantees: :func:`verify_cosignature` and :func:`open_published_checkpoint` return
only after the Ed25519 signature verified over *this* checkpoint body at the
timestamp the line carries; a cosignature of another tree, origin or time fails
(:class:`InvalidCosignature`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from gateway.audit.checkpoint import (
    Checkpoint,
    MalformedCheckpoint,
    open_checkpoint,
    witness_key_name,
)
from gateway.audit.note import (
    MalformedNote,
    NoteSignature,
    NoteVerifier,
    UnverifiedNote,
    VerifierKey,
    parse_signature_line,
    validate_key_name,
)
from gateway.errors import Rejected
from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.ed25519_notes import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    SIGNATURE_TYPE_COSIGNATURE_V1,
    Ed25519Signer,
    load_witness_signer,
    note_key_id,
    verify_ed25519,
    witness_public_key,
)
from gateway.pki.keys import PrivateKey, as_utc

HEADER = "cosignature/v1"
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP_SIZE = 8


class MalformedCosignature(Rejected):
    reason = "COSIGNATURE_MALFORMED"
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidCosignature(Rejected):
    """The cosignature is not the named cosigner's over this checkpoint."""

    reason = "COSIGNATURE_INVALID"
    code = grpc.StatusCode.PERMISSION_DENIED


def cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """The bytes an Ed25519 ``cosignature/v1`` signs."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is between 0 and 2^63 - 1")
    return f"{HEADER}\ntime {timestamp}\n{checkpoint.body()}".encode()


def unix_seconds(moment: datetime) -> int:
    """Whole POSIX seconds of an aware datetime (a naive one is refused)."""
    seconds = int(as_utc(moment).timestamp())
    if not 0 <= seconds <= MAX_TIMESTAMP:
        raise ValueError("a cosignature time is after the epoch")
    return seconds


@dataclass(frozen=True)
class Cosignature:
    key_name: str
    key_id: int
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        validate_key_name(self.key_name)
        if not 0 <= self.key_id <= 0xFFFFFFFF:
            raise ValueError("a note key ID is an unsigned 32-bit integer")
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise ValueError("a cosignature timestamp is between 0 and 2^63 - 1")
        if len(self.signature) != SIGNATURE_SIZE:
            raise ValueError("an Ed25519 cosignature carries a 64-byte signature")

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    @property
    def note_signature(self) -> NoteSignature:
        timestamp = self.timestamp.to_bytes(_TIMESTAMP_SIZE, "big")
        return NoteSignature(self.key_name, self.key_id, timestamp + self.signature)

    @property
    def line(self) -> str:
        """The note signature line, with its final newline."""
        return self.note_signature.line

    @classmethod
    def from_note_signature(cls, signature: NoteSignature) -> Cosignature:
        raw = signature.signature
        if len(raw) != _TIMESTAMP_SIZE + SIGNATURE_SIZE:
            raise MalformedCosignature(
                f"cosignature by {signature.key_name!r} is not timestamp || Ed25519 signature"
            )
        timestamp = int.from_bytes(raw[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise MalformedCosignature(f"cosignature by {signature.key_name!r}: timestamp > 2^63-1")
        return cls(signature.key_name, signature.key_id, timestamp, raw[_TIMESTAMP_SIZE:])

    @classmethod
    def parse_line(cls, line: str) -> Cosignature:
        return cls.from_note_signature(parse_signature_line(line))


@dataclass(frozen=True)
class CosignatureVerifier:
    """A known cosigner (type 0x04); also a :class:`~gateway.audit.note.NoteVerifier`."""

    key_name: str
    public_key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        validate_key_name(self.key_name)
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("an Ed25519 public key is 32 bytes")
        key_id = note_key_id(self.key_name, SIGNATURE_TYPE_COSIGNATURE_V1, self.public_key)
        object.__setattr__(self, "key_id", key_id)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Note-level check: ``signature`` is timestamp || Ed25519 over checkpoint ``text``."""
        if len(signature) != _TIMESTAMP_SIZE + SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        try:
            checkpoint = Checkpoint.parse(text.decode("utf-8"))
        except (UnicodeDecodeError, MalformedCheckpoint):
            return False  # a cosignature only ever vouches for a checkpoint
        if timestamp > MAX_TIMESTAMP or checkpoint.body().encode() != text:
            return False
        message = cosigned_message(checkpoint, timestamp)
        return verify_ed25519(self.public_key, message, signature[_TIMESTAMP_SIZE:])

    @classmethod
    def from_vkey(cls, vkey: str | VerifierKey) -> CosignatureVerifier:
        key = vkey if isinstance(vkey, VerifierKey) else VerifierKey.parse(vkey)
        if key.signature_type != SIGNATURE_TYPE_COSIGNATURE_V1:
            raise ValueError(f"verifier key {key.key_name!r} is not of type 0x04 (cosignature/v1)")
        return cls(key.key_name, key.public_key)

    @property
    def vkey(self) -> VerifierKey:
        return VerifierKey(self.key_name, SIGNATURE_TYPE_COSIGNATURE_V1, self.public_key)


class CosignatureSigner:
    """Cosigns checkpoints with an Ed25519 key under a cosigner key name."""

    def __init__(self, key_name: str, private_key: PrivateKey | Ed25519Signer) -> None:
        self._key_name = validate_key_name(key_name)
        self._key = (
            private_key if isinstance(private_key, Ed25519Signer) else Ed25519Signer(private_key)
        )
        self._key_id = note_key_id(key_name, SIGNATURE_TYPE_COSIGNATURE_V1, self._key.public_key)

    @classmethod
    def for_state(cls, directory: StateDirectory) -> CosignatureSigner:
        """This state as cosigner (witness), with the key in its ``witness.key``."""
        return cls(witness_key_name(directory.state), load_witness_signer(directory))

    @property
    def key_name(self) -> str:
        return self._key_name

    @property
    def key_id(self) -> int:
        return self._key_id

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self._key_name, self._key.public_key)

    def cosign(self, checkpoint: Checkpoint, now: datetime) -> Cosignature:
        timestamp = unix_seconds(now)
        signature = self._key.sign(cosigned_message(checkpoint, timestamp))
        return Cosignature(self._key_name, self._key_id, timestamp, signature)


def verify_cosignature(
    checkpoint: Checkpoint,
    cosignature: Cosignature | str,
    cosigner: CosignatureVerifier,
    *,
    not_after: datetime | None = None,
) -> Cosignature:
    """Check that ``cosigner`` cosigned ``checkpoint``; ``cosignature`` may be its line.

    With ``not_after``, a cosignature timestamped later is refused (the
    specification lets verifiers reject timestamps in the future).
    """
    if isinstance(cosignature, str):
        try:
            cosignature = Cosignature.parse_line(cosignature)
        except MalformedNote as e:
            raise MalformedCosignature(f"not a cosignature line: {e.message}") from e
    if (cosignature.key_name, cosignature.key_id) != (cosigner.key_name, cosigner.key_id):
        raise InvalidCosignature(
            f"cosignature by {cosignature.key_name}+{cosignature.key_id:08x}, "
            f"not by {cosigner.key_name}+{cosigner.key_id:08x}"
        )
    if not_after is not None and cosignature.timestamp > unix_seconds(not_after):
        raise InvalidCosignature("cosignature is timestamped in the future")
    message = cosigned_message(checkpoint, cosignature.timestamp)
    if not verify_ed25519(cosigner.public_key, message, cosignature.signature):
        raise InvalidCosignature(f"cosignature by {cosigner.key_name} does not verify")
    return cosignature


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A checkpoint carrying both the log's signature and the cosigner's: published."""

    checkpoint: Checkpoint
    log_signature: NoteSignature
    cosignature: Cosignature


def open_published_checkpoint(
    note_text: str | bytes,
    *,
    origin: str,
    log_key: NoteVerifier,
    cosigner: CosignatureVerifier,
) -> PublishedCheckpoint:
    """Verify a checkpoint note that must carry both the log's and the cosigner's signature."""
    signed = open_checkpoint(note_text, origin=origin, log_key=log_key, other_keys=[cosigner])
    cosignatures = signed.note.signatures_of(cosigner)
    if not cosignatures:
        raise UnverifiedNote(f"checkpoint is not cosigned by {cosigner.key_name}")
    return PublishedCheckpoint(
        signed.checkpoint,
        signed.note.signatures_of(log_key)[0],
        Cosignature.from_note_signature(cosignatures[0]),
    )


def partner_cosigner(bundle: TrustBundle) -> CosignatureVerifier:
    """The partner as cosigner of our checkpoints, from its trust bundle's witness
    certificate (never its audit-log key: one key, one role)."""
    return CosignatureVerifier(witness_key_name(bundle.state), witness_public_key(bundle))
