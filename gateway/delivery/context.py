"""What every exchange stage of one gateway shares, handed over as one frozen value."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.agreements.gate import AgreementGate
from gateway.audit.recorder import AuditRecorder
from gateway.config import DeliverySection
from gateway.envelope import EnvelopeSigner
from gateway.metrics import GatewayMetrics
from gateway.store.group_commit import GroupCommit


@dataclass(frozen=True)
class ExchangeContext:
    """The state this gateway acts for, the agreement gate, its envelope signer, its
    clock, its audit recorder, the group committer every write unit goes through, its
    metrics, and the delivery settings (deadlines, batch sizes, timeouts)."""

    state: str
    gate: AgreementGate
    signer: EnvelopeSigner
    clock: Callable[[], datetime]
    audit: AuditRecorder
    group: GroupCommit
    metrics: GatewayMetrics
    delivery: DeliverySection

    @property
    def delivery_deadline(self) -> timedelta:
        """How long a message is tried before it is given up."""
        return timedelta(seconds=self.delivery.deadline_seconds)
