"""The keys of a state's own log: signing its checkpoints, and a partner's log keys.

A checkpoint of a Pouch log carries two signatures by the log, under its key name
``pouch-<cc>-audit``:

* an Ed25519 note signature (c2sp.org/signed-note type 0x01) over the checkpoint
  body, which every signed-note verifier reads;
* an ML-DSA-44 cosignature by the log itself (c2sp.org/tlog-cosignature type 0x06),
  timestamped when the checkpoint is signed, so the log's own statement survives a
  quantum adversary.

Guarantees: :meth:`CheckpointSigner.sign` gives a note that
:func:`~gateway.audit.checkpoint.open_checkpoint` opens with :meth:`CheckpointSigner.verifiers`
(both signatures required), and signs only checkpoints of its own origin;
:func:`partner_log_keys` takes a partner's log keys from its trust bundle only.
"""

from __future__ import annotations

from datetime import datetime

from gateway.audit.checkpoint import Checkpoint, audit_key_name, audit_origin, check_origin
from gateway.audit.cosignature import CosignatureSigner, CosignatureVerifier
from gateway.audit.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    Note,
    signature_by,
)
from gateway.pki.bundle import TrustBundle
from gateway.pki.directory import StateDirectory
from gateway.pki.note_keys import (
    ED25519,
    MLDSA44,
    Ed25519Signer,
    MLDSA44Signer,
    audit_public_keys,
    load_audit_signers,
)

LogKey = Ed25519NoteVerifier | CosignatureVerifier


class CheckpointSigner:
    """Signs this state's checkpoints: ``sign(checkpoint, now)`` gives the signed note."""

    def __init__(
        self, origin: str, key_name: str, ed25519_key: Ed25519Signer, mldsa_key: MLDSA44Signer
    ) -> None:
        if ed25519_key.algorithm != ED25519 or mldsa_key.algorithm != MLDSA44:
            raise ValueError("a checkpoint signer holds an Ed25519 key and an ML-DSA-44 key")
        self._origin = check_origin(origin)
        self._ed25519 = Ed25519NoteSigner(key_name, ed25519_key)
        self._mldsa = CosignatureSigner(key_name, mldsa_key)

    @classmethod
    def for_state(cls, directory: StateDirectory) -> CheckpointSigner:
        """The signer of the state's log, with the keys in ``audit.key`` and ``audit-pq.key``."""
        state = directory.state
        return cls(audit_origin(state), audit_key_name(state), *load_audit_signers(directory))

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def key_name(self) -> str:
        return self._ed25519.key_name

    def verifiers(self) -> tuple[Ed25519NoteVerifier, CosignatureVerifier]:
        """The log's keys, Ed25519 first: what opens the notes this signer makes."""
        return self._ed25519.verifier(), self._mldsa.verifier()

    def sign(self, checkpoint: Checkpoint, now: datetime) -> str:
        if checkpoint.origin != self._origin:
            raise ValueError(f"this signer signs checkpoints of {self._origin!r} only")
        text = checkpoint.body()
        ed25519_line = signature_by(self._ed25519, text)
        mldsa_line = self._mldsa.cosign(checkpoint, now).note_signature
        return Note(text, (ed25519_line, mldsa_line)).serialize()


def partner_log_keys(bundle: TrustBundle) -> tuple[Ed25519NoteVerifier, CosignatureVerifier]:
    """The partner's log keys (Ed25519, ML-DSA-44), from its bundle's audit certificates."""
    name = audit_key_name(bundle.state)
    keys = audit_public_keys(bundle)
    return Ed25519NoteVerifier(name, keys[ED25519]), CosignatureVerifier(
        name, keys[MLDSA44], MLDSA44
    )


def log_key_of(vkey: str) -> LogKey:
    """A log key from its vkey: type 0x01 (Ed25519) or 0x06 (ML-DSA-44)."""
    try:
        return Ed25519NoteVerifier.from_vkey(vkey)
    except ValueError:
        key = CosignatureVerifier.from_vkey(vkey)
        if key.algorithm != MLDSA44:
            raise ValueError(
                f"verifier key {key.key_name!r} is an Ed25519 cosigner key (type 0x04), "
                "never a log key"
            ) from None
        return key
