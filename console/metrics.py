"""The console's Prometheus metrics, on a registry of its own.

Labels are route templates, status codes, reason codes and outcomes: never a case id,
an officer or anything about a person. Served on ``[console] metrics_listen`` when set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class ConsoleMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "pouch_console_requests",
            "Requests answered, by route template, method and HTTP status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.sign_ins = Counter(
            "pouch_console_sign_ins",
            "Sign-ins at the identity provider, by outcome (signed_in, refused, "
            "provider_unreachable, expired).",
            ["outcome"],
            registry=self.registry,
        )
        self.gateway_refusals = Counter(
            "pouch_console_gateway_refusals",
            "Refusals shown to officers, by gRPC status and reason code: the gateway's, "
            "a call it did not answer (UNAVAILABLE), and the console's own of a form.",
            ["status", "reason"],
            registry=self.registry,
        )
        self.forms_refused = Counter(
            "pouch_console_forms_refused",
            "Forms refused for want of the session's form token (CSRF_TOKEN).",
            registry=self.registry,
        )
        self.sessions = Gauge(
            "pouch_console_sessions",
            "Sessions held in memory, signed in or not.",
            registry=self.registry,
        )

    def count_sessions(self, count: Callable[[], int]) -> None:
        self.sessions.set_function(lambda: float(count()))
