"""``pouch agreement``: check, sign, verify, digest; errors exit 1 with file:line: rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli.agreement import agreement
from gateway.pki import StateDirectory
from tests.unit.agreements import POLICIES, bundle_of, make_state, vector

_EXAMPLE = POLICIES / "at-be-civil-identity.yaml"
_PLACEHOLDERS = {
    "AT": "sha256:4d06c02a4fe13f3feb15a834154a6846657065528c426f45fc5c19a11416d73f",
    "BE": "sha256:7944459ad93f6b745611021d8960314c03b151435d9f9911f157075a8bfae1f0",
}


@pytest.fixture(scope="module")
def at_be(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[StateDirectory, StateDirectory]]:
    """AT's and BE's PKIs, made once and only read (about 60 ms; for each of 9 tests if it
    were per test). Agreements are written and signed under each test's ``tmp_path``."""
    root = tmp_path_factory.mktemp("pki")
    yield make_state("AT", root / "at"), make_state("BE", root / "be")


@pytest.fixture
def example(at_be: tuple[StateDirectory, StateDirectory], tmp_path: Path) -> Path:
    """The AT–BE example, pinned to the test PKIs' bundles."""
    text = _EXAMPLE.read_text(encoding="utf-8")
    for state, directory in zip(("AT", "BE"), at_be, strict=True):
        assert _PLACEHOLDERS[state] in text
        text = text.replace(_PLACEHOLDERS[state], bundle_of(directory).digest)
    path = tmp_path / "at-be.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _run(*args: str | Path) -> Result:
    return CliRunner().invoke(agreement, [str(a) for a in args])


def _sign(path: Path, state: StateDirectory) -> Result:
    return _run("sign", path, "--key", state.signing_key, "--cert", state.signing_cert)


def _verify(path: Path, at_be: tuple[StateDirectory, StateDirectory]) -> Result:
    at, be = at_be
    return _run("verify", path, "--bundle", at.bundle, "--bundle", be.bundle, "--on", "2027-01-01")


def test_sign_both_then_verify_is_active(
    at_be: tuple[StateDirectory, StateDirectory], example: Path
) -> None:
    at, be = at_be
    signed_at = _sign(example, at)
    assert signed_at.exit_code == 0, signed_at.output
    assert f"{example}: signed by AT (key sha256:" in signed_at.output

    half = _verify(example, at_be)
    assert half.exit_code == 1
    assert "  AT: signature valid\n  BE: MISSING_SIGNATURE\n" in half.output
    assert "INACTIVE on 2027-01-01:" in half.output

    assert _sign(example, be).exit_code == 0
    full = _verify(example, at_be)
    assert full.exit_code == 0, full.output
    assert full.stdout.splitlines()[1:] == [
        "  AT: signature valid",
        "  BE: signature valid",
        "ACTIVE on 2027-01-01",
    ]


def test_verify_outside_window_names_the_reason(
    at_be: tuple[StateDirectory, StateDirectory], example: Path
) -> None:
    at, be = at_be
    _sign(example, at)
    _sign(example, be)
    late = _run(
        "verify", example, "--bundle", at.bundle, "--bundle", be.bundle, "--on", "2030-01-01"
    )
    assert late.exit_code == 1
    assert "  EXPIRED: its validity period has ended" in late.output


def test_verify_without_a_partys_bundle_is_inactive(
    at_be: tuple[StateDirectory, StateDirectory], example: Path
) -> None:
    at, be = at_be
    _sign(example, at)
    _sign(example, be)
    result = _run("verify", example, "--bundle", at.bundle, "--on", "2027-01-01")
    assert result.exit_code == 1
    assert "  BE: BUNDLE_DIGEST_MISMATCH" in result.output


def test_check_malformed_exits_1_with_the_message() -> None:
    path = vector("duplicate-key.yaml")
    result = _run("check", path)
    assert result.exit_code == 1
    assert result.stderr == f"{path}:14: status: duplicate key (first at line 8)\n"
    assert "Traceback" not in result.output


def test_check_reports_every_file(example: Path) -> None:
    bad = vector("unknown-key.yaml")
    result = _run("check", example, bad)
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{example}: ok at-be-civil-identity version 1 sha256:")
    assert f"{bad}:12: retension_days: unknown key" in result.stderr


def test_check_examples_pass() -> None:
    result = _run("check", *sorted(POLICIES.glob("*.yaml")))
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": ok ") >= 3


def test_check_missing_file_exits_1(tmp_path: Path) -> None:
    result = _run("check", tmp_path / "absent.yaml")
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_digest_is_stable_across_signing(
    at_be: tuple[StateDirectory, StateDirectory], example: Path
) -> None:
    before = _run("digest", example)
    assert before.exit_code == 0
    assert before.stdout.startswith("sha256:") and len(before.stdout.strip()) == 71
    _sign(example, at_be[0])
    assert _run("digest", example).stdout == before.stdout


def test_sign_with_wrong_files_fails_without_traceback(
    at_be: tuple[StateDirectory, StateDirectory], example: Path
) -> None:
    at, _ = at_be
    result = _run("sign", example, "--key", at.audit_key, "--cert", at.audit_cert)
    assert result.exit_code == 1
    assert "not a message-signing certificate" in result.output
    missing = _run("sign", example, "--key", at.signing_key, "--cert", example.parent / "x.crt")
    assert missing.exit_code == 1
    assert "no such file" in missing.output
