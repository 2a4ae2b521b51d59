"""The audit bundle against the attacks it exists to expose, verified offline.

Each test runs a real audit log on an SQLite file, France's checkpoints signed with
France's audit keys (Ed25519 and ML-DSA-44) and cosigned by Germany's gateway with
both of its witness keys (the witness decision itself), keys made by ``init_state``.
The attacker has the database: rows are changed with SQL, as someone bypassing the
gateway would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gateway.audit import merkle
from gateway.audit.bundle import FORMAT, FORMAT_V1, BundleFormatError, iter_bundle, read_members
from gateway.audit.checkpoint import (
    Checkpoint,
    audit_key_name,
    audit_origin,
    witness_key_name,
)
from gateway.audit.checkpoints_store import CheckpointStore
from gateway.audit.cosignature import (
    CosignatureSigner,
    cosign_all,
    witness_signers,
)
from gateway.audit.entry import Decision, EventKind
from gateway.audit.log import AuditLog
from gateway.audit.log_signing import CheckpointSigner, LogKey
from gateway.audit.note import Note, NoteSignature, parse_note
from gateway.audit.verify import VerificationReport, entry_problem, verify_bundle
from gateway.audit.witness import CHECKPOINT_INCONSISTENT, CheckpointRefused, cosign
from gateway.errors import NotFound
from gateway.pki import init_state
from gateway.pki.directory import StateDirectory
from gateway.pki.note_keys import (
    ALGORITHMS,
    ED25519,
    MLDSA44,
    Ed25519Signer,
    MLDSA44Signer,
    load_audit_signers,
    load_witness_signers,
)
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from tests.unit.audit import make_event
from tests.unit.store.conftest import START, FakeClock

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=UTC)


def make_state(state: str, root: Path) -> StateDirectory:
    return init_state(
        state,
        root / state.lower(),
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="127.0.0.1:1",
        crl_location=None,
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )


def new_log_signer() -> CheckpointSigner:
    """France's log as a forger signs it: the right names, keys of the forger's own."""
    return CheckpointSigner(
        audit_origin("FR"), audit_key_name("FR"), Ed25519Signer.generate(), MLDSA44Signer.generate()
    )


def new_witness_signers(state: str = "DE") -> tuple[CosignatureSigner, CosignatureSigner]:
    name = witness_key_name(state)
    return (
        CosignatureSigner(name, Ed25519Signer.generate()),
        CosignatureSigner(name, MLDSA44Signer.generate()),
    )


def label(key: LogKey) -> str:
    return f"{key.key_name}+{key.key_id:08x}"


@dataclass
class Deployment:
    """France's audit log and checkpoints, with Germany as the witness."""

    engine: Engine
    log: AuditLog
    checkpoints: CheckpointStore
    signer: CheckpointSigner
    witnesses: tuple[CosignatureSigner, ...]
    witnessed: tuple[int, bytes] | None = None
    appended: int = field(default=0)

    @property
    def log_vkeys(self) -> list[str]:
        """France's log keys, Ed25519 then ML-DSA-44."""
        return [str(key.vkey) for key in self.signer.verifiers()]

    @property
    def cosigner_vkeys(self) -> dict[str, list[str]]:
        """Germany's witness keys, Ed25519 then ML-DSA-44."""
        return {"DE": [str(w.verifier().vkey) for w in self.witnesses]}

    def signing_keys(self) -> list[LogKey]:
        """Every key that signs a published checkpoint: the log's, then Germany's."""
        return [*self.signer.verifiers(), *(w.verifier() for w in self.witnesses)]

    def append(self, count: int, **overrides: Any) -> None:
        self.log.append([make_event(self.appended + n, **overrides) for n in range(count)])
        self.appended += count

    def sign(self, size: int | None = None) -> Checkpoint:
        size = self.log.size() if size is None else size
        checkpoint = Checkpoint(self.signer.origin, size, self.log.root(size))
        note = self.signer.sign(checkpoint, NOW)
        self.checkpoints.record_checkpoint(size, checkpoint.root_hash, note)
        return checkpoint

    def publish(self, size: int | None = None) -> Checkpoint:
        """Sign a checkpoint, have Germany cosign it as its witness, mark it published."""
        checkpoint = self.sign(size)
        stored = self.checkpoints.get(checkpoint.size)
        assert stored is not None
        proof = (
            []
            if self.witnessed is None
            else self.log.consistency_proof(self.witnessed[0], checkpoint.size)
        )
        cosigned = cosign(
            stored.note,
            proof,
            origin=self.signer.origin,
            log_keys=self.signer.verifiers(),
            last_seen=self.witnessed,
            own_keys=self.witnesses,
            now=NOW,
        )
        self.witnessed = (checkpoint.size, checkpoint.root_hash)
        self.checkpoints.add_cosignature(checkpoint.size, "DE", cosigned.lines)
        self.checkpoints.mark_published(checkpoint.size)
        return checkpoint

    def export(self, **selection: Any) -> bytes:
        chunks = iter_bundle(
            self.log,
            self.checkpoints,
            state="FR",
            log_vkeys=self.log_vkeys,
            cosigner_vkeys=self.cosigner_vkeys,
            **selection,
        )
        return b"".join(chunks)

    def verify(self, bundle: bytes, *, require: tuple[str, ...] = ALGORITHMS) -> VerificationReport:
        """Verify as an auditor holding France's and Germany's keys out of band."""
        return verify_bundle(
            bundle,
            trusted_log_vkeys=self.log_vkeys,
            trusted_cosigner_vkeys=self.cosigner_vkeys,
            require=require,
        )

    def sql(self, statement: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(statement), params)


@pytest.fixture
def states(tmp_path: Path) -> tuple[StateDirectory, StateDirectory]:
    return make_state("FR", tmp_path), make_state("DE", tmp_path)


@pytest.fixture
def deployment(
    tmp_path: Path, states: tuple[StateDirectory, StateDirectory]
) -> Iterator[Deployment]:
    france, germany = states
    engine = create_engine(f"sqlite:///{tmp_path / 'pouch.db'}")
    upgrade_to_head(engine)
    clock = FakeClock(START)
    try:
        yield Deployment(
            engine=engine,
            log=AuditLog(engine, clock=clock),
            checkpoints=CheckpointStore(engine, clock=clock),
            signer=CheckpointSigner.for_state(france),
            witnesses=witness_signers(germany),
        )
    finally:
        engine.dispose()


def document(bundle: bytes) -> dict[str, Any]:
    parsed = json.loads(bundle)
    assert isinstance(parsed, dict)
    return parsed


def encode(bundle: dict[str, Any]) -> bytes:
    return json.dumps(bundle).encode()


def test_untouched_log_verifies(deployment: Deployment) -> None:
    deployment.append(12)
    checkpoint = deployment.publish()

    report = deployment.verify(deployment.export())

    assert report.ok, report.failures
    assert (report.tree_size, report.root_hash) == (12, checkpoint.root_hash)
    assert report.origin == audit_origin("FR")
    assert report.published and report.cosigned_by == ("DE",)
    assert (report.entries, report.entries_verified) == (12, 12)
    assert report.complete_range == (0, 12)
    assert report.keys_trusted
    assert report.log_keys == tuple(deployment.log_vkeys)
    assert report.cosigner_keys == {"DE": tuple(deployment.cosigner_vkeys["DE"])}
    assert report.required_algorithms == (ED25519, MLDSA44)
    assert json.loads(json.dumps(report.as_json()))["ok"] is True


def test_bundle_format_carries_every_signature_in_one_note(deployment: Deployment) -> None:
    deployment.append(3)
    deployment.publish()

    bundle = document(deployment.export())

    assert bundle["format"] == FORMAT == "pouch.audit-bundle/v2"
    assert bundle["log_keys"] == deployment.log_vkeys
    assert bundle["cosigner_keys"] == deployment.cosigner_vkeys
    body, _, signatures = bundle["checkpoint"].partition("\n\n")
    assert Checkpoint.parse(body + "\n").size == 3
    # The log's Ed25519 and ML-DSA-44 lines, then Germany's Ed25519 and ML-DSA-44 ones.
    assert [(s.key_name, s.key_id) for s in parse_note(bundle["checkpoint"]).signatures] == [
        (k.key_name, k.key_id) for k in deployment.signing_keys()
    ]
    assert [line.split(" ")[1] for line in signatures.splitlines()] == [
        audit_key_name("FR"),
        audit_key_name("FR"),
        witness_key_name("DE"),
        witness_key_name("DE"),
    ]
    entry = bundle["entries"][1]
    record = deployment.log.entry(1)
    assert record is not None
    assert base64.b64decode(entry["canonical"]) == record.canonical
    assert [base64.b64decode(h) for h in entry["proof"]] == deployment.log.inclusion_proof(1, 3)


def test_without_trusted_keys_a_consistent_bundle_is_still_not_verified(
    deployment: Deployment,
) -> None:
    deployment.append(2)
    deployment.publish()

    report = verify_bundle(deployment.export())

    assert not report.ok and not report.keys_trusted
    assert [f.split(";")[0] for f in report.failures] == [
        "log key: none trusted",
        "cosigner keys: none trusted",
    ]
    assert report.entries_verified == 2 and report.published  # what could be checked


def test_entry_altered_in_database_is_detected(deployment: Deployment) -> None:
    deployment.append(20)
    deployment.publish()
    forged = make_event(17, message_id="m-forged").canonical()
    deployment.sql("UPDATE audit_entries SET canonical = :c WHERE idx = 17", c=forged)

    report = deployment.verify(deployment.export())

    assert not report.ok
    assert report.failures == ("entry 17: inclusion proof does not reproduce the checkpoint root",)
    assert report.entries_verified == 19


def test_entry_and_its_leaf_hash_altered_together_is_detected(deployment: Deployment) -> None:
    deployment.append(20)
    deployment.publish()
    forged = make_event(6, decision=Decision.REFUSED).canonical()
    deployment.sql(
        "UPDATE audit_entries SET canonical = :c, leaf_hash = :h WHERE idx = 6",
        c=forged,
        h=merkle.leaf_hash(forged),
    )

    report = deployment.verify(deployment.export())

    # The tree above the leaf is stored apart from it: the leaf's sibling fails too.
    assert set(report.failures) == {
        "entry 6: inclusion proof does not reproduce the checkpoint root",
        "entry 7: inclusion proof does not reproduce the checkpoint root",
    }


def test_entry_deleted_is_detected(deployment: Deployment) -> None:
    deployment.append(12)
    deployment.publish()
    deployment.sql("DELETE FROM audit_entries WHERE idx = 5")

    report = deployment.verify(deployment.export())

    assert not report.ok
    assert "entry 5 missing from a complete bundle" in report.failures
    # The log can no longer prove the entry whose sibling was deleted.
    assert "entry 4: carries no inclusion proof" in report.failures


def test_entries_dropped_from_a_complete_bundle_are_named_as_a_range(
    deployment: Deployment,
) -> None:
    deployment.append(12)
    deployment.publish()
    bundle = document(deployment.export())
    bundle["entries"] = [e for e in bundle["entries"] if not 5 <= e["index"] <= 9]

    report = deployment.verify(encode(bundle))

    assert report.failures == ("entries 5..9 missing from a complete bundle",)


def test_log_truncated_and_regrown_is_detected(deployment: Deployment) -> None:
    deployment.append(10)
    published = deployment.publish()
    # The attacker drops entries 6 and up, with every stored node above them ...
    deployment.sql("DELETE FROM audit_entries WHERE idx >= 6")
    deployment.sql("DELETE FROM audit_nodes WHERE ((idx + 1) << level) > 6")
    # ... and writes another history that grows past the published checkpoint.
    deployment.appended = 6
    deployment.append(8, decision=Decision.REFUSED, reason_code="POLICY")
    regrown = deployment.sign()
    assert regrown.size == 14

    # The witness refuses to cosign it: it does not extend what Germany saw.
    stored = deployment.checkpoints.get(14)
    assert stored is not None
    with pytest.raises(CheckpointRefused) as refused:
        cosign(
            stored.note,
            deployment.log.consistency_proof(10, 14),
            origin=deployment.signer.origin,
            log_keys=deployment.signer.verifiers(),
            last_seen=(published.size, published.root_hash),
            own_keys=deployment.witnesses,
            now=NOW,
        )
    assert refused.value.reason == CHECKPOINT_INCONSISTENT

    # And an auditor given the new checkpoint with the earlier one sees the rewrite.
    report = deployment.verify(deployment.export(tree_size=14, earlier_sizes=[10]))

    assert not report.ok
    assert (
        "earlier checkpoint 10: consistency proof to checkpoint 14 does not verify: "
        "the log is not an extension of what was published at 10"
    ) in report.failures
    assert "checkpoint: not published: no valid cosignature" in report.failures
    assert not report.published
    assert report.consistent_with == ()


def test_honest_growth_is_consistent_with_earlier_checkpoints(deployment: Deployment) -> None:
    deployment.append(5)
    deployment.publish()
    deployment.append(9)
    deployment.publish()
    deployment.append(3)
    deployment.publish()

    report = deployment.verify(deployment.export(earlier_sizes=[5, 14]))

    assert report.ok, report.failures
    assert (report.tree_size, report.consistent_with) == (17, (5, 14))


def record_signed_by(deployment: Deployment, signer: CheckpointSigner, size: int) -> None:
    """A checkpoint of the log signed by ``signer``, cosigned by Germany, marked published."""
    checkpoint = Checkpoint(signer.origin, size, deployment.log.root(size))
    deployment.checkpoints.record_checkpoint(
        size, checkpoint.root_hash, signer.sign(checkpoint, NOW)
    )
    lines = "".join(c.line for c in cosign_all(deployment.witnesses, checkpoint, NOW))
    deployment.checkpoints.add_cosignature(size, "DE", lines)
    deployment.checkpoints.mark_published(size)


def test_checkpoint_signed_by_wrong_key_is_detected(deployment: Deployment) -> None:
    deployment.append(8)
    record_signed_by(deployment, new_log_signer(), 8)

    report = deployment.verify(deployment.export())

    ed25519_key, mldsa_key = deployment.signer.verifiers()
    assert report.failures == (
        f"checkpoint: not signed by the Ed25519 log key {label(ed25519_key)}",
        f"checkpoint: not signed by the ML-DSA-44 log key {label(mldsa_key)}",
    )
    # Germany did cosign that tree, but a checkpoint the log keys did not sign is no
    # checkpoint of France's log.
    assert report.cosigned_by == ("DE",) and not report.published


@pytest.mark.parametrize("stolen", [ED25519, MLDSA44])
def test_checkpoint_signed_with_one_stolen_log_key_is_detected(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory], stolen: str
) -> None:
    # The forger holds one of France's log keys (the Ed25519 one broken by a quantum
    # computer, or either one leaked) and signs the other line with a key of its own.
    ed25519_key, mldsa_key = load_audit_signers(states[0])
    forger = CheckpointSigner(
        audit_origin("FR"),
        audit_key_name("FR"),
        ed25519_key if stolen == ED25519 else Ed25519Signer.generate(),
        mldsa_key if stolen == MLDSA44 else MLDSA44Signer.generate(),
    )
    deployment.append(8)
    record_signed_by(deployment, forger, 8)

    report = deployment.verify(deployment.export())

    (missing,) = [k for k in deployment.signer.verifiers() if k.algorithm != stolen]
    assert report.failures == (
        f"checkpoint: not signed by the {missing.algorithm} log key {label(missing)}",
    )
    assert not report.published


def test_cosignature_over_different_tree_is_detected(deployment: Deployment) -> None:
    deployment.append(8)
    deployment.sign()
    other = Checkpoint(deployment.signer.origin, 7, deployment.log.root(7))
    lines = "".join(c.line for c in cosign_all(deployment.witnesses, other, NOW))
    deployment.checkpoints.add_cosignature(8, "DE", lines)
    deployment.checkpoints.mark_published(8)

    report = deployment.verify(deployment.export())

    assert report.failures == (
        "checkpoint: Ed25519 cosignature by DE does not verify",
        "checkpoint: ML-DSA-44 cosignature by DE does not verify",
        "checkpoint: not published: no valid cosignature",
    )
    assert not report.published


def test_bundle_keys_differing_from_trusted_keys_are_reported(
    deployment: Deployment, tmp_path: Path
) -> None:
    # The attacker rewrites the log and signs with keys of their own: a bundle that is
    # perfectly consistent with itself.
    deployment.append(6)
    forger = Deployment(
        engine=deployment.engine,
        log=deployment.log,
        checkpoints=deployment.checkpoints,
        signer=new_log_signer(),
        witnesses=new_witness_signers(),
    )
    forger.publish()
    forged = forger.export()
    # Consistent with its own keys, and still never VERIFIED without trusted ones.
    assert not verify_bundle(forged).ok
    assert verify_bundle(forged).entries_verified == 6

    report = deployment.verify(forged)

    assert not report.ok and report.keys_trusted
    log_keys: tuple[LogKey, ...] = deployment.signer.verifiers()
    impostors: tuple[LogKey, ...] = forger.signer.verifiers()
    witnesses = [w.verifier() for w in deployment.witnesses]
    impostor_witnesses = [w.verifier() for w in forger.witnesses]
    assert report.failures == (
        *(
            f"log key: the bundle's {label(impostor)} is not the trusted "
            f"{key.algorithm} key {label(key)}"
            for key, impostor in zip(log_keys, impostors, strict=True)
        ),
        *(
            f"cosigner key of DE: the bundle's {label(impostor)} is not the trusted "
            f"{key.algorithm} key {label(key)}"
            for key, impostor in zip(witnesses, impostor_witnesses, strict=True)
        ),
        *(f"checkpoint: not signed by the {k.algorithm} log key {label(k)}" for k in log_keys),
        "checkpoint: not published: no valid cosignature",
    )
    # What was checked: the trusted keys.
    assert report.log_keys == tuple(deployment.log_vkeys)


def test_filtered_bundle_verifies_with_inclusion_proofs(deployment: Deployment) -> None:
    deployment.append(30)
    deployment.append(5, agreement_id="FR-DE/representation", event_kind=EventKind.RECEIVED)
    deployment.append(30)
    deployment.publish()

    bundle = deployment.export(agreement_id="FR-DE/representation")
    report = deployment.verify(bundle)

    assert report.ok, report.failures
    assert [e["index"] for e in document(bundle)["entries"]] == [30, 31, 32, 33, 34]
    assert report.complete_range is None and report.entries_verified == 5
    scoped = deployment.verify(deployment.export(agreement_ids=[], event_kind="sent"))
    assert scoped.ok and scoped.entries == 0


def test_exported_proofs_are_the_stored_trees_across_blocks(deployment: Deployment) -> None:
    deployment.log.append([make_event(n) for n in range(1100)])
    deployment.publish()
    deployment.append(50)  # beyond the checkpoint: not in the bundle

    bundle = document(deployment.export())

    assert len(bundle["entries"]) == 1100
    for entry in bundle["entries"][::37] + bundle["entries"][-80:]:
        proof = [base64.b64decode(h) for h in entry["proof"]]
        assert proof == deployment.log.inclusion_proof(entry["index"], 1100)
    assert deployment.verify(encode(bundle)).ok


def test_bundle_streams_in_chunks_of_pages(deployment: Deployment) -> None:
    deployment.log.append([make_event(n) for n in range(2500)])
    deployment.publish()
    chunks = list(
        iter_bundle(
            deployment.log,
            deployment.checkpoints,
            state="FR",
            log_vkeys=deployment.log_vkeys,
            cosigner_vkeys=deployment.cosigner_vkeys,
        )
    )
    assert len(chunks) == 1 + 3 + 1  # header, three pages, the end
    report = deployment.verify(b"".join(chunks))
    assert report.ok and report.entries_verified == 2500


def test_export_without_published_checkpoint_is_refused(deployment: Deployment) -> None:
    deployment.append(3)
    deployment.sign()
    with pytest.raises(NotFound):
        deployment.export()


def test_proof_for_another_entry_is_detected(deployment: Deployment) -> None:
    deployment.append(8)
    deployment.publish()
    bundle = document(deployment.export())
    bundle["entries"][2]["proof"], bundle["entries"][3]["proof"] = (
        bundle["entries"][3]["proof"],
        bundle["entries"][2]["proof"],
    )
    bundle["entries"][5]["index"] = 99
    bundle["entries"].append(dict(bundle["entries"][0]))

    report = deployment.verify(encode(bundle))

    assert report.failures == (
        "entry 2: inclusion proof does not reproduce the checkpoint root",
        "entry 3: inclusion proof does not reproduce the checkpoint root",
        "entry 99: beyond the checkpoint's tree size 8",
        "entry 0: appears more than once",
        "entry 5 missing from a complete bundle",
    )


def test_entry_breaking_the_v1_encoding_is_named(deployment: Deployment) -> None:
    valid = make_event(1).canonical()
    document_ = json.loads(valid)
    assert entry_problem(valid) is None
    assert entry_problem(b"[]") == "canonical is not a JSON object"
    with_name = json.dumps({**document_, "name": "Jean Dupont"}, sort_keys=True).encode()
    assert entry_problem(with_name) == (
        "canonical fields differ from v1: missing [], unexpected ['name']"
    )
    spaced = json.dumps(document_, sort_keys=True).encode()
    assert entry_problem(spaced) == "canonical is not the RFC 8785 encoding of its v1 fields"
    versioned = json.dumps({**document_, "agreement_version": True}).encode()
    assert entry_problem(versioned) is not None
    assert entry_problem(valid.replace(b'"registry-fr"', b'"J Dupont"')) is not None
    # A rule's "$" would let a trailing newline through; the browser's check refuses it too.
    assert entry_problem(valid.replace(b'"DE"', b'"DE\\n"')) is not None
    with pytest.raises(ValueError, match="peer_state"):
        make_event(1, peer_state="DE\n")

    # Appended raw, such an entry is in the tree, but is still not a v1 entry.
    deployment.log._append_rows(
        [{"time": NOW, "event_kind": "sent", "decision": "accepted", "canonical": with_name}]
    )
    deployment.publish()
    report = deployment.verify(deployment.export())
    assert report.failures == (
        "entry 0: canonical fields differ from v1: missing [], unexpected ['name']",
    )


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b.replace(b'"format"', b'"origin":"x","format"', 1), id="twice"),
        pytest.param(lambda b: b + b"{}", id="trailing"),
        pytest.param(lambda b: b.replace(FORMAT.encode(), b"pouch.audit-bundle/v3"), id="v3"),
        pytest.param(lambda b: b.replace(FORMAT.encode(), FORMAT_V1.encode()), id="v2-as-v1"),
        pytest.param(lambda b: b.replace(b'"selection"', b'"extra":1,"selection"'), id="member"),
        pytest.param(lambda b: b"\xff" + b, id="not-utf8"),
    ],
)
def test_malformed_bundle_fails_without_raising(deployment: Deployment, mangle: Any) -> None:
    deployment.append(4)
    deployment.publish()

    report = deployment.verify(mangle(deployment.export()))

    assert not report.ok
    assert report.failures[0].startswith("bundle: ")


def test_reader_reads_members_in_order_and_entries_lazily() -> None:
    members = read_members('{"a": 1, "entries": [ {"x": 1}, 2 ], "b": [3]}')
    name, first = next(members)
    assert (name, first) == ("a", 1)
    name, entries = next(members)
    assert name == "entries" and next(entries) == {"x": 1}
    assert next(members) == ("b", [3])  # the rest of the entries was read past
    with pytest.raises(BundleFormatError):
        list(read_members('{"entries": [{"x": 1, "x": 2}]}'))


def test_entries_written_before_the_checkpoint_still_verify(deployment: Deployment) -> None:
    deployment.append(4)
    deployment.publish()
    bundle = document(deployment.export())
    reordered = {"entries": bundle.pop("entries"), **bundle}

    assert deployment.verify(encode(reordered)).ok


def test_trusted_keys_must_be_keys() -> None:
    with pytest.raises(ValueError, match="trusted log key"):
        verify_bundle(b"{}", trusted_log_vkeys=["not a key"])
    cosigners = [str(w.verifier().vkey) for w in new_witness_signers()]
    with pytest.raises(ValueError, match="trusted cosigner key"):
        verify_bundle(b"{}", trusted_cosigner_vkeys={"de": cosigners})
    assert not verify_bundle(b"{}", trusted_cosigner_vkeys={"DE": cosigners}).ok
    # One key per algorithm and role: a second one is ambiguous, not a spare.
    log_keys = [str(k.vkey) for k in (*new_log_signer().verifiers(), *new_log_signer().verifiers())]
    with pytest.raises(ValueError, match="two Ed25519 keys given"):
        verify_bundle(b"{}", trusted_log_vkeys=log_keys)
    with pytest.raises(ValueError, match="two ML-DSA-44 keys"):
        verify_bundle(b"{}", trusted_cosigner_vkeys={"DE": [cosigners[1], cosigners[1]]})
    with pytest.raises(ValueError, match="require"):
        verify_bundle(b"{}", require=())
    with pytest.raises(ValueError, match="require"):
        verify_bundle(b"{}", require=("Ed448",))


def test_earlier_checkpoint_must_be_earlier(deployment: Deployment) -> None:
    deployment.append(3)
    deployment.publish()
    with pytest.raises(ValueError, match="not earlier"):
        deployment.export(earlier_sizes=[3])
    stamp = NOW + timedelta(days=1)
    assert deployment.verify(deployment.export(until=stamp)).entries == 3


# -- since: the checkpoint the auditor kept ------------------------------------------


def kept_note(deployment: Deployment, size: int) -> str:
    """The checkpoint note of ``size`` as an auditor keeps it from a verified bundle."""
    report = deployment.verify(deployment.export(tree_size=size))
    assert report.ok and report.checkpoint_note is not None
    return report.checkpoint_note


def test_a_log_that_only_grew_since_the_last_audit_verifies_with_since(
    deployment: Deployment,
) -> None:
    deployment.append(5)
    deployment.publish()
    seen = kept_note(deployment, 5)
    deployment.append(4)
    deployment.publish()

    report = verify_bundle(
        deployment.export(earlier_sizes=[5]),
        trusted_log_vkeys=deployment.log_vkeys,
        trusted_cosigner_vkeys=deployment.cosigner_vkeys,
        since=seen,
    )

    assert report.ok, report.failures
    assert "since: the checkpoint you saw at size 5: the log only grew from it, to 9" in (
        report.notices
    )


def test_a_log_truncated_and_regrown_since_the_last_audit_fails_naming_the_size(
    deployment: Deployment, tmp_path: Path
) -> None:
    deployment.append(5)
    deployment.publish()
    seen = kept_note(deployment, 5)
    # Whoever holds the gateway's keys rebuilds the log: the first three entries again,
    # two others in place of entries 3 and 4, then more; every checkpoint re-signed and
    # cosigned. The bundle is consistent with itself.
    engine = create_engine(f"sqlite:///{tmp_path / 'regrown.db'}")
    upgrade_to_head(engine)
    clock = FakeClock(START)
    regrown = Deployment(
        engine=engine,
        log=AuditLog(engine, clock=clock),
        checkpoints=CheckpointStore(engine, clock=clock),
        signer=deployment.signer,
        witnesses=deployment.witnesses,
    )
    try:
        regrown.append(3)
        regrown.append(2, message_id="m-rewritten")
        regrown.publish()
        regrown.append(4)
        regrown.publish()
        bundle = regrown.export(earlier_sizes=[5])
        assert deployment.verify(bundle).ok  # nothing in it betrays the rewrite

        report = verify_bundle(
            bundle,
            trusted_log_vkeys=deployment.log_vkeys,
            trusted_cosigner_vkeys=deployment.cosigner_vkeys,
            since=seen,
        )
    finally:
        engine.dispose()

    assert report.failures == (
        "since: the checkpoint you saw at size 5: not an extension of it: the log was "
        "rewritten at or before 5 and regrown",
    )


def test_without_a_proof_from_the_kept_checkpoint_since_fails(deployment: Deployment) -> None:
    deployment.append(5)
    deployment.publish()
    seen = kept_note(deployment, 5)
    deployment.append(4)
    deployment.publish()

    report = verify_bundle(
        deployment.export(),
        trusted_log_vkeys=deployment.log_vkeys,
        trusted_cosigner_vkeys=deployment.cosigner_vkeys,
        since=seen,
    )

    assert report.failures == (
        "since: the checkpoint you saw at size 5: the bundle carries no consistency proof "
        "from it (export with since_tree_size 5)",
    )


def test_a_kept_checkpoint_that_is_not_a_signed_checkpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="the checkpoint you kept is not a signed checkpoint"):
        verify_bundle(b"{}", since="not a note")


# -- one key, one role ----------------------------------------------------------------


def with_lines(
    bundle: dict[str, Any],
    edit: Callable[[tuple[NoteSignature, ...]], Iterable[NoteSignature]],
) -> bytes:
    """``bundle`` with its checkpoint's signature lines replaced by ``edit(lines)``."""
    note = parse_note(bundle["checkpoint"])
    bundle["checkpoint"] = Note(note.text, tuple(edit(note.signatures))).serialize()
    return encode(bundle)


def stripped(bundle: bytes, *keys: LogKey) -> bytes:
    """``bundle`` with the lines of ``keys`` taken out of its checkpoint."""
    gone = {(k.key_name, k.key_id) for k in keys}
    return with_lines(
        document(bundle), lambda lines: [s for s in lines if (s.key_name, s.key_id) not in gone]
    )


def line_of(note_text: str, key: LogKey) -> NoteSignature:
    (line,) = [
        s
        for s in parse_note(note_text).signatures
        if (s.key_name, s.key_id) == (key.key_name, key.key_id)
    ]
    return line


@pytest.mark.parametrize("algorithm", [ED25519, MLDSA44])
def test_a_cosignature_relabelled_as_the_log_signature_is_refused(
    deployment: Deployment, algorithm: str
) -> None:
    deployment.append(3)
    deployment.publish()
    bundle = document(deployment.export())
    assert deployment.verify(encode(bundle)).ok
    (log,) = [k for k in deployment.signer.verifiers() if k.algorithm == algorithm]
    (witness,) = [w.verifier() for w in deployment.witnesses if w.algorithm == algorithm]
    cosigned = line_of(bundle["checkpoint"], witness)
    # The witness's signature of this algorithm, in place of the log's, under the log
    # key's name and id.
    relabelled = NoteSignature(log.key_name, log.key_id, cosigned.signature)

    report = deployment.verify(
        with_lines(
            bundle, lambda lines: [relabelled if s.key_id == log.key_id else s for s in lines]
        )
    )

    assert report.failures == (
        f"checkpoint: signature by the {algorithm} log key {label(log)} does not verify",
    )
    assert not report.published


@pytest.mark.parametrize("algorithm", [ED25519, MLDSA44])
def test_a_cosignature_made_with_the_log_key_itself_does_not_pass_for_its_log_signature(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory], algorithm: str
) -> None:
    # Were one key to serve both roles, its cosignature would still sign other bytes than
    # the log signature: Ed25519 cosignatures sign "cosignature/v1" and a time before the
    # body, and an ML-DSA-44 cosignature commits to the cosigner's name.
    deployment.append(3)
    checkpoint = deployment.publish()
    bundle = document(deployment.export())
    (log,) = [k for k in deployment.signer.verifiers() if k.algorithm == algorithm]
    (log_key,) = [k for k in load_audit_signers(states[0]) if k.algorithm == algorithm]
    as_witness = CosignatureSigner(witness_key_name("DE"), log_key).cosign(checkpoint, NOW)
    signature = as_witness.note_signature.signature
    if algorithm == ED25519:
        signature = signature[8:]  # a log signature carries no timestamp
    relabelled = NoteSignature(log.key_name, log.key_id, signature)

    report = deployment.verify(
        with_lines(
            bundle, lambda lines: [relabelled if s.key_id == log.key_id else s for s in lines]
        )
    )

    assert report.failures == (
        f"checkpoint: signature by the {algorithm} log key {label(log)} does not verify",
    )


def test_a_witness_key_offered_as_the_log_key_is_refused(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory]
) -> None:
    france, _ = states
    deployment.append(3)
    # France's witness keys sign France's log under log-key types: the wrong role.
    wrong_role = CheckpointSigner(
        audit_origin("FR"), witness_key_name("FR"), *load_witness_signers(france)
    )
    forger = Deployment(
        engine=deployment.engine,
        log=deployment.log,
        checkpoints=deployment.checkpoints,
        signer=wrong_role,
        witnesses=deployment.witnesses,
    )
    forger.publish()

    report = verify_bundle(
        forger.export(),
        trusted_log_vkeys=forger.log_vkeys,
        trusted_cosigner_vkeys=forger.cosigner_vkeys,
    )

    assert not report.ok
    # Once for each of the two keys, Ed25519 and ML-DSA-44.
    assert (
        report.failures.count(
            "log key: pouch-fr-witness is not pouch-fr-audit, the key that signs this state's log "
            "(a witness key is never a log key)"
        )
        == 2
    )


def trusted_with_witness_key(
    deployment: Deployment, france: StateDirectory, algorithm: str
) -> tuple[list[str], LogKey]:
    """France's log vkeys with the one of ``algorithm`` replaced by France's witness key."""
    (witness,) = [w.verifier() for w in witness_signers(france) if w.algorithm == algorithm]
    trusted = [
        str(k.vkey) if k.algorithm != algorithm else str(witness.vkey)
        for k in deployment.signer.verifiers()
    ]
    return trusted, witness


def test_an_ed25519_witness_vkey_trusted_as_a_log_key_is_refused(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory]
) -> None:
    deployment.append(3)
    deployment.publish()
    bundle = deployment.export()
    assert deployment.verify(bundle).ok
    trusted, _ = trusted_with_witness_key(deployment, states[0], ED25519)

    # An Ed25519 cosigner key has its own type (0x04): it is no log key at all.
    with pytest.raises(ValueError, match="never a log key"):
        verify_bundle(
            bundle, trusted_log_vkeys=trusted, trusted_cosigner_vkeys=deployment.cosigner_vkeys
        )


def test_an_mldsa44_witness_vkey_trusted_as_a_log_key_is_refused(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory]
) -> None:
    deployment.append(3)
    deployment.publish()
    bundle = deployment.export()
    assert deployment.verify(bundle).ok
    trusted, witness = trusted_with_witness_key(deployment, states[0], MLDSA44)

    report = verify_bundle(
        bundle, trusted_log_vkeys=trusted, trusted_cosigner_vkeys=deployment.cosigner_vkeys
    )

    # ML-DSA-44 log and cosigner keys share type 0x06: the name says the role.
    assert not report.ok
    assert (
        "log key: pouch-fr-witness is not pouch-fr-audit, the key that signs this state's log "
        "(a witness key is never a log key)" in report.failures
    )
    assert f"checkpoint: not signed by the ML-DSA-44 log key {label(witness)}" in report.failures


def test_the_log_key_offered_as_a_cosigner_key_is_refused(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory]
) -> None:
    # France's log cosigns its own checkpoints under Germany's witness name: whoever
    # holds the log's keys would then witness themselves.
    name = witness_key_name("DE")
    sham = tuple(CosignatureSigner(name, key) for key in load_audit_signers(states[0]))
    forger = Deployment(
        engine=deployment.engine,
        log=deployment.log,
        checkpoints=deployment.checkpoints,
        signer=deployment.signer,
        witnesses=sham,
    )
    forger.append(3)
    forger.publish()

    report = verify_bundle(
        forger.export(),
        trusted_log_vkeys=forger.log_vkeys,
        trusted_cosigner_vkeys=forger.cosigner_vkeys,
    )

    assert report.failures == (
        "cosigner key of DE: the log's own key in the witness role (one key, one role)",
    )
