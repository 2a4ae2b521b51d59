"""Telling the registry or case system of representation-case events, until it has heard.

Events the partner's messages brought, and missed deadlines, are flagged in the case
store when they are recorded (in the same transaction as the change), so a crash only
delays their hand-over. :class:`CaseEventHandover` gives each, oldest first, to the
adapter's ``notify_case_event`` with the case as it stands, and marks it handed over
once the adapter returned.

A registry that is down leaves the event for another try after the ``[delivery]``
backoff (counted per event, with jitter), until ``deadline_seconds`` after the event
occurred; then the event is given up (``REGISTRY_UNAVAILABLE`` past the deadline),
logged as ``dead_lettered`` and counted by :meth:`CaseStore.dead_registry_events
<gateway.store.cases.CaseStore.dead_registry_events>`. The registry's failure is logged
when it starts, at most once a minute while it lasts, and when it ends
(:mod:`gateway.delivery.outages`).
"""

from __future__ import annotations

import asyncio

from adapters.base import CaseEventSink, RegistryUnavailable
from gateway.delivery.case_wire import case_message
from gateway.delivery.inbound_retry import RetryPolicy
from gateway.delivery.outages import DependencyWatch
from gateway.events import Event, emit
from gateway.store.cases import CaseEvent, CaseStore

__all__ = ["CaseEventHandover", "CaseEventSink"]


class CaseEventHandover:
    def __init__(
        self, *, cases: CaseStore, adapter: CaseEventSink, batch_size: int, retry: RetryPolicy
    ) -> None:
        self._cases = cases
        self._adapter = adapter
        self._batch = batch_size
        self._retry = retry
        self.watch = DependencyWatch("registry", activity="case_event")

    async def run_once(self) -> bool:
        """One round over the events due; True if any was handed over or given up."""
        pending = await asyncio.to_thread(self._cases.pending_registry_events, self._batch)
        settled = False
        for index, event in enumerate(pending):
            view = await asyncio.to_thread(self._cases.view, event.case_id)
            if view is None:
                continue
            try:
                await self._adapter.notify_case_event(event.event_kind, case_message(view))
            except RegistryUnavailable as e:
                waiting = pending[index:]
                self.watch.failed(e.reason, [m for w in waiting if (m := w.message_id)])
                for later in waiting:
                    settled = await self._failed(later, e.reason) or settled
                return settled
            self.watch.succeeded()
            await asyncio.to_thread(self._cases.mark_registry_notified, event.case_id, event.seq)
            emit(
                Event.CASE_EVENT_HANDED_OVER,
                case_id=event.case_id,
                message_id=event.message_id,
                partner=event.actor_state,
                exchange_type="representation",
                kind=event.event_kind,
            )
            settled = True
        return settled

    async def _failed(self, event: CaseEvent, reason: str) -> bool:
        """Schedule ``event``'s next hand-over, or give it up; True if given up."""
        attempts = event.registry_attempts + 1
        when = self._retry.next_attempt(attempts, event.occurred_at)
        if when is not None:
            await asyncio.to_thread(
                self._cases.schedule_registry_retry,
                event.case_id,
                event.seq,
                attempts=attempts,
                retry_at=when,
            )
            emit(
                Event.RETRY_SCHEDULED,
                case_id=event.case_id,
                message_id=event.message_id,
                exchange_type="representation",
                kind=event.event_kind,
                reason=reason,
                attempts=attempts,
            )
            return False
        dead = f"DEADLINE_PASSED_AFTER_{reason}"
        await asyncio.to_thread(
            self._cases.mark_registry_dead, event.case_id, event.seq, reason=dead
        )
        emit(
            Event.DEAD_LETTERED,
            case_id=event.case_id,
            message_id=event.message_id,
            exchange_type="representation",
            kind=event.event_kind,
            reason=dead,
            attempts=attempts,
        )
        return True
