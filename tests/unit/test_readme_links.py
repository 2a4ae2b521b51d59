"""The README is complete within the repository: every link it holds is a path in the
repository, never a page elsewhere that could move or change under it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _links(path: Path) -> list[str]:
    return [m["target"] for m in _LINK.finditer(path.read_text(encoding="utf-8"))]


def test_the_readme_links_only_into_the_repository() -> None:
    links = _links(ROOT / "README.md")
    assert "docs/architecture.md" in links
    assert [link for link in links if "://" in link or link.startswith("//")] == []


def test_the_architecture_the_readme_points_to_is_in_the_repository() -> None:
    architecture = ROOT / "docs" / "architecture.md"
    assert architecture.is_file()
    assert [link for link in _links(architecture) if "://" in link] == []


def test_every_document_the_readme_links_exists() -> None:
    missing = [
        link for link in _links(ROOT / "README.md") if not (ROOT / link.split("#", 1)[0]).exists()
    ]
    assert missing == []
