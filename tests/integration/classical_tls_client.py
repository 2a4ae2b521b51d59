"""A partner's client whose TLS offers classical key exchange only: one unary gRPC call.

grpcio cannot be such a client: its channels always offer X25519MLKEM768 and take no
setting for TLS groups. This one opens the connection with Python's ``ssl`` module,
whose offered groups ``set_ecdh_curve`` limits to the one curve named (P-256 by
default, which gRPC's server reports as ``prime256v1``), and speaks gRPC over HTTP/2
with the ``h2`` library: one request, its status and message read from the trailers
(or from the headers of a trailers-only answer, as a refusal comes).

Usage::

    answer = call_unary(
        ("127.0.0.1", port),
        "/pouch.v1.PeerService/Ping",
        peer_pb2.PingRequest(nonce="n-1").SerializeToString(),
        identity=ClassicalIdentity(trusted_ca=ca_pem, certificate=cert_path, key=key_path),
    )
    assert answer.status == grpc.StatusCode.OK.value[0]
"""

from __future__ import annotations

import base64
import socket
import ssl
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
from google.rpc import status_pb2

TIMEOUT = 10.0


@dataclass(frozen=True)
class ClassicalIdentity:
    """The PEM a partner trusts and presents, and the one curve its TLS offers."""

    trusted_ca: bytes
    certificate: Path
    key: Path
    curve: str = "prime256v1"

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.trusted_ca.decode("ascii"))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(self.certificate, self.key)
        context.set_ecdh_curve(self.curve)
        context.set_alpn_protocols(["h2"])
        return context


@dataclass(frozen=True)
class UnaryAnswer:
    """What the server answered: the gRPC status, its message and details, the reply."""

    status: int
    message: str
    details: status_pb2.Status | None
    reply: bytes | None


def call_unary(
    address: tuple[str, int],
    path: str,
    request: bytes,
    *,
    identity: ClassicalIdentity,
    server_name: str = "localhost",
) -> UnaryAnswer:
    """One gRPC call of ``path`` with the serialized ``request``, over a TLS connection
    that negotiated a classical group; the connection is closed after it."""
    with (
        socket.create_connection(address, timeout=TIMEOUT) as raw,
        identity.context().wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        if tls.selected_alpn_protocol() != "h2":
            raise ConnectionError("the server did not select HTTP/2")
        return _exchange(tls, path, request, server_name)


def _exchange(tls: ssl.SSLSocket, path: str, request: bytes, authority: str) -> UnaryAnswer:
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    stream = connection.get_next_available_stream_id()
    connection.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    # A gRPC message: not compressed (0), its length as four bytes big-endian, the bytes.
    connection.send_data(stream, struct.pack(">BI", 0, len(request)) + request, end_stream=True)
    tls.sendall(connection.data_to_send())
    headers: dict[bytes, bytes] = {}
    body = b""
    ended = False
    while not ended:
        data = tls.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection before the call ended")
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers |= {bytes(k): bytes(v) for k, v in event.headers or ()}
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                body += event.data or b""
                connection.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                raise ConnectionError(f"the server ended the call: {event}")
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                ended = True
        tls.sendall(connection.data_to_send())
    connection.close_connection()
    tls.sendall(connection.data_to_send())
    return _answer(headers, body)


def _answer(headers: dict[bytes, bytes], body: bytes) -> UnaryAnswer:
    if b"grpc-status" not in headers:
        raise ConnectionError(f"no grpc-status in the answer (HTTP {headers.get(b':status')!r})")
    details = None
    packed = headers.get(b"grpc-status-details-bin")
    if packed is not None:
        details = status_pb2.Status.FromString(base64.b64decode(packed + b"=" * (-len(packed) % 4)))
    reply = None
    if len(body) >= 5:
        _, length = struct.unpack(">BI", body[:5])
        reply = body[5 : 5 + length]
    return UnaryAnswer(
        status=int(headers[b"grpc-status"]),
        message=urllib.parse.unquote(headers.get(b"grpc-message", b"").decode("ascii")),
        details=details,
        reply=reply,
    )
