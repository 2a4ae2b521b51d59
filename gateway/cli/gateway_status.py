"""``pouch status``: one running gateway at a glance, as it describes itself (scope
``admin``).

Three questions on one connection: ``GatewayService.GetGatewayInfo`` (state, version,
schema, its TLS certificate's end, each partner's endpoint, pinned bundle and CA end),
``AgreementService.ListAgreements`` (each agreement's status and the reason it is not in
force) and ``GatewayService.ListDeadLetters`` (the messages given up on, both ways: the
backlog an operator must look at). Dates are the ones the gateway reports; ``--json``
prints the three answers under ``gateway``, ``agreements`` and ``dead_letters``.

Usage::

    pouch status --target 127.0.0.1:7443 --ca ca.crt --cert op.crt --key op.key \\
        --token-file admin.token
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import click
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


@dataclass(frozen=True)
class GatewayStatus:
    info: gateway_pb2.GetGatewayInfoResponse
    agreements: agreement_pb2.ListAgreementsResponse
    dead_letters: gateway_pb2.ListDeadLettersResponse


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
    return GatewayStatus(info, listing, dead)


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


def _render(found: GatewayStatus) -> list[RenderableType]:
    info = found.info
    return [
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
            ["partner", "peer endpoint", "pinned bundle", "CA until"],
            [
                (p.state, p.peer_endpoint, p.bundle_digest, when(p.ca_not_after))
                for p in info.partners
            ],
        ),
        agreements_table(found.agreements),
        _backlog(found.dead_letters),
    ]


@click.command(name="status")
@gateway_options
def status(client: GatewayClient) -> None:
    """The gateway, its partners, its agreements' state and its dead-letter backlog."""
    found = client.run(lambda channel: _ask(client, channel))
    if client.as_json:
        tree = {
            "gateway": message_to_dict(found.info),
            "agreements": message_to_dict(found.agreements),
            "dead_letters": message_to_dict(found.dead_letters),
        }
        click.echo(json.dumps(tree, indent=2, ensure_ascii=False))
        return
    console = stdout_console()
    for part in _render(found):
        console.print(part)
