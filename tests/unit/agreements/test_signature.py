"""Agreement signatures: ES256 raw r||s, signing key only, verification fails closed."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.agreements import EXCHANGES_VALIDATOR, load_agreement
from gateway.pki import StateDirectory, certificate_fingerprint, load_certificate
from gateway.pki.agreement_signature import AgreementSigner, verify_agreement_signature
from tests.unit.agreements import agreement_text, bundle_of, make_state, sign_as, write_agreement


@pytest.fixture(scope="module")
def at_be(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StateDirectory, StateDirectory]]:
    """AT's and BE's PKIs, made once and only read (about 60 ms; for each of 6 tests if
    it were per test)."""
    root = tmp_path_factory.mktemp("pki")
    yield make_state("AT", root / "at"), make_state("BE", root / "be")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_signature_is_jws_es256_raw_r_s(at_be: tuple[StateDirectory, StateDirectory]) -> None:
    at, _ = at_be
    signer = AgreementSigner.load(at.signing_key, at.signing_cert)
    signature = signer.sign(b"canonical bytes")
    assert "=" not in signature
    raw = _unb64url(signature)
    assert len(raw) == 64
    # Any ES256 verifier accepts it once r and s are DER-wrapped again.
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = load_certificate(at.signing_cert).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(der, b"canonical bytes", ec.ECDSA(hashes.SHA256()))
    assert signer.state == "AT"
    assert signer.key_id == certificate_fingerprint(load_certificate(at.signing_cert))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-2] + ("AA" if s[-2:] != "AA" else "BB"),
        lambda s: s + "AA",
        lambda s: s[:10],
        lambda s: s.replace(s[0], "+", 1),
        lambda s: "",
        lambda s: "A" * 86,
    ],
)
def test_malformed_or_altered_signature_does_not_verify(
    at_be: tuple[StateDirectory, StateDirectory], mangle: Callable[[str], str]
) -> None:
    at, _ = at_be
    signature = AgreementSigner.load(at.signing_key, at.signing_cert).sign(b"data")
    certificate = load_certificate(at.signing_cert)
    assert verify_agreement_signature(certificate, b"data", signature)
    assert not verify_agreement_signature(certificate, b"data", mangle(signature))
    assert not verify_agreement_signature(certificate, b"other data", signature)


def test_signature_by_another_state_does_not_verify(
    at_be: tuple[StateDirectory, StateDirectory],
) -> None:
    at, be = at_be
    signature = AgreementSigner.load(be.signing_key, be.signing_cert).sign(b"data")
    assert not verify_agreement_signature(load_certificate(at.signing_cert), b"data", signature)


def test_audit_certificate_cannot_verify(at_be: tuple[StateDirectory, StateDirectory]) -> None:
    at, _ = at_be
    signature = AgreementSigner.load(at.signing_key, at.signing_cert).sign(b"data")
    assert not verify_agreement_signature(load_certificate(at.audit_cert), b"data", signature)


def test_signing_keeps_the_file_and_replaces_only_the_signature_block(
    at_be: tuple[StateDirectory, StateDirectory], tmp_path: Path
) -> None:
    at, be = at_be
    pins = {"AT": bundle_of(at).digest, "BE": bundle_of(be).digest}
    original = agreement_text(bundles=pins)
    path = write_agreement(tmp_path, original)
    digest = load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR).digest

    sign_as(path, be)
    sign_as(path, at)
    sign_as(path, at)  # re-signing replaces, never duplicates

    text = path.read_text(encoding="utf-8")
    assert text.startswith(original)
    assert text.count('- state: "AT"') == 1
    loaded = load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
    assert loaded.digest == digest
    assert [s.state for s in loaded.agreement.signatures] == ["AT", "BE"]


def test_signing_moves_an_existing_block_from_the_middle(
    at_be: tuple[StateDirectory, StateDirectory], tmp_path: Path
) -> None:
    at, be = at_be
    pins = {"AT": bundle_of(at).digest, "BE": bundle_of(be).digest}
    text = agreement_text(bundles=pins).replace(
        "retention_days: 30\n", "signatures: []  # none yet\nretention_days: 30\n"
    )
    path = write_agreement(tmp_path, text)
    digest = load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR).digest
    sign_as(path, at)
    loaded = load_agreement(path, exchanges_validator=EXCHANGES_VALIDATOR)
    assert loaded.digest == digest
    assert [s.state for s in loaded.agreement.signatures] == ["AT"]
    assert "# none yet" in path.read_text(encoding="utf-8")
