"""``AgreementService`` on the local API: what agreements this gateway holds;
suspending, terminating or resuming one (see :mod:`gateway.agreements.notices`); and
reloading the gateway's files (see :mod:`gateway.server.reload`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.agreements.notices import AgreementNotices, NoticeOutcome
from gateway.agreements.registry import AgreementRegistry, LoadedAgreement
from gateway.envelope.names import EXCHANGE_TYPES
from gateway.errors import FieldViolation, NotFound, ValidationRejected
from gateway.policy.rules import PolicySection
from gateway.server.agreement_state import standing_of
from gateway.server.caller import current_principal
from gateway.server.reload import ReloadReport, ReloadResult
from gateway.store.lifecycle import AgreementLifecycleStore
from pouch.v1 import agreement_pb2, agreement_pb2_grpc, common_pb2

_REASON = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")


def _day(moment: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.combine(moment, time(), tzinfo=UTC))
    return stamp


def _reason_code(value: str) -> str:
    if not _REASON.match(value):
        raise ValidationRejected(
            [FieldViolation("reason", "must be a reason code: A-Z, 0-9 and _, 2 to 64 characters")]
        )
    return value


class AgreementService(agreement_pb2_grpc.AgreementServiceServicer):
    def __init__(
        self,
        registry: AgreementRegistry[PolicySection],
        lifecycle: AgreementLifecycleStore,
        notices: AgreementNotices,
        reload: Callable[[str], Awaitable[ReloadReport]],
    ) -> None:
        """``reload`` is the gateway's reload, told who asked for it."""
        self._registry = registry
        self._lifecycle = lifecycle
        self._notices = notices
        self._reload = reload

    def _summary(self, loaded: LoadedAgreement[PolicySection]) -> agreement_pb2.AgreementSummary:
        record = self._lifecycle.status_of(loaded.id, loaded.version)
        standing = standing_of(loaded, record, self._registry.get(loaded.id).version)
        status = _STATES[standing.state]
        reason = standing.detail
        agreement = loaded.agreement
        return agreement_pb2.AgreementSummary(
            ref=common_pb2.AgreementRef(id=loaded.id, version=loaded.version, digest=loaded.digest),
            title=agreement.title,
            parties=list(agreement.parties),
            status=status,
            inactive_reason=reason,
            valid_from=_day(agreement.valid_from),
            valid_until=_day(agreement.valid_until),
            exchange_types=[
                number
                for name, number in EXCHANGE_TYPES.items()
                if getattr(loaded.exchanges, name, None)
            ],
        )

    async def ListAgreements(
        self,
        request: agreement_pb2.ListAgreementsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agreement_pb2.ListAgreementsResponse:
        auditor_of = current_principal().partner_state

        def listing() -> list[agreement_pb2.AgreementSummary]:
            return [
                self._summary(loaded)
                for loaded in self._registry.list()
                if (not request.partner_state or request.partner_state in loaded.agreement.parties)
                and (auditor_of is None or auditor_of in loaded.agreement.parties)
            ]

        return agreement_pb2.ListAgreementsResponse(agreements=await asyncio.to_thread(listing))

    async def GetAgreement(
        self,
        request: agreement_pb2.GetAgreementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agreement_pb2.GetAgreementResponse:
        loaded = self._registry.get(request.agreement_id)
        auditor_of = current_principal().partner_state
        if auditor_of is not None and auditor_of not in loaded.agreement.parties:
            raise NotFound(f"no agreement {request.agreement_id!r} is visible to this auditor")
        summary = await asyncio.to_thread(self._summary, loaded)
        return agreement_pb2.GetAgreementResponse(summary=summary, canonical_json=loaded.canonical)

    async def _declare(
        self, agreement_id: str, action: int, reason: str
    ) -> tuple[NoticeOutcome, agreement_pb2.AgreementSummary]:
        """This state's signed notice (suspend, terminate or resume), as the caller."""
        outcome = await asyncio.to_thread(
            self._notices.declare,
            agreement_id,
            action,
            _reason_code(reason),
            principal=current_principal().acting,
        )
        return outcome, await asyncio.to_thread(self._summary, outcome.agreement)

    async def SuspendAgreement(
        self,
        request: agreement_pb2.SuspendAgreementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agreement_pb2.SuspendAgreementResponse:
        _, summary = await self._declare(
            request.agreement_id, agreement_pb2.AGREEMENT_NOTICE_ACTION_SUSPEND, request.reason
        )
        return agreement_pb2.SuspendAgreementResponse(summary=summary)

    async def TerminateAgreement(
        self,
        request: agreement_pb2.TerminateAgreementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agreement_pb2.TerminateAgreementResponse:
        outcome, summary = await self._declare(
            request.agreement_id, agreement_pb2.AGREEMENT_NOTICE_ACTION_TERMINATE, request.reason
        )
        return agreement_pb2.TerminateAgreementResponse(
            summary=summary, purged_payloads=outcome.purged_payloads
        )

    async def ResumeAgreement(
        self,
        request: agreement_pb2.ResumeAgreementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agreement_pb2.ResumeAgreementResponse:
        _, summary = await self._declare(
            request.agreement_id, agreement_pb2.AGREEMENT_NOTICE_ACTION_RESUME, request.reason
        )
        return agreement_pb2.ResumeAgreementResponse(summary=summary)

    async def Reload(
        self,
        request: agreement_pb2.ReloadRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> agreement_pb2.ReloadResponse:
        report = await self._reload(current_principal().subject)
        return agreement_pb2.ReloadResponse(
            items=[
                agreement_pb2.ReloadItem(
                    kind=o.kind,
                    file=o.file,
                    result=_RESULTS[o.result],
                    reason_code=o.reason,
                    rule=o.rule,
                    changed=list(o.changed),
                )
                for o in report.outcomes
            ]
        )


_STATES = {
    "active": agreement_pb2.AGREEMENT_STATUS_ACTIVE,
    "suspended": agreement_pb2.AGREEMENT_STATUS_SUSPENDED,
    "terminated": agreement_pb2.AGREEMENT_STATUS_TERMINATED,
    "inactive": agreement_pb2.AGREEMENT_STATUS_INACTIVE,
}
_RESULTS = {
    ReloadResult.RELOADED: agreement_pb2.RELOAD_RESULT_RELOADED,
    ReloadResult.UNCHANGED: agreement_pb2.RELOAD_RESULT_UNCHANGED,
    ReloadResult.REFUSED: agreement_pb2.RELOAD_RESULT_REFUSED,
}
