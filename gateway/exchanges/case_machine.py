"""The representation case's state machine: which party may move a case where.

Guarantees:

* :data:`TRANSITIONS` is the whole machine, as ``(from, to, role)`` triples; nothing
  outside it is allowed, on either gateway. The representing state acknowledges,
  accepts or declines, starts, completes or fails; the requesting state creates the
  case and may cancel it from any state that is not final.
* :func:`check_transition` raises :class:`IllegalTransition` (reason
  ``ILLEGAL_TRANSITION``) for any other triple; its message names the states and the
  role, never anything about the person concerned.
* Final states (completed, declined, failed, cancelled) have no way out. Notes may be
  added by either party in any state; costs may be claimed (:func:`check_cost_claim`)
  only once the representing state accepted the case, and also after it finished.

The module is pure: no storage, no clock, no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import Rejected
from gateway.store.tables import CaseStatus

__all__ = [
    "FINAL_STATES",
    "TRANSITIONS",
    "CaseRole",
    "CaseStatus",
    "IllegalTransition",
    "allowed_targets",
    "check_cost_claim",
    "check_transition",
    "role_of",
]


class CaseRole(StrEnum):
    REQUESTING = "requesting"
    REPRESENTING = "representing"


class IllegalTransition(Rejected):
    """The machine does not allow this move for this party."""

    reason = "ILLEGAL_TRANSITION"


S = CaseStatus
_REQ = CaseRole.REQUESTING
_REP = CaseRole.REPRESENTING

FINAL_STATES = frozenset({S.COMPLETED, S.DECLINED, S.FAILED, S.CANCELLED})

TRANSITIONS: frozenset[tuple[CaseStatus, CaseStatus, CaseRole]] = frozenset(
    {
        (S.SUBMITTED, S.ACKNOWLEDGED, _REP),
        (S.ACKNOWLEDGED, S.ACCEPTED, _REP),
        (S.ACKNOWLEDGED, S.DECLINED, _REP),
        (S.ACCEPTED, S.IN_PROGRESS, _REP),
        (S.IN_PROGRESS, S.COMPLETED, _REP),
        (S.IN_PROGRESS, S.FAILED, _REP),
        *((state, S.CANCELLED, _REQ) for state in S if state not in FINAL_STATES),
    }
)

# States after which the representing state may claim costs: it has acted on the case.
COSTS_CLAIMABLE = frozenset({S.ACCEPTED, S.IN_PROGRESS, S.COMPLETED, S.FAILED})


def role_of(state: str, *, requesting_state: str, representing_state: str) -> CaseRole | None:
    """The role ``state`` plays in a case, or None for a state that is not a party."""
    if state == requesting_state:
        return CaseRole.REQUESTING
    if state == representing_state:
        return CaseRole.REPRESENTING
    return None


def allowed_targets(current: CaseStatus, role: CaseRole) -> frozenset[CaseStatus]:
    return frozenset(to for frm, to, who in TRANSITIONS if frm == current and who == role)


def check_transition(current: CaseStatus, target: CaseStatus, role: CaseRole) -> None:
    """Refuse a move the machine does not allow for ``role``."""
    if (current, target, role) not in TRANSITIONS:
        raise IllegalTransition(
            f"a case in state {current.value} cannot be moved to {target.value} "
            f"by the {role.value} state"
        )


def check_cost_claim(current: CaseStatus) -> None:
    if current not in COSTS_CLAIMABLE:
        raise IllegalTransition(
            f"costs cannot be claimed on a case in state {current.value}",
            reason="COSTS_NOT_CLAIMABLE",
        )
