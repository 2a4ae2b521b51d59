"""``pouch demo`` from a fresh directory, as a new user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.request
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


def test_pouch_demo_keep_leaves_each_states_console_and_provider_running(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--keep", "--workdir", str(workdir)],
        env={**os.environ, "COLUMNS": "320"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    pids = [int(p) for p in re.search(r"stop them with: kill ([0-9 ]+)", out).group(1).split()]  # type: ignore[union-attr]
    try:
        assert result.returncode == 0, out + result.stderr
        consoles = re.findall(
            r"(AT|BE|LU) console: (https://127\.0\.0\.1:\d+) .*?identity provider (https://\S+)\)",
            out,
        )
        assert sorted(state for state, _, _ in consoles) == ["AT", "BE", "LU"]
        for state, url, issuer in consoles:
            context = ssl.create_default_context(cafile=str(workdir / state / "pki" / "ca.crt"))
            with urllib.request.urlopen(f"{url}/sign-in", context=context, timeout=10) as page:  # noqa: S310
                assert page.status == 200
                assert page.headers["content-security-policy"].startswith("default-src 'none'")
            discovery = f"{issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(discovery, context=context, timeout=10) as answer:  # noqa: S310
                assert json.load(answer)["code_challenge_methods_supported"] == ["S256"]
            # Each officer is printed with a password of their own.
            for role in ("consul", "auditor", "operator"):
                assert re.search(rf"sign in as {state.lower()}-{role} / \S+", out)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
