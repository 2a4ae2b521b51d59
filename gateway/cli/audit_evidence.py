"""``pouch audit entries|checkpoint|proof|export``: an auditor's questions to a running
gateway (``AuditService``, scope ``audit:read``).

Beside the offline ``pouch audit verify`` and ``keys``: these fetch the evidence that
``verify`` checks. ``export`` writes a self-contained bundle file (entries, proofs,
checkpoints, keys) as the gateway streams it, with its progress on standard error, and
only renames it into place once the stream ended well, so a broken export leaves no file
that looks whole. ``checkpoint --out`` keeps a checkpoint for ``verify --since`` later.
An entry never holds personal data, so none is printed.

Usage::

    pouch audit entries --agreement at-be-civil --limit 20
    pouch audit checkpoint --out last.checkpoint
    pouch audit proof --index 4 --size 17
    pouch audit export --out at.bundle --since-size 12 && pouch audit verify at.bundle ...
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import click
import grpc.aio
from rich.console import Console, RenderableType
from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TransferSpeedColumn

from gateway.cli.client import (
    GatewayClient,
    enum_choice,
    fields_table,
    gateway_options,
    next_page,
    stdout_console,
    table,
    when,
)
from pouch.v1 import audit_pb2, audit_pb2_grpc, common_pb2

_EXCHANGE = "EXCHANGE_TYPE_"
_TIME = click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"])
_OUT = click.Path(dir_okay=False, path_type=Path)


def _stub(channel: grpc.aio.Channel) -> audit_pb2_grpc.AuditServiceAsyncStub:
    return audit_pb2_grpc.AuditServiceStub(channel)


def _hash(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")  # as checkpoints write hashes


@click.command(name="entries")
@gateway_options
@click.option("--since", type=_TIME, default=None, help="From this time (UTC unless offset).")
@click.option("--until", type=_TIME, default=None, help="Up to this time.")
@click.option("--agreement", "agreement_id", default="", help="Only under this agreement.")
@click.option(
    "--exchange",
    type=enum_choice(common_pb2.ExchangeType.keys(), _EXCHANGE),
    default=None,
    help="Only of this exchange type.",
)
@click.option("--peer", "peer_state", default="", help="Only with this partner state.")
@click.option("--event-kind", default="", help="Only this event kind, e.g. sent, denied.")
@click.option("--message-id", default="", help="Only the entries of this message.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--page-token", default="", help="Where the previous listing stopped.")
def entries(
    client: GatewayClient,
    since: datetime | None,
    until: datetime | None,
    agreement_id: str,
    exchange: str | None,
    peer_state: str,
    event_kind: str,
    message_id: str,
    limit: int,
    page_token: str,
) -> None:
    """List audit entries: what was decided, for which message, never a value."""
    request = audit_pb2.ListEntriesRequest(
        agreement_id=agreement_id,
        peer_state=peer_state,
        event_kind=event_kind,
        message_id=message_id,
        page_size=limit,
        page_token=page_token,
    )
    if since is not None:
        request.since.FromDatetime(since)
    if until is not None:
        request.until.FromDatetime(until)
    if exchange is not None:
        request.exchange_type = common_pb2.ExchangeType.Value(_EXCHANGE + exchange.upper())
    answer = client.unary(lambda ch: _stub(ch).ListEntries, request)

    def render() -> list[RenderableType]:
        drawn: list[RenderableType] = [
            table(
                f"{len(answer.entries)} entries",
                ["index", "time", "event", "message", "agreement", "peer", "decision", "reason"],
                [
                    (
                        str(e.index),
                        when(e.time),
                        e.event_kind,
                        e.message_id or "-",
                        f"{e.agreement.id} v{e.agreement.version}" if e.agreement.id else "-",
                        e.peer_state or "-",
                        e.decision or "-",
                        e.reason_code or "-",
                    )
                    for e in answer.entries
                ],
            )
        ]
        if answer.next_page_token:
            drawn.append(next_page(answer.next_page_token))
        return drawn

    client.emit(answer, render)


@click.command(name="checkpoint")
@gateway_options
@click.option("--size", "tree_size", type=click.IntRange(min=0), default=0, help="0: latest.")
@click.option(
    "--out", type=_OUT, default=None, help="Also keep the signed note here (for verify --since)."
)
def checkpoint(client: GatewayClient, tree_size: int, out: Path | None) -> None:
    """Show the latest published checkpoint (or the one of --size), a C2SP signed note."""
    answer = client.unary(
        lambda ch: _stub(ch).GetCheckpoint, audit_pb2.GetCheckpointRequest(tree_size=tree_size)
    )
    if out is not None:
        try:
            out.write_text(answer.signed_checkpoint, encoding="utf-8")
        except OSError as e:
            raise click.BadParameter(f"cannot write {out}: {e}", param_hint="--out") from e
    note = answer.signed_checkpoint
    body, _, signatures = note.partition("\n\n")
    lines = body.splitlines()
    # A signature line is "— <key name> <base64>"; the names say who signed.
    signers = [
        line[2:].split(" ", 1)[0] for line in signatures.splitlines() if line[:2] == "\u2014 "
    ]
    client.emit(
        answer,
        lambda: fields_table(
            "checkpoint",
            [
                ("origin", lines[0] if lines else "-"),
                ("tree size", lines[1] if len(lines) > 1 else "-"),
                ("root hash", lines[2] if len(lines) > 2 else "-"),
                ("published", "yes (cosigned)" if answer.published else "no"),
                ("signed by", ", ".join(signers) or "-"),
            ],
        ),
    )


def checkpoint_size(path: Path) -> int:
    """The tree size a kept checkpoint note states (its second line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="--since-checkpoint") from e
    if len(lines) < 2 or not lines[1].isdigit():
        raise click.BadParameter(
            f"{path} is not a checkpoint: its second line is no tree size",
            param_hint="--since-checkpoint",
        )
    return int(lines[1])


@click.command(name="proof")
@gateway_options
@click.option("--index", type=click.IntRange(min=0), default=None, help="Inclusion: entry index.")
@click.option("--size", type=click.IntRange(min=1), default=None, help="Inclusion: tree size.")
@click.option("--first", type=click.IntRange(min=1), default=None, help="Consistency: older size.")
@click.option("--second", type=click.IntRange(min=1), default=None, help="Consistency: newer size.")
def proof(
    client: GatewayClient,
    index: int | None,
    size: int | None,
    first: int | None,
    second: int | None,
) -> None:
    """An inclusion proof (--index and --size) or a consistency proof (--first, --second)."""
    if index is not None and size is not None and first is None and second is None:
        inclusion = client.unary(
            lambda ch: _stub(ch).GetInclusionProof,
            audit_pb2.GetInclusionProofRequest(index=index, tree_size=size),
        )
        title = f"inclusion of entry {index} in the tree of size {size}"
        client.emit(inclusion, lambda: _hashes(title, inclusion.hashes))
    elif first is not None and second is not None and index is None and size is None:
        consistency = client.unary(
            lambda ch: _stub(ch).GetConsistencyProof,
            audit_pb2.GetConsistencyProofRequest(first_size=first, second_size=second),
        )
        title = f"consistency of the tree of size {first} with size {second}"
        client.emit(consistency, lambda: _hashes(title, consistency.hashes))
    else:
        raise click.UsageError("give --index and --size, or --first and --second")


def _hashes(title: str, hashes: Iterable[bytes]) -> RenderableType:
    rows = [(str(i), _hash(h)) for i, h in enumerate(hashes)]
    return table(title, ["#", "hash (base64)"], rows)


@click.command(name="export")
@gateway_options
@click.option("--out", required=True, type=_OUT, help="The bundle file to write.")
@click.option("--since", type=_TIME, default=None, help="Entries from this time.")
@click.option("--until", type=_TIME, default=None, help="Entries up to this time.")
@click.option("--agreement", "agreement_id", default="", help="Only under this agreement.")
@click.option(
    "--since-size",
    type=click.IntRange(min=0),
    default=0,
    help="The size of the checkpoint you saw at your last audit: the bundle carries the "
    "proof the log only grew from it.",
)
@click.option(
    "--since-checkpoint",
    "since_checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="CHECKPOINT_FILE",
    help="The checkpoint you kept at your last audit (checkpoint --out, verify "
    "--save-checkpoint): its size, as --since-size.",
)
def export(
    client: GatewayClient,
    out: Path,
    since: datetime | None,
    until: datetime | None,
    agreement_id: str,
    since_size: int,
    since_checkpoint: Path | None,
) -> None:
    """Export a self-contained audit bundle to --out, for `pouch audit verify`."""
    if since_checkpoint is not None:
        if since_size:
            raise click.UsageError("give --since-size or --since-checkpoint, not both")
        since_size = checkpoint_size(since_checkpoint)
    request = audit_pb2.ExportBundleRequest(agreement_id=agreement_id, since_tree_size=since_size)
    if since is not None:
        request.since.FromDatetime(since)
    if until is not None:
        request.until.FromDatetime(until)
    partial = out.with_name(f".{out.name}.partial")
    progress = Progress(
        SpinnerColumn(),
        TextColumn("exporting {task.description}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=client.as_json,
    )

    async def receive(channel: grpc.aio.Channel) -> int:
        written = 0
        task = progress.add_task(str(out), total=None)
        stream = _stub(channel).ExportBundle(request, metadata=client.metadata)
        with partial.open("wb") as handle:
            async for piece in stream:
                handle.write(piece.chunk)
                written += len(piece.chunk)
                progress.update(task, completed=written)
            handle.flush()
            os.fsync(handle.fileno())
        return written

    try:
        with progress:
            size = client.run(receive)
        partial.replace(out)
    except OSError as e:
        raise click.BadParameter(f"cannot write {out}: {e}", param_hint="--out") from e
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    if client.as_json:
        click.echo(json.dumps({"bundle": str(out), "bytes": size}))
    else:
        stdout_console().print(
            fields_table("exported", [("bundle", str(out)), ("bytes", str(size))])
        )
