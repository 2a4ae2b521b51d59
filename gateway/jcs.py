"""RFC 8785 (JCS) canonical JSON, the bytes every signature and digest covers.

:func:`dumps` gives exactly what ``rfc8785.dumps`` gives, faster for the documents the
gateway signs on every exchange. For a document made only of strings, booleans,
nulls, integers of at most 53 bits, lists and objects whose keys lie in the Basic
Multilingual Plane, RFC 8785 and the standard library's ``json`` (keys sorted, no
whitespace, no ASCII escaping) write the same bytes:

* keys: RFC 8785 sorts by UTF-16 code units, which is code point order when no key
  holds a character beyond U+FFFF;
* strings: both escape ``"``, ``\\`` and the controls below U+0020 only, as ``\\b``,
  ``\\t``, ``\\n``, ``\\f``, ``\\r`` or lowercase ``\\u00xx``;
* integers within ±(2**53 - 1): both write plain decimal digits.

Anything else (a float, a larger integer, a key beyond the BMP, a lone surrogate, a
value of another type) is handed to ``rfc8785`` itself, which writes it or raises its
own error. ``tests/unit/test_jcs.py`` holds the two to the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_MAX_SAFE_INTEGER = 2**53 - 1
_encoder = json.JSONEncoder(
    ensure_ascii=False,
    check_circular=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def dumps(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of ``value``."""
    if _plain(value):
        try:
            return _encoder.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 says what becomes of it
    return bytes(rfc8785.dumps(value))


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only what both encoders write alike (see the module)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key in item:
                if type(key) is not str or not (key.isascii() or _in_bmp(key)):
                    return False
            pending.extend(item.values())
            continue
        if kind is list or kind is tuple:
            pending.extend(item)
            continue
        return False
    return True


def _in_bmp(text: str) -> bool:
    return all(ord(character) <= 0xFFFF for character in text)
