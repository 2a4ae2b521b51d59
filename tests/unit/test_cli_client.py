"""The client commands share one connection option set and one way to report a failure."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import click
import grpc
import grpc.aio
import pytest

from gateway.cli.client import EXIT_REFUSED, EXIT_UNREACHED, GatewayClient
from gateway.cli.main import cli
from gateway.connect import ClientIdentity
from gateway.errors import (
    FieldViolation,
    PartnerUnavailable,
    PermissionRejected,
    ValidationRejected,
    to_status,
)

CONNECTION_ENV = {
    "POUCH_TARGET",
    "POUCH_CA",
    "POUCH_CERT",
    "POUCH_KEY",
    "POUCH_TOKEN_FILE",
    "POUCH_TIMEOUT",
}
CLIENT_COMMANDS = [
    "civil submit",
    "civil submit-batch",
    "civil status",
    "civil list",
    "identity confirm",
    "case open",
    "case list",
    "case show",
    "case watch",
    "case transition",
    "case note",
    "case claim",
    "case acknowledge-costs",
    "agreement list",
    "agreement show",
    "agreement suspend",
    "agreement terminate",
    "agreement resume",
    "agreement reload",
    "audit entries",
    "audit checkpoint",
    "audit proof",
    "audit export",
    "status",
]


def command(path: str) -> click.Command:
    found: click.Command = cli
    for name in path.split():
        assert isinstance(found, click.Group)
        sub = found.get_command(click.Context(found), name)
        assert sub is not None, f"no command {path!r}"
        found = sub
    return found


def test_a_client_command_loads_neither_the_server_nor_the_audit_verifier() -> None:
    code = (
        "import sys; from gateway.cli.main import cli; "
        "cli.get_command(None, 'civil'); "
        "print(sorted(m for m in ('gateway.server.app', 'gateway.audit.verify') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def options_of(found: click.Command) -> Iterator[click.Option]:
    return (p for p in found.params if isinstance(p, click.Option))


@pytest.mark.parametrize("path", CLIENT_COMMANDS)
def test_every_client_command_takes_the_one_connection_option_set(path: str) -> None:
    found = command(path)
    envvars = {o.envvar for o in options_of(found) if isinstance(o.envvar, str)}
    assert envvars == CONNECTION_ENV
    names = {name for o in options_of(found) for name in o.opts}
    assert {"--target", "--gateway", "--ca", "--cert", "--key", "--token-file", "--json"} <= names


@pytest.mark.parametrize("path", CLIENT_COMMANDS)
def test_no_client_command_takes_a_token_on_its_command_line(path: str) -> None:
    names = {name for o in options_of(command(path)) for name in o.opts}
    assert "--token" not in names


def _client(*, as_json: bool = False) -> GatewayClient:
    return GatewayClient(
        target="127.0.0.1:7443",
        identity=ClientIdentity(trusted_ca=b"ca", certificate_chain=b"cert", private_key=b"key"),
        token="secret-token",
        timeout_s=5.0,
        as_json=as_json,
    )


def _failed(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        status.details,
        "",
    )


def test_a_refusal_is_said_with_its_status_reason_and_field_violations_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    refusal = ValidationRejected([FieldViolation("update.event_date.month", "must be 1 to 12")])
    with pytest.raises(click.exceptions.Exit) as ended:
        _client(as_json=True).fail(_failed(to_status(refusal)))
    assert ended.value.exit_code == EXIT_REFUSED
    said = capsys.readouterr()
    assert "refused the call: INVALID_ARGUMENT (reason VALIDATION)" in said.err
    assert "field update.event_date.month: must be 1 to 12" in said.err
    error = json.loads(said.out)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "VALIDATION")
    assert error["violations"] == [{"field": "update.event_date.month", "rule": "must be 1 to 12"}]
    assert "secret-token" not in said.err + said.out


def test_a_gateways_unavailable_answer_is_a_refusal_not_an_unreached_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(click.exceptions.Exit) as ended:
        _client().fail(_failed(to_status(PartnerUnavailable("partner BE did not answer"))))
    assert ended.value.exit_code == EXIT_REFUSED
    assert "UNAVAILABLE (reason PARTNER_UNAVAILABLE)" in capsys.readouterr().err


def test_a_call_that_reached_no_gateway_names_the_target_and_exits_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    never = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "failed to connect to all addresses; Connection refused",
        "",
    )
    with pytest.raises(click.exceptions.Exit) as ended:
        _client().fail(never)
    assert ended.value.exit_code == EXIT_UNREACHED
    said = capsys.readouterr().err
    assert "cannot reach the gateway at 127.0.0.1:7443: failed to connect" in said


def test_a_scope_refusal_reads_as_permission_denied(capsys: pytest.CaptureFixture[str]) -> None:
    refusal = PermissionRejected("the token lacks the scope 'admin'", reason="SCOPE_MISSING")
    with pytest.raises(click.exceptions.Exit):
        _client().fail(_failed(to_status(refusal)))
    said = capsys.readouterr().err
    assert "PERMISSION_DENIED (reason SCOPE_MISSING)" in said
    assert "the token lacks the scope 'admin'" in said
