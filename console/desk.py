"""The consular case desk: the state's cases, one case, and what the officer may do.

Cases are listed as requester and as representing state, the next deadline first,
overdue and soon-due ones marked. A case page offers only the moves the case machine
allows this state's role and the officer's scopes; whatever is posted goes to the
gateway as the officer, which decides (a forced move comes back refused, in words).
Case ids are the only values in URLs: names, dates of birth and notes travel in
request bodies and never reach a log line or a page title.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.gateway_calls import GatewayRefusal
from console.web import console_of, event, form_route, officer_of, render, session_of
from gateway.exchanges.case_machine import (
    COSTS_CLAIMABLE,
    CaseRole,
    CaseStatus,
    allowed_targets,
)
from pouch.v1 import agreement_pb2, common_pb2
from pouch.v1 import representation_pb2 as rep

CASE_SCOPES = ("representation:request", "representation:act")
SOON = timedelta(hours=24)
# How often a quiet live stream looks whether its session still stands.
SESSION_CHECK_S = 15.0
_STATE_PREFIX = "CASE_STATE_"
_KIND_PREFIX = "ASSISTANCE_KIND_"
KINDS = tuple(
    name.removeprefix(_KIND_PREFIX).lower() for name, n in rep.AssistanceKind.items() if n
)
STATES = tuple(name.removeprefix(_STATE_PREFIX).lower() for name, n in rep.CaseState.items() if n)
# The scope each role's moves need at the gateway.
ROLE_SCOPE = {
    CaseRole.REQUESTING: "representation:request",
    CaseRole.REPRESENTING: "representation:act",
}
# Moves whose reason the machine's other party reads.
NEEDS_REASON = frozenset({CaseStatus.DECLINED, CaseStatus.FAILED, CaseStatus.CANCELLED})


def state_name(value: int) -> str:
    return rep.CaseState.Name(value).removeprefix(_STATE_PREFIX).lower()  # type: ignore[arg-type]


def kind_name(value: int) -> str:
    return rep.AssistanceKind.Name(value).removeprefix(_KIND_PREFIX).lower()  # type: ignore[arg-type]


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
    if wanted_state in STATES:
        listing.state = rep.CaseState.Value(_STATE_PREFIX + wanted_state.upper())
    if wanted_kind in KINDS:
        listing.kind = rep.AssistanceKind.Value(_KIND_PREFIX + wanted_kind.upper())
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
                "kind": kind_name(case.kind),
                "state": state_name(case.state),
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
        kinds=KINDS,
        states=STATES,
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
    current = CaseStatus(state_name(case.state))
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


async def _case(request: Request) -> rep.RepresentationCase:
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
        "case_state": state_name(case.state),
        "kind": kind_name(case.kind),
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
                "state": state_name(e.state),
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
    case = await _case(request)
    return render(request, "case.html", **_case_context(request, case))


async def case_panel(request: Request) -> Response:
    """The live part of a case page, fetched again when the case changes."""
    case = await _case(request)
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
                        {"event_kind": answer.event_kind, "state": state_name(answer.case.state)}
                    ),
                }
        except GatewayRefusal as refusal:
            yield {"event": "refused", "data": json.dumps({"reason": refusal.reason})}
        finally:
            pending.cancel()

    return EventSourceResponse(events(), ping=15)


async def transition(request: Request) -> Response:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    case_id = request.path_params["case_id"]
    form = await request.form()
    target = str(form.get("target", ""))
    reason = str(form.get("reason", ""))
    try:
        target_state = rep.CaseState.Value(_STATE_PREFIX + target.upper())
    except ValueError:
        target_state = rep.CASE_STATE_UNSPECIFIED
    # The gateway decides every move, also one this page did not offer.
    await console.gateway.call(
        console.gateway.representation().TransitionCase,
        rep.TransitionCaseRequest(case_id=case_id, target_state=target_state, reason=reason),
        officer.access_token,
    )
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


async def add_note(request: Request) -> Response:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    case_id = request.path_params["case_id"]
    limit = console.settings.console.max_attachment_bytes
    form = await request.form()  # already read, its token checked, by form_route
    attachments = []
    for upload in form.getlist("attachment"):
        if not isinstance(upload, UploadFile) or not upload.filename:
            continue
        content = await upload.read(limit + 1)
        if len(content) > limit:
            raise GatewayRefusal(
                status="INVALID_ARGUMENT",
                reason="ATTACHMENT_TOO_LARGE",
                message=f"attachment: at most {limit} bytes",
            )
        attachments.append(
            rep.Attachment(
                file_name=upload.filename,
                media_type=upload.content_type or "application/octet-stream",
                content=content,
            )
        )
    text = str(form.get("text", ""))
    await console.gateway.call(
        console.gateway.representation().AddNote,
        rep.AddNoteRequest(case_id=case_id, text=text, attachments=attachments),
        officer.access_token,
    )
    return RedirectResponse(f"/cases/{case_id}#notes", status_code=303)


async def attachment(request: Request) -> Response:
    case = await _case(request)
    note_id = request.path_params["note_id"]
    index = request.path_params["index"]
    for note in case.notes:
        if note.note_id == note_id and 0 <= index < len(note.attachments):
            item = note.attachments[index]
            return Response(
                item.content,
                media_type="application/octet-stream",
                headers={
                    # The name the officer gave may name the person: it is not repeated.
                    "content-disposition": (
                        f'attachment; filename="attachment-{index + 1}'
                        f'{mimetypes.guess_extension(item.media_type) or ".bin"}"'
                    ),
                    "x-content-type-options": "nosniff",
                },
            )
    return render(request, "error.html", status_code=404, refusal=None, problem="404")


async def claim_costs(request: Request) -> Response:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    case_id = request.path_params["case_id"]
    form = await request.form()
    amount = str(form.get("amount", "")).replace(",", ".").strip()
    try:
        whole, _, cents = amount.partition(".")
        amount_minor = int(whole or "0") * 100 + int((cents + "00")[:2] or "0")
        if len(cents) > 2 or amount_minor <= 0:
            raise ValueError
    except ValueError:
        raise GatewayRefusal(
            status="INVALID_ARGUMENT",
            reason="AMOUNT_INVALID",
            message="amount: a positive amount with at most two decimals",
        ) from None
    await console.gateway.call(
        console.gateway.representation().ClaimCosts,
        rep.ClaimCostsRequest(
            case_id=case_id,
            currency=str(form.get("currency", "")).upper(),
            amount_minor=amount_minor,
            description=str(form.get("description", "")),
        ),
        officer.access_token,
    )
    return RedirectResponse(f"/cases/{case_id}#costs", status_code=303)


async def acknowledge_costs(request: Request) -> Response:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    case_id = request.path_params["case_id"]
    await console.gateway.call(
        console.gateway.representation().AcknowledgeCosts,
        rep.AcknowledgeCostsRequest(case_id=case_id, claim_id=request.path_params["claim_id"]),
        officer.access_token,
    )
    return RedirectResponse(f"/cases/{case_id}#costs", status_code=303)


async def _representation_agreements(request: Request) -> list[dict[str, Any]]:
    """The agreements under which this state may ask for representation, with purposes."""
    officer = officer_of(request, "representation:request")
    console = console_of(request)
    me = console.settings.console.state
    answer = await console.gateway.call(
        console.gateway.agreements().ListAgreements,
        agreement_pb2.ListAgreementsRequest(),
        officer.access_token,
    )
    found = []
    for summary in answer.agreements:
        if summary.status != agreement_pb2.AGREEMENT_STATUS_ACTIVE:
            continue
        if common_pb2.EXCHANGE_TYPE_REPRESENTATION not in summary.exchange_types:
            continue
        detail = await console.gateway.call(
            console.gateway.agreements().GetAgreement,
            agreement_pb2.GetAgreementRequest(agreement_id=summary.ref.id),
            officer.access_token,
        )
        document = json.loads(detail.canonical_json or b"{}")
        directions = document.get("exchanges", {}).get("representation", {})
        for partner in summary.parties:
            rule = directions.get(f"{me}->{partner}") if partner != me else None
            if isinstance(rule, dict):
                found.append(
                    {
                        "agreement_id": summary.ref.id,
                        "title": summary.title,
                        "partner": partner,
                        "purposes": list(rule.get("purposes", [])),
                        "kinds": list(rule.get("kinds", [])),
                    }
                )
    return found


async def new_case_form(request: Request) -> Response:
    agreements = await _representation_agreements(request)
    return render(request, "new_case.html", agreements=agreements, kinds=KINDS)


async def open_case(request: Request) -> Response:
    officer = officer_of(request, "representation:request")
    console = console_of(request)
    form = await request.form()
    choice = str(form.get("agreement", ""))
    agreement_id, _, partner = choice.partition("|")
    kind = str(form.get("kind", ""))
    born = str(form.get("date_of_birth", ""))
    person = rep.AssistedPerson(
        name=common_pb2.PersonName(
            given_names=str(form.get("given_names", "")).split(),
            family_names=str(form.get("family_names", "")).split(),
        ),
        nationality=str(form.get("nationality", "")).upper() or console.settings.console.state,
        location=common_pb2.Place(
            country_code=str(form.get("mission_country", "")).upper(),
            locality=str(form.get("locality", "")),
        ),
        contact=str(form.get("contact", "")),
        is_minor=form.get("is_minor") == "on",
    )
    if born:
        try:
            day = datetime.strptime(born, "%Y-%m-%d").date()
        except ValueError:
            raise GatewayRefusal(
                status="INVALID_ARGUMENT",
                reason="DATE_INVALID",
                message="date_of_birth: a date written YYYY-MM-DD",
            ) from None
        person.date_of_birth.CopyFrom(
            common_pb2.CivilDate(year=day.year, month=day.month, day=day.day)
        )
    try:
        kind_value = rep.AssistanceKind.Value(_KIND_PREFIX + kind.upper())
    except ValueError:
        kind_value = rep.ASSISTANCE_KIND_UNSPECIFIED
    request_message = rep.RequestAssistanceRequest(
        client_reference=f"console-{uuid.uuid4()}",
        representing_state=partner,
        mission_country=str(form.get("mission_country", "")).upper(),
        agreement_id=agreement_id,
        purpose=str(form.get("purpose", "")),
        kind=kind_value,
        person=person,
        summary=str(form.get("summary", "")),
    )
    legal_basis = str(form.get("legal_basis", ""))
    if legal_basis or form.get("consent_recorded") == "on":
        request_message.legal_basis.reference = legal_basis
        request_message.legal_basis.consent_recorded = form.get("consent_recorded") == "on"
    answer = await console.gateway.call(
        console.gateway.representation().RequestAssistance, request_message, officer.access_token
    )
    event("console_case_opened", case_id=answer.case.case_id)
    return RedirectResponse(f"/cases/{answer.case.case_id}", status_code=303)


routes = [
    Route("/cases", desk),
    form_route("/cases", open_case),
    Route("/cases/new", new_case_form),
    Route("/cases/{case_id}", case_page),
    Route("/cases/{case_id}/panel", case_panel),
    Route("/cases/{case_id}/events", case_events),
    form_route("/cases/{case_id}/transition", transition),
    form_route("/cases/{case_id}/notes", add_note),
    Route("/cases/{case_id}/notes/{note_id}/attachments/{index:int}", attachment),
    form_route("/cases/{case_id}/costs", claim_costs),
    form_route("/cases/{case_id}/costs/{claim_id}/acknowledge", acknowledge_costs),
]
