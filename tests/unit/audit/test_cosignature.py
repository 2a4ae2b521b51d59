"""C2SP tlog-cosignature, both types: Ed25519 (0x04) and ML-DSA-44 (0x06).

Published Ed25519 example, then make and verify with each algorithm (the ML-DSA-44
published vector has its own tests, ``test_c2sp_mldsa_vectors``).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.cosignature import (
    Cosignature,
    CosignatureSigner,
    CosignatureVerifier,
    InvalidCosignature,
    MalformedCosignature,
    cosign_all,
    ed25519_cosigned_message,
    mldsa44_cosigned_message,
    parse_lines,
    partner_cosigners,
    verify_cosignature,
    verify_cosignatures,
    witness_signers,
)
from gateway.audit.log_signing import CheckpointSigner, partner_log_keys
from gateway.audit.note import (
    Ed25519NoteSigner,
    NoteSignature,
    NoteVerifier,
    UnverifiedNote,
    parse_note,
    parse_signature_line,
)
from gateway.pki import init_state, load_trust_bundle
from gateway.pki.note_keys import (
    ED25519,
    MLDSA44,
    MLDSA44_SIGNATURE_SIZE,
    Ed25519Signer,
    MLDSA44Signer,
    NoteKeySigner,
)
from tests.vectors import load_vector

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)
ORIGIN = "pouch.gateway/DE/audit"
CHECKPOINT = Checkpoint(ORIGIN, 7, hashlib.sha256(b"seven").digest())
SIGNATURE_SIZES = {ED25519: 64, MLDSA44: MLDSA44_SIGNATURE_SIZE}
BOTH = pytest.mark.parametrize("algorithm", [ED25519, MLDSA44])


def new_key(algorithm: str) -> NoteKeySigner:
    return Ed25519Signer.generate() if algorithm == ED25519 else MLDSA44Signer.generate()


def witness(algorithm: str = ED25519) -> CosignatureSigner:
    return CosignatureSigner("pouch-fr-witness", new_key(algorithm))


def witnesses() -> tuple[CosignatureSigner, CosignatureSigner]:
    return witness(ED25519), witness(MLDSA44)


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
    assert ed25519_cosigned_message(checkpoint, cosignature.timestamp) == signed_message
    # The log's signature line is a plain Ed25519 note signature, not a cosignature.
    with pytest.raises(MalformedCosignature):
        Cosignature.from_note_signature(note.signatures[0])

    published = load_vector("c2sp/cosigner_key")["verifier_key"]
    cosigner = CosignatureVerifier.from_vkey(published)
    assert cosigner.key_id == 0xDA77ADE7
    assert cosigner.algorithm == ED25519
    assert str(cosigner.vkey) == published


@BOTH
def test_cosignature_round_trip(algorithm: str) -> None:
    signer = witness(algorithm)
    assert signer.algorithm == signer.verifier().algorithm == algorithm
    cosignature = signer.cosign(CHECKPOINT, NOW)
    assert cosignature.timestamp == int(NOW.timestamp())
    assert Cosignature.parse_line(cosignature.line) == cosignature
    raw = base64.b64decode(cosignature.line.removesuffix("\n").split(" ")[2])
    assert len(raw) == 4 + 8 + SIGNATURE_SIZES[algorithm]
    assert int.from_bytes(raw[:4], "big") == signer.key_id
    assert int.from_bytes(raw[4:12], "big") == cosignature.timestamp
    assert verify_cosignature(CHECKPOINT, cosignature.line, signer.verifier()) == cosignature
    assert verify_cosignature(CHECKPOINT, cosignature, signer.verifier(), not_after=NOW)
    assert CosignatureVerifier.from_vkey(str(signer.verifier().vkey)) == signer.verifier()


def test_each_algorithm_signs_the_message_its_type_defines() -> None:
    ed25519_witness, mldsa_witness = witnesses()
    timestamp = int(NOW.timestamp())
    assert ed25519_witness.verifier().message(CHECKPOINT, timestamp) == (
        ed25519_cosigned_message(CHECKPOINT, timestamp)
    )
    # The ML-DSA-44 message names its cosigner; the Ed25519 one does not.
    assert mldsa_witness.verifier().message(CHECKPOINT, timestamp) == (
        mldsa44_cosigned_message("pouch-fr-witness", CHECKPOINT, timestamp)
    )
    assert mldsa44_cosigned_message("pouch-be-witness", CHECKPOINT, timestamp) != (
        mldsa44_cosigned_message("pouch-fr-witness", CHECKPOINT, timestamp)
    )
    with pytest.raises(ValueError, match="2\\^63"):
        ed25519_cosigned_message(CHECKPOINT, 2**63)
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        mldsa44_cosigned_message("x" * 256, CHECKPOINT, timestamp)


@BOTH
def test_key_id_commits_to_the_cosignature_type(algorithm: str) -> None:
    key = new_key(algorithm)
    as_cosigner = CosignatureSigner("pouch-fr-witness", key)
    assert as_cosigner.verifier().vkey.signature_type == {ED25519: 0x04, MLDSA44: 0x06}[algorithm]
    if isinstance(key, Ed25519Signer):
        as_log = Ed25519NoteSigner("pouch-fr-witness", key)
        assert as_cosigner.key_id != as_log.key_id


OTHER_SIZE = Checkpoint(ORIGIN, 8, CHECKPOINT.root_hash)
OTHER_ROOT = Checkpoint(ORIGIN, 7, hashlib.sha256(b"fork").digest())
OTHER_ORIGIN = Checkpoint("pouch.gateway/AT/audit", 7, CHECKPOINT.root_hash)
WITH_EXTENSION = Checkpoint(ORIGIN, 7, CHECKPOINT.root_hash, ("ext",))


@pytest.mark.parametrize(
    ("other", "algorithm"),
    [
        *(
            pytest.param(other, algorithm, id=f"{name}-{algorithm}")
            for name, other in (
                ("other-size", OTHER_SIZE),
                ("other-root", OTHER_ROOT),
                ("origin", OTHER_ORIGIN),
            )
            for algorithm in (ED25519, MLDSA44)
        ),
        pytest.param(WITH_EXTENSION, ED25519, id=f"extension-{ED25519}"),
    ],
)
def test_cosignature_over_different_tree_fails_verification(
    other: Checkpoint, algorithm: str
) -> None:
    signer = witness(algorithm)
    cosignature = signer.cosign(CHECKPOINT, NOW)
    assert signer.verifier().verify(
        CHECKPOINT.body().encode(), cosignature.note_signature.signature
    )
    with pytest.raises(InvalidCosignature):
        verify_cosignature(other, cosignature, signer.verifier())
    assert not signer.verifier().verify(other.body().encode(), cosignature.note_signature.signature)


def test_an_mldsa44_cosignature_does_not_cover_extension_lines() -> None:
    # As tlog-cosignature specifies: the ML-DSA-44 cosigned_message holds origin, size
    # and root only. Extension lines are vouched for by the Ed25519 signatures alone.
    signer = witness(MLDSA44)
    cosignature = signer.cosign(CHECKPOINT, NOW)
    assert verify_cosignature(WITH_EXTENSION, cosignature, signer.verifier()) == cosignature
    assert signer.verifier().verify(
        WITH_EXTENSION.body().encode(), cosignature.note_signature.signature
    )


@BOTH
def test_cosignature_with_another_timestamp_fails_verification(algorithm: str) -> None:
    signer = witness(algorithm)
    cosignature = signer.cosign(CHECKPOINT, NOW)
    moved = Cosignature(
        cosignature.key_name, cosignature.key_id, cosignature.timestamp + 1, cosignature.signature
    )
    with pytest.raises(InvalidCosignature, match="does not verify"):
        verify_cosignature(CHECKPOINT, moved, signer.verifier())


@BOTH
def test_cosignature_by_another_key_fails_verification(algorithm: str) -> None:
    genuine, impostor = witness(algorithm), witness(algorithm)
    cosignature = impostor.cosign(CHECKPOINT, NOW)
    with pytest.raises(InvalidCosignature, match="not by"):
        verify_cosignature(CHECKPOINT, cosignature, genuine.verifier())
    relabelled = Cosignature(
        genuine.key_name, genuine.key_id, cosignature.timestamp, cosignature.signature
    )
    with pytest.raises(InvalidCosignature, match="does not verify"):
        verify_cosignature(CHECKPOINT, relabelled, genuine.verifier())


@BOTH
def test_cosignature_from_the_future_is_refused_when_asked(algorithm: str) -> None:
    signer = witness(algorithm)
    cosignature = signer.cosign(CHECKPOINT, NOW + timedelta(hours=1))
    with pytest.raises(InvalidCosignature, match="future"):
        verify_cosignature(CHECKPOINT, cosignature, signer.verifier(), not_after=NOW)


@BOTH
def test_log_signature_cannot_pass_for_a_cosignature(algorithm: str) -> None:
    key = new_key(algorithm)
    cosigner = CosignatureSigner("pouch-fr-witness", key)
    plain = key.sign(CHECKPOINT.body().encode())  # over the bare body, as a log signs
    assert not cosigner.verifier().verify(CHECKPOINT.body().encode(), plain)
    padded = bytes(8) + plain  # timestamp 0 in front of a signature over the bare body
    assert not cosigner.verifier().verify(CHECKPOINT.body().encode(), padded)


@BOTH
def test_one_algorithms_cosignature_does_not_pass_for_the_others(algorithm: str) -> None:
    signer = witness(algorithm)
    other = witness(MLDSA44 if algorithm == ED25519 else ED25519)
    cosignature = signer.cosign(CHECKPOINT, NOW)
    relabelled = Cosignature(
        other.key_name, other.key_id, cosignature.timestamp, cosignature.signature
    )
    with pytest.raises(InvalidCosignature, match="does not verify"):
        verify_cosignature(CHECKPOINT, relabelled, other.verifier())
    assert not other.verifier().verify(
        CHECKPOINT.body().encode(), relabelled.note_signature.signature
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(bytes(8 + 63), id="short"),
        pytest.param(bytes(8 + 65), id="long"),
        pytest.param(bytes(8 + MLDSA44_SIGNATURE_SIZE - 1), id="short-ml-dsa-44"),
        pytest.param(bytes(8 + MLDSA44_SIGNATURE_SIZE + 1), id="long-ml-dsa-44"),
        pytest.param((2**63).to_bytes(8, "big") + bytes(64), id="timestamp-beyond-2^63-1"),
        pytest.param(
            (2**63).to_bytes(8, "big") + bytes(MLDSA44_SIGNATURE_SIZE),
            id="ml-dsa-44-timestamp-beyond-2^63-1",
        ),
    ],
)
def test_malformed_cosignatures_are_refused(payload: bytes) -> None:
    line = NoteSignature("pouch-fr-witness", 1, payload).line
    with pytest.raises(MalformedCosignature):
        Cosignature.parse_line(line)
    for algorithm in (ED25519, MLDSA44):
        with pytest.raises(MalformedCosignature):
            verify_cosignature(CHECKPOINT, line, witness(algorithm).verifier())
    with pytest.raises(MalformedCosignature):
        parse_lines(line)


def test_a_signature_of_the_other_algorithms_size_does_not_verify() -> None:
    # Cosignature lines of either size parse; each key checks its own size.
    ed25519_witness, mldsa_witness = witnesses()
    for signer, other in ((ed25519_witness, mldsa_witness), (mldsa_witness, ed25519_witness)):
        cosignature = other.cosign(CHECKPOINT, NOW)
        with pytest.raises(InvalidCosignature):
            verify_cosignature(
                CHECKPOINT,
                Cosignature(
                    signer.key_name, signer.key_id, cosignature.timestamp, cosignature.signature
                ),
                signer.verifier(),
            )


@BOTH
def test_cosigning_needs_an_aware_time(algorithm: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        witness(algorithm).cosign(CHECKPOINT, datetime(2026, 6, 15, 12, 0))


def test_a_witness_answer_is_verified_line_by_line_and_needs_every_key() -> None:
    signers = witnesses()
    cosigners = [s.verifier() for s in signers]
    cosignatures = cosign_all(signers, CHECKPOINT, NOW)
    lines = "".join(c.line for c in cosignatures)
    assert parse_lines(lines) == cosignatures
    assert verify_cosignatures(CHECKPOINT, lines, cosigners) == cosignatures
    # Order of lines does not matter, lines of other keys are ignored.
    stranger = witness(MLDSA44).cosign(CHECKPOINT, NOW).line
    reordered = cosignatures[1].line + stranger + cosignatures[0].line
    assert verify_cosignatures(CHECKPOINT, reordered, cosigners) == cosignatures
    # One line short: the missing key is named.
    with pytest.raises(InvalidCosignature, match="no ML-DSA-44 cosignature by pouch-fr-witness"):
        verify_cosignatures(CHECKPOINT, cosignatures[0].line, cosigners)
    with pytest.raises(InvalidCosignature, match="no Ed25519 cosignature by pouch-fr-witness"):
        verify_cosignatures(CHECKPOINT, cosignatures[1].line, cosigners)
    with pytest.raises(MalformedCosignature, match="newline"):
        verify_cosignatures(CHECKPOINT, lines.removesuffix("\n"), cosigners)


def test_published_checkpoint_carries_every_signature() -> None:
    log = CheckpointSigner(
        ORIGIN, "pouch-de-audit", Ed25519Signer.generate(), MLDSA44Signer.generate()
    )
    signers = witnesses()
    cosigners = [s.verifier() for s in signers]
    logged = log.sign(CHECKPOINT, NOW)
    lines = "".join(c.line for c in cosign_all(signers, CHECKPOINT, NOW))
    published = open_checkpoint(
        logged + lines, origin=ORIGIN, log_keys=log.verifiers(), other_keys=cosigners
    )
    assert published.checkpoint == CHECKPOINT
    every_key: list[NoteVerifier] = [*log.verifiers(), *cosigners]
    assert all(published.note.signed_by(key) for key in every_key)
    log_lines = [parse_signature_line(line + "\n") for line in logged.split("\n\n")[1].splitlines()]
    assert [published.note.signatures_of(key)[0] for key in log.verifiers()] == log_lines
    assert [
        Cosignature.from_note_signature(published.note.signatures_of(key)[0]).timestamp
        for key in cosigners
    ] == [int(NOW.timestamp())] * 2

    # Without the cosignatures the log's note still opens, but is not cosigned.
    assert not open_checkpoint(
        logged, origin=ORIGIN, log_keys=log.verifiers(), other_keys=cosigners
    ).note.signed_by(cosigners[0])
    only_cosigned = CHECKPOINT.body() + "\n" + lines
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_checkpoint(
            only_cosigned, origin=ORIGIN, log_keys=log.verifiers(), other_keys=cosigners
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
    signers = witness_signers(directory)
    bundle = load_trust_bundle(directory.bundle)
    cosigners = partner_cosigners(bundle)
    assert cosigners == tuple(s.verifier() for s in signers)
    assert [c.algorithm for c in cosigners] == [ED25519, MLDSA44]
    assert all(s.key_name == "pouch-de-witness" for s in signers)
    # Two roles, two keys in each algorithm: a witness key is not a key that signs the
    # state's log.
    log_keys = partner_log_keys(bundle)
    assert {c.public_key for c in cosigners}.isdisjoint(k.public_key for k in log_keys)
    assert {c.key_name for c in cosigners}.isdisjoint(k.key_name for k in log_keys)
    lines = "".join(c.line for c in cosign_all(signers, CHECKPOINT, NOW))
    assert len(verify_cosignatures(CHECKPOINT, lines, cosigners)) == 2
