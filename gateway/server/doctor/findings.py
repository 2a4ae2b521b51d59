"""What a diagnosis answers: one finding per check, and each partner's last contact.

A finding is OK, WARN (works now, will not for long or cannot be told from here) or
FAIL (something named in the configuration does not work). A FAIL always carries a
remedy; the exit code of ``pouch doctor`` is non-zero when any finding is a FAIL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.delivery.partner_contact import PartnerContact
from pouch.v1 import gateway_pb2


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


_WIRE = {
    Status.OK: gateway_pb2.DIAGNOSTIC_STATUS_OK,
    Status.WARN: gateway_pb2.DIAGNOSTIC_STATUS_WARN,
    Status.FAIL: gateway_pb2.DIAGNOSTIC_STATUS_FAIL,
}
_FROM_WIRE = {wire: status for status, wire in _WIRE.items()}


@dataclass(frozen=True)
class Finding:
    """One row: ``check`` names what was checked (``crl own``, ``partner BE``…).
    A failure always says what to do."""

    status: Status
    check: str
    detail: str
    remedy: str = ""

    def __post_init__(self) -> None:
        if self.status is Status.FAIL and not self.remedy:
            raise ValueError(f"a failed check ({self.check}) needs a remedy")


def ok(check: str, detail: str) -> Finding:
    return Finding(Status.OK, check, detail)


def warn(check: str, detail: str, remedy: str = "") -> Finding:
    return Finding(Status.WARN, check, detail, remedy)


def fail(check: str, detail: str, remedy: str) -> Finding:
    return Finding(Status.FAIL, check, detail, remedy)


@dataclass(frozen=True)
class Diagnosis:
    findings: tuple[Finding, ...]
    partners: tuple[PartnerContact, ...] = ()

    @property
    def failed(self) -> bool:
        return any(f.status is Status.FAIL for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        """The shape of ``pouch doctor --json``: stable keys for monitoring."""
        counts = {s.value: sum(f.status is s for f in self.findings) for s in Status}
        return {
            "status": "FAIL" if self.failed else ("WARN" if counts["WARN"] else "OK"),
            "counts": counts,
            "findings": [
                {
                    "status": f.status.value,
                    "check": f.check,
                    "detail": f.detail,
                    "remedy": f.remedy,
                }
                for f in self.findings
            ],
            "partners": [
                {
                    "state": p.state,
                    "last_contact": p.last_contact.isoformat() if p.last_contact else None,
                    "reachable": p.reachable,
                }
                for p in self.partners
            ],
        }

    def to_wire(self) -> gateway_pb2.RunDiagnosticsResponse:
        answer = gateway_pb2.RunDiagnosticsResponse()
        for f in self.findings:
            answer.findings.add(
                status=_WIRE[f.status], check=f.check, detail=f.detail, remedy=f.remedy
            )
        for p in self.partners:
            health = answer.partners.add(state=p.state)
            if p.last_contact is not None:
                stamp = Timestamp()
                stamp.FromDatetime(p.last_contact)
                health.last_contact.CopyFrom(stamp)
            if p.reachable is not None:
                health.reachability = (
                    gateway_pb2.REACHABILITY_REACHABLE
                    if p.reachable
                    else gateway_pb2.REACHABILITY_UNREACHABLE
                )
        return answer

    @classmethod
    def from_wire(cls, answer: gateway_pb2.RunDiagnosticsResponse) -> Diagnosis:
        findings = []
        for f in answer.findings:
            # A status this release does not know counts as a failure.
            status = _FROM_WIRE.get(f.status, Status.FAIL)
            remedy = f.remedy or ("see the gateway's log" if status is Status.FAIL else "")
            findings.append(Finding(status, f.check, f.detail, remedy))
        partners = tuple(
            PartnerContact(
                p.state,
                p.last_contact.ToDatetime(tzinfo=UTC) if p.HasField("last_contact") else None,
                None
                if p.reachability == gateway_pb2.REACHABILITY_UNSPECIFIED
                else p.reachability == gateway_pb2.REACHABILITY_REACHABLE,
            )
            for p in answer.partners
        )
        return cls(tuple(findings), partners)
