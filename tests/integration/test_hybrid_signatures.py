"""Two gateways under an agreement with ``message_signatures: hybrid`` sign and check
ES256 and ML-DSA-44 at both ends; beside it, the classical agreement stays ES256 alone.

AT and BE run in this process over real TLS with a spool registry at each end. The
hybrid agreement is its own id (``at-be-hybrid``), beside the demo agreement
(``at-be-civil``), so each test asserts on its own messages only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest

from gateway.envelope import EnvelopeVerifier, VerifiedEnvelope, verify_receipt
from gateway.envelope.jws import ALGORITHM, PQ_ALGORITHM
from gateway.envelope.payload import encode_payload
from gateway.pki.bundle import TrustBundle, load_trust_bundle
from gateway.pki.keys import certificate_fingerprint, load_certificate
from gateway.policy.transforms import keyed_hash
from gateway.server.app import Gateway
from pouch.v1 import common_pb2, envelope_pb2
from pouch_devtools.demo.deployment import prepare_sites
from tests.integration.conftest import error_reason
from tests.integration.exchange_fixtures import (
    FAST_DELIVERY,
    LocalCaller,
    PeerCaller,
    RunningGateways,
    agreement_digest,
    civil_header,
    death_update,
    hash_key,
    inbox_entry,
    inbox_size,
    outbox_message,
    running_gateways,
    submission,
    write_agreement,
)
from tests.integration.test_peer_envelope_attacks import death_tree, signer_of

HYBRID = "at-be-hybrid"
CIVIL = "at-be-civil"
BOTH = (ALGORITHM, PQ_ALGORITHM)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """AT and BE running, holding the demo agreement and a hybrid one, shared by the
    module's tests: each submits or delivers its own messages and asserts on those."""
    root = tmp_path_factory.mktemp("hybrid")
    now = datetime.now(UTC)
    sites = prepare_sites(
        root, ["AT", "BE"], now=now, agreements=[("AT", "BE")], delivery=FAST_DELIVERY
    )
    at, be = sites["AT"], sites["BE"]
    write_agreement(
        HYBRID,
        at,
        be,
        today=now.date(),
        holders=[at, be],
        signers=[at, be],
        message_signatures="hybrid",
    )
    with running_gateways(sites, ["AT", "BE"], spool_root=root / "spool") as running:
        yield running


def _bundle(exchange: RunningGateways, state: str) -> TrustBundle:
    return load_trust_bundle(exchange.sites[state].pki.bundle)


def _as_be_checks_it(
    exchange: RunningGateways, envelope: envelope_pb2.Envelope
) -> VerifiedEnvelope:
    """``envelope`` verified as BE's gateway does, against AT's pinned bundle."""
    verifier = EnvelopeVerifier(
        "BE",
        {"AT": _bundle(exchange, "AT")},
        window_s=3600,
        max_payload_bytes=1 << 20,
        clock=lambda: datetime.now(UTC),
    )
    return verifier.verify(envelope, peer_state="AT")


def _applied(exchange: RunningGateways, agreement_id: str) -> str:
    """A death AT's clerk submits to BE under ``agreement_id``, once BE's registry
    applied it and AT recorded BE's signed decision."""
    with LocalCaller(exchange.sites["AT"], ["civil:submit"]) as clerk:
        message_id = clerk.submit(
            submission(
                death_update(datetime.now(UTC).date()),
                agreement_id=agreement_id,
                recipient_state="BE",
            )
        )
        status = clerk.wait_until_final(message_id, within_s=30)
    assert status.state == common_pb2.DELIVERY_STATE_APPLIED, status
    return message_id


def _stored_at_be(exchange: RunningGateways, message_id: str) -> envelope_pb2.Envelope:
    entry = inbox_entry(exchange.gateway("BE"), message_id)
    assert entry is not None and entry.envelope is not None
    return envelope_pb2.Envelope.FromString(entry.envelope)


def _receipt_at_at(exchange: RunningGateways, message_id: str) -> envelope_pb2.Receipt:
    sent = outbox_message(exchange.gateway("AT"), message_id)
    assert sent is not None and sent.receipt is not None
    return envelope_pb2.Receipt.FromString(sent.receipt)


def test_civil_update_under_a_hybrid_agreement_is_signed_both_ways_end_to_end(
    exchange: RunningGateways,
) -> None:
    message_id = _applied(exchange, HYBRID)

    stored = _stored_at_be(exchange, message_id)
    assert stored.signature and stored.pq_signature
    verified = _as_be_checks_it(exchange, stored)
    assert verified.signature_algorithms == BOTH
    verified.require_hybrid()

    receipt = _receipt_at_at(exchange, message_id)
    assert receipt.signature and receipt.pq_signature
    checked = verify_receipt(
        receipt,
        receiver_bundle=_bundle(exchange, "BE"),
        expected_message_id=message_id,
        expected_request_digest=receipt.request_digest,
        hybrid=True,
    )
    assert checked.signature_algorithms == BOTH


def test_the_classical_agreement_beside_it_stays_es256_alone(exchange: RunningGateways) -> None:
    message_id = _applied(exchange, CIVIL)

    stored = _stored_at_be(exchange, message_id)
    assert stored.signature and not stored.pq_signature
    assert _as_be_checks_it(exchange, stored).signature_algorithms == (ALGORITHM,)
    assert not _receipt_at_at(exchange, message_id).pq_signature


def _hybrid_death(exchange: RunningGateways) -> envelope_pb2.Envelope:
    """A death AT's keys really signed, ES256 and ML-DSA-44, under the hybrid agreement."""
    sites = exchange.sites
    tree = death_tree(exchange)
    tree["parties"][0]["person"]["registry_identifier"] = keyed_hash(
        "REG-SUBJECT-4411", hash_key(sites["BE"], HYBRID)
    )
    header = civil_header(
        sender="AT",
        recipient="BE",
        agreement_id=HYBRID,
        agreement_digest=agreement_digest(sites["BE"], HYBRID),
    )
    return signer_of(sites["AT"]).sign(header, encode_payload(tree), hybrid=True)


def _refusals(be: Gateway, reason: str) -> list[str | None]:
    assert be.exchanges is not None
    entries = be.exchanges.audit_log.entries(event_kind="refused", limit=1000)
    return [e.principal for e in entries if e.reason_code == reason]


def test_hybrid_envelope_with_the_post_quantum_signature_stripped_is_refused_by_the_partner(
    exchange: RunningGateways,
) -> None:
    be = exchange.gateway("BE")
    with PeerCaller(exchange.sites["AT"], exchange.sites["BE"]) as as_at:
        receipt = as_at.deliver(_hybrid_death(exchange))
        assert receipt.pq_signature  # the genuine hybrid delivery, receipted hybrid

        stripped = _hybrid_death(exchange)
        stripped.ClearField("pq_signature")
        before, audited = inbox_size(be), len(_refusals(be, "ENVELOPE_PQ_SIGNATURE"))
        with pytest.raises(grpc.RpcError) as refused:
            as_at.deliver(stripped)

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused.value) == "ENVELOPE_PQ_SIGNATURE"
    assert inbox_size(be) == before
    assert inbox_entry(be, stripped.message_id) is None
    principals = _refusals(be, "ENVELOPE_PQ_SIGNATURE")
    assert len(principals) == audited + 1
    at_certificate = load_certificate(exchange.sites["AT"].pki.gateway_cert)
    assert principals[-1] == f"gateway-certificate:{certificate_fingerprint(at_certificate)}"
