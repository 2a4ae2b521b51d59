"""``pouch civil submit|status|list``: a registry's civil-record updates, through its own
gateway's ``CivilRecordService`` (scope ``civil:submit``).

``submit`` reads the update as the registry holds it, a ``CivilRecordUpdate`` in the
protobuf JSON form (``--file``, ``-`` for standard input), and takes the envelope's
fields (recipient, agreement, purpose, legal basis) as options. It returns once the
update is durable in the gateway's outbox; ``status`` follows it to the partner's
registry. ``submit-batch`` streams many (one ``SubmitUpdateRequest`` a line) and says of
each whether it was taken. Nothing here prints an update's content: only ids, states
and reason codes.

Usage::

    pouch civil submit --file birth.json --to BE --agreement at-be-civil \\
        --purpose civil_status_update --reference GRZ-2026-000042
    pouch civil submit-batch updates.jsonl --agreement at-be-civil --purpose civil_status_update
    pouch civil status MESSAGE_ID
    pouch civil list --state dead_lettered
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from contextlib import AbstractContextManager

import click
import grpc.aio
from google.protobuf import json_format
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from gateway.cli.client import (
    EXIT_REFUSED,
    GatewayClient,
    enum_choice,
    enum_label,
    fields_table,
    gateway_options,
    next_page,
    read_lines,
    read_message,
    stdout_console,
    table,
    when,
)
from gateway.protojson import message_to_dict, parse_dict
from pouch.v1 import civil_pb2, civil_pb2_grpc, common_pb2

_STATE = "DELIVERY_STATE_"
_FINAL = frozenset(
    {
        common_pb2.DELIVERY_STATE_APPLIED,
        common_pb2.DELIVERY_STATE_REJECTED,
        common_pb2.DELIVERY_STATE_DEAD_LETTERED,
    }
)
# civil status --wait asks again after this pause, doubled each time up to the maximum.
_POLL_FIRST_S = 0.2
_POLL_MAX_S = 2.0
_EVENT = "CIVIL_EVENT_TYPE_"


def _state(value: common_pb2.DeliveryState.ValueType) -> str:
    return enum_label(common_pb2.DeliveryState.Name(value), _STATE)


def _event(value: civil_pb2.CivilEventType.ValueType) -> str:
    return enum_label(civil_pb2.CivilEventType.Name(value), _EVENT)


@click.group(name="civil")
def civil() -> None:
    """Civil-record updates: submit one, follow its delivery, list them."""


@civil.command(name="submit")
@gateway_options
@click.option(
    "--file",
    "update_file",
    required=True,
    metavar="FILE",
    help="The update, a CivilRecordUpdate in protobuf JSON ('-' reads standard input).",
)
@click.option("--to", "recipient", required=True, help="The partner state, e.g. BE.")
@click.option("--agreement", "agreement_id", required=True, help="The agreement's id.")
@click.option("--purpose", required=True, help="The declared purpose, as the agreement names it.")
@click.option(
    "--reference",
    default=None,
    help="Your idempotency key: the same key returns the same message id. "
    "Default: a new one, printed, to give again on a retry.",
)
@click.option("--legal-basis", default=None, help="The provision relied on, for special data.")
@click.option("--consent", is_flag=True, help="The person's explicit consent is recorded.")
def submit(
    client: GatewayClient,
    update_file: str,
    recipient: str,
    agreement_id: str,
    purpose: str,
    reference: str | None,
    legal_basis: str | None,
    consent: bool,
) -> None:
    """Submit one civil-record update; returns once it is durable in the outbox."""
    request = civil_pb2.SubmitUpdateRequest(
        client_reference=reference or f"cli-{uuid.uuid4()}",
        recipient_state=recipient,
        agreement_id=agreement_id,
        purpose=purpose,
        update=read_message(update_file, civil_pb2.CivilRecordUpdate, "--file"),
    )
    if legal_basis is not None or consent:
        request.legal_basis.CopyFrom(
            common_pb2.LegalBasis(reference=legal_basis or "", consent_recorded=consent)
        )
    answer = client.unary(
        lambda ch: civil_pb2_grpc.CivilRecordServiceStub(ch).SubmitUpdate, request
    )
    client.emit(
        answer,
        lambda: fields_table(
            "submitted",
            [
                ("message id", answer.message_id),
                ("reference", request.client_reference),
                ("state", _state(answer.state)),
            ],
        ),
    )


@civil.command(name="submit-batch")
@gateway_options
@click.argument("requests_file", metavar="FILE")
@click.option("--to", "recipient", default="", help="For lines that name no recipient state.")
@click.option("--agreement", "agreement_id", default="", help="For lines that name none.")
@click.option("--purpose", default="", help="For lines that declare none.")
def submit_batch(
    client: GatewayClient, requests_file: str, recipient: str, agreement_id: str, purpose: str
) -> None:
    """Submit many updates in one stream: FILE holds one SubmitUpdateRequest in protobuf
    JSON a line ('-' reads standard input). Exits 1 if any was refused."""
    requests = [
        _batch_line(number, line, recipient, agreement_id, purpose)
        for number, line in enumerate(read_lines(requests_file, "FILE"), start=1)
        if line.strip()
    ]
    if not requests:
        raise click.BadParameter(f"{requests_file} holds no request", param_hint="FILE")
    progress = Progress(
        TextColumn("submitting"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=client.as_json,
    )

    async def stream(channel: grpc.aio.Channel) -> list[civil_pb2.SubmitUpdatesResponse]:
        task = progress.add_task("", total=len(requests))
        calls = civil_pb2_grpc.CivilRecordServiceStub(channel).SubmitUpdates(
            (civil_pb2.SubmitUpdatesRequest(update=r) for r in requests),
            metadata=client.metadata,
            timeout=client.timeout_s + len(requests),
        )
        answers = []
        async for answer in calls:
            answers.append(answer)
            progress.advance(task)
        return answers

    with progress:
        answers = client.run(stream)
    refused = [a for a in answers if a.error_reason]
    if client.as_json:
        click.echo(json.dumps({"results": [message_to_dict(a) for a in answers]}, indent=2))
    else:
        stdout_console().print(
            table(
                f"{len(answers) - len(refused)} of {len(requests)} taken",
                ["reference", "message id", "state", "refused (reason)"],
                [
                    (
                        a.client_reference,
                        a.message_id or "-",
                        _state(a.state) if not a.error_reason else "-",
                        f"{a.error_reason}: {a.error_message}" if a.error_reason else "-",
                    )
                    for a in answers
                ],
            )
        )
    if refused:
        click.echo(f"pouch: {len(refused)} of {len(requests)} updates refused", err=True)
        raise click.exceptions.Exit(EXIT_REFUSED)


def _batch_line(
    number: int, line: str, recipient: str, agreement_id: str, purpose: str
) -> civil_pb2.SubmitUpdateRequest:
    try:
        request = parse_dict(json.loads(line), civil_pb2.SubmitUpdateRequest)
    except (json.JSONDecodeError, json_format.ParseError) as e:
        raise click.BadParameter(
            f"line {number} is not a SubmitUpdateRequest: {e}", param_hint="FILE"
        ) from e
    request.recipient_state = request.recipient_state or recipient
    request.agreement_id = request.agreement_id or agreement_id
    request.purpose = request.purpose or purpose
    request.client_reference = request.client_reference or f"cli-{uuid.uuid4()}"
    return request


@civil.command(name="status")
@gateway_options
@click.argument("message_id")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Ask again until the update is applied, rejected or dead-lettered, for at most "
    "this long; then print where it stands.",
)
def status(client: GatewayClient, message_id: str, wait_s: float) -> None:
    """Where the update MESSAGE_ID stands: queued, delivered, applied, rejected..."""
    request = civil_pb2.GetUpdateStatusRequest(message_id=message_id)

    async def follow(channel: grpc.aio.Channel) -> civil_pb2.GetUpdateStatusResponse:
        stub = civil_pb2_grpc.CivilRecordServiceStub(channel)
        deadline = time.monotonic() + wait_s
        pause_s = _POLL_FIRST_S
        while True:
            answer = await stub.GetUpdateStatus(
                request, metadata=client.metadata, timeout=client.timeout_s
            )
            if answer.status.state in _FINAL or time.monotonic() + pause_s > deadline:
                return answer
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, _POLL_MAX_S)

    waiting: AbstractContextManager[object] = (
        Console(stderr=True).status(f"waiting for {message_id}")
        if wait_s and not client.as_json
        else contextlib.nullcontext()
    )
    with waiting:
        answer = client.run(follow)
    found = answer.status
    client.emit(
        answer,
        lambda: fields_table(
            f"update {found.message_id}",
            [
                ("reference", found.client_reference),
                ("to", found.recipient_state),
                ("event", _event(found.event_type)),
                ("state", _state(found.state)),
                ("reason", found.reason_code or "-"),
                ("attempts", str(found.attempts)),
                ("submitted", when(found.submitted_at)),
                ("updated", when(found.updated_at)),
            ],
        ),
    )


@civil.command(name="list")
@gateway_options
@click.option(
    "--state",
    type=enum_choice(common_pb2.DeliveryState.keys(), _STATE),
    default=None,
    help="Only updates in this delivery state.",
)
@click.option("--to", "recipient", default="", help="Only updates to this partner state.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--page-token", default="", help="Where the previous listing stopped.")
def list_updates(
    client: GatewayClient, state: str | None, recipient: str, limit: int, page_token: str
) -> None:
    """List submitted updates with their delivery state."""
    request = civil_pb2.ListUpdatesRequest(
        state=common_pb2.DeliveryState.Value(_STATE + state.upper())
        if state
        else common_pb2.DELIVERY_STATE_UNSPECIFIED,
        recipient_state=recipient,
        page_size=limit,
        page_token=page_token,
    )
    answer = client.unary(lambda ch: civil_pb2_grpc.CivilRecordServiceStub(ch).ListUpdates, request)

    def render() -> list[RenderableType]:
        drawn: list[RenderableType] = [
            table(
                f"{len(answer.updates)} updates",
                [
                    "message id",
                    "reference",
                    "to",
                    "event",
                    "state",
                    "reason",
                    "attempts",
                    "updated",
                ],
                [
                    (
                        u.message_id,
                        u.client_reference,
                        u.recipient_state,
                        _event(u.event_type),
                        _state(u.state),
                        u.reason_code or "-",
                        str(u.attempts),
                        when(u.updated_at),
                    )
                    for u in answer.updates
                ],
            )
        ]
        if answer.next_page_token:
            drawn.append(next_page(answer.next_page_token))
        return drawn

    client.emit(answer, render)
