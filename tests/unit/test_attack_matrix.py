"""The attack matrix (``tests/ATTACKS.md``) names only tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
NAMED = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_attack_matrix_names_exists() -> None:
    named = NAMED.findall((TESTS / "ATTACKS.md").read_text(encoding="utf-8"))
    assert len(named) >= 50
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not (TESTS.parent / path).is_file() or name not in defined_tests(TESTS.parent / path)
    ]
    assert missing == []
