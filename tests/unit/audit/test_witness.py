"""The witness decision: cosign the partner's checkpoint only if it extends what we saw.

The trees here are built by a few lines of RFC 6962 written for these tests, not by
``gateway.audit.merkle``, so the witness's use of ``verify_consistency`` is checked
against an independent construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.cosignature import CosignatureSigner, verify_cosignatures
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.note import Ed25519NoteSigner, Note, NoteSignature, parse_note, sign_note
from gateway.audit.witness import (
    CHECKPOINT_INCONSISTENT,
    CHECKPOINT_MALFORMED,
    CHECKPOINT_ROLLBACK,
    CHECKPOINT_SIGNATURE,
    REASONS,
    CheckpointRefused,
    Cosigned,
    cosign,
)
from gateway.errors import Rejected
from gateway.pki.note_keys import ED25519, MLDSA44, Ed25519Signer, MLDSA44Signer

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
ORIGIN = "pouch.gateway/DE/audit"
PARTNER_KEY = Ed25519Signer.generate()
PARTNER_PQ_KEY = MLDSA44Signer.generate()
PARTNER_LOG = CheckpointSigner(ORIGIN, "pouch-de-audit", PARTNER_KEY, PARTNER_PQ_KEY)
OWN_KEYS = (
    CosignatureSigner("pouch-fr-witness", Ed25519Signer.generate()),
    CosignatureSigner("pouch-fr-witness", MLDSA44Signer.generate()),
)


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_root(leaves[:k]), _root(leaves[k:]))


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [_root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), _root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _root(leaves[:k])]


def _proof(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.2 PROOF(m, D[n])."""
    return _subproof(m, leaves, True) if 0 < m < len(leaves) else []


def tree(n: int, label: bytes = b"entry") -> list[bytes]:
    return [_leaf(label + b"-%d" % i) for i in range(n)]


def head(leaves: Sequence[bytes]) -> tuple[int, bytes]:
    return len(leaves), _root(leaves)


def signed(leaves: Sequence[bytes], log: CheckpointSigner = PARTNER_LOG) -> str:
    return log.sign(Checkpoint(log.origin, len(leaves), _root(leaves)), NOW)


def witness(
    note_text: str | bytes,
    proof: Sequence[bytes],
    last_seen: tuple[int, bytes] | None,
) -> Cosigned:
    return cosign(
        note_text,
        proof,
        origin=ORIGIN,
        log_keys=PARTNER_LOG.verifiers(),
        last_seen=last_seen,
        own_keys=OWN_KEYS,
        now=NOW,
    )


def refusal(
    note_text: str, proof: Sequence[bytes], last_seen: tuple[int, bytes] | None
) -> CheckpointRefused:
    with pytest.raises(CheckpointRefused) as refused:
        witness(note_text, proof, last_seen)
    assert isinstance(refused.value, Rejected)
    assert refused.value.reason in REASONS
    return refused.value


def test_first_checkpoint_is_cosigned_and_published() -> None:
    leaves = tree(5)
    cosigned = witness(signed(leaves), [], None)
    assert cosigned.checkpoint == Checkpoint(ORIGIN, 5, _root(leaves))
    # One cosignature per own key, Ed25519 then ML-DSA-44, all sent back as one answer.
    assert [(c.key_name, c.key_id) for c in cosigned.cosignatures] == [
        (k.key_name, k.key_id) for k in OWN_KEYS
    ]
    assert cosigned.lines == "".join(c.line for c in cosigned.cosignatures)
    assert {c.timestamp for c in cosigned.cosignatures} == {int(NOW.timestamp())}
    cosigners = [k.verifier() for k in OWN_KEYS]
    assert verify_cosignatures(cosigned.checkpoint, cosigned.lines, cosigners) == (
        cosigned.cosignatures
    )
    published = open_checkpoint(
        cosigned.note_text,
        origin=ORIGIN,
        log_keys=PARTNER_LOG.verifiers(),
        other_keys=cosigners,
    )
    assert published.checkpoint == cosigned.checkpoint
    assert all(published.note.signed_by(key) for key in cosigners)


@pytest.mark.parametrize(("old", "new"), [(m, n) for n in range(1, 12) for m in range(n + 1)])
def test_consistent_growth_is_cosigned(old: int, new: int) -> None:
    leaves = tree(new)
    cosigned = witness(signed(leaves), _proof(old, leaves), head(leaves[:old]))
    assert cosigned.checkpoint.size == new


def test_checkpoint_signed_by_wrong_key_is_refused() -> None:
    forger = CheckpointSigner(
        ORIGIN, PARTNER_LOG.key_name, Ed25519Signer.generate(), MLDSA44Signer.generate()
    )
    refused = refusal(signed(tree(3), forger), [], None)
    assert refused.reason == CHECKPOINT_SIGNATURE


@pytest.mark.parametrize("stolen", [ED25519, MLDSA44])
def test_checkpoint_signed_with_only_one_of_the_partners_keys_is_refused(stolen: str) -> None:
    forger = CheckpointSigner(
        ORIGIN,
        PARTNER_LOG.key_name,
        PARTNER_KEY if stolen == ED25519 else Ed25519Signer.generate(),
        PARTNER_PQ_KEY if stolen == MLDSA44 else MLDSA44Signer.generate(),
    )
    assert witness(signed(tree(3)), [], None).checkpoint.size == 3
    refused = refusal(signed(tree(3), forger), [], None)
    assert refused.reason == CHECKPOINT_SIGNATURE
    assert "not signed by log key" in refused.message


@pytest.mark.parametrize("algorithm", [ED25519, MLDSA44])
def test_checkpoint_missing_one_of_the_partners_signatures_is_refused(algorithm: str) -> None:
    note = parse_note(signed(tree(3)))
    (gone,) = [k for k in PARTNER_LOG.verifiers() if k.algorithm == algorithm]
    halved = Note(note.text, tuple(s for s in note.signatures if s.key_id != gone.key_id))
    refused = refusal(halved.serialize(), [], None)
    assert refused.reason == CHECKPOINT_SIGNATURE
    assert f"{gone.key_name}+{gone.key_id:08x}" in refused.message


def test_checkpoint_altered_after_signing_is_refused() -> None:
    note_text = signed(tree(3)).replace("\n3\n", "\n4\n", 1)
    assert refusal(note_text, [], None).reason == CHECKPOINT_SIGNATURE


def test_checkpoint_of_another_log_is_refused() -> None:
    other = CheckpointSigner(
        "pouch.gateway/AT/audit", PARTNER_LOG.key_name, PARTNER_KEY, PARTNER_PQ_KEY
    )
    assert refusal(signed(tree(3), other), [], None).reason == CHECKPOINT_SIGNATURE


def test_unknown_signature_lines_are_ignored_not_trusted() -> None:
    leaves = tree(4)
    checkpoint_body = Checkpoint(ORIGIN, 4, _root(leaves)).body()
    # Alone, an unknown key's line is not a signature of the partner's log,
    # whatever name it claims.
    impostor = Ed25519NoteSigner(PARTNER_LOG.key_name, Ed25519Signer.generate())
    stranger = Ed25519NoteSigner("example.com/stranger", Ed25519Signer.generate())
    unknown_only = sign_note(checkpoint_body, impostor, stranger).serialize()
    assert refusal(unknown_only, [], None).reason == CHECKPOINT_SIGNATURE

    # Next to the partner's signature they are ignored and not carried into what we publish.
    mixed = parse_note(signed(leaves)).with_signatures(
        sign_note(checkpoint_body, stranger).signatures
    )
    cosigned = witness(mixed.serialize(), [], None)
    lines = parse_note(cosigned.note_text).signatures
    assert [(s.key_name, s.key_id) for s in lines] == [
        (k.key_name, k.key_id) for k in (*PARTNER_LOG.verifiers(), *OWN_KEYS)
    ]


def test_rollback_to_smaller_tree_is_refused() -> None:
    leaves = tree(7)
    refused = refusal(signed(leaves[:3]), [], head(leaves))
    assert refused.reason == CHECKPOINT_ROLLBACK


def test_fork_same_size_different_root_is_refused() -> None:
    seen, fork = tree(5), tree(5, b"rewritten")
    refused = refusal(signed(fork), [], head(seen))
    assert refused.reason == CHECKPOINT_INCONSISTENT


def test_same_checkpoint_again_is_cosigned() -> None:
    leaves = tree(5)
    assert witness(signed(leaves), [], head(leaves)).checkpoint.size == 5


def test_inconsistent_growth_is_refused() -> None:
    seen = tree(3)
    rewritten = tree(7, b"rewritten")  # a history that does not start with what we saw
    assert refusal(signed(rewritten), _proof(3, rewritten), head(seen)).reason == (
        CHECKPOINT_INCONSISTENT
    )

    honest = tree(7)
    proof = _proof(3, honest)
    assert refusal(signed(honest), [], head(seen)).reason == CHECKPOINT_INCONSISTENT
    assert refusal(signed(honest), proof[:-1], head(seen)).reason == CHECKPOINT_INCONSISTENT
    tampered = [proof[0], hashlib.sha256(b"x").digest(), *proof[2:]]
    assert refusal(signed(honest), tampered, head(seen)).reason == CHECKPOINT_INCONSISTENT
    # A valid proof between other sizes proves nothing about what we saw.
    assert refusal(signed(honest), _proof(4, honest), head(seen)).reason == (
        CHECKPOINT_INCONSISTENT
    )


def test_proof_with_same_size_checkpoint_must_be_empty() -> None:
    leaves = tree(5)
    junk = [hashlib.sha256(b"junk").digest()]
    assert refusal(signed(leaves), junk, head(leaves)).reason == CHECKPOINT_INCONSISTENT


@pytest.mark.parametrize(
    "note_text",
    [
        pytest.param("", id="empty"),
        pytest.param("pouch.gateway/DE/audit\n3\n", id="unsigned"),
        pytest.param("not a note\x00\n\n— x AAAA\n", id="control-character"),
    ],
)
def test_malformed_note_is_refused(note_text: str) -> None:
    assert refusal(note_text, [], None).reason == CHECKPOINT_MALFORMED


def test_signed_text_that_is_no_checkpoint_is_refused() -> None:
    key = Ed25519NoteSigner(PARTNER_LOG.key_name, PARTNER_KEY)
    note_text = sign_note("if this is a valid checkpoint then I'll eat my hat\n", key)
    # Only a checkpoint can carry the log's ML-DSA-44 signature (it signs origin, size
    # and root), so such a note lacks it ...
    assert refusal(note_text.serialize(), [], None).reason == CHECKPOINT_SIGNATURE
    # ... and a witness of an Ed25519-only log finds that it is no checkpoint.
    with pytest.raises(CheckpointRefused) as refused:
        cosign(
            note_text.serialize(),
            [],
            origin=ORIGIN,
            log_keys=[key.verifier()],
            last_seen=None,
            own_keys=OWN_KEYS,
            now=NOW,
        )
    assert refused.value.reason == CHECKPOINT_MALFORMED


@pytest.mark.parametrize(
    "proof",
    [
        pytest.param([b"short"], id="short-hash"),
        pytest.param([bytes(32)] * 64, id="too-many-hashes"),
    ],
)
def test_malformed_proof_is_refused(proof: list[bytes]) -> None:
    leaves = tree(7)
    assert refusal(signed(leaves), proof, head(leaves[:3])).reason == CHECKPOINT_MALFORMED


def test_invalid_last_seen_is_a_bug_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="last_seen"):
        witness(signed(tree(3)), [], (2, b"short"))


def test_refusal_reason_codes_are_closed() -> None:
    with pytest.raises(ValueError):
        CheckpointRefused("CHECKPOINT_WHATEVER", "nope")
    assert CheckpointRefused(CHECKPOINT_ROLLBACK, "x").reason == CHECKPOINT_ROLLBACK


def test_cosignature_lines_are_the_only_new_signatures() -> None:
    note_text = signed(tree(2))
    cosigned = witness(note_text, [], None)
    logged = parse_note(note_text).signatures
    note = parse_note(cosigned.note_text)
    # The partner's two lines carried over as they came, then ours, one per own key.
    assert note.signatures[: len(logged)] == logged
    new = note.signatures[len(logged) :]
    assert new == tuple(
        NoteSignature(k.key_name, k.key_id, s.signature) for k, s in zip(OWN_KEYS, new, strict=True)
    )
    assert "".join(s.line for s in new) == cosigned.lines
