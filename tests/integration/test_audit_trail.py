"""The audit trail: every stage leaves evidence, witnessed by the partner, checkable offline.

AT, BE and CH run in this process over real TLS (a spool registry at each end),
with agreements AT-BE and AT-CH and a checkpoint every half second. The module
fixture applies one update from AT to each partner; tests read the evidence of
those two exchanges and make their own refusals, so they run in any order. An
auditor is AT's operator with an ``audit:read`` token; a partner state's auditor
carries the ``pouch_partner_state`` claim.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from gateway.audit.checkpoint import Checkpoint, audit_origin, open_checkpoint
from gateway.audit.cosignature import partner_cosigners
from gateway.audit.log_signing import LogKey, partner_log_keys
from gateway.audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from gateway.audit.note import NoteSignature, UnverifiedNote, parse_note
from gateway.connect import bearer
from gateway.pki.bundle import TrustBundle, load_trust_bundle
from gateway.pki.idp import mint_token
from pouch.v1 import agreement_pb2, agreement_pb2_grpc, audit_pb2, audit_pb2_grpc, common_pb2
from pouch_devtools.demo.deployment import OPERATOR, Site, agreement_id_for, prepare_sites
from tests.integration.conftest import assert_safe_message, channel_to, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    RunningGateways,
    Traceable,
    adoption_update,
    death_update,
    running_gateways,
    submission,
    unique_reference,
)

AT_BE = agreement_id_for("AT", "BE")
AT_CH = agreement_id_for("AT", "CH")
CHECKPOINT_INTERVAL_S = 0.5
PUBLISHED_WITHIN_S = 10.0
TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class AuditTrail:
    """The running gateways and the two updates AT applied, one to each partner."""

    running: RunningGateways
    to_be: str
    to_ch: str

    def site(self, state: str) -> Site:
        return self.running.sites[state]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditTrail]:
    """AT, BE and CH with two settled, published exchanges, shared by the module's tests
    (made once: 2.2 s to set up and wait for the checkpoint, plus three gateways' stop,
    for each of 11 tests if it were per test).

    Sharing is safe: tests look up the two exchanges by their message ids, and what
    else they assert holds of any log (proofs verify between two checkpoints each test
    reads itself; a new checkpoint is at least as large). The traffic some tests add
    (a refused submission under AT–BE) is of the AT–BE partnership, which is what BE's
    auditor may see, and grows the log, which no test bounds from above.
    """
    root = tmp_path_factory.mktemp("audit-trail")
    sites = prepare_sites(
        root,
        ["AT", "BE", "CH"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE"), ("AT", "CH")],
        delivery=FAST_DELIVERY,
        checkpoint_interval_s=CHECKPOINT_INTERVAL_S,
    )
    with (
        running_gateways(sites, ["AT", "BE", "CH"], spool_root=root / "spool") as running,
        LocalCaller(sites["AT"], ["civil:submit"]) as clerk,
    ):
        today = datetime.now(UTC).date()
        sent = {
            partner: clerk.submit(
                submission(death_update(today), agreement_id=agreement, recipient_state=partner)
            )
            for partner, agreement in (("BE", AT_BE), ("CH", AT_CH))
        }
        for message_id in sent.values():
            status = clerk.wait_until_final(message_id)
            assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
        # Settled and published: AT's evidence of both is complete and under a checkpoint.
        with Auditor(sites["AT"]) as auditor:
            for message_id in sent.values():
                stage_entries(auditor, message_id, ["submitted", "sent", "receipted"])
            published_note(auditor, larger_than=max(e.index for e in auditor.entries()))
        yield AuditTrail(running=running, to_be=sent["BE"], to_ch=sent["CH"])


# -- auditors ------------------------------------------------------------------


class Auditor:
    """A caller of ``site``'s AuditService: the operator's certificate, a fresh token."""

    def __init__(
        self, site: Site, scopes: Sequence[str] = ("audit:read",), partner_state: str | None = None
    ) -> None:
        self._site = site
        self._scopes = list(scopes)
        self._partner_state = partner_state
        self._channel = channel_to(
            site.local_target,
            trusted_ca=site.pki.ca_cert.read_bytes(),
            chain=site.pki.client_cert(OPERATOR).read_bytes(),
            key=site.pki.client_key(OPERATOR).read_bytes(),
        )
        self.stub = audit_pb2_grpc.AuditServiceStub(self._channel)

    def __enter__(self) -> Auditor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = mint_token(
            key_path=self._site.idp.key_path,
            jwks_path=self._site.idp.jwks_path,
            issuer=self._site.issuer,
            audience=self._site.audience,
            subject=f"auditor@{self._site.state.lower()}",
            scopes=self._scopes,
            client_cert_pem=self._site.pki.client_cert(OPERATOR).read_bytes(),
            lifetime_s=600,
            now=time.time(),
            partner_state=self._partner_state,
        )
        return bearer(token)

    def entries(self, **filters: Any) -> list[audit_pb2.AuditEntry]:
        """Every entry the filters select, page after page."""
        found: list[audit_pb2.AuditEntry] = []
        token = ""
        while True:
            request = audit_pb2.ListEntriesRequest(page_size=200, page_token=token, **filters)
            page = self.stub.ListEntries(request, metadata=self.metadata, timeout=TIMEOUT_S)
            found += page.entries
            token = page.next_page_token
            if not token:
                return found

    def checkpoint(self, tree_size: int = 0) -> audit_pb2.GetCheckpointResponse:
        request = audit_pb2.GetCheckpointRequest(tree_size=tree_size)
        return self.stub.GetCheckpoint(request, metadata=self.metadata, timeout=TIMEOUT_S)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        request = audit_pb2.GetInclusionProofRequest(index=index, tree_size=tree_size)
        answer = self.stub.GetInclusionProof(request, metadata=self.metadata, timeout=TIMEOUT_S)
        return list(answer.hashes)

    def consistency_proof(self, first_size: int, second_size: int) -> list[bytes]:
        request = audit_pb2.GetConsistencyProofRequest(
            first_size=first_size, second_size=second_size
        )
        answer = self.stub.GetConsistencyProof(request, metadata=self.metadata, timeout=TIMEOUT_S)
        return list(answer.hashes)

    def export(self, agreement_id: str = "", since_tree_size: int = 0) -> bytes:
        request = audit_pb2.ExportBundleRequest(
            agreement_id=agreement_id, since_tree_size=since_tree_size
        )
        chunks = self.stub.ExportBundle(request, metadata=self.metadata, timeout=TIMEOUT_S)
        return b"".join(answer.chunk for answer in chunks)


def eventually(probe: Callable[[], T | None], *, within_s: float, what: str) -> T:
    deadline = time.monotonic() + within_s
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.1)
    return found


def held_bundle(holder: Site, state: str) -> TrustBundle:
    """``state``'s trust bundle as ``holder`` received it out of band."""
    return load_trust_bundle(holder.root / "partners" / state / "bundle.json")


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A checkpoint whose log signatures and one cosigner's cosignatures all verified."""

    checkpoint: Checkpoint
    log_signatures: tuple[NoteSignature, ...]
    cosignatures: tuple[NoteSignature, ...]


def open_as_auditor(trail: AuditTrail, note: str, *, cosigner: str = "BE") -> PublishedCheckpoint:
    """AT's checkpoint, checked with AT's keys as ``cosigner`` holds them and the
    cosigner's keys as AT holds them (the keys come from the trust bundles): signed by
    both of AT's log keys and cosigned with both of the cosigner's witness keys."""
    log_keys = partner_log_keys(held_bundle(trail.site(cosigner), "AT"))
    cosigners = partner_cosigners(held_bundle(trail.site("AT"), cosigner))
    signed = open_checkpoint(
        note, origin=audit_origin("AT"), log_keys=log_keys, other_keys=cosigners
    )
    for key in cosigners:
        if not signed.note.signed_by(key):
            raise UnverifiedNote(f"checkpoint is not cosigned by {key.key_name} ({key.algorithm})")
    return PublishedCheckpoint(
        signed.checkpoint,
        tuple(s for key in log_keys for s in signed.note.signatures_of(key)),
        tuple(s for key in cosigners for s in signed.note.signatures_of(key)),
    )


def published_note(auditor: Auditor, *, larger_than: int = 0) -> str:
    """The latest checkpoint as served, once it is published and covers more than
    ``larger_than`` entries (GetCheckpoint without a size may answer an unpublished one)."""

    def probe() -> str | None:
        try:
            answer = auditor.checkpoint()
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:  # none signed yet
                return None
            raise
        body = answer.signed_checkpoint.split("\n\n", 1)[0] + "\n"
        if not answer.published or Checkpoint.parse(body).size <= larger_than:
            return None
        return answer.signed_checkpoint

    return eventually(probe, within_s=PUBLISHED_WITHIN_S, what="a published checkpoint")


def kinds(entries: Sequence[audit_pb2.AuditEntry]) -> list[str]:
    return sorted(e.event_kind for e in entries)


# -- the evidence --------------------------------------------------------------


def stage_entries(
    auditor: Auditor, message_id: str, expected: Sequence[str]
) -> list[audit_pb2.AuditEntry]:
    """The entries of ``message_id``, once they are exactly the ``expected`` kinds.

    Failed attempts are left out: a partner still starting up is retried, and each
    retry is evidence too, but how many there are depends on timing.
    """

    def probe() -> list[audit_pb2.AuditEntry] | None:
        found = [e for e in auditor.entries(message_id=message_id) if e.event_kind != "failed"]
        return found if kinds(found) == sorted(expected) else None

    return eventually(probe, within_s=5, what=f"entries {sorted(expected)} of {message_id}")


def test_every_stage_of_an_exchange_leaves_an_entry_on_both_sides(trail: AuditTrail) -> None:
    message_id = trail.to_be
    with Auditor(trail.site("AT")) as at, Auditor(trail.site("BE")) as be:
        sides = (
            (at, ["submitted", "sent", "receipted"], "BE"),
            (be, ["received", "delivered"], "AT"),
        )
        for auditor, expected, peer in sides:
            for entry in stage_entries(auditor, message_id, expected):
                assert entry.message_id == message_id
                assert entry.agreement.id == AT_BE
                assert entry.peer_state == peer
                assert entry.exchange_type == common_pb2.EXCHANGE_TYPE_CIVIL_RECORD
                assert json.loads(entry.canonical)["event_kind"] == entry.event_kind

        # Filters: by kind, by partner, and combined with the message id.
        assert kinds(at.entries(message_id=message_id, event_kind="sent")) == ["sent"]
        assert {e.event_kind for e in at.entries(event_kind="sent")} == {"sent"}
        to_be = at.entries(peer_state="BE")
        assert {e.peer_state for e in to_be} == {"BE"}
        attempts = [e for e in to_be if e.message_id == message_id and e.event_kind != "failed"]
        assert kinds(attempts) == [
            "receipted",
            "sent",
            "submitted",
        ]
        assert at.entries(peer_state="CH", message_id=message_id) == []
        assert trail.to_ch in {e.message_id for e in at.entries(peer_state="CH")}

        # Both sides name the same payload: what AT signed is what BE received.
        (submitted,) = at.entries(message_id=message_id, event_kind="submitted")
        (received,) = be.entries(message_id=message_id, event_kind="received")
        assert submitted.payload_digest.startswith("sha256:")
        assert submitted.payload_digest == received.payload_digest


def test_refusals_are_audited_with_their_reason_code(trail: AuditTrail) -> None:
    marks = Traceable(
        act_reference="ACT-REFUSED-5512",
        event_locality="Refusedtown-Upper",
        birth_locality="Refusedvillage-Lower",
        subject_identifier="REG-REFUSED-7781",
        parent_identifier="REG-REFUSED-PARENT-1",
    )
    family_name = "Refusedfamily"
    request = submission(
        death_update(datetime.now(UTC).date(), marks=marks, family_name=family_name),
        agreement_id=AT_BE,
        recipient_state="BE",
        reference=unique_reference("refused"),
        purpose="marketing",
    )
    with Auditor(trail.site("AT")) as auditor:
        last_before = max(e.index for e in auditor.entries())
        with (
            LocalCaller(trail.site("AT"), ["civil:submit"]) as clerk,
            pytest.raises(grpc.RpcError) as refused,
        ):
            clerk.submit(request)
        assert error_reason(refused.value) == "PURPOSE_NOT_AGREED"
        assert_safe_message(refused.value)
        entries = [e for e in auditor.entries(event_kind="refused") if e.index > last_before]
    assert [e.reason_code for e in entries] == ["PURPOSE_NOT_AGREED"], entries
    (entry,) = entries
    assert entry.decision == "refused"
    assert entry.agreement.id == AT_BE
    assert entry.peer_state == "BE"
    assert entry.exchange_type == common_pb2.EXCHANGE_TYPE_CIVIL_RECORD
    assert entry.principal == f"{OPERATOR}@at"
    assert entry.message_id == "" and entry.payload_digest == ""
    recorded = f"{entry}{entry.canonical!r}"
    for value in (*vars(marks).values(), family_name, "Jan", "1950"):
        assert value not in recorded, f"{value!r} is in the audit entry"


def test_checkpoint_is_cosigned_by_the_partner_and_published(trail: AuditTrail) -> None:
    with Auditor(trail.site("AT")) as auditor:
        note = published_note(auditor)
    # AT holds agreements with BE and CH: each partner is a witness, each cosigned.
    by_be = open_as_auditor(trail, note, cosigner="BE")
    by_ch = open_as_auditor(trail, note, cosigner="CH")
    assert by_be.checkpoint == by_ch.checkpoint
    assert by_be.checkpoint.origin == "pouch.gateway/AT/audit"
    assert by_be.checkpoint.size > 0
    # Each signature twice over: Ed25519 and ML-DSA-44.
    assert [s.key_name for s in by_be.cosignatures] == ["pouch-be-witness"] * 2
    assert [s.key_name for s in by_ch.cosignatures] == ["pouch-ch-witness"] * 2
    assert [s.key_name for s in by_be.log_signatures] == ["pouch-at-audit"] * 2
    signature_lines = [line for line in note.split("\n\n", 1)[1].split("\n") if line]
    assert len(signature_lines) == 6  # AT's own two and two cosignatures from each partner
    # A note that lacks the partner's cosignature is not published.
    without_be = "".join(
        f"{line}\n" if line else "\n"
        for line in note.split("\n")[:-1]
        if "pouch-be-witness" not in line
    )
    with pytest.raises(UnverifiedNote):
        open_as_auditor(trail, without_be, cosigner="BE")


def test_served_checkpoint_is_a_well_formed_signed_note(trail: AuditTrail) -> None:
    with Auditor(trail.site("AT")) as auditor:
        note = published_note(auditor)
    parse_note(note)
    signature_block = note.split("\n\n", 1)[1]
    assert "\n\n" not in signature_block and signature_block.endswith("\n")


def test_inclusion_and_consistency_proofs_from_the_api_verify(trail: AuditTrail) -> None:
    with Auditor(trail.site("AT")) as auditor:
        first = open_as_auditor(trail, published_note(auditor)).checkpoint
        (entry,) = auditor.entries(message_id=trail.to_be, event_kind="submitted")
        assert entry.index < first.size
        proof = auditor.inclusion_proof(entry.index, first.size)
        leaf = leaf_hash(entry.canonical)
        assert verify_inclusion(leaf, entry.index, first.size, proof, first.root_hash)
        assert not verify_inclusion(leaf, entry.index + 1, first.size, proof, first.root_hash)

        # Grow the log with a refusal, and wait for the next published checkpoint.
        with LocalCaller(trail.site("AT"), ["civil:submit"]) as clerk, pytest.raises(grpc.RpcError):
            clerk.submit(
                submission(
                    adoption_update(datetime.now(UTC).date()),
                    agreement_id=AT_BE,
                    recipient_state="BE",
                )
            )
        second = open_as_auditor(trail, published_note(auditor, larger_than=first.size)).checkpoint
        consistency = auditor.consistency_proof(first.size, second.size)
        assert verify_consistency(
            first.size, second.size, consistency, first.root_hash, second.root_hash
        )
        assert not verify_consistency(
            first.size, second.size, consistency, second.root_hash, second.root_hash
        )
        proof = auditor.inclusion_proof(entry.index, second.size)
        assert verify_inclusion(leaf, entry.index, second.size, proof, second.root_hash)


def test_exported_bundle_verifies_offline_with_pouch_audit_verify(
    trail: AuditTrail, tmp_path: Path
) -> None:
    at = trail.site("AT")
    with Auditor(at) as auditor:
        published_note(auditor)
        bundle = auditor.export()
    path = tmp_path / "at-audit.bundle.json"
    path.write_bytes(bundle)
    # The keys an auditor holds out of band: from the trust bundles, not the export.
    keys: dict[str, tuple[LogKey, ...]] = {
        "log": partner_log_keys(held_bundle(trail.site("BE"), "AT")),
        "BE": partner_cosigners(held_bundle(at, "BE")),
        "CH": partner_cosigners(held_bundle(at, "CH")),
    }
    files = {}
    for name, vkeys in keys.items():
        files[name] = tmp_path / f"{name.lower()}.vkey"
        files[name].write_text("".join(f"{k.vkey}\n" for k in vkeys), encoding="utf-8")
    command = [
        sys.executable,
        "-m",
        "gateway",
        "audit",
        "verify",
        str(path),
        "--json",
        "--log-key",
        str(files["log"]),
        "--cosigner-key",
        f"BE={files['BE']}",
        "--cosigner-key",
        f"CH={files['CH']}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["published"]
    assert report["keys"]["log_source"] == report["keys"]["cosigners_source"] == "trusted"
    assert sorted(report["cosigned_by"]) == ["BE", "CH"]
    assert report["entries"]["total"] == report["entries"]["verified"] > 0
    exported = {
        json.loads(base64.b64decode(e["canonical"]))["message_id"]
        for e in json.loads(bundle)["entries"]
    }
    assert {trail.to_be, trail.to_ch} <= exported

    # One entry's decision altered, and the same command fails.
    document = json.loads(bundle)
    entry = document["entries"][0]
    canonical = json.loads(base64.b64decode(entry["canonical"]))
    canonical["decision"] = "refused" if canonical["decision"] != "refused" else "accepted"
    entry["canonical"] = base64.b64encode(
        json.dumps(canonical, separators=(",", ":"), sort_keys=True).encode()
    ).decode()
    path.write_text(json.dumps(document), encoding="utf-8")
    tampered = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr


def test_a_partners_auditor_verifies_with_the_trust_bundles_it_pinned(
    trail: AuditTrail, tmp_path: Path
) -> None:
    # BE's auditor holds AT's and BE's trust bundles; AT has two partners, and CH's
    # cosigner key in the export is one BE's auditor does not hold.
    at, be = trail.site("AT"), trail.site("BE")
    with Auditor(at) as auditor:
        published_note(auditor)
        path = tmp_path / "at-audit.bundle.json"
        path.write_bytes(auditor.export())
    pinned = [be.root / "partners" / "AT" / "bundle.json", be.pki.bundle]

    def verify(*bundles: Path, extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "gateway", "audit", "verify", str(path), *extra]
        for bundle in bundles:
            command += ["--bundle", str(bundle)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    done = verify(*pinned)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout and "NOT VERIFIED" not in done.stdout
    assert "note: cosigner key of CH: in the bundle but not trusted" in done.stdout
    for bundle in pinned:
        assert load_trust_bundle(bundle).digest in done.stdout  # to compare with the pin

    # With CH's bundle too, both must have cosigned; the same export shows they did.
    both = verify(*pinned, at.root / "partners" / "CH" / "bundle.json", extra=["--json"])
    assert both.returncode == 0, both.stdout + both.stderr
    assert sorted(json.loads(both.stdout)["cosigned_by"]) == ["BE", "CH"]

    # Without the log's own bundle there is no trusted log key: not verified.
    without_log = verify(be.pki.bundle)
    assert without_log.returncode == 1
    assert "FAIL: log key: none trusted" in without_log.stdout


def test_an_auditor_proves_the_log_only_grew_between_two_audits(
    trail: AuditTrail, tmp_path: Path
) -> None:
    at, be = trail.site("AT"), trail.site("BE")
    pinned = [be.root / "partners" / "AT" / "bundle.json", be.pki.bundle]
    kept = tmp_path / "at-last-audit.checkpoint"

    def verify(bundle: bytes, *extra: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "at-audit.bundle.json"
        path.write_bytes(bundle)
        command = [sys.executable, "-m", "gateway", "audit", "verify", str(path), *extra]
        for trust in pinned:
            command += ["--bundle", str(trust)]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    with Auditor(at) as auditor:
        first = open_as_auditor(trail, published_note(auditor)).checkpoint
        done = verify(auditor.export(), "--save-checkpoint", str(kept))
        assert done.returncode == 0, done.stdout + done.stderr
        seen = Checkpoint.parse(kept.read_text().split("\n\n", 1)[0] + "\n")
        assert seen.size >= first.size
    # The log grows (a refused submission is evidence too) and a later checkpoint is out.
    refused_request = submission(
        death_update(datetime.now(UTC).date()),
        agreement_id=AT_BE,
        recipient_state="BE",
        reference=unique_reference("grows"),
        purpose="marketing",
    )
    with LocalCaller(at, ["civil:submit"]) as clerk, pytest.raises(grpc.RpcError):
        clerk.submit(refused_request)
    with Auditor(at, scopes=("admin",)) as operator:
        operator.stub.PublishCheckpoint(
            audit_pb2.PublishCheckpointRequest(), metadata=operator.metadata, timeout=30
        )
    with Auditor(at) as auditor:
        published_note(auditor, larger_than=seen.size)
        later = auditor.export(since_tree_size=seen.size)

    grown = verify(later, "--since", str(kept))
    assert grown.returncode == 0, grown.stdout + grown.stderr
    assert f"the checkpoint you saw at size {seen.size}: the log only grew from it" in (
        grown.stdout
    )
    # A bundle exported without the proof cannot show it.
    with Auditor(at) as auditor:
        unproven = verify(auditor.export(), "--since", str(kept))
    assert unproven.returncode == 1
    assert "carries no consistency proof from it" in unproven.stdout


def test_an_export_since_a_checkpoint_the_log_never_published_is_refused(
    trail: AuditTrail,
) -> None:
    with Auditor(trail.site("AT")) as auditor:
        published_note(auditor)
        with pytest.raises(grpc.RpcError) as beyond:
            auditor.export(since_tree_size=2**40)
        with pytest.raises(grpc.RpcError) as unrecorded:
            auditor.export(since_tree_size=1)  # no checkpoint was ever made at size 1
    assert beyond.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "since_tree_size" in (beyond.value.details() or "")
    assert_safe_message(beyond.value)
    assert unrecorded.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(unrecorded.value) == "NOT_FOUND"
    assert_safe_message(unrecorded.value)


def test_partner_auditor_sees_only_its_partnership(trail: AuditTrail) -> None:
    at = trail.site("AT")
    with Auditor(at) as everything, Auditor(at, partner_state="BE") as be_auditor:
        seen = be_auditor.entries()
        assert seen, "the partner's auditor sees nothing at all"
        assert {e.agreement.id for e in seen} == {AT_BE}
        assert trail.to_be in {e.message_id for e in seen}
        assert be_auditor.entries(message_id=trail.to_ch) == []
        assert be_auditor.entries(agreement_id=AT_CH) == []

        ch_entries = everything.entries(message_id=trail.to_ch)
        assert ch_entries and {e.agreement.id for e in ch_entries} == {AT_CH}
        checkpoint = open_as_auditor(trail, published_note(everything)).checkpoint
        for entry in ch_entries:
            with pytest.raises(grpc.RpcError) as hidden:
                be_auditor.inclusion_proof(entry.index, checkpoint.size)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
            assert_safe_message(hidden.value)
        (visible,) = be_auditor.entries(message_id=trail.to_be, event_kind="submitted")
        proof = be_auditor.inclusion_proof(visible.index, checkpoint.size)
        assert verify_inclusion(
            leaf_hash(visible.canonical),
            visible.index,
            checkpoint.size,
            proof,
            checkpoint.root_hash,
        )

        exported = json.loads(be_auditor.export())
        agreements = {
            json.loads(base64.b64decode(e["canonical"]))["agreement_id"]
            for e in exported["entries"]
        }
        assert agreements == {AT_BE}
        with pytest.raises(grpc.RpcError) as refused:
            be_auditor.export(agreement_id=AT_CH)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_auditor_without_scope_is_refused(trail: AuditTrail) -> None:
    calls: list[Callable[[Auditor], object]] = [
        lambda a: a.entries(),
        lambda a: a.checkpoint(),
        lambda a: a.inclusion_proof(0, 1),
        lambda a: a.consistency_proof(1, 1),
        lambda a: a.export(),
    ]
    with Auditor(trail.site("AT"), scopes=["civil:submit", "admin"]) as clerk:
        for call in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call(clerk)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert_safe_message(refused.value)


def test_partner_auditor_sees_only_its_partnerships_agreements(trail: AuditTrail) -> None:
    at = trail.site("AT")
    with Auditor(at, partner_state="BE") as be_auditor:
        agreements = agreement_pb2_grpc.AgreementServiceStub(be_auditor._channel)
        listed = agreements.ListAgreements(
            agreement_pb2.ListAgreementsRequest(), metadata=be_auditor.metadata, timeout=10
        )
        assert {a.ref.id for a in listed.agreements} == {AT_BE}
        with pytest.raises(grpc.RpcError) as hidden:
            agreements.GetAgreement(
                agreement_pb2.GetAgreementRequest(agreement_id=AT_CH),
                metadata=be_auditor.metadata,
                timeout=10,
            )
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        assert_safe_message(hidden.value)


def test_operator_publishes_a_checkpoint_on_demand(trail: AuditTrail) -> None:
    with Auditor(trail.site("AT"), scopes=("admin",)) as operator:
        answer = operator.stub.PublishCheckpoint(
            audit_pb2.PublishCheckpointRequest(), metadata=operator.metadata, timeout=30
        )
    assert answer.tree_size > 0
    assert answer.published
    with Auditor(trail.site("AT")) as auditor:
        checkpoint = open_as_auditor(trail, published_note(auditor)).checkpoint
    assert checkpoint.size >= answer.tree_size


def test_publishing_a_checkpoint_needs_the_admin_scope(trail: AuditTrail) -> None:
    with Auditor(trail.site("AT")) as auditor, pytest.raises(grpc.RpcError) as refused:
        auditor.stub.PublishCheckpoint(
            audit_pb2.PublishCheckpointRequest(), metadata=auditor.metadata, timeout=30
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
