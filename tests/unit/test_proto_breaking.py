"""The wire contract cannot lose or renumber a field unnoticed: CI's ``buf breaking``
against the committed image of the released contract (proto/baseline.binpb) fails."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"
BASELINE = REPO / "proto" / "baseline.binpb"


def breaking(proto: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", str(proto), "--against", str(BASELINE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def contract_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "proto"
    shutil.copytree(REPO / "proto", copy, ignore=shutil.ignore_patterns("*.binpb", "BASELINE"))
    return copy


def edit(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text(encoding="utf-8")
    edited, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} not found once in {path}"
    path.write_text(edited, encoding="utf-8")


def test_removed_field_fails_buf_breaking(tmp_path: Path) -> None:
    proto = contract_copy(tmp_path)
    unchanged = breaking(proto)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr

    edit(proto / "pouch/v1/common.proto", r"^\s*string locality = 2;\n", "")
    removed = breaking(proto)
    assert removed.returncode != 0
    assert "locality" in removed.stdout + removed.stderr


def test_renumbered_field_fails_buf_breaking(tmp_path: Path) -> None:
    proto = contract_copy(tmp_path)
    edit(proto / "pouch/v1/common.proto", r"string locality = 2;", "string locality = 12;")
    renumbered = breaking(proto)
    assert renumbered.returncode != 0


def test_baseline_names_the_commit_its_image_was_built_from() -> None:
    lines = (REPO / "proto" / "BASELINE").read_text(encoding="utf-8").splitlines()
    commits = [line for line in lines if line and not line.startswith("#")]
    assert len(commits) == 1 and re.fullmatch(r"[0-9a-f]{40}", commits[0])
