"""Prometheus metrics of one gateway, on a registry of its own.

Labels carry only operational names (listener, service, method, status code,
reason code, certificate role, state code); never anything about a person. Each
gateway owns its registry, so several gateways can live in one process (tests, the
demo) without colliding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "pouch_requests",
            "gRPC requests handled, by listener, service, method and status code.",
            ["listener", "service", "method", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pouch_request_duration_seconds",
            "Time to handle a gRPC request.",
            ["listener", "service", "method"],
            registry=self.registry,
        )
        self.handshake_failures = Counter(
            "pouch_handshake_failures",
            "Callers refused after the TLS handshake, by listener and reason code.",
            ["listener", "reason"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "pouch_deliveries",
            "Outbox delivery attempts by partner state and result (delivered, retry, dead_letter).",
            ["partner", "result"],
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "pouch_certificate_expiry_seconds",
            "Seconds until a certificate this gateway relies on expires.",
            ["role", "state"],
            registry=self.registry,
        )


class MetricsEndpoint:
    """The HTTP endpoint Prometheus scrapes, on its own port."""

    def __init__(self, metrics: GatewayMetrics, host: str, port: int) -> None:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        self._server: WSGIServer = server
        self._thread: Thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
