"""C2SP tlog-cosignature (Ed25519 cosignature/v1): published example, make, verify."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint, CheckpointSigner, partner_log_key
from gateway.audit.cosignature import (
    Cosignature,
    CosignatureSigner,
    CosignatureVerifier,
    InvalidCosignature,
    MalformedCosignature,
    cosigned_message,
    open_published_checkpoint,
    partner_cosigner,
    verify_cosignature,
)
from gateway.audit.note import (
    Ed25519NoteSigner,
    NoteSignature,
    UnverifiedNote,
    parse_note,
    parse_signature_line,
)
from gateway.pki import init_state, load_trust_bundle
from gateway.pki.ed25519_notes import Ed25519Signer
from tests.vectors import load_vector

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
ORIGIN = "pouch.gateway/DE/audit"
CHECKPOINT = Checkpoint(ORIGIN, 7, hashlib.sha256(b"seven").digest())


def witness() -> CosignatureSigner:
    return CosignatureSigner("pouch-fr-audit", Ed25519Signer.generate())


def test_published_examples_parse_and_verify() -> None:
    example = load_vector("c2sp/tlog_cosignature")
    note = parse_note(example["note"])
    checkpoint = Checkpoint.parse(note.text)
    assert (checkpoint.origin, checkpoint.size) == (example["origin"], example["size"])
    assert checkpoint.root_hash == base64.b64decode(example["root_hash"])
    cosignature = Cosignature.from_note_signature(note.signatures[1])
    expected = example["cosignature"]
    assert cosignature.key_name == expected["key_name"]
    assert f"{cosignature.key_id:08x}" == expected["key_id"]
    assert cosignature.timestamp == expected["timestamp"]
    assert cosignature.time == datetime(2023, 3, 20, 12, 25, 47, tzinfo=UTC)
    assert cosignature.line == note.signatures[1].line
    # The bytes the example witness signed, rebuilt from its line and the checkpoint.
    signed_message = example["signed_message"].encode("utf-8")
    assert cosigned_message(checkpoint, cosignature.timestamp) == signed_message
    # The log's signature line is a plain Ed25519 note signature, not a cosignature.
    with pytest.raises(MalformedCosignature):
        Cosignature.from_note_signature(note.signatures[0])

    published = load_vector("c2sp/cosigner_key")["verifier_key"]
    cosigner = CosignatureVerifier.from_vkey(published)
    assert cosigner.key_id == 0xDA77ADE7
    assert str(cosigner.vkey) == published


def test_cosignature_round_trip() -> None:
    signer = witness()
    cosignature = signer.cosign(CHECKPOINT, NOW)
    assert cosignature.timestamp == int(NOW.timestamp())
    assert Cosignature.parse_line(cosignature.line) == cosignature
    raw = base64.b64decode(cosignature.line.removesuffix("\n").split(" ")[2])
    assert len(raw) == 4 + 8 + 64
    assert int.from_bytes(raw[:4], "big") == signer.key_id
    assert int.from_bytes(raw[4:12], "big") == cosignature.timestamp
    assert verify_cosignature(CHECKPOINT, cosignature.line, signer.verifier()) == cosignature
    assert verify_cosignature(CHECKPOINT, cosignature, signer.verifier(), not_after=NOW)


def test_key_id_commits_to_the_cosignature_type() -> None:
    key = Ed25519Signer.generate()
    as_cosigner = CosignatureSigner("pouch-fr-audit", key)
    as_log = Ed25519NoteSigner("pouch-fr-audit", key)
    assert as_cosigner.key_id != as_log.key_id
    assert as_cosigner.verifier().vkey.signature_type == 0x04


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(Checkpoint(ORIGIN, 8, CHECKPOINT.root_hash), id="other-size"),
        pytest.param(Checkpoint(ORIGIN, 7, hashlib.sha256(b"fork").digest()), id="other-root"),
        pytest.param(Checkpoint("pouch.gateway/AT/audit", 7, CHECKPOINT.root_hash), id="origin"),
        pytest.param(Checkpoint(ORIGIN, 7, CHECKPOINT.root_hash, ("ext",)), id="extension"),
    ],
)
def test_cosignature_over_different_tree_fails_verification(other: Checkpoint) -> None:
    signer = witness()
    cosignature = signer.cosign(CHECKPOINT, NOW)
    with pytest.raises(InvalidCosignature):
        verify_cosignature(other, cosignature, signer.verifier())
    assert not signer.verifier().verify(other.body().encode(), cosignature.note_signature.signature)


def test_cosignature_with_another_timestamp_fails_verification() -> None:
    signer = witness()
    cosignature = signer.cosign(CHECKPOINT, NOW)
    moved = Cosignature(
        cosignature.key_name, cosignature.key_id, cosignature.timestamp + 1, cosignature.signature
    )
    with pytest.raises(InvalidCosignature, match="does not verify"):
        verify_cosignature(CHECKPOINT, moved, signer.verifier())


def test_cosignature_by_another_key_fails_verification() -> None:
    genuine, impostor = witness(), witness()
    cosignature = impostor.cosign(CHECKPOINT, NOW)
    with pytest.raises(InvalidCosignature, match="not by"):
        verify_cosignature(CHECKPOINT, cosignature, genuine.verifier())
    relabelled = Cosignature(
        genuine.key_name, genuine.key_id, cosignature.timestamp, cosignature.signature
    )
    with pytest.raises(InvalidCosignature, match="does not verify"):
        verify_cosignature(CHECKPOINT, relabelled, genuine.verifier())


def test_cosignature_from_the_future_is_refused_when_asked() -> None:
    signer = witness()
    cosignature = signer.cosign(CHECKPOINT, NOW + timedelta(hours=1))
    with pytest.raises(InvalidCosignature, match="future"):
        verify_cosignature(CHECKPOINT, cosignature, signer.verifier(), not_after=NOW)


def test_log_signature_cannot_pass_for_a_cosignature() -> None:
    key = Ed25519Signer.generate()
    cosigner = CosignatureSigner("pouch-fr-audit", key)
    log = Ed25519NoteSigner("pouch-fr-audit", key)
    plain = log.sign(CHECKPOINT.body().encode())
    assert not cosigner.verifier().verify(CHECKPOINT.body().encode(), plain)
    padded = bytes(8) + plain  # timestamp 0 in front of a signature over the bare body
    assert not cosigner.verifier().verify(CHECKPOINT.body().encode(), padded)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(bytes(8 + 63), id="short"),
        pytest.param(bytes(8 + 65), id="long"),
        pytest.param((2**63).to_bytes(8, "big") + bytes(64), id="timestamp-beyond-2^63-1"),
    ],
)
def test_malformed_cosignatures_are_refused(payload: bytes) -> None:
    line = NoteSignature("pouch-fr-audit", 1, payload).line
    with pytest.raises(MalformedCosignature):
        Cosignature.parse_line(line)
    with pytest.raises(MalformedCosignature):
        verify_cosignature(CHECKPOINT, line, witness().verifier())


def test_cosigning_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        witness().cosign(CHECKPOINT, datetime(2026, 6, 15, 12, 0))


def test_published_checkpoint_carries_both_signatures() -> None:
    log = CheckpointSigner(ORIGIN, "pouch-de-audit", Ed25519Signer.generate())
    cosigner = witness()
    logged = log.sign(CHECKPOINT)
    line = cosigner.cosign(CHECKPOINT, NOW).line
    published = open_published_checkpoint(
        logged + line, origin=ORIGIN, log_key=log.verifier(), cosigner=cosigner.verifier()
    )
    assert published.checkpoint == CHECKPOINT
    assert published.cosignature.timestamp == int(NOW.timestamp())
    assert published.log_signature == parse_signature_line(logged.split("\n\n")[1])

    with pytest.raises(UnverifiedNote, match="not cosigned"):
        open_published_checkpoint(
            logged, origin=ORIGIN, log_key=log.verifier(), cosigner=cosigner.verifier()
        )
    only_cosigned = CHECKPOINT.body() + "\n" + line
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_published_checkpoint(
            only_cosigned, origin=ORIGIN, log_key=log.verifier(), cosigner=cosigner.verifier()
        )


def test_cosigner_keys_come_from_state_directory_and_partner_bundle(tmp_path: Path) -> None:
    directory = init_state(
        "DE",
        tmp_path / "de",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    cosigner = CosignatureSigner.for_state(directory)
    bundle = load_trust_bundle(directory.bundle)
    assert partner_cosigner(bundle) == cosigner.verifier()
    assert cosigner.key_name == "pouch-de-witness"
    # Two roles, two keys: the witness key is not the key that signs the state's log.
    assert partner_cosigner(bundle).public_key != partner_log_key(bundle).public_key
    assert partner_cosigner(bundle).key_name != partner_log_key(bundle).key_name
    cosignature = cosigner.cosign(CHECKPOINT, NOW)
    assert verify_cosignature(CHECKPOINT, cosignature, partner_cosigner(bundle))
