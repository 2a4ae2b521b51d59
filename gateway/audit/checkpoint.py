"""Checkpoints of the audit log: C2SP tlog-checkpoint bodies in C2SP signed notes.

Body (c2sp.org/tlog-checkpoint v1.0.0), every line ending in a newline::

    pouch.gateway/FR/audit                        origin
    1234                                          tree size, decimal, no leading zeroes
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=  base64 RFC 6962 root hash
    <extension lines>                             optional, opaque, non-empty

Naming. A state's log has origin ``pouch.gateway/<CC>/audit`` (:func:`audit_origin`);
its audit keys sign under the key name ``pouch-<cc>-audit`` (:func:`audit_key_name`)
and its witness keys cosign partners' logs under ``pouch-<cc>-witness``
(:func:`witness_key_name`). Each role has its own keys, so a name says the role
(:mod:`gateway.audit.log_signing` signs). The origin never begins with
``cosignature/``, so no checkpoint can be read as an Ed25519 cosigned message.

Guarantees:

* :meth:`Checkpoint.parse` accepts exactly the format above with a 32-byte
  (SHA-256) root hash and canonical base64, else :class:`MalformedCheckpoint`;
  ``Checkpoint.parse(c.body()) == c``.
* :func:`open_checkpoint` returns a :class:`SignedCheckpoint` only if every one of
  the log's own keys signed it (other known keys are not enough) and its origin is
  the log's.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from gateway.audit.note import (
    NoteVerifier,
    UnverifiedNote,
    VerifiedNote,
    decode_canonical_base64,
    open_note,
)
from gateway.errors import Rejected
from gateway.pki.identity import validate_state_code

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
    log_keys: Sequence[NoteVerifier],
    other_keys: Sequence[NoteVerifier] = (),
) -> SignedCheckpoint:
    """Verify a checkpoint note of the log ``origin`` signed by each of ``log_keys``.

    ``other_keys`` (witnesses) are verified too when their lines are present, but
    only the log's own signatures make the note a checkpoint of the log. Raises
    :class:`~gateway.audit.note.MalformedNote`, :class:`~gateway.audit.note.UnverifiedNote`,
    :class:`MalformedCheckpoint` or :class:`ForeignCheckpoint`.
    """
    if not log_keys:
        raise ValueError("a checkpoint is opened with the log's keys")
    note = open_note(note_text, [*log_keys, *other_keys])
    for log_key in log_keys:
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


def check_origin(origin: str) -> str:
    """``origin`` if a log may sign checkpoints under it: one line, and not reserved."""
    if not _is_line(origin) or origin.startswith(_COSIGNATURE_PREFIX):
        raise ValueError(f"origin {origin!r} is not a line or is reserved for cosignatures")
    return origin
