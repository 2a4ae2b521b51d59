"""``pouch case ...``: a consulate's representation cases, through its own gateway's
``RepresentationService`` (scopes ``representation:request`` for the requesting state,
``representation:act`` for the representing one).

``open`` asks a partner's mission for assistance: the person is read from a file (an
``AssistedPerson`` in protobuf JSON), the rest from options. ``transition``, ``note``,
``claim`` and ``acknowledge-costs`` are the steps of the shared state machine; each is
signed by this gateway and sent to the partner's. ``watch`` streams a case's events
until interrupted (Ctrl-C), one line each, or one JSON object a line with ``--json``;
a connection lost once watching (a gateway restarting) is taken up again with backoff,
starting from the case as it then stands.

Usage::

    pouch case open --representing BE --mission-country TH --agreement at-be-civil \\
        --purpose consular_assistance --kind lost_documents --person person.json \\
        --summary "Passport stolen"
    pouch case transition CASE_ID accepted
    pouch case watch CASE_ID
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import uuid
from datetime import datetime
from pathlib import Path

import click
import grpc
import grpc.aio
from rich.console import RenderableType
from rich.text import Text

from gateway.cli.client import (
    GatewayClient,
    enum_choice,
    enum_label,
    fields_table,
    gateway_options,
    next_page,
    read_message,
    stdout_console,
    table,
    when,
)
from gateway.protojson import message_to_dict
from pouch.v1 import representation_pb2 as rep
from pouch.v1 import representation_pb2_grpc

_STATE = "CASE_STATE_"
_KIND = "ASSISTANCE_KIND_"
# A lost watch is taken up again after this pause, doubled each time up to the maximum.
_REWATCH_FIRST_S = 0.5
_REWATCH_MAX_S = 10.0
_ATTACHMENT = click.Path(exists=True, dir_okay=False, path_type=Path)


def _stub(channel: grpc.aio.Channel) -> representation_pb2_grpc.RepresentationServiceAsyncStub:
    return representation_pb2_grpc.RepresentationServiceStub(channel)


def _state(value: rep.CaseState.ValueType) -> str:
    return enum_label(rep.CaseState.Name(value), _STATE)


def _kind(value: rep.AssistanceKind.ValueType) -> str:
    return enum_label(rep.AssistanceKind.Name(value), _KIND)


def _money(claim: rep.CostClaim) -> str:
    return f"{claim.amount_minor} {claim.currency} (minor units)"


def case_view(case: rep.RepresentationCase) -> list[RenderableType]:
    """A case as a consulate reads it: the case, then its notes and cost claims."""
    person = case.person
    name = " ".join([*person.name.given_names, *person.name.family_names])
    drawn: list[RenderableType] = [
        fields_table(
            f"case {case.case_id}",
            [
                ("state", _state(case.state)),
                ("kind", _kind(case.kind)),
                ("requesting", case.requesting_state),
                ("representing", case.representing_state),
                ("mission country", case.mission_country),
                ("agreement", case.agreement_id),
                ("purpose", case.purpose),
                ("person", name or "-"),
                ("next deadline", when(case.next_deadline)),
                ("created", when(case.created_at)),
                ("updated", when(case.updated_at)),
                ("identity confirmations", ", ".join(case.identity_confirmations) or "-"),
            ],
        )
    ]
    if case.notes:
        drawn.append(
            table(
                "notes",
                ["note", "by", "at", "text", "attachments"],
                [
                    (
                        n.note_id,
                        n.author_state,
                        when(n.created_at),
                        n.text,
                        ", ".join(a.file_name for a in n.attachments) or "-",
                    )
                    for n in case.notes
                ],
            )
        )
    if case.cost_claims:
        drawn.append(
            table(
                "cost claims",
                ["claim", "amount", "description", "acknowledged"],
                [
                    (c.claim_id, _money(c), c.description, "yes" if c.acknowledged else "no")
                    for c in case.cost_claims
                ],
            )
        )
    return drawn


@click.group(name="case")
def case() -> None:
    """Representation cases shared with a partner state's mission."""


@case.command(name="open")
@gateway_options
@click.option("--representing", required=True, help="The state whose mission is asked, e.g. BE.")
@click.option("--mission-country", required=True, help="Where that mission is (ISO 3166-1).")
@click.option("--agreement", "agreement_id", required=True, help="The agreement's id.")
@click.option("--purpose", required=True, help="The declared purpose, as the agreement names it.")
@click.option("--kind", required=True, type=enum_choice(rep.AssistanceKind.keys(), _KIND))
@click.option(
    "--person",
    "person_file",
    required=True,
    metavar="FILE",
    help="The person assisted, an AssistedPerson in protobuf JSON ('-': standard input).",
)
@click.option("--summary", default="", help="What is asked, in a sentence.")
@click.option("--reference", default=None, help="Your idempotency key (default: a new one).")
@click.option("--legal-basis", default=None, help="The provision relied on, for special data.")
@click.option("--consent", is_flag=True, help="The person's explicit consent is recorded.")
def open_case(
    client: GatewayClient,
    representing: str,
    mission_country: str,
    agreement_id: str,
    purpose: str,
    kind: str,
    person_file: str,
    summary: str,
    reference: str | None,
    legal_basis: str | None,
    consent: bool,
) -> None:
    """Ask a partner's mission to assist a national: opens a shared case."""
    request = rep.RequestAssistanceRequest(
        client_reference=reference or f"cli-{uuid.uuid4()}",
        representing_state=representing,
        mission_country=mission_country,
        agreement_id=agreement_id,
        purpose=purpose,
        kind=rep.AssistanceKind.Value(_KIND + kind.upper()),
        person=read_message(person_file, rep.AssistedPerson, "--person"),
        summary=summary,
    )
    if legal_basis is not None or consent:
        request.legal_basis.reference = legal_basis or ""
        request.legal_basis.consent_recorded = consent
    answer = client.unary(lambda ch: _stub(ch).RequestAssistance, request)
    client.emit(answer, lambda: case_view(answer.case))


@case.command(name="list")
@gateway_options
@click.option("--state", type=enum_choice(rep.CaseState.keys(), _STATE), default=None)
@click.option("--kind", type=enum_choice(rep.AssistanceKind.keys(), _KIND), default=None)
@click.option(
    "--deadline-before",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
    default=None,
    help="Only cases due before this time (UTC unless it names its offset).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--page-token", default="", help="Where the previous listing stopped.")
def list_cases(
    client: GatewayClient,
    state: str | None,
    kind: str | None,
    deadline_before: datetime | None,
    limit: int,
    page_token: str,
) -> None:
    """List cases, with their state and next deadline."""
    request = rep.ListCasesRequest(page_size=limit, page_token=page_token)
    if state is not None:
        request.state = rep.CaseState.Value(_STATE + state.upper())
    if kind is not None:
        request.kind = rep.AssistanceKind.Value(_KIND + kind.upper())
    if deadline_before is not None:
        request.deadline_before.FromDatetime(deadline_before)
    answer = client.unary(lambda ch: _stub(ch).ListCases, request)

    def render() -> list[RenderableType]:
        drawn: list[RenderableType] = [
            table(
                f"{len(answer.cases)} cases",
                ["case", "state", "kind", "requesting", "representing", "next deadline"],
                [
                    (
                        c.case_id,
                        _state(c.state),
                        _kind(c.kind),
                        c.requesting_state,
                        c.representing_state,
                        when(c.next_deadline),
                    )
                    for c in answer.cases
                ],
            )
        ]
        if answer.next_page_token:
            drawn.append(next_page(answer.next_page_token))
        return drawn

    client.emit(answer, render)


@case.command(name="show")
@gateway_options
@click.argument("case_id")
def show(client: GatewayClient, case_id: str) -> None:
    """Show the case CASE_ID: state, deadline, notes and cost claims."""
    answer = client.unary(lambda ch: _stub(ch).GetCase, rep.GetCaseRequest(case_id=case_id))
    client.emit(answer, lambda: case_view(answer.case))


@case.command(name="watch")
@gateway_options
@click.argument("case_id")
def watch(client: GatewayClient, case_id: str) -> None:
    """Stream the events of the case CASE_ID as they happen, until interrupted."""
    console = stdout_console()

    def show(event: rep.WatchCaseResponse) -> None:
        if client.as_json:
            click.echo(json.dumps(message_to_dict(event), ensure_ascii=False))
            return
        console.print(
            Text(
                f"{when(event.occurred_at)}  {event.event_kind:<20} "
                f"state {_state(event.case.state)}"
            )
        )

    async def follow(channel: grpc.aio.Channel) -> None:
        watched = False
        pause_s = _REWATCH_FIRST_S
        while True:
            # No deadline: a watch lasts as long as the person wants it to.
            events = _stub(channel).WatchCase(
                rep.WatchCaseRequest(case_id=case_id), metadata=client.metadata
            )
            try:
                async for event in events:
                    watched, pause_s = True, _REWATCH_FIRST_S
                    show(event)
                return  # the gateway ended the stream
            except grpc.aio.AioRpcError as e:
                # Once watching, a lost connection (a gateway restarting) is waited out:
                # the case as it then stands comes first again ("current").
                if not (watched and client.unreached(e)):
                    raise
                click.echo(
                    f"pouch: lost the gateway at {client.target} ({e.details()}); "
                    f"watching again in {pause_s:g} s",
                    err=True,
                )
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, _REWATCH_MAX_S)

    if not client.as_json:
        click.echo(f"watching case {case_id} at {client.target} (Ctrl-C to stop)", err=True)
    try:
        client.run(follow)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


@case.command(name="transition")
@gateway_options
@click.argument("case_id")
@click.argument("target", type=enum_choice(rep.CaseState.keys(), _STATE))
@click.option(
    "--reason",
    default="",
    help="Why, as a reason code (A-Z, 0-9, '_'): for a decline, a failure or a cancellation.",
)
def transition(client: GatewayClient, case_id: str, target: str, reason: str) -> None:
    """Move the case CASE_ID to TARGET (acknowledged, accepted, in_progress, ...)."""
    request = rep.TransitionCaseRequest(
        case_id=case_id, target_state=rep.CaseState.Value(_STATE + target.upper()), reason=reason
    )
    answer = client.unary(lambda ch: _stub(ch).TransitionCase, request)
    client.emit(answer, lambda: case_view(answer.case))


@case.command(name="note")
@gateway_options
@click.argument("case_id")
@click.option("--text", required=True, help="The note.")
@click.option(
    "--attach", "attachments", multiple=True, type=_ATTACHMENT, help="A file to attach (repeat)."
)
def note(client: GatewayClient, case_id: str, text: str, attachments: tuple[Path, ...]) -> None:
    """Add a note (and attachments) to the case CASE_ID; it travels under the policy."""
    request = rep.AddNoteRequest(case_id=case_id, text=text)
    for path in attachments:
        try:
            content = path.read_bytes()
        except OSError as e:
            raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--attach") from e
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        request.attachments.add(file_name=path.name, media_type=media_type, content=content)
    answer = client.unary(lambda ch: _stub(ch).AddNote, request)
    added = answer.note
    client.emit(
        answer,
        lambda: fields_table(
            f"note {added.note_id}",
            [
                ("case", case_id),
                ("by", added.author_state),
                ("at", when(added.created_at)),
                ("attachments", str(len(added.attachments))),
            ],
        ),
    )


def _claim_view(answer: rep.ClaimCostsResponse | rep.AcknowledgeCostsResponse) -> RenderableType:
    claim = answer.claim
    return fields_table(
        f"cost claim {claim.claim_id}",
        [
            ("amount", _money(claim)),
            ("description", claim.description),
            ("acknowledged", "yes" if claim.acknowledged else "no"),
        ],
    )


@case.command(name="claim")
@gateway_options
@click.argument("case_id")
@click.option("--currency", required=True, help="ISO 4217 code, e.g. EUR.")
@click.option(
    "--amount-minor",
    required=True,
    type=click.IntRange(min=1),
    help="The amount in the currency's minor unit (12000 for EUR 120.00).",
)
@click.option(
    "--description",
    default="",
    help="The cost category code (A-Z, 0-9, '_'), e.g. TRAVEL_DOCUMENT_FEE: never free text.",
)
def claim(
    client: GatewayClient, case_id: str, currency: str, amount_minor: int, description: str
) -> None:
    """Claim the costs of assisting in the case CASE_ID (the representing state)."""
    request = rep.ClaimCostsRequest(
        case_id=case_id, currency=currency, amount_minor=amount_minor, description=description
    )
    answer = client.unary(lambda ch: _stub(ch).ClaimCosts, request)
    client.emit(answer, lambda: _claim_view(answer))


@case.command(name="acknowledge-costs")
@gateway_options
@click.argument("case_id")
@click.argument("claim_id")
def acknowledge_costs(client: GatewayClient, case_id: str, claim_id: str) -> None:
    """Acknowledge the cost claim CLAIM_ID of the case CASE_ID (the requesting state)."""
    request = rep.AcknowledgeCostsRequest(case_id=case_id, claim_id=claim_id)
    answer = client.unary(lambda ch: _stub(ch).AcknowledgeCosts, request)
    client.emit(answer, lambda: _claim_view(answer))
