"""ML-DSA-44 cosignatures (C2SP tlog-cosignature, type 0x06) against a published vector.

The vector is a checkpoint that the ML-DSA-44 log of torchwood's litewitness test
signed (tests/vectors/c2sp/mldsa44_cosignature.json): made by another implementation,
so accepting it shows Pouch reads the type as others write it. Pouch's own signer is
checked against the ``cosigned_message`` structure written out here from the
specification, independently of the product's encoder.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import mldsa

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.cosignature import (
    Cosignature,
    CosignatureSigner,
    CosignatureVerifier,
    InvalidCosignature,
    mldsa44_cosigned_message,
    verify_cosignature,
)
from gateway.audit.note import NoteSignature, UnverifiedNote, VerifierKey, open_note, parse_note
from gateway.pki.note_keys import MLDSA44, MLDSA44Signer
from tests.vectors import load_vector

VECTOR = load_vector("c2sp/mldsa44_cosignature")


def spec_message(name: str, timestamp: int, origin: str, size: int, root: bytes) -> bytes:
    """``cosigned_message`` as tlog-cosignature lays it out, for a whole checkpoint."""
    return (
        b"subtree/v1\n\x00"
        + bytes([len(name.encode())])
        + name.encode()
        + struct.pack(">Q", timestamp)
        + bytes([len(origin.encode())])
        + origin.encode()
        + struct.pack(">Q", 0)
        + struct.pack(">Q", size)
        + root
    )


def vector_checkpoint() -> Checkpoint:
    return Checkpoint(VECTOR["origin"], VECTOR["size"], base64.b64decode(VECTOR["root_hash"]))


def vector_key() -> CosignatureVerifier:
    return CosignatureVerifier.from_vkey(VECTOR["verifier_key"])


def test_the_vector_key_is_an_mldsa44_cosigner_key_with_its_published_key_id() -> None:
    key = vector_key()
    vkey = VerifierKey.parse(VECTOR["verifier_key"])
    assert (key.algorithm, key.signature_type, len(key.public_key)) == (MLDSA44, 0x06, 1312)
    assert key.key_id == vkey.key_id == int(VECTOR["verifier_key"].split("+")[1], 16)
    assert str(key.vkey) == VECTOR["verifier_key"]


def test_the_published_checkpoint_verifies_as_a_note_signed_by_that_key() -> None:
    verified = open_note(VECTOR["note"], [vector_key()])
    assert verified.text == vector_checkpoint().body()
    assert [s.key_name for s in verified.verified] == [VECTOR["origin"]]


def test_the_published_cosignature_is_over_the_message_the_specification_lays_out() -> None:
    line = parse_note(VECTOR["note"]).signatures[0]
    cosignature = Cosignature.from_note_signature(line)
    assert cosignature.timestamp == VECTOR["timestamp"]
    checkpoint = vector_checkpoint()
    expected = spec_message(
        VECTOR["origin"],
        VECTOR["timestamp"],
        checkpoint.origin,
        checkpoint.size,
        checkpoint.root_hash,
    )
    assert mldsa44_cosigned_message(VECTOR["origin"], checkpoint, VECTOR["timestamp"]) == expected
    public = mldsa.MLDSA44PublicKey.from_public_bytes(vector_key().public_key)
    public.verify(cosignature.signature, expected)  # raises if it is not that message
    assert verify_cosignature(checkpoint, cosignature, vector_key()) == cosignature


@pytest.mark.parametrize(
    "change",
    ["size", "root", "origin", "timestamp"],
)
def test_the_published_cosignature_does_not_verify_for_another_checkpoint_or_time(
    change: str,
) -> None:
    checkpoint = vector_checkpoint()
    cosignature = Cosignature.from_note_signature(parse_note(VECTOR["note"]).signatures[0])
    if change == "size":
        checkpoint = Checkpoint(checkpoint.origin, 2, checkpoint.root_hash)
    elif change == "root":
        checkpoint = Checkpoint(checkpoint.origin, 1, bytes(32))
    elif change == "origin":
        checkpoint = Checkpoint("example.com/other-log", 1, checkpoint.root_hash)
    else:
        cosignature = Cosignature(
            cosignature.key_name, cosignature.key_id, 1, cosignature.signature
        )
    with pytest.raises(InvalidCosignature):
        verify_cosignature(checkpoint, cosignature, vector_key())


def test_a_relabelled_line_does_not_verify_because_the_message_commits_to_the_name() -> None:
    """The same key under another name: the line names the other key and the signed
    message the original name, so neither verifier accepts it."""
    original = vector_key()
    renamed = CosignatureVerifier("example.com/witness", original.public_key, MLDSA44)
    line = parse_note(VECTOR["note"]).signatures[0]
    relabelled = NoteSignature(renamed.key_name, renamed.key_id, line.signature)
    note = VECTOR["note"].split("\n\n")[0] + "\n\n" + relabelled.line
    with pytest.raises(UnverifiedNote):
        open_note(note, [renamed])


def test_pouchs_signer_signs_the_specified_message_and_its_lines_verify() -> None:
    signer = CosignatureSigner("pouch-be-witness", MLDSA44Signer.generate())
    checkpoint = vector_checkpoint()
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    cosignature = signer.cosign(checkpoint, now)
    timestamp = int(now.timestamp())
    assert cosignature.timestamp == timestamp
    public = mldsa.MLDSA44PublicKey.from_public_bytes(signer.verifier().public_key)
    public.verify(
        cosignature.signature,
        spec_message("pouch-be-witness", timestamp, checkpoint.origin, 1, checkpoint.root_hash),
    )
    note = checkpoint.body() + "\n" + cosignature.line
    assert open_note(note, [signer.verifier()]).signed_by(signer.verifier())
    assert verify_cosignature(checkpoint, cosignature.line, signer.verifier()) == cosignature
