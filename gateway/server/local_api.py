"""The local API: the state's own registries, consulates, auditors and operators.

Callers present a client certificate from this state's CA (checked by TLS, then by
:class:`~gateway.trust.peer.CertificateIdentifier` for issuer, SAN and revocation)
and a JWT bound to that certificate. Each method needs one of the scopes listed in
:data:`METHOD_SCOPES`; a method missing from the table is closed to everyone (rules
fail closed). Health checking and reflection need the client certificate only, so a
load balancer or an operator's tooling can reach them without a token.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
import grpc.aio

from gateway import __version__
from gateway.audit.refusal_counts import RefusalCount
from gateway.delivery.case_wire import timestamp
from gateway.errors import (
    AuthenticationRejected,
    FieldViolation,
    NotFound,
    PermissionRejected,
    ValidationRejected,
)
from gateway.pki.tokens import TokenVerifier
from gateway.server.caller import current_principal, set_principal
from gateway.store.backlog import StageBacklog
from gateway.store.dead_letters import DeadLetter
from gateway.store.tables import MESSAGE_ID_LENGTH
from gateway.trust.peer import CertificateIdentifier
from gateway.trust.principal import Principal, Scope
from pouch.v1 import gateway_pb2, gateway_pb2_grpc

# Required scopes per method; a caller needs any one of them.
METHOD_SCOPES: Mapping[str, frozenset[Scope]] = {
    "/pouch.v1.GatewayService/GetGatewayInfo": frozenset({Scope.ADMIN}),
    "/pouch.v1.GatewayService/ListDeadLetters": frozenset({Scope.ADMIN}),
    "/pouch.v1.GatewayService/RunDiagnostics": frozenset({Scope.ADMIN}),
    "/pouch.v1.GatewayService/ResendDeadLetter": frozenset({Scope.ADMIN}),
    "/pouch.v1.CivilRecordService/SubmitUpdate": frozenset({Scope.CIVIL_SUBMIT}),
    "/pouch.v1.CivilRecordService/SubmitUpdates": frozenset({Scope.CIVIL_SUBMIT}),
    "/pouch.v1.CivilRecordService/GetUpdateStatus": frozenset({Scope.CIVIL_SUBMIT}),
    "/pouch.v1.CivilRecordService/ListUpdates": frozenset({Scope.CIVIL_SUBMIT}),
    "/pouch.v1.IdentityService/ConfirmIdentity": frozenset({Scope.IDENTITY_QUERY}),
    "/pouch.v1.RepresentationService/RequestAssistance": frozenset({Scope.REPRESENTATION_REQUEST}),
    "/pouch.v1.RepresentationService/TransitionCase": frozenset(
        {Scope.REPRESENTATION_ACT, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.RepresentationService/AddNote": frozenset(
        {Scope.REPRESENTATION_ACT, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.RepresentationService/ClaimCosts": frozenset({Scope.REPRESENTATION_ACT}),
    "/pouch.v1.RepresentationService/AcknowledgeCosts": frozenset({Scope.REPRESENTATION_REQUEST}),
    "/pouch.v1.RepresentationService/GetCase": frozenset(
        {Scope.REPRESENTATION_ACT, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.RepresentationService/ListCases": frozenset(
        {Scope.REPRESENTATION_ACT, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.RepresentationService/WatchCase": frozenset(
        {Scope.REPRESENTATION_ACT, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.AuditService/ListEntries": frozenset({Scope.AUDIT_READ}),
    "/pouch.v1.AuditService/GetEntry": frozenset({Scope.AUDIT_READ}),
    "/pouch.v1.AuditService/GetCheckpoint": frozenset({Scope.AUDIT_READ}),
    "/pouch.v1.AuditService/GetInclusionProof": frozenset({Scope.AUDIT_READ}),
    "/pouch.v1.AuditService/GetConsistencyProof": frozenset({Scope.AUDIT_READ}),
    "/pouch.v1.AuditService/ExportBundle": frozenset({Scope.AUDIT_READ}),
    "/pouch.v1.AuditService/PublishCheckpoint": frozenset({Scope.ADMIN}),
    # Officers who open requests choose the agreement and its purpose.
    "/pouch.v1.AgreementService/ListAgreements": frozenset(
        {Scope.ADMIN, Scope.AUDIT_READ, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.AgreementService/GetAgreement": frozenset(
        {Scope.ADMIN, Scope.AUDIT_READ, Scope.REPRESENTATION_REQUEST}
    ),
    "/pouch.v1.AgreementService/SuspendAgreement": frozenset({Scope.ADMIN}),
    "/pouch.v1.AgreementService/TerminateAgreement": frozenset({Scope.ADMIN}),
    "/pouch.v1.AgreementService/ResumeAgreement": frozenset({Scope.ADMIN}),
    "/pouch.v1.AgreementService/Reload": frozenset({Scope.ADMIN}),
}

# Reachable with the client certificate alone.
CERTIFICATE_ONLY_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def _bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise AuthenticationRejected(
                "authorization metadata must be 'Bearer <token>'", reason="TOKEN_MALFORMED"
            )
    raise AuthenticationRejected("a bearer token is required", reason="TOKEN_MISSING")


def _client_pem(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    values = list(context.auth_context().get("x509_pem_cert", ()))
    return values[0] if values else None


class LocalAuthenticator:
    """The local listener's authentication stage: certificate, then token, then scope."""

    def __init__(self, identifier: CertificateIdentifier, verifier: TokenVerifier) -> None:
        self._identifier = identifier
        self._verifier = verifier

    def __call__(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        client = self._identifier.identify_client(_client_pem(context))
        service = method.lstrip("/").partition("/")[0]
        if service in CERTIFICATE_ONLY_SERVICES:
            return
        required = METHOD_SCOPES.get(method)
        if required is None:
            raise PermissionRejected(
                "this method is not open to local callers", reason="METHOD_CLOSED"
            )
        verified = self._verifier.verify(
            _bearer_token(context), client_cert_der=client.certificate_der
        )
        principal = Principal.from_token(client.state, verified)
        if not principal.scopes & required:
            wanted = " or ".join(sorted(str(s) for s in required))
            raise PermissionRejected(
                f"the token lacks the scope '{wanted}'", reason="SCOPE_MISSING"
            )
        set_principal(principal)


DeadLetters = Callable[[str | None, int], list[DeadLetter]]
"""The dead letters (with the partner given, or all), at most that many."""
MAX_DEAD_LETTERS = 500
RECENT_REFUSALS = timedelta(hours=24)
"""How far back ``GetGatewayInfo`` counts refusals."""


@dataclass(frozen=True)
class OperatorViews:
    """What a gateway with exchanges tells and does for its operators, each blocking
    reader called off the event loop: the dead letters, the backlog of each store
    (``"outbox"``, ``"inbox"``: the metrics' readers), the refusals audited since a
    moment, the clock, and the resend of a dead letter by the principal acting."""

    dead_letters: DeadLetters
    backlogs: Mapping[str, Callable[[], list[StageBacklog]]]
    refusals_since: Callable[[datetime], list[RefusalCount]]
    clock: Callable[[], datetime]
    resend: Callable[[str, str], Awaitable[str]]


class GatewayInfoService(gateway_pb2_grpc.GatewayServiceServicer):
    """What operators ask a gateway about itself, and the one thing they may redo."""

    def __init__(
        self,
        describe: Callable[[], gateway_pb2.GetGatewayInfoResponse],
        views: OperatorViews | None = None,
        diagnostics: Callable[[], Awaitable[gateway_pb2.RunDiagnosticsResponse]] | None = None,
    ) -> None:
        """``views`` is None on a gateway without exchanges: it has no dead letters,
        backlog or refusals. ``diagnostics`` runs the doctor's checks
        (:mod:`gateway.server.doctor`)."""
        self._describe = describe
        self._views = views
        self._diagnostics = diagnostics

    async def ResendDeadLetter(
        self,
        request: gateway_pb2.ResendDeadLetterRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ResendDeadLetterResponse:
        if not _MESSAGE_ID.fullmatch(request.message_id):
            raise ValidationRejected(
                [
                    FieldViolation(
                        "message_id", f"required: printable ASCII, at most {MESSAGE_ID_LENGTH}"
                    )
                ]
            )
        if self._views is None:
            raise NotFound("this gateway holds no messages")
        status = await self._views.resend(current_principal().acting, request.message_id)
        return gateway_pb2.ResendDeadLetterResponse(message_id=request.message_id, status=status)

    async def RunDiagnostics(
        self,
        request: gateway_pb2.RunDiagnosticsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.RunDiagnosticsResponse:
        if self._diagnostics is None:
            raise PermissionRejected("this gateway runs no diagnostics", reason="METHOD_CLOSED")
        return await self._diagnostics()

    async def ListDeadLetters(
        self,
        request: gateway_pb2.ListDeadLettersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.ListDeadLettersResponse:
        if request.page_size > MAX_DEAD_LETTERS:
            raise ValidationRejected([FieldViolation("page_size", f"at most {MAX_DEAD_LETTERS}")])
        if request.partner_state and not _STATE.fullmatch(request.partner_state):
            raise ValidationRejected(
                [FieldViolation("partner_state", "must be an ISO 3166-1 alpha-2 code")]
            )
        if self._views is None:
            return gateway_pb2.ListDeadLettersResponse()
        found = await asyncio.to_thread(
            self._views.dead_letters, request.partner_state or None, request.page_size or 100
        )
        return gateway_pb2.ListDeadLettersResponse(dead_letters=[_dead_letter(d) for d in found])

    async def GetGatewayInfo(
        self,
        request: gateway_pb2.GetGatewayInfoRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> gateway_pb2.GetGatewayInfoResponse:
        principal = current_principal()
        info = gateway_pb2.GetGatewayInfoResponse()
        info.CopyFrom(self._describe())
        info.version = __version__
        info.caller_subject = principal.subject
        info.caller_scopes.extend(sorted(str(s) for s in principal.scopes))
        if self._views is not None:
            backlogs, refusals = await asyncio.to_thread(_operator_figures, self._views)
            info.backlogs.extend(backlogs)
            info.recent_refusals.extend(refusals)
        return info


_STATE = re.compile(r"[A-Z]{2}")
_MESSAGE_ID = re.compile(rf"[\x21-\x7e]{{1,{MESSAGE_ID_LENGTH}}}")


def _operator_figures(
    views: OperatorViews,
) -> tuple[list[gateway_pb2.Backlog], list[gateway_pb2.RefusalCount]]:
    """Each store's backlog (by store, partner, stage) and the refusals of the last
    :data:`RECENT_REFUSALS`, most frequent first."""
    backlogs = [
        gateway_pb2.Backlog(
            store=store,
            stage=row.stage,
            partner_state=row.partner,
            messages=row.count,
            oldest=timestamp(row.oldest),
        )
        for store, read in views.backlogs.items()
        for row in sorted(read(), key=lambda row: (row.partner, row.stage))
    ]
    refusals = [
        gateway_pb2.RefusalCount(
            reason_code=found.reason_code, count=found.count, last_at=timestamp(found.last_at)
        )
        for found in views.refusals_since(views.clock() - RECENT_REFUSALS)
    ]
    return backlogs, refusals


def _dead_letter(letter: DeadLetter) -> gateway_pb2.DeadLetter:
    return gateway_pb2.DeadLetter(
        message_id=letter.message_id,
        direction=letter.direction,
        stage=letter.stage,
        partner_state=letter.partner_state,
        agreement_id=letter.agreement_id,
        exchange_type=letter.exchange_type,
        reason_code=letter.reason_code,
        attempts=letter.attempts,
        stored_at=timestamp(letter.stored_at),
        case_id=letter.case_id or "",
    )
