"""What every request is before a handler sees it: parsed, and every value in range.

The guard hands the handler's own bytes to :func:`decode_request` after it has
authenticated the caller, so a caller without credentials learns nothing from a
malformed message, and a message that does not parse is ``INVALID_ARGUMENT`` with
reason ``MALFORMED_REQUEST``, never an error of the protobuf runtime.

:func:`check_values` then walks the parsed message once, by its descriptor, and
refuses what no field of the contract may hold, naming each field by its path
(``update.event.date``, ``attachments[2].name``):

* a ``Timestamp`` outside 0001-01-01..9999-12-31 or with nanos out of range, and a
  ``Duration`` outside ±10,000 years (what the well-known types define);
* an enum value the contract does not list (proto3 keeps unknown numbers);
* text with a control character other than tab, line feed and carriage return;
* an unsigned 64-bit number above 2^63-1: no size, index or count of the contract
  needs more, and the databases hold signed 64-bit integers.

Rules that depend on the field (lengths, which enums are allowed where) stay with
the exchange's own validation; this is the floor under all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from gateway.errors import FieldViolation, ValidationRejected

MAX_VIOLATIONS = 20
"""Violations named in one refusal; a message with more is refused after these."""

_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01T00:00:00Z..9999-12-31
_DURATION_SECONDS = 315_576_000_000
_ALLOWED_CONTROLS = frozenset("\t\n\r")
_MAX_INT64 = 2**63 - 1
_UNSIGNED_64 = frozenset({FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64})
_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F)) - _ALLOWED_CONTROLS


def malformed_request() -> ValidationRejected:
    return ValidationRejected(
        [FieldViolation("request", "is not a well-formed message of this method's type")],
        reason="MALFORMED_REQUEST",
    )


def decode_request(
    deserialize: Callable[[bytes], Any], data: Any, max_bytes: int | None = None
) -> Any:
    """``data`` (the call's bytes) parsed by the method's own deserializer, once it is
    known to be no longer than ``max_bytes`` (``MESSAGE_TOO_LARGE`` otherwise)."""
    if not isinstance(data, bytes):
        return data  # already a message: a handler registered without a deserializer
    if max_bytes is not None and len(data) > max_bytes:
        raise ValidationRejected(
            [FieldViolation("request", f"must be at most {max_bytes} bytes")],
            reason="MESSAGE_TOO_LARGE",
        )
    try:
        return deserialize(data)
    except (DecodeError, RecursionError, ValueError, TypeError) as e:
        raise malformed_request() from e


def check_values(message: Message) -> None:
    """Refuse ``message`` if any value is outside what its field may hold."""
    violations: list[FieldViolation] = []
    for violation in _violations(message, ""):
        violations.append(violation)
        if len(violations) == MAX_VIOLATIONS:
            break
    if violations:
        raise ValidationRejected(violations)


def _violations(message: Message, prefix: str) -> Iterator[FieldViolation]:
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Timestamp":
        yield from _timestamp(message, prefix)
        return
    if descriptor.full_name == "google.protobuf.Duration":
        yield from _duration(message, prefix)
        return
    for field, value in message.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    yield from _value(field.message_type.fields_by_name["value"], item, path)
                    if isinstance(key, str) and _CONTROLS.intersection(key):
                        yield FieldViolation(path, _CONTROL_RULE)
                continue
            for i, item in enumerate(value):
                yield from _value(field, item, f"{path}[{i}]")
        else:
            yield from _value(field, value, path)


_CONTROL_RULE = "must not contain control characters"


def _value(field: FieldDescriptor, value: Any, path: str) -> Iterator[FieldViolation]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        yield from _violations(value, path)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            yield FieldViolation(path, f"must be one of the values of {enum.name}")
    elif field.type == FieldDescriptor.TYPE_STRING and _CONTROLS.intersection(value):
        yield FieldViolation(path, _CONTROL_RULE)
    elif field.type in _UNSIGNED_64 and value > _MAX_INT64:
        yield FieldViolation(path, f"must be at most {_MAX_INT64}")


def _timestamp(message: Any, path: str) -> Iterator[FieldViolation]:
    low, high = _TIMESTAMP_SECONDS
    if not low <= message.seconds <= high or not 0 <= message.nanos <= 999_999_999:
        yield FieldViolation(path or "timestamp", "must be a time between the years 1 and 9999")


def _duration(message: Any, path: str) -> Iterator[FieldViolation]:
    seconds, nanos = message.seconds, message.nanos
    if (
        abs(seconds) > _DURATION_SECONDS
        or abs(nanos) > 999_999_999
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        yield FieldViolation(path or "duration", "must be a duration of at most 10,000 years")
