"""The one map between exchange types on the wire and their names in agreements and logs."""

from __future__ import annotations

from pouch.v1 import common_pb2

EXCHANGE_TYPES: dict[str, common_pb2.ExchangeType.ValueType] = {
    "civil_record": common_pb2.EXCHANGE_TYPE_CIVIL_RECORD,
    "identity_confirmation": common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
    "representation": common_pb2.EXCHANGE_TYPE_REPRESENTATION,
    "agreement_notice": common_pb2.EXCHANGE_TYPE_AGREEMENT_NOTICE,
}
EXCHANGE_NAMES: dict[int, str] = {number: name for name, number in EXCHANGE_TYPES.items()}


def exchange_name(value: int) -> str:
    """The name of a wire exchange type; ``unknown`` for a number we do not know."""
    return EXCHANGE_NAMES.get(value, "unknown")
