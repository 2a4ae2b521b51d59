"""``pouch token``: the development identity provider from the command line."""

from __future__ import annotations

import datetime
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.cli.token import token
from gateway.pki.tokens import JwksKeys, TokenVerifier
from gateway.trust.principal import Principal, Scope

ISSUER = "https://idp.example.fr"
AUDIENCE = "urn:pouch:state:FR:gateway"


def make_client_cert(common_name: str = "registry-clerk") -> tuple[bytes, bytes]:
    """A self-signed ECDSA certificate, as (DER, PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER), cert.public_bytes(
        serialization.Encoding.PEM
    )


@pytest.fixture
def idp_dir(tmp_path: Path) -> Path:
    out = tmp_path / "idp"
    result = CliRunner().invoke(token, ["init-idp", "--out", str(out), "--kid", "dev-1"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def client_cert(tmp_path: Path) -> tuple[bytes, Path]:
    der, pem = make_client_cert()
    path = tmp_path / "client.pem"
    path.write_bytes(pem)
    return der, path


def mint_args(idp_dir: Path, cert_path: Path, *extra: str) -> list[str]:
    return [
        "mint",
        "--idp-dir",
        str(idp_dir),
        "--cert",
        str(cert_path),
        "--issuer",
        ISSUER,
        "--audience",
        AUDIENCE,
        "--subject",
        "clerk-4711",
        *extra,
    ]


def test_init_idp_writes_private_key_mode_0600_and_jwks(idp_dir: Path) -> None:
    assert stat.S_IMODE((idp_dir / "idp.key").stat().st_mode) == 0o600
    assert JwksKeys.from_file(idp_dir / "jwks.json").kids == {"dev-1"}


def test_init_idp_refuses_to_replace_an_existing_key(idp_dir: Path) -> None:
    before = (idp_dir / "idp.key").read_bytes()
    result = CliRunner().invoke(token, ["init-idp", "--out", str(idp_dir)])
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert (idp_dir / "idp.key").read_bytes() == before


def test_minted_token_is_verified_and_bound_to_the_certificate(
    idp_dir: Path, client_cert: tuple[bytes, Path]
) -> None:
    cert_der, cert_path = client_cert
    args = mint_args(idp_dir, cert_path, "--scope", "civil:submit", "--scope", "audit:read")
    result = CliRunner().invoke(token, [*args, "--lifetime", "120", "--client-id", "civil-app"])
    assert result.exit_code == 0, result.output
    minted = result.stdout.strip()
    assert result.stdout == minted + "\n"
    assert minted.count(".") == 2

    verifier = TokenVerifier(
        JwksKeys.from_file(idp_dir / "jwks.json"),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=time.time,
    )
    verified = verifier.verify(minted, client_cert_der=cert_der)
    assert verified.expires_at - time.time() <= 120
    principal = Principal.from_token("FR", verified)
    assert principal.scopes == {Scope.CIVIL_SUBMIT, Scope.AUDIT_READ}
    assert principal.client_id == "civil-app"


def test_mint_refuses_unknown_scope(idp_dir: Path, client_cert: tuple[bytes, Path]) -> None:
    result = CliRunner().invoke(token, mint_args(idp_dir, client_cert[1], "--scope", "root"))
    assert result.exit_code == 2
    assert "root" in result.output
    assert "civil:submit" in result.output


def test_mint_requires_a_scope(idp_dir: Path, client_cert: tuple[bytes, Path]) -> None:
    result = CliRunner().invoke(token, mint_args(idp_dir, client_cert[1]))
    assert result.exit_code == 2


@pytest.mark.parametrize("lifetime", ["0", "-5", "999999"])
def test_mint_refuses_lifetime_out_of_range(
    idp_dir: Path, client_cert: tuple[bytes, Path], lifetime: str
) -> None:
    args = mint_args(idp_dir, client_cert[1], "--scope", "admin", "--lifetime", lifetime)
    assert CliRunner().invoke(token, args).exit_code == 2


def test_mint_without_idp_key_is_a_clean_error(
    tmp_path: Path, client_cert: tuple[bytes, Path]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(token, mint_args(empty, client_cert[1], "--scope", "admin"))
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "Traceback" not in result.output


def test_mint_with_a_non_certificate_is_a_clean_error(idp_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    result = CliRunner().invoke(token, mint_args(idp_dir, bogus, "--scope", "admin"))
    assert result.exit_code == 1
    assert "not a PEM X.509 certificate" in result.output
