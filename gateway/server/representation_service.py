"""``RepresentationService`` on the local API: one state's consulates acting on shared cases.

A caller sees only cases its own state is a party to (either role): any other case id
is answered ``NOT_FOUND``, as if it did not exist. ``WatchCase`` sends the case as it
stands, then each later event as it happens, read from the database after the last
event sent, so an event written by another replica, received from the partner, or a
missed deadline reaches the watcher too; an in-process signal wakes watchers at once,
and a poll interval catches what other replicas wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import grpc.aio

from gateway.delivery.case_wire import (
    STATES,
    case_event_message,
    case_message,
    claim_message,
    note_message,
    timestamp,
)
from gateway.errors import FieldViolation, NotFound, ValidationRejected
from gateway.exchanges.representation import RepresentationDesk
from gateway.exchanges.representation_validation import validate_case_id
from gateway.policy.catalogue import kind_name
from gateway.server import page_tokens
from gateway.server.caller import current_principal
from gateway.store.cases import MAX_PAGE, CaseStore, CaseView
from pouch.v1 import representation_pb2, representation_pb2_grpc

WATCH_POLL_S = 1.0
# A case's events GetCase returns, oldest first; a case has tens, not hundreds.
MAX_HISTORY = 500


class CaseSignal:
    """Wakes watchers on any event loop when this process recorded a case event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def fire(self) -> None:
        """Thread-safe; called by the case store after a commit that added events."""
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)

    @contextlib.contextmanager
    def subscription(self) -> Any:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                self._waiters.discard(entry)


class RepresentationService(representation_pb2_grpc.RepresentationServiceServicer):
    def __init__(
        self,
        desk: RepresentationDesk,
        cases: CaseStore,
        signal: CaseSignal,
        *,
        state: str,
        wake: Callable[[], None],
        watch_poll_s: float = WATCH_POLL_S,
    ) -> None:
        self._desk = desk
        self._cases = cases
        self._signal = signal
        self._state = state
        self._wake = wake
        self._poll_s = watch_poll_s

    async def _view(self, case_id: str) -> CaseView:
        validate_case_id(case_id)
        view = await asyncio.to_thread(self._cases.view, case_id)
        principal = current_principal()
        if view is None or not view.record.party(principal.state):
            raise NotFound("no case with that id is held by this state")
        return view

    async def RequestAssistance(
        self,
        request: representation_pb2.RequestAssistanceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.RequestAssistanceResponse:
        record = await asyncio.to_thread(
            self._desk.request_assistance, current_principal(), request
        )
        self._wake()
        return representation_pb2.RequestAssistanceResponse(
            case=case_message(await self._view(record.case_id))
        )

    async def TransitionCase(
        self,
        request: representation_pb2.TransitionCaseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.TransitionCaseResponse:
        target = STATES.get(request.target_state)
        view = await asyncio.to_thread(
            self._desk.transition, current_principal(), request.case_id, target, request.reason
        )
        self._wake()
        return representation_pb2.TransitionCaseResponse(case=case_message(view))

    async def AddNote(
        self,
        request: representation_pb2.AddNoteRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.AddNoteResponse:
        note = await asyncio.to_thread(self._desk.add_note, current_principal(), request)
        self._wake()
        return representation_pb2.AddNoteResponse(note=note_message(note))

    async def ClaimCosts(
        self,
        request: representation_pb2.ClaimCostsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.ClaimCostsResponse:
        claim = await asyncio.to_thread(self._desk.claim_costs, current_principal(), request)
        self._wake()
        return representation_pb2.ClaimCostsResponse(claim=claim_message(claim))

    async def AcknowledgeCosts(
        self,
        request: representation_pb2.AcknowledgeCostsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.AcknowledgeCostsResponse:
        claim = await asyncio.to_thread(self._desk.acknowledge_costs, current_principal(), request)
        self._wake()
        return representation_pb2.AcknowledgeCostsResponse(claim=claim_message(claim))

    async def GetCase(
        self,
        request: representation_pb2.GetCaseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.GetCaseResponse:
        view = await self._view(request.case_id)
        case = case_message(view)
        events = await asyncio.to_thread(self._cases.events_after, request.case_id, 0, MAX_HISTORY)
        case.history.extend(case_event_message(event) for event in events)
        return representation_pb2.GetCaseResponse(case=case)

    async def ListCases(
        self,
        request: representation_pb2.ListCasesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> representation_pb2.ListCasesResponse:
        if request.page_size > MAX_PAGE:
            raise ValidationRejected([FieldViolation("page_size", f"at most {MAX_PAGE}")])
        size = request.page_size or 100
        kind = kind_name("representation", request.kind) if request.kind else None
        if request.kind and kind is None:
            raise ValidationRejected([FieldViolation("kind", "must be a known assistance kind")])
        state = STATES.get(request.state) if request.state else None
        if request.state and state is None:
            raise ValidationRejected([FieldViolation("state", "must be a known case state")])
        before = (
            request.deadline_before.ToDatetime(tzinfo=UTC)
            if request.HasField("deadline_before")
            else None
        )
        records = await asyncio.to_thread(
            self._cases.page,
            state=state,
            kind=kind,
            deadline_before=before,
            limit=size + 1,
            after=_cursor(request.page_token),
        )
        principal = current_principal()
        page = records[:size]
        views = [await asyncio.to_thread(self._cases.view, r.case_id) for r in page]
        token = ""
        if len(records) > size:
            last = page[-1]
            token = f"{last.created_at.isoformat()}|{last.case_id}"
        return representation_pb2.ListCasesResponse(
            cases=[case_message(v) for v in views if v and v.record.party(principal.state)],
            next_page_token=page_tokens.issue("representation.cases", token) if token else "",
        )

    async def WatchCase(
        self,
        request: representation_pb2.WatchCaseRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[representation_pb2.WatchCaseResponse]:
        with self._signal.subscription() as woken:
            view = await self._view(request.case_id)
            seen = view.record.event_count
            yield representation_pb2.WatchCaseResponse(
                event_kind="current",
                case=case_message(view),
                occurred_at=timestamp(view.record.updated_at),
            )
            while True:
                woken.clear()
                events = await asyncio.to_thread(self._cases.events_after, request.case_id, seen)
                if events:
                    view = await self._view(request.case_id)
                    for event in events:
                        seen = event.seq
                        yield representation_pb2.WatchCaseResponse(
                            event_kind=event.event_kind,
                            case=case_message(view),
                            occurred_at=timestamp(event.occurred_at),
                        )
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self._poll_s)


def _cursor(token: str) -> tuple[datetime, str] | None:
    cursor = page_tokens.read("representation.cases", token)
    if cursor is None:
        return None
    created, _, case_id = cursor.partition("|")
    try:
        return datetime.fromisoformat(created), case_id
    except ValueError as e:
        raise ValidationRejected(
            [FieldViolation("page_token", "must be a page token this listing issued")]
        ) from e
