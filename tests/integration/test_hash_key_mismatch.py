"""Two gateways holding different hashing keys for one agreement: nothing crosses.

AT and BE run in this process over real TLS with two agreements: the demo one, for
which both hold the same hashing key, and ``at-be-keys``, for which BE's operator
installed another key. Each test builds its own deployment.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from gateway.envelope import EnvelopeSigner
from gateway.policy.transforms import MASK, keyed_hash
from gateway.server.app import Gateway
from pouch.v1 import agreement_pb2, common_pb2, envelope_pb2, peer_pb2
from pouch_devtools.demo.deployment import Site, agreement_id_for, prepare_sites
from tests.integration.conftest import error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    agreement_digest,
    civil_header,
    death_update,
    hash_key,
    inbox_entry,
    running_gateways,
    signed_envelope,
    submission,
    write_agreement,
)

MATCHING = agreement_id_for("AT", "BE")
MISMATCHED = "at-be-keys"


def prepare(root: Path) -> dict[str, Site]:
    now = datetime.now(UTC)
    sites = prepare_sites(
        root, ["AT", "BE"], now=now, agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    at, be = sites["AT"], sites["BE"]
    both = [at, be]
    write_agreement(MISMATCHED, at, be, today=now.date(), holders=both, signers=both)
    (be.hash_keys_dir / f"{MISMATCHED}.key").write_text(secrets.token_hex(32) + "\n")
    assert hash_key(at, MISMATCHED) != hash_key(be, MISMATCHED)
    assert hash_key(at, MATCHING) == hash_key(be, MATCHING)
    return sites


def mismatch_gauge(gateway: Gateway, partner: str) -> float | None:
    return gateway.metrics.registry.get_sample_value(
        "pouch_hash_key_mismatch", {"agreement": MISMATCHED, "partner": partner}
    )


def test_different_hash_keys_put_the_agreement_out_of_force_on_both_sides_before_anything_crosses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sites = prepare(tmp_path)
    at, be = sites["AT"], sites["BE"]
    today = datetime.now(UTC).date()
    with (
        running_gateways(sites, ["AT", "BE"], spool_root=tmp_path / "spool") as running,
        LocalCaller(at, ["civil:submit"]) as clerk,
        LocalCaller(be, ["admin"]) as be_admin,
        LocalCaller(at, ["admin"]) as at_admin,
    ):
        # The same keys: the update is applied.
        applied = clerk.submit(
            submission(death_update(today), agreement_id=MATCHING, recipient_state="BE")
        )
        assert clerk.wait_until_final(applied).state == common_pb2.DELIVERY_STATE_APPLIED
        assert running.spool_text("BE", applied) is not None

        # Different keys: queued here, never stored or handed over there.
        queued = clerk.submit(
            submission(death_update(today), agreement_id=MISMATCHED, recipient_state="BE")
        )
        status = clerk.wait_until_final(queued)
        assert status.state == common_pb2.DELIVERY_STATE_DEAD_LETTERED
        assert status.reason_code.endswith("HASH_KEY_MISMATCH")
        assert inbox_entry(running.gateway("BE"), queued) is None
        assert running.spool_text("BE", queued) is None

        for admin in (at_admin, be_admin):
            summary = admin.wait_for_status(MISMATCHED, agreement_pb2.AGREEMENT_STATUS_INACTIVE)
            assert summary.status == agreement_pb2.AGREEMENT_STATUS_INACTIVE
            assert summary.inactive_reason == "HASH_KEY_MISMATCH"
            assert admin.summary(MATCHING).status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
        assert mismatch_gauge(running.gateway("AT"), "BE") == 1
        assert mismatch_gauge(running.gateway("BE"), "AT") == 1

        # A new update under it is refused at once on the sending side.
        with pytest.raises(grpc.RpcError) as refused:
            clerk.submit(
                submission(death_update(today), agreement_id=MISMATCHED, recipient_state="BE")
            )
        assert error_reason(refused.value) == "HASH_KEY_MISMATCH"

    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("HASH_KEY_MISMATCH")
    ]
    assert any(f"{MISMATCHED} version 1 with BE" in line for line in lines), lines
    assert any(f"{MISMATCHED} version 1 with AT" in line for line in lines), lines
    keys = [hash_key(at, MISMATCHED).hex(), hash_key(be, MISMATCHED).hex()]
    assert not any(key in caplog.text for key in keys)


def test_a_delivery_stating_another_fingerprint_is_refused_by_the_receiver(
    tmp_path: Path,
) -> None:
    sites = prepare(tmp_path)
    at, be = sites["AT"], sites["BE"]
    signer = EnvelopeSigner.from_state_directory(at.pki)
    with (
        running_gateways(sites, ["BE"], spool_root=tmp_path / "spool") as running,
        LocalCaller(be, ["admin"]) as be_admin,
        PeerCaller(at, be) as as_at,
    ):
        gateway = running.gateway("BE")
        assert gateway.exchanges is not None
        theirs = gateway.exchanges.gate.fingerprint_of(gateway.exchanges.registry.get(MATCHING))
        assert theirs is not None

        def deliver(agreement_id: str, fingerprint: str) -> str:
            header = civil_header(
                sender="AT",
                recipient="BE",
                agreement_id=agreement_id,
                agreement_digest=agreement_digest(be, agreement_id),
            )
            envelope = signed_envelope(signer, header, civil_tree(hash_key(at, agreement_id)))
            as_at.stub.Deliver(
                peer_pb2.DeliverRequest(
                    envelope=envelope, hash_key_fingerprints={agreement_id: fingerprint}
                ),
                timeout=10,
            )
            return header.message_id

        stored = deliver(MATCHING, theirs)
        assert inbox_entry(gateway, stored) is not None

        with pytest.raises(grpc.RpcError) as refused:
            deliver(MISMATCHED, secrets.token_hex(32))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(refused.value) == "HASH_KEY_MISMATCH"
        summary = be_admin.summary(MISMATCHED)
        assert summary.inactive_reason == "HASH_KEY_MISMATCH"
        assert mismatch_gauge(gateway, "AT") == 1


def test_a_delivery_stating_no_fingerprint_is_refused_by_the_receiver(tmp_path: Path) -> None:
    sites = prepare(tmp_path)
    at, be = sites["AT"], sites["BE"]
    signer = EnvelopeSigner.from_state_directory(at.pki)
    with (
        running_gateways(sites, ["BE"], spool_root=tmp_path / "spool") as running,
        PeerCaller(at, be) as as_at,
    ):
        gateway = running.gateway("BE")

        def envelope() -> envelope_pb2.Envelope:
            header = civil_header(
                sender="AT",
                recipient="BE",
                agreement_id=MATCHING,
                agreement_digest=agreement_digest(be, MATCHING),
            )
            return signed_envelope(signer, header, civil_tree(hash_key(at, MATCHING)))

        stated = envelope()
        assert as_at.deliver(stated).message_id == stated.message_id  # stating AT's
        assert inbox_entry(gateway, stated.message_id) is not None

        unstated = envelope()
        with pytest.raises(grpc.RpcError) as refused:
            as_at.stub.Deliver(peer_pb2.DeliverRequest(envelope=unstated), timeout=10)
        # Rules fail closed: a key nobody showed to be the same is not taken on trust.
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(refused.value) == "HASH_KEY_NOT_STATED"
        assert inbox_entry(gateway, unstated.message_id) is None


def civil_tree(key: bytes) -> dict[str, object]:
    """A death as AT's gateway would send it: minimised under the demo agreement."""
    today = datetime.now(UTC).date()
    return {
        "event_type": "CIVIL_EVENT_TYPE_DEATH",
        "event_date": {"year": today.year, "month": today.month, "day": today.day},
        "event_place": {"country_code": "AT", "locality": "Graz"},
        "act_reference": MASK,
        "parties": [
            {
                "role": "PARTY_ROLE_SUBJECT",
                "person": {
                    "name": {"given_names": ["Jan"], "family_names": ["Wouters"]},
                    "date_of_birth": {"year": 1950, "month": 6, "day": 2},
                    "nationalities": ["BE"],
                    "registry_identifier": keyed_hash("REG-SUBJECT-4411", key),
                },
            }
        ],
    }
