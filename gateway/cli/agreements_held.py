"""``pouch agreement list|show``: the agreements a running gateway holds, as it judges
them (``AgreementService``, scope ``admin`` or ``audit:read``).

Beside the offline commands of ``pouch agreement`` (``check``, ``verify``, ...), which
judge a file, these ask the gateway: its status of each agreement (active, suspended,
terminated, inactive) and the reason one is not in force.

Usage::

    pouch agreement list --partner BE
    pouch agreement show at-be-civil --canonical
"""

from __future__ import annotations

import click
import grpc.aio
from rich.console import RenderableType

from gateway.cli.client import GatewayClient, enum_label, fields_table, gateway_options, table, when
from pouch.v1 import agreement_pb2, agreement_pb2_grpc, common_pb2

_STATUS = "AGREEMENT_STATUS_"


def _stub(channel: grpc.aio.Channel) -> agreement_pb2_grpc.AgreementServiceAsyncStub:
    return agreement_pb2_grpc.AgreementServiceStub(channel)


def agreement_status(summary: agreement_pb2.AgreementSummary) -> str:
    return enum_label(agreement_pb2.AgreementStatus.Name(summary.status), _STATUS)


def _exchanges(summary: agreement_pb2.AgreementSummary) -> str:
    names = [
        enum_label(common_pb2.ExchangeType.Name(t), "EXCHANGE_TYPE_").lower()
        for t in summary.exchange_types
    ]
    return ", ".join(names) or "-"


def agreements_table(listing: agreement_pb2.ListAgreementsResponse) -> RenderableType:
    return table(
        f"{len(listing.agreements)} agreements",
        ["agreement", "version", "parties", "status", "reason", "valid from", "valid until"],
        [
            (
                a.ref.id,
                str(a.ref.version),
                "-".join(a.parties),
                agreement_status(a),
                a.inactive_reason or "-",
                when(a.valid_from),
                when(a.valid_until),
            )
            for a in listing.agreements
        ],
    )


@click.command(name="list")
@gateway_options
@click.option("--partner", default="", help="Only agreements with this partner state.")
def list_agreements(client: GatewayClient, partner: str) -> None:
    """List the agreements the gateway holds, with status and the reason if not in force."""
    answer = client.unary(
        lambda ch: _stub(ch).ListAgreements,
        agreement_pb2.ListAgreementsRequest(partner_state=partner),
    )
    client.emit(answer, lambda: agreements_table(answer))


@click.command(name="show")
@gateway_options
@click.argument("agreement_id")
@click.option(
    "--canonical",
    is_flag=True,
    help="Print the agreement's canonical JSON (RFC 8785, signatures included) only.",
)
def show_agreement(client: GatewayClient, agreement_id: str, canonical: bool) -> None:
    """Show one agreement as the gateway holds it."""
    answer = client.unary(
        lambda ch: _stub(ch).GetAgreement,
        agreement_pb2.GetAgreementRequest(agreement_id=agreement_id),
    )
    if canonical:
        click.echo(answer.canonical_json.decode("utf-8"))
        return
    summary = answer.summary
    client.emit(
        answer,
        lambda: fields_table(
            f"agreement {summary.ref.id}",
            [
                ("title", summary.title),
                ("version", str(summary.ref.version)),
                ("digest", summary.ref.digest),
                ("parties", ", ".join(summary.parties)),
                ("status", agreement_status(summary)),
                ("reason", summary.inactive_reason or "-"),
                ("valid from", when(summary.valid_from)),
                ("valid until", when(summary.valid_until)),
                ("exchanges", _exchanges(summary)),
            ],
        ),
    )
