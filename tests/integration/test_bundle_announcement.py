"""A partner's new bundle announced over the peer API (``PeerService.AnnounceBundle``).

BE's gateway runs here; the caller holds AT's real gateway TLS identity, and AT rotates
its signing key with ``prepare_rotation``. BE takes AT's next bundle without a restart
and then verifies envelopes of both keys (the old one is in its overlap window); a
bundle of another CA, one of another state, and an older bundle replayed are refused
with their reason codes, audited, and change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from gateway.audit.log import AuditRecord
from gateway.envelope import EnvelopeSigner
from gateway.pki import StateAuthority, load_certificate, load_private_key, sign_bundle
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.rotation import RotatedKey, prepare_rotation
from gateway.server.app import Gateway
from pouch.v1 import envelope_pb2, peer_pb2
from tests.integration.conftest import error_reason
from tests.integration.exchange_fixtures import (
    PeerCaller,
    RunningGateways,
    agreement_digest,
    be_alone,
    civil_header,
    signed_envelope,
)
from tests.integration.test_peer_envelope_attacks import CIVIL, death_tree

TIMEOUT_S = 10.0


@pytest.fixture
def be_only(tmp_path: Path) -> Iterator[RunningGateways]:
    """BE's gateway alone, its own for each test: an announcement changes what it holds."""
    with be_alone(tmp_path, ["AT", "BE", "CH"]) as running:
        yield running


@pytest.fixture
def be(be_only: RunningGateways) -> Gateway:
    return be_only.gateway("BE")


def _announce(caller: PeerCaller, bundle: bytes) -> str:
    request = peer_pb2.AnnounceBundleRequest(bundle=bundle)
    return caller.stub.AnnounceBundle(request, timeout=TIMEOUT_S).bundle_digest


def _at_next_bundle(be_only: RunningGateways) -> tuple[bytes, EnvelopeSigner]:
    files = prepare_rotation(
        be_only.sites["AT"].pki.root, RotatedKey.SIGNING, now=datetime.now(UTC)
    )
    assert files.next_bundle is not None
    signer = EnvelopeSigner(
        state="AT",
        private_key=load_private_key(files.next_key),
        certificate=load_certificate(files.next_cert),
    )
    return files.next_bundle.read_bytes(), signer


def _envelope(be_only: RunningGateways, signer: EnvelopeSigner) -> envelope_pb2.Envelope:
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id=CIVIL,
        agreement_digest=agreement_digest(be_only.sites["BE"], CIVIL),
    )
    return signed_envelope(signer, header, death_tree(be_only))


def _audited(be: Gateway, *, kind: str, reason: str | None = None) -> list[AuditRecord]:
    """BE's entries of ``kind`` about AT: a taken bundle, or a refusal for ``reason``."""
    assert be.exchanges is not None
    entries = be.exchanges.audit_log.entries(event_kind=kind, limit=1000)
    if reason is None:
        return [e for e in entries if e.peer_state == "AT" and e.purpose == "partner_bundle"]
    return [e for e in entries if e.peer_state == "AT" and e.reason_code == reason]


def test_an_announced_bundle_puts_the_partners_new_signing_key_in_force_beside_the_old(
    be_only: RunningGateways, be: Gateway
) -> None:
    old_signer = EnvelopeSigner.from_state_directory(be_only.sites["AT"].pki)
    next_bundle, new_signer = _at_next_bundle(be_only)
    with PeerCaller(be_only.sites["AT"], be_only.sites["BE"]) as as_at:
        assert as_at.deliver(_envelope(be_only, old_signer)).receiver_state == "BE"
        with pytest.raises(grpc.RpcError) as refused:
            as_at.deliver(_envelope(be_only, new_signer))
        assert error_reason(refused.value) == "ENVELOPE_SIGNATURE"

        digest = _announce(as_at, next_bundle)

        assert digest == load_trust_bundle(next_bundle).digest
        assert as_at.deliver(_envelope(be_only, new_signer)).receiver_state == "BE"
        assert as_at.deliver(_envelope(be_only, old_signer)).receiver_state == "BE"
        # Announced again (an answer lost on the way): the same bundle, still in force.
        assert _announce(as_at, next_bundle) == digest
    assert len(_audited(be, kind="key_changed")) == 1
    # pouch status shows the bundle in force.
    [at_info] = [p for p in be.describe().partners if p.state == "AT"]
    assert at_info.bundle_digest == digest
    assert (be_only.sites["BE"].pki.root / "partner-bundles" / "AT").is_dir()


def _bundle_of(authority: StateAuthority, issued_at: datetime) -> bytes:
    now = datetime.now(UTC)
    return sign_bundle(
        authority,
        signing_certificate=authority.issue_signing_certificate(now=now).certificate,
        audit_certificate=authority.issue_audit_certificate(now=now).certificate,
        witness_certificate=authority.issue_audit_certificate(now=now, witness=True).certificate,
        audit_pq_certificate=authority.issue_audit_certificate(
            now=now, post_quantum=True
        ).certificate,
        witness_pq_certificate=authority.issue_audit_certificate(
            now=now, witness=True, post_quantum=True
        ).certificate,
        signing_pq_certificate=None,
        peer_endpoint="127.0.0.1:1",
        crl_location="out-of-band",
        issued_at=issued_at,
    )


def test_an_announced_bundle_from_another_ca_is_refused(
    be_only: RunningGateways, be: Gateway
) -> None:
    next_bundle, _ = _at_next_bundle(be_only)
    impostor = StateAuthority.create("AT", now=datetime.now(UTC))
    forged = _bundle_of(impostor, datetime.now(UTC) + timedelta(days=1))
    with PeerCaller(be_only.sites["AT"], be_only.sites["BE"]) as as_at:
        with pytest.raises(grpc.RpcError) as refused:
            _announce(as_at, forged)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_reason(refused.value) == "BUNDLE_OTHER_CA"
        # The partner's own next bundle is still taken: nothing was spoilt.
        assert _announce(as_at, next_bundle) == load_trust_bundle(next_bundle).digest
    assert len(_audited(be, kind="refused", reason="BUNDLE_OTHER_CA")) == 1


def test_a_partner_announcing_another_partners_bundle_is_refused(
    be_only: RunningGateways, be: Gateway
) -> None:
    next_bundle, _ = _at_next_bundle(be_only)
    with (
        PeerCaller(be_only.sites["CH"], be_only.sites["BE"]) as as_ch,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _announce(as_ch, next_bundle)
    assert error_reason(refused.value) == "BUNDLE_OTHER_STATE"
    with PeerCaller(be_only.sites["AT"], be_only.sites["BE"]) as as_at:
        assert _announce(as_at, next_bundle) == load_trust_bundle(next_bundle).digest


def test_an_older_bundle_replayed_after_a_newer_one_is_refused(
    be_only: RunningGateways, be: Gateway
) -> None:
    pinned = be_only.sites["AT"].pki.bundle.read_bytes()
    next_bundle, new_signer = _at_next_bundle(be_only)
    with PeerCaller(be_only.sites["AT"], be_only.sites["BE"]) as as_at:
        assert _announce(as_at, next_bundle) == load_trust_bundle(next_bundle).digest
        with pytest.raises(grpc.RpcError) as refused:
            _announce(as_at, pinned)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(refused.value) == "BUNDLE_NOT_NEWER"
        assert as_at.deliver(_envelope(be_only, new_signer)).receiver_state == "BE"
    assert len(_audited(be, kind="refused", reason="BUNDLE_NOT_NEWER")) == 1
