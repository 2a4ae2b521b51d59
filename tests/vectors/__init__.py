"""Published test vectors, kept as files under ``tests/vectors/`` and read through one loader.

Every JSON vector file names where its values were published in a ``source`` field, so
a reader can check them against the original rather than trust this copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent


def load_vector(name: str) -> dict[str, Any]:
    """The JSON vector file ``name`` (such as ``"rfc6962/tree_heads"``) under ``tests/vectors/``."""
    path = (VECTORS / f"{name}.json").resolve()
    if not path.is_relative_to(VECTORS):
        raise ValueError(f"vector {name!r} is outside {VECTORS}")
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not document.get("source"):
        raise ValueError(f"vector {name!r} does not say where it was published")
    return document


def load_icao9303_specimens() -> list[dict[str, Any]]:
    """Every specimen MRZ file under ``tests/vectors/icao9303/``, each with its ``name`` added.

    A specimen file holds the ``lines`` of one MRZ, the ``expected`` fields and the
    ``invalid`` variants derived from it; ``check_digits`` is not a specimen and is read
    with ``load_vector("icao9303/check_digits")``.
    """
    specimens = []
    for path in sorted((VECTORS / "icao9303").glob("*.json")):
        if path.stem == "check_digits":
            continue
        document = load_vector(f"icao9303/{path.stem}")
        if not {"lines", "expected", "invalid", "today"} <= document.keys():
            raise ValueError(f"vector icao9303/{path.stem} is not a specimen MRZ")
        specimens.append({**document, "name": path.stem})
    return specimens
