"""The state CA, what it issues, key files and the state directory."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki import (
    StateAuthority,
    StateDirectory,
    certificate_fingerprint,
    client_uri,
    gateway_uri,
    init_state,
    issue_client,
    load_certificate,
    load_private_key,
    seconds_to_expiry,
    state_of_uri,
    validate_client_name,
    validate_state_code,
    write_private_key,
    write_public_file,
    x5t_s256,
)

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def fr() -> StateAuthority:
    return StateAuthority.create("FR", now=NOW)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _san_uris(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def _init(root: Path) -> StateDirectory:
    return init_state(
        "FR",
        root,
        dns_names=["gw.fr.example"],
        ip_addresses=["192.0.2.1"],
        peer_endpoint="gw.fr.example:8443",
        crl_location=None,
        now=NOW,
    )


# --- names -------------------------------------------------------------------


@pytest.mark.parametrize("code", ["fr", "FRA", "F", "", "F1", "FR\n", "ÉU", "ＦＲ"])
def test_state_code_that_is_not_two_ascii_uppercase_letters_is_refused(code: str) -> None:
    with pytest.raises(ValueError, match="ISO 3166-1 alpha-2"):
        validate_state_code(code)


def test_state_code_of_two_ascii_uppercase_letters_is_accepted() -> None:
    assert validate_state_code("DE") == "DE"


@pytest.mark.parametrize("name", ["", "-svc", "Svc", "a_b", "a/b", "..", "a" * 64, "é"])
def test_client_name_that_could_escape_or_confuse_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"\[a-z0-9\]"):
        validate_client_name(name)


def test_uris_name_state_and_role() -> None:
    assert gateway_uri("FR") == "urn:pouch:state:FR:gateway"
    assert client_uri("FR", "registry-1") == "urn:pouch:state:FR:client:registry-1"
    assert state_of_uri("urn:pouch:state:DE:signing") == "DE"
    assert state_of_uri("urn:pouch:state:DEX:gateway") is None
    assert state_of_uri("https://example.org") is None


# --- the CA and what it issues -------------------------------------------------


def test_ca_is_self_signed_root_limited_to_signing_leaves(fr: StateAuthority) -> None:
    ca = fr.ca_cert
    ca.verify_directly_issued_by(ca)
    assert ca.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "FR"
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "Pouch state root CA FR"
    )
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert isinstance(fr.ca_key.curve, ec.SECP256R1)
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_gateway_certificate_serves_and_calls_partners_as_its_state(
    fr: StateAuthority,
) -> None:
    issued = fr.issue_gateway_certificate(
        dns_names=["gw.fr.example"], ip_addresses=["192.0.2.1"], now=NOW
    )
    cert = issued.certificate
    assert _san_uris(cert) == ["urn:pouch:state:FR:gateway"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.fr.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert isinstance(issued.private_key, ec.EllipticCurvePrivateKey)
    assert cert.public_key() == issued.private_key.public_key()


def test_client_certificate_cannot_serve_tls(fr: StateAuthority) -> None:
    cert = fr.issue_client_certificate("registry", now=NOW).certificate
    assert _san_uris(cert) == ["urn:pouch:state:FR:client:registry"]
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_signing_certificate_cannot_authenticate_tls(fr: StateAuthority) -> None:
    cert = fr.issue_signing_certificate(now=NOW).certificate
    assert _san_uris(cert) == ["urn:pouch:state:FR:signing"]
    assert _eku(cert) == set()
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_audit_key_is_ed25519_and_certified_for_audit_only(fr: StateAuthority) -> None:
    issued = fr.issue_audit_certificate(now=NOW)
    assert isinstance(issued.private_key, ed25519.Ed25519PrivateKey)
    assert isinstance(issued.certificate.public_key(), ed25519.Ed25519PublicKey)
    assert _san_uris(issued.certificate) == ["urn:pouch:state:FR:audit"]
    assert _eku(issued.certificate) == set()


def test_issued_certificates_chain_to_the_ca_by_signature_and_key_id(
    fr: StateAuthority,
) -> None:
    cert = fr.issue_client_certificate("registry", now=NOW).certificate
    cert.verify_directly_issued_by(fr.ca_cert)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = fr.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_serials_are_random_and_distinct(fr: StateAuthority) -> None:
    serials = {
        fr.issue_client_certificate("c", now=NOW).certificate.serial_number for _ in range(8)
    }
    assert len(serials) == 8
    assert all(s.bit_length() > 64 for s in serials)


def test_ca_can_forge_a_san_claiming_another_state_for_hostile_tests(
    fr: StateAuthority,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = fr.issue_certificate(
        common_name="impostor",
        san_uris=[gateway_uri("DE")],
        server_auth=True,
        client_auth=True,
        now=NOW,
        validity_days=1,
        public_key=key.public_key(),
    )
    assert issued.private_key is None
    issued.certificate.verify_directly_issued_by(fr.ca_cert)
    assert _san_uris(issued.certificate) == ["urn:pouch:state:DE:gateway"]


def test_certificate_issued_in_the_past_is_already_expired(fr: StateAuthority) -> None:
    cert = fr.issue_client_certificate(
        "old", now=NOW - timedelta(days=10), validity_days=1
    ).certificate
    assert seconds_to_expiry(cert, NOW) == pytest.approx(-9 * 86400)


def test_certificate_may_not_outlive_its_ca() -> None:
    short_ca = StateAuthority.create("FR", now=NOW, validity_days=30)
    with pytest.raises(ValueError, match="after the CA"):
        short_ca.issue_client_certificate("registry", now=NOW, validity_days=31)


def test_naive_datetime_is_refused(fr: StateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fr.issue_client_certificate("registry", now=datetime(2025, 1, 1))


def test_authority_refuses_a_key_that_does_not_match_its_ca(fr: StateAuthority) -> None:
    with pytest.raises(ValueError, match="does not match"):
        StateAuthority("FR", fr.ca_cert, ec.generate_private_key(ec.SECP256R1()))


def test_authority_refuses_a_ca_of_another_state(fr: StateAuthority) -> None:
    with pytest.raises(ValueError, match="names state FR, not DE"):
        StateAuthority("DE", fr.ca_cert, fr.ca_key)


def test_authority_refuses_a_leaf_posing_as_ca(fr: StateAuthority) -> None:
    leaf = fr.issue_client_certificate("registry", now=NOW)
    assert isinstance(leaf.private_key, ec.EllipticCurvePrivateKey)
    with pytest.raises(ValueError, match="CA"):
        StateAuthority("FR", leaf.certificate, leaf.private_key)


# --- key and certificate files ---------------------------------------------------


def test_private_keys_are_written_mode_0600(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "k.key"
    write_private_key(path, ec.generate_private_key(ec.SECP256R1()))
    assert _mode(path) == 0o600
    write_private_key(path, ed25519.Ed25519PrivateKey.generate())
    assert _mode(path) == 0o600
    assert isinstance(load_private_key(path), ed25519.Ed25519PrivateKey)


def test_public_files_are_mode_0644_even_under_strict_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        write_public_file(tmp_path / "ca.crt", b"data")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "ca.crt") == 0o644


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    write_public_file(tmp_path / "a", b"1")
    write_public_file(tmp_path / "a", b"2")
    write_private_key(tmp_path / "k", ec.generate_private_key(ec.SECP256R1()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "k"]
    assert (tmp_path / "a").read_bytes() == b"2"


def test_write_without_overwrite_never_replaces_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "ca.key"
    path.write_bytes(b"original")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_private_key(path, ec.generate_private_key(ec.SECP256R1()), overwrite=False)
    assert path.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["ca.key"]


def test_private_key_of_a_disallowed_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p384.key"
    path.write_bytes(
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="not allowed"):
        load_private_key(path)


def test_certificate_file_with_two_certificates_is_refused(
    tmp_path: Path, fr: StateAuthority
) -> None:
    pem = fr.ca_cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "two.crt").write_bytes(pem + pem)
    with pytest.raises(ValueError, match="exactly one"):
        load_certificate(tmp_path / "two.crt")


def test_fingerprint_and_rfc8705_thumbprint_hash_the_der(fr: StateAuthority) -> None:
    der = fr.ca_cert.public_bytes(serialization.Encoding.DER)
    assert certificate_fingerprint(fr.ca_cert) == "sha256:" + hashlib.sha256(der).hexdigest()
    thumbprint = x5t_s256(fr.ca_cert)
    assert "=" not in thumbprint
    assert base64.urlsafe_b64decode(thumbprint + "=") == hashlib.sha256(der).digest()


# --- the state directory ---------------------------------------------------------


def test_init_state_creates_every_file_with_safe_modes(tmp_path: Path) -> None:
    directory = _init(tmp_path / "fr")
    for key in (directory.ca_key, directory.gateway_key, directory.signing_key):
        assert _mode(key) == 0o600
        assert isinstance(load_private_key(key), ec.EllipticCurvePrivateKey)
    assert isinstance(load_private_key(directory.audit_key), ed25519.Ed25519PrivateKey)
    for public in (directory.ca_cert, directory.gateway_cert, directory.crl, directory.bundle):
        assert _mode(public) == 0o644
    assert directory.state == "FR"
    assert directory.clients.is_dir()
    assert _san_uris(load_certificate(directory.gateway_cert)) == [gateway_uri("FR")]


def test_authority_loads_back_from_its_state_directory(tmp_path: Path) -> None:
    directory = _init(tmp_path / "fr")
    authority = StateAuthority.load(directory.root)
    assert authority.state == "FR"
    assert authority.ca_cert == load_certificate(directory.ca_cert)


def test_init_refuses_to_overwrite_existing_ca(tmp_path: Path) -> None:
    directory = _init(tmp_path / "fr")
    ca_before = directory.ca_key.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite a state CA"):
        _init(tmp_path / "fr")
    assert directory.ca_key.read_bytes() == ca_before


def test_init_with_invalid_input_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="peer endpoint"):
        init_state(
            "FR",
            tmp_path / "fr",
            dns_names=[],
            ip_addresses=[],
            peer_endpoint="no-port",
            crl_location=None,
            now=NOW,
        )
    assert not (tmp_path / "fr").exists()


def test_issue_client_writes_a_client_certificate_of_this_state(tmp_path: Path) -> None:
    directory = _init(tmp_path / "fr")
    cert_path, key_path = issue_client(directory.root, "registry", now=NOW, validity_days=30)
    assert cert_path == directory.clients / "registry.crt"
    assert _mode(key_path) == 0o600
    cert = load_certificate(cert_path)
    cert.verify_directly_issued_by(load_certificate(directory.ca_cert))
    assert _san_uris(cert) == [client_uri("FR", "registry")]
    assert seconds_to_expiry(cert, NOW) == pytest.approx(30 * 86400)


def test_issue_client_does_not_silently_replace_a_client(tmp_path: Path) -> None:
    directory = _init(tmp_path / "fr")
    cert_path, _ = issue_client(directory.root, "registry", now=NOW)
    first = cert_path.read_bytes()
    with pytest.raises(FileExistsError, match="issued before"):
        issue_client(directory.root, "registry", now=NOW)
    assert cert_path.read_bytes() == first
    issue_client(directory.root, "registry", now=NOW, replace=True)
    assert cert_path.read_bytes() != first


def test_issue_client_refuses_a_name_that_escapes_clients_dir(tmp_path: Path) -> None:
    directory = _init(tmp_path / "fr")
    with pytest.raises(ValueError, match="invalid client name"):
        issue_client(directory.root, "../ca", now=NOW)
