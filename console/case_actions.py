"""What an officer does on a case: move it, add a note, claim or acknowledge costs,
open a request. Each form goes to the gateway as the officer, which decides: the page
offers only the moves the case machine allows (:mod:`console.desk`), and a forced one
comes back refused, in words. Form values travel in request bodies only.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from datetime import datetime
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from console.desk import CASE_SCOPES, fetch_case
from console.gateway_calls import GatewayRefusal
from console.web import console_of, event, form_route, officer_of, render
from console.wire import CASE_STATES, KINDS
from pouch.v1 import agreement_pb2, common_pb2
from pouch.v1 import representation_pb2 as rep


async def transition(request: Request) -> Response:
    officer = officer_of(request, *CASE_SCOPES)
    console = console_of(request)
    case_id = request.path_params["case_id"]
    form = await request.form()
    target = str(form.get("target", ""))
    reason = str(form.get("reason", ""))
    # The gateway decides every move, also one this page did not offer.
    await console.gateway.call(
        console.gateway.representation().TransitionCase,
        rep.TransitionCaseRequest(
            case_id=case_id, target_state=CASE_STATES.value(target), reason=reason
        ),
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
    case = await fetch_case(request)
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
    held = [
        summary
        for summary in answer.agreements
        if summary.status == agreement_pb2.AGREEMENT_STATUS_ACTIVE
        and common_pb2.EXCHANGE_TYPE_REPRESENTATION in summary.exchange_types
    ]
    details = await asyncio.gather(
        *(
            console.gateway.call(
                console.gateway.agreements().GetAgreement,
                agreement_pb2.GetAgreementRequest(agreement_id=summary.ref.id),
                officer.access_token,
            )
            for summary in held
        )
    )
    found = []
    for summary, detail in zip(held, details, strict=True):
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
    return render(request, "new_case.html", agreements=agreements, kinds=KINDS.all)


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
    request_message = rep.RequestAssistanceRequest(
        client_reference=f"console-{uuid.uuid4()}",
        representing_state=partner,
        mission_country=str(form.get("mission_country", "")).upper(),
        agreement_id=agreement_id,
        purpose=str(form.get("purpose", "")),
        kind=KINDS.value(kind),
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
    form_route("/cases", open_case),
    Route("/cases/new", new_case_form),
    form_route("/cases/{case_id}/transition", transition),
    form_route("/cases/{case_id}/notes", add_note),
    Route("/cases/{case_id}/notes/{note_id}/attachments/{index:int}", attachment),
    form_route("/cases/{case_id}/costs", claim_costs),
    form_route("/cases/{case_id}/costs/{claim_id}/acknowledge", acknowledge_costs),
]
