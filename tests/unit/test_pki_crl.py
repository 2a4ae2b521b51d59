"""CRLs: issuing, revoking, and trusting only the CA's own, current list."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.pki import (
    CrlWatcher,
    RevocationList,
    StateAuthority,
    StateDirectory,
    build_crl,
    init_state,
    load_certificate,
    refresh_crl,
    revoke,
)

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def fr_dir(tmp_path: Path) -> StateDirectory:
    return init_state(
        "FR",
        tmp_path / "fr",
        dns_names=["gw.fr.example"],
        ip_addresses=[],
        peer_endpoint="gw.fr.example:8443",
        crl_location="https://pki.fr.example/crl.pem",
        now=NOW,
    )


def _pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _ca(directory: StateDirectory) -> x509.Certificate:
    return load_certificate(directory.ca_cert)


def test_build_crl_lists_each_revoked_serial_once() -> None:
    fr = StateAuthority.create("FR", now=NOW)
    crl = build_crl(fr, [(11, NOW), (12, NOW), (11, NOW)], now=NOW)
    revocations = RevocationList.verify(crl, fr.ca_cert)
    assert revocations.serials == frozenset({11, 12})
    assert revocations.is_revoked(11) and not revocations.is_revoked(13)
    assert revocations.next_update == NOW + timedelta(days=7)


def test_crl_signed_by_other_state_is_refused() -> None:
    fr = StateAuthority.create("FR", now=NOW)
    de = StateAuthority.create("DE", now=NOW)
    with pytest.raises(ValueError, match="not by the expected CA"):
        RevocationList.verify(build_crl(de, [], now=NOW), fr.ca_cert)


def test_crl_from_impostor_ca_with_the_same_name_is_refused() -> None:
    fr = StateAuthority.create("FR", now=NOW)
    impostor = StateAuthority.create("FR", now=NOW)
    assert impostor.ca_cert.subject == fr.ca_cert.subject
    with pytest.raises(ValueError, match="signature does not verify"):
        RevocationList.verify(build_crl(impostor, [], now=NOW), fr.ca_cert)


def test_garbage_is_not_a_crl() -> None:
    fr = StateAuthority.create("FR", now=NOW)
    with pytest.raises(ValueError, match="not a PEM CRL"):
        RevocationList.from_pem(
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", fr.ca_cert
        )


def test_revocation_list_is_stale_after_next_update() -> None:
    fr = StateAuthority.create("FR", now=NOW)
    revocations = RevocationList.verify(build_crl(fr, [], now=NOW, next_update_days=1), fr.ca_cert)
    assert not revocations.is_stale(NOW + timedelta(hours=23))
    assert revocations.is_stale(NOW + timedelta(days=1))


def test_revoke_adds_serial_and_raises_crl_number(fr_dir: StateDirectory) -> None:
    before = RevocationList.load(fr_dir.crl, _ca(fr_dir))
    revoke(fr_dir.root, 0xABC, now=NOW + timedelta(hours=1))
    after = RevocationList.load(fr_dir.crl, _ca(fr_dir))
    assert after.is_revoked(0xABC)
    assert after.crl_number == before.crl_number + 1
    entry = x509.load_pem_x509_crl(
        fr_dir.crl.read_bytes()
    ).get_revoked_certificate_by_serial_number(0xABC)
    assert entry is not None and entry.revocation_date_utc == NOW + timedelta(hours=1)


def test_revoke_is_idempotent(fr_dir: StateDirectory) -> None:
    revoke(fr_dir.root, 42, now=NOW)
    first = fr_dir.crl.read_bytes()
    revoke(fr_dir.root, 42, now=NOW + timedelta(days=1))
    assert fr_dir.crl.read_bytes() == first


def test_revoke_keeps_earlier_revocations(fr_dir: StateDirectory) -> None:
    revoke(fr_dir.root, 1, now=NOW)
    revoke(fr_dir.root, 2, now=NOW)
    assert RevocationList.load(fr_dir.crl, _ca(fr_dir)).serials == frozenset({1, 2})


def test_revoke_refuses_a_crl_on_disk_not_signed_by_the_state(fr_dir: StateDirectory) -> None:
    de = StateAuthority.create("DE", now=NOW)
    fr_dir.crl.write_bytes(_pem(build_crl(de, [], now=NOW)))
    with pytest.raises(ValueError, match="not by the expected CA"):
        revoke(fr_dir.root, 7, now=NOW)


def test_revoke_refuses_a_non_positive_serial(fr_dir: StateDirectory) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        revoke(fr_dir.root, 0, now=NOW)


def test_refresh_crl_keeps_entries_and_extends_next_update(fr_dir: StateDirectory) -> None:
    revoke(fr_dir.root, 5, now=NOW)
    refresh_crl(fr_dir.root, now=NOW + timedelta(days=6))
    revocations = RevocationList.load(fr_dir.crl, _ca(fr_dir))
    assert revocations.serials == frozenset({5})
    assert revocations.next_update == NOW + timedelta(days=13)


def test_crl_watcher_picks_up_new_revocation_without_restart(fr_dir: StateDirectory) -> None:
    watcher = CrlWatcher(fr_dir.crl, _ca(fr_dir))
    assert not watcher.current().is_revoked(99)
    revoke(fr_dir.root, 99, now=NOW)
    assert watcher.current().is_revoked(99)


def test_crl_watcher_keeps_last_good_list_when_new_file_is_forged(
    fr_dir: StateDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    revoke(fr_dir.root, 99, now=NOW)
    watcher = CrlWatcher(fr_dir.crl, _ca(fr_dir))
    impostor = StateAuthority.create("FR", now=NOW)
    with caplog.at_level(logging.WARNING, logger="gateway.pki.crl"):
        fr_dir.crl.write_bytes(_pem(build_crl(impostor, [], now=NOW, crl_number=1000)))
        assert watcher.current().is_revoked(99)
    assert "keeping the previous CRL" in caplog.text


def test_crl_watcher_keeps_last_good_list_when_file_is_garbage_or_gone(
    fr_dir: StateDirectory,
) -> None:
    revoke(fr_dir.root, 99, now=NOW)
    watcher = CrlWatcher(fr_dir.crl, _ca(fr_dir))
    fr_dir.crl.write_bytes(b"not a crl")
    assert watcher.current().is_revoked(99)
    fr_dir.crl.unlink()
    assert watcher.current().is_revoked(99)


def test_crl_watcher_refuses_rollback_to_an_older_crl(fr_dir: StateDirectory) -> None:
    old = fr_dir.crl.read_bytes()
    revoke(fr_dir.root, 99, now=NOW)
    watcher = CrlWatcher(fr_dir.crl, _ca(fr_dir))
    fr_dir.crl.write_bytes(old)
    assert watcher.current().is_revoked(99)


def test_crl_watcher_refuses_to_start_without_a_valid_crl(fr_dir: StateDirectory) -> None:
    de = StateAuthority.create("DE", now=NOW)
    with pytest.raises(ValueError, match="not by the expected CA"):
        CrlWatcher(fr_dir.crl, de.ca_cert)
    fr_dir.crl.unlink()
    with pytest.raises(FileNotFoundError):
        CrlWatcher(fr_dir.crl, _ca(fr_dir))
