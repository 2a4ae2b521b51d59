"""``pouch doctor``: check a deployment end to end and say what to do about each fault.

Two ways to ask:

- ``pouch doctor --config FILE`` runs every check from this host with the files the
  configuration names (and calls the listeners, partners and registry it names);
- ``pouch doctor --target HOST:PORT`` asks a running gateway over its local API
  (``GatewayService.RunDiagnostics``, scope admin) with the connection options every
  client command takes (``--ca``, ``--cert``, ``--key``, ``--token-file``, or
  ``POUCH_TARGET``, ``POUCH_CA``, ``POUCH_CERT``, ``POUCH_KEY``, ``POUCH_TOKEN_FILE``,
  ``POUCH_TOKEN``): the answers are the gateway's own view, with each partner's last
  contact as its traffic saw it.

Prints a table (status, check, detail, remedy), or ``--json`` for monitoring. Exit
code 0 when nothing failed (warnings included), 1 when a check failed, 3 when the
gateway asked with ``--target`` could not be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import click
import grpc
import grpc.aio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.config import ConfigError, load_settings
from gateway.connect import ClientIdentity, bearer, secure_channel
from gateway.server.doctor.findings import Diagnosis, Status, fail
from gateway.server.doctor.run import diagnose_files
from pouch.v1 import gateway_pb2, gateway_pb2_grpc

EXIT_FAILED = 1
EXIT_UNREACHED = 3
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}
_PIPE_WIDTH = 200


@click.command(name="doctor")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check from this host with the gateway's TOML configuration.",
)
@click.option("--target", envvar="POUCH_TARGET", help="Ask a running gateway: its local API.")
@click.option("--ca", envvar="POUCH_CA", type=_FILE, help="The state's ca.crt.")
@click.option("--cert", envvar="POUCH_CERT", type=_FILE, help="Operator certificate.")
@click.option("--key", envvar="POUCH_KEY", type=_FILE, help="Operator private key.")
@click.option(
    "--token-file",
    envvar="POUCH_TOKEN_FILE",
    type=_FILE,
    help="File holding an access token with the admin scope (or POUCH_TOKEN).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for monitoring.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for --target.")
def doctor(
    config_path: Path | None,
    target: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    token_file: Path | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Check files, PKI, expiry, CRLs, agreements, database, listeners, partners and the
    registry; a remedy for each failure. Exit code 1 if any check failed."""
    if config_path is not None:
        diagnosis = _from_config(config_path)
    elif target is not None:
        if ca is None or cert is None or key is None:
            raise click.UsageError("--target needs --ca, --cert and --key (or POUCH_CA…)")
        diagnosis = _from_gateway(target, ca, cert, key, _token(token_file), timeout)
    else:
        raise click.UsageError("name --config FILE, or --target HOST:PORT of a running gateway")
    if as_json:
        click.echo(json.dumps(diagnosis.as_json(), indent=2))
    else:
        _print(diagnosis)
    if diagnosis.failed:
        sys.exit(EXIT_FAILED)


def _from_config(path: Path) -> Diagnosis:
    try:
        settings = load_settings(path)
    except ConfigError as e:
        return Diagnosis(
            (fail("configuration", str(e), f"correct the key the detail names in {path}"),)
        )
    return asyncio.run(diagnose_files(settings))


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        return token_file.read_text(encoding="ascii").strip()
    token = os.environ.get("POUCH_TOKEN", "").strip()
    if not token:
        raise click.UsageError("--target needs a token: --token-file or POUCH_TOKEN")
    return token


def _from_gateway(
    target: str, ca: Path, cert: Path, key: Path, token: str, timeout: float
) -> Diagnosis:
    identity = ClientIdentity.from_files(trusted_ca=ca, certificate=cert, private_key=key)

    async def ask() -> gateway_pb2.RunDiagnosticsResponse:
        async with secure_channel(target, identity) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            return await stub.RunDiagnostics(
                gateway_pb2.RunDiagnosticsRequest(), metadata=bearer(token), timeout=timeout
            )

    try:
        return Diagnosis.from_wire(asyncio.run(ask()))
    except grpc.aio.AioRpcError as e:
        code = e.code()
        click.echo(f"pouch doctor: {target}: {code.name}: {e.details() or ''}", err=True)
        unreached = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        sys.exit(EXIT_UNREACHED if unreached else EXIT_FAILED)


def _print(diagnosis: Diagnosis) -> None:
    console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
    table = Table(show_lines=False)
    for column in ("status", "check", "detail", "remedy"):
        table.add_column(column, overflow="fold")
    for f in diagnosis.findings:
        # Text, not markup: a detail such as "[registry]" is shown as written.
        table.add_row(
            Text(f.status.value, style=_STYLE[f.status]),
            Text(f.check),
            Text(f.detail),
            Text(f.remedy),
        )
    console.print(table)
    if diagnosis.partners:
        partners = Table(title="partners, as the gateway's traffic saw them")
        for column in ("partner", "last contact", "reachable"):
            partners.add_column(column)
        for p in diagnosis.partners:
            last = p.last_contact.strftime("%Y-%m-%d %H:%M:%S UTC") if p.last_contact else "never"
            reachable = "-" if p.reachable is None else ("yes" if p.reachable else "NO")
            partners.add_row(p.state, last, reachable)
        console.print(partners)
    counts = {s: sum(f.status is s for f in diagnosis.findings) for s in Status}
    console.print(f"{counts[Status.OK]} OK, {counts[Status.WARN]} WARN, {counts[Status.FAIL]} FAIL")
