"""``pouch pki`` with the CA kept offline, and server certificates for registries.

The CA key that signs a state's certificates must not sit where the gateway reads: a
stolen gateway host would mint certificates for the state. These tests defend that an
offline CA leaves no key in the state directory, that every signing command then needs
the key by name (and refuses another state's), and that a registry's server certificate
can serve TLS but never authenticate to a gateway.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.cli.pki import pki
from gateway.pki import RevocationList, StateDirectory, load_certificate, load_private_key


def _run(*args: str) -> Result:
    return CliRunner().invoke(pki, list(args))


def _ok(*args: str) -> Result:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _refused(*args: str) -> Result:
    result = _run(*args)
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def _init_offline(tmp_path: Path, state: str = "AT") -> tuple[StateDirectory, Path]:
    root, key_dir = tmp_path / state.lower(), tmp_path / f"{state.lower()}-ca"
    _ok(
        "init",
        "--state",
        state,
        "--out",
        str(root),
        "--dns",
        "gw.example",
        "--peer-endpoint",
        "gw.example:7444",
        "--offline-ca",
        "--ca-key-out",
        str(key_dir),
    )
    return StateDirectory(root), key_dir / "ca.key"


def _revoked(directory: StateDirectory) -> frozenset[int]:
    return RevocationList.load(directory.crl, load_certificate(directory.ca_cert)).serials


def test_offline_ca_leaves_no_ca_key_in_the_state_directory(tmp_path: Path) -> None:
    directory, ca_key = _init_offline(tmp_path)
    assert not directory.ca_key.exists()
    assert ca_key.stat().st_mode & 0o777 == 0o600
    assert ca_key.parent.stat().st_mode & 0o777 == 0o700
    key = load_private_key(ca_key)
    assert key.public_key() == load_certificate(directory.ca_cert).public_key()
    for path in (directory.ca_cert, directory.crl, directory.bundle, directory.gateway_key):
        assert path.is_file()


def test_offline_ca_refuses_a_key_directory_inside_the_state_directory(tmp_path: Path) -> None:
    result = _refused(
        "init",
        *("--state", "AT", "--out", str(tmp_path / "at"), "--peer-endpoint", "gw.example:7444"),
        *("--offline-ca", "--ca-key-out", str(tmp_path / "at" / "offline")),
    )
    assert "inside the state directory" in result.output
    assert not (tmp_path / "at").exists()


def test_offline_ca_and_its_key_directory_go_together(tmp_path: Path) -> None:
    common = ("--state", "AT", "--out", str(tmp_path / "at"), "--peer-endpoint", "gw:7444")
    assert "go together" in _refused("init", *common, "--offline-ca").output
    assert "go together" in _refused("init", *common, "--ca-key-out", str(tmp_path / "k")).output


def test_signing_commands_of_an_offline_ca_name_the_missing_key(tmp_path: Path) -> None:
    directory, _ = _init_offline(tmp_path)
    for args in (
        ("issue-client", "--state-dir", str(directory.root), "--name", "civil-registry"),
        ("issue-server", "--state-dir", str(directory.root), "--name", "registry", "--dns", "r"),
        ("revoke", "--state-dir", str(directory.root), "--serial", "0x1"),
        ("refresh-crl", "--state-dir", str(directory.root)),
    ):
        result = _refused(*args)
        assert "--ca-key" in result.output, args
    assert not directory.clients.joinpath("civil-registry.crt").exists()


def test_signing_commands_of_an_offline_ca_work_with_the_key_named(tmp_path: Path) -> None:
    directory, ca_key = _init_offline(tmp_path)
    root = str(directory.root)
    _ok("issue-client", "--state-dir", root, "--name", "civil-registry", "--ca-key", str(ca_key))
    serial = load_certificate(directory.client_cert("civil-registry")).serial_number
    _ok("revoke", "--state-dir", root, "--serial", hex(serial), "--ca-key", str(ca_key))
    assert serial in _revoked(directory)
    _ok("refresh-crl", "--state-dir", root, "--ca-key", str(ca_key))
    assert serial in _revoked(directory)
    assert not directory.ca_key.exists()


def test_another_states_ca_key_is_refused(tmp_path: Path) -> None:
    at, at_key = _init_offline(tmp_path, "AT")
    _, be_key = _init_offline(tmp_path, "BE")
    _ok("issue-client", "--state-dir", str(at.root), "--name", "one", "--ca-key", str(at_key))
    result = _refused(
        "issue-client", "--state-dir", str(at.root), "--name", "two", "--ca-key", str(be_key)
    )
    assert "not the key of the CA certificate" in result.output
    assert not at.client_cert("two").exists()


def _eku(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_server_certificate_serves_tls_for_its_names_and_cannot_authenticate_a_caller(
    tmp_path: Path,
) -> None:
    directory, ca_key = _init_offline(tmp_path)
    result = _ok(
        "issue-server",
        *("--state-dir", str(directory.root), "--name", "registry", "--ca-key", str(ca_key)),
        *("--dns", "registry.at.example", "--ip", "127.0.0.1"),
    )
    cert_path = directory.server_cert("registry")
    assert str(cert_path) in result.output
    assert directory.server_key("registry").stat().st_mode & 0o777 == 0o600
    certificate = load_certificate(cert_path)
    assert _eku(certificate) == [ExtendedKeyUsageOID.SERVER_AUTH]
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["registry.at.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # No urn:pouch identity: the trust layer maps nothing to it.
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == []
    certificate.verify_directly_issued_by(load_certificate(directory.ca_cert))


def test_server_certificate_needs_a_name_to_be_checked_against(tmp_path: Path) -> None:
    directory, ca_key = _init_offline(tmp_path)
    result = _refused(
        "issue-server",
        *("--state-dir", str(directory.root), "--name", "registry", "--ca-key", str(ca_key)),
    )
    assert "DNS name or IP address" in result.output


def test_server_certificate_is_not_replaced_silently(tmp_path: Path) -> None:
    directory, ca_key = _init_offline(tmp_path)
    args = ("--state-dir", str(directory.root), "--name", "registry", "--ca-key", str(ca_key))
    _ok("issue-server", *args, "--dns", "registry.at.example")
    first = directory.server_cert("registry").read_bytes()
    assert "already exists" in _refused("issue-server", *args, "--dns", "r.example").output
    assert directory.server_cert("registry").read_bytes() == first
    _ok("issue-server", *args, "--dns", "r.example", "--replace")
    assert directory.server_cert("registry").read_bytes() != first


@pytest.mark.parametrize("name", ["../escape", "Registry", ""])
def test_server_certificate_name_cannot_escape_servers_dir(tmp_path: Path, name: str) -> None:
    directory, ca_key = _init_offline(tmp_path)
    _refused(
        "issue-server",
        *("--state-dir", str(directory.root), "--name", name, "--ca-key", str(ca_key)),
        *("--dns", "r.example"),
    )
    assert not directory.servers.exists()


def test_show_bundle_digest_alone_is_the_digest_it_shows_in_full(tmp_path: Path) -> None:
    directory, _ = _init_offline(tmp_path)
    full = _ok("show-bundle", str(directory.bundle)).output
    digest = _ok("show-bundle", "--digest", str(directory.bundle)).output.strip()
    assert f"digest: {digest}" in full
    assert digest.startswith("sha256:") and len(digest) == 71


def test_upgrade_of_an_offline_ca_directory_needs_the_key_named(tmp_path: Path) -> None:
    directory, ca_key = _init_offline(tmp_path)
    directory.witness_key.unlink()
    directory.witness_cert.unlink()
    assert "--ca-key" in _refused("upgrade", "--state-dir", str(directory.root)).output
    assert not directory.witness_key.exists()
    result = _ok("upgrade", "--state-dir", str(directory.root), "--ca-key", str(ca_key))
    assert f"new key: {directory.witness_key}" in result.output
    assert not directory.ca_key.exists()


def test_init_without_offline_ca_says_the_key_is_to_be_moved_offline(tmp_path: Path) -> None:
    root = tmp_path / "at"
    result = _ok(
        *("init", "--state", "AT", "--out", str(root), "--peer-endpoint", "gw.example:7444")
    )
    assert f"CA key: {root / 'ca.key'} (the gateway does not need it: move it offline" in (
        result.output
    )
