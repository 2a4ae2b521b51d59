"""What the checks are given: the settings and, inside a gateway, its live state.

``pouch doctor --config`` builds a context from the files alone; a running gateway
builds one from what it serves with (its clock, its CRL watchers, its agreement
registry and its partner channels), so both run the same checks. The clock is
injected so that skew and expiry can be tested without sleeping or changing clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.agreements.registry import AgreementRegistry
from gateway.config import Settings
from gateway.delivery.partners import PartnerChannels
from gateway.pki.crl import CrlWatcher

# A check waits this long for a listener, a partner or the registry before it fails.
PROBE_TIMEOUT_S = 5.0
# Certificates expiring sooner than this are a warning.
EXPIRY_WARNING_DAYS = 30
# Clocks further apart than this are a warning; past the delivery's clock window less the
# re-signing age, a failure (see gateway.config.DeliverySection).
SKEW_WARNING_S = 5.0


@dataclass(frozen=True)
class DoctorContext:
    """``crls``, ``agreements`` and ``inside_gateway`` come from a running gateway;
    ``channels`` is ``None`` when this gateway's own TLS identity cannot be read."""

    settings: Settings
    clock: Callable[[], datetime]
    channels: PartnerChannels | None
    crls: Sequence[CrlWatcher] | None = None
    agreements: AgreementRegistry[Any] | None = None
    inside_gateway: bool = False
    probe_timeout_s: float = PROBE_TIMEOUT_S


def utc_now() -> datetime:
    return datetime.now(UTC)


def day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
