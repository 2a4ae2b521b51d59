"""The audit bundle's two algorithms: Ed25519 and ML-DSA-44, both required by default.

A bundle of a log that signs and is cosigned with both algorithms verifies only if
every required signature is there; the auditor names the algorithms they require
(``require``), so that a bundle made before post-quantum keys (audit bundle v1) still
verifies with Ed25519 alone, and a stripped ML-DSA-44 line fails otherwise. The log,
keys and witnesses are those of ``test_bundle_verify``.
"""

from __future__ import annotations

import pytest

from gateway.audit.bundle import FORMAT_V1, iter_bundle
from gateway.audit.checkpoint import Checkpoint, audit_key_name, audit_origin
from gateway.audit.cosignature import CosignatureVerifier, cosign_all
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.note import Note, NoteSignature, parse_note
from gateway.audit.verify import VerificationReport, verify_bundle
from gateway.pki.note_keys import ALGORITHMS, ED25519, MLDSA44, Ed25519Signer, MLDSA44Signer
from tests.unit.audit import test_bundle_verify as bundle_fixtures
from tests.unit.audit.test_bundle_verify import (
    NOW,
    Deployment,
    document,
    encode,
    label,
    new_witness_signers,
    stripped,
)

# A real audit log on SQLite with France's and Germany's keys, as in the bundle tests.
states = bundle_fixtures.states
deployment = bundle_fixtures.deployment


@pytest.mark.parametrize(
    ("algorithm", "other"),
    [
        pytest.param(MLDSA44, ED25519, id="ml-dsa-44-stripped"),
        pytest.param(ED25519, MLDSA44, id="ed25519-stripped"),
    ],
)
def test_a_bundle_whose_log_signature_of_one_algorithm_was_stripped_fails_unless_not_required(
    deployment: Deployment, algorithm: str, other: str
) -> None:
    deployment.append(4)
    deployment.publish()
    (log,) = [k for k in deployment.signer.verifiers() if k.algorithm == algorithm]
    bundle = stripped(deployment.export(), log)

    report = deployment.verify(bundle)

    assert report.failures == (f"checkpoint: not signed by the {algorithm} log key {label(log)}",)
    assert not report.published
    only_other = deployment.verify(bundle, require=(other,))
    assert only_other.ok, only_other.failures
    assert only_other.required_algorithms == (other,)


@pytest.mark.parametrize(
    ("algorithm", "other"),
    [
        pytest.param(MLDSA44, ED25519, id="ml-dsa-44-stripped"),
        pytest.param(ED25519, MLDSA44, id="ed25519-stripped"),
    ],
)
def test_a_bundle_whose_partner_cosignature_of_one_algorithm_was_stripped_fails_by_name(
    deployment: Deployment, algorithm: str, other: str
) -> None:
    deployment.append(4)
    checkpoint = deployment.publish()
    # Belgium cosigned as well, with both algorithms: the auditor trusts both partners.
    belgium = new_witness_signers("BE")
    lines = "".join(c.line for c in cosign_all(belgium, checkpoint, NOW))
    deployment.checkpoints.add_cosignature(checkpoint.size, "BE", lines)
    cosigners = {**deployment.cosigner_vkeys, "BE": [str(w.verifier().vkey) for w in belgium]}
    bundle = b"".join(
        iter_bundle(
            deployment.log,
            deployment.checkpoints,
            state="FR",
            log_vkeys=deployment.log_vkeys,
            cosigner_vkeys=cosigners,
        )
    )

    def verify(data: bytes, require: tuple[str, ...] = ALGORITHMS) -> VerificationReport:
        return verify_bundle(
            data,
            trusted_log_vkeys=deployment.log_vkeys,
            trusted_cosigner_vkeys=cosigners,
            require=require,
        )

    assert verify(bundle).cosigned_by == ("BE", "DE")
    (germany,) = [w.verifier() for w in deployment.witnesses if w.algorithm == algorithm]

    report = verify(stripped(bundle, germany))

    assert report.failures == ("checkpoint: not cosigned by DE, whose key is trusted",)
    assert f"checkpoint: DE did not cosign with {algorithm}" in report.notices
    assert report.cosigned_by == ("BE",)
    assert verify(stripped(bundle, germany), require=(other,)).ok


def test_a_bundle_whose_only_partner_cosignature_of_one_algorithm_was_stripped_fails(
    deployment: Deployment,
) -> None:
    deployment.append(4)
    deployment.publish()
    (germany,) = [w.verifier() for w in deployment.witnesses if w.algorithm == MLDSA44]
    bundle = stripped(deployment.export(), germany)

    report = deployment.verify(bundle)

    assert report.failures == (
        "checkpoint: not published: no cosigner cosigned with every required algorithm "
        "(Ed25519, ML-DSA-44)",
    )
    assert "checkpoint: DE did not cosign with ML-DSA-44" in report.notices
    assert deployment.verify(bundle, require=(ED25519,)).ok


def test_trusting_no_key_of_a_required_algorithm_fails_saying_which(
    deployment: Deployment,
) -> None:
    deployment.append(2)
    deployment.publish()

    report = verify_bundle(
        deployment.export(),
        trusted_log_vkeys=deployment.log_vkeys[:1],
        trusted_cosigner_vkeys={"DE": deployment.cosigner_vkeys["DE"][:1]},
    )

    assert not report.ok
    assert (
        "cosigner key of DE: no ML-DSA-44 key trusted, and ML-DSA-44 cosignatures are "
        "required (give it, or --require)"
    ) in report.failures
    assert (
        "checkpoint: no ML-DSA-44 log key to check the log's ML-DSA-44 signature with "
        "(give it, or --require)"
    ) in report.failures


def as_v1(deployment: Deployment, bundle: bytes) -> bytes:
    """``bundle`` as the release before post-quantum keys wrote it (audit bundle v1): one
    Ed25519 log key, one Ed25519 key per cosigner, and only Ed25519 lines in its notes."""
    v2 = document(bundle)
    ed25519_only = {
        (k.key_name, k.key_id) for k in deployment.signing_keys() if k.algorithm == ED25519
    }

    def classical(note_text: str) -> str:
        note = parse_note(note_text)
        lines = [s for s in note.signatures if (s.key_name, s.key_id) in ed25519_only]
        return Note(note.text, tuple(lines)).serialize()

    v1 = {
        "format": FORMAT_V1,
        "state": v2["state"],
        "origin": v2["origin"],
        "log_key": v2["log_keys"][0],
        "cosigner_keys": {s: keys[0] for s, keys in v2["cosigner_keys"].items()},
        "checkpoint": classical(v2["checkpoint"]),
        "selection": v2["selection"],
        "complete": v2["complete"],
        "range": v2["range"],
        "consistency": [{**c, "checkpoint": classical(c["checkpoint"])} for c in v2["consistency"]],
        "entries": v2["entries"],
    }
    return encode(v1)


def test_a_v1_bundle_still_verifies_with_ed25519_required(deployment: Deployment) -> None:
    deployment.append(5)
    deployment.publish()
    deployment.append(3)
    deployment.publish()
    bundle = as_v1(deployment, deployment.export(earlier_sizes=[5]))
    log_key = deployment.log_vkeys[:1]
    cosigner_keys = {"DE": deployment.cosigner_vkeys["DE"][:1]}

    report = verify_bundle(
        bundle,
        trusted_log_vkeys=log_key,
        trusted_cosigner_vkeys=cosigner_keys,
        require=(ED25519,),
    )

    assert report.ok, report.failures
    assert report.format == FORMAT_V1
    assert (report.tree_size, report.entries_verified, report.consistent_with) == (8, 8, (5,))
    assert report.published and report.cosigned_by == ("DE",)
    assert report.log_keys == tuple(log_key)
    assert report.cosigner_keys == {"DE": tuple(cosigner_keys["DE"])}
    # The auditor's current keys, both algorithms, check it as well.
    assert deployment.verify(bundle, require=(ED25519,)).ok
    # Under the default it is not post-quantum evidence, and fails saying so.
    default = deployment.verify(bundle)
    assert not default.ok
    assert (
        f"checkpoint: not signed by the ML-DSA-44 log key {label(deployment.signer.verifiers()[1])}"
        in default.failures
    )


def test_one_cosignature_relabelled_for_a_second_cosigner_sharing_its_key_is_refused(
    deployment: Deployment,
) -> None:
    """A second state's bundle certifying DE's witness key: DE's one Ed25519 cosignature,
    which names no cosigner, would count for both under a quorum of two."""
    deployment.append(4)
    deployment.publish()
    germany = deployment.cosigner_vkeys["DE"]
    (ed25519_de,) = [w.verifier() for w in deployment.witnesses if w.algorithm == ED25519]
    impostor = CosignatureVerifier("pouch-be-witness", ed25519_de.public_key, ED25519)
    note = parse_note(document(deployment.export())["checkpoint"])
    relabelled = [
        NoteSignature(impostor.key_name, impostor.key_id, line.signature)
        for line in note.signatures
        if (line.key_name, line.key_id) == (ed25519_de.key_name, ed25519_de.key_id)
    ]
    bundle = document(deployment.export())
    bundle["checkpoint"] = Note(note.text, note.signatures + tuple(relabelled)).serialize()

    report = verify_bundle(
        encode(bundle),
        trusted_log_vkeys=deployment.log_vkeys,
        trusted_cosigner_vkeys={"DE": germany, "BE": [str(impostor.vkey)]},
        quorum=2,
        require=(ED25519,),
    )

    assert not report.ok
    assert (
        "cosigner key of DE: the same Ed25519 key as the cosigner key of BE (one key, one "
        "cosigner: a cosignature would count for both)"
    ) in report.failures


def test_extension_lines_no_required_signature_covers_fail(deployment: Deployment) -> None:
    """An ML-DSA-44 cosignature signs origin, size and root only: required alone, it
    leaves extension lines unauthenticated, so a checkpoint carrying them fails."""
    deployment.append(4)
    checkpoint = deployment.publish()
    extended = Checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root_hash, ("ext",))
    lines = [
        line
        for line in parse_note(document(deployment.export())["checkpoint"]).signatures
        if line.signature and len(line.signature) > 100  # the ML-DSA-44 lines
    ]
    bundle = document(deployment.export())
    bundle["checkpoint"] = Note(extended.body(), tuple(lines)).serialize()

    report = deployment.verify(encode(bundle), require=(MLDSA44,))

    assert (
        "checkpoint: carries extension lines that no required signature covers (an ML-DSA-44 "
        "cosignature signs none of them; require Ed25519)"
    ) in report.failures
    assert "checkpoint: not signed by" not in " ".join(report.failures)  # the lines verify


def test_a_checkpoint_signer_with_its_keys_swapped_is_refused() -> None:
    with pytest.raises(ValueError, match="an Ed25519 key and an ML-DSA-44 key"):
        CheckpointSigner(
            audit_origin("FR"),
            audit_key_name("FR"),
            MLDSA44Signer.generate(),  # type: ignore[arg-type]
            Ed25519Signer.generate(),  # type: ignore[arg-type]
        )
