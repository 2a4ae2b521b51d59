"""``pouch pki``: operator commands, clear errors, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.audit.cosignature import partner_cosigners
from gateway.audit.log_signing import partner_log_keys
from gateway.cli.audit import audit
from gateway.cli.pki import pki
from gateway.pki import (
    RevocationList,
    StateDirectory,
    load_certificate,
    load_trust_bundle,
)
from gateway.pki.keys import certificate_fingerprint


def _run(*args: str) -> Result:
    return CliRunner().invoke(pki, list(args))


def _ok(*args: str) -> Result:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _refused(*args: str) -> Result:
    result = _run(*args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def _init(root: Path, state: str = "FR") -> StateDirectory:
    _ok(
        "init",
        "--state",
        state,
        "--out",
        str(root),
        "--dns",
        "gw.example",
        "--ip",
        "192.0.2.7",
        "--peer-endpoint",
        "gw.example:8443",
    )
    return StateDirectory(root)


def _revoked(directory: StateDirectory) -> frozenset[int]:
    return RevocationList.load(directory.crl, load_certificate(directory.ca_cert)).serials


@pytest.fixture
def fr_dir(tmp_path: Path) -> StateDirectory:
    return _init(tmp_path / "fr")


def test_cli_pki_init_creates_state_directory(tmp_path: Path) -> None:
    result = _ok(
        "init",
        "--state",
        "FR",
        "--out",
        str(tmp_path / "fr"),
        "--dns",
        "gw.fr.example",
        "--peer-endpoint",
        "gw.fr.example:8443",
        "--crl-location",
        "https://pki.fr.example/crl.pem",
    )
    directory = StateDirectory(tmp_path / "fr")
    for path in (
        directory.ca_cert,
        directory.ca_key,
        directory.gateway_cert,
        directory.gateway_key,
        directory.signing_cert,
        directory.signing_key,
        directory.audit_cert,
        directory.audit_key,
        directory.witness_cert,
        directory.witness_key,
        directory.audit_pq_cert,
        directory.audit_pq_key,
        directory.witness_pq_cert,
        directory.witness_pq_key,
        directory.signing_pq_cert,
        directory.signing_pq_key,
        directory.crl,
        directory.bundle,
    ):
        assert path.is_file(), path
    bundle = load_trust_bundle(directory.bundle)
    assert bundle.crl_location == "https://pki.fr.example/crl.pem"
    assert bundle.digest in result.output


def test_cli_pki_init_refuses_to_overwrite_existing_ca(fr_dir: StateDirectory) -> None:
    ca_key = fr_dir.ca_key.read_bytes()
    result = _refused("init", "--state", "FR", "--out", str(fr_dir.root), "--peer-endpoint", "gw:1")
    assert "refusing to overwrite a state CA" in result.output
    assert fr_dir.ca_key.read_bytes() == ca_key


def test_cli_pki_init_explains_a_bad_state_code(tmp_path: Path) -> None:
    result = _refused(
        "init", "--state", "fr", "--out", str(tmp_path / "x"), "--peer-endpoint", "gw:1"
    )
    assert "ISO 3166-1 alpha-2" in result.output


def test_cli_issue_client_prints_cert_path_and_hex_serial(fr_dir: StateDirectory) -> None:
    result = _ok("issue-client", "--state-dir", str(fr_dir.root), "--name", "registry")
    cert_path = fr_dir.client_cert("registry")
    assert f"certificate: {cert_path}" in result.output
    assert f"serial: 0x{load_certificate(cert_path).serial_number:x}" in result.output


def test_cli_issue_client_refuses_to_replace_without_flag(fr_dir: StateDirectory) -> None:
    _ok("issue-client", "--state-dir", str(fr_dir.root), "--name", "registry")
    result = _refused("issue-client", "--state-dir", str(fr_dir.root), "--name", "registry")
    assert "issued before" in result.output
    _ok("issue-client", "--state-dir", str(fr_dir.root), "--name", "registry", "--replace")


def test_cli_issue_client_refuses_a_bad_name(fr_dir: StateDirectory) -> None:
    result = _refused("issue-client", "--state-dir", str(fr_dir.root), "--name", "Bad_Name")
    assert "invalid client name" in result.output


def test_cli_revoke_by_printed_hex_serial_reaches_the_crl(fr_dir: StateDirectory) -> None:
    issued = _ok("issue-client", "--state-dir", str(fr_dir.root), "--name", "registry")
    serial = issued.output.split("serial: ")[1].strip()
    result = _ok("revoke", "--state-dir", str(fr_dir.root), "--serial", serial)
    assert str(fr_dir.client_cert("registry")) in result.output
    assert int(serial, 16) in _revoked(fr_dir)


def test_cli_revoke_by_decimal_serial(fr_dir: StateDirectory) -> None:
    result = _ok("revoke", "--state-dir", str(fr_dir.root), "--serial", "12345")
    assert "no certificate with this serial" in result.output
    assert 12345 in _revoked(fr_dir)


def test_cli_revoke_refuses_ambiguous_bare_hex_serial(fr_dir: StateDirectory) -> None:
    result = _refused("revoke", "--state-dir", str(fr_dir.root), "--serial", "abc123")
    assert "0x-prefixed hex" in result.output
    assert _revoked(fr_dir) == frozenset()


def test_cli_revoke_by_certificate_file(fr_dir: StateDirectory) -> None:
    _ok("issue-client", "--state-dir", str(fr_dir.root), "--name", "registry")
    cert_path = fr_dir.client_cert("registry")
    _ok("revoke", "--state-dir", str(fr_dir.root), "--cert", str(cert_path))
    assert load_certificate(cert_path).serial_number in _revoked(fr_dir)


def test_cli_revoke_refuses_certificate_of_another_ca(
    fr_dir: StateDirectory, tmp_path: Path
) -> None:
    de_dir = _init(tmp_path / "de", "DE")
    result = _refused("revoke", "--state-dir", str(fr_dir.root), "--cert", str(de_dir.gateway_cert))
    assert "was not issued by the CA" in result.output
    assert _revoked(fr_dir) == frozenset()


@pytest.mark.parametrize("extra", [[], ["--serial", "1", "--cert", "ca.crt"]])
def test_cli_revoke_needs_exactly_one_of_serial_or_cert(
    fr_dir: StateDirectory, extra: list[str]
) -> None:
    args = [a if a != "ca.crt" else str(fr_dir.ca_cert) for a in extra]
    result = _refused("revoke", "--state-dir", str(fr_dir.root), *args)
    assert "exactly one of --serial or --cert" in result.output


def test_cli_refresh_crl_keeps_revocations(fr_dir: StateDirectory) -> None:
    _ok("revoke", "--state-dir", str(fr_dir.root), "--serial", "0x10")
    _ok("refresh-crl", "--state-dir", str(fr_dir.root))
    assert _revoked(fr_dir) == frozenset({16})


def test_cli_show_bundle_prints_state_endpoint_digest_expiry(fr_dir: StateDirectory) -> None:
    result = _ok("show-bundle", str(fr_dir.bundle))
    bundle = load_trust_bundle(fr_dir.bundle)
    assert "state: FR" in result.output
    assert "endpoint: gw.example:8443" in result.output
    assert f"digest: {bundle.digest}" in result.output
    assert f"expires: {bundle.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}" in result.output


def test_cli_show_bundle_lists_the_log_and_witness_keys_with_fingerprints(
    fr_dir: StateDirectory, tmp_path: Path
) -> None:
    result = _ok("show-bundle", str(fr_dir.bundle))
    bundle = load_trust_bundle(fr_dir.bundle)
    log_keys, witness_keys = partner_log_keys(bundle), partner_cosigners(bundle)
    assert "signature algorithms: ES256 ML-DSA-44" in result.output
    for key in log_keys:
        assert f"log key ({key.algorithm}, vkey): {key.vkey}" in result.output
    for witness in witness_keys:
        assert f"witness key ({witness.algorithm}, vkey): {witness.vkey}" in result.output
    for label, certificate in (
        ("signing certificate", bundle.signing_certificate),
        ("audit certificate", bundle.audit_certificate),
        ("witness certificate", bundle.witness_certificate),
        ("signing certificate (ML-DSA-44)", bundle.signing_pq_certificate),
        ("audit certificate (ML-DSA-44)", bundle.audit_pq_certificate),
        ("witness certificate (ML-DSA-44)", bundle.witness_pq_certificate),
    ):
        assert certificate is not None
        assert f"{label}: {certificate_fingerprint(certificate)}" in result.output
    # The same keys an auditor passes to pouch audit verify, and writes with audit keys.
    keys = CliRunner().invoke(
        audit, ["keys", "--bundle", str(fr_dir.bundle), "--out", str(tmp_path / "keys")]
    )
    assert keys.exit_code == 0, keys.output
    for key in log_keys:
        assert f"log key ({key.algorithm}): {key.vkey}" in keys.output
    for witness in witness_keys:
        assert f"witness key ({witness.algorithm}): {witness.vkey}" in keys.output
    assert (tmp_path / "keys" / "fr-log.vkey").read_text() == "".join(
        f"{k.vkey}\n" for k in log_keys
    )
    assert (tmp_path / "keys" / "fr-witness.vkey").read_text() == "".join(
        f"{k.vkey}\n" for k in witness_keys
    )


def test_cli_show_bundle_refuses_tampered_bundle(fr_dir: StateDirectory) -> None:
    document = json.loads(fr_dir.bundle.read_bytes())
    document["body"]["peer_endpoint"] = "evil.example:8443"
    fr_dir.bundle.write_text(json.dumps(document))
    result = _refused("show-bundle", str(fr_dir.bundle))
    assert "signature does not verify" in result.output


def test_cli_errors_on_missing_state_directory_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = _refused("issue-client", "--state-dir", str(tmp_path / "empty"), "--name", "a")
    assert "no such file" in result.output


def test_cli_is_a_click_group_named_pki() -> None:
    assert pki.name == "pki"
    assert {"init", "issue-client", "revoke", "show-bundle", "upgrade"} <= set(pki.commands)
    assert "add-witness" not in pki.commands


_POST_QUANTUM_FIELDS = ("audit_pq_certificate", "witness_pq_certificate", "signing_pq_certificate")


def _as_older_release(directory: StateDirectory, format_: str, *drop: str) -> None:
    """Rewrite the state's bundle as an earlier release wrote it: without ``drop``, in
    ``format_`` (the CA signature is left as it was: upgrade reads its own state's file
    for its settings only, and signs a new one)."""
    document = json.loads(directory.bundle.read_bytes())
    for field in drop:
        del document["body"][field]
    document["format"] = format_
    directory.bundle.write_text(json.dumps(document))


def test_an_older_state_directory_gets_its_witness_key_and_a_current_bundle(
    fr_dir: StateDirectory,
) -> None:
    # As a directory made before witness keys: no witness or post-quantum files, a v1
    # bundle whose one audit key served both roles.
    before = load_trust_bundle(fr_dir.bundle)
    _as_older_release(
        fr_dir,
        "pouch.trust-bundle/v1",
        "witness_certificate",
        "signature_algorithms",
        *_POST_QUANTUM_FIELDS,
    )
    for path in (
        fr_dir.witness_cert,
        fr_dir.witness_key,
        fr_dir.audit_pq_cert,
        fr_dir.audit_pq_key,
        fr_dir.witness_pq_cert,
        fr_dir.witness_pq_key,
        fr_dir.signing_pq_cert,
        fr_dir.signing_pq_key,
    ):
        path.unlink()

    result = _ok("upgrade", "--state-dir", str(fr_dir.root))

    after = load_trust_bundle(fr_dir.bundle)
    assert after.witness_certificate == load_certificate(fr_dir.witness_cert)
    assert after.witness_certificate != before.witness_certificate  # a new key
    assert (after.audit_certificate, after.signing_certificate) == (
        before.audit_certificate,
        before.signing_certificate,
    )
    assert (after.peer_endpoint, after.crl_location) == (before.peer_endpoint, before.crl_location)
    assert f"new key: {fr_dir.witness_key}" in result.output
    assert f"bundle digest: {after.digest}" in result.output
    for witness in partner_cosigners(after):
        assert f"witness key ({witness.algorithm}, vkey): {witness.vkey}" in result.output
    again = _refused("upgrade", "--state-dir", str(fr_dir.root))
    assert "already holds every key" in again.output


def test_upgrade_gives_a_v2_state_directory_its_post_quantum_keys_and_a_v3_bundle(
    fr_dir: StateDirectory,
) -> None:
    # As a directory made before post-quantum keys: no ML-DSA-44 files, a v2 bundle.
    before = load_trust_bundle(fr_dir.bundle)
    _as_older_release(
        fr_dir, "pouch.trust-bundle/v2", "signature_algorithms", *_POST_QUANTUM_FIELDS
    )
    post_quantum_keys = [fr_dir.audit_pq_key, fr_dir.witness_pq_key, fr_dir.signing_pq_key]
    for key in post_quantum_keys:
        key.unlink()
    for certificate in (fr_dir.audit_pq_cert, fr_dir.witness_pq_cert, fr_dir.signing_pq_cert):
        certificate.unlink()
    kept = {
        path: path.read_bytes()
        for path in (
            fr_dir.ca_key,
            fr_dir.gateway_key,
            fr_dir.signing_key,
            fr_dir.audit_key,
            fr_dir.witness_key,
        )
    }
    # A partner's gateway refuses the v2 bundle by name until the state upgrades.
    refused = _refused("show-bundle", str(fr_dir.bundle))
    assert "is retired" in refused.output

    result = _ok("upgrade", "--state-dir", str(fr_dir.root))

    assert json.loads(fr_dir.bundle.read_bytes())["format"] == "pouch.trust-bundle/v3"
    after = load_trust_bundle(fr_dir.bundle)
    # The three ML-DSA-44 keys, new, each with its certificate in the bundle ...
    for key in post_quantum_keys:
        assert f"new key: {key}" in result.output
        assert key.is_file()
    assert result.output.count("new key: ") == 3
    assert after.audit_pq_certificate == load_certificate(fr_dir.audit_pq_cert)
    assert after.witness_pq_certificate == load_certificate(fr_dir.witness_pq_cert)
    assert after.signing_pq_certificate == load_certificate(fr_dir.signing_pq_cert)
    assert after.audit_pq_certificate != before.audit_pq_certificate
    assert after.signature_algorithms == ("ES256", "ML-DSA-44")
    # ... beside every other key and certificate as they were.
    assert {path: path.read_bytes() for path in kept} == kept
    assert (
        after.ca_certificate,
        after.signing_certificate,
        after.audit_certificate,
        after.witness_certificate,
    ) == (
        before.ca_certificate,
        before.signing_certificate,
        before.audit_certificate,
        before.witness_certificate,
    )
    assert (after.peer_endpoint, after.crl_location) == (before.peer_endpoint, before.crl_location)
    assert f"bundle digest: {after.digest}" in result.output
    for log_key in partner_log_keys(after):
        assert f"log key ({log_key.algorithm}, vkey): {log_key.vkey}" in result.output

    again = _refused("upgrade", "--state-dir", str(fr_dir.root))
    assert "already holds every key" in again.output
    assert load_trust_bundle(fr_dir.bundle).digest == after.digest  # nothing rewritten
