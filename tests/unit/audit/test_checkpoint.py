"""C2SP tlog-checkpoint bodies, the checkpoint signer, and opening a signed checkpoint."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    ForeignCheckpoint,
    MalformedCheckpoint,
    audit_key_name,
    audit_origin,
    open_checkpoint,
    partner_log_key,
)
from gateway.audit.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    UnverifiedNote,
    open_note,
    parse_note,
    sign_note,
)
from gateway.pki import init_state, load_trust_bundle
from gateway.pki.ed25519_notes import Ed25519Signer
from tests.vectors import load_vector

ORIGIN = "pouch.gateway/FR/audit"
ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()


def test_published_examples_parse_and_verify() -> None:
    sumdb = load_vector("c2sp/go_sumdb_checkpoint")
    log_key = Ed25519NoteVerifier.from_vkey(sumdb["verifier_key"])
    signed = open_checkpoint(sumdb["note"], origin=sumdb["origin"], log_key=log_key)
    assert signed.checkpoint == Checkpoint(
        sumdb["origin"], sumdb["size"], base64.b64decode(sumdb["root_hash"])
    )
    assert signed.checkpoint.body() == signed.note.text

    c2sp = load_vector("c2sp/tlog_checkpoint")
    note = parse_note(c2sp["note"])
    checkpoint = Checkpoint.parse(note.text)
    assert (checkpoint.origin, checkpoint.size) == (c2sp["origin"], c2sp["size"])
    assert checkpoint.root_hash == base64.b64decode(c2sp["root_hash"])
    assert checkpoint.extensions == ()
    assert [(s.key_name, f"{s.key_id:08x}", len(s.signature)) for s in note.signatures] == [
        (e["key_name"], e["key_id"], e["signature_bytes"]) for e in c2sp["signatures"]
    ]
    # Its key ID is sum.golang.org's, under another name: another key, so ignored.
    same_id = Ed25519NoteVerifier.from_vkey(c2sp["same_key_id_other_name"])
    assert same_id.key_id == note.signatures[0].key_id
    with pytest.raises(UnverifiedNote):
        open_checkpoint(c2sp["note"], origin=c2sp["origin"], log_key=same_id)


def test_checkpoint_round_trip() -> None:
    checkpoint = Checkpoint(ORIGIN, 20852163, ROOT, ("ext one", "ext two"))
    body = checkpoint.body()
    assert body == f"{ORIGIN}\n20852163\n{ROOT_B64}\next one\next two\n"
    assert Checkpoint.parse(body) == checkpoint
    empty = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    assert empty.body().splitlines()[1] == "0"
    assert Checkpoint.parse(empty.body()) == empty
    largest = Checkpoint(ORIGIN, 2**64 - 1, ROOT)
    assert Checkpoint.parse(largest.body()) == largest


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(f"{ORIGIN}\n3\n{ROOT_B64}", id="no-final-newline"),
        pytest.param(f"{ORIGIN}\n3\n", id="no-root-line"),
        pytest.param(f"\n3\n{ROOT_B64}\n", id="empty-origin"),
        pytest.param(f"{ORIGIN}\n03\n{ROOT_B64}\n", id="leading-zero"),
        pytest.param(f"{ORIGIN}\n00\n{ROOT_B64}\n", id="zero-with-leading-zero"),
        pytest.param(f"{ORIGIN}\n-1\n{ROOT_B64}\n", id="negative"),
        pytest.param(f"{ORIGIN}\n+3\n{ROOT_B64}\n", id="plus-sign"),
        pytest.param(f"{ORIGIN}\n3_0\n{ROOT_B64}\n", id="underscore"),
        pytest.param(f"{ORIGIN}\n\u0663\n{ROOT_B64}\n", id="non-ascii-digit"),
        pytest.param(f"{ORIGIN}\n 3\n{ROOT_B64}\n", id="space"),
        pytest.param(f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n", id="beyond-uint64"),
        pytest.param(f"{ORIGIN}\n3\n{ROOT_B64[:-4]}\n", id="short-root"),
        pytest.param(f"{ORIGIN}\n3\n{ROOT.hex()}\n", id="hex-root"),
        pytest.param(f"{ORIGIN}\n3\n{ROOT_B64.rstrip('=')}\n", id="unpadded-root"),
        pytest.param(f"{ORIGIN}\n3\n{ROOT_B64}\n\n", id="empty-extension-line"),
        pytest.param(f"{ORIGIN}\n3\n{ROOT_B64}\ntab\there\n", id="control-character"),
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body: str) -> None:
    with pytest.raises(MalformedCheckpoint):
        Checkpoint.parse(body)


def test_signer_output_is_a_signed_note_that_verifies() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    signer = CheckpointSigner(ORIGIN, "pouch-fr-audit", key)
    checkpoint = Checkpoint(ORIGIN, 7, ROOT)
    note_text = signer.sign(checkpoint)
    assert note_text.startswith(checkpoint.body() + "\n— pouch-fr-audit ")
    assert note_text.count("\n— ") == 1
    signed = open_checkpoint(note_text, origin=ORIGIN, log_key=signer.verifier())
    assert signed.checkpoint == checkpoint
    assert signed.note.verified[0].key_id == signer.key_id == signer.verifier().key_id


def test_checkpoint_signed_by_wrong_key_is_refused() -> None:
    genuine = CheckpointSigner(ORIGIN, "pouch-fr-audit", Ed25519Signer.generate())
    forger = CheckpointSigner(ORIGIN, "pouch-fr-audit", Ed25519Signer.generate())
    forged = forger.sign(Checkpoint(ORIGIN, 7, ROOT))
    with pytest.raises(UnverifiedNote):
        open_checkpoint(forged, origin=ORIGIN, log_key=genuine.verifier())


def test_witness_signature_alone_does_not_make_a_checkpoint() -> None:
    log = CheckpointSigner(ORIGIN, "pouch-fr-audit", Ed25519Signer.generate())
    witness = Ed25519NoteSigner("pouch-de-audit", Ed25519Signer.generate())
    only_witness = sign_note(Checkpoint(ORIGIN, 7, ROOT).body(), witness).serialize()
    assert open_note(only_witness, [witness.verifier()]).verified
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_checkpoint(
            only_witness, origin=ORIGIN, log_key=log.verifier(), other_keys=[witness.verifier()]
        )


def test_checkpoint_of_another_origin_is_refused() -> None:
    key = Ed25519Signer.generate()
    other_log = CheckpointSigner("pouch.gateway/DE/audit", "pouch-fr-audit", key)
    note_text = other_log.sign(Checkpoint("pouch.gateway/DE/audit", 7, ROOT))
    with pytest.raises(ForeignCheckpoint):
        open_checkpoint(note_text, origin=ORIGIN, log_key=other_log.verifier())


def test_validly_signed_text_that_is_no_checkpoint_is_malformed() -> None:
    key = Ed25519NoteSigner("pouch-fr-audit", Ed25519Signer.generate())
    note_text = sign_note("if this is a valid checkpoint then I'll eat my hat\n", key)
    with pytest.raises(MalformedCheckpoint):
        open_checkpoint(note_text.serialize(), origin=ORIGIN, log_key=key.verifier())


def test_signer_refuses_what_it_must_not_sign() -> None:
    key = Ed25519Signer.generate()
    signer = CheckpointSigner(ORIGIN, "pouch-fr-audit", key)
    with pytest.raises(ValueError, match="signs checkpoints of"):
        signer.sign(Checkpoint("pouch.gateway/DE/audit", 1, ROOT))
    with pytest.raises(ValueError, match="cosignatures"):
        CheckpointSigner("cosignature/v1", "pouch-fr-audit", key)
    with pytest.raises(ValueError):
        CheckpointSigner(ORIGIN, "pouch fr audit", key)
    with pytest.raises(ValueError, match="Ed25519"):
        CheckpointSigner(ORIGIN, "pouch-fr-audit", ec.generate_private_key(ec.SECP256R1()))


def test_state_names_follow_the_documented_convention() -> None:
    assert audit_origin("FR") == "pouch.gateway/FR/audit"
    assert audit_key_name("FR") == "pouch-fr-audit"
    with pytest.raises(ValueError):
        audit_origin("fr/../x")


def test_keys_come_from_state_directory_and_partner_bundle(tmp_path: Path) -> None:
    directory = init_state(
        "FR",
        tmp_path / "fr",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    signer = CheckpointSigner.for_state(directory)
    assert (signer.origin, signer.key_name) == ("pouch.gateway/FR/audit", "pouch-fr-audit")
    log_key = partner_log_key(load_trust_bundle(directory.bundle))
    assert log_key == signer.verifier()
    note_text = signer.sign(Checkpoint(signer.origin, 1, ROOT))
    assert open_checkpoint(note_text, origin=signer.origin, log_key=log_key).checkpoint.size == 1
