"""``CivilRecordService`` on the local API: submit (one or a stream), status, list.

Callers see only what they submitted themselves: another principal's message id is
answered ``NOT_FOUND``, as if it did not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.errors import FieldViolation, NotFound, PouchError, ValidationRejected
from gateway.exchanges.civil import CivilRecordSender
from gateway.server import page_tokens
from gateway.server.caller import current_principal
from gateway.server.request_input import check_values
from gateway.store.outbox import Outbox, OutboxMessage
from gateway.trust.principal import Principal
from pouch.v1 import civil_pb2, civil_pb2_grpc, common_pb2

MAX_PAGE = 500
STREAM_WINDOW = 64
"""Updates of one ``SubmitUpdates`` stream taken and not yet answered, at most."""
_EVENT_TYPES: dict[str, civil_pb2.CivilEventType.ValueType] = {
    name.removeprefix("CIVIL_EVENT_TYPE_").lower(): number
    for name, number in civil_pb2.CivilEventType.items()
}


def delivery_state(message: OutboxMessage) -> common_pb2.DeliveryState.ValueType:
    if message.outcome == "applied":
        return common_pb2.DELIVERY_STATE_APPLIED
    if message.outcome == "rejected":
        return common_pb2.DELIVERY_STATE_REJECTED
    if message.status == "delivered":
        return common_pb2.DELIVERY_STATE_DELIVERED
    if message.status == "dead":
        return common_pb2.DELIVERY_STATE_DEAD_LETTERED
    return common_pb2.DELIVERY_STATE_QUEUED


def _timestamp(moment: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def update_status(message: OutboxMessage) -> civil_pb2.UpdateStatus:
    state = delivery_state(message)
    reason = ""
    if state == common_pb2.DELIVERY_STATE_REJECTED:
        reason = message.outcome_reason or ""
    elif state == common_pb2.DELIVERY_STATE_DEAD_LETTERED:
        reason = message.last_error_reason or ""
    return civil_pb2.UpdateStatus(
        message_id=message.message_id,
        client_reference=message.client_reference or "",
        recipient_state=message.recipient_state,
        event_type=_EVENT_TYPES.get(message.kind or "", civil_pb2.CIVIL_EVENT_TYPE_UNSPECIFIED),
        state=state,
        attempts=message.attempts,
        submitted_at=_timestamp(message.created_at),
        updated_at=_timestamp(message.updated_at),
        reason_code=reason,
    )


class CivilRecordService(civil_pb2_grpc.CivilRecordServiceServicer):
    def __init__(self, sender: CivilRecordSender, outbox: Outbox, wake: Callable[[], None]) -> None:
        self._sender = sender
        self._outbox = outbox
        self._wake = wake

    async def SubmitUpdate(
        self, request: civil_pb2.SubmitUpdateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> civil_pb2.SubmitUpdateResponse:
        submitted = await self._sender.submit(current_principal(), request)
        self._wake()
        return civil_pb2.SubmitUpdateResponse(
            message_id=submitted.message_id, state=common_pb2.DELIVERY_STATE_QUEUED
        )

    async def SubmitUpdates(
        self,
        request_iterator: AsyncIterator[civil_pb2.SubmitUpdatesRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[civil_pb2.SubmitUpdatesResponse]:
        # Updates are taken as they arrive, up to STREAM_WINDOW of them unanswered, and
        # answered in the order they came: their writes share group commits instead of
        # each waiting for the one before it to reach the disk.
        principal = current_principal()
        answers: asyncio.Queue[asyncio.Task[civil_pb2.SubmitUpdatesResponse] | None] = (
            asyncio.Queue()
        )
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def take() -> None:
            try:
                while True:
                    await window.acquire()  # no more taken until an answer leaves
                    item = await anext(request_iterator, None)
                    if item is None:
                        return
                    answers.put_nowait(asyncio.ensure_future(self._answer(principal, item.update)))
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(take())
        try:
            while (answer := await answers.get()) is not None:
                response = await answer
                window.release()
                yield response
            await reader  # the caller's stream ended cleanly, or its failure is raised here
        finally:
            reader.cancel()
            while not answers.empty():
                leftover = answers.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def _answer(
        self, principal: Principal, update: civil_pb2.SubmitUpdateRequest
    ) -> civil_pb2.SubmitUpdatesResponse:
        reference = update.client_reference
        try:
            check_values(update)  # the guard parsed this item; its values are checked here
            submitted = await self._sender.submit(principal, update)
        except PouchError as e:
            return civil_pb2.SubmitUpdatesResponse(
                client_reference=reference, error_reason=e.reason, error_message=e.message
            )
        self._wake()
        return civil_pb2.SubmitUpdatesResponse(
            client_reference=reference,
            message_id=submitted.message_id,
            state=common_pb2.DELIVERY_STATE_QUEUED,
        )

    async def GetUpdateStatus(
        self,
        request: civil_pb2.GetUpdateStatusRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> civil_pb2.GetUpdateStatusResponse:
        message = await asyncio.to_thread(self._outbox.get, request.message_id)
        if (
            message is None
            or message.exchange_type != "civil_record"
            or message.principal != current_principal().subject
        ):
            raise NotFound("no update with that message id was submitted by this caller")
        return civil_pb2.GetUpdateStatusResponse(status=update_status(message))

    async def ListUpdates(
        self, request: civil_pb2.ListUpdatesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> civil_pb2.ListUpdatesResponse:
        if request.page_size > MAX_PAGE:
            raise ValidationRejected([FieldViolation("page_size", f"at most {MAX_PAGE}")])
        size = request.page_size or 100
        principal = current_principal().subject
        messages = await asyncio.to_thread(
            self._outbox.page,
            recipient_state=request.recipient_state or None,
            principal=principal,
            exchange_type="civil_record",
            limit=size + 1,
            after_message_id=page_tokens.read("civil.updates", request.page_token),
        )
        wanted = request.state
        statuses = [update_status(m) for m in messages]
        if wanted:
            statuses = [s for s in statuses if s.state == wanted]
        page, more = statuses[:size], len(messages) > size
        return civil_pb2.ListUpdatesResponse(
            updates=page,
            next_page_token=(
                page_tokens.issue("civil.updates", messages[size - 1].message_id) if more else ""
            ),
        )
