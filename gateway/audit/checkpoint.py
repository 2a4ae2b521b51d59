"""Checkpoints of the audit log: C2SP tlog-checkpoint bodies in C2SP signed notes.

Body (c2sp.org/tlog-checkpoint v1.0.0), every line ending in a newline::

    pouch.gateway/FR/audit                        origin
    1234                                          tree size, decimal, no leading zeroes
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=  base64 RFC 6962 root hash
    <extension lines>                             optional, opaque, non-empty

Naming. A state's log has origin ``pouch.gateway/<CC>/audit`` (:func:`audit_origin`)
and its audit key signs under the key name ``pouch-<cc>-audit``
(:func:`audit_key_name`). The specification says the log's key name SHOULD match
its origin; Pouch departs from that because the one audit key of a state signs
under the one name in two roles: type 0x01 signatures on its own checkpoints and
type 0x04 cosignatures on the partner's (c2sp.org/tlog-cosignature). The type byte
in the key ID keeps the two apart, and the origin never begins with
``cosignature/``, so no checkpoint we sign can be read as a cosignature.

Guarantees:

* :meth:`Checkpoint.parse` accepts exactly the format above with a 32-byte
  (SHA-256) root hash and canonical base64, else :class:`MalformedCheckpoint`;
  ``Checkpoint.parse(c.body()) == c``.
* :func:`open_checkpoint` returns a :class:`SignedCheckpoint` only if the log's own
  key signed it (other known keys are not enough) and its origin is the log's.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from gateway.audit.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    NoteVerifier,
    UnverifiedNote,
    VerifiedNote,
    decode_canonical_base64,
    open_note,
    sign_note,
)
from gateway.errors import Rejected
from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.ed25519_notes import Ed25519Signer, audit_public_key, load_audit_signer
from gateway.pki.identity import validate_state_code
from gateway.pki.keys import PrivateKey

ROOT_HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
# Reserved so that no checkpoint signed by an audit key reads as a cosigned message.
_COSIGNATURE_PREFIX = "cosignature/"


class MalformedCheckpoint(Rejected):
    """The note text is not a checkpoint body."""

    reason = "CHECKPOINT_MALFORMED"
    code = grpc.StatusCode.INVALID_ARGUMENT


class ForeignCheckpoint(Rejected):
    """A checkpoint signed by the log key but naming another log's origin."""

    reason = "CHECKPOINT_ORIGIN"
    code = grpc.StatusCode.PERMISSION_DENIED


def audit_origin(state: str) -> str:
    """The origin line of ``state``'s audit log: ``pouch.gateway/<CC>/audit``."""
    return f"pouch.gateway/{validate_state_code(state)}/audit"


def audit_key_name(state: str) -> str:
    """The note key name of ``state``'s audit (log-signing) key: ``pouch-<cc>-audit``."""
    return f"pouch-{validate_state_code(state).lower()}-audit"


def witness_key_name(state: str) -> str:
    """The note key name of ``state``'s witness (cosigning) key: ``pouch-<cc>-witness``."""
    return f"pouch-{validate_state_code(state).lower()}-witness"


def _is_line(value: str) -> bool:
    return bool(value) and not any(ord(ch) < 0x20 for ch in value)


@dataclass(frozen=True)
class Checkpoint:
    """A Merkle tree head of one log: origin, size, root hash, opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _is_line(self.origin):
            raise ValueError("a checkpoint origin is one non-empty line")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("a checkpoint tree size is an unsigned 64-bit integer")
        if len(self.root_hash) != ROOT_HASH_SIZE:
            raise ValueError("a checkpoint root hash is 32 bytes (SHA-256)")
        if not all(_is_line(line) for line in self.extensions):
            raise ValueError("checkpoint extension lines are non-empty lines")
        try:
            self.body().encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError("a checkpoint is UTF-8 text") from e

    def body(self) -> str:
        """The note text: origin, size, base64 root and extensions, each newline-ended."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        if not body.endswith("\n"):
            raise MalformedCheckpoint("a checkpoint body ends with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedCheckpoint("a checkpoint body has origin, size and root hash lines")
        origin, size, root, *extensions = lines
        if _SIZE.fullmatch(size) is None:
            raise MalformedCheckpoint("checkpoint tree size is decimal without leading zeroes")
        try:
            root_hash = decode_canonical_base64(root)
            return cls(origin, int(size), root_hash, tuple(extensions))
        except ValueError as e:
            raise MalformedCheckpoint(f"malformed checkpoint: {e}") from e


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose note the log's key verified. Made only by :func:`open_checkpoint`."""

    checkpoint: Checkpoint
    note: VerifiedNote


def open_checkpoint(
    note_text: str | bytes,
    *,
    origin: str,
    log_key: NoteVerifier,
    other_keys: Sequence[NoteVerifier] = (),
) -> SignedCheckpoint:
    """Verify a checkpoint note of the log ``origin`` signed by ``log_key``.

    ``other_keys`` (witnesses) are verified too when their lines are present, but
    only ``log_key``'s signature makes the note a checkpoint of the log. Raises
    :class:`~gateway.audit.note.MalformedNote`, :class:`~gateway.audit.note.UnverifiedNote`,
    :class:`MalformedCheckpoint` or :class:`ForeignCheckpoint`.
    """
    note = open_note(note_text, [log_key, *other_keys])
    if not note.signed_by(log_key):
        raise UnverifiedNote(
            f"checkpoint is not signed by log key {log_key.key_name}+{log_key.key_id:08x}"
        )
    checkpoint = Checkpoint.parse(note.text)
    if checkpoint.origin != origin:
        raise ForeignCheckpoint(
            f"checkpoint of origin {checkpoint.origin!r} where {origin!r} was expected"
        )
    return SignedCheckpoint(checkpoint, note)


class CheckpointSigner:
    """Signs this state's checkpoints: ``sign(checkpoint)`` gives the signed note text."""

    def __init__(self, origin: str, key_name: str, private_key: PrivateKey | Ed25519Signer) -> None:
        if not _is_line(origin) or origin.startswith(_COSIGNATURE_PREFIX):
            raise ValueError(f"origin {origin!r} is not a line or is reserved for cosignatures")
        key = private_key if isinstance(private_key, Ed25519Signer) else Ed25519Signer(private_key)
        self._origin = origin
        self._signer = Ed25519NoteSigner(key_name, key)

    @classmethod
    def for_state(cls, directory: StateDirectory) -> CheckpointSigner:
        """The signer of the state's log, with the key in its ``audit.key``."""
        state = directory.state
        return cls(audit_origin(state), audit_key_name(state), load_audit_signer(directory))

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def key_name(self) -> str:
        return self._signer.key_name

    @property
    def key_id(self) -> int:
        return self._signer.key_id

    def verifier(self) -> Ed25519NoteVerifier:
        return self._signer.verifier()

    def sign(self, checkpoint: Checkpoint) -> str:
        if checkpoint.origin != self._origin:
            raise ValueError(f"this signer signs checkpoints of {self._origin!r} only")
        return sign_note(checkpoint.body(), self._signer).serialize()


def partner_log_key(bundle: TrustBundle) -> Ed25519NoteVerifier:
    """The partner's log key, from the audit certificate of its trust bundle."""
    return Ed25519NoteVerifier(audit_key_name(bundle.state), audit_public_key(bundle))
