"""The demo's own logic: the MRZ it builds, how it judges steps and compares case copies."""

from __future__ import annotations

from datetime import date

from gateway.exchanges.mrz import parse_mrz
from pouch.v1 import audit_pb2, common_pb2, representation_pb2
from pouch_devtools.demo.audit_scenario import entry_row
from pouch_devtools.demo.case_copies import (
    CaseView,
    case_differences,
    describe_claims,
    view_of,
)
from pouch_devtools.demo.identity_scenario import (
    SPECIMEN,
    claim_for,
    describe_claim,
    describe_flags,
    specimen_mrz,
)
from pouch_devtools.demo.scenario import Step

TODAY = date(2026, 5, 1)


def test_the_reissued_specimen_mrz_passes_every_check_digit() -> None:
    zone = parse_mrz(specimen_mrz("BE"), today=TODAY)

    assert zone.format == "TD3"
    assert zone.document_number == SPECIMEN.number
    assert zone.nationality == "BEL"


def test_the_reissued_specimen_keeps_the_published_specimens_check_digits() -> None:
    # Doc 9303 part 4: "L898902C36UTO7408122F1204159ZE184226B<<<<<10". With the
    # specimen's expiry, only the state code differs: it is outside every check digit.
    lower = specimen_mrz("BE", expires=(2012, 4, 15)).split("\n")[1]

    assert lower == "L898902C36BEL7408122F1204159ZE184226B<<<<<10"


def test_a_claim_is_described_by_its_names_never_its_number() -> None:
    claim = claim_for(SPECIMEN, "BE")

    assert describe_claim(claim) == "Anna Maria ERIKSSON"
    assert SPECIMEN.number not in describe_claim(claim)


def test_flags_show_mismatches_first() -> None:
    line = describe_flags([("date_of_birth", True), ("name.given_names", False)])

    assert line == "name.given_names NO, date_of_birth yes"


def test_a_step_that_is_not_refused_as_expected_is_a_failure() -> None:
    refused = Step("c", "t", "call", "PERMISSION_DENIED", "PERMISSION_DENIED: purpose")
    let_through = Step("c", "t", "call", "PERMISSION_DENIED", "OK (not refused!)")

    assert refused.as_expected
    assert not let_through.as_expected


def test_a_no_match_is_not_taken_for_a_match() -> None:
    assert not Step("c", "t", "call", "MATCH", "NO_MATCH, document UNKNOWN").as_expected


def _case(state: representation_pb2.CaseState.ValueType, acknowledged: bool) -> CaseView:
    case = representation_pb2.RepresentationCase(state=state)
    case.notes.add(text="met at the mission")
    case.cost_claims.add(currency="EUR", amount_minor=12_000, acknowledged=acknowledged)
    return view_of("XX", case)


def test_copies_in_the_same_state_with_the_same_claims_are_in_step() -> None:
    done = _case(representation_pb2.CASE_STATE_COMPLETED, True)

    assert case_differences(done, done) == []
    assert done.case_state == "COMPLETED"


def test_copies_that_disagree_on_state_or_acknowledgement_are_not_in_step() -> None:
    done = _case(representation_pb2.CASE_STATE_COMPLETED, True)
    behind = _case(representation_pb2.CASE_STATE_IN_PROGRESS, True)
    unacknowledged = _case(representation_pb2.CASE_STATE_COMPLETED, False)

    assert case_differences(done, behind)
    assert case_differences(done, unacknowledged)


def test_cost_claims_are_shown_in_major_units() -> None:
    assert describe_claims((("EUR", 12_000, True),)) == "EUR 120.00 acknowledged"
    assert describe_claims(()) == "none"


def test_an_audit_row_shows_paths_and_codes_only() -> None:
    entry = audit_pb2.AuditEntry(
        index=9,
        event_kind="submitted",
        exchange_type=common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
        decision="accepted",
        removed_paths=["claim.mrz"],
        transformed_paths=["claim.document_number"],
    )

    assert entry_row(entry) == (
        "9",
        "submitted",
        "identity_confirmation",
        "accepted",
        "",
        "-claim.mrz ~claim.document_number",
    )
