"""The raw baseline: a mutual-TLS relay and a registry stub that move bytes, nothing else.

    python -m bench.relay relay --listen HOST:PORT --cert C --key K --client-ca CA \
        --upstream HOST:PORT --upstream-ca CA --upstream-cert C --upstream-key K
    python -m bench.relay stub --listen HOST:PORT --cert C --key K --client-ca CA

Each runs as its own process, like a gateway or a registry. Handlers are generic and
take raw bytes (identity serializers), so no protobuf, policy, signature, audit or
storage work is done anywhere on the path; only TLS, HTTP/2 and the event loop.

- ``Call`` (unary): a relay forwards the request upstream under the same method and
  returns the answer; the stub answers ``--answer-bytes`` bytes.
- ``Submit`` (bidirectional stream, caller-facing relay): each message is acknowledged
  as soon as it is taken for forwarding (the counterpart of "durable in the outbox"),
  and forwarded upstream as its own unary ``Deliver`` call, at most ``--forwarders`` at
  a time (the counterpart of the dispatcher). A downstream relay forwards ``Deliver``
  like ``Call``; the stub counts it as applied.
- ``Tally`` (stub only, unary): JSON with how many messages were applied, when the last
  one was (``time.time()``), and each one's latency from the send time the caller wrote
  into its first eight bytes. ``b"reset"`` as request clears the tally first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

SERVICE = "/pouch.bench.Relay/"
CALL = SERVICE + "Call"
SUBMIT = SERVICE + "Submit"
DELIVER = SERVICE + "Deliver"
TALLY = SERVICE + "Tally"
SENT_AT = struct.Struct("<d")


def stamped(size: int) -> bytes:
    """A ``size``-byte message whose first bytes carry the time it was sent."""
    return SENT_AT.pack(time.time()) + b"\x00" * (size - SENT_AT.size)


def _server_credentials(args: argparse.Namespace) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(Path(args.key).read_bytes(), Path(args.cert).read_bytes())],
        root_certificates=Path(args.client_ca).read_bytes(),
        require_client_auth=True,
    )


Unary = Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]
if TYPE_CHECKING:
    _GenericHandler = grpc.GenericRpcHandler[bytes, bytes]
    _MethodHandler = grpc.RpcMethodHandler[bytes, bytes]
else:
    _GenericHandler = grpc.GenericRpcHandler
    _MethodHandler = grpc.RpcMethodHandler


class _Handlers(_GenericHandler):
    def __init__(
        self,
        unary: dict[str, Unary],
        streams: dict[
            str,
            Callable[
                [AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[bytes]
            ],
        ],
    ) -> None:
        self._unary = unary
        self._streams = streams

    def service(self, details: grpc.HandlerCallDetails) -> _MethodHandler | None:
        method = details.method
        if method in self._unary:
            return grpc.unary_unary_rpc_method_handler(self._unary[method])
        if method in self._streams:
            return grpc.stream_stream_rpc_method_handler(self._streams[method])
        return None


class Relay:
    """Forwards every call to one upstream over one mutual-TLS channel."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(args.upstream_ca).read_bytes(),
            private_key=Path(args.upstream_key).read_bytes(),
            certificate_chain=Path(args.upstream_cert).read_bytes(),
        )
        self._target = args.upstream
        self._forwarders = args.forwarders
        self._channel: grpc.aio.Channel | None = None

    def _upstream(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(self._target, self._credentials)
        return self._channel.unary_unary(
            method, request_serializer=None, response_deserializer=None
        )

    def handlers(self) -> _Handlers:
        async def call(request: bytes, context: Any) -> bytes:
            return await self._upstream(CALL)(request)

        async def deliver(request: bytes, context: Any) -> bytes:
            return await self._upstream(DELIVER)(request)

        return _Handlers({CALL: call, DELIVER: deliver}, {SUBMIT: self._submit})

    async def _submit(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        gate = asyncio.Semaphore(self._forwarders)
        pending: set[asyncio.Task[None]] = set()

        async def forward(message: bytes) -> None:
            try:
                await self._upstream(DELIVER)(message)
            finally:
                gate.release()

        async for message in requests:
            await gate.acquire()
            task = asyncio.create_task(forward(message))
            pending.add(task)
            task.add_done_callback(pending.discard)
            yield message[: SENT_AT.size]
        if pending:
            await asyncio.gather(*pending)


class RegistryStub:
    """Answers calls with a fixed-size answer and counts delivered messages."""

    def __init__(self, answer_bytes: int) -> None:
        self._answer = b"\x01" * answer_bytes
        self._latencies: list[float] = []
        self._last_applied = 0.0

    def handlers(self) -> _Handlers:
        async def call(request: bytes, context: Any) -> bytes:
            return self._answer

        async def deliver(request: bytes, context: Any) -> bytes:
            now = time.time()
            self._latencies.append(now - SENT_AT.unpack_from(request)[0])
            self._last_applied = now
            return self._answer

        async def tally(request: bytes, context: Any) -> bytes:
            if request == b"reset":
                self._latencies, self._last_applied = [], 0.0
            return json.dumps(
                {
                    "applied": len(self._latencies),
                    "last_applied": self._last_applied,
                    "latencies": self._latencies,
                }
            ).encode()

        return _Handlers({CALL: call, DELIVER: deliver, TALLY: tally}, {})


async def _serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    role = Relay(args) if args.role == "relay" else RegistryStub(args.answer_bytes)
    server.add_generic_rpc_handlers((role.handlers(),))
    server.add_secure_port(args.listen, _server_credentials(args))
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"{args.role} ready on {args.listen}", flush=True)
    await stopping.wait()
    await server.stop(grace=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["relay", "stub"])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--cert", required=True, help="the certificate this process presents")
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", required=True, help="the CA its callers must chain to")
    parser.add_argument("--upstream", help="relay: where calls go next")
    parser.add_argument("--upstream-ca")
    parser.add_argument("--upstream-cert")
    parser.add_argument("--upstream-key")
    parser.add_argument("--forwarders", type=int, default=64)
    parser.add_argument("--answer-bytes", type=int, default=300)
    args = parser.parse_args(argv)
    if args.role == "relay" and not all(
        (args.upstream, args.upstream_ca, args.upstream_cert, args.upstream_key)
    ):
        parser.error("a relay needs --upstream, --upstream-ca, --upstream-cert, --upstream-key")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
