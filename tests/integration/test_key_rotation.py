"""Rotating BE's signing key and TLS certificate while AT streams updates to BE.

BE prepares both rotations (``pouch pki rotate``), announces its next bundle to AT
(``pouch pki announce``'s :func:`announce_bundle`), completes them and reloads, all
while AT's clerk streams. Nothing is lost or refused; AT
holds receipts signed with BE's old key and with its new one, and both verify. Once the
overlap has passed on AT's (injected) clock, the old key is refused: a receipt or an
envelope it signed. Under an agreement with hybrid message signatures, BE's ML-DSA-44
signing key is rotated with its ES256 key, and AT verifies BE's receipts of both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from adapters.settings import SpoolAdapterSettings
from gateway.config import load_settings
from gateway.connect import ClientIdentity
from gateway.delivery.announcing import AnnouncementTarget, announce_bundle
from gateway.delivery.backoff import Backoff
from gateway.envelope import EnvelopeSigner, ReceiptSigner
from gateway.errors import AuthenticationRejected
from gateway.pki import load_certificate
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.keys import certificate_fingerprint
from gateway.pki.rotation import RotatedKey, complete_rotation, prepare_rotation
from gateway.server.app import Gateway
from pouch.v1 import common_pb2, envelope_pb2
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.conftest import GatewayThread, error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    agreement_digest,
    be_alone,
    civil_header,
    death_update,
    outbox_message,
    signed_envelope,
    submission,
    write_agreement,
)
from tests.integration.test_peer_envelope_attacks import CIVIL, from_at
from tests.integration.test_reload import SlowStream, reload, results
from tests.unit.envelope import protected_header

OVERLAP_S = 120.0
HYBRID = "at-be-hybrid"
STREAMED = 60


class ShiftedClock:
    """The system clock, moved forward by what a test adds to ``offset``."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def _gateway(site: Site, clock: Callable[[], datetime] | None = None) -> GatewayThread:
    """``site``'s gateway, handing updates to a spool directory (applied at once)."""
    spool = SpoolAdapterSettings(kind="spool", directory=site.root / "spool")
    settings = load_settings(site.config_path).model_copy(update={"registry": spool})
    return GatewayThread(Gateway(settings) if clock is None else Gateway(settings, clock=clock))


@pytest.fixture
def sites(tmp_path: Path) -> dict[str, Site]:
    return prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery={**FAST_DELIVERY, "partner_bundle_overlap_seconds": OVERLAP_S},
    )


def _announce(be: Site, at: Site, bundle: bytes) -> str:
    """BE's next bundle announced to AT as ``pouch pki announce`` does; AT's answer."""
    target = AnnouncementTarget(
        state="AT",
        endpoint=at.peer_target,
        trusted_ca=at.pki.ca_cert.read_bytes(),
    )
    own = ClientIdentity(
        trusted_ca=b"",
        certificate_chain=be.pki.gateway_cert.read_bytes(),
        private_key=be.pki.gateway_key.read_bytes(),
    )
    outcomes = asyncio.run(
        announce_bundle(
            bundle,
            {"AT": target},
            own,
            backoff=Backoff(initial_s=0.2, maximum_s=1.0, multiplier=2.0, jitter_fraction=0.2),
            deadline_s=30,
            call_timeout_s=10,
        )
    )
    assert outcomes["AT"].taken, outcomes["AT"]
    return outcomes["AT"].digest


def _receipt_kid(receipt: envelope_pb2.Receipt) -> str:
    kid: str = protected_header(receipt.signature)["kid"]
    return kid


def test_rotating_bes_signing_key_and_tls_certificate_while_at_streams_loses_nothing(
    sites: dict[str, Site],
) -> None:
    at, be = sites["AT"], sites["BE"]
    at_clock = ShiftedClock()
    old_kid = certificate_fingerprint(load_certificate(be.pki.signing_cert))
    old_signer = EnvelopeSigner.from_state_directory(be.pki)
    old_receipts = ReceiptSigner.from_state_directory(be.pki)
    with (
        _gateway(at, at_clock) as at_gateway,
        LocalCaller(at, ["civil:submit"]) as clerk,
    ):
        with _gateway(be):
            stream = SlowStream(clerk, STREAMED)
            stream.start()
            time.sleep(0.4)  # under way, some delivered under BE's old key

            signing = prepare_rotation(be.pki.root, RotatedKey.SIGNING, now=datetime.now(UTC))
            prepare_rotation(be.pki.root, RotatedKey.TLS, now=datetime.now(UTC))
            assert signing.next_bundle is not None
            next_bundle = signing.next_bundle.read_bytes()
            assert _announce(be, at, next_bundle) == load_trust_bundle(next_bundle).digest
            complete_rotation(be.pki.root, RotatedKey.SIGNING)
            complete_rotation(be.pki.root, RotatedKey.TLS)
            new_kid = certificate_fingerprint(load_certificate(be.pki.signing_cert))

            # A reload of BE takes in both: new signatures with the new key, new
            # handshakes with the new certificate, no call dropped.
            with LocalCaller(be, ["admin"]) as be_admin:
                items = reload(be_admin)
            assert results(items["signing_key"]) == {"RELOAD_RESULT_RELOADED"}
            assert results(items["tls_certificate"]) == {"RELOAD_RESULT_RELOADED"}

            stream.join(timeout=90)
            assert stream.error is None, stream.error
            message_ids = [a.message_id for a in stream.answers]
            assert all(message_ids) and len(set(message_ids)) == STREAMED
            for message_id in message_ids:
                status = clerk.wait_until_final(message_id, within_s=60)
                assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status

        # AT holds receipts of both keys, and both verify there.
        assert at_gateway.exchanges is not None
        receipts = []
        for message_id in message_ids:
            row = outbox_message(at_gateway, message_id)
            assert row is not None and row.receipt is not None
            receipts.append(envelope_pb2.Receipt.FromString(row.receipt))
        kids = {_receipt_kid(r) for r in receipts}
        assert kids == {old_kid, new_kid}
        for receipt in receipts:
            at_gateway.exchanges.outcomes.verify("BE", receipt)

        # After the overlap, BE's old key is refused: a receipt and an envelope it signed.
        at_clock.offset = timedelta(seconds=OVERLAP_S + 1)
        late = old_receipts.sign_receipt(
            message_id=receipts[0].message_id,
            request_digest=receipts[0].request_digest,
            outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
            reason_code="",
            issued_at=at_clock(),
        )
        with pytest.raises(AuthenticationRejected) as refused:
            at_gateway.exchanges.outcomes.verify("BE", late)
        assert refused.value.reason == "RECEIPT_SIGNATURE"
        header = civil_header(
            sender="BE",
            recipient="AT",
            agreement_id=CIVIL,
            agreement_digest=agreement_digest(at, CIVIL),
            created_at=at_clock(),
        )
        new_signer = EnvelopeSigner.from_state_directory(be.pki)
        with PeerCaller(be, at) as as_be:
            # BE's new key passes the signature check (this empty payload is refused
            # later, by the agreement's policy); its old key no longer does.
            with pytest.raises(grpc.RpcError) as past_signature:
                as_be.deliver(signed_envelope(new_signer, header, {}))
            assert error_reason(past_signature.value) == "KIND_NOT_AGREED"
            with pytest.raises(grpc.RpcError) as envelope_refused:
                as_be.deliver(signed_envelope(old_signer, header, {}))
            assert error_reason(envelope_refused.value) == "ENVELOPE_SIGNATURE"


def test_a_signing_key_not_named_by_the_announced_bundle_is_refused_on_reload(
    tmp_path: Path,
) -> None:
    with be_alone(tmp_path, ["AT", "BE"]) as running:
        at, be = running.sites["AT"], running.sites["BE"]
        old_kid = certificate_fingerprint(load_certificate(be.pki.signing_cert))
        files = prepare_rotation(be.pki.root, RotatedKey.SIGNING, now=datetime.now(UTC))
        assert files.next_bundle is not None
        # The next key put in place by hand, the bundle partners hold left as it was.
        files.next_cert.replace(be.pki.signing_cert)
        files.next_key.replace(be.pki.signing_key)
        new_kid = certificate_fingerprint(load_certificate(be.pki.signing_cert))
        with LocalCaller(be, ["admin"]) as be_admin, PeerCaller(at, be) as as_at:
            items = reload(be_admin)
            [refused] = items["signing_key"]
            assert refused.reason_code == "SIGNING_KEY_NOT_ANNOUNCED"
            assert _receipt_kid(as_at.deliver(from_at(running))) == old_kid

            # bundle.json names it now (what partners were announced), and the next
            # ML-DSA-44 key beside it, which is not in place yet: the two go together.
            files.next_bundle.replace(be.pki.bundle)
            [refused] = reload(be_admin)["signing_key"]
            assert refused.reason_code == "SIGNING_KEY_NOT_ANNOUNCED"
            assert _receipt_kid(as_at.deliver(from_at(running))) == old_kid

            # Both keys the bundle names in place: taken.
            assert files.post_quantum is not None
            files.post_quantum.next_cert.replace(be.pki.signing_pq_cert)
            files.post_quantum.next_key.replace(be.pki.signing_pq_key)
            items = reload(be_admin)
            assert results(items["signing_key"]) == {"RELOAD_RESULT_RELOADED"}
            assert _receipt_kid(as_at.deliver(from_at(running))) == new_kid


def _hybrid_receipt(at_gateway: Gateway, clerk: LocalCaller) -> envelope_pb2.Receipt:
    """BE's signed decision on a death AT's clerk submits under the hybrid agreement."""
    message_id = clerk.submit(
        submission(
            death_update(datetime.now(UTC).date()), agreement_id=HYBRID, recipient_state="BE"
        )
    )
    status = clerk.wait_until_final(message_id, within_s=30)
    assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
    row = outbox_message(at_gateway, message_id)
    assert row is not None and row.receipt is not None
    return envelope_pb2.Receipt.FromString(row.receipt)


def test_a_hybrid_agreements_receipts_verify_before_and_after_a_signing_rotation(
    sites: dict[str, Site],
) -> None:
    at, be = sites["AT"], sites["BE"]
    write_agreement(
        HYBRID,
        at,
        be,
        today=datetime.now(UTC).date(),
        holders=[at, be],
        signers=[at, be],
        message_signatures="hybrid",
    )
    at_clock = ShiftedClock()
    old_pq_kid = certificate_fingerprint(load_certificate(be.pki.signing_pq_cert))
    with (
        _gateway(at, at_clock) as at_gateway,
        _gateway(be),
        LocalCaller(at, ["civil:submit"]) as clerk,
    ):
        before = _hybrid_receipt(at_gateway, clerk)

        signing = prepare_rotation(be.pki.root, RotatedKey.SIGNING, now=datetime.now(UTC))
        assert signing.next_bundle is not None
        _announce(be, at, signing.next_bundle.read_bytes())
        complete_rotation(be.pki.root, RotatedKey.SIGNING)
        new_pq_kid = certificate_fingerprint(load_certificate(be.pki.signing_pq_cert))
        with LocalCaller(be, ["admin"]) as be_admin:
            assert results(reload(be_admin)["signing_key"]) == {"RELOAD_RESULT_RELOADED"}

        after = _hybrid_receipt(at_gateway, clerk)
        assert at_gateway.exchanges is not None
        assert [protected_header(r.pq_signature)["kid"] for r in (before, after)] == [
            old_pq_kid,
            new_pq_kid,
        ]
        for receipt in (before, after):
            at_gateway.exchanges.outcomes.verify("BE", receipt)

        # After the overlap the replaced keys' receipt is refused, the new one's is not.
        at_clock.offset = timedelta(seconds=OVERLAP_S + 1)
        at_gateway.exchanges.outcomes.verify("BE", after)
        with pytest.raises(AuthenticationRejected) as refused:
            at_gateway.exchanges.outcomes.verify("BE", before)
        assert refused.value.reason == "RECEIPT_SIGNATURE"
