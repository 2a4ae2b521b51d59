"""``DeliverBatch`` and ``AcknowledgeBatch``: each item answered as its own call would be.

BE runs in this process with a spool registry; the caller holds AT's real gateway TLS
identity. Every refused item must carry the code and reason the single call gives for
the same input, and nothing refused may be stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest

from gateway.delivery.batches import MAX_ITEMS
from gateway.envelope import ReceiptSigner, envelope_digest
from gateway.envelope import verify_receipt as check_receipt
from gateway.envelope.payload import encode_payload
from gateway.errors import status_code
from gateway.pki.bundle import load_trust_bundle
from gateway.server.app import Gateway
from pouch.v1 import envelope_pb2, peer_pb2
from tests.integration.conftest import assert_safe_message, error_reason
from tests.integration.exchange_fixtures import (
    PeerCaller,
    RunningGateways,
    be_alone,
    field_violations,
    inbox_entry,
    inbox_size,
)
from tests.integration.test_peer_envelope_attacks import death_tree, from_at

TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def be_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    """BE's gateway alone, shared by the module's tests (made once: 0.5 s to set
    up, plus its stop, for each of 5 tests if it were per test).

    Sharing is safe: tests run one at a time; nothing but a test's own synchronous calls
    reaches BE (AT is not running, so no partner traffic arrives unasked), and each test
    sends envelopes with fresh message ids and compares the inbox with the size it read
    itself before its own calls, after they were answered.
    """
    with be_alone(tmp_path_factory.mktemp("peer-batches"), ["AT", "BE"]) as running:
        yield running


def _tampered(be_only: RunningGateways) -> envelope_pb2.Envelope:
    envelope = from_at(be_only)
    envelope.payload = encode_payload(death_tree(be_only, family_name="Someone-Else"))
    return envelope


def _single_refusal(caller: PeerCaller, envelope: envelope_pb2.Envelope) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as refused:
        caller.deliver(envelope)
    error = refused.value
    return error.code().name, error_reason(error)


def test_each_envelope_of_a_batch_is_answered_in_order_as_alone(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    bundle = load_trust_bundle(be_only.sites["BE"].pki.bundle)
    good = [from_at(be_only) for _ in range(3)]
    tampered = _tampered(be_only)
    unknown = from_at(be_only, agreement_id="at-be-nothing-agreed")
    sent = [good[0], tampered, good[1], unknown, good[2]]
    before = inbox_size(be)

    answer = as_at.deliver_batch(sent)

    assert [r.WhichOneof("result") for r in answer.results] == [
        "receipt",
        "refusal",
        "receipt",
        "refusal",
        "receipt",
    ]
    for envelope, result in zip(sent, answer.results, strict=True):
        if result.HasField("receipt"):
            checked = check_receipt(
                result.receipt,
                receiver_bundle=bundle,
                expected_message_id=envelope.message_id,
                expected_request_digest=envelope_digest(envelope),
            )
            assert checked.outcome == envelope_pb2.RECEIPT_OUTCOME_ACCEPTED
            assert checked.reason_code == ""
    assert inbox_size(be) == before + 3
    assert all(inbox_entry(be, e.message_id) is not None for e in good)
    assert inbox_entry(be, tampered.message_id) is None
    assert inbox_entry(be, unknown.message_id) is None

    # The same refusals as the single call's, for fresh copies of the same faults.
    for result, again in [
        (answer.results[1], _tampered(be_only)),
        (answer.results[3], from_at(be_only, agreement_id="at-be-nothing-agreed")),
    ]:
        refusal = result.refusal
        assert (status_code(refusal.code).name, refusal.reason) == _single_refusal(as_at, again)
        assert refusal.message
        assert "Someone-Else" not in refusal.message


def test_a_batch_resent_is_acknowledged_again_and_stored_once(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller
) -> None:
    envelopes = [from_at(be_only) for _ in range(4)]
    before = inbox_size(be)
    first = as_at.deliver_batch(envelopes)
    second = as_at.deliver_batch(envelopes)
    assert inbox_size(be) == before + 4
    assert [r.receipt.reason_code for r in first.results] == [""] * 4
    assert [r.receipt.reason_code for r in second.results] == ["DUPLICATE"] * 4


@pytest.mark.parametrize("count", [0, MAX_ITEMS + 1])
def test_a_batch_outside_its_size_is_refused_naming_the_field(
    be_only: RunningGateways, be: Gateway, as_at: PeerCaller, count: int
) -> None:
    before = inbox_size(be)
    envelopes = [from_at(be_only) for _ in range(count)]
    with pytest.raises(grpc.RpcError) as refused:
        as_at.deliver_batch(envelopes)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["envelopes"]
    assert_safe_message(refused.value)
    assert inbox_size(be) == before
    assert all(inbox_entry(be, e.message_id) is None for e in envelopes)


def _decision(signer: ReceiptSigner, message_id: str) -> envelope_pb2.Receipt:
    return signer.sign_receipt(
        message_id=message_id,
        request_digest="sha256:" + "0" * 64,
        outcome=envelope_pb2.RECEIPT_OUTCOME_APPLIED,
        reason_code="",
        issued_at=datetime.now(UTC),
    )


def test_each_acknowledgement_of_a_batch_is_answered_as_alone(
    be_only: RunningGateways, as_at: PeerCaller
) -> None:
    at_receipts = ReceiptSigner.from_state_directory(be_only.sites["AT"].pki)
    not_ours = _decision(at_receipts, str(uuid.uuid4()))  # no message of BE's has this id
    forged = _decision(at_receipts, str(uuid.uuid4()))
    forged.signature = _decision(at_receipts, str(uuid.uuid4())).signature
    answer = as_at.stub.AcknowledgeBatch(
        peer_pb2.AcknowledgeBatchRequest(receipts=[not_ours, forged]), timeout=TIMEOUT_S
    )
    assert len(answer.results) == 2
    for receipt, result in zip([not_ours, forged], answer.results, strict=True):
        assert result.HasField("refusal")
        with pytest.raises(grpc.RpcError) as alone:
            as_at.stub.Acknowledge(peer_pb2.AcknowledgeRequest(receipt=receipt), timeout=TIMEOUT_S)
        assert status_code(result.refusal.code) == alone.value.code()
        assert result.refusal.reason == error_reason(alone.value)
    assert status_code(answer.results[0].refusal.code) == grpc.StatusCode.NOT_FOUND
    assert status_code(answer.results[1].refusal.code) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("count", [0, MAX_ITEMS + 1])
def test_an_acknowledgement_batch_outside_its_size_is_refused(
    be_only: RunningGateways, as_at: PeerCaller, count: int
) -> None:
    at_receipts = ReceiptSigner.from_state_directory(be_only.sites["AT"].pki)
    receipts = [_decision(at_receipts, str(uuid.uuid4())) for _ in range(count)]
    with pytest.raises(grpc.RpcError) as refused:
        as_at.stub.AcknowledgeBatch(
            peer_pb2.AcknowledgeBatchRequest(receipts=receipts), timeout=TIMEOUT_S
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == ["receipts"]
