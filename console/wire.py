"""The contract's enums as the pages write them: ``CASE_STATE_IN_PROGRESS`` is
``in_progress`` in a URL, a form and a template, and back.

One :class:`Codes` per enum the pages use; an unknown or empty code reads as the enum's
unspecified value (0), which the gateway refuses by name when it matters.
"""

from __future__ import annotations

from typing import Any, Protocol

from pouch.v1 import agreement_pb2, common_pb2, gateway_pb2
from pouch.v1 import representation_pb2 as rep


class _Enum(Protocol):
    def Name(self, number: Any) -> str: ...
    def Value(self, name: str) -> Any: ...
    def items(self) -> Any: ...


class Codes:
    """The lower-case codes of one enum, without its prefix and its unspecified value."""

    def __init__(self, enum: _Enum, prefix: str) -> None:
        self._enum = enum
        self._prefix = prefix
        self.all = tuple(
            name.removeprefix(prefix).lower() for name, number in enum.items() if number
        )

    def code(self, value: int) -> str:
        """The code of ``value``; empty for the unspecified value."""
        return str(self._enum.Name(value)).removeprefix(self._prefix).lower() if value else ""

    def value(self, code: str) -> Any:
        """The number of ``code`` (the enum's value type); 0, unspecified, for one the
        enum does not list."""
        return self._enum.Value(self._prefix + code.upper()) if code in self.all else 0


CASE_STATES = Codes(rep.CaseState, "CASE_STATE_")
KINDS = Codes(rep.AssistanceKind, "ASSISTANCE_KIND_")
EXCHANGE_TYPES = Codes(common_pb2.ExchangeType, "EXCHANGE_TYPE_")
AGREEMENT_STATUSES = Codes(agreement_pb2.AgreementStatus, "AGREEMENT_STATUS_")
DIAGNOSTIC_STATUSES = Codes(gateway_pb2.DiagnosticStatus, "DIAGNOSTIC_STATUS_")
