"""pouch pki rotate's two steps: the next key beside the current one, then in its place
with the current one kept under retired/."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from gateway.pki import init_state, load_certificate, load_trust_bundle
from gateway.pki.authority import StateAuthority
from gateway.pki.bundle import sign_bundle
from gateway.pki.bundle_chain import check_successor
from gateway.pki.directory import StateDirectory
from gateway.pki.rotation import RotatedKey, complete_rotation, prepare_rotation

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


def _state(root: Path) -> StateDirectory:
    return init_state(
        "BE",
        root / "BE",
        dns_names=["gw.be.example"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="gw.be.example:8443",
        crl_location=None,
        now=NOW,
    )


@pytest.mark.parametrize("what", [RotatedKey.SIGNING, RotatedKey.AUDIT])
def test_the_next_bundle_succeeds_the_current_one_with_only_the_rotated_key_new(
    tmp_path: Path, what: RotatedKey
) -> None:
    directory = _state(tmp_path)
    current = load_trust_bundle(directory.bundle)
    files = prepare_rotation(directory.root, what, now=NOW)
    assert files.next_bundle is not None

    following = check_successor(current, files.next_bundle.read_bytes(), NOW)

    rotated = f"{what.value}_certificate"
    assert getattr(following, rotated) == load_certificate(files.next_cert)
    for kept in ("signing_certificate", "audit_certificate", "witness_certificate"):
        if kept != rotated:
            assert getattr(following, kept) == getattr(current, kept)
    # Nothing the gateway reads changed yet.
    assert load_trust_bundle(directory.bundle) == current


def test_a_second_rotation_before_the_first_is_complete_is_refused(tmp_path: Path) -> None:
    directory = _state(tmp_path)
    prepare_rotation(directory.root, RotatedKey.SIGNING, now=NOW)
    with pytest.raises(FileExistsError):
        prepare_rotation(directory.root, RotatedKey.AUDIT, now=NOW)


def test_completing_puts_the_next_key_in_force_and_keeps_the_old_one(tmp_path: Path) -> None:
    directory = _state(tmp_path)
    old = load_certificate(directory.signing_cert)
    files = prepare_rotation(directory.root, RotatedKey.SIGNING, now=NOW)
    new = load_certificate(files.next_cert)
    assert files.next_bundle is not None
    next_bundle = files.next_bundle.read_bytes()

    kept = complete_rotation(directory.root, RotatedKey.SIGNING)

    assert load_certificate(directory.signing_cert) == new
    assert load_certificate(kept) == old
    assert kept.with_suffix(".key").exists()
    assert directory.bundle.read_bytes() == next_bundle
    assert not files.next_cert.exists() and not files.next_key.exists()


def test_a_tls_rotation_needs_no_new_bundle_and_keeps_the_hosts(tmp_path: Path) -> None:
    directory = _state(tmp_path)
    bundle = directory.bundle.read_bytes()
    old = load_certificate(directory.gateway_cert)
    files = prepare_rotation(directory.root, RotatedKey.TLS, now=NOW)
    assert files.next_bundle is None

    kept = complete_rotation(directory.root, RotatedKey.TLS)

    new = load_certificate(directory.gateway_cert)
    assert directory.bundle.read_bytes() == bundle
    assert load_certificate(kept) == old
    assert new != old
    assert new.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ) == old.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_completing_without_a_prepared_rotation_is_refused(tmp_path: Path) -> None:
    directory = _state(tmp_path)
    with pytest.raises(FileNotFoundError):
        complete_rotation(directory.root, RotatedKey.SIGNING)


def test_a_signing_rotation_renews_the_ml_dsa_key_too_and_the_next_bundle_names_both(
    tmp_path: Path,
) -> None:
    directory = _state(tmp_path)
    current = load_trust_bundle(directory.bundle)
    old_pq = load_certificate(directory.signing_pq_cert)
    files = prepare_rotation(directory.root, RotatedKey.SIGNING, now=NOW)
    assert files.next_bundle is not None and files.post_quantum is not None
    assert files.post_quantum.next_key.exists()

    following = check_successor(current, files.next_bundle.read_bytes(), NOW)

    assert following.signing_certificate == load_certificate(files.next_cert)
    assert following.signing_pq_certificate == load_certificate(files.post_quantum.next_cert)
    assert following.signing_pq_certificate != old_pq
    assert following.audit_pq_certificate == current.audit_pq_certificate

    complete_rotation(directory.root, RotatedKey.SIGNING)

    assert load_certificate(directory.signing_pq_cert) == following.signing_pq_certificate
    kept = directory.root / "retired" / f"signing-pq-{old_pq.serial_number:x}.crt"
    assert load_certificate(kept) == old_pq and kept.with_suffix(".key").exists()
    assert not files.post_quantum.next_cert.exists()
    assert not files.post_quantum.next_key.exists()


def test_an_audit_rotation_leaves_the_ml_dsa_signing_key_alone(tmp_path: Path) -> None:
    directory = _state(tmp_path)
    files = prepare_rotation(directory.root, RotatedKey.AUDIT, now=NOW)
    assert files.post_quantum is None and files.next_bundle is not None
    following = load_trust_bundle(files.next_bundle)
    assert following.signing_pq_certificate == load_certificate(directory.signing_pq_cert)


def test_a_rotation_prepared_for_the_es256_key_alone_completes_keeping_the_ml_dsa_key(
    tmp_path: Path,
) -> None:
    directory = _state(tmp_path)
    pq = load_certificate(directory.signing_pq_cert)
    files = prepare_rotation(directory.root, RotatedKey.SIGNING, now=NOW)
    assert files.post_quantum is not None and files.next_bundle is not None
    # As an earlier release prepared it: no next ML-DSA-44 key, the bundle naming the
    # one in force.
    files.post_quantum.next_cert.unlink()
    files.post_quantum.next_key.unlink()
    current = load_trust_bundle(directory.bundle)
    authority = StateAuthority.load(directory.root)
    files.next_bundle.write_bytes(
        sign_bundle(
            authority,
            signing_certificate=load_certificate(files.next_cert),
            audit_certificate=current.audit_certificate,
            witness_certificate=current.witness_certificate,
            audit_pq_certificate=current.audit_pq_certificate,
            witness_pq_certificate=current.witness_pq_certificate,
            signing_pq_certificate=current.signing_pq_certificate,
            peer_endpoint=current.peer_endpoint,
            crl_location=current.crl_location,
            issued_at=NOW,
        )
    )

    complete_rotation(directory.root, RotatedKey.SIGNING)

    assert load_certificate(directory.signing_pq_cert) == pq
    assert load_trust_bundle(directory.bundle).signing_pq_certificate == pq


def test_a_signing_rotation_missing_its_next_ml_dsa_key_is_not_completed(tmp_path: Path) -> None:
    directory = _state(tmp_path)
    files = prepare_rotation(directory.root, RotatedKey.SIGNING, now=NOW)
    assert files.post_quantum is not None
    files.post_quantum.next_key.unlink()
    with pytest.raises(FileNotFoundError):
        complete_rotation(directory.root, RotatedKey.SIGNING)
    assert files.next_cert.exists()
