"""One gateway per port: every listener binds exclusively, and a taken port is named.

gRPC sets ``SO_REUSEPORT`` on its listeners by default, so a second gateway started on
the same port would listen too, and the kernel would split callers between two
databases: one state in two halves. Every gRPC server of the gateway is therefore made
with :data:`EXCLUSIVE` among its options, and the metrics endpoint never sets the option
either. ``SO_REUSEADDR`` stays on (gRPC sets it, and so does the metrics endpoint): on
Linux it lets a restarted gateway bind over connections still in ``TIME_WAIT`` but
never lets two sockets listen on one port.

:func:`require_free` tries each configured port before any listener opens, so that a
taken port is reported as "in use" with the name of the listener (local, peer or
metrics) rather than as gRPC's "Failed to bind to address".
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

import grpc
import grpc.aio

from gateway.config import Settings
from gateway.metrics import GatewayMetrics, MetricsEndpoint

EXCLUSIVE: tuple[str, int] = ("grpc.so_reuseport", 0)
"""The gRPC server option that keeps a second process off a listening port."""


@dataclass(frozen=True)
class Listener:
    """One configured listening address and what it serves."""

    name: str
    key: str
    address: str

    @property
    def host_and_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


class PortTaken(OSError):
    """A configured port is in use, or cannot be bound; the message names the listener."""

    def __init__(self, listener: Listener, rule: str) -> None:
        super().__init__(f"{listener.key}: {listener.address}: {rule}")
        self.listener = listener


def listeners_of(settings: Settings) -> tuple[Listener, ...]:
    """The local, peer and (if configured) metrics and witness listeners, in that order."""
    found = [
        Listener("local", "local_api.listen", settings.local_api.listen),
        Listener("peer", "peer_api.listen", settings.peer_api.listen),
    ]
    if settings.metrics is not None:
        found.append(Listener("metrics", "metrics.listen", settings.metrics.listen))
    if settings.witness_http is not None:
        found.append(Listener("witness", "witness_http.listen", settings.witness_http.listen))
    return tuple(found)


def require_free(settings: Settings) -> None:
    """Raise :class:`PortTaken` for the first configured port that cannot be bound now."""
    listeners = listeners_of(settings)
    seen: dict[tuple[str, int], Listener] = {}
    for listener in listeners:
        host, port = listener.host_and_port
        if port != 0 and (host, port) in seen:
            raise PortTaken(listener, f"the same port as the {seen[host, port].name} listener")
        seen[host, port] = listener
        _try_bind(listener)


def add_exclusive_port(
    server: grpc.aio.Server, settings: Settings, name: str, credentials: grpc.ServerCredentials
) -> int:
    """Bind the listener called ``name`` on ``server`` (made with :data:`EXCLUSIVE`)."""
    listener = _named(settings, name)
    try:
        return server.add_secure_port(listener.address, credentials)
    except RuntimeError as e:  # grpc says only "Failed to bind to address"
        raise _taken(listener) from e


def metrics_endpoint(metrics: GatewayMetrics, settings: Settings) -> MetricsEndpoint | None:
    """The metrics endpoint on its configured address, or ``None`` if none is configured."""
    if settings.metrics is None:
        return None
    listener = _named(settings, "metrics")
    try:
        return MetricsEndpoint(metrics, *listener.host_and_port)
    except OSError as e:
        raise _refusal(listener, e) from e


def bound_socket(settings: Settings, name: str) -> socket.socket:
    """A listening-ready socket bound to the listener called ``name`` (no SO_REUSEPORT)."""
    listener = _named(settings, name)
    host, port = listener.host_and_port
    try:
        (family, kind, protocol, _, address), *_ = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise PortTaken(listener, "the host name does not resolve") from e
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise _refusal(listener, e) from e
    return sock


def _named(settings: Settings, name: str) -> Listener:
    (listener,) = (li for li in listeners_of(settings) if li.name == name)
    return listener


def _taken(listener: Listener) -> PortTaken:
    # Past require_free, a failed bind is most likely a port taken in between.
    return PortTaken(
        listener,
        f"cannot bind the {listener.name} listener: the port is in use or the address "
        "is not this host's",
    )


def _try_bind(listener: Listener) -> None:
    host, port = listener.host_and_port
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PortTaken(listener, "the host name does not resolve") from e
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                raise _refusal(listener, e) from e


def _refusal(listener: Listener, error: OSError) -> PortTaken:
    if error.errno == errno.EADDRINUSE:
        return PortTaken(
            listener,
            f"port in use: another process (another gateway?) holds the {listener.name} "
            "listener's port",
        )
    if error.errno == errno.EACCES:
        return PortTaken(listener, f"the {listener.name} listener's port needs privileges")
    if error.errno == errno.EADDRNOTAVAIL:
        return PortTaken(listener, f"the {listener.name} listener's address is not this host's")
    return PortTaken(listener, f"the {listener.name} listener cannot bind here")
