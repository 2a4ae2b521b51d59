"""How a minimised payload travels inside an envelope: RFC 8785 JSON of its tree.

The policy works on the dict tree of a protobuf message (proto field names). After
minimisation the tree no longer always fits the message (a hashed identifier is a
token, a generalised date lacks its day), so it crosses as canonical JSON: the same
tree always gives the same bytes, which the envelope signature and the receipt's
request digest cover.

Both ends hold a payload to the same strict form, the I-JSON subset (RFC 7493) that
RFC 8785 can write back unchanged. :func:`decode_payload` (the receiver, before
anything else reads the payload) and :func:`encode_payload` (the sender, before it
signs) refuse with :class:`~gateway.errors.ValidationRejected`, reason
``MALFORMED_PAYLOAD``, naming the path (``payload.parties[0].person.name``):

* bytes that are not UTF-8 JSON, or a top level that is not an object;
* containers nested more than :data:`MAX_DEPTH` levels (the top object is one),
  found by a scan of the brackets outside strings *before* the parser recurses;
* a key repeated in one object (parsers disagree on which one wins);
* a number that is not an integer (``1.5``, ``1e2``, ``NaN``, ``Infinity``): the
  contract has no fractional field, and :mod:`gateway.jcs` writes none;
* an integer outside ±(2**53 - 1), refused by the length of its digits before any
  is converted, so thousands of digits cost nothing;
* a lone surrogate in a key or a string (it has no UTF-8 form);
* a key with a character beyond the Basic Multilingual Plane (RFC 8785 orders keys by
  UTF-16 code units; :mod:`gateway.jcs` writes only keys where that is code point
  order, and a field name never needs more);
* on encoding, a value of another type than JSON's.

Which fields a payload may have, and of what type, is for the policy stage
(:func:`gateway.policy.evaluate.evaluate`); this module knows no schema.

    data = encode_payload(minimised.payload)   # sender, before signing
    tree = decode_payload(verified.payload)    # receiver, after the signature
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import jcs
from gateway.errors import FieldViolation, ValidationRejected

MAX_DEPTH = 16
MAX_SAFE_INTEGER = 2**53 - 1
MALFORMED = "MALFORMED_PAYLOAD"

_INTEGER_RULE = f"must be an integer from -{MAX_SAFE_INTEGER} to {MAX_SAFE_INTEGER}"
_NUMBER_RULE = "must be a finite number"
_FRACTION_RULE = "must be an integer"
_KEY_RULE = "must have keys within the Basic Multilingual Plane"
_SURROGATE_RULE = "must not contain a lone surrogate"
_DUPLICATE_RULE = "must not repeat a key of its object"
_DEPTH_RULE = f"must nest at most {MAX_DEPTH} levels"
# More digits than the largest safe integer has can only be out of range.
_MAX_DIGITS = len(str(MAX_SAFE_INTEGER))
# An unterminated string runs to the end, so no match is ever retried from a later
# quote: the scan stays linear in the payload's length.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
# Every byte but the four brackets is deleted, and both kinds become one.
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


@dataclass(frozen=True, slots=True)
class _Refused:
    """Left in the tree by a parser hook, so the walk can name where it stood."""

    rule: str
    key: str | None = None


def encode_payload(tree: Mapping[str, Any]) -> bytes:
    """The RFC 8785 bytes of ``tree``, or :class:`ValidationRejected` as decoding would."""
    document = dict(tree)
    _check_tree(document)
    return jcs.dumps(document)


def decode_payload(data: bytes) -> dict[str, Any]:
    """The payload tree, or :class:`ValidationRejected` naming the path and the rule."""
    if _nests_deeper(data, MAX_DEPTH):
        raise _malformed("payload", _DEPTH_RULE)
    try:
        tree = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_object,
            parse_int=_integer,
            parse_float=_number,
            parse_constant=_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _malformed("payload", "must be UTF-8 JSON") from e
    except RecursionError as e:  # the bracket scan should have stopped it; fail closed
        raise _malformed("payload", _DEPTH_RULE) from e
    _check_tree(tree)
    if not isinstance(tree, dict):
        raise _malformed("payload", "must be a JSON object")
    return tree


def _nests_deeper(data: bytes, limit: int) -> bool:
    """Whether the brackets outside strings nest more than ``limit`` deep.

    Each pass deletes the innermost pairs, so balanced brackets ``limit`` deep are gone
    after ``limit`` passes; a pair left over means more. Brackets that do not balance
    are malformed JSON, which the parser refuses without recursing past them.
    """
    brackets = _STRING.sub(b"", data).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return b"()" in brackets


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Refused:
    tree = dict(pairs)
    if len(tree) == len(pairs):
        return tree
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _Refused(_DUPLICATE_RULE, key=key)
        seen.add(key)
    raise AssertionError("fewer keys than pairs means one repeats")


def _integer(digits: str) -> int | _Refused:
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        return _Refused(_INTEGER_RULE)
    value = int(digits)
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _Refused(_INTEGER_RULE)


def _number(text: str) -> _Refused:
    return _Refused(_FRACTION_RULE if math.isfinite(float(text)) else _NUMBER_RULE)


def _constant(_name: str) -> _Refused:
    return _Refused(_NUMBER_RULE)


def _check_tree(tree: Any) -> None:
    """Walk ``tree`` without recursion; refuse at the first value out of the strict form."""
    pending: list[tuple[str, Any, int]] = [("payload", tree, 1)]
    while pending:
        path, value, depth = pending.pop()
        if isinstance(value, _Refused):
            raise _malformed(path if value.key is None else _join(path, value.key), value.rule)
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise _malformed(path, _SURROGATE_RULE)
        elif value is None or isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                raise _malformed(path, _INTEGER_RULE)
        elif isinstance(value, float):
            raise _malformed(path, _FRACTION_RULE if math.isfinite(value) else _NUMBER_RULE)
        elif isinstance(value, (dict, list, tuple)):
            if depth > MAX_DEPTH:
                raise _malformed("payload", _DEPTH_RULE)
            pending.extend(_children(path, value, depth))
        else:
            raise _malformed(path, "must be a JSON value")


def _children(path: str, value: Any, depth: int) -> list[tuple[str, Any, int]]:
    if not isinstance(value, dict):
        return [(f"{path}[{index}]", item, depth + 1) for index, item in enumerate(value)]
    children = []
    for key, item in value.items():
        if not isinstance(key, str):
            raise _malformed(path, "must have text keys")
        if _SURROGATE.search(key):
            raise _malformed(_join(path, key), _SURROGATE_RULE)
        if not key.isascii() and max(map(ord, key)) > 0xFFFF:
            raise _malformed(path, _KEY_RULE)
        children.append((_join(path, key), item, depth + 1))
    return children


def _join(path: str, key: str) -> str:
    # A key is a field name; one that is not is never echoed, since it may be data.
    name = key if key.isascii() and key.isidentifier() else "?"
    return f"{path}.{name}"


def _malformed(path: str, rule: str) -> ValidationRejected:
    return ValidationRejected([FieldViolation(path, rule)], reason=MALFORMED)
