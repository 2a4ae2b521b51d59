"""What every client command of ``pouch`` shares: one set of connection options, one
connection, one way to print an answer and one way to report a refusal.

A client command talks to its own state's gateway through the local API only, as any
other caller does: mutual TLS with a client certificate of the state's internal CA, and
a bearer token. The options are read from the command line or, so that a script sets
them once, from the environment:

================  ====================  =============================================
option            environment           what
================  ====================  =============================================
``--target``      ``POUCH_TARGET``      the local API, HOST:PORT (``--gateway`` too)
``--ca``          ``POUCH_CA``          the state CA certificate the gateway chains to
``--cert``        ``POUCH_CERT``        the caller's client certificate
``--key``         ``POUCH_KEY``         its private key
``--token-file``  ``POUCH_TOKEN_FILE``  a file holding the access token
(none)            ``POUCH_TOKEN``       the token itself, when no file is given
``--timeout``     ``POUCH_TIMEOUT``     seconds a call may take (default 30)
================  ====================  =============================================

The token is never an option's value: a command line is visible to every user of the
machine. Exit codes: 0 done, 1 the gateway refused the call (its status, reason code
and field violations are printed), 2 a usage error, 3 the gateway was not reached or
did not answer in time. The files are checked before a connection is tried
(:mod:`gateway.pki.caller_files`). No traceback reaches the person at the terminal.

Usage, in a command::

    @group.command(name="show")
    @gateway_options
    def show(client: GatewayClient, case_id: str) -> None:
        answer = client.unary(
            lambda channel: RepresentationServiceStub(channel).GetCase,
            GetCaseRequest(case_id=case_id),
        )
        client.emit(answer.case, lambda: case_table(answer.case))
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import grpc
import grpc.aio
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.connect import ClientIdentity, bearer, secure_channel
from gateway.errors import status_details
from gateway.pki.caller_files import CallerFileRefused, check_caller_files
from gateway.protojson import message_to_dict, parse_dict

EXIT_REFUSED = 1
EXIT_UNREACHED = 3
TOKEN_ENV = "POUCH_TOKEN"  # noqa: S105 (the variable's name, not a token)
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
# Without a terminal (a script, a pipe) rich would cut tables at 80 columns.
_PIPE_WIDTH = 200

T = TypeVar("T")
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class GatewayClient:
    """One caller of one gateway's local API, as the options named it."""

    target: str
    identity: ClientIdentity
    token: str = field(repr=False)
    timeout_s: float
    as_json: bool

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)

    def run(self, conversation: Callable[[grpc.aio.Channel], Awaitable[T]]) -> T:
        """Open the channel, hold ``conversation`` on it, and close it; a refusal or an
        unreachable gateway is reported and ends the command."""

        async def held() -> T:
            async with secure_channel(self.target, self.identity) as channel:
                return await conversation(channel)

        try:
            return asyncio.run(held())
        except grpc.aio.AioRpcError as e:
            self.fail(e)

    def unary(
        self,
        method: Callable[[grpc.aio.Channel], grpc.aio.UnaryUnaryMultiCallable[Req, Resp]],
        request: Req,
    ) -> Resp:
        """One unary call with the token and the timeout."""

        async def call(channel: grpc.aio.Channel) -> Resp:
            return await method(channel)(request, metadata=self.metadata, timeout=self.timeout_s)

        return self.run(call)

    @staticmethod
    def unreached(error: grpc.aio.AioRpcError) -> bool:
        """Whether the call never reached a gateway (or lost it): every answer of a
        gateway carries a reason code, a connection that failed none."""
        return error.code() is grpc.StatusCode.UNAVAILABLE and not status_details(error).reason

    def fail(self, error: grpc.aio.AioRpcError) -> NoReturn:
        """Say why the call failed, in words, and exit non-zero."""
        code = error.code()
        details = status_details(error)
        message = error.details() or ""
        if not details.reason and code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ):
            why = "no answer in time" if code is grpc.StatusCode.DEADLINE_EXCEEDED else message
            click.echo(f"pouch: cannot reach the gateway at {self.target}: {why}", err=True)
            if self.as_json:
                self._echo_json({"error": {"target": self.target, "unreached": why}})
            raise click.exceptions.Exit(EXIT_UNREACHED)
        reason = details.reason or "none given"
        click.echo(
            f"pouch: the gateway at {self.target} refused the call: {code.name} (reason {reason})",
            err=True,
        )
        if message:
            click.echo(f"  {message}", err=True)
        for violation in details.violations:
            click.echo(f"  field {violation.field}: {violation.rule}", err=True)
        if details.retry_after_s is not None:
            click.echo(f"  it asks to retry after {details.retry_after_s:g} s", err=True)
        if self.as_json:
            self._echo_json(
                {
                    "error": {
                        "code": code.name,
                        "reason": details.reason,
                        "message": message,
                        "violations": [
                            {"field": v.field, "rule": v.rule} for v in details.violations
                        ],
                    }
                }
            )
        raise click.exceptions.Exit(EXIT_REFUSED)

    def emit(
        self, message: Message, render: Callable[[], RenderableType | list[RenderableType]]
    ) -> None:
        """``message`` as protobuf JSON with ``--json``, else what ``render`` draws."""
        if self.as_json:
            self._echo_json(message_to_dict(message))
            return
        drawn = render()
        console = stdout_console()
        for part in drawn if isinstance(drawn, list) else [drawn]:
            console.print(part)

    @staticmethod
    def _echo_json(tree: object) -> None:
        click.echo(json.dumps(tree, indent=2, ensure_ascii=False, sort_keys=False))


def stdout_console() -> Console:
    width = None if sys.stdout.isatty() else _PIPE_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def gateway_options(command: Callable[..., None]) -> Callable[..., None]:
    """The connection options (and ``--json``) of a client command, given to it as one
    :class:`GatewayClient` argument named ``client``."""

    @functools.wraps(command)
    def connected(
        gateway_target: str,
        gateway_ca: Path,
        gateway_cert: Path,
        gateway_key: Path,
        gateway_token_file: Path | None,
        gateway_timeout_s: float,
        as_json: bool,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        client = GatewayClient(
            target=gateway_target,
            identity=_identity(gateway_ca, gateway_cert, gateway_key),
            token=_token(gateway_token_file),
            timeout_s=gateway_timeout_s,
            as_json=as_json,
        )
        command(client, *args, **kwargs)

    file_option = functools.partial(click.option, type=_FILE, show_envvar=True)
    options = (
        click.option(
            "--target",
            "--gateway",
            "gateway_target",
            envvar="POUCH_TARGET",
            required=True,
            show_envvar=True,
            help="The gateway's local API, HOST:PORT.",
        ),
        file_option(
            "--ca",
            "gateway_ca",
            envvar="POUCH_CA",
            required=True,
            help="The state CA certificate (ca.crt) the gateway's certificate chains to.",
        ),
        file_option(
            "--cert",
            "gateway_cert",
            envvar="POUCH_CERT",
            required=True,
            help="Your client certificate, issued by the state's CA.",
        ),
        file_option(
            "--key",
            "gateway_key",
            envvar="POUCH_KEY",
            required=True,
            help="Your client certificate's private key.",
        ),
        file_option(
            "--token-file",
            "gateway_token_file",
            envvar="POUCH_TOKEN_FILE",
            help=f"File holding your access token (else ${TOKEN_ENV} holds the token).",
        ),
        click.option(
            "--timeout",
            "gateway_timeout_s",
            envvar="POUCH_TIMEOUT",
            default=30.0,
            show_default=True,
            show_envvar=True,
            type=click.FloatRange(min=0.1),
            help="Seconds a call may take.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print protobuf JSON, not a table."),
    )
    decorated: Callable[..., None] = connected
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def _identity(ca: Path, cert: Path, key: Path) -> ClientIdentity:
    try:
        check_caller_files(ca=ca, certificate=cert, key=key, now=datetime.now(UTC))
        return ClientIdentity.from_files(trusted_ca=ca, certificate=cert, private_key=key)
    except CallerFileRefused as e:
        raise click.UsageError(str(e)) from e
    except OSError as e:
        raise click.UsageError(f"cannot read {e.filename}: {e.strerror}") from e


def _token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(
                f"cannot read {token_file}: {e}", param_hint="--token-file"
            ) from e
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise click.UsageError(f"no access token: give --token-file or set {TOKEN_ENV}")
    return token


# -- reading and writing values as a person does --------------------------------------


def short_name(enum_name: str, prefix: str) -> str:
    """``DELIVERY_STATE_APPLIED`` as a person writes it: ``applied``."""
    return enum_name.removeprefix(prefix).lower()


def enum_choice(names: Sequence[str], prefix: str) -> click.Choice[str]:
    """The values of an enum (UNSPECIFIED left out) as a person types them."""
    return click.Choice(
        [short_name(n, prefix) for n in names if not n.endswith("_UNSPECIFIED")],
        case_sensitive=False,
    )


def enum_label(enum_name: str, prefix: str) -> str:
    """An enum value as a table shows it: ``APPLIED``."""
    return enum_name.removeprefix(prefix)


def when(stamp: timestamp_pb2.Timestamp) -> str:
    """A timestamp in UTC, or ``-`` where it is unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[str]]
) -> RenderableType:
    """A table whose every cell is plain text, never rich markup (values come from the
    gateway and may hold brackets), under its title."""
    drawn = Table()
    for column in columns:
        drawn.add_column(column, overflow="fold")
    for row in rows:
        drawn.add_row(*(Text(cell) for cell in row))
    return _titled(title, drawn)


def _titled(title: str | None, drawn: Table) -> RenderableType:
    # Above the table, not as its title: rich would wrap a title to the table's width.
    return drawn if title is None else Group(Text(title, style="bold"), drawn)


def next_page(token: str) -> Text:
    """Where a listing stopped, as the option that continues it."""
    return Text(f"more: --page-token {token}")


def fields_table(title: str | None, rows: Iterable[tuple[str, str]]) -> RenderableType:
    """One record as a two-column table: field, value."""
    drawn = Table(show_header=False)
    drawn.add_column(style="bold")
    drawn.add_column(overflow="fold")
    for name, value in rows:
        drawn.add_row(Text(name), Text(value))
    return _titled(title, drawn)


def read_message(path: str, message_class: type[Req], hint: str) -> Req:
    """A message from a file in the protobuf JSON form (``-`` reads standard input)."""
    tree = read_json_file(path, hint)
    try:
        return parse_dict(tree, message_class)
    except json_format.ParseError as e:
        name = message_class.DESCRIPTOR.name
        raise click.BadParameter(f"{path} is not a {name}: {e}", param_hint=hint) from e


def read_json_file(path: str, hint: str) -> Any:
    """The JSON tree in ``path`` (``-`` reads standard input)."""
    text = "\n".join(read_lines(path, hint))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise click.BadParameter(
            f"{path} is not JSON: line {e.lineno} column {e.colno}: {e.msg}", param_hint=hint
        ) from e


def read_lines(path: str, hint: str) -> list[str]:
    """The lines of the text file ``path`` (``-`` reads standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint=hint) from e
    return text.splitlines()
