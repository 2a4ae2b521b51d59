"""Page tokens: one opaque, checked format for every list call of the local API.

A token is ``p1.<cursor>.<check>``: the cursor (where the next page starts, in the
listing's own terms) as unpadded base64url, and a check of 16 hex digits binding it
to the listing that issued it. A token that does not have this shape, is longer than
:data:`MAX_TOKEN`, was issued by another listing or was altered is refused as
``page_token`` before any cursor is read. Tokens are not secret and need not be: every
page is read under the caller's own visibility rules, so a made-up cursor can only
start a page the caller could have reached anyway; the check keeps a corrupted or
mixed-up token from being read as a different place in a different listing.

    token = issue("audit.entries", "42")
    read("audit.entries", token)  # -> "42"
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from gateway.errors import FieldViolation, ValidationRejected

MAX_TOKEN = 512
_SHAPE = re.compile(r"p1\.([A-Za-z0-9_-]{1,480})\.([0-9a-f]{16})")


def _check(listing: str, cursor: bytes) -> str:
    digest = hashlib.sha256(b"pouch page token\x00" + listing.encode() + b"\x00" + cursor)
    return digest.hexdigest()[:16]


def issue(listing: str, cursor: str) -> str:
    """The token for a next page starting after ``cursor`` in ``listing``."""
    raw = cursor.encode()
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"p1.{text}.{_check(listing, raw)}"


def read(listing: str, token: str, field: str = "page_token") -> str | None:
    """The cursor of ``token`` (None for the first page), or a refusal naming ``field``."""
    if not token:
        return None
    match = _SHAPE.fullmatch(token) if len(token) <= MAX_TOKEN else None
    if match is None:
        raise _not_ours(field)
    text, check = match.groups()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = raw.decode("ascii")
    except (binascii.Error, ValueError) as e:
        raise _not_ours(field) from e
    if not hmac.compare_digest(check, _check(listing, raw)) or not cursor.isprintable():
        raise _not_ours(field)
    return cursor


def read_index(listing: str, token: str, field: str = "page_token") -> int | None:
    """A cursor that is a position: ASCII digits, at most 18 of them."""
    cursor = read(listing, token, field)
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
        raise _not_ours(field)
    return int(cursor)


def _not_ours(field: str) -> ValidationRejected:
    return ValidationRejected([FieldViolation(field, "must be a page token this listing issued")])
