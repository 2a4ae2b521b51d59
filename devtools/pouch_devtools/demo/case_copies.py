"""The two gateways' copies of one representation case, as the demo compares and shows them.

A case is kept in step on both gateways by signed messages; the demo calls the copies
in step when they agree on the state, the number of notes and the cost claims
(currency, amount and acknowledgement). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pouch.v1 import representation_pb2


@dataclass(frozen=True)
class CaseView:
    """One gateway's copy of the case, as ``GetCase`` shows it."""

    state: str
    case_state: str
    notes: int
    cost_claims: tuple[tuple[str, int, bool], ...]  # currency, amount in minor units, acknowledged


def state_name(state: representation_pb2.CaseState.ValueType) -> str:
    return representation_pb2.CaseState.Name(state).removeprefix("CASE_STATE_")


def view_of(owner: str, case: representation_pb2.RepresentationCase) -> CaseView:
    return CaseView(
        state=owner,
        case_state=state_name(case.state),
        notes=len(case.notes),
        cost_claims=tuple(
            (claim.currency, claim.amount_minor, claim.acknowledged) for claim in case.cost_claims
        ),
    )


def case_differences(first: CaseView, second: CaseView) -> list[str]:
    """What two gateways' copies of one case disagree on (empty: they are in step)."""
    differences: list[str] = []
    if first.case_state != second.case_state:
        differences.append(
            f"state {first.case_state} at {first.state}, {second.case_state} at {second.state}"
        )
    if first.notes != second.notes:
        differences.append(
            f"{first.notes} notes at {first.state}, {second.notes} at {second.state}"
        )
    if first.cost_claims != second.cost_claims:
        differences.append(f"cost claims differ between {first.state} and {second.state}")
    return differences


def describe_claims(claims: tuple[tuple[str, int, bool], ...]) -> str:
    if not claims:
        return "none"
    return ", ".join(
        f"{currency} {amount / 100:.2f} {'acknowledged' if acknowledged else 'open'}"
        for currency, amount, acknowledged in claims
    )
