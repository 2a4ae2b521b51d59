"""The canonical form of an agreement: the bytes both parties sign and envelopes pin.

Canonical form = RFC 8785 (JCS) JSON of the parsed document without its
``signatures`` key, calendar dates written as ``YYYY-MM-DD`` strings. It depends
only on the values in the file, never on YAML layout, comments, quoting or key
order, so two files that mean the same agreement have the same digest and a
signature survives reformatting. The digest is ``sha256:`` + lowercase hex.

Only JSON values (and dates) are accepted; anything else raises
:class:`CanonicalFormError`, so no YAML-only type can make the signed bytes
ambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from gateway import jcs

SIGNATURES_KEY = "signatures"


class CanonicalFormError(ValueError):
    """The document holds a value with no canonical JSON form."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        raise CanonicalFormError("date-times are not allowed in an agreement, only dates")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise CanonicalFormError("mapping keys must be strings")
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    raise CanonicalFormError(f"a {type(value).__name__} value has no JSON form")


def canonical_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The signed content of ``document``: JSON values only, ``signatures`` removed."""
    return {key: _jsonable(value) for key, value in document.items() if key != SIGNATURES_KEY}


def canonical_bytes(document: Mapping[str, Any]) -> bytes:
    """RFC 8785 bytes of :func:`canonical_document`."""
    try:
        return jcs.dumps(canonical_document(document))
    except jcs.NotCanonical as e:
        raise CanonicalFormError(f"no canonical JSON form: {e}") from e


def digest_of(canonical: bytes) -> str:
    """``sha256:`` + hex SHA-256 of canonical bytes: what envelopes name."""
    return "sha256:" + hashlib.sha256(canonical).hexdigest()
