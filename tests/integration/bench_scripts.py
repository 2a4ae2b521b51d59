"""Running a benchmark script of ``bench/`` with ``--quick``, as its smoke tests do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]


def run_quick(script: str, output: Path) -> dict[str, Any]:
    """Run ``bench/<script> --quick``, require it to succeed, and return its JSON."""
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "bench" / script), "--quick", "--json", str(output)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
    return document
