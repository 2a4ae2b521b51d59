"""BE renews its state CA by cross-signing while AT keeps exchanging with it.

BE moves its CA key offline, renews the CA (``pouch pki renew-ca``), announces the next
bundle, signed by the new CA and carrying the cross certificate, to AT, completes the
renewal and restarts under the new CA. AT is not restarted: it takes the bundle because
the CA it pinned certified the new one, and from then on trusts the new CA for BE's TLS
(both ways) and signatures, so the updates AT's clerk submits after the switch are
applied at BE and their receipts verify at AT.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.pki import load_certificate
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.ca_renewal import complete_ca_renewal, prepare_ca_renewal
from pouch.v1 import common_pb2, envelope_pb2
from pouch_devtools.demo.deployment import Site, prepare_sites
from tests.integration.exchange_fixtures import FAST_DELIVERY, LocalCaller, outbox_message
from tests.integration.test_key_rotation import _announce, _gateway
from tests.integration.test_reload import SlowStream

STREAMED = 5


@pytest.fixture
def sites(tmp_path: Path) -> dict[str, Site]:
    return prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=FAST_DELIVERY,
    )


def _exchange(clerk: LocalCaller) -> list[str]:
    stream = SlowStream(clerk, STREAMED)
    stream.start()
    stream.join(timeout=90)
    assert stream.error is None, stream.error
    message_ids = [a.message_id for a in stream.answers]
    assert all(message_ids) and len(set(message_ids)) == STREAMED
    for message_id in message_ids:
        status = clerk.wait_until_final(message_id, within_s=60)
        assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
    return message_ids


def test_at_keeps_exchanging_with_be_after_be_renews_its_ca_by_cross_signing(
    sites: dict[str, Site], tmp_path: Path
) -> None:
    at, be = sites["AT"], sites["BE"]
    offline = tmp_path / "be-ca-offline"
    offline.mkdir(mode=0o700)
    old_key = offline / "ca.key"
    shutil.move(be.pki.ca_key, old_key)
    old_ca = load_certificate(be.pki.ca_cert)
    with _gateway(at) as at_gateway, LocalCaller(at, ["civil:submit"]) as clerk:
        with _gateway(be):
            _exchange(clerk)  # under BE's old CA
            renewal = prepare_ca_renewal(
                be.pki.root,
                ca_key=old_key,
                ca_key_out=tmp_path / "be-ca-new",
                now=datetime.now(UTC),
            )
            next_bundle = renewal.next_bundle.read_bytes()
            assert _announce(be, at, next_bundle) == load_trust_bundle(next_bundle).digest
        complete_ca_renewal(be.pki.root)
        new_ca = load_certificate(be.pki.ca_cert)
        assert new_ca != old_ca
        load_certificate(be.pki.gateway_cert).verify_directly_issued_by(new_ca)

        with _gateway(be):
            message_ids = _exchange(clerk)

        assert at_gateway.exchanges is not None
        assert at_gateway.exchanges.channels.bundles["BE"].ca_certificate == new_ca
        for message_id in message_ids:
            row = outbox_message(at_gateway, message_id)
            assert row is not None and row.receipt is not None
            at_gateway.exchanges.outcomes.verify("BE", envelope_pb2.Receipt.FromString(row.receipt))
