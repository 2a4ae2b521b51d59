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


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


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
    if _depth(tree) > MAX_DEPTH:
        raise ValidationRejected(
            [FieldViolation("payload", f"must nest at most {MAX_DEPTH} levels")],
            reason="MALFORMED_PAYLOAD",
        )
    return tree
