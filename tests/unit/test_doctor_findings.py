"""What ``pouch doctor`` answers survives the wire, and a failure always says what to do."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.delivery.partner_contact import PartnerContact
from gateway.server.doctor.findings import Diagnosis, Finding, Status, fail, ok, warn
from pouch.v1 import gateway_pb2

NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_a_failure_without_a_remedy_is_refused() -> None:
    assert fail("crl own", "stale", "pouch pki refresh-crl").remedy
    with pytest.raises(ValueError, match="needs a remedy"):
        Finding(Status.FAIL, "crl own", "stale", "")


def test_a_diagnosis_reads_back_as_the_gateway_sent_it() -> None:
    sent = Diagnosis(
        (
            ok("database", "at the latest revision"),
            warn("listener local API", "nothing listens", "start it"),
            fail("partner BE", "unreachable", "ask BE"),
        ),
        (PartnerContact("BE", NOON, True), PartnerContact("CH", None, None)),
    )
    received = Diagnosis.from_wire(
        gateway_pb2.RunDiagnosticsResponse.FromString(sent.to_wire().SerializeToString())
    )
    assert received == sent
    assert received.failed


def test_a_status_this_release_does_not_know_counts_as_a_failure() -> None:
    answer = gateway_pb2.RunDiagnosticsResponse()
    answer.findings.add(status=gateway_pb2.DIAGNOSTIC_STATUS_UNSPECIFIED, check="new", detail="?")
    (finding,) = Diagnosis.from_wire(answer).findings
    assert finding.status is Status.FAIL
    assert finding.remedy == "see the gateway's log"


def test_json_counts_each_status_and_names_the_worst() -> None:
    clean = Diagnosis((ok("database", "fine"), warn("crl own", "in grace", "refresh")))
    shown = clean.as_json()
    assert shown["status"] == "WARN"
    assert shown["counts"] == {"OK": 1, "WARN": 1, "FAIL": 0}
    assert not clean.failed
