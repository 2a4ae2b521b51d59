"""``pouch demo`` from a fresh directory, as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _row(out: str, *cells: str) -> str:
    """The one summary line that holds every cell, in order."""
    lines = [line for line in out.splitlines() if all(cell in line for cell in cells)]
    assert lines, f"no line with {cells!r} in:\n{out}"
    line = lines[0]
    positions = [line.index(cell) for cell in cells]
    assert positions == sorted(positions), line
    return line


def test_pouch_demo_runs_on_a_fresh_directory_and_reports_every_step(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--workdir", str(workdir)],
        env={**os.environ, "COLUMNS": "320"},  # one table row per line, for the asserts
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "all 25 steps behaved as expected" in out
    assert "BE recognised the caller as AT" in out
    assert "ACCEPTED by BE" in out
    assert "registry_identifier" in out and "transformed" in out
    # Civil records and identity confirmations, each refused for a purpose not agreed.
    _row(out, "SubmitUpdate, purpose 'law_enforcement'", "PERMISSION_DENIED: the declared purpose")
    _row(out, "ConfirmIdentity, purpose 'law_enforcement'", "PERMISSION_DENIED: the declared")
    # A match, the MRZ removed by the policy, transliterated names, a partial match.
    _row(out, "ConfirmIdentity: the specimen passport", "MATCH", "MATCH, document VALID")
    _row(out, "MRZ ERIKSSON ANNA MARIA", "MATCH", "claim.mrz removed")
    _row(out, "JUERGEN MUELLER", "MATCH", "claim.document_number transformed")
    _row(out, "Jörg MÜLLER", "PARTIAL", "name.given_names NO", "claim.document_number transformed")
    assert "L898902C3" not in out and "BE1234567" not in out  # numbers never printed
    # The case, completed on both gateways with its cost claim acknowledged.
    _row(out, "AcknowledgeCosts", "OK: acknowledged")
    _row(out, "GetCase on both gateways", "in step: COMPLETED at LU", "COMPLETED at BE")
    _row(out, "│ LU ", "COMPLETED", "EUR 120.00 acknowledged", "costs_claimed")
    _row(out, "│ BE ", "COMPLETED", "EUR 120.00 acknowledged", "costs_acknowledged")
    _row(out, "ExportBundle, verified offline", "verified (", "cosigned by BE")
    # The published checkpoint carries post-quantum signatures, each checked with the
    # pinned keys, and the partners' TLS negotiated the hybrid group.
    _row(out, "│ pouch-at-audit ", "log", "Ed25519", "yes")
    _row(out, "│ pouch-at-audit ", "log", "ML-DSA-44", "yes")
    _row(out, "│ pouch-be-witness ", "witness", "Ed25519", "yes")
    _row(out, "│ pouch-be-witness ", "witness", "ML-DSA-44", "yes")
    assert "TLS key exchange AT to BE (seen by BE): X25519MLKEM768" in out
    assert "Traceback" not in out + result.stderr
    # The demo's gateways were stopped cleanly, and left no running process behind.
    for state in ("AT", "BE", "LU"):
        log = (workdir / state / "gateway.log").read_text()
        assert f"pouch gateway {state} stopped" in log
        assert "Traceback" not in log


def test_pouch_demo_refuses_a_non_empty_workdir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "is not empty" in result.stderr
