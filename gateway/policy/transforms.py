"""The value transforms a field rule can ask for: mask, keyed hash, generalise.

Guarantees:

* :func:`mask` returns the same fixed string for every input, so neither the value
  nor its length crosses.
* :class:`KeyedHash` is HMAC-SHA256 under a per-agreement key of at least 32 bytes,
  rendered ``"hmac-sha256:" + hex``. Two gateways holding the key derive the same
  token for the same value (linkage without disclosure); without the key the token
  reveals nothing. Without the key no token can be checked, so a value that already
  has the token's form is passed through unchanged: hashing is idempotent, which
  lets the receiver re-evaluate what the sender minimised.
* Generalisation keeps only the named parts of a date (``year``; ``month`` = year and
  month) or a place (``country`` = country code; ``city`` = country code and locality).
  Every transform is idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, get_args

DateLevel = Literal["year", "month"]
PlaceLevel = Literal["country", "city"]
GeneralizeLevel = Literal["year", "month", "country", "city"]
DATE_LEVELS: tuple[DateLevel, ...] = get_args(DateLevel)
PLACE_LEVELS: tuple[PlaceLevel, ...] = get_args(PlaceLevel)

MASK = "***"
HASH_PREFIX = "hmac-sha256:"
MIN_HASH_KEY_BYTES = 32

_HASH_TOKEN = re.compile(r"hmac-sha256:[0-9a-f]{64}")

KEPT_PARTS: Mapping[GeneralizeLevel, frozenset[str]] = MappingProxyType(
    {
        "year": frozenset({"year"}),
        "month": frozenset({"year", "month"}),
        "country": frozenset({"country_code"}),
        "city": frozenset({"country_code", "locality"}),
    }
)


def mask(value: str) -> str:
    """The fixed mask; the argument is ignored on purpose (its length must not leak)."""
    del value
    return MASK


def is_hash_token(value: str) -> bool:
    """Whether ``value`` already has the form of a keyed-hash token."""
    return _HASH_TOKEN.fullmatch(value) is not None


class KeyedHash:
    """HMAC-SHA256 under one agreement's linkage key; build once per evaluation."""

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_HASH_KEY_BYTES:
            raise ValueError(f"a linkage key needs at least {MIN_HASH_KEY_BYTES} bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, value: str) -> str:
        if is_hash_token(value):
            return value
        mac = self._mac.copy()
        mac.update(value.encode("utf-8"))
        return HASH_PREFIX + mac.hexdigest()


def keyed_hash(value: str, key: bytes) -> str:
    """One-off keyed hash of ``value``; prefer :class:`KeyedHash` for many values."""
    return KeyedHash(key)(value)


def generalize(tree: Mapping[str, object], level: GeneralizeLevel) -> dict[str, object]:
    """A date or place tree reduced to the parts ``level`` keeps."""
    kept = KEPT_PARTS[level]
    return {k: v for k, v in tree.items() if k in kept}
