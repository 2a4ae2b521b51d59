"""Receipts: signed by the receiver, bound to the one request they answer."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.envelope import (
    MALFORMED_RECEIPT,
    RECEIPT_MISMATCH,
    RECEIPT_SIGNATURE,
    ReceiptMismatch,
    VerifiedEnvelope,
    envelope_digest,
    verify_receipt,
)
from gateway.errors import AuthenticationRejected, ValidationRejected
from pouch.v1 import envelope_pb2

from . import SENDER, Pki, make_pki, protected_header


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A frozen PKI of three parties, made once and only read (67 ms; for each of 8 tests
    if it were per test); every verifier a test uses is made fresh by ``pki.verifier()``."""
    return make_pki(Path(tmp_path_factory.mktemp("receipt-pki")))


def _delivered(pki: Pki, payload: bytes = b"update") -> VerifiedEnvelope:
    """An envelope BE sent and FR verified: what FR's receipt answers."""
    return pki.verifier().verify(pki.envelope(payload=payload), peer_state=SENDER)


def _receipt(
    pki: Pki,
    answered: VerifiedEnvelope,
    outcome: envelope_pb2.ReceiptOutcome.ValueType = envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
    reason_code: str = "",
) -> envelope_pb2.Receipt:
    return pki.own.receipts.sign_receipt(
        message_id=answered.header.message_id,
        request_digest=answered.digest,
        outcome=outcome,
        reason_code=reason_code,
        issued_at=pki.now,
    )


def test_receipt_round_trips(pki: Pki) -> None:
    answered = _delivered(pki)
    sent = _receipt(pki, answered, envelope_pb2.RECEIPT_OUTCOME_REJECTED, "UNKNOWN_PERSON")
    received = envelope_pb2.Receipt.FromString(sent.SerializeToString())

    verified = verify_receipt(
        received,
        receiver_bundle=pki.own.bundle,
        expected_message_id=answered.header.message_id,
        expected_request_digest=answered.digest,
        now=pki.now,
    )

    assert verified.receipt_id == str(uuid.UUID(sent.receipt_id))
    assert verified.message_id == answered.header.message_id
    assert verified.request_digest == answered.digest
    assert verified.receiver_state == "FR"
    assert verified.issued_at == pki.now
    assert verified.outcome == envelope_pb2.RECEIPT_OUTCOME_REJECTED
    assert verified.reason_code == "UNKNOWN_PERSON"
    assert protected_header(sent.signature)["typ"] == "pouch-receipt+jws"
    assert protected_header(sent.signature)["kid"] == pki.own.receipts.kid


def test_receipt_binds_request_digest(pki: Pki) -> None:
    first, second = _delivered(pki, b"first"), _delivered(pki, b"second")
    receipt = _receipt(pki, first)
    # A genuine receipt for the first request, presented as the answer to the second.
    with pytest.raises(ReceiptMismatch) as refusal:
        verify_receipt(
            receipt,
            receiver_bundle=pki.own.bundle,
            expected_message_id=first.header.message_id,
            expected_request_digest=second.digest,
            now=pki.now,
        )
    assert refusal.value.reason == RECEIPT_MISMATCH
    with pytest.raises(ReceiptMismatch):
        verify_receipt(
            receipt,
            receiver_bundle=pki.own.bundle,
            expected_message_id=second.header.message_id,
            expected_request_digest=first.digest,
            now=pki.now,
        )


def test_request_digest_is_what_the_sender_can_recompute(pki: Pki) -> None:
    envelope = pki.envelope()
    answered = pki.verifier().verify(envelope, peer_state=SENDER)
    assert envelope_digest(envelope) == answered.digest


def test_receipt_signed_by_other_state_is_refused(pki: Pki) -> None:
    answered = _delivered(pki)
    # DE signs a receipt for FR's request, both as itself and pretending to be FR.
    forged = pki.other.receipts.sign_receipt(
        message_id=answered.header.message_id,
        request_digest=answered.digest,
        outcome=envelope_pb2.RECEIPT_OUTCOME_APPLIED,
        reason_code="",
        issued_at=pki.now,
    )
    impersonating = envelope_pb2.Receipt()
    impersonating.CopyFrom(forged)
    impersonating.receiver_state = "FR"
    for receipt in (forged, impersonating):
        with pytest.raises(AuthenticationRejected) as refusal:
            verify_receipt(
                receipt,
                receiver_bundle=pki.own.bundle,
                expected_message_id=answered.header.message_id,
                expected_request_digest=answered.digest,
                now=pki.now,
            )
        assert refusal.value.reason == RECEIPT_SIGNATURE


@pytest.mark.parametrize("field", ["outcome", "reason_code", "issued_at", "receipt_id"])
def test_tampered_receipt_is_refused(pki: Pki, field: str) -> None:
    answered = _delivered(pki)
    receipt = _receipt(pki, answered, envelope_pb2.RECEIPT_OUTCOME_REJECTED, "UNKNOWN_PERSON")
    if field == "outcome":
        receipt.outcome = envelope_pb2.RECEIPT_OUTCOME_APPLIED
    elif field == "reason_code":
        receipt.reason_code = "DUPLICATE"
    elif field == "issued_at":
        receipt.issued_at.seconds += 1
    else:
        receipt.receipt_id = str(uuid.uuid4())
    with pytest.raises(AuthenticationRejected) as refusal:
        verify_receipt(
            receipt,
            receiver_bundle=pki.own.bundle,
            expected_message_id=answered.header.message_id,
            expected_request_digest=answered.digest,
            now=pki.now,
        )
    assert refusal.value.reason == RECEIPT_SIGNATURE


def test_envelope_signature_cannot_pass_as_a_receipt_signature(pki: Pki) -> None:
    answered = _delivered(pki)
    receipt = _receipt(pki, answered)
    receipt.signature = pki.own.signer.sign_detached("pouch-envelope+jws", b"{}")
    with pytest.raises(AuthenticationRejected) as refusal:
        verify_receipt(
            receipt,
            receiver_bundle=pki.own.bundle,
            expected_message_id=answered.header.message_id,
            expected_request_digest=answered.digest,
            now=pki.now,
        )
    assert refusal.value.reason == RECEIPT_SIGNATURE


def test_malformed_receipt_is_refused_naming_fields(pki: Pki) -> None:
    answered = _delivered(pki)
    receipt = _receipt(pki, answered)
    receipt.outcome = envelope_pb2.RECEIPT_OUTCOME_UNSPECIFIED
    receipt.request_digest = "md5:abc"
    receipt.ClearField("issued_at")
    with pytest.raises(ValidationRejected) as refusal:
        verify_receipt(
            receipt,
            receiver_bundle=pki.own.bundle,
            expected_message_id=answered.header.message_id,
            expected_request_digest=answered.digest,
            now=pki.now,
        )
    assert refusal.value.reason == MALFORMED_RECEIPT
    assert {v.field for v in refusal.value.violations} == {
        "outcome",
        "request_digest",
        "issued_at",
    }


def test_signer_refuses_a_rejection_without_reason(pki: Pki) -> None:
    with pytest.raises(ValueError, match="reason_code: required when rejected"):
        _receipt(pki, _delivered(pki), envelope_pb2.RECEIPT_OUTCOME_REJECTED, "")
