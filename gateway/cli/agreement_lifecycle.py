"""``pouch agreement suspend|terminate|resume``: an operator's declaration, through the
local API; and ``pouch agreement reload``, which asks the gateway to re-read its files.

The command calls the operator's own gateway (``AgreementService``) over mutual TLS
with an admin token, with the connection options of every client command
(:func:`~gateway.cli.client.gateway_options`); the gateway records the declaration,
stops (or, for a resumption of this state's own suspension, restarts) traffic under
the agreement at once, and sends the signed notice to the partner's gateway. A refusal
prints its status, reason code and message and exits 1; an unreached gateway exits 3.
"""

from __future__ import annotations

import click
from google.protobuf.message import Message

from gateway.cli.client import GatewayClient, gateway_options
from pouch.v1 import agreement_pb2, agreement_pb2_grpc


def _show(client: GatewayClient, answer: Message, summary: agreement_pb2.AgreementSummary) -> None:
    status = agreement_pb2.AgreementStatus.Name(summary.status).removeprefix("AGREEMENT_STATUS_")
    why = f" ({summary.inactive_reason})" if summary.inactive_reason else ""
    client.emit(answer, lambda: f"{summary.ref.id} version {summary.ref.version}: {status}{why}")


_REASON = click.option("--reason", required=True, help="Reason code, e.g. DATA_BREACH.")


@click.command(name="suspend")
@gateway_options
@_REASON
@click.argument("agreement_id")
def suspend(client: GatewayClient, reason: str, agreement_id: str) -> None:
    """Suspend an agreement at once on both gateways."""
    request = agreement_pb2.SuspendAgreementRequest(agreement_id=agreement_id, reason=reason)
    answer = client.unary(
        lambda ch: agreement_pb2_grpc.AgreementServiceStub(ch).SuspendAgreement, request
    )
    _show(client, answer, answer.summary)


@click.command(name="terminate")
@gateway_options
@_REASON
@click.argument("agreement_id")
def terminate(client: GatewayClient, reason: str, agreement_id: str) -> None:
    """Terminate an agreement: stop traffic and purge stored payloads on both gateways."""
    request = agreement_pb2.TerminateAgreementRequest(agreement_id=agreement_id, reason=reason)
    answer = client.unary(
        lambda ch: agreement_pb2_grpc.AgreementServiceStub(ch).TerminateAgreement, request
    )
    if not client.as_json:
        click.echo(f"purged payloads: {answer.purged_payloads}")
    _show(client, answer, answer.summary)


@click.command(name="resume")
@gateway_options
@_REASON
@click.argument("agreement_id")
def resume(client: GatewayClient, reason: str, agreement_id: str) -> None:
    """Lift this state's own suspension of an agreement, at once on both gateways."""
    request = agreement_pb2.ResumeAgreementRequest(agreement_id=agreement_id, reason=reason)
    answer = client.unary(
        lambda ch: agreement_pb2_grpc.AgreementServiceStub(ch).ResumeAgreement, request
    )
    _show(client, answer, answer.summary)


@click.command(name="reload")
@gateway_options
def reload(client: GatewayClient) -> None:
    """Re-read agreements, CRLs, the JWKS and the TLS certificate of a running gateway,
    as SIGHUP does; exits 1 if a file was refused (the one in force stays)."""
    answer = client.unary(
        lambda ch: agreement_pb2_grpc.AgreementServiceStub(ch).Reload, agreement_pb2.ReloadRequest()
    )
    refused = any(item.result == agreement_pb2.RELOAD_RESULT_REFUSED for item in answer.items)
    lines = []
    for item in answer.items:
        result = agreement_pb2.ReloadResult.Name(item.result).removeprefix("RELOAD_RESULT_")
        line = f"{item.kind} {item.file or '-'}: {result.lower()}"
        if item.changed:
            line += f" ({', '.join(item.changed)})"
        if item.reason_code:
            line += f": {item.reason_code}: {item.rule}"
        lines.append(line)
    if client.as_json:
        client.emit(answer, lambda: "")
    else:
        for line in lines:  # one line per file, never wrapped: scripts read them
            click.echo(line)
    if refused:
        raise click.exceptions.Exit(1)
