"""``pouch pki renew-ca``: a new CA for the same state, certified by the old one, every
certificate re-issued under it for the same key, and the next bundle announcing it.

These tests defend that the new CA key never lands in the state directory (nor the old
one stays there), that the cross certificate certifies exactly the new CA and no more
than the old CA's life, that the next bundle is one a partner pinning the old CA takes,
and that nothing the gateway reads changes before ``--complete``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509

from gateway.cli.pki import pki
from gateway.pki import StateDirectory, load_certificate, load_private_key, load_trust_bundle
from gateway.pki.bundle_chain import check_successor
from gateway.pki.ca_renewal import (
    CROSS_CERTIFICATE,
    RENEWAL,
    complete_ca_renewal,
    prepare_ca_renewal,
)
from gateway.pki.directory import state_of_ca
from gateway.pki.layout import init_state
from gateway.pki.rotation import retired_bundles

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
LATER = datetime(2025, 2, 1, 12, 0, tzinfo=UTC)


def _offline_state(tmp_path: Path, now: datetime = NOW) -> tuple[StateDirectory, Path]:
    directory = init_state(
        "BE",
        tmp_path / "be",
        dns_names=["gw.be.example"],
        ip_addresses=["127.0.0.1"],
        peer_endpoint="gw.be.example:8443",
        crl_location=None,
        now=now,
        ca_key_out=tmp_path / "be-ca",
    )
    return directory, tmp_path / "be-ca" / "ca.key"


def _is_ca(certificate: x509.Certificate) -> bool:
    return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_new_ca_is_certified_by_the_old_one_for_exactly_its_key(tmp_path: Path) -> None:
    directory, old_key = _offline_state(tmp_path)
    old_ca = load_certificate(directory.ca_cert)

    renewal = prepare_ca_renewal(
        directory.root, ca_key=old_key, ca_key_out=tmp_path / "be-ca-2", now=LATER
    )

    new_ca = load_certificate(renewal.renewal / "ca.crt")
    cross = load_certificate(renewal.renewal / CROSS_CERTIFICATE)
    assert state_of_ca(new_ca) == "BE"
    assert new_ca.public_key() != old_ca.public_key()
    new_ca.verify_directly_issued_by(new_ca)
    cross.verify_directly_issued_by(old_ca)
    assert cross.subject == new_ca.subject
    assert cross.public_key() == new_ca.public_key()
    assert _is_ca(cross)
    assert old_ca.not_valid_before_utc <= cross.not_valid_before_utc
    assert cross.not_valid_after_utc <= old_ca.not_valid_after_utc
    new_key = load_private_key(renewal.ca_key)
    assert new_key.public_key() == new_ca.public_key()
    assert renewal.ca_key.stat().st_mode & 0o077 == 0
    assert not list(directory.root.rglob("*ca*.key"))


def test_every_leaf_is_reissued_by_the_new_ca_for_the_same_key(tmp_path: Path) -> None:
    directory, old_key = _offline_state(tmp_path)
    renewal = prepare_ca_renewal(
        directory.root, ca_key=old_key, ca_key_out=tmp_path / "be-ca-2", now=LATER
    )
    new_ca = load_certificate(renewal.renewal / "ca.crt")
    for current in (directory.gateway_cert, directory.signing_cert, directory.audit_pq_cert):
        old = load_certificate(current)
        reissued = load_certificate(renewal.renewal / current.name)
        reissued.verify_directly_issued_by(new_ca)
        assert reissued.public_key() == old.public_key()
        assert reissued.subject == old.subject
        assert reissued.not_valid_after_utc == old.not_valid_after_utc
        assert reissued.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ) == old.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_the_next_bundle_is_taken_by_a_partner_pinning_the_old_ca(tmp_path: Path) -> None:
    directory, old_key = _offline_state(tmp_path)
    current = load_trust_bundle(directory.bundle)
    renewal = prepare_ca_renewal(
        directory.root, ca_key=old_key, ca_key_out=tmp_path / "be-ca-2", now=LATER
    )

    following = check_successor(current, renewal.next_bundle.read_bytes(), LATER)

    assert following.ca_certificate == load_certificate(renewal.renewal / "ca.crt")
    assert following.ca_cross_certificate == load_certificate(renewal.renewal / CROSS_CERTIFICATE)
    assert "ca_cross_certificate" in following.body()
    # Nothing the gateway reads changed yet.
    assert load_trust_bundle(directory.bundle) == current


def test_completing_puts_the_new_ca_in_force_and_keeps_the_old_bundle_for_agreements(
    tmp_path: Path,
) -> None:
    directory, old_key = _offline_state(tmp_path)
    old_bundle = load_trust_bundle(directory.bundle)
    signing_key = directory.signing_key.read_bytes()
    renewal = prepare_ca_renewal(
        directory.root, ca_key=old_key, ca_key_out=tmp_path / "be-ca-2", now=LATER
    )
    new_ca = load_certificate(renewal.renewal / "ca.crt")

    retired = complete_ca_renewal(directory.root)

    assert load_certificate(directory.ca_cert) == new_ca
    assert load_trust_bundle(directory.bundle).ca_certificate == new_ca
    load_certificate(directory.gateway_cert).verify_directly_issued_by(new_ca)
    assert directory.signing_key.read_bytes() == signing_key
    assert not (directory.root / RENEWAL).exists()
    assert (retired / CROSS_CERTIFICATE).exists()
    assert retired_bundles(directory) == (old_bundle,)


def test_the_new_ca_key_inside_the_state_directory_is_refused(tmp_path: Path) -> None:
    directory, old_key = _offline_state(tmp_path)
    prepare_ca_renewal(directory.root, ca_key=old_key, ca_key_out=tmp_path / "out", now=LATER)
    complete_ca_renewal(directory.root)

    with pytest.raises(ValueError, match="inside the state directory"):
        prepare_ca_renewal(
            directory.root, ca_key=old_key, ca_key_out=directory.root / "keys", now=LATER
        )


def test_a_state_directory_holding_its_ca_key_is_refused(tmp_path: Path) -> None:
    directory = init_state(
        "BE",
        tmp_path / "be",
        dns_names=["gw.be.example"],
        ip_addresses=[],
        peer_endpoint="gw.be.example:8443",
        crl_location=None,
        now=NOW,
    )
    with pytest.raises(ValueError, match="move the CA key offline"):
        prepare_ca_renewal(
            directory.root, ca_key=directory.ca_key, ca_key_out=tmp_path / "out", now=LATER
        )


def test_a_second_renewal_before_the_first_is_complete_is_refused(tmp_path: Path) -> None:
    directory, old_key = _offline_state(tmp_path)
    prepare_ca_renewal(directory.root, ca_key=old_key, ca_key_out=tmp_path / "a", now=LATER)
    with pytest.raises(FileExistsError):
        prepare_ca_renewal(directory.root, ca_key=old_key, ca_key_out=tmp_path / "b", now=LATER)


def _run(*args: str) -> Result:
    return CliRunner().invoke(pki, list(args))


def test_renew_ca_command_then_complete(tmp_path: Path) -> None:
    # The command reads the wall clock: the state is made now, so its leaves are valid.
    directory, old_key = _offline_state(tmp_path, datetime.now(UTC))
    refused = _run("renew-ca", "--state-dir", str(directory.root), "--ca-key", str(old_key))
    assert refused.exit_code != 0
    assert "--ca-key-out" in refused.output

    out = tmp_path / "be-ca-2"
    result = _run(
        "renew-ca",
        "--state-dir",
        str(directory.root),
        "--ca-key",
        str(old_key),
        "--ca-key-out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert f"new CA key: {out / 'ca.key'}" in result.output
    assert "bundle.next.json" in result.output

    done = _run("renew-ca", "--state-dir", str(directory.root), "--complete")
    assert done.exit_code == 0, done.output
    assert load_certificate(directory.ca_cert).public_key() == (
        load_private_key(out / "ca.key").public_key()
    )
