"""RFC 8785 (JCS) canonical JSON: the one writer of the bytes every signature and digest
covers.

The gateway's signed documents (envelope headers, receipts, payload trees, audit
entries, agreements, trust bundles) are made only of strings, booleans, nulls,
integers of at most 53 bits, lists and objects whose keys lie in the Basic
Multilingual Plane. For such a document RFC 8785 and the standard library's ``json``
(keys sorted, no whitespace, no ASCII escaping) write the same bytes:

* keys: RFC 8785 sorts by UTF-16 code units, which is code point order when no key
  holds a character beyond U+FFFF;
* strings: both escape ``"``, ``\\`` and the controls below U+0020 only, as ``\\b``,
  ``\\t``, ``\\n``, ``\\f``, ``\\r`` or lowercase ``\\u00xx``;
* integers within ±(2**53 - 1): both write plain decimal digits.

:func:`dumps` writes exactly those documents and refuses anything else (a float, a
larger integer, a key beyond the BMP, a lone surrogate, a value of another type) with
:class:`NotCanonical`: nothing the gateway signs needs them (the contract has no
floating-point field, payloads hold integers to ±(2**53 - 1), agreements are refused
when a value has no canonical form), so there is no second writer to fall back on.
``tests/unit/test_jcs.py`` holds every document it writes to the bytes the ``rfc8785``
library writes, and every one it refuses to a document outside that subset.

Why not ``rfc8785.dumps`` itself, measured: 3.2-4x slower per call on the gateway's own
documents (``bench/fast_paths.py``: an envelope's signing input 17.3 µs against 5.1 µs,
a receipt 12.0 against 3.8, an audit entry 21.5 against 6.2, a civil-record update
49.8 against 12.5), about ten calls per identity confirmation across the two gateways;
with it (and protobuf's own JSON tree conversion in place of
:mod:`gateway.protojson`), ``bench/run.py --only identity-32`` run alternately against
the gateway without either took about 10 % more gateway CPU per confirmation (AT + BE
5,485 µs against 4,985, medians of three runs each) and its throughput ratio to the raw
relay fell from 0.232 to 0.213.
"""

from __future__ import annotations

import json
from typing import Any

_MAX_SAFE_INTEGER = 2**53 - 1
_encoder = json.JSONEncoder(
    ensure_ascii=False,
    check_circular=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


class NotCanonical(ValueError):
    """A document outside the subset :func:`dumps` writes; the message says why."""


def dumps(value: Any) -> bytes:
    """The RFC 8785 canonical JSON bytes of ``value``; :class:`NotCanonical` for a
    document outside the subset the gateway signs (see the module)."""
    _require_plain(value)
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError as e:
        raise NotCanonical("a string holds a lone surrogate") from e


def _require_plain(value: Any) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -_MAX_SAFE_INTEGER <= item <= _MAX_SAFE_INTEGER:
                continue
            raise NotCanonical(f"an integer beyond ±{_MAX_SAFE_INTEGER}")
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    raise NotCanonical("an object key that is not text")
                if not (key.isascii() or _in_bmp(key)):
                    raise NotCanonical("an object key beyond the Basic Multilingual Plane")
            pending.extend(item.values())
            continue
        if kind is list or kind is tuple:
            pending.extend(item)
            continue
        if kind is float:
            raise NotCanonical("a floating-point number")
        raise NotCanonical("a value that is not JSON")


def _in_bmp(text: str) -> bool:
    return all(ord(character) <= 0xFFFF for character in text)
