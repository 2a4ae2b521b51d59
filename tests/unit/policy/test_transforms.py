"""Transforms hide what they must and stay stable when applied twice."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.policy.transforms import (
    HASH_PREFIX,
    MASK,
    KeyedHash,
    generalize,
    is_hash_token,
    keyed_hash,
    mask,
)

KEY = b"\x01" * 32


def test_mask_output_does_not_depend_on_the_value_or_its_length() -> None:
    assert {mask("A"), mask("a much longer act reference 2025/0042117")} == {MASK}


def test_keyed_hash_is_hmac_sha256_of_the_utf8_value() -> None:
    expected = hmac.new(KEY, "Łukasz".encode(), hashlib.sha256).hexdigest()
    assert keyed_hash("Łukasz", KEY) == HASH_PREFIX + expected


def test_hash_links_same_value_under_same_key_only() -> None:
    ours, theirs = KeyedHash(KEY), KeyedHash(KEY)
    assert ours("AT-REG-1") == theirs("AT-REG-1")
    assert ours("AT-REG-1") != ours("AT-REG-2")
    assert ours("AT-REG-1") != KeyedHash(b"\x02" * 32)("AT-REG-1")


def test_hashing_a_hash_token_is_idempotent() -> None:
    token = keyed_hash("AT-REG-1", KEY)
    assert is_hash_token(token)
    assert keyed_hash(token, KEY) == token
    assert not is_hash_token("hmac-sha256:" + "G" * 64)


def test_linkage_key_shorter_than_32_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyedHash(b"\x01" * 31)


def test_generalize_date_to_year() -> None:
    assert generalize({"year": 1988, "month": 3, "day": 14}, "year") == {"year": 1988}
    assert generalize({"year": 1988, "month": 3, "day": 14}, "month") == {"year": 1988, "month": 3}


def test_generalize_place_to_country_or_city() -> None:
    place = {"country_code": "BE", "locality": "Ixelles"}
    assert generalize(place, "country") == {"country_code": "BE"}
    assert generalize(place, "city") == place
    assert generalize(generalize(place, "country"), "country") == {"country_code": "BE"}
