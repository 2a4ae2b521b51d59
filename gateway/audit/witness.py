"""The witness decision: whether to cosign a checkpoint of the partner's log.

The partner's gateway sends a checkpoint of its audit log (a signed note) and a
consistency proof from the last checkpoint of that log we cosigned. :func:`cosign`
decides, with no storage and no clock of its own; the caller passes what we last
saw and persists the new checkpoint before returning the cosignature, atomically
with reading ``last_seen`` (c2sp.org/tlog-witness explains the rollback race
otherwise possible).

Checks, in order; the first that fails refuses with :class:`CheckpointRefused`
carrying its reason code:

1. ``CHECKPOINT_MALFORMED``: the note or its body is not a signed note holding a
   checkpoint (or the proof is not a list of at most 63 SHA-256 hashes).
2. ``CHECKPOINT_SIGNATURE``: one of the partner's log keys (Ed25519 and ML-DSA-44)
   did not sign it, a signature line of those keys is invalid, or it names another
   log's origin. Lines of unknown
   keys are ignored and never count.
3. With ``old_size`` (c2sp.org/tlog-witness ``add-checkpoint``, which names the size
   the client believes we last cosigned): ``CHECKPOINT_MALFORMED`` if it exceeds the
   checkpoint's size, :class:`OldSizeMismatch` (``CHECKPOINT_OLD_SIZE``, carrying the
   size we did cosign) if it is not that size (0 when we never cosigned), and
   ``CHECKPOINT_INCONSISTENT`` for a proof sent from size 0.
4. ``CHECKPOINT_INCONSISTENT``: a checkpoint of size 0 whose root is not the empty
   tree's.
5. ``CHECKPOINT_ROLLBACK``: its tree is smaller than the last one we cosigned.
6. ``CHECKPOINT_INCONSISTENT``: same size but another root (a fork), or the
   consistency proof from the last cosigned tree fails (RFC 9162 section 2.1.4.2).

With no ``last_seen`` (first contact) there is nothing to be consistent with: the
checkpoint is cosigned and the proof is not consulted. Only then.

The peer API's ``CosignCheckpoint`` calls without ``old_size`` (the partner is told
the last cosigned size by ``GetCosignedCheckpoint``); the HTTP ``add-checkpoint``
endpoint with it. Both reach the same decision and the same record.

A refusal is evidence: the caller records it in the audit log
(``EventKind.CHECKPOINT_REFUSED`` with the reason code).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.audit.checkpoint import (
    Checkpoint,
    ForeignCheckpoint,
    MalformedCheckpoint,
    open_checkpoint,
)
from gateway.audit.cosignature import Cosignature, CosignatureSigner, cosign_all
from gateway.audit.merkle import verify_consistency
from gateway.audit.note import MalformedNote, NoteVerifier, UnverifiedNote
from gateway.errors import Rejected

CHECKPOINT_MALFORMED = "CHECKPOINT_MALFORMED"
CHECKPOINT_SIGNATURE = "CHECKPOINT_SIGNATURE"
CHECKPOINT_ROLLBACK = "CHECKPOINT_ROLLBACK"
CHECKPOINT_INCONSISTENT = "CHECKPOINT_INCONSISTENT"
CHECKPOINT_OLD_SIZE = "CHECKPOINT_OLD_SIZE"
REASONS = frozenset(
    {
        CHECKPOINT_MALFORMED,
        CHECKPOINT_SIGNATURE,
        CHECKPOINT_ROLLBACK,
        CHECKPOINT_INCONSISTENT,
        CHECKPOINT_OLD_SIZE,
    }
)
EMPTY_TREE_ROOT = hashlib.sha256(b"").digest()  # RFC 6962 section 2.1

HASH_SIZE = 32
MAX_PROOF_HASHES = 63  # c2sp.org/tlog-witness: a client sends at most 63 proof lines


class CheckpointRefused(Rejected):
    """We will not cosign this checkpoint; ``reason`` says which check failed."""

    reason = "CHECKPOINT_REFUSED"

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown checkpoint refusal reason {reason!r}")
        super().__init__(message, reason=reason)


class OldSizeMismatch(CheckpointRefused):
    """The client's old size is not the size we last cosigned (``cosigned_size``)."""

    def __init__(self, old_size: int, cosigned_size: int) -> None:
        super().__init__(
            CHECKPOINT_OLD_SIZE,
            f"old size {old_size} is not {cosigned_size}, the size last cosigned",
        )
        self.cosigned_size = cosigned_size


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint we cosigned and the cosignature lines to send back (one per key).

    ``note_text`` is the checkpoint with the partner log's verified signatures and our
    cosignatures: the published form. Lines of unknown keys are not carried over.
    """

    checkpoint: Checkpoint
    cosignatures: tuple[Cosignature, ...]
    note_text: str

    @property
    def lines(self) -> str:
        """Our cosignature lines, each ending in a newline: a witness's answer."""
        return "".join(c.line for c in self.cosignatures)


def cosign(
    note_text: str | bytes,
    consistency_proof: Sequence[bytes],
    *,
    origin: str,
    log_keys: Sequence[NoteVerifier],
    last_seen: tuple[int, bytes] | None,
    own_keys: Sequence[CosignatureSigner],
    now: datetime,
    old_size: int | None = None,
) -> Cosigned:
    """Cosign the partner's checkpoint if it extends ``last_seen``; see the module docstring.

    ``origin`` is the partner log's origin and ``log_keys`` its keys (each must have
    signed); ``own_keys`` are our witness keys, each of which cosigns;
    ``last_seen`` is ``(size, root_hash)`` of the last checkpoint of that log we
    cosigned, or ``None`` if we never did; ``old_size`` is the size the client says
    we last cosigned, checked when given.
    """
    if last_seen is not None:
        last_size, last_root = last_seen
        if last_size < 0 or len(last_root) != HASH_SIZE:
            raise ValueError("last_seen is (tree size >= 0, 32-byte root hash)")
    try:
        signed = open_checkpoint(note_text, origin=origin, log_keys=log_keys)
    except (MalformedNote, MalformedCheckpoint) as e:
        raise CheckpointRefused(CHECKPOINT_MALFORMED, e.message) from e
    except (UnverifiedNote, ForeignCheckpoint) as e:
        raise CheckpointRefused(CHECKPOINT_SIGNATURE, e.message) from e
    checkpoint = signed.checkpoint
    proof = list(consistency_proof)
    if len(proof) > MAX_PROOF_HASHES or not all(
        isinstance(h, bytes) and len(h) == HASH_SIZE for h in proof
    ):
        raise CheckpointRefused(
            CHECKPOINT_MALFORMED,
            f"a consistency proof is at most {MAX_PROOF_HASHES} hashes of {HASH_SIZE} bytes",
        )
    if old_size is not None:
        _check_old_size(checkpoint, proof, old_size, 0 if last_seen is None else last_seen[0])
    if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_TREE_ROOT:
        raise CheckpointRefused(
            CHECKPOINT_INCONSISTENT, "a checkpoint of size 0 has the empty tree's root hash"
        )
    if last_seen is not None:
        _check_extends(checkpoint, proof, *last_seen)
    cosignatures = cosign_all(own_keys, checkpoint, now)
    log_lines = "".join(s.line for key in log_keys for s in signed.note.signatures_of(key))
    ours = "".join(c.line for c in cosignatures)
    return Cosigned(
        checkpoint=checkpoint,
        cosignatures=cosignatures,
        note_text=f"{checkpoint.body()}\n{log_lines}{ours}",
    )


def _check_old_size(
    checkpoint: Checkpoint, proof: list[bytes], old_size: int, cosigned_size: int
) -> None:
    if old_size < 0 or old_size > checkpoint.size:
        raise CheckpointRefused(
            CHECKPOINT_MALFORMED,
            f"old size {old_size} is larger than the checkpoint's size {checkpoint.size}",
        )
    if old_size != cosigned_size:
        raise OldSizeMismatch(old_size, cosigned_size)
    if old_size == 0 and proof:
        raise CheckpointRefused(CHECKPOINT_INCONSISTENT, "a consistency proof from size 0 is empty")


def _check_extends(checkpoint: Checkpoint, proof: list[bytes], size: int, root: bytes) -> None:
    if checkpoint.size < size:
        raise CheckpointRefused(
            CHECKPOINT_ROLLBACK,
            f"checkpoint of size {checkpoint.size} is smaller than the {size} already "
            "cosigned: the partner's log was rolled back (a replaced database or an old "
            "backup)",
        )
    if checkpoint.size == size and checkpoint.root_hash != root:
        raise CheckpointRefused(
            CHECKPOINT_INCONSISTENT,
            f"checkpoint of size {size} has another root than the one already cosigned",
        )
    if not verify_consistency(size, checkpoint.size, proof, root, checkpoint.root_hash):
        raise CheckpointRefused(
            CHECKPOINT_INCONSISTENT,
            f"consistency proof from size {size} to {checkpoint.size} does not verify: the "
            "partner's log does not extend the checkpoint already cosigned",
        )
