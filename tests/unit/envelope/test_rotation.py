"""A partner's rotated signing keys (ES256 and ML-DSA-44): envelopes and receipts
signed with the old keys verify while their bundle is in its overlap window, and are
refused after it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.envelope import (
    ENVELOPE_PQ_SIGNATURE,
    ENVELOPE_SIGNATURE,
    RECEIPT_SIGNATURE,
    EnvelopeSigner,
    EnvelopeVerifier,
    ReceiptSigner,
    verify_receipt,
)
from gateway.envelope.jws import PostQuantumSigningKey
from gateway.errors import AuthenticationRejected
from gateway.pki import load_certificate, load_private_key
from gateway.pki.bundle import HYBRID_SIGNING
from gateway.pki.bundle_chain import PartnerBundles, verifying_bundles
from gateway.pki.rotation import RotatedKey, prepare_rotation
from pouch.v1 import envelope_pb2

from . import MAX_PAYLOAD_BYTES, OWN, SENDER, WINDOW_S, Pki, make_pki

OVERLAP = timedelta(days=7)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Rotated:
    pki: Pki
    bundles: PartnerBundles
    clock: Clock
    verifier: EnvelopeVerifier
    new_signer: EnvelopeSigner
    new_receipts: ReceiptSigner


@pytest.fixture
def rotated(tmp_path: Path) -> Rotated:
    """FR holds BE's pinned bundle; BE prepared a new signing key and FR took its next
    bundle at ``pki.now``."""
    pki = make_pki(tmp_path)
    clock = Clock(pki.now)
    bundles = PartnerBundles({SENDER: pki.sender.bundle}, overlap=OVERLAP)
    verifier = EnvelopeVerifier(
        OWN, bundles, window_s=WINDOW_S, max_payload_bytes=MAX_PAYLOAD_BYTES, clock=clock
    )
    files = prepare_rotation(pki.sender.directory.root, RotatedKey.SIGNING, now=pki.now)
    key, certificate = load_private_key(files.next_key), load_certificate(files.next_cert)
    assert files.next_bundle is not None
    return Rotated(
        pki=pki,
        bundles=bundles,
        clock=clock,
        verifier=verifier,
        new_signer=EnvelopeSigner(state=SENDER, private_key=key, certificate=certificate),
        new_receipts=ReceiptSigner(state=SENDER, private_key=key, certificate=certificate),
    )


def _take(r: Rotated) -> None:
    next_bundle = r.pki.sender.directory.root / "bundle.next.json"
    r.bundles.take(SENDER, next_bundle.read_bytes(), r.clock.now)


def test_the_new_key_is_refused_until_its_bundle_is_taken(rotated: Rotated) -> None:
    header = rotated.pki.header()
    assert rotated.verifier.verify(rotated.pki.sender.signer.sign(header, b"x"), peer_state=SENDER)
    with pytest.raises(AuthenticationRejected) as refused:
        rotated.verifier.verify(rotated.new_signer.sign(header, b"x"), peer_state=SENDER)
    assert refused.value.reason == ENVELOPE_SIGNATURE
    _take(rotated)
    assert rotated.verifier.verify(rotated.new_signer.sign(header, b"x"), peer_state=SENDER)


def test_envelopes_of_the_old_key_verify_in_the_overlap_and_are_refused_after_it(
    rotated: Rotated,
) -> None:
    _take(rotated)
    old = rotated.pki.sender.signer
    late = rotated.pki.now + OVERLAP - timedelta(minutes=1)
    rotated.clock.now = late
    header = rotated.pki.header(created_at=late)
    assert rotated.verifier.verify(old.sign(header, b"x"), peer_state=SENDER)

    after = rotated.pki.now + OVERLAP
    rotated.clock.now = after
    header = rotated.pki.header(created_at=after)
    assert rotated.verifier.verify(rotated.new_signer.sign(header, b"x"), peer_state=SENDER)
    with pytest.raises(AuthenticationRejected) as refused:
        rotated.verifier.verify(old.sign(header, b"x"), peer_state=SENDER)
    assert refused.value.reason == ENVELOPE_SIGNATURE


def _receipt(signer: ReceiptSigner, at: datetime) -> envelope_pb2.Receipt:
    return signer.sign_receipt(
        message_id=str(uuid.uuid4()),
        request_digest="sha256:" + "cd" * 32,
        outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
        reason_code="",
        issued_at=at,
    )


def test_receipts_of_both_keys_verify_in_the_overlap_and_the_old_is_refused_after_it(
    rotated: Rotated,
) -> None:
    _take(rotated)
    now = rotated.pki.now
    before, after = (
        _receipt(rotated.pki.sender.receipts, now),
        _receipt(rotated.new_receipts, now),
    )

    def check(receipt: envelope_pb2.Receipt, at: datetime) -> None:
        verify_receipt(
            receipt,
            receiver_bundle=rotated.bundles[SENDER],
            expected_message_id=receipt.message_id,
            expected_request_digest=receipt.request_digest,
            now=at,
            in_overlap=verifying_bundles(rotated.bundles, SENDER, at)[1:],
        )

    check(before, now)
    check(after, now)
    check(after, now + OVERLAP)
    with pytest.raises(AuthenticationRejected) as refused:
        check(before, now + OVERLAP)
    assert refused.value.reason == RECEIPT_SIGNATURE


def _hybrid_signers(r: Rotated) -> tuple[EnvelopeSigner, EnvelopeSigner]:
    """BE's next hybrid signer (both next keys), and one pairing the next ES256 key with
    the replaced ML-DSA-44 key."""
    directory = r.pki.sender.directory
    next_pq = PostQuantumSigningKey(
        state=SENDER,
        private_key=load_private_key(directory.root / "signing-pq.next.key"),
        certificate=load_certificate(directory.root / "signing-pq.next.crt"),
    )
    new = r.new_signer
    old_pq = r.pki.sender.signer.post_quantum
    assert old_pq is not None
    return (
        EnvelopeSigner(
            state=SENDER,
            private_key=new.private_key,
            certificate=new.certificate,
            post_quantum=next_pq,
        ),
        EnvelopeSigner(
            state=SENDER,
            private_key=new.private_key,
            certificate=new.certificate,
            post_quantum=old_pq,
        ),
    )


def test_hybrid_envelopes_of_the_replaced_ml_dsa_key_verify_in_the_overlap_and_are_refused_after_it(
    rotated: Rotated,
) -> None:
    _take(rotated)
    old = rotated.pki.sender.signer
    new, _ = _hybrid_signers(rotated)
    late = rotated.pki.now + OVERLAP - timedelta(minutes=1)
    rotated.clock.now = late
    header = rotated.pki.header(created_at=late)
    verified = rotated.verifier.verify(old.sign(header, b"x", hybrid=True), peer_state=SENDER)
    assert verified.signature_algorithms == HYBRID_SIGNING

    after = rotated.pki.now + OVERLAP
    rotated.clock.now = after
    header = rotated.pki.header(created_at=after)
    verified = rotated.verifier.verify(new.sign(header, b"x", hybrid=True), peer_state=SENDER)
    assert verified.signature_algorithms == HYBRID_SIGNING
    with pytest.raises(AuthenticationRejected) as refused:
        rotated.verifier.verify(old.sign(header, b"x", hybrid=True), peer_state=SENDER)
    assert refused.value.reason == ENVELOPE_SIGNATURE


def test_an_ml_dsa_signature_of_the_replaced_key_beside_the_new_es256_one_is_refused(
    rotated: Rotated,
) -> None:
    _take(rotated)
    new, mixed = _hybrid_signers(rotated)
    header = rotated.pki.header()
    assert rotated.verifier.verify(new.sign(header, b"x", hybrid=True), peer_state=SENDER)
    with pytest.raises(AuthenticationRejected) as refused:
        rotated.verifier.verify(mixed.sign(header, b"x", hybrid=True), peer_state=SENDER)
    assert refused.value.reason == ENVELOPE_PQ_SIGNATURE


def test_hybrid_receipts_of_the_replaced_ml_dsa_key_verify_in_the_overlap_and_are_refused_after_it(
    rotated: Rotated,
) -> None:
    _take(rotated)
    now = rotated.pki.now
    new, _ = _hybrid_signers(rotated)
    new_receipts = ReceiptSigner(
        state=SENDER,
        private_key=new.private_key,
        certificate=new.certificate,
        post_quantum=new.post_quantum,
    )

    def receipt(signer: ReceiptSigner) -> envelope_pb2.Receipt:
        return signer.sign_receipt(
            message_id=str(uuid.uuid4()),
            request_digest="sha256:" + "cd" * 32,
            outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
            reason_code="",
            issued_at=now,
            hybrid=True,
        )

    def check(r: envelope_pb2.Receipt, at: datetime) -> tuple[str, ...]:
        return verify_receipt(
            r,
            receiver_bundle=rotated.bundles[SENDER],
            expected_message_id=r.message_id,
            expected_request_digest=r.request_digest,
            now=at,
            in_overlap=verifying_bundles(rotated.bundles, SENDER, at)[1:],
            hybrid=True,
        ).signature_algorithms

    before, after = receipt(rotated.pki.sender.receipts), receipt(new_receipts)
    assert check(before, now + OVERLAP - timedelta(minutes=1)) == HYBRID_SIGNING
    assert check(after, now + OVERLAP) == HYBRID_SIGNING
    with pytest.raises(AuthenticationRejected) as refused:
        check(before, now + OVERLAP)
    assert refused.value.reason == RECEIPT_SIGNATURE
