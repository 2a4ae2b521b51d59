"""How a minimised payload travels inside an envelope: RFC 8785 JSON of its tree.

The policy works on the dict tree of a protobuf message (proto field names). After
minimisation the tree no longer always fits the message (a hashed identifier is a
token, a generalised date lacks its day), so it crosses as canonical JSON: the same
tree always gives the same bytes, which the envelope signature and the receipt's
request digest cover. The receiver decodes with strict limits before anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway import jcs
from gateway.errors import FieldViolation, ValidationRejected

MAX_DEPTH = 16


def encode_payload(tree: Mapping[str, Any]) -> bytes:
    return bytes(jcs.dumps(dict(tree)))


def _nests_deeper(tree: dict[str, Any], limit: int) -> bool:
    """Whether a container of ``tree`` sits more than ``limit`` levels down (``tree`` is 1)."""
    level: list[Any] = [tree]
    depth = 1
    while level:
        if depth > limit:
            return True
        inner: list[Any] = []
        for value in level:
            inner.extend(
                v
                for v in (value.values() if isinstance(value, dict) else value)
                if isinstance(v, (dict, list))
            )
        level = inner
        depth += 1
    return False


def decode_payload(data: bytes) -> dict[str, Any]:
    """The payload tree, or :class:`ValidationRejected` naming ``payload``."""
    try:
        tree = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValidationRejected(
            [FieldViolation("payload", "must be UTF-8 JSON")], reason="MALFORMED_PAYLOAD"
        ) from e
    if not isinstance(tree, dict):
        raise ValidationRejected(
            [FieldViolation("payload", "must be a JSON object")], reason="MALFORMED_PAYLOAD"
        )
    if _nests_deeper(tree, MAX_DEPTH):
        raise ValidationRejected(
            [FieldViolation("payload", f"must nest at most {MAX_DEPTH} levels")],
            reason="MALFORMED_PAYLOAD",
        )
    return tree
