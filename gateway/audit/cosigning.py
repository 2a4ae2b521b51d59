"""How cosigning of our checkpoints by each partner is going: retries, end states, reports.

Guarantees:

* A partner that fails or refuses to cosign is asked again only after the ``[delivery]``
  backoff (exponential, with jitter, capped), counted from its first failure; once the
  next try would fall after the ``[delivery]`` deadline, it ends ``failed`` and is not
  asked again for that checkpoint: a larger checkpoint starts over.
* Each partner is in exactly one state, shown by ``pouch_checkpoint_cosigning`` (one
  label set to 1): ``ok``, ``retrying`` (it failed, e.g. unreachable), ``refused`` (it
  answered with a refusal), ``failed`` (deadline passed) or ``rollback``.
* The log says when a partner starts failing (one line), when it recovers (one line),
  and in between at most one summary a minute.
* ``rollback`` is :class:`AuditLogRollback`: our log is shorter than, or differs from,
  what the partner cosigned for it. It is logged as ``AUDIT_LOG_ROLLBACK`` with both
  sizes when found, raises ``pouch_audit_log_rollback``, and lasts until the partner's
  checkpoint fits our log again.

Usage (the publisher, per partner and round)::

    if watch.due(state, now, size):
        try:
            ...; watch.succeeded(state)
        except ...:
            watch.failed(state, now, size, reason, refused=True)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import grpc

from gateway.delivery.backoff import Backoff
from gateway.errors import Rejected
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

AUDIT_LOG_ROLLBACK = "AUDIT_LOG_ROLLBACK"
STATES = ("ok", "retrying", "refused", "failed", "rollback")
SUMMARY_EVERY = timedelta(minutes=1)


class AuditLogRollback(Rejected):
    """Our audit log is not the one a partner witnessed: publication is refused."""

    reason = AUDIT_LOG_ROLLBACK
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, partner_state: str, ours: int, cosigned: int) -> None:
        super().__init__(
            f"the audit log holds {ours} entries but {partner_state} cosigned a checkpoint "
            f"of {cosigned} that it does not extend: this gateway's database was replaced "
            "or restored from an old backup; no checkpoint is published until the database "
            "that partner witnessed is back"
        )
        self.partner_state = partner_state
        self.ours = ours
        self.cosigned = cosigned


@dataclass(frozen=True)
class CosigningRetry:
    """The ``[delivery]`` backoff and deadline, and what the publisher calls with."""

    backoff: Backoff
    deadline: timedelta
    call_timeout_s: float
    clock: Callable[[], datetime]
    rng: random.Random = field(default_factory=random.SystemRandom)


@dataclass
class _Partner:
    state: str = "ok"
    failures: int = 0
    first_failure: datetime | None = None
    next_attempt: datetime | None = None
    last_reason: str = ""
    last_report: datetime | None = None
    given_up_size: int | None = None


class CosigningWatch:
    """Per partner: whether to ask now, and what the log and metrics say about it."""

    def __init__(self, retry: CosigningRetry, metrics: GatewayMetrics | None) -> None:
        self._retry = retry
        self._metrics = metrics
        self._partners: dict[str, _Partner] = {}

    @property
    def retry(self) -> CosigningRetry:
        return self._retry

    def _of(self, state: str) -> _Partner:
        partner = self._partners.get(state)
        if partner is None:
            partner = self._partners[state] = _Partner()
            self._show(state, partner)
        return partner

    def state_of(self, state: str) -> str:
        return self._of(state).state

    def due(self, state: str, now: datetime, size: int) -> bool:
        """Whether to ask ``state`` now about a checkpoint of ``size``."""
        partner = self._of(state)
        if partner.given_up_size is not None:
            if size <= partner.given_up_size:
                return False
            partner.given_up_size = None
            partner.failures, partner.first_failure, partner.next_attempt = 0, None, None
        return partner.next_attempt is None or partner.next_attempt <= now

    def seconds_to_next(self, now: datetime) -> float | None:
        """Until the earliest retry any partner waits for, if one does."""
        waits = [
            (p.next_attempt - now).total_seconds()
            for p in self._partners.values()
            if p.next_attempt is not None and p.given_up_size is None
        ]
        return max(0.0, min(waits)) if waits else None

    def succeeded(self, state: str) -> None:
        partner = self._of(state)
        if partner.state != "ok":
            log.info(
                "checkpoint cosigning by %s recovered after %d failed attempts",
                state,
                partner.failures,
            )
        self._partners[state] = _Partner()
        self._show(state, self._partners[state])
        if self._metrics is not None:
            self._metrics.audit_log_rollback.labels(state).set(0)

    def failed(self, state: str, now: datetime, size: int, reason: str, *, refused: bool) -> None:
        """One failed attempt at checkpoint ``size``; schedules the next or gives up."""
        partner = self._of(state)
        partner.failures += 1
        partner.last_reason = reason
        first = partner.first_failure
        if first is None:
            first = partner.first_failure = now
        deadline = first + self._retry.deadline
        partner.next_attempt = self._retry.backoff.next_attempt(
            partner.failures, now, deadline, self._retry.rng
        )
        was = partner.state
        if partner.next_attempt is None:
            partner.state = "failed"
            partner.given_up_size = size
            log.error(
                "checkpoint cosigning by %s failed: no cosignature of checkpoint %d within "
                "the deadline after %d attempts (last: %s); a larger checkpoint starts over",
                state,
                size,
                partner.failures,
                reason,
            )
        else:
            partner.state = "refused" if refused else "retrying"
            if was in ("ok", "rollback"):
                partner.last_report = now
                log.warning(
                    "checkpoint cosigning by %s %s: %s; asking again with backoff until %s",
                    state,
                    "refused" if refused else "failing",
                    reason,
                    deadline.isoformat(timespec="seconds"),
                )
            elif partner.last_report is None or now - partner.last_report >= SUMMARY_EVERY:
                partner.last_report = now
                log.warning(
                    "checkpoint cosigning by %s still failing: %d attempts since %s, last: %s",
                    state,
                    partner.failures,
                    first.isoformat(timespec="seconds"),
                    reason,
                )
        self._show(state, partner)

    def rolled_back(self, state: str, now: datetime, error: AuditLogRollback) -> None:
        """Our log is not what ``state`` witnessed; asked again at the checkpoint interval."""
        partner = self._of(state)
        if partner.state != "rollback":
            log.error(
                "%s: this gateway's audit log holds %d entries but %s cosigned a checkpoint "
                "of %d that it does not extend: the database was replaced or restored from "
                "an old backup; publication refused",
                AUDIT_LOG_ROLLBACK,
                error.ours,
                state,
                error.cosigned,
            )
        self._partners[state] = _Partner(state="rollback", last_reason=AUDIT_LOG_ROLLBACK)
        self._show(state, self._partners[state])
        if self._metrics is not None:
            self._metrics.audit_log_rollback.labels(state).set(1)

    def _show(self, state: str, partner: _Partner) -> None:
        if self._metrics is None:
            return
        for name in STATES:
            self._metrics.checkpoint_cosigning.labels(state, name).set(
                1 if name == partner.state else 0
            )
