"""C2SP tlog-checkpoint bodies, the checkpoint signer, and opening a signed checkpoint.

A Pouch log signs each checkpoint twice under its key name: an Ed25519 note signature
and an ML-DSA-44 cosignature by the log itself; opening a checkpoint needs both.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.audit.checkpoint import (
    Checkpoint,
    ForeignCheckpoint,
    MalformedCheckpoint,
    audit_key_name,
    audit_origin,
    open_checkpoint,
    witness_key_name,
)
from gateway.audit.cosignature import Cosignature, CosignatureSigner, CosignatureVerifier
from gateway.audit.log_signing import CheckpointSigner, log_key_of, partner_log_keys
from gateway.audit.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    Note,
    UnverifiedNote,
    open_note,
    parse_note,
    sign_note,
)
from gateway.pki import init_state, load_trust_bundle
from gateway.pki.note_keys import (
    ED25519,
    MLDSA44,
    MLDSA44_SIGNATURE_SIZE,
    SIGNATURE_TYPE_COSIGNATURE_MLDSA44,
    Ed25519Signer,
    MLDSA44Signer,
)
from tests.vectors import load_vector

ORIGIN = "pouch.gateway/FR/audit"
ROOT = hashlib.sha256(b"root").digest()
ROOT_B64 = base64.b64encode(ROOT).decode()
NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)


def log_signer(origin: str = ORIGIN, name: str = "pouch-fr-audit") -> CheckpointSigner:
    return CheckpointSigner(origin, name, Ed25519Signer.generate(), MLDSA44Signer.generate())


def test_published_examples_parse_and_verify() -> None:
    sumdb = load_vector("c2sp/go_sumdb_checkpoint")
    log_key = Ed25519NoteVerifier.from_vkey(sumdb["verifier_key"])
    signed = open_checkpoint(sumdb["note"], origin=sumdb["origin"], log_keys=[log_key])
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
        open_checkpoint(c2sp["note"], origin=c2sp["origin"], log_keys=[same_id])


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
    key = Ed25519Signer(ed25519.Ed25519PrivateKey.generate())
    signer = CheckpointSigner(ORIGIN, "pouch-fr-audit", key, MLDSA44Signer.generate())
    checkpoint = Checkpoint(ORIGIN, 7, ROOT)
    note_text = signer.sign(checkpoint, NOW)
    assert note_text.startswith(checkpoint.body() + "\n— pouch-fr-audit ")
    assert note_text.count("\n— ") == 2
    assert note_text.count("\n— pouch-fr-audit ") == 2
    signed = open_checkpoint(note_text, origin=ORIGIN, log_keys=signer.verifiers())
    assert signed.checkpoint == checkpoint
    ed25519_key, mldsa_key = signer.verifiers()
    assert (ed25519_key.algorithm, mldsa_key.algorithm) == (ED25519, MLDSA44)
    assert [s.key_id for s in signed.note.verified] == [ed25519_key.key_id, mldsa_key.key_id]
    assert ed25519_key.public_key == key.public_key


def test_mldsa44_checkpoint_signatures_round_trip() -> None:
    signer = log_signer()
    checkpoint = Checkpoint(ORIGIN, 7, ROOT, ("an extension",))
    note_text = signer.sign(checkpoint, NOW)
    _, mldsa_key = signer.verifiers()
    # The log's ML-DSA-44 line is its own cosignature (type 0x06) timestamped at signing.
    line = parse_note(note_text).signatures[1]
    assert (line.key_name, line.key_id) == (mldsa_key.key_name, mldsa_key.key_id)
    cosignature = Cosignature.from_note_signature(line)
    assert cosignature.time == NOW
    assert len(cosignature.signature) == MLDSA44_SIGNATURE_SIZE
    assert mldsa_key.vkey.signature_type == SIGNATURE_TYPE_COSIGNATURE_MLDSA44
    assert mldsa_key.check(checkpoint, cosignature.timestamp, cosignature.signature)

    # The ML-DSA-44 key alone opens it (the Ed25519 line is then an unknown key's) ...
    alone = open_checkpoint(note_text, origin=ORIGIN, log_keys=[mldsa_key])
    assert alone.checkpoint == checkpoint
    assert alone.note.signed_by(mldsa_key)
    # ... and from its vkey, as an auditor holds it.
    by_vkey = log_key_of(str(mldsa_key.vkey))
    assert open_checkpoint(note_text, origin=ORIGIN, log_keys=[by_vkey]).checkpoint == checkpoint

    # Another root under the same signature lines verifies under neither key.
    changed = note_text.replace(ROOT_B64, base64.b64encode(bytes(32)).decode(), 1)
    assert changed != note_text
    for keys in ([mldsa_key], signer.verifiers()):
        with pytest.raises(UnverifiedNote):
            open_checkpoint(changed, origin=ORIGIN, log_keys=keys)


@pytest.mark.parametrize("algorithm", [ED25519, MLDSA44])
def test_checkpoint_missing_one_log_signature_is_refused(algorithm: str) -> None:
    signer = log_signer()
    note = parse_note(signer.sign(Checkpoint(ORIGIN, 7, ROOT), NOW))
    (kept,) = [k for k in signer.verifiers() if k.algorithm != algorithm]
    halved = Note(note.text, tuple(s for s in note.signatures if s.key_id == kept.key_id))
    assert open_checkpoint(halved.serialize(), origin=ORIGIN, log_keys=[kept])
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_checkpoint(halved.serialize(), origin=ORIGIN, log_keys=signer.verifiers())


def test_checkpoint_signed_by_wrong_key_is_refused() -> None:
    genuine = log_signer()
    forger = log_signer()
    forged = forger.sign(Checkpoint(ORIGIN, 7, ROOT), NOW)
    with pytest.raises(UnverifiedNote):
        open_checkpoint(forged, origin=ORIGIN, log_keys=genuine.verifiers())


@pytest.mark.parametrize("stolen", [ED25519, MLDSA44])
def test_checkpoint_signed_with_one_stolen_log_key_is_refused(stolen: str) -> None:
    ed25519_key, mldsa_key = Ed25519Signer.generate(), MLDSA44Signer.generate()
    genuine = CheckpointSigner(ORIGIN, "pouch-fr-audit", ed25519_key, mldsa_key)
    forger = CheckpointSigner(
        ORIGIN,
        "pouch-fr-audit",
        ed25519_key if stolen == ED25519 else Ed25519Signer.generate(),
        mldsa_key if stolen == MLDSA44 else MLDSA44Signer.generate(),
    )
    checkpoint = Checkpoint(ORIGIN, 7, ROOT)
    assert open_checkpoint(
        genuine.sign(checkpoint, NOW), origin=ORIGIN, log_keys=genuine.verifiers()
    )
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_checkpoint(forger.sign(checkpoint, NOW), origin=ORIGIN, log_keys=genuine.verifiers())


def test_witness_signature_alone_does_not_make_a_checkpoint() -> None:
    log = log_signer()
    checkpoint = Checkpoint(ORIGIN, 7, ROOT)
    witness = Ed25519NoteSigner("pouch-de-audit", Ed25519Signer.generate())
    only_witness = sign_note(checkpoint.body(), witness).serialize()
    assert open_note(only_witness, [witness.verifier()]).verified
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_checkpoint(
            only_witness, origin=ORIGIN, log_keys=log.verifiers(), other_keys=[witness.verifier()]
        )
    # Nor do a witness's cosignatures of both kinds.
    witnesses = [
        CosignatureSigner(witness_key_name("DE"), key)
        for key in (Ed25519Signer.generate(), MLDSA44Signer.generate())
    ]
    lines = "".join(w.cosign(checkpoint, NOW).line for w in witnesses)
    cosigned_only = f"{checkpoint.body()}\n{lines}"
    others: list[CosignatureVerifier] = [w.verifier() for w in witnesses]
    assert open_note(cosigned_only, others).verified
    with pytest.raises(UnverifiedNote, match="not signed by log key"):
        open_checkpoint(cosigned_only, origin=ORIGIN, log_keys=log.verifiers(), other_keys=others)


def test_checkpoint_of_another_origin_is_refused() -> None:
    other_log = log_signer(origin="pouch.gateway/DE/audit")
    note_text = other_log.sign(Checkpoint("pouch.gateway/DE/audit", 7, ROOT), NOW)
    with pytest.raises(ForeignCheckpoint):
        open_checkpoint(note_text, origin=ORIGIN, log_keys=other_log.verifiers())


def test_validly_signed_text_that_is_no_checkpoint_is_malformed() -> None:
    key = Ed25519NoteSigner("pouch-fr-audit", Ed25519Signer.generate())
    note_text = sign_note("if this is a valid checkpoint then I'll eat my hat\n", key)
    with pytest.raises(MalformedCheckpoint):
        open_checkpoint(note_text.serialize(), origin=ORIGIN, log_keys=[key.verifier()])


def test_checkpoints_are_opened_with_the_logs_keys_only() -> None:
    with pytest.raises(ValueError, match="log's keys"):
        open_checkpoint(
            log_signer().sign(Checkpoint(ORIGIN, 1, ROOT), NOW), origin=ORIGIN, log_keys=[]
        )


def test_signer_refuses_what_it_must_not_sign() -> None:
    key, pq_key = Ed25519Signer.generate(), MLDSA44Signer.generate()
    signer = CheckpointSigner(ORIGIN, "pouch-fr-audit", key, pq_key)
    with pytest.raises(ValueError, match="signs checkpoints of"):
        signer.sign(Checkpoint("pouch.gateway/DE/audit", 1, ROOT), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        signer.sign(Checkpoint(ORIGIN, 1, ROOT), datetime(2026, 6, 15, 12, 0))
    with pytest.raises(ValueError, match="cosignatures"):
        CheckpointSigner("cosignature/v1", "pouch-fr-audit", key, pq_key)
    with pytest.raises(ValueError):
        CheckpointSigner(ORIGIN, "pouch fr audit", key, pq_key)
    with pytest.raises(ValueError, match="Ed25519"):
        Ed25519Signer(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="ML-DSA-44"):
        MLDSA44Signer(ed25519.Ed25519PrivateKey.generate())


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
    log_keys = partner_log_keys(load_trust_bundle(directory.bundle))
    assert log_keys == signer.verifiers()
    assert [k.algorithm for k in log_keys] == [ED25519, MLDSA44]
    assert all(k.key_name == "pouch-fr-audit" for k in log_keys)
    note_text = signer.sign(Checkpoint(signer.origin, 1, ROOT), NOW)
    opened = open_checkpoint(note_text, origin=signer.origin, log_keys=log_keys)
    assert opened.checkpoint.size == 1
