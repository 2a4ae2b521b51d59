"""Hybrid signatures: ES256 and ML-DSA-44 over one signing input, valid only if both are.

Each refusal test first shows the genuine hybrid envelope or receipt accepted, then the
attack refused, so it fails for the attack's reason only. The attacker is the network
(strip, transplant, relabel, swap, inflate) or DE, a partner with genuine keys of its own.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, mldsa

from gateway.envelope import (
    ENVELOPE_PQ_SIGNATURE,
    ENVELOPE_SIGNATURE,
    RECEIPT_PQ_SIGNATURE,
    RECEIPT_SIGNATURE,
    EnvelopeSigner,
    EnvelopeVerifier,
    PostQuantumSigningKey,
    ReceiptSigner,
    VerifiedEnvelope,
    envelope_digest,
    signing_input,
    verify_receipt,
)
from gateway.envelope.jws import (
    ENVELOPE_TYP,
    MAX_PQ_TOKEN_CHARS,
    MAX_TOKEN_CHARS,
    SignatureRefused,
    verify_detached,
)
from gateway.errors import AuthenticationRejected
from gateway.pki import StateDirectory, certificate_fingerprint
from gateway.pki.keys import load_certificate, load_private_key
from pouch.v1 import envelope_pb2

from . import (
    MAX_PAYLOAD_BYTES,
    OWN,
    SENDER,
    WINDOW_S,
    Pki,
    b64url,
    copy_of,
    forge_token,
    make_pki,
    protected_header,
)

ES256 = "ES256"
MLDSA44 = "ML-DSA-44"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Three parties, each with an ES256 and an ML-DSA-44 signing key, made once."""
    return make_pki(Path(tmp_path_factory.mktemp("hybrid-pki")))


def _hybrid(pki: Pki, payload: bytes = b"\x0a\x05birth") -> envelope_pb2.Envelope:
    return pki.sender.signer.sign(pki.header(), payload, hybrid=True)


def _accepted(pki: Pki, envelope: envelope_pb2.Envelope) -> VerifiedEnvelope:
    verified = pki.verifier().verify(envelope, peer_state=SENDER)
    verified.require_hybrid()
    return verified


def _refused(pki: Pki, envelope: envelope_pb2.Envelope) -> str:
    """Why FR refuses ``envelope`` from BE under an agreement asking for hybrid."""
    with pytest.raises(AuthenticationRejected) as refusal:
        _accepted(pki, envelope)
    return refusal.value.reason


def _pq_header(pki: Pki, **changes: object) -> dict[str, object]:
    assert pki.sender.bundle.signing_pq_certificate is not None
    header: dict[str, object] = {
        "alg": MLDSA44,
        "b64": False,
        "crit": ["b64"],
        "kid": certificate_fingerprint(pki.sender.bundle.signing_pq_certificate),
        "typ": ENVELOPE_TYP,
    }
    header.update(changes)
    return header


def _signature_bytes(token: str) -> bytes:
    encoded = token.rsplit(".", 1)[1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


# -- envelopes ---------------------------------------------------------------------


def test_hybrid_envelope_round_trips_with_both_signatures(pki: Pki) -> None:
    envelope = _hybrid(pki)
    received = envelope_pb2.Envelope.FromString(envelope.SerializeToString())

    verified = _accepted(pki, received)

    assert verified.signature_algorithms == (ES256, MLDSA44)
    assert protected_header(envelope.pq_signature)["alg"] == MLDSA44
    assert len(_signature_bytes(envelope.pq_signature)) == 2420
    assert len(envelope.pq_signature) <= MAX_PQ_TOKEN_CHARS


def test_the_post_quantum_signature_is_not_in_the_digest_a_receipt_binds(pki: Pki) -> None:
    header = pki.header()
    hybrid = pki.sender.signer.sign(header, b"payload", hybrid=True)
    classical = pki.sender.signer.sign(header, b"payload")
    assert envelope_digest(hybrid) == envelope_digest(classical)
    assert _accepted(pki, hybrid).digest == envelope_digest(classical)


def test_classical_envelope_reports_es256_alone(pki: Pki) -> None:
    verified = pki.verifier().verify(pki.envelope(), peer_state=SENDER)
    assert verified.signature_algorithms == (ES256,)


def test_hybrid_envelope_with_the_post_quantum_signature_stripped_is_refused(pki: Pki) -> None:
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    envelope.ClearField("pq_signature")
    # The ES256 signature alone still verifies: what refuses it is the agreement's ask.
    assert pki.verifier().verify(envelope, peer_state=SENDER).signature_algorithms == (ES256,)
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_hybrid_envelope_with_the_classical_signature_stripped_is_refused(pki: Pki) -> None:
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    envelope.signature = envelope.pq_signature
    envelope.ClearField("pq_signature")
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


def test_post_quantum_signature_moved_from_another_envelope_is_refused(pki: Pki) -> None:
    first, second = _hybrid(pki, b"first"), _hybrid(pki, b"second")
    _accepted(pki, second)
    second.pq_signature = first.pq_signature
    assert _refused(pki, second) == ENVELOPE_PQ_SIGNATURE


def test_envelope_changed_by_a_holder_of_the_es256_key_alone_is_refused(pki: Pki) -> None:
    # The day ES256 falls: an attacker who can forge ES256 changes the payload and signs
    # it again; the ML-DSA-44 signature beside it still covers the original.
    header = pki.header()
    original = pki.sender.signer.sign(header, b"birth", hybrid=True)
    _accepted(pki, original)
    changed = pki.sender.signer.sign(header, b"death")
    changed.pq_signature = original.pq_signature
    assert pki.verifier().verify(original, peer_state=SENDER).payload == b"birth"
    assert _refused(pki, changed) == ENVELOPE_PQ_SIGNATURE


@pytest.mark.parametrize("claimed_kid", ["attacker's own", "sender's"])
def test_post_quantum_signature_by_another_states_key_is_refused(
    pki: Pki, claimed_kid: str
) -> None:
    # DE holds a genuine ML-DSA-44 key and bundle with FR, and signs BE's signing input.
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    attacker = pki.other.signer.post_quantum
    assert attacker is not None
    kid = attacker.kid if claimed_kid == "attacker's own" else _pq_header(pki)["kid"]
    protected = b64url(json.dumps(_pq_header(pki, kid=kid), separators=(",", ":")).encode())
    canonical = signing_input(pki.header(message_id=envelope.message_id), envelope.payload)
    key = attacker.private_key
    assert isinstance(key, mldsa.MLDSA44PrivateKey)
    forged = key.sign(protected.encode() + b"." + canonical)
    envelope.pq_signature = f"{protected}..{b64url(forged)}"
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_post_quantum_signature_with_a_flipped_bit_is_refused(pki: Pki) -> None:
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    signature = bytearray(_signature_bytes(envelope.pq_signature))
    signature[100] ^= 0x01
    protected = envelope.pq_signature.split(".", 1)[0]
    envelope.pq_signature = f"{protected}..{b64url(bytes(signature))}"
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_post_quantum_signature_relabelled_as_a_receipt_is_refused(pki: Pki) -> None:
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    # The header says another typ: the signature no longer matches, and typ is checked.
    forged = forge_token(
        _pq_header(pki, typ="pouch-receipt+jws"), _signature_bytes(envelope.pq_signature)
    )
    envelope.pq_signature = forged
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_es256_token_offered_as_the_post_quantum_signature_is_refused(pki: Pki) -> None:
    # Algorithm confusion: the ES256 token, valid in itself, in the ML-DSA-44 field.
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    envelope.pq_signature = envelope.signature
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_ml_dsa_header_over_an_es256_signature_is_refused(pki: Pki) -> None:
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    envelope.pq_signature = forge_token(_pq_header(pki), _signature_bytes(envelope.signature))
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_es256_header_over_an_ml_dsa_signature_is_refused(pki: Pki) -> None:
    # The ML-DSA-44 signature under a header claiming ES256, in either field.
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    relabelled = forge_token(_pq_header(pki, alg=ES256), _signature_bytes(envelope.pq_signature))
    for field in ("pq_signature", "signature"):
        attacked = copy_of(envelope)
        setattr(attacked, field, relabelled)
        expected = ENVELOPE_PQ_SIGNATURE if field == "pq_signature" else ENVELOPE_SIGNATURE
        assert _refused(pki, attacked) == expected, field


def test_ml_dsa_token_offered_as_the_es256_signature_is_refused(pki: Pki) -> None:
    # The genuine ML-DSA-44 token in both fields: the ES256 field takes ES256 only.
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    envelope.signature = envelope.pq_signature
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


def test_oversized_post_quantum_token_is_refused(pki: Pki) -> None:
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    protected = envelope.pq_signature.split(".", 1)[0]
    filler = MAX_PQ_TOKEN_CHARS - len(protected) - 2 + 1
    envelope.pq_signature = f"{protected}..{'A' * filler}"
    assert len(envelope.pq_signature) == MAX_PQ_TOKEN_CHARS + 1
    assert _refused(pki, envelope) == ENVELOPE_PQ_SIGNATURE


def test_post_quantum_signature_the_senders_bundle_cannot_check_is_refused(pki: Pki) -> None:
    # BE's bundle as FR pinned it names ES256 alone: an ML-DSA-44 token, even a
    # genuine one, is no evidence FR can check, so it is not carried along as one.
    envelope = _hybrid(pki)
    _accepted(pki, envelope)
    classical_bundle = dataclasses.replace(pki.sender.bundle, signing_pq_certificate=None)
    verifier = EnvelopeVerifier(
        OWN,
        {SENDER: classical_bundle},
        window_s=WINDOW_S,
        max_payload_bytes=MAX_PAYLOAD_BYTES,
        clock=lambda: pki.now,
    )
    with pytest.raises(AuthenticationRejected) as refusal:
        verifier.verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == ENVELOPE_PQ_SIGNATURE


def test_bad_post_quantum_signature_under_a_classical_agreement_is_refused(pki: Pki) -> None:
    # Present means checked: a classical agreement does not make a broken one harmless.
    envelope = _hybrid(pki)
    assert pki.verifier().verify(envelope, peer_state=SENDER).signature_algorithms == (
        ES256,
        MLDSA44,
    )
    envelope.pq_signature = _hybrid(pki, b"other").pq_signature
    with pytest.raises(AuthenticationRejected) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == ENVELOPE_PQ_SIGNATURE


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "a..b",
        "a.b.c",
        "!!..AA",
        b64url(b"[" * 2000) + "..AA",  # nesting deeper than the JSON reader recurses
        b64url(b"\xff\xfe") + "..AA",
        b64url(b'"just a string"') + "..AA",
        b64url(b"{}") + ".." + "A" * 3227,
    ],
    ids=lambda t: f"{len(t)}-chars",
)
@pytest.mark.parametrize("alg", [ES256, MLDSA44])
def test_hostile_tokens_are_refused_never_crash(pki: Pki, token: str, alg: str) -> None:
    certificate = (
        pki.sender.bundle.signing_pq_certificate
        if alg == MLDSA44
        else pki.sender.bundle.signing_certificate
    )
    assert certificate is not None
    with pytest.raises(SignatureRefused):
        verify_detached(
            token,
            signing_input=b"input",
            certificate=certificate,
            typ=ENVELOPE_TYP,
            now=pki.now,
            alg=alg,
        )


def test_each_algorithm_keeps_its_own_size_bound(pki: Pki) -> None:
    assert MAX_TOKEN_CHARS == 2048 < len(_hybrid(pki).pq_signature) < MAX_PQ_TOKEN_CHARS


def test_a_certificate_of_the_other_algorithm_checks_nothing(pki: Pki) -> None:
    envelope = _hybrid(pki)
    canonical = signing_input(pki.header(message_id=envelope.message_id), envelope.payload)
    for token, certificate, alg in (
        (envelope.pq_signature, pki.sender.bundle.signing_certificate, MLDSA44),
        (envelope.signature, pki.sender.bundle.signing_pq_certificate, ES256),
    ):
        assert certificate is not None
        with pytest.raises(SignatureRefused):
            verify_detached(
                token,
                signing_input=canonical,
                certificate=certificate,
                typ=ENVELOPE_TYP,
                now=pki.now,
                alg=alg,
            )


# -- signers -----------------------------------------------------------------------


def test_a_state_without_an_ml_dsa_key_refuses_to_sign_hybrid(pki: Pki) -> None:
    classical = EnvelopeSigner(
        state=SENDER,
        private_key=pki.sender.signer.private_key,
        certificate=pki.sender.signer.certificate,
    )
    assert classical.signature_algorithms == (ES256,)
    assert classical.sign(pki.header(), b"payload").pq_signature == ""
    with pytest.raises(ValueError, match="no ML-DSA-44 signing key"):
        classical.sign(pki.header(), b"payload", hybrid=True)


def test_post_quantum_key_must_be_the_states_ml_dsa_key(pki: Pki) -> None:
    sender = pki.sender.signer.post_quantum
    other = pki.other.signer.post_quantum
    assert sender is not None and other is not None
    with pytest.raises(ValueError, match="must be ML-DSA-44"):
        PostQuantumSigningKey(SENDER, ec.generate_private_key(ec.SECP256R1()), sender.certificate)
    with pytest.raises(ValueError, match="does not belong"):
        PostQuantumSigningKey(SENDER, other.private_key, sender.certificate)
    with pytest.raises(ValueError, match="not a message-signing certificate of BE"):
        PostQuantumSigningKey(SENDER, other.private_key, other.certificate)
    with pytest.raises(ValueError, match="is DE's"):
        EnvelopeSigner(
            state=SENDER,
            private_key=pki.sender.signer.private_key,
            certificate=pki.sender.signer.certificate,
            post_quantum=other,
        )


def test_state_directory_with_half_an_ml_dsa_key_pair_is_refused(pki: Pki, tmp_path: Path) -> None:
    copy = StateDirectory(shutil.copytree(pki.sender.directory.root, tmp_path / "be"))
    assert EnvelopeSigner.from_state_directory(copy).signature_algorithms == (ES256, MLDSA44)
    copy.signing_pq_key.unlink()
    with pytest.raises(FileNotFoundError):
        EnvelopeSigner.from_state_directory(copy)


def test_state_directory_without_ml_dsa_keys_signs_classical(pki: Pki, tmp_path: Path) -> None:
    copy = StateDirectory(shutil.copytree(pki.sender.directory.root, tmp_path / "be"))
    copy.signing_pq_key.unlink()
    copy.signing_pq_cert.unlink()
    signer = ReceiptSigner.from_state_directory(copy)
    assert signer.signature_algorithms == (ES256,)
    assert load_private_key(pki.sender.directory.signing_pq_key)  # the original is intact
    assert load_certificate(pki.sender.directory.signing_pq_cert)


def test_signing_keys_never_print(pki: Pki) -> None:
    assert "private" not in repr(pki.sender.signer).lower()
    assert pki.sender.signer.post_quantum is not None
    assert "private" not in repr(pki.sender.signer.post_quantum).lower()


# -- receipts ----------------------------------------------------------------------


def _answered(pki: Pki) -> VerifiedEnvelope:
    return _accepted(pki, _hybrid(pki))


def _hybrid_receipt(pki: Pki, answered: VerifiedEnvelope) -> envelope_pb2.Receipt:
    return pki.own.receipts.sign_receipt(
        message_id=answered.header.message_id,
        request_digest=answered.digest,
        outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
        reason_code="",
        issued_at=pki.now,
        hybrid=True,
    )


def _receipt_refused(
    pki: Pki, receipt: envelope_pb2.Receipt, answered: VerifiedEnvelope, *, hybrid: bool = True
) -> str:
    with pytest.raises(AuthenticationRejected) as refusal:
        _receipt_accepted(pki, receipt, answered, hybrid=hybrid)
    return refusal.value.reason


def _receipt_accepted(
    pki: Pki, receipt: envelope_pb2.Receipt, answered: VerifiedEnvelope, *, hybrid: bool = True
) -> tuple[str, ...]:
    return verify_receipt(
        receipt,
        receiver_bundle=pki.own.bundle,
        expected_message_id=answered.header.message_id,
        expected_request_digest=answered.digest,
        now=pki.now,
        hybrid=hybrid,
    ).signature_algorithms


def test_hybrid_receipt_round_trips_with_both_signatures(pki: Pki) -> None:
    answered = _answered(pki)
    receipt = _hybrid_receipt(pki, answered)
    received = envelope_pb2.Receipt.FromString(receipt.SerializeToString())
    assert _receipt_accepted(pki, received, answered) == (ES256, MLDSA44)
    assert pki.own.bundle.signing_pq_certificate is not None
    assert protected_header(receipt.pq_signature) == {
        "alg": MLDSA44,
        "b64": False,
        "crit": ["b64"],
        "kid": certificate_fingerprint(pki.own.bundle.signing_pq_certificate),
        "typ": "pouch-receipt+jws",
    }


def test_hybrid_receipt_with_the_post_quantum_signature_stripped_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    receipt = _hybrid_receipt(pki, answered)
    assert _receipt_accepted(pki, receipt, answered) == (ES256, MLDSA44)
    receipt.ClearField("pq_signature")
    assert _receipt_accepted(pki, receipt, answered, hybrid=False) == (ES256,)
    assert _receipt_refused(pki, receipt, answered) == RECEIPT_PQ_SIGNATURE


def test_classical_receipt_under_a_hybrid_agreement_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    classical = pki.own.receipts.sign_receipt(
        message_id=answered.header.message_id,
        request_digest=answered.digest,
        outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
        reason_code="",
        issued_at=pki.now,
    )
    assert _receipt_accepted(pki, classical, answered, hybrid=False) == (ES256,)
    assert _receipt_refused(pki, classical, answered) == RECEIPT_PQ_SIGNATURE


def test_post_quantum_signature_moved_from_another_receipt_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    receipt, other = _hybrid_receipt(pki, answered), _hybrid_receipt(pki, answered)
    assert _receipt_accepted(pki, receipt, answered) == (ES256, MLDSA44)
    receipt.pq_signature = other.pq_signature  # another receipt id, another signing input
    assert _receipt_refused(pki, receipt, answered) == RECEIPT_PQ_SIGNATURE
    # Present means checked, whatever the agreement asks.
    assert _receipt_refused(pki, receipt, answered, hybrid=False) == RECEIPT_PQ_SIGNATURE


def test_envelope_post_quantum_signature_offered_on_a_receipt_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    receipt = _hybrid_receipt(pki, answered)
    assert _receipt_accepted(pki, receipt, answered) == (ES256, MLDSA44)
    receipt.pq_signature = pki.own.signer.sign_pq_detached(ENVELOPE_TYP, b"anything")
    assert _receipt_refused(pki, receipt, answered) == RECEIPT_PQ_SIGNATURE


def test_receipt_algorithm_confusion_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    receipt = _hybrid_receipt(pki, answered)
    assert _receipt_accepted(pki, receipt, answered) == (ES256, MLDSA44)
    es256_in_pq = envelope_pb2.Receipt()
    es256_in_pq.CopyFrom(receipt)
    es256_in_pq.pq_signature = receipt.signature
    assert _receipt_refused(pki, es256_in_pq, answered) == RECEIPT_PQ_SIGNATURE
    pq_in_es256 = envelope_pb2.Receipt()
    pq_in_es256.CopyFrom(receipt)
    pq_in_es256.signature = receipt.pq_signature
    assert _receipt_refused(pki, pq_in_es256, answered) == RECEIPT_SIGNATURE


def test_oversized_post_quantum_receipt_token_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    receipt = _hybrid_receipt(pki, answered)
    assert _receipt_accepted(pki, receipt, answered) == (ES256, MLDSA44)
    receipt.pq_signature += "A" * MAX_PQ_TOKEN_CHARS
    assert _receipt_refused(pki, receipt, answered) == RECEIPT_PQ_SIGNATURE


def test_receipt_post_quantum_signature_the_bundle_cannot_check_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    receipt = _hybrid_receipt(pki, answered)
    assert _receipt_accepted(pki, receipt, answered) == (ES256, MLDSA44)
    classical_bundle = dataclasses.replace(pki.own.bundle, signing_pq_certificate=None)
    with pytest.raises(AuthenticationRejected) as refusal:
        verify_receipt(
            receipt,
            receiver_bundle=classical_bundle,
            expected_message_id=answered.header.message_id,
            expected_request_digest=answered.digest,
            now=pki.now,
        )
    assert refusal.value.reason == RECEIPT_PQ_SIGNATURE


def test_receipt_signed_hybrid_by_another_state_is_refused(pki: Pki) -> None:
    answered = _answered(pki)
    assert _receipt_accepted(pki, _hybrid_receipt(pki, answered), answered)
    forged = pki.other.receipts.sign_receipt(
        message_id=answered.header.message_id,
        request_digest=answered.digest,
        outcome=envelope_pb2.RECEIPT_OUTCOME_APPLIED,
        reason_code="",
        issued_at=pki.now,
        hybrid=True,
    )
    forged.receiver_state = "FR"
    assert _receipt_refused(pki, forged, answered) == RECEIPT_SIGNATURE
    # FR's genuine ES256 signature with DE's ML-DSA-44 one beside it.
    mixed = _hybrid_receipt(pki, answered)
    mixed.pq_signature = forged.pq_signature
    assert _receipt_refused(pki, mixed, answered) == RECEIPT_PQ_SIGNATURE
