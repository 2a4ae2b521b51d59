"""The consular case desk: the state's cases, one case, and what the officer may do.

Cases are listed as requester and as representing state, the next deadline first,
overdue and soon-due ones marked. A case page offers only the moves the case machine
allows this state's role and the officer's scopes; whatever is posted goes to the
gateway as the officer, which decides (a forced move comes back refused, in words).
Case ids are the only values in URLs: names, dates of birth and notes travel in
request bodies and never reach a log line or a page title. What an officer posts is in
:mod:`console.case_actions`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.gateway_calls import GatewayRefusal
from console.web import console_of, officer_of, refusal_seen, render, session_of
from console.wire import CASE_STATES, KINDS
from gateway.exchanges.case_machine import (
    COSTS_CLAIMABLE,
    CaseRole,
    CaseStatus,
    allowed_targets,
)
from pouch.v1 import representation_pb2 as rep

CASE_SCOPES = ("representation:request", "representation:act")
SOON = timedelta(hours=24)
# How often a quiet live stream looks whether its session still stands.
SESSION_CHECK_S = 15.0
# The scope each role's moves need at the gateway.
ROLE_SCOPE = {
    CaseRole.REQUESTING: "representation:request",
    CaseRole.REPRESENTING: "representation:act",
}
# Moves whose reason the machine's other party reads.
NEEDS_REASON = frozenset({CaseStatus.DECLINED, CaseStatus.FAILED, CaseStatus.CANCELLED})


def _deadline(case: rep.RepresentationCase) -> datetime | None:
    if not case.HasField("next_deadline"):
        return None
    return case.next_deadline.ToDatetime(tzinfo=UTC)


def _urgency(deadline: datetime | None, now: datetime) -> str:
    if deadline is None:
        return "none"
    if deadline < now:
        return "overdue"
    if deadline - now < SOON:
        return "soon"
    return "later"


def role_in(case: rep.RepresentationCase, state: str) -> CaseRole:
    return CaseRole.REQUESTING if case.requesting_state == state else CaseRole.REPRESENTING


async def desk(request: Request) -> Response:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    query = request.query_params
    wanted_state = query.get("state", "")
    wanted_kind = query.get("kind", "")
    wanted_partner = query.get("partner", "").upper()
    wanted_due = query.get("due", "")
    listing = rep.ListCasesRequest(page_size=200)
    listing.state = CASE_STATES.value(wanted_state)
    listing.kind = KINDS.value(wanted_kind)
    answer = await console.gateway.call(
        console.gateway.representation().ListCases, listing, officer.access_token
    )
    now = datetime.now(UTC)
    me = console.settings.console.state
    rows = []
    for case in answer.cases:
        role = role_in(case, me)
        partner = case.representing_state if role is CaseRole.REQUESTING else case.requesting_state
        deadline = _deadline(case)
        urgency = _urgency(deadline, now)
        if wanted_partner and partner != wanted_partner:
            continue
        if wanted_due in ("overdue", "soon") and urgency != wanted_due:
            continue
        if wanted_due == "week" and (deadline is None or deadline - now > timedelta(days=7)):
            continue
        rows.append(
            {
                "case_id": case.case_id,
                "role": role.value,
                "partner": partner,
                "kind": KINDS.code(case.kind),
                "state": CASE_STATES.code(case.state),
                "deadline": deadline,
                "urgency": urgency,
                "updated_at": case.updated_at.ToDatetime(tzinfo=UTC),
            }
        )
    far = datetime.max.replace(tzinfo=UTC)
    rows.sort(key=lambda r: (r["deadline"] or far, r["case_id"]))
    partners = sorted({r["partner"] for r in rows} | ({wanted_partner} - {""}))
    return render(
        request,
        "desk.html",
        rows=rows,
        kinds=KINDS.all,
        states=CASE_STATES.all,
        partners=partners,
        filters={
            "state": wanted_state,
            "kind": wanted_kind,
            "partner": wanted_partner,
            "due": wanted_due,
        },
    )


def _actions(case: rep.RepresentationCase, me: str, scopes: frozenset[str]) -> dict[str, Any]:
    role = role_in(case, me)
    current = CaseStatus(CASE_STATES.code(case.state))
    own_scope = ROLE_SCOPE[role] in scopes
    moves = sorted(allowed_targets(current, role), key=lambda s: list(CaseStatus).index(s))
    return {
        "role": role.value,
        "moves": [
            {"target": m.value, "needs_reason": m in NEEDS_REASON} for m in moves if own_scope
        ],
        "may_claim": (
            role is CaseRole.REPRESENTING
            and "representation:act" in scopes
            and current in COSTS_CLAIMABLE
        ),
        "may_acknowledge": role is CaseRole.REQUESTING and "representation:request" in scopes,
        "may_note": bool(scopes & set(CASE_SCOPES)),
    }


async def fetch_case(request: Request) -> rep.RepresentationCase:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    answer = await console.gateway.call(
        console.gateway.representation().GetCase,
        rep.GetCaseRequest(case_id=request.path_params["case_id"]),
        officer.access_token,
    )
    case: rep.RepresentationCase = answer.case
    return case


def _case_context(request: Request, case: rep.RepresentationCase) -> dict[str, Any]:
    officer = officer_of(request, *CASE_SCOPES)
    me = console_of(request).settings.console.state
    deadline = _deadline(case)
    person = case.person
    return {
        "case": case,
        "case_state": CASE_STATES.code(case.state),
        "kind": KINDS.code(case.kind),
        "deadline": deadline,
        "urgency": _urgency(deadline, datetime.now(UTC)),
        "actions": _actions(case, me, officer.scopes),
        "person": {
            "given": " ".join(person.name.given_names),
            "family": " ".join(person.name.family_names),
            "born": (
                f"{person.date_of_birth.year:04d}-{person.date_of_birth.month:02d}-"
                f"{person.date_of_birth.day:02d}"
                if person.HasField("date_of_birth") and person.date_of_birth.year
                else ""
            ),
            "nationality": person.nationality,
            "location": ", ".join(
                x for x in (person.location.locality, person.location.country_code) if x
            ),
            "contact": person.contact,
            "is_minor": person.is_minor,
        },
        "history": [
            {
                "event_kind": e.event_kind,
                "state": CASE_STATES.code(e.state),
                "actor_state": e.actor_state,
                "message_id": e.message_id,
                "at": e.occurred_at.ToDatetime(tzinfo=UTC),
            }
            for e in case.history
        ],
        "notes": [
            {
                "note_id": n.note_id,
                "author_state": n.author_state,
                "text": n.text,
                "at": n.created_at.ToDatetime(tzinfo=UTC),
                "attachments": [
                    {
                        "index": i,
                        "file_name": a.file_name,
                        "media_type": a.media_type,
                        "size": len(a.content),
                    }
                    for i, a in enumerate(n.attachments)
                ],
            }
            for n in case.notes
        ],
        "claims": [
            {
                "claim_id": c.claim_id,
                "currency": c.currency,
                "amount": f"{c.amount_minor / 100:.2f}",
                "description": c.description,
                "acknowledged": c.acknowledged,
            }
            for c in case.cost_claims
        ],
        "max_attachment_bytes": console_of(request).settings.console.max_attachment_bytes,
    }


async def case_page(request: Request) -> Response:
    case = await fetch_case(request)
    return render(request, "case.html", **_case_context(request, case))


async def case_panel(request: Request) -> Response:
    """The live part of a case page, fetched again when the case changes."""
    case = await fetch_case(request)
    return render(request, "case_panel.html", **_case_context(request, case))


async def case_events(request: Request) -> Response:
    """Server-sent events: one ``case`` event each time the gateway reports a change."""
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    case_id = request.path_params["case_id"]
    session = session_of(request)

    async def events() -> AsyncIterator[dict[str, str]]:
        answers = aiter(
            console.gateway.stream(
                console.gateway.representation().WatchCase,
                rep.WatchCaseRequest(case_id=case_id),
                officer.access_token,
            )
        )
        pending: asyncio.Future[Any] = asyncio.ensure_future(anext(answers))
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=SESSION_CHECK_S)
                if session is None or not console.sessions.alive(session.id):
                    return  # signed out or idle: the page says live updates stopped
                if not done:
                    continue
                try:
                    answer = pending.result()
                except StopAsyncIteration:
                    return
                pending = asyncio.ensure_future(anext(answers))
                if answer.event_kind == "current":
                    continue
                yield {
                    "event": "case",
                    "data": json.dumps(
                        {
                            "event_kind": answer.event_kind,
                            "state": CASE_STATES.code(answer.case.state),
                        }
                    ),
                }
        except GatewayRefusal as refusal:
            refusal_seen(request, refusal)
            yield {"event": "refused", "data": json.dumps({"reason": refusal.reason})}
        finally:
            pending.cancel()

    return EventSourceResponse(events(), ping=15)


routes = [
    Route("/cases", desk),
    Route("/cases/{case_id}", case_page),
    Route("/cases/{case_id}/panel", case_panel),
    Route("/cases/{case_id}/events", case_events),
]
