"""The one canonical JSON writer against the ``rfc8785`` library: the same bytes for
every document it writes, and a refusal only for a document outside the subset the
gateway signs."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import jcs

_texts = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=["Cs"])
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=25,
)
_signed_scalars = st.none() | st.booleans() | st.integers(-(2**53 - 1), 2**53 - 1) | _texts
_signed_keys = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0xFFFF, exclude_categories=["Cs"])
)
_signed_documents = st.recursive(
    _signed_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_signed_keys, inner, max_size=4),
    max_leaves=25,
)


def _in_subset(value: Any) -> bool:
    """Whether ``value`` lies in the subset the gateway signs (see gateway/jcs.py)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, int):
        return abs(value) <= 2**53 - 1
    if isinstance(value, list | tuple):
        return all(_in_subset(v) for v in value)
    if isinstance(value, dict):
        keys_fit = all(
            isinstance(k, str) and _in_subset(k) and all(ord(c) <= 0xFFFF for c in k) for k in value
        )
        return keys_fit and all(_in_subset(v) for v in value.values())
    return False


@settings(max_examples=400, deadline=None)
@given(_signed_documents)
def test_every_document_the_gateway_signs_is_written_exactly_as_rfc8785_writes_it(
    document: Any,
) -> None:
    assert jcs.dumps(document) == bytes(rfc8785.dumps(document))


@settings(max_examples=400, deadline=None)
@given(_documents)
def test_a_document_is_refused_only_outside_the_subset_and_otherwise_written_alike(
    document: Any,
) -> None:
    if _in_subset(document):
        assert jcs.dumps(document) == bytes(rfc8785.dumps(document))
    else:
        with pytest.raises(jcs.NotCanonical):
            jcs.dumps(document)


@pytest.mark.parametrize(
    "document",
    [
        {"\ufb01": 2, "a": 3, "\u00e9": 1},
        {"n": 2**53 - 1, "m": -(2**53 - 1)},
        {"s": '\x00\x08\t\n\x0c\r\x1f\x7f"\\/\u2028\u2029\u00e9\U0001f600'},
        [True, False, None, "", [], {}],
        ("tuple", 1),
    ],
)
def test_edge_cases_inside_the_subset_agree_with_rfc8785(document: Any) -> None:
    assert jcs.dumps(document) == bytes(rfc8785.dumps(document))


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ({"\U0001f600": 1, "\ufb01": 2}, "beyond the Basic Multilingual Plane"),
        ({"n": 2**53}, "an integer beyond"),
        ({"f": 1.0}, "a floating-point number"),
        ({"lone": "\ud800"}, "lone surrogate"),
        ({"when": object()}, "not JSON"),
        ({1: "key"}, "not text"),
    ],
)
def test_a_document_outside_the_subset_is_refused_with_the_reason(document: Any, why: str) -> None:
    with pytest.raises(jcs.NotCanonical, match=why):
        jcs.dumps(document)
