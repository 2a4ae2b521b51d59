"""Deadlines of a representation case: when each step is due, and what happens when missed.

Guarantees:

* :func:`step_deadline` is pure: from the agreement's rules of the case's direction
  (requesting -> representing) and the moment the case entered a state, it gives the
  step now awaited (``acknowledge``, ``decide``, ``start``, ``complete``) and when it is
  due. ``acknowledge`` and ``decide`` fall back to ``response_deadline_seconds``;
  ``start`` and ``complete`` have a deadline only when the agreement states one. A
  final state awaits nothing. Both gateways hold the same text, so they compute the
  same deadline from the same moments.
* :class:`DeadlineWatcher` records one ``deadline_missed`` event per missed deadline,
  once, whichever replica sees it first: the event is written under the case row's
  lock, only while the case still awaits that very deadline. Each is audited
  (``case_transition``, reason ``DEADLINE_MISSED_<STEP>``, no personal data) and
  flagged for the registry hand-over; watchers are woken by the store.
* The watcher reads the time from its injected clock (or the ``now`` a test passes),
  so a test drives deadlines without waiting for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.audit.entry import Decision, EventKind
from gateway.audit.recorder import AuditRecorder
from gateway.errors import unexpected_summary
from gateway.policy.rules import DirectionRules, PolicySection, RepresentationRules
from gateway.store.cases import CaseRecord, CaseStore, CaseWrite
from gateway.store.tables import CaseStatus

log = logging.getLogger(__name__)

DEADLINE_MISSED = "deadline_missed"

_STEPS: dict[CaseStatus, str] = {
    CaseStatus.SUBMITTED: "acknowledge",
    CaseStatus.ACKNOWLEDGED: "decide",
    CaseStatus.ACCEPTED: "start",
    CaseStatus.IN_PROGRESS: "complete",
}


@dataclass(frozen=True)
class StepDeadline:
    step: str | None
    due: datetime | None


NO_DEADLINE = StepDeadline(None, None)


def case_rules(
    section: PolicySection, requesting_state: str, representing_state: str
) -> RepresentationRules | None:
    rules: DirectionRules | None = section.rules_for(
        "representation", f"{requesting_state}->{representing_state}"
    )
    return rules if isinstance(rules, RepresentationRules) else None


def step_deadline(
    rules: RepresentationRules | None, state: CaseStatus, entered_at: datetime
) -> StepDeadline:
    """The step a case in ``state`` since ``entered_at`` awaits, and when it is due."""
    step = _STEPS.get(state)
    if step is None or rules is None:
        return NO_DEADLINE
    deadlines = rules.deadlines
    seconds = {
        "acknowledge": deadlines.acknowledge_seconds or rules.response_deadline_seconds,
        "decide": deadlines.decide_seconds or rules.response_deadline_seconds,
        "start": deadlines.start_seconds,
        "complete": deadlines.complete_seconds,
    }[step]
    if seconds is None:
        return NO_DEADLINE
    return StepDeadline(step, entered_at + timedelta(seconds=seconds))


class DeadlineWatcher:
    """Finds cases whose awaited step is overdue and records it, once per deadline."""

    def __init__(
        self,
        *,
        cases: CaseStore,
        audit: AuditRecorder,
        clock: Callable[[], datetime],
        batch_size: int = 100,
    ) -> None:
        self._cases = cases
        self._audit = audit
        self._clock = clock
        self._batch = batch_size

    def run_once(self, now: datetime | None = None) -> int:
        """Blocking. Record every deadline missed by ``now``; how many were recorded."""
        moment = now or self._clock()
        recorded = 0
        for due in self._cases.due_deadlines(moment, self._batch):
            if self._cases.write(functools.partial(self._record_missed, due, moment)):
                recorded += 1
        return recorded

    def _record_missed(self, due: CaseRecord, moment: datetime, write: CaseWrite) -> bool:
        """The missed deadline's event and its audit entry, once; ``False`` if moot."""
        case = write.lock(due.case_id)
        if (
            case is None
            or case.deadline_missed
            or case.next_deadline is None
            or case.next_deadline != due.next_deadline
            or case.next_deadline > moment
        ):
            return False  # another replica recorded it, or the case moved on
        write.add_event(
            case,
            DEADLINE_MISSED,
            case.state,
            actor_state=None,
            message_id=None,
            at=moment,
            notify_registry=True,
        )
        write.update_case(case.case_id, deadline_missed=True)
        self._audit.record(
            EventKind.CASE_TRANSITION,
            Decision.RECORDED,
            agreement_id=case.agreement_id,
            agreement_version=case.agreement_version,
            exchange_type="representation",
            purpose=case.purpose,
            principal="deadline",
            reason_code=f"DEADLINE_MISSED_{(case.deadline_step or 'step').upper()}",
            conn=write.conn,
        )
        return True

    async def run(self, stopping: asyncio.Event, interval_s: float) -> None:
        while not stopping.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception as e:  # one bad round must not stop the loop
                log.error("deadline round failed: %s", unexpected_summary(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
