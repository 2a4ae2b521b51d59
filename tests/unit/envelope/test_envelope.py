"""Envelope signing and verification, one test per attack the verifier defends against."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.envelope import (
    CLOCK_WINDOW,
    ENVELOPE_SIGNATURE,
    MALFORMED_ENVELOPE,
    MISDIRECTED,
    SENDER_MISMATCH,
    UNKNOWN_SENDER,
    EnvelopeSigner,
    EnvelopeVerifier,
    MisdirectedEnvelope,
    StaleEnvelope,
    envelope_digest,
    signing_input,
)
from gateway.errors import AuthenticationRejected, ValidationRejected, to_status
from gateway.pki import certificate_fingerprint, load_certificate, load_private_key
from gateway.pki.keys import certificate_pem
from pouch.v1 import envelope_pb2

from . import (
    MAX_PAYLOAD_BYTES,
    OTHER,
    OWN,
    SENDER,
    WINDOW_S,
    Pki,
    forge_token,
    make_pki,
    protected_header,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A frozen PKI of three parties, made once and only read (67 ms; for each of 25 tests
    if it were per test); every verifier a test uses is made fresh by ``pki.verifier()``."""
    return make_pki(Path(tmp_path_factory.mktemp("envelope-pki")))


def _es256_key(signer: EnvelopeSigner) -> ec.EllipticCurvePrivateKey:
    """The signer's ES256 key, typed as pyjwt takes it."""
    assert isinstance(signer.private_key, ec.EllipticCurvePrivateKey)
    return signer.private_key


def _refused(pki: Pki, envelope: envelope_pb2.Envelope, *, peer: str = SENDER) -> str:
    """The reason code FR's verifier gives for refusing ``envelope``."""
    with pytest.raises(AuthenticationRejected) as refusal:
        pki.verifier().verify(envelope, peer_state=peer)
    return refusal.value.reason


def test_valid_envelope_round_trips(pki: Pki) -> None:
    header = pki.header()
    payload = b"\x0a\x05birth\x12\x00"
    sent = pki.sender.signer.sign(header, payload)
    received = envelope_pb2.Envelope.FromString(sent.SerializeToString())

    verified = pki.verifier().verify(received, peer_state=SENDER)

    assert verified.header == header
    assert verified.payload == payload
    assert verified.digest == envelope_digest(sent)
    assert verified.digest == "sha256:" + hashlib.sha256(signing_input(header, payload)).hexdigest()


def test_signed_envelope_has_every_field_and_the_documented_jws_header(pki: Pki) -> None:
    assert pki.envelope().pq_signature == ""  # a classical envelope: ES256 alone
    envelope = pki.sender.signer.sign(pki.header(), b"\x0a\x05birth", hybrid=True)
    for field in envelope_pb2.Envelope.DESCRIPTOR.fields:
        if field.message_type is not None:
            assert envelope.HasField(field.name), field.name  # type: ignore[arg-type]
        else:
            assert getattr(envelope, field.name), field.name
    protected, empty, _signature = envelope.signature.split(".")
    assert protected and not empty
    assert protected_header(envelope.signature) == {
        "alg": "ES256",
        "b64": False,
        "crit": ["b64"],
        "kid": certificate_fingerprint(pki.sender.bundle.signing_certificate),
        "typ": "pouch-envelope+jws",
    }
    assert pki.sender.bundle.signing_pq_certificate is not None
    assert protected_header(envelope.pq_signature) == {
        "alg": "ML-DSA-44",
        "b64": False,
        "crit": ["b64"],
        "kid": certificate_fingerprint(pki.sender.bundle.signing_pq_certificate),
        "typ": "pouch-envelope+jws",
    }


def test_tampered_payload_is_refused(pki: Pki) -> None:
    envelope = pki.envelope(payload=b"\x0a\x05birth")
    envelope.payload = b"\x0a\x05death"
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


def test_tampered_purpose_is_refused(pki: Pki) -> None:
    envelope = pki.envelope(purpose="civil_status_update")
    envelope.purpose = "law_enforcement"
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


@pytest.mark.parametrize("claimed_kid", ["attacker's own", "sender's"])
def test_envelope_signed_by_another_states_key_is_refused(pki: Pki, claimed_kid: str) -> None:
    # DE holds a genuine bundle with FR, but signs an envelope claiming to come from BE.
    header = pki.header()
    attacker = pki.other.signer
    kid = attacker.kid if claimed_kid == "attacker's own" else pki.sender.signer.kid
    envelope = pki.envelope()
    envelope.signature = jwt.api_jws.encode(
        signing_input(header, envelope.payload),
        _es256_key(attacker),
        algorithm="ES256",
        headers={"kid": kid, "typ": "pouch-envelope+jws", "b64": False, "crit": ["b64"]},
        is_payload_detached=True,
    )
    envelope.message_id = header.message_id
    assert _refused(pki, envelope, peer=SENDER) == ENVELOPE_SIGNATURE


def test_signer_refuses_to_sign_as_another_state(pki: Pki) -> None:
    with pytest.raises(ValueError, match="cannot sign an envelope from BE"):
        pki.other.signer.sign(pki.header(), b"payload")


def test_signer_refuses_a_key_that_is_not_the_states_signing_key(pki: Pki) -> None:
    own = pki.own.directory
    with pytest.raises(ValueError, match="does not belong"):
        EnvelopeSigner(
            OWN, load_private_key(pki.sender.directory.signing_key), pki.own.signer.certificate
        )
    with pytest.raises(ValueError, match="not a message-signing certificate"):
        EnvelopeSigner(OWN, load_private_key(own.gateway_key), load_certificate(own.gateway_cert))
    with pytest.raises(ValueError, match="ECDSA P-256"):
        EnvelopeSigner(OWN, load_private_key(own.audit_key), pki.own.signer.certificate)


def test_envelope_from_peer_other_than_sender_is_refused(pki: Pki) -> None:
    # A genuine BE envelope, relayed by DE over DE's own authenticated connection.
    assert _refused(pki, pki.envelope(), peer=OTHER) == SENDER_MISMATCH


def test_envelope_from_sender_without_bundle_is_refused(pki: Pki) -> None:
    envelope = pki.envelope()
    with pytest.raises(AuthenticationRejected) as refusal:
        pki.verifier(partners=(OTHER,)).verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == UNKNOWN_SENDER


@pytest.mark.parametrize("offset_s", [-(WINDOW_S + 1), WINDOW_S + 1, -86_400 * 30, 86_400 * 30])
def test_creation_time_outside_window_is_refused(pki: Pki, offset_s: float) -> None:
    envelope = pki.envelope(created_at=pki.now + timedelta(seconds=offset_s))
    with pytest.raises(StaleEnvelope) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == CLOCK_WINDOW
    assert to_status(refusal.value).code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("offset_s", [-(WINDOW_S - 1), 0, WINDOW_S - 1])
def test_creation_time_inside_window_is_accepted(pki: Pki, offset_s: float) -> None:
    envelope = pki.envelope(created_at=pki.now + timedelta(seconds=offset_s))
    pki.verifier().verify(envelope, peer_state=SENDER)


def test_misdirected_envelope_is_refused(pki: Pki) -> None:
    # BE's genuine envelope for DE, replayed by someone at FR's door.
    envelope = pki.envelope(recipient_state=OTHER)
    with pytest.raises(MisdirectedEnvelope) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == MISDIRECTED


@pytest.mark.parametrize("attack", ["none", "hmac-with-public-certificate", "es384", "attached"])
def test_alg_none_or_hmac_signature_is_refused(pki: Pki, attack: str) -> None:
    envelope = pki.envelope()
    canonical = signing_input(pki.header(message_id=envelope.message_id), envelope.payload)
    kid = pki.sender.signer.kid
    header = {"kid": kid, "typ": "pouch-envelope+jws", "b64": False, "crit": ["b64"]}
    if attack == "none":
        envelope.signature = forge_token({"alg": "none", **header}, b"")
    elif attack == "hmac-with-public-certificate":
        # The classic key confusion: HMAC keyed with the sender's public certificate.
        forged = {"alg": "HS256", **header}
        protected = forge_token(forged, b"x").split(".")[0]
        secret = certificate_pem(pki.sender.bundle.signing_certificate)
        mac = hmac.new(secret, protected.encode() + b"." + canonical, hashlib.sha256).digest()
        envelope.signature = forge_token(forged, mac)
    elif attack == "es384":
        envelope.signature = forge_token({"alg": "ES384", **header}, b"\x01" * 96)
    else:
        # A genuine ES256 signature, but in attached form with the payload inside.
        envelope.signature = jwt.api_jws.encode(
            canonical,
            _es256_key(pki.sender.signer),
            algorithm="ES256",
            headers={"kid": kid, "typ": "pouch-envelope+jws"},
        )
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


def test_signature_under_another_typ_is_refused(pki: Pki) -> None:
    envelope = pki.envelope()
    canonical = signing_input(pki.header(message_id=envelope.message_id), envelope.payload)
    envelope.signature = pki.sender.signer.sign_detached("pouch-receipt+jws", canonical)
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


def test_envelope_signed_with_an_expired_certificate_is_refused(pki: Pki) -> None:
    later = pki.now + timedelta(days=400)
    envelope = pki.envelope(created_at=later)
    with pytest.raises(AuthenticationRejected) as refusal:
        pki.verifier(at=later).verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == ENVELOPE_SIGNATURE
    assert "not valid now" in refusal.value.message


def test_oversized_payload_is_refused(pki: Pki) -> None:
    pki.verifier().verify(pki.envelope(payload=b"x" * MAX_PAYLOAD_BYTES), peer_state=SENDER)
    envelope = pki.envelope(payload=b"x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(ValidationRejected) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    assert refusal.value.reason == MALFORMED_ENVELOPE
    assert [v.field for v in refusal.value.violations] == ["payload"]


def test_malformed_envelope_names_every_field_and_echoes_no_value(pki: Pki) -> None:
    envelope = pki.envelope()
    secret_purpose = "Jane Doe born 1990-01-01 " * 10
    envelope.purpose = secret_purpose
    envelope.message_id = envelope.message_id.upper()
    envelope.exchange_type = 99  # type: ignore[assignment]
    envelope.ClearField("agreement")
    envelope.created_at.nanos += 1
    envelope.sender_state = "be"
    with pytest.raises(ValidationRejected) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    error = refusal.value
    assert error.reason == MALFORMED_ENVELOPE
    assert {v.field for v in error.violations} == {
        "agreement",
        "agreement.id",
        "agreement.version",
        "agreement.digest",
        "message_id",
        "exchange_type",
        "purpose",
        "sender_state",
        "created_at",
    }
    assert "Jane" not in error.message
    assert envelope.message_id not in error.message


def test_message_id_in_another_spelling_is_refused(pki: Pki) -> None:
    # The inbox's replay check compares ids; one id must have exactly one spelling.
    envelope = pki.envelope()
    envelope.message_id = "{" + envelope.message_id + "}"
    with pytest.raises(ValidationRejected) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    assert [v.field for v in refusal.value.violations] == ["message_id"]


def test_envelope_without_signature_is_malformed(pki: Pki) -> None:
    envelope = pki.envelope()
    envelope.ClearField("signature")
    with pytest.raises(ValidationRejected) as refusal:
        pki.verifier().verify(envelope, peer_state=SENDER)
    assert [v.field for v in refusal.value.violations] == ["signature"]


def test_header_refuses_sub_millisecond_or_naive_times(pki: Pki) -> None:
    with pytest.raises(ValueError, match="millisecond precision"):
        pki.header(created_at=pki.now + timedelta(microseconds=1))
    with pytest.raises(ValueError, match="timezone-aware UTC"):
        pki.header(created_at=pki.now.replace(tzinfo=None))


def test_signing_from_worker_threads_shares_one_signer(pki: Pki) -> None:
    headers = [pki.header(message_id=str(uuid.uuid4())) for _ in range(32)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        envelopes = list(pool.map(lambda h: pki.sender.signer.sign(h, b"p"), headers))
    verifier = pki.verifier()
    for header, envelope in zip(headers, envelopes, strict=True):
        assert verifier.verify(envelope, peer_state=SENDER).header == header


def test_verifier_refuses_a_bundle_filed_under_the_wrong_state(pki: Pki) -> None:
    with pytest.raises(ValueError, match="bundle for BE is the bundle of DE"):
        EnvelopeVerifier(
            OWN,
            {SENDER: pki.other.bundle},
            window_s=WINDOW_S,
            max_payload_bytes=MAX_PAYLOAD_BYTES,
            clock=lambda: pki.now,
        )


def test_signatures_interoperate_with_an_independent_jws_implementation(pki: Pki) -> None:
    envelope = pki.envelope()
    canonical = signing_input(pki.header(message_id=envelope.message_id), envelope.payload)
    signer = pki.sender.signer
    certificate = pki.sender.bundle.signing_certificate
    # Ours verifies under pyjwt's RFC 7797 reading...
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    jwt.api_jws.PyJWS(algorithms=["ES256"]).decode_complete(
        envelope.signature,
        key=public,
        algorithms=["ES256"],
        detached_payload=canonical,
    )
    # ...and a token pyjwt wrote, its header JSON spelt its own way, verifies here.
    envelope.signature = jwt.api_jws.encode(
        canonical,
        _es256_key(signer),
        algorithm="ES256",
        headers={"typ": "pouch-envelope+jws", "kid": signer.kid, "crit": ["b64"], "b64": False},
        is_payload_detached=True,
        sort_headers=False,
    )
    assert envelope.signature.split(".")[0] != pki.envelope().signature.split(".")[0]
    pki.verifier().verify(envelope, peer_state=SENDER)


@pytest.mark.parametrize("cut", ["one byte short", "one byte long", "not base64url"])
def test_a_signature_of_the_wrong_length_or_encoding_is_refused(pki: Pki, cut: str) -> None:
    envelope = pki.envelope()
    protected, _, signature = envelope.signature.partition("..")
    raw = base64.urlsafe_b64decode(signature + "==")
    if cut == "one byte short":
        raw = raw[:-1]
    elif cut == "one byte long":
        raw += b"\x00"
    encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    envelope.signature = f"{protected}..{encoded if cut != 'not base64url' else 'A'}"
    assert _refused(pki, envelope) == ENVELOPE_SIGNATURE


def test_the_digest_given_with_a_signature_is_the_one_recomputed_from_the_envelope(
    pki: Pki,
) -> None:
    header = pki.header()
    envelope, digest = pki.sender.signer.sign_with_digest(header, b"\x0a\x05birth")
    assert digest == envelope_digest(envelope)
    assert digest == pki.verifier().verify(envelope, peer_state=SENDER).digest
