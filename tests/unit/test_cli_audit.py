"""``pouch audit verify``: the offline verifier as an auditor runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.audit.checkpoint import witness_key_name
from gateway.audit.cosignature import CosignatureSigner
from gateway.cli.audit import audit
from gateway.pki.ed25519_notes import Ed25519Signer
from tests.unit.audit import make_event
from tests.unit.audit import test_bundle_verify as bundle_fixtures
from tests.unit.audit.test_bundle_verify import Deployment

# A real audit log on SQLite with France's and Germany's keys, as in the bundle tests.
states = bundle_fixtures.states
deployment = bundle_fixtures.deployment


@pytest.fixture
def files(deployment: Deployment, tmp_path: Path) -> Iterator[dict[str, Path]]:
    deployment.append(9)
    deployment.publish()
    paths = {
        "bundle": tmp_path / "bundle.json",
        "log": tmp_path / "fr-audit.vkey",
        "de": tmp_path / "de-audit.vkey",
    }
    paths["bundle"].write_bytes(deployment.export())
    paths["log"].write_text(deployment.log_vkey + "\n")
    paths["de"].write_text(deployment.cosigner_vkeys["DE"] + "\n")
    yield paths


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(audit, ["verify", *args])
    return result.exit_code, result.output


def trusted(files: dict[str, Path]) -> list[str]:
    return ["--log-key", str(files["log"]), "--cosigner-key", f"DE={files['de']}"]


def test_untouched_bundle_verifies_with_the_keys_the_auditor_holds(
    files: dict[str, Path],
) -> None:
    code, output = run(str(files["bundle"]), *trusted(files))

    assert code == 0, output
    assert "VERIFIED" in output and "NOT VERIFIED" not in output
    assert "[trusted: given]" in output and "[taken from the bundle]" not in output
    assert "9 of 9 verified, complete for 0..8" in output
    assert "yes, cosigned by DE" in output


def test_a_bundle_checked_without_trusted_keys_is_not_verified(files: dict[str, Path]) -> None:
    # A script that checks the exit status must not be told an untrusted bundle is good.
    code, output = run(str(files["bundle"]))

    assert code == 1
    assert "[trusted: given]" not in output
    assert "FAIL: log key: none trusted" in output
    assert "FAIL: cosigner keys: none trusted" in output
    assert "NOT VERIFIED: 2 failures" in output
    assert "9 of 9 verified" in output  # what could be checked is still said


def test_a_trusted_log_key_alone_does_not_verify_who_published(files: dict[str, Path]) -> None:
    code, output = run(str(files["bundle"]), "--log-key", str(files["log"]))

    assert code == 1
    log_line = next(line for line in output.splitlines() if line.startswith("log key"))
    cosigner_line = next(line for line in output.splitlines() if line.startswith("cosigner DE"))
    assert log_line.endswith("[trusted: given]")
    assert cosigner_line.endswith("[taken from the bundle]")
    assert "FAIL: cosigner keys: none trusted" in output


def test_altered_entry_fails_with_exit_code_one(
    deployment: Deployment, files: dict[str, Path]
) -> None:
    forged = make_event(4, message_id="m-forged").canonical()
    deployment.sql("UPDATE audit_entries SET canonical = :c WHERE idx = 4", c=forged)
    files["bundle"].write_bytes(deployment.export())

    code, output = run(str(files["bundle"]), *trusted(files))

    assert code == 1
    assert "FAIL: entry 4: inclusion proof does not reproduce the checkpoint root" in output
    assert "NOT VERIFIED: 1 failures" in output


def test_json_report(deployment: Deployment, files: dict[str, Path]) -> None:
    code, output = run(str(files["bundle"]), "--json", *trusted(files))

    assert code == 0
    report = json.loads(output)
    assert report["ok"] is True
    assert report["tree_size"] == 9
    assert report["keys"] == {
        "log": deployment.log_vkey,
        "log_source": "trusted",
        "cosigners": deployment.cosigner_vkeys,
        "cosigners_source": "trusted",
    }
    assert report["entries"] == {"total": 9, "verified": 9}
    assert report["failures"] == []


def test_json_report_of_a_bundle_that_fails(files: dict[str, Path]) -> None:
    files["bundle"].write_text("{}")

    code, output = run(str(files["bundle"]), "--json")

    assert code == 1
    report = json.loads(output)
    assert report["ok"] is False
    assert "bundle: member 'checkpoint' is missing" in report["failures"]


def test_one_states_key_offered_as_anothers_is_refused(files: dict[str, Path]) -> None:
    code, output = run(
        str(files["bundle"]), "--log-key", str(files["log"]), "--cosigner-key", f"BE={files['de']}"
    )

    assert code == 2
    assert "it is pouch-de-witness's key, not pouch-be-witness's" in output


def test_a_cosigner_the_auditor_does_not_trust_is_not_counted(
    deployment: Deployment, files: dict[str, Path], tmp_path: Path
) -> None:
    be = CosignatureSigner(witness_key_name("BE"), Ed25519Signer.generate()).verifier()
    be_key = tmp_path / "be.vkey"
    be_key.write_text(str(be.vkey) + "\n")

    code, output = run(
        str(files["bundle"]), "--log-key", str(files["log"]), "--cosigner-key", f"BE={be_key}"
    )

    assert code == 1
    assert "note: cosigner key of BE: trusted but absent from the bundle" in output
    assert "note: cosigner key of DE: in the bundle but not trusted" in output
    assert "FAIL: checkpoint: not published: no valid cosignature" in output


def test_a_quorum_larger_than_the_trusted_cosigners_is_a_usage_error(
    files: dict[str, Path],
) -> None:
    code, output = run(str(files["bundle"]), *trusted(files), "--quorum", "2")

    assert code == 2, output
    assert "quorum 2" in output


@pytest.mark.parametrize(
    "option",
    [["--cosigner-key", "de=x.vkey"], ["--cosigner-key", "DE"], ["--log-key", "{de}"]],
)
def test_bad_key_options_are_usage_errors(files: dict[str, Path], option: list[str]) -> None:
    # A cosigner key is no log key: the type byte differs.
    args = [value.format(de=files["de"]) for value in option]

    code, output = run(str(files["bundle"]), *args)

    assert code == 2, output
