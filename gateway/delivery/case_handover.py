"""Telling the registry or case system of representation-case events, until it has heard.

Events the partner's messages brought, and missed deadlines, are flagged in the case
store when they are recorded (in the same transaction as the change), so a crash only
delays their hand-over. :class:`CaseEventHandover` gives each, oldest first, to the
adapter's ``notify_case_event`` with the case as it stands, and marks it handed over
once the adapter returned; a registry that is down leaves it for the next round.
"""

from __future__ import annotations

import asyncio
import logging

from adapters.base import CaseEventSink, RegistryUnavailable
from gateway.server.representation_service import case_message
from gateway.store.cases import CaseStore

__all__ = ["CaseEventHandover", "CaseEventSink"]

log = logging.getLogger(__name__)


class CaseEventHandover:
    def __init__(self, *, cases: CaseStore, adapter: CaseEventSink, batch_size: int) -> None:
        self._cases = cases
        self._adapter = adapter
        self._batch = batch_size

    async def run_once(self) -> bool:
        pending = await asyncio.to_thread(self._cases.pending_registry_events, self._batch)
        for event in pending:
            view = await asyncio.to_thread(self._cases.view, event.case_id)
            if view is None:
                continue
            try:
                await self._adapter.notify_case_event(event.event_kind, case_message(view))
            except RegistryUnavailable as e:
                log.warning("registry unavailable (%s); case events handed over later", e.reason)
                return False
            await asyncio.to_thread(self._cases.mark_registry_notified, event.case_id, event.seq)
        return bool(pending)
