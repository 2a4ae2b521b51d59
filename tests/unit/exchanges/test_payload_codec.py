"""A partner's payload bytes cannot get past the codec in any form but the strict one.

Each attack is first shown against a well-formed payload that decodes, so a refusal
here is the codec's rule and not a broken fixture. The property tests feed random
trees and mutated bytes: only :class:`ValidationRejected` ever comes out, and a valid
tree comes back unchanged.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope.payload import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    decode_payload,
    encode_payload,
)
from gateway.errors import ValidationRejected
from tests.fuzz_budget import examples

BUDGET = settings(max_examples=examples(300))

WELL_FORMED = b'{"event_date":{"day":2,"month":6,"year":1950},"event_type":"BIRTH"}'


def _refusal(data: bytes) -> ValidationRejected:
    assert decode_payload(WELL_FORMED)["event_date"]["year"] == 1950
    with pytest.raises(ValidationRejected) as refused:
        decode_payload(data)
    assert refused.value.reason == "MALFORMED_PAYLOAD"
    return refused.value


def _only(error: ValidationRejected) -> tuple[str, str]:
    (violation,) = error.violations
    return violation.field, violation.rule


def test_integer_of_thousands_of_digits_is_refused_without_parsing_it() -> None:
    digits = b"7" * 200_000
    started = time.perf_counter()
    error = _refusal(b'{"event_date":{"year":' + digits + b"}}")
    assert time.perf_counter() - started < 1.0
    field, rule = _only(error)
    assert field == "payload.event_date.year"
    assert str(MAX_SAFE_INTEGER) in rule
    assert "777" not in error.message


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -(MAX_SAFE_INTEGER + 1), 2**63, 10**30])
def test_integer_beyond_the_exact_range_is_refused(value: int) -> None:
    assert _only(_refusal(b'{"a":[%d]}' % value))[0] == "payload.a[0]"


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1000, 100_000])
def test_nesting_a_thousand_levels_deep_is_refused_before_parsing(levels: int) -> None:
    data = b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"
    assert _only(_refusal(data)) == ("payload", f"must nest at most {MAX_DEPTH} levels")


def test_unterminated_deep_nesting_is_refused_not_recursed_into() -> None:
    _refusal(b'{"a":' + b'[{"k":' * 50_000)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * (MAX_DEPTH * 4)
    assert decode_payload(encode_payload({"text": text})) == {"text": text}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"event_type":"BIRTH","event_type":"DEATH"}', "payload.event_type"),
        (b'{"parties":[{"role":"A","role":"A"}]}', "payload.parties[0].role"),
    ],
    ids=["top-level", "nested"],
)
def test_duplicate_key_is_refused_naming_it(data: bytes, field: str) -> None:
    assert _only(_refusal(data)) == (field, "must not repeat a key of its object")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1E999"])
def test_nan_and_infinities_are_refused(constant: bytes) -> None:
    assert _only(_refusal(b'{"amount":' + constant + b"}")) == (
        "payload.amount",
        "must be a finite number",
    )


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"name":{"given_names":["Jan\\ud800"]}}', "payload.name.given_names[0]"),
        (b'{"name":{"given_names":["\\udfffJan"]}}', "payload.name.given_names[0]"),
        (b'{"\\ud83d":1}', "payload.?"),
    ],
    ids=["high", "low", "key"],
)
def test_lone_surrogate_is_refused(data: bytes, field: str) -> None:
    assert _only(_refusal(data)) == (field, "must not contain a lone surrogate")


def test_a_surrogate_pair_is_one_character_and_accepted() -> None:
    assert decode_payload(b'{"name":"\\ud83d\\ude00"}') == {"name": "\U0001f600"}


@pytest.mark.parametrize("data", [b"\xed\xa0\x80", b'"text"', b"[]", b"", b'{"a":1}x'])
def test_non_object_or_non_utf8_bytes_are_refused(data: bytes) -> None:
    _refusal(data)


@pytest.mark.parametrize(
    "tree",
    [{"a": float("nan")}, {"a": 2**60}, {"a": "\ud800"}, {"a": b"bytes"}, {"a": {1: 2}}],
    ids=["nan", "huge", "surrogate", "bytes", "int-key"],
)
def test_the_sender_cannot_encode_what_the_receiver_refuses(tree: dict[str, Any]) -> None:
    assert encode_payload({"a": 1}) == b'{"a":1}'
    with pytest.raises(ValidationRejected) as refused:
        encode_payload(tree)
    assert refused.value.reason == "MALFORMED_PAYLOAD"


def test_encoding_is_rfc8785() -> None:
    assert encode_payload({"b": [1, "é"], "a": None, "c": -7}) == (
        '{"a":null,"b":[1,"é"],"c":-7}'.encode()
    )


@pytest.mark.parametrize(
    ("tree", "data"),
    [
        ({"a": 1.5}, b'{"a":1.5}'),
        ({"a": 1.0}, b'{"a":1e2}'),
        ({"\U0001f600": 1}, '{"\U0001f600":1}'.encode()),
    ],
)
def test_a_fraction_or_a_key_beyond_the_bmp_is_refused_both_ways(
    tree: dict[str, Any], data: bytes
) -> None:
    # Nothing in the contract needs either, and the canonical writer writes neither.
    for attempt in (lambda: encode_payload(tree), lambda: decode_payload(data)):
        with pytest.raises(ValidationRejected) as refused:
            attempt()
        assert refused.value.reason == "MALFORMED_PAYLOAD"


# -- properties ------------------------------------------------------------------

_KEYS = st.text(st.characters(codec="utf-8", max_codepoint=0xFFFF), max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(codec="utf-8"), max_size=12)
)


def _trees(depth: int) -> st.SearchStrategy[Any]:
    if depth == 1:
        return _SCALARS
    inner = _trees(depth - 1)
    return _SCALARS | st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3)


_VALID_TREES = st.dictionaries(_KEYS, _trees(4), max_size=4)


@pytest.mark.fuzz
@BUDGET
@given(_VALID_TREES)
def test_a_valid_tree_round_trips(tree: dict[str, Any]) -> None:
    data = encode_payload(tree)
    assert decode_payload(data) == tree
    assert encode_payload(decode_payload(data)) == data


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(encode_payload(draw(_VALID_TREES)))
    hostile = [b"NaN", b"1e999", b'"\\ud800"', b"[" * 40, b"9" * 40, b',"a":1', b"\xff", b"}"]
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        if draw(st.booleans()):
            data[where:where] = draw(st.sampled_from(hostile))
        elif data:
            data[min(where, len(data) - 1)] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.fuzz
@BUDGET
@given(_mutated())
def test_mutated_bytes_give_a_tree_or_a_validation_refusal_only(data: bytes) -> None:
    try:
        tree = decode_payload(data)
    except ValidationRejected as refused:
        assert refused.reason == "MALFORMED_PAYLOAD"
        assert refused.violations
        return
    # Whatever was accepted is in the strict form: it encodes, and decodes the same.
    assert decode_payload(encode_payload(tree)) == tree
    assert json.loads(data) == tree
