"""The audit bundle against the attacks it exists to expose, verified offline.

Each test runs a real audit log on an SQLite file, France's checkpoints signed with
France's audit key and cosigned by Germany's gateway (the witness decision itself),
keys made by ``init_state``. The attacker has the database: rows are changed with SQL,
as someone bypassing the gateway would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from gateway.audit import merkle
from gateway.audit.bundle import FORMAT, BundleFormatError, iter_bundle, read_members
from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    audit_key_name,
    audit_origin,
    witness_key_name,
)
from gateway.audit.checkpoints_store import CheckpointStore
from gateway.audit.cosignature import CosignatureSigner
from gateway.audit.entry import Decision, EventKind
from gateway.audit.log import AuditLog
from gateway.audit.note import Note, NoteSignature, parse_note
from gateway.audit.verify import VerificationReport, entry_problem, verify_bundle
from gateway.audit.witness import CHECKPOINT_INCONSISTENT, CheckpointRefused, cosign
from gateway.errors import NotFound
from gateway.pki import init_state
from gateway.pki.directory import StateDirectory
from gateway.pki.ed25519_notes import Ed25519Signer, load_witness_signer
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


@dataclass
class Deployment:
    """France's audit log and checkpoints, with Germany as the witness."""

    engine: Engine
    log: AuditLog
    checkpoints: CheckpointStore
    signer: CheckpointSigner
    witness: CosignatureSigner
    witnessed: tuple[int, bytes] | None = None
    appended: int = field(default=0)

    @property
    def log_vkey(self) -> str:
        return str(self.signer.verifier().vkey)

    @property
    def cosigner_vkeys(self) -> dict[str, str]:
        return {"DE": str(self.witness.verifier().vkey)}

    def append(self, count: int, **overrides: Any) -> None:
        self.log.append([make_event(self.appended + n, **overrides) for n in range(count)])
        self.appended += count

    def sign(self, size: int | None = None) -> Checkpoint:
        size = self.log.size() if size is None else size
        checkpoint = Checkpoint(self.signer.origin, size, self.log.root(size))
        self.checkpoints.record_checkpoint(size, checkpoint.root_hash, self.signer.sign(checkpoint))
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
            log_key=self.signer.verifier(),
            last_seen=self.witnessed,
            own_key=self.witness,
            now=NOW,
        )
        self.witnessed = (checkpoint.size, checkpoint.root_hash)
        self.checkpoints.add_cosignature(checkpoint.size, "DE", cosigned.cosignature_line)
        self.checkpoints.mark_published(checkpoint.size)
        return checkpoint

    def export(self, **selection: Any) -> bytes:
        chunks = iter_bundle(
            self.log,
            self.checkpoints,
            state="FR",
            log_vkey=self.log_vkey,
            cosigner_vkeys=self.cosigner_vkeys,
            **selection,
        )
        return b"".join(chunks)

    def verify(self, bundle: bytes) -> VerificationReport:
        """Verify as an auditor holding France's and Germany's keys out of band."""
        return verify_bundle(
            bundle, trusted_log_vkey=self.log_vkey, trusted_cosigner_vkeys=self.cosigner_vkeys
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
            witness=CosignatureSigner.for_state(germany),
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
    assert report.log_key == deployment.log_vkey
    assert report.cosigner_keys == deployment.cosigner_vkeys
    assert json.loads(json.dumps(report.as_json()))["ok"] is True


def test_bundle_format_carries_both_signatures_in_one_note(deployment: Deployment) -> None:
    deployment.append(3)
    deployment.publish()

    bundle = document(deployment.export())

    assert bundle["format"] == FORMAT
    assert bundle["log_key"] == deployment.log_vkey
    assert bundle["cosigner_keys"] == deployment.cosigner_vkeys
    body, _, signatures = bundle["checkpoint"].partition("\n\n")
    assert Checkpoint.parse(body + "\n").size == 3
    lines = signatures.splitlines()
    assert [line.split(" ")[1] for line in lines] == [audit_key_name("FR"), witness_key_name("DE")]
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
            log_key=deployment.signer.verifier(),
            last_seen=(published.size, published.root_hash),
            own_key=deployment.witness,
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


def test_checkpoint_signed_by_wrong_key_is_detected(deployment: Deployment) -> None:
    deployment.append(8)
    impostor = CheckpointSigner(audit_origin("FR"), audit_key_name("FR"), Ed25519Signer.generate())
    checkpoint = Checkpoint(impostor.origin, 8, deployment.log.root(8))
    deployment.checkpoints.record_checkpoint(8, checkpoint.root_hash, impostor.sign(checkpoint))
    line = deployment.witness.cosign(checkpoint, NOW).line
    deployment.checkpoints.add_cosignature(8, "DE", line)
    deployment.checkpoints.mark_published(8)

    report = deployment.verify(deployment.export())

    key = deployment.signer.verifier()
    assert report.failures == (
        f"checkpoint: not signed by the log key {key.key_name}+{key.key_id:08x}",
    )
    # Germany did cosign that tree, but a checkpoint the log key did not sign is no
    # checkpoint of France's log.
    assert report.cosigned_by == ("DE",) and not report.published


def test_cosignature_over_different_tree_is_detected(deployment: Deployment) -> None:
    deployment.append(8)
    deployment.sign()
    other = Checkpoint(deployment.signer.origin, 7, deployment.log.root(7))
    deployment.checkpoints.add_cosignature(8, "DE", deployment.witness.cosign(other, NOW).line)
    deployment.checkpoints.mark_published(8)

    report = deployment.verify(deployment.export())

    assert report.failures == (
        "checkpoint: cosignature by DE does not verify",
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
        signer=CheckpointSigner(audit_origin("FR"), audit_key_name("FR"), Ed25519Signer.generate()),
        witness=CosignatureSigner(witness_key_name("DE"), Ed25519Signer.generate()),
    )
    forger.publish()
    forged = forger.export()
    # Consistent with its own keys, and still never VERIFIED without trusted ones.
    assert not verify_bundle(forged).ok
    assert verify_bundle(forged).entries_verified == 6

    report = deployment.verify(forged)

    assert not report.ok and report.keys_trusted
    signer, witness = deployment.signer.verifier(), deployment.witness.verifier()
    impostor, impostor_witness = forger.signer.verifier(), forger.witness.verifier()
    assert report.failures == (
        f"log key: the bundle's {signer.key_name}+{impostor.key_id:08x} is not the trusted "
        f"key {signer.key_name}+{signer.key_id:08x}",
        f"cosigner key of DE: the bundle's {witness.key_name}+{impostor_witness.key_id:08x} "
        f"is not the trusted key {witness.key_name}+{witness.key_id:08x}",
        f"checkpoint: not signed by the log key {signer.key_name}+{signer.key_id:08x}",
        "checkpoint: not published: no valid cosignature",
    )
    assert report.log_key == deployment.log_vkey  # what was checked: the trusted key


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
            log_vkey=deployment.log_vkey,
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
        pytest.param(lambda b: b.replace(FORMAT.encode(), b"pouch.audit-bundle/v2"), id="v2"),
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
        verify_bundle(b"{}", trusted_log_vkey="not a key")
    cosigner = str(CosignatureSigner("pouch-de-witness", Ed25519Signer.generate()).verifier().vkey)
    with pytest.raises(ValueError, match="trusted cosigner key"):
        verify_bundle(b"{}", trusted_cosigner_vkeys={"de": cosigner})
    assert not verify_bundle(b"{}", trusted_cosigner_vkeys={"DE": cosigner}).ok


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
        trusted_log_vkey=deployment.log_vkey,
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
        witness=deployment.witness,
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
            trusted_log_vkey=deployment.log_vkey,
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
        trusted_log_vkey=deployment.log_vkey,
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


def test_a_cosignature_relabelled_as_the_log_signature_is_refused(
    deployment: Deployment,
) -> None:
    deployment.append(3)
    deployment.publish()
    bundle = document(deployment.export())
    note = parse_note(bundle["checkpoint"])
    log = deployment.signer.verifier()
    (cosigned,) = [s for s in note.signatures if s.key_name == witness_key_name("DE")]
    # The witness's signature, presented under the log key's name and id.
    relabelled = NoteSignature(log.key_name, log.key_id, cosigned.signature)
    bundle["checkpoint"] = Note(note.text, (relabelled, cosigned)).serialize()

    report = deployment.verify(json.dumps(bundle).encode())

    assert not report.ok
    assert (
        f"checkpoint: signature by the log key {log.key_name}+{log.key_id:08x} does not verify"
        in report.failures
    )


def test_a_witness_key_offered_as_the_log_key_is_refused(
    deployment: Deployment, states: tuple[StateDirectory, StateDirectory]
) -> None:
    france, _ = states
    deployment.append(3)
    # France's witness key signs France's log under a log-key type: the wrong role.
    wrong_role = CheckpointSigner(
        audit_origin("FR"), witness_key_name("FR"), load_witness_signer(france)
    )
    forger = Deployment(
        engine=deployment.engine,
        log=deployment.log,
        checkpoints=deployment.checkpoints,
        signer=wrong_role,
        witness=deployment.witness,
    )
    forger.publish()

    report = verify_bundle(
        forger.export(),
        trusted_log_vkey=forger.log_vkey,
        trusted_cosigner_vkeys=forger.cosigner_vkeys,
    )

    assert not report.ok
    assert (
        "log key: pouch-fr-witness is not pouch-fr-audit, the key that signs this state's log "
        "(a witness key is never a log key)" in report.failures
    )
