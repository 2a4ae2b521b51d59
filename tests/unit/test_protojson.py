"""The fast JSON-tree conversions against the ``json_format`` functions they stand in for."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protojson import message_to_dict, parse_dict
from pouch.v1 import audit_pb2, civil_pb2, envelope_pb2, identity_pb2, representation_pb2

# The payloads the exchanges carry; messages with 64-bit integers and bytes; and one
# that is not plain (a Timestamp inside).
MESSAGES: list[type[Message]] = [
    identity_pb2.IdentityClaim,
    identity_pb2.IdentityAnswer,
    civil_pb2.CivilRecordUpdate,
    representation_pb2.AssistedPerson,
    representation_pb2.CostClaim,
    representation_pb2.Attachment,
    audit_pb2.GetInclusionProofResponse,
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


def _single(field: FieldDescriptor, depth: int, sound: bool) -> st.SearchStrategy[Any]:
    """A value for ``field``: of its JSON type if ``sound``, else of any type."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        assert field.message_type is not None
        return _trees(field.message_type, depth + 1, sound) if depth < 4 else st.just({})
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        names = st.sampled_from([value.name for value in field.enum_type.values])
        return names if sound else names | st.integers(min_value=-2, max_value=9) | _texts
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if sound and field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=8).map(lambda raw: base64.b64encode(raw).decode())
        if sound:
            return st.text(max_size=6, alphabet=st.characters(exclude_categories=["Cs"]))
        return _texts | st.integers(min_value=-3, max_value=3)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans() if sound else st.booleans() | st.sampled_from(["true", "false", 1])
    if sound:
        return st.integers(min_value=0, max_value=2**31 - 1)
    return (
        st.integers(min_value=-(2**65), max_value=2**65)
        | st.integers(min_value=-3, max_value=3000)
        | st.sampled_from(["12", "1.0", " 3", 2.0, 2.5, True])
    )


def _value(field: FieldDescriptor, depth: int, sound: bool) -> st.SearchStrategy[Any]:
    if field.is_repeated:
        items = st.lists(_single(field, depth, sound), max_size=3)
        return items if sound else items | _junk
    return _single(field, depth, sound) if sound else _single(field, depth, sound) | st.none()


def _trees(
    descriptor: Any, depth: int = 0, sound: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """JSON trees for ``descriptor``'s message: every key a field's if ``sound`` (each
    value of its field's JSON type), else with unknown keys and values of any type."""
    fields = list(descriptor.fields)
    pairs = [
        st.tuples(st.sampled_from(sorted({f.name, f.json_name})), _value(f, depth, sound))
        for f in fields
    ]
    if not sound:
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
    tree = data.draw(_trees(message_class.DESCRIPTOR, sound=data.draw(st.booleans())))
    ours = _outcome(lambda: parse_dict(tree, message_class))
    theirs = _outcome(lambda: json_format.ParseDict(tree, message_class()))
    assert ours == theirs


@pytest.mark.parametrize("message_class", MESSAGES, ids=lambda m: m.DESCRIPTOR.name)
@settings(max_examples=60)
@given(data=st.data())
def test_every_message_is_written_exactly_as_json_format_writes_it(
    message_class: type[Message], data: st.DataObject
) -> None:
    tree = data.draw(_trees(message_class.DESCRIPTOR, sound=True))
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
