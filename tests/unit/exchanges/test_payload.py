"""The payload's wire form: canonical bytes out, strict limits on the way in."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.envelope.payload import MAX_DEPTH, decode_payload, encode_payload
from gateway.errors import ValidationRejected


def _nested(levels: int, *, in_lists: bool, leaf: Any = "leaf") -> dict[str, Any]:
    """A tree whose containers nest ``levels`` deep, the top object counting as one."""
    inner: Any = leaf
    for _ in range(levels - 1):
        inner = [inner] if in_lists else {"k": inner}
    return {"top": inner}


@pytest.mark.parametrize("in_lists", [False, True])
def test_the_deepest_allowed_tree_round_trips(in_lists: bool) -> None:
    tree = _nested(MAX_DEPTH, in_lists=in_lists)
    assert decode_payload(encode_payload(tree)) == tree


@pytest.mark.parametrize("in_lists", [False, True])
def test_one_level_more_is_refused_naming_the_payload(in_lists: bool) -> None:
    with pytest.raises(ValidationRejected) as refused:
        decode_payload(encode_payload(_nested(MAX_DEPTH + 1, in_lists=in_lists)))
    assert refused.value.reason == "MALFORMED_PAYLOAD"
    assert [v.field for v in refused.value.violations] == ["payload"]
    assert f"at most {MAX_DEPTH} levels" in refused.value.violations[0].rule


@pytest.mark.parametrize("empty", [{}, []])
def test_an_empty_container_counts_as_a_level(empty: object) -> None:
    allowed = _nested(MAX_DEPTH - 1, in_lists=False, leaf=empty)
    assert decode_payload(encode_payload(allowed)) == allowed
    with pytest.raises(ValidationRejected):
        decode_payload(encode_payload(_nested(MAX_DEPTH, in_lists=False, leaf=empty)))


@pytest.mark.parametrize("data", [b"\xff", b"[1]", b"not json"])
def test_malformed_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ValidationRejected) as refused:
        decode_payload(data)
    assert refused.value.reason == "MALFORMED_PAYLOAD"
