"""The fast canonical JSON writer against the ``rfc8785`` library it stands in for."""

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


def _either(value: Any) -> tuple[str, bytes | type[BaseException]]:
    try:
        return "bytes", bytes(rfc8785.dumps(value))
    except Exception as e:
        return "error", type(e)


def _ours(value: Any) -> tuple[str, bytes | type[BaseException]]:
    try:
        return "bytes", jcs.dumps(value)
    except Exception as e:
        return "error", type(e)


@settings(max_examples=400, deadline=None)
@given(_documents)
def test_every_document_is_written_exactly_as_rfc8785_writes_it(document: Any) -> None:
    assert _ours(document) == _either(document)


@pytest.mark.parametrize(
    "document",
    [
        {"\U0001f600": 1, "\ufb01": 2, "a": 3},  # UTF-16 order differs from code points
        {"n": 2**53 - 1, "m": -(2**53 - 1)},
        {"n": 2**53},
        {"f": 1.0, "g": 1e21, "h": -0.0},
        {"s": '\x00\x08\t\n\x0c\r\x1f\x7f"\\/\u2028\u2029é'},
        {"lone": "\ud800"},
        [True, False, None, "", [], {}],
        ("tuple", 1),
    ],
)
def test_edge_cases_agree_with_rfc8785(document: Any) -> None:
    assert _ours(document) == _either(document)


def test_a_value_with_no_json_form_is_refused_as_rfc8785_refuses_it() -> None:
    assert _ours({"when": object()})[0] == "error"
    assert _ours({"when": object()}) == _either({"when": object()})
