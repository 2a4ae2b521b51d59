"""The witness listener: c2sp.org/tlog-witness over HTTPS for the partners' logs.

``[witness_http]`` turns it on. It serves, under the configured prefix:

* ``POST <prefix>/add-checkpoint``: the partner log's checkpoint with the old size and
  a consistency proof (:mod:`gateway.audit.witness_protocol`); the answer is our two
  cosignature lines (Ed25519 type 0x04, ML-DSA-44 type 0x06), or the specification's
  status: 404 an origin we witness no log of, 403 no valid signature of the log's keys,
  400 a malformed request or an old size above the checkpoint's, 409 an old size that
  is not the one we last cosigned (body: that size, ``text/x.tlog.size``), 422 a
  checkpoint inconsistent with what we cosigned. 503 when the database refuses.
* ``GET <prefix>/<hex SHA-256 of the origin>/checkpoint``: the latest checkpoint of
  that log we cosigned, with the log's signatures and ours.

It is the same witness as the peer API's ``CosignCheckpoint`` (which speaks the same
protocol over mutual TLS, with the old size implied): both go through
:class:`~gateway.audit.publication.CheckpointWitness`, so a checkpoint cosigned here
and one cosigned over gRPC are checked against one record per partner log, and each
refusal is audited the same way. There is no client authentication: as the
specification says, only the log's signature on the checkpoint counts.

Every answer but 200 is one short line of text: bad input never sees a traceback,
and a bug answers 500 and is logged by type and frames only.

TLS uses the gateway's certificate and key (its state directory). The server is
uvicorn on the gateway's own event loop, beside grpc.aio; it leaves the process's
signals to the gateway and stops with it, letting requests in flight finish within
the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.audit.checkpoint import audit_origin
from gateway.audit.publication import CheckpointWitness
from gateway.audit.witness import CheckpointRefused, OldSizeMismatch
from gateway.audit.witness_protocol import (
    ADD_CHECKPOINT,
    MAX_REQUEST_BYTES,
    SIZE_CONTENT_TYPE,
    MalformedRequest,
    origin_hash,
    parse_add_checkpoint,
    size_body,
    status_of,
)
from gateway.errors import Unavailable, unexpected_summary
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

STARTED_WITHIN_S = 10.0
MAX_LINE = 200
_ORIGIN_HASH = re.compile(r"[0-9a-f]{64}")


def _line(status: int, text: str) -> PlainTextResponse:
    one = " ".join(text.split())[:MAX_LINE]
    return PlainTextResponse(f"{one}\n", status_code=status)


class WitnessEndpoint:
    """The HTTP handlers, over one :class:`CheckpointWitness`; each answer is counted in
    ``pouch_witness_http_requests`` by endpoint and status."""

    def __init__(
        self, witness: CheckpointWitness, *, prefix: str, metrics: GatewayMetrics | None = None
    ) -> None:
        self._witness = witness
        self._metrics = metrics
        self.app = Starlette(
            routes=[
                Route(f"{prefix}/{ADD_CHECKPOINT}", self.add_checkpoint, methods=["POST"]),
                Route(f"{prefix}/{{origin_hash}}/checkpoint", self.checkpoint, methods=["GET"]),
            ]
        )

    def _counted(self, endpoint: str, answer: Response) -> Response:
        if self._metrics is not None:
            self._metrics.witness_http_requests.labels(endpoint, str(answer.status_code)).inc()
        return answer

    async def add_checkpoint(self, request: Request) -> Response:
        try:
            answer = await self._add_checkpoint(request)
        except Exception as e:  # a bug: the client learns nothing of it
            log.error("witness add-checkpoint failed: %s", unexpected_summary(e))
            answer = _line(500, "internal error")
        return self._counted(ADD_CHECKPOINT, answer)

    async def checkpoint(self, request: Request) -> Response:
        return self._counted("checkpoint", await self._checkpoint(request))

    async def _add_checkpoint(self, request: Request) -> Response:
        body = await _bounded_body(request)
        if body is None:
            return _line(400, f"request body is larger than {MAX_REQUEST_BYTES} bytes")
        try:
            offered = parse_add_checkpoint(body)
        except MalformedRequest as e:
            return _line(400, str(e))
        state = self._witness.state_of_origin(offered.note.split("\n", 1)[0])
        if state is None:
            return _line(404, "no log of this origin is witnessed here")
        try:
            lines = await asyncio.to_thread(
                self._witness.cosign,
                state,
                offered.note,
                list(offered.proof),
                old_size=offered.old_size,
            )
        except CheckpointRefused as e:
            status = status_of(e)
            if status != 409:
                return _line(status, e.message)
            if isinstance(e, OldSizeMismatch):
                size = e.cosigned_size
            else:
                seen = await asyncio.to_thread(self._witness.last_cosigned, state)
                size = 0 if seen is None else seen.tree_size
            return PlainTextResponse(size_body(size), 409, media_type=SIZE_CONTENT_TYPE)
        except Unavailable as e:
            retry = e.retry_after_s or 1.0
            answer = _line(503, e.message)
            answer.headers["Retry-After"] = str(max(1, round(retry)))
            return answer
        return PlainTextResponse(lines)

    async def _checkpoint(self, request: Request) -> Response:
        wanted = str(request.path_params["origin_hash"])
        if _ORIGIN_HASH.fullmatch(wanted) is None:
            return _line(404, "no such log")
        try:
            state = next(
                (s for s in self._witness.partner_states if origin_hash(audit_origin(s)) == wanted),
                None,
            )
            seen = (
                None
                if state is None
                else await asyncio.to_thread(self._witness.last_cosigned, state)
            )
        except Unavailable as e:
            return _line(503, e.message)
        except Exception as e:  # a bug: the client learns nothing of it
            log.error("witness checkpoint read failed: %s", unexpected_summary(e))
            return _line(500, "internal error")
        if seen is None:
            return _line(404, "no checkpoint of this log was cosigned here")
        return PlainTextResponse(seen.note)


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or ``None`` once it grows past :data:`MAX_REQUEST_BYTES`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway owns the process's signals and stops this server itself


class WitnessListener:
    """uvicorn serving a :class:`WitnessEndpoint` over TLS on an already bound socket."""

    def __init__(self, endpoint: WitnessEndpoint, *, certificate: Path, key: Path) -> None:
        self._endpoint = endpoint
        self._certificate = certificate
        self._key = key
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, sock: socket.socket) -> None:
        config = uvicorn.Config(
            self._endpoint.app,
            ssl_certfile=str(self._certificate),
            ssl_keyfile=str(self._key),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            limit_concurrency=256,
        )
        self._server = server = _EmbeddedServer(config)
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="witness-http")
        deadline = asyncio.get_running_loop().time() + STARTED_WITHIN_S
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the witness listener stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise OSError("the witness listener did not start")
            await asyncio.sleep(0.01)

    async def stop(self, grace_s: float) -> None:
        """Stop taking requests; those in flight (and idle kept-alive TLS connections, which
        wait for the client's close) get ``grace_s`` seconds."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = math.ceil(grace_s)
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
