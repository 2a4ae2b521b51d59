"""The fast JSON-tree conversions against the ``json_format`` functions they stand in for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protojson import message_to_dict, parse_dict
from pouch.v1 import civil_pb2, envelope_pb2, identity_pb2, representation_pb2

# The payloads the exchanges carry, and one that is not plain (a Timestamp inside).
MESSAGES: list[type[Message]] = [
    identity_pb2.IdentityClaim,
    identity_pb2.IdentityAnswer,
    civil_pb2.CivilRecordUpdate,
    representation_pb2.AssistedPerson,
    envelope_pb2.Envelope,
]

_texts = st.text(max_size=6) | st.sampled_from(["\ud800", "a\udfff", "\U0001f600", "Müller"])
_junk: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | _texts
    | st.just([])
    | st.just({})
)


def _single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        assert field.message_type is not None
        return _trees(field.message_type, depth + 1) if depth < 4 else st.just({})
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        names = [value.name for value in field.enum_type.values]
        return st.sampled_from(names) | st.integers(min_value=-2, max_value=9) | _texts
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return _texts | st.integers(min_value=-3, max_value=3)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans() | st.sampled_from(["true", "false", 1])
    return (
        st.integers(min_value=-(2**65), max_value=2**65)
        | st.integers(min_value=-3, max_value=3000)
        | st.sampled_from(["12", "1.0", " 3", 2.0, 2.5, True])
    )


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.is_repeated:
        return st.lists(_single(field, depth), max_size=3) | _junk
    return _single(field, depth) | st.none()


def _trees(descriptor: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    fields = list(descriptor.fields)
    pairs = [
        st.tuples(st.sampled_from(sorted({f.name, f.json_name})), _value(f, depth)) for f in fields
    ]
    pairs.append(st.tuples(st.sampled_from(["unknown", "Unknown", "[x.y]"]), _junk))
    return st.lists(st.one_of(pairs), max_size=len(fields) + 1).map(dict)


def _outcome(convert: Callable[[], Any]) -> tuple[str, Any]:
    try:
        result = convert()
    except Exception as e:
        return "error", type(e)
    if isinstance(result, Message):
        return "message", result.SerializeToString(deterministic=True)
    return "tree", result


@pytest.mark.parametrize("message_class", MESSAGES, ids=lambda m: m.DESCRIPTOR.name)
@settings(max_examples=60)
@given(data=st.data())
def test_every_tree_is_read_or_refused_exactly_as_json_format_does(
    message_class: type[Message], data: st.DataObject
) -> None:
    tree = data.draw(_trees(message_class.DESCRIPTOR))
    ours = _outcome(lambda: parse_dict(tree, message_class))
    theirs = _outcome(lambda: json_format.ParseDict(tree, message_class()))
    assert ours == theirs


@pytest.mark.parametrize("message_class", MESSAGES, ids=lambda m: m.DESCRIPTOR.name)
@settings(max_examples=60)
@given(data=st.data())
def test_every_message_is_written_exactly_as_json_format_writes_it(
    message_class: type[Message], data: st.DataObject
) -> None:
    tree = data.draw(_trees(message_class.DESCRIPTOR))
    try:
        message = json_format.ParseDict(tree, message_class())
    except Exception:  # refused (upb even raises SystemError for a lone surrogate enum name)
        message = message_class()
    ours = _outcome(lambda: message_to_dict(message))
    theirs = _outcome(lambda: json_format.MessageToDict(message, preserving_proto_field_name=True))
    assert ours == theirs


def test_an_enum_number_without_a_name_is_written_as_json_format_writes_it() -> None:
    answer = identity_pb2.IdentityAnswer(request_message_id="m")
    answer.result = 77  # type: ignore[assignment]  # an open enum keeps unknown numbers
    expected = json_format.MessageToDict(answer, preserving_proto_field_name=True)
    assert message_to_dict(answer) == expected == {"request_message_id": "m", "result": 77}


@pytest.mark.parametrize(
    "tree",
    [
        {"document_number": "X1", "documentNumber": "X2"},  # one field, two spellings
        {"name": {"given_names": ["A"]}, "nationality": None},
        {"date_of_birth": {"year": "1990"}},
        {"date_of_birth": {"year": 2**40}},
        {"sex": 2},
        {"document_number": "\ud800"},
        {"name": []},
        {"extra": 1},
    ],
)
def test_trees_off_the_fast_path_get_json_format_s_own_answer(tree: dict[str, Any]) -> None:
    ours = _outcome(lambda: parse_dict(tree, identity_pb2.IdentityClaim))
    theirs = _outcome(lambda: json_format.ParseDict(tree, identity_pb2.IdentityClaim()))
    assert ours == theirs


def test_an_empty_sub_message_is_present_after_reading() -> None:
    claim = parse_dict({"name": {}}, identity_pb2.IdentityClaim)
    assert claim.HasField("name")
