"""``pouch demo`` from a fresh directory, as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_pouch_demo_runs_on_a_fresh_directory_and_reports_every_step(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--workdir", str(workdir)],
        env={**os.environ, "COLUMNS": "240"},  # one table row per line, for the asserts
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "all 9 steps behaved as expected" in out
    assert "BE recognised the caller as AT" in out
    assert "PERMISSION_DENIED: the declared purpose is not agreed" in out
    assert "ACCEPTED by BE" in out
    assert "registry_identifier" in out and "transformed" in out
    assert "verified (" in out and "cosigned by BE" in out
    assert "Traceback" not in out + result.stderr
    # The demo's gateways were stopped cleanly, and left no running process behind.
    for state in ("AT", "BE"):
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
