"""The operator's page: is the gateway well, are its partners and agreements?

One page from four admin calls: the gateway's own status (certificate, schema,
backlogs, refusals by reason), the doctor's findings with their remedies and the
partners' last contact, the agreements with their state and why one is not in force,
and the dead letters, each with a re-send button the gateway decides on.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.web import console_of, event, form_route, officer_of, render
from console.wire import AGREEMENT_STATUSES, DIAGNOSTIC_STATUSES
from pouch.v1 import agreement_pb2, gateway_pb2

ADMIN = "admin"


def _at(stamp: Timestamp, present: bool = True) -> datetime | None:
    if not present or (stamp.seconds == 0 and stamp.nanos == 0):
        return None
    return stamp.ToDatetime(tzinfo=UTC)


async def operator_page(request: Request) -> Response:
    officer = officer_of(request, ADMIN)
    console = console_of(request)
    gateway = console.gateway
    token = officer.access_token
    # Four independent questions, asked at once: the doctor's alone waits on partners.
    info, diagnostics, agreements, dead = await asyncio.gather(
        gateway.call(gateway.gateway().GetGatewayInfo, gateway_pb2.GetGatewayInfoRequest(), token),
        gateway.call(gateway.gateway().RunDiagnostics, gateway_pb2.RunDiagnosticsRequest(), token),
        gateway.call(
            gateway.agreements().ListAgreements, agreement_pb2.ListAgreementsRequest(), token
        ),
        gateway.call(
            gateway.gateway().ListDeadLetters,
            gateway_pb2.ListDeadLettersRequest(page_size=100),
            token,
        ),
    )
    contact = {
        p.state: _at(p.last_contact, p.HasField("last_contact")) for p in diagnostics.partners
    }
    partners: list[dict[str, Any]] = [
        {
            "state": p.state,
            "endpoint": p.peer_endpoint,
            "bundle_digest": p.bundle_digest,
            "ca_not_after": _at(p.ca_not_after, p.HasField("ca_not_after")),
            "last_contact": contact.get(p.state),
        }
        for p in info.partners
    ]
    findings = [
        {
            "check": f.check,
            "status": DIAGNOSTIC_STATUSES.code(f.status),
            "detail": f.detail,
            "remedy": f.remedy,
        }
        for f in diagnostics.findings
    ]
    return render(
        request,
        "operator.html",
        info=info,
        tls_not_after=_at(
            info.tls_certificate_not_after, info.HasField("tls_certificate_not_after")
        ),
        partners=partners,
        findings=findings,
        agreements=[
            {
                "id": a.ref.id,
                "version": a.ref.version,
                "title": a.title,
                "status": AGREEMENT_STATUSES.code(a.status),
                "reason": a.inactive_reason,
                "valid_from": _at(a.valid_from, a.HasField("valid_from")),
                "valid_until": _at(a.valid_until, a.HasField("valid_until")),
            }
            for a in agreements.agreements
        ],
        backlogs=[
            {
                "store": b.store,
                "stage": b.stage,
                "partner": b.partner_state,
                "messages": b.messages,
                "oldest": _at(b.oldest, b.HasField("oldest")),
            }
            for b in info.backlogs
        ],
        refusals=[
            {
                "reason": r.reason_code,
                "count": r.count,
                "last_at": _at(r.last_at, r.HasField("last_at")),
            }
            for r in info.recent_refusals
        ],
        dead_letters=[
            {
                "message_id": d.message_id,
                "direction": d.direction,
                "stage": d.stage,
                "partner": d.partner_state,
                "agreement": d.agreement_id,
                "exchange_type": d.exchange_type,
                "reason": d.reason_code,
                "attempts": d.attempts,
                "stored_at": _at(d.stored_at, d.HasField("stored_at")),
                "resendable": d.direction == "outbound" and d.stage == "delivery",
            }
            for d in dead.dead_letters
        ],
    )


async def resend(request: Request) -> Response:
    officer = officer_of(request, ADMIN)
    console = console_of(request)
    message_id = request.path_params["message_id"]
    await console.gateway.call(
        console.gateway.gateway().ResendDeadLetter,
        gateway_pb2.ResendDeadLetterRequest(message_id=message_id),
        officer.access_token,
    )
    event("console_dead_letter_resent", message_id=message_id)
    return RedirectResponse("/operator?resent=1#dead-letters", status_code=303)


routes = [
    Route("/operator", operator_page),
    form_route("/operator/dead-letters/{message_id}/resend", resend),
]
