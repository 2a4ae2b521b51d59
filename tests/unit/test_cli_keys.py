"""``pouch keys``: key files an operator makes are private from creation, never
overwritten, read back by the gateway, and named by a fingerprint that is never the key."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from gateway.agreements.gate import load_hash_key
from gateway.agreements.hash_key import hash_key_fingerprint, hash_key_id
from gateway.agreements.loader import load_agreement
from gateway.agreements.model import EXCHANGES_VALIDATOR
from gateway.cli.keys import keys
from gateway.pki.sealing import load_sealing_keys, sealing_key_id


def _run(*args: str) -> Result:
    return CliRunner().invoke(keys, list(args))


def _ok(*args: str) -> Result:
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def test_sealing_key_is_private_readable_by_the_gateway_and_never_printed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "secrets" / "sealing.key"
    result = _ok("sealing", "--out", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.parent.stat().st_mode & 0o777 == 0o700
    key = load_sealing_keys(out).current
    assert key.hex() not in result.output.lower()
    assert f"key id: {sealing_key_id(key).hex()}" in result.output
    assert (
        _ok("fingerprint", "--sealing", str(out)).output.strip().endswith(sealing_key_id(key).hex())
    )


def test_hash_key_is_private_readable_by_the_gateway_and_never_printed(tmp_path: Path) -> None:
    out = tmp_path / "hash-keys" / "at-be-civil.key"
    result = _ok("hash-key", "--out", str(out))
    assert out.stat().st_mode & 0o777 == 0o600
    key = load_hash_key(out.parent, "at-be-civil")
    assert len(key) == 32
    assert key.hex() not in result.output.lower()
    assert f"fingerprint: {hash_key_id(key)}" in result.output
    assert hash_key_id(key) in _ok("fingerprint", "--hash-key", str(out)).output


def test_an_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    for command in ("sealing", "hash-key"):
        out = tmp_path / f"{command}.key"
        _ok(command, "--out", str(out))
        before = out.read_bytes()
        result = _run(command, "--out", str(out))
        assert result.exit_code != 0
        assert "refusing to overwrite" in result.output
        assert out.read_bytes() == before


def test_hash_key_fingerprint_under_an_agreement_is_the_one_gateways_compare(
    tmp_path: Path,
) -> None:
    policies = Path(__file__).resolve().parents[2] / "policies"
    agreement = policies / "at-be-civil-identity.yaml"
    out = tmp_path / "at-be-civil-identity.key"
    _ok("hash-key", "--out", str(out))
    result = _ok("fingerprint", "--hash-key", str(out), "--agreement", str(agreement))
    digest = load_agreement(agreement, exchanges_validator=EXCHANGES_VALIDATOR).digest
    expected = hash_key_fingerprint(load_hash_key(tmp_path, "at-be-civil-identity"), digest)
    assert f"agreement at-be-civil-identity fingerprint: {expected}" in result.output


def test_fingerprint_refuses_a_short_hash_key(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("ab" * 16 + "\n", encoding="ascii")
    result = _run("fingerprint", "--hash-key", str(short))
    assert result.exit_code != 0
    assert "32 or more random bytes" in result.output


def test_fingerprint_takes_exactly_one_key(tmp_path: Path) -> None:
    assert _run("fingerprint").exit_code != 0
    sealing, hashing = tmp_path / "s.key", tmp_path / "h.key"
    _ok("sealing", "--out", str(sealing))
    _ok("hash-key", "--out", str(hashing))
    assert _run("fingerprint", "--sealing", str(sealing), "--hash-key", str(hashing)).exit_code
