"""``pouch agreement suspend|terminate|resume``: an operator's declaration, through the
local API; and ``pouch agreement reload``, which asks the gateway to re-read its files.

The command calls the operator's own gateway (``AgreementService``) over mutual TLS
with an admin token; the gateway records the declaration, stops (or, for a resumption
of this state's own suspension, restarts) traffic under the agreement at once, and
sends the signed notice to the partner's gateway.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import grpc
import grpc.aio

from gateway.connect import ClientIdentity, bearer, secure_channel
from pouch.v1 import agreement_pb2, agreement_pb2_grpc

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _connection_options(command: click.Command, *, declaration: bool = True) -> click.Command:
    options = [
        click.option("--gateway", "target", required=True, help="Local API, HOST:PORT."),
        click.option("--ca", "ca", required=True, type=_FILE, help="The state's ca.crt."),
        click.option("--cert", "cert", required=True, type=_FILE, help="Operator certificate."),
        click.option("--key", "key", required=True, type=_FILE, help="Operator private key."),
        click.option(
            "--token-file",
            "token_file",
            required=True,
            type=_FILE,
            help="File holding an access token with the admin scope.",
        ),
    ]
    if declaration:
        options += [
            click.option("--reason", required=True, help="Reason code, e.g. DATA_BREACH."),
            click.argument("agreement_id"),
        ]
    for option in options:
        command = option(command)
    return command


async def _call(
    target: str,
    identity: ClientIdentity,
    token: str,
    agreement_id: str,
    reason: str,
    *,
    action: str,
) -> agreement_pb2.AgreementSummary:
    async with secure_channel(target, identity) as channel:
        stub = agreement_pb2_grpc.AgreementServiceStub(channel)
        if action == "resume":
            resumed = await stub.ResumeAgreement(
                agreement_pb2.ResumeAgreementRequest(agreement_id=agreement_id, reason=reason),
                metadata=bearer(token),
                timeout=30,
            )
            return resumed.summary
        if action == "terminate":
            answer = await stub.TerminateAgreement(
                agreement_pb2.TerminateAgreementRequest(agreement_id=agreement_id, reason=reason),
                metadata=bearer(token),
                timeout=30,
            )
            click.echo(f"purged payloads: {answer.purged_payloads}")
            return answer.summary
        suspended = await stub.SuspendAgreement(
            agreement_pb2.SuspendAgreementRequest(agreement_id=agreement_id, reason=reason),
            metadata=bearer(token),
            timeout=30,
        )
        return suspended.summary


def _declare(
    target: str,
    ca: Path,
    cert: Path,
    key: Path,
    token_file: Path,
    reason: str,
    agreement_id: str,
    *,
    action: str,
) -> None:
    identity = ClientIdentity.from_files(trusted_ca=ca, certificate=cert, private_key=key)
    token = token_file.read_text(encoding="ascii").strip()
    try:
        summary = asyncio.run(_call(target, identity, token, agreement_id, reason, action=action))
    except grpc.aio.AioRpcError as e:
        raise click.ClickException(f"{e.code().name}: {e.details()}") from None
    status = agreement_pb2.AgreementStatus.Name(summary.status).removeprefix("AGREEMENT_STATUS_")
    why = f" ({summary.inactive_reason})" if summary.inactive_reason else ""
    click.echo(f"{summary.ref.id} version {summary.ref.version}: {status}{why}")


@click.command(name="suspend")
def _suspend(**kwargs: str | Path) -> None:
    """Suspend an agreement at once on both gateways."""
    _declare(**kwargs, action="suspend")  # type: ignore[arg-type]


@click.command(name="terminate")
def _terminate(**kwargs: str | Path) -> None:
    """Terminate an agreement: stop traffic and purge stored payloads on both gateways."""
    _declare(**kwargs, action="terminate")  # type: ignore[arg-type]


@click.command(name="resume")
def _resume(**kwargs: str | Path) -> None:
    """Lift this state's own suspension of an agreement, at once on both gateways."""
    _declare(**kwargs, action="resume")  # type: ignore[arg-type]


suspend = _connection_options(_suspend)
terminate = _connection_options(_terminate)
resume = _connection_options(_resume)


async def _reload(
    target: str, identity: ClientIdentity, token: str
) -> agreement_pb2.ReloadResponse:
    async with secure_channel(target, identity) as channel:
        stub = agreement_pb2_grpc.AgreementServiceStub(channel)
        answer: agreement_pb2.ReloadResponse = await stub.Reload(
            agreement_pb2.ReloadRequest(), metadata=bearer(token), timeout=60
        )
        return answer


@click.command(name="reload")
def _reload_command(target: str, ca: Path, cert: Path, key: Path, token_file: Path) -> None:
    """Re-read agreements, CRLs, the JWKS and the TLS certificate of a running gateway,
    as SIGHUP does; exits 1 if a file was refused (the one in force stays)."""
    identity = ClientIdentity.from_files(trusted_ca=ca, certificate=cert, private_key=key)
    token = token_file.read_text(encoding="ascii").strip()
    try:
        answer = asyncio.run(_reload(target, identity, token))
    except grpc.aio.AioRpcError as e:
        raise click.ClickException(f"{e.code().name}: {e.details()}") from None
    refused = False
    for item in answer.items:
        result = agreement_pb2.ReloadResult.Name(item.result).removeprefix("RELOAD_RESULT_")
        refused = refused or item.result == agreement_pb2.RELOAD_RESULT_REFUSED
        line = f"{item.kind} {item.file or '-'}: {result.lower()}"
        if item.changed:
            line += f" ({', '.join(item.changed)})"
        if item.reason_code:
            line += f": {item.reason_code}: {item.rule}"
        click.echo(line)
    if refused:
        raise click.exceptions.Exit(1)


reload = _connection_options(_reload_command, declaration=False)
