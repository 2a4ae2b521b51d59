"""The devtools witness and the gateway agree on every byte of c2sp.org/tlog-witness.

The witness in ``pouch_devtools.witness`` shares no code with ``gateway.audit``: the
gateway's signed checkpoints must open there, its cosignatures must verify here, and
the two Merkle consistency checks must agree on every pair of sizes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.cosignature import CosignatureVerifier, verify_cosignatures
from gateway.audit.log_signing import CheckpointSigner
from gateway.audit.merkle import consistency_proof, leaf_hash, root, subtree_levels
from gateway.audit.merkle import verify_consistency as gateway_consistent
from gateway.audit.witness_protocol import AddCheckpoint, add_checkpoint_body
from gateway.pki.note_keys import Ed25519Signer, MLDSA44Signer
from pouch_devtools.witness import LogKey, Refusal, Witness, consistent, load_keys

ORIGIN = "example.test/log"
LEAVES = 40
LEVELS = subtree_levels([leaf_hash(b"%d" % i) for i in range(LEAVES)])


def node(level: int, index: int) -> bytes:
    return LEVELS[level][index]


def tree_root(size: int) -> bytes:
    return root(size, node)


def proof(old: int, size: int) -> tuple[bytes, ...]:
    return () if old in (0, size) else tuple(consistency_proof(old, size, node))


@pytest.fixture(scope="module")
def signer() -> CheckpointSigner:
    return CheckpointSigner(
        ORIGIN, "example.test-log", Ed25519Signer.generate(), MLDSA44Signer.generate()
    )


def make_witness(tmp_path: Path, signer: CheckpointSigner) -> Witness:
    logs = {ORIGIN: [LogKey.parse(str(key.vkey)) for key in signer.verifiers()]}
    keys = load_keys(tmp_path / "keys.json")
    return Witness("witness.test/w1", keys, logs, tmp_path / "state.json")


def offer(witness: Witness, signer: CheckpointSigner, old: int, size: int) -> str:
    note = signer.sign(Checkpoint(ORIGIN, size, tree_root(size)), datetime.now(UTC))
    return witness.add_checkpoint(add_checkpoint_body(AddCheckpoint(old, proof(old, size), note)))


def test_the_gateways_checkpoints_are_cosigned_with_lines_the_gateway_verifies(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    witness = make_witness(tmp_path, signer)
    cosigners = [CosignatureVerifier.from_vkey(v) for v in witness.vkeys()]
    assert [c.algorithm for c in cosigners] == ["Ed25519", "ML-DSA-44"]
    for old, size in ((0, 5), (5, 5), (5, 17), (17, 32)):
        lines = offer(witness, signer, old, size)
        verify_cosignatures(Checkpoint(ORIGIN, size, tree_root(size)), lines, cosigners)


def test_its_record_survives_a_restart_and_a_stale_old_size_is_409(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    offer(make_witness(tmp_path, signer), signer, 0, 9)
    again = make_witness(tmp_path, signer)
    assert again.latest("0" * 64) is None
    with pytest.raises(Refusal) as refused:
        offer(again, signer, 0, 12)
    assert (refused.value.status, refused.value.text) == (409, "9\n")
    offer(again, signer, 9, 12)


def test_another_key_under_the_log_key_name_is_403_and_a_bad_proof_422(
    tmp_path: Path, signer: CheckpointSigner
) -> None:
    witness = make_witness(tmp_path, signer)
    offer(witness, signer, 0, 3)
    forger = CheckpointSigner(
        ORIGIN, "example.test-log", Ed25519Signer.generate(), MLDSA44Signer.generate()
    )
    with pytest.raises(Refusal) as refused:
        offer(witness, forger, 3, 4)
    assert refused.value.status == 403
    note = signer.sign(Checkpoint(ORIGIN, 8, tree_root(8)), datetime.now(UTC))
    bad = (proof(3, 8)[0][::-1], *proof(3, 8)[1:])
    with pytest.raises(Refusal) as inconsistent:
        witness.add_checkpoint(add_checkpoint_body(AddCheckpoint(3, bad, note)))
    assert inconsistent.value.status == 422


def test_both_consistency_checks_agree_on_every_pair_of_sizes() -> None:
    for old in range(LEAVES):
        for size in range(old, LEAVES):
            good = list(proof(old, size))
            assert consistent(old, size, tree_root(old), tree_root(size), good)
            assert gateway_consistent(old, size, good, tree_root(old), tree_root(size))
            if good:
                bad = [good[0][:-1] + bytes([good[0][-1] ^ 1]), *good[1:]]
                assert not consistent(old, size, tree_root(old), tree_root(size), bad)
