"""The case machine allows exactly its table, for each role, and refuses everything else."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from gateway.envelope.payload import encode_payload
from gateway.errors import ValidationRejected
from gateway.exchanges.case_deadlines import step_deadline
from gateway.exchanges.case_machine import (
    TRANSITIONS,
    CaseRole,
    CaseStatus,
    IllegalTransition,
    check_transition,
)
from gateway.exchanges.case_payload import CaseMessage, decode_case_payload, encode_case_payload
from gateway.policy.rules import RepresentationRules

S, REQ, REP = CaseStatus, CaseRole.REQUESTING, CaseRole.REPRESENTING
ALLOWED = {
    (S.SUBMITTED, S.ACKNOWLEDGED, REP),
    (S.ACKNOWLEDGED, S.ACCEPTED, REP),
    (S.ACKNOWLEDGED, S.DECLINED, REP),
    (S.ACCEPTED, S.IN_PROGRESS, REP),
    (S.IN_PROGRESS, S.COMPLETED, REP),
    (S.IN_PROGRESS, S.FAILED, REP),
    (S.SUBMITTED, S.CANCELLED, REQ),
    (S.ACKNOWLEDGED, S.CANCELLED, REQ),
    (S.ACCEPTED, S.CANCELLED, REQ),
    (S.IN_PROGRESS, S.CANCELLED, REQ),
}


def test_the_table_is_exactly_the_agreed_machine() -> None:
    assert set(TRANSITIONS) == ALLOWED


@pytest.mark.parametrize(("current", "target", "role"), list(itertools.product(S, S, CaseRole)))
def test_only_the_allowed_moves_pass(
    current: CaseStatus, target: CaseStatus, role: CaseRole
) -> None:
    if (current, target, role) in ALLOWED:
        check_transition(current, target, role)
        return
    with pytest.raises(IllegalTransition) as refused:
        check_transition(current, target, role)
    assert refused.value.reason == "ILLEGAL_TRANSITION"
    assert current.value in refused.value.message and target.value in refused.value.message


def _rules(**deadlines: int) -> RepresentationRules:
    return RepresentationRules(
        purposes=("consular_assistance",),
        kinds=("lost_documents",),
        response_deadline_seconds=172800,
        deadlines=deadlines,  # type: ignore[arg-type]
    )


def test_deadlines_fall_back_to_the_response_deadline_and_stop_when_final() -> None:
    at = datetime(2026, 5, 4, 9, tzinfo=UTC)
    assert step_deadline(_rules(), S.SUBMITTED, at).due == at + timedelta(days=2)
    assert step_deadline(_rules(decide_seconds=259200), S.ACKNOWLEDGED, at).due == at + timedelta(
        days=3
    )
    assert step_deadline(_rules(), S.ACCEPTED, at).due is None
    assert step_deadline(_rules(complete_seconds=60), S.IN_PROGRESS, at).step == "complete"
    for final in (S.COMPLETED, S.DECLINED, S.FAILED, S.CANCELLED):
        assert step_deadline(_rules(complete_seconds=60), final, at).due is None


def test_case_metadata_round_trips() -> None:
    message = CaseMessage(
        "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
        "claim_costs",
        3,
        claim_id="6fa459ea-ee8a-4ca4-894e-db77e160355e",
        currency="EUR",
        amount_minor=4500,
    )
    assert decode_case_payload(encode_case_payload(message, {})).message == message


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ({"action": "note", "case_id": "x", "sequence": 1, "note_id": "y"}, "payload.case.case_id"),
        (
            {
                "action": "transition",
                "case_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                "sequence": 1,
                "target_state": "accepted",
                "person": "leak",
            },
            "payload.case.person",
        ),
        (
            {
                "action": "claim_costs",
                "case_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                "sequence": 1,
                "claim_id": "6fa459ea-ee8a-4ca4-894e-db77e160355e",
                "currency": "XXX",
                "amount_minor": 5,
            },
            "payload.case.currency",
        ),
        (
            {"action": "open", "case_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"},
            "payload.case.sequence",
        ),
    ],
)
def test_case_metadata_is_validated_strictly(case: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationRejected) as refused:
        decode_case_payload(encode_payload({"case": case}))
    assert field in {v.field for v in refused.value.violations}
