"""``pouch status``: one running gateway at a glance, as it describes itself (scope
``admin``).

Four questions on one connection: ``GatewayService.GetGatewayInfo`` (state, version,
schema, its TLS certificate's end, each partner's endpoint, pinned bundle and CA end,
what waits in the outbox and the inbox per stage and partner with the oldest message's
time, and the refusals of the last 24 hours by reason code),
``AgreementService.ListAgreements`` (each agreement's status and the reason it is not in
force), ``GatewayService.ListDeadLetters`` (the messages given up on, both ways: the
backlog an operator must look at) and ``GatewayService.RunDiagnostics`` (each partner's
last contact and reachability, the certificates' and CRLs' dates, and how many of the
``pouch doctor`` checks warn or fail; a gateway without that call is shown without
them). Dates are the ones the gateway reports; ``--json`` prints the answers under
``gateway``, ``agreements``, ``dead_letters`` and ``diagnostics``.

Usage::

    pouch status --target 127.0.0.1:7443 --ca ca.crt --cert op.crt --key op.key \\
        --token-file admin.token
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import click
import grpc
import grpc.aio
from rich.console import RenderableType
from rich.text import Text

from gateway.cli.agreements_held import agreements_table
from gateway.cli.client import (
    GatewayClient,
    fields_table,
    gateway_options,
    stdout_console,
    table,
    when,
)
from gateway.protojson import message_to_dict
from pouch.v1 import agreement_pb2, agreement_pb2_grpc, gateway_pb2, gateway_pb2_grpc

# The most the gateway lists in one answer; more are counted as "at least".
_DEAD_LETTER_PAGE = 500
_DATED = ("certificate ", "crl ")
_REACHED = {
    gateway_pb2.REACHABILITY_REACHABLE: "reachable",
    gateway_pb2.REACHABILITY_UNREACHABLE: "UNREACHABLE",
}


@dataclass(frozen=True)
class GatewayStatus:
    info: gateway_pb2.GetGatewayInfoResponse
    agreements: agreement_pb2.ListAgreementsResponse
    dead_letters: gateway_pb2.ListDeadLettersResponse
    diagnostics: gateway_pb2.RunDiagnosticsResponse | None


async def _ask(client: GatewayClient, channel: grpc.aio.Channel) -> GatewayStatus:
    gateway: gateway_pb2_grpc.GatewayServiceAsyncStub = gateway_pb2_grpc.GatewayServiceStub(channel)
    agreements: agreement_pb2_grpc.AgreementServiceAsyncStub = (
        agreement_pb2_grpc.AgreementServiceStub(channel)
    )
    md, timeout = client.metadata, client.timeout_s
    info = await gateway.GetGatewayInfo(
        gateway_pb2.GetGatewayInfoRequest(), metadata=md, timeout=timeout
    )
    listing = await agreements.ListAgreements(
        agreement_pb2.ListAgreementsRequest(), metadata=md, timeout=timeout
    )
    dead = await gateway.ListDeadLetters(
        gateway_pb2.ListDeadLettersRequest(page_size=_DEAD_LETTER_PAGE),
        metadata=md,
        timeout=timeout,
    )
    try:
        diagnostics: gateway_pb2.RunDiagnosticsResponse | None = await gateway.RunDiagnostics(
            gateway_pb2.RunDiagnosticsRequest(), metadata=md, timeout=timeout
        )
    except grpc.aio.AioRpcError as e:
        if e.code() is not grpc.StatusCode.UNIMPLEMENTED:  # a gateway of an older release
            raise
        diagnostics = None
    return GatewayStatus(info, listing, dead, diagnostics)


def _health(found: GatewayStatus) -> dict[str, tuple[str, str]]:
    """Each partner's reachability and last contact, as the gateway saw real traffic."""
    if found.diagnostics is None:
        return {}
    return {
        p.state: (
            _REACHED.get(p.reachability, "not yet called"),
            when(p.last_contact) if p.HasField("last_contact") else "never",
        )
        for p in found.diagnostics.partners
    }


def _dates(diagnostics: gateway_pb2.RunDiagnosticsResponse) -> list[RenderableType]:
    """The certificates' and CRLs' dates, and a count of the other checks by status."""
    dated = [f for f in diagnostics.findings if f.check.startswith(_DATED)]
    counted = Counter(_status(f) for f in diagnostics.findings)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counted.items()))
    return [
        table(
            "certificates and CRLs",
            ["check", "status", "dates"],
            [(f.check, _status(f), f.detail) for f in dated],
        ),
        Text(f"diagnostics: {summary} (pouch doctor --target explains each)"),
    ]


def _status(finding: gateway_pb2.DiagnosticFinding) -> str:
    return gateway_pb2.DiagnosticStatus.Name(finding.status).removeprefix("DIAGNOSTIC_STATUS_")


def _backlog(dead: gateway_pb2.ListDeadLettersResponse) -> RenderableType:
    if not dead.dead_letters:
        return Text("dead letters: none")
    counted = Counter(
        (d.partner_state, d.direction, d.stage, d.reason_code) for d in dead.dead_letters
    )
    at_least = "at least " if len(dead.dead_letters) >= _DEAD_LETTER_PAGE else ""
    return table(
        f"dead letters: {at_least}{len(dead.dead_letters)}",
        ["partner", "direction", "stage", "reason", "messages"],
        [(*key, str(n)) for key, n in sorted(counted.items())],
    )


def _waiting(info: gateway_pb2.GetGatewayInfoResponse) -> RenderableType:
    if not info.backlogs:
        return Text("backlog: nothing waits")
    return table(
        "backlog",
        ["store", "stage", "partner", "messages", "oldest since"],
        [
            (b.store, b.stage, b.partner_state, str(b.messages), when(b.oldest))
            for b in info.backlogs
        ],
    )


def _refusals(info: gateway_pb2.GetGatewayInfoResponse) -> RenderableType:
    if not info.recent_refusals:
        return Text("refusals in the last 24 hours: none")
    return table(
        "refusals in the last 24 hours",
        ["reason", "refusals", "last"],
        [(r.reason_code or "-", str(r.count), when(r.last_at)) for r in info.recent_refusals],
    )


def _render(found: GatewayStatus) -> list[RenderableType]:
    info = found.info
    health = _health(found)
    unknown = ("-", "-")
    drawn: list[RenderableType] = [
        fields_table(
            f"gateway {info.state}",
            [
                ("version", info.version),
                ("schema", info.schema_revision or "-"),
                ("TLS certificate until", when(info.tls_certificate_not_after)),
                ("caller", f"{info.caller_subject} ({', '.join(info.caller_scopes)})"),
            ],
        ),
        table(
            f"{len(info.partners)} partners",
            ["partner", "peer endpoint", "reached", "last contact", "pinned bundle", "CA until"],
            [
                (
                    p.state,
                    p.peer_endpoint,
                    *health.get(p.state, unknown),
                    p.bundle_digest,
                    when(p.ca_not_after),
                )
                for p in info.partners
            ],
        ),
        agreements_table(found.agreements),
        _waiting(info),
        _backlog(found.dead_letters),
        _refusals(info),
    ]
    if found.diagnostics is not None:
        drawn += _dates(found.diagnostics)
    return drawn


@click.command(name="status")
@gateway_options
def status(client: GatewayClient) -> None:
    """The gateway, its partners and their last contact, its agreements' state, what
    waits in its outbox and inbox, its dead letters, the refusals of the last 24 hours by
    reason, and its certificates' and CRLs' dates."""
    found = client.run(lambda channel: _ask(client, channel))
    if client.as_json:
        tree = {
            "gateway": message_to_dict(found.info),
            "agreements": message_to_dict(found.agreements),
            "dead_letters": message_to_dict(found.dead_letters),
            "diagnostics": (
                None if found.diagnostics is None else message_to_dict(found.diagnostics)
            ),
        }
        click.echo(json.dumps(tree, indent=2, ensure_ascii=False))
        return
    console = stdout_console()
    for part in _render(found):
        console.print(part)
