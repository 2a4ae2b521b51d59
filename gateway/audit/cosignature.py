"""Cosignatures of checkpoints: C2SP tlog-cosignature, both of its types.

A cosignature is a note signature line on the cosigned checkpoint::

    — <cosigner key name> base64(key ID || timestamp || signature)

with an 8-byte big-endian POSIX timestamp (at most 2^63 - 1), and one of:

* **Ed25519** (type 0x04): key ID = ``SHA-256(name || 0x0A || 0x04 || 32-byte key)[:4]``,
  signature over ``cosignature/v1\ntime <timestamp>\n`` followed by the whole
  checkpoint body, extension lines included (:func:`ed25519_cosigned_message`).
* **ML-DSA-44** (type 0x06): key ID = ``SHA-256(name || 0x0A || 0x06 || 1312-byte
  key)[:4]``, signature over the ``cosigned_message`` structure: ``subtree/v1\n\0``,
  the cosigner's name, the timestamp, the log's origin, start 0, end = tree size and
  the root hash (:func:`mldsa44_cosigned_message`). It commits to the cosigner's
  name, so a line relabelled with another name never verifies; extension lines are
  not signed.

Semantics (the specification's): as of the timestamp, this is the largest tree
consistent with everything the cosigner has seen of the log with this origin. In
Pouch each partner's gateway is a cosigner, with its witness keys, and cosigns with
both types; a log also signs its own checkpoints with an ML-DSA-44 cosignature under
its log key name (as the issuance logs of draft-ietf-plants-merkle-tree-certs do),
beside its Ed25519 note signature, since c2sp.org/signed-note assigns no other
post-quantum type.

Guarantees: :func:`verify_cosignature` and a :class:`CosignatureVerifier` used as a
note key return success only after the signature verified over *this* checkpoint at
the timestamp the line carries; a cosignature of another tree, origin, time or
cosigner name fails (:class:`InvalidCosignature`, or ``False``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc

from gateway.audit.checkpoint import (
    Checkpoint,
    MalformedCheckpoint,
    witness_key_name,
)
from gateway.audit.note import (
    MalformedNote,
    NoteSignature,
    VerifierKey,
    parse_signature_line,
    validate_key_name,
)
from gateway.errors import Rejected
from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import as_utc
from gateway.pki.note_keys import (
    ED25519,
    MLDSA44,
    MLDSA44_SIGNATURE_SIZE,
    SIGNATURE_SIZE,
    SIGNATURE_TYPE_COSIGNATURE_MLDSA44,
    SIGNATURE_TYPE_COSIGNATURE_V1,
    NoteKeySigner,
    load_witness_signers,
    note_key_id,
    public_key_size,
    verify_note_key,
    witness_public_keys,
)

HEADER = "cosignature/v1"
SUBTREE_LABEL = b"subtree/v1\n\x00"
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP_SIZE = 8
SIGNATURE_TYPES = {
    ED25519: SIGNATURE_TYPE_COSIGNATURE_V1,
    MLDSA44: SIGNATURE_TYPE_COSIGNATURE_MLDSA44,
}
_ALGORITHM_OF_TYPE = {t: a for a, t in SIGNATURE_TYPES.items()}
_SIGNATURE_SIZES = {ED25519: SIGNATURE_SIZE, MLDSA44: MLDSA44_SIGNATURE_SIZE}


class MalformedCosignature(Rejected):
    reason = "COSIGNATURE_MALFORMED"
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidCosignature(Rejected):
    """The cosignature is not the named cosigner's over this checkpoint."""

    reason = "COSIGNATURE_INVALID"
    code = grpc.StatusCode.PERMISSION_DENIED


def _check_timestamp(timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp is between 0 and 2^63 - 1")


def ed25519_cosigned_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """The bytes an Ed25519 ``cosignature/v1`` signs."""
    _check_timestamp(timestamp)
    return f"{HEADER}\ntime {timestamp}\n{checkpoint.body()}".encode()


def mldsa44_cosigned_message(cosigner_name: str, checkpoint: Checkpoint, timestamp: int) -> bytes:
    """The ``cosigned_message`` an ML-DSA-44 cosignature of a whole checkpoint signs."""
    _check_timestamp(timestamp)
    name = cosigner_name.encode("utf-8")
    origin = checkpoint.origin.encode("utf-8")
    if not (1 <= len(name) <= 255 and 1 <= len(origin) <= 255):
        raise ValueError("a cosigner name and a log origin are 1 to 255 bytes")
    return b"".join(
        (
            SUBTREE_LABEL,
            bytes([len(name)]),
            name,
            struct.pack(">Q", timestamp),
            bytes([len(origin)]),
            origin,
            struct.pack(">QQ", 0, checkpoint.size),
            checkpoint.root_hash,
        )
    )


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
        _check_timestamp(self.timestamp)
        if len(self.signature) not in _SIGNATURE_SIZES.values():
            raise ValueError("a cosignature carries an Ed25519 or an ML-DSA-44 signature")

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
        if len(raw) - _TIMESTAMP_SIZE not in _SIGNATURE_SIZES.values():
            raise MalformedCosignature(
                f"cosignature by {signature.key_name!r} is not timestamp || signature"
            )
        timestamp = int.from_bytes(raw[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise MalformedCosignature(f"cosignature by {signature.key_name!r}: timestamp > 2^63-1")
        return cls(signature.key_name, signature.key_id, timestamp, raw[_TIMESTAMP_SIZE:])

    @classmethod
    def parse_line(cls, line: str) -> Cosignature:
        return cls.from_note_signature(parse_signature_line(line))


def parse_lines(text: str) -> tuple[Cosignature, ...]:
    """One or more cosignature lines, each ending in a newline (a witness's answer)."""
    if not text.endswith("\n"):
        raise MalformedCosignature("cosignature lines end with a newline")
    try:
        return tuple(Cosignature.parse_line(line) for line in text[:-1].split("\n"))
    except MalformedNote as e:
        raise MalformedCosignature(f"not a cosignature line: {e.message}") from e


@dataclass(frozen=True)
class CosignatureVerifier:
    """A known cosigner key (type 0x04 Ed25519 or 0x06 ML-DSA-44); also a
    :class:`~gateway.audit.note.NoteVerifier`."""

    key_name: str
    public_key: bytes
    algorithm: str = ED25519
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        validate_key_name(self.key_name)
        if self.algorithm not in SIGNATURE_TYPES:
            raise ValueError(f"a cosigner key is Ed25519 or ML-DSA-44, not {self.algorithm!r}")
        if len(self.public_key) != public_key_size(self.algorithm):
            raise ValueError(
                f"an {self.algorithm} public key is {public_key_size(self.algorithm)} bytes"
            )
        key_id = note_key_id(self.key_name, self.signature_type, self.public_key)
        object.__setattr__(self, "key_id", key_id)

    @property
    def signature_type(self) -> int:
        return SIGNATURE_TYPES[self.algorithm]

    def message(self, checkpoint: Checkpoint, timestamp: int) -> bytes:
        """What this key signs for ``checkpoint`` at ``timestamp``."""
        if self.algorithm == MLDSA44:
            return mldsa44_cosigned_message(self.key_name, checkpoint, timestamp)
        return ed25519_cosigned_message(checkpoint, timestamp)

    def check(self, checkpoint: Checkpoint, timestamp: int, signature: bytes) -> bool:
        try:
            message = self.message(checkpoint, timestamp)
        except ValueError:
            return False
        return verify_note_key(self.algorithm, self.public_key, message, signature)

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Note-level check: ``signature`` is timestamp || signature over checkpoint ``text``."""
        if len(signature) != _TIMESTAMP_SIZE + _SIGNATURE_SIZES[self.algorithm]:
            return False
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        try:
            checkpoint = Checkpoint.parse(text.decode("utf-8"))
        except (UnicodeDecodeError, MalformedCheckpoint):
            return False  # a cosignature only ever vouches for a checkpoint
        if timestamp > MAX_TIMESTAMP or checkpoint.body().encode() != text:
            return False
        return self.check(checkpoint, timestamp, signature[_TIMESTAMP_SIZE:])

    @classmethod
    def from_vkey(cls, vkey: str | VerifierKey) -> CosignatureVerifier:
        key = vkey if isinstance(vkey, VerifierKey) else VerifierKey.parse(vkey)
        algorithm = _ALGORITHM_OF_TYPE.get(key.signature_type)
        if algorithm is None:
            raise ValueError(
                f"verifier key {key.key_name!r} is not of type 0x04 (Ed25519 cosignature) "
                "or 0x06 (ML-DSA-44 cosignature)"
            )
        return cls(key.key_name, key.public_key, algorithm)

    @property
    def vkey(self) -> VerifierKey:
        return VerifierKey(self.key_name, self.signature_type, self.public_key)


class CosignatureSigner:
    """Cosigns checkpoints with an Ed25519 or an ML-DSA-44 key under a key name."""

    def __init__(self, key_name: str, key: NoteKeySigner) -> None:
        self._key = key
        self._verifier = CosignatureVerifier(
            validate_key_name(key_name), key.public_key, key.algorithm
        )

    @property
    def key_name(self) -> str:
        return self._verifier.key_name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def algorithm(self) -> str:
        return self._verifier.algorithm

    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def cosign(self, checkpoint: Checkpoint, now: datetime) -> Cosignature:
        timestamp = unix_seconds(now)
        signature = self._key.sign(self._verifier.message(checkpoint, timestamp))
        return Cosignature(self.key_name, self.key_id, timestamp, signature)


def witness_signers(directory: StateDirectory) -> tuple[CosignatureSigner, CosignatureSigner]:
    """This state as cosigner (witness): its Ed25519 and ML-DSA-44 witness keys."""
    name = witness_key_name(directory.state)
    ed25519_key, mldsa_key = load_witness_signers(directory)
    return CosignatureSigner(name, ed25519_key), CosignatureSigner(name, mldsa_key)


def cosign_all(
    signers: Sequence[CosignatureSigner], checkpoint: Checkpoint, now: datetime
) -> tuple[Cosignature, ...]:
    """Every signer's cosignature of ``checkpoint`` at ``now``."""
    return tuple(signer.cosign(checkpoint, now) for signer in signers)


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
    if not cosigner.check(checkpoint, cosignature.timestamp, cosignature.signature):
        raise InvalidCosignature(
            f"{cosigner.algorithm} cosignature by {cosigner.key_name} does not verify"
        )
    return cosignature


def verify_cosignatures(
    checkpoint: Checkpoint, lines: str, cosigners: Sequence[CosignatureVerifier]
) -> tuple[Cosignature, ...]:
    """A witness's answer: one line by each of ``cosigners`` (all required), each
    verified over ``checkpoint``; lines of other keys are ignored, as notes require.
    Returns the verified cosignatures in the order of ``cosigners``."""
    parsed = parse_lines(lines)
    verified = []
    for cosigner in cosigners:
        mine = [c for c in parsed if (c.key_name, c.key_id) == (cosigner.key_name, cosigner.key_id)]
        if not mine:
            raise InvalidCosignature(
                f"no {cosigner.algorithm} cosignature by {cosigner.key_name}+{cosigner.key_id:08x}"
            )
        verified.append(verify_cosignature(checkpoint, mine[0], cosigner))
    return tuple(verified)


def partner_cosigners(bundle: TrustBundle) -> tuple[CosignatureVerifier, CosignatureVerifier]:
    """The partner as cosigner of our checkpoints: its Ed25519 and ML-DSA-44 witness keys,
    from its trust bundle's witness certificates (never its audit-log keys: one key, one
    role)."""
    name = witness_key_name(bundle.state)
    keys = witness_public_keys(bundle)
    return (
        CosignatureVerifier(name, keys[ED25519], ED25519),
        CosignatureVerifier(name, keys[MLDSA44], MLDSA44),
    )
