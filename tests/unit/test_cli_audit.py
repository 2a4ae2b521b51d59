"""``pouch audit verify``: the offline verifier as an auditor runs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.audit.checkpoint import audit_key_name
from gateway.cli.audit import audit
from gateway.pki.directory import StateDirectory
from gateway.pki.note_keys import MLDSA44
from tests.unit.audit import make_event
from tests.unit.audit import test_bundle_verify as bundle_fixtures
from tests.unit.audit.test_bundle_verify import (
    Deployment,
    new_log_signer,
    new_witness_signers,
    stripped,
)

# A real audit log on SQLite with France's and Germany's keys, as in the bundle tests.
states = bundle_fixtures.states
deployment = bundle_fixtures.deployment


@pytest.fixture
def files(deployment: Deployment, tmp_path: Path) -> Iterator[dict[str, Path]]:
    deployment.append(9)
    deployment.publish()
    paths = {
        "bundle": tmp_path / "bundle.json",
        "log": tmp_path / "fr-log.vkey",
        "de": tmp_path / "de-witness.vkey",
    }
    paths["bundle"].write_bytes(deployment.export())
    # As pouch audit keys --out writes them: one vkey a line, Ed25519 then ML-DSA-44.
    paths["log"].write_text("".join(f"{vkey}\n" for vkey in deployment.log_vkeys))
    paths["de"].write_text("".join(f"{vkey}\n" for vkey in deployment.cosigner_vkeys["DE"]))
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
    assert "Ed25519 and ML-DSA-44" in output  # what was required


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
    log_lines = [line for line in output.splitlines() if line.startswith("log key")]
    cosigner_lines = [line for line in output.splitlines() if line.startswith("cosigner DE")]
    assert len(log_lines) == len(cosigner_lines) == 2  # Ed25519 and ML-DSA-44
    assert all(line.endswith("[trusted: given]") for line in log_lines)
    assert all(line.endswith("[taken from the bundle]") for line in cosigner_lines)
    assert "FAIL: cosigner keys: none trusted" in output


def test_forged_bundle_without_keys_exits_non_zero(
    deployment: Deployment, files: dict[str, Path]
) -> None:
    # A bundle made entirely with the forger's keys is consistent with itself; with no
    # key of the auditor's it must still not read as VERIFIED to a script or a person.
    forger = Deployment(
        engine=deployment.engine,
        log=deployment.log,
        checkpoints=deployment.checkpoints,
        signer=new_log_signer(),
        witnesses=new_witness_signers(),
    )
    forger.append(2)
    forger.publish()
    files["bundle"].write_bytes(forger.export())

    code, output = run(str(files["bundle"]))

    assert code == 1
    assert "VERIFIED" not in output.replace("NOT VERIFIED", "")
    assert "NOT VERIFIED" in output
    # With the keys the auditor holds, the forgery is named.
    code, output = run(str(files["bundle"]), *trusted(files))
    assert code == 1
    assert "FAIL: log key: the bundle's" in output


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
        "log": deployment.log_vkeys,
        "log_source": "trusted",
        "cosigners": deployment.cosigner_vkeys,
        "required_algorithms": ["Ed25519", "ML-DSA-44"],
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
    be_key = tmp_path / "be.vkey"
    be_key.write_text("".join(f"{w.verifier().vkey}\n" for w in new_witness_signers("BE")))

    code, output = run(
        str(files["bundle"]), "--log-key", str(files["log"]), "--cosigner-key", f"BE={be_key}"
    )

    assert code == 1
    assert "note: cosigner key of BE: trusted Ed25519 key absent from the bundle" in output
    assert "note: cosigner key of BE: trusted ML-DSA-44 key absent from the bundle" in output
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
    [
        ["--cosigner-key", "de=x.vkey"],
        ["--cosigner-key", "DE"],
        ["--log-key", "{de}"],
        ["--log-key", "{empty}"],
        ["--log-key", "{log}", "--log-key", "{log}"],
        ["--log-key", "{log}", "--require", "ed448"],
    ],
)
def test_bad_key_options_are_usage_errors(
    files: dict[str, Path], tmp_path: Path, option: list[str]
) -> None:
    # A cosigner key is no log key (the Ed25519 type byte differs, the ML-DSA-44 name
    # does); a file without a vkey, or a second key of one algorithm, is a mistake.
    (tmp_path / "empty.vkey").write_text("\n")
    paths = {"de": files["de"], "log": files["log"], "empty": tmp_path / "empty.vkey"}
    args = [value.format(**paths) for value in option]

    code, output = run(str(files["bundle"]), *args)

    assert code == 2, output


def test_require_chooses_the_algorithms_and_defaults_to_both(
    deployment: Deployment, files: dict[str, Path]
) -> None:
    (mldsa_key,) = [k for k in deployment.signer.verifiers() if k.algorithm == MLDSA44]
    files["bundle"].write_bytes(stripped(deployment.export(), mldsa_key))

    code, output = run(str(files["bundle"]), *trusted(files))

    assert code == 1
    assert f"FAIL: checkpoint: not signed by the ML-DSA-44 log key {audit_key_name('FR')}+" in (
        output
    )
    code, output = run(str(files["bundle"]), *trusted(files), "--require", "ed25519")
    assert code == 0, output
    assert "VERIFIED" in output
    code, _ = run(str(files["bundle"]), *trusted(files), "--require", "ml-dsa-44")
    assert code == 1


def test_audit_keys_writes_the_files_verify_takes(
    states: tuple[StateDirectory, StateDirectory], files: dict[str, Path], tmp_path: Path
) -> None:
    fr, de = states
    keys = CliRunner().invoke(
        audit,
        ["keys", "--bundle", str(fr.bundle), "--bundle", str(de.bundle), "--out", str(tmp_path)],
    )
    assert keys.exit_code == 0, keys.output
    for algorithm in ("Ed25519", "ML-DSA-44"):
        assert f"log key ({algorithm}): pouch-fr-audit+" in keys.output
        assert f"witness key ({algorithm}): pouch-de-witness+" in keys.output
    assert (tmp_path / "fr-log.vkey").read_text() == files["log"].read_text()
    assert (tmp_path / "de-witness.vkey").read_text() == files["de"].read_text()

    code, output = run(
        str(files["bundle"]),
        "--log-key",
        str(tmp_path / "fr-log.vkey"),
        "--cosigner-key",
        f"DE={tmp_path / 'de-witness.vkey'}",
    )
    assert code == 0, output
    code, output = run(str(files["bundle"]), "--bundle", str(fr.bundle), "--bundle", str(de.bundle))
    assert code == 0, output
