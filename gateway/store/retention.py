"""Retention: payloads are purged once an agreement's retention period has passed.

Guarantees:

* :meth:`RetentionPurger.purge_expired` drops the envelope of an outbox message created,
  or an inbox message received, more than the agreement's ``retention_days`` ago, and
  sets its ``payload_purged_at``. The row stays, with its receipt, outcome and
  timestamps: the evidence outlives the payload.
* Only finished messages are purged, so nothing in flight is lost: an outbox message
  that is dead, or delivered with the partner registry's outcome; an inbox message
  handed to the registry, answered, and acknowledged to the sender. An older message
  still waiting for any of these keeps its payload until it finishes; the next run
  purges it then.
* An agreement without a known retention (its file was removed from the registry) is
  not guessed at: its payloads stay and its id is reported, for the operator to act on
  (terminating an agreement purges its payloads at once).
* Purging is idempotent: a second run over the same rows drops nothing.

Every method blocks; the server runs the purger through ``asyncio.to_thread``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, union

from gateway.store.cases import CaseStore
from gateway.store.engine import read_transaction
from gateway.store.inbox import Inbox
from gateway.store.outbox import Outbox
from gateway.store.tables import inbox, outbox

__all__ = ["PurgeReport", "RetentionPurger"]


@dataclass(frozen=True)
class PurgeReport:
    """What one run purged, by agreement, and which agreements had no known retention."""

    outbox_purged: Mapping[str, int]
    inbox_purged: Mapping[str, int]
    without_retention: tuple[str, ...]
    cases_purged: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(
            sum(purged.values())
            for purged in (self.outbox_purged, self.inbox_purged, self.cases_purged)
        )

    def agreements(self) -> list[str]:
        """The agreements under which anything was purged, in order."""
        return sorted(
            agreement_id
            for agreement_id in {*self.outbox_purged, *self.inbox_purged, *self.cases_purged}
            if self.outbox_purged.get(agreement_id)
            or self.inbox_purged.get(agreement_id)
            or self.cases_purged.get(agreement_id)
        )


class RetentionPurger:
    """Every purge of what crossed: the payloads of finished messages and cases whose
    agreement's retention has passed, and all of an agreement's on its termination."""

    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        inbox: Inbox,
        cases: CaseStore | None = None,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._inbox = inbox
        self._cases = cases
        self._clock = clock

    def purge_agreement(self, agreement_id: str) -> int:
        """Drop every payload stored under ``agreement_id`` (it was terminated): the
        outbox's and inbox's envelopes and the cases' contents; how many were dropped."""
        purged = self._outbox.purge_payloads(agreement_id)
        purged += self._inbox.purge_payloads(agreement_id)
        if self._cases is not None:
            purged += self._cases.purge_payloads(agreement_id)
        return purged

    def purge_expired(self, retention_days_by_agreement: Mapping[str, int]) -> PurgeReport:
        """Purge what each agreement's retention (in days) no longer allows to keep."""
        for agreement_id, days in retention_days_by_agreement.items():
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                raise ValueError(f"retention of {agreement_id!r} must be a positive whole day")
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("clock() must return a timezone-aware datetime")
        outbox_purged: dict[str, int] = {}
        inbox_purged: dict[str, int] = {}
        cases_purged: dict[str, int] = {}
        for agreement_id, days in sorted(retention_days_by_agreement.items()):
            cutoff = now - timedelta(days=days)
            if self._cases is not None:
                cases_purged[agreement_id] = self._cases.purge_finished_payloads(
                    agreement_id, updated_before=cutoff
                )
            outbox_purged[agreement_id] = self._outbox.purge_finished_payloads(
                agreement_id, created_before=cutoff
            )
            inbox_purged[agreement_id] = self._inbox.purge_finished_payloads(
                agreement_id, received_before=cutoff
            )
        stored = self._agreements_holding_payloads()
        return PurgeReport(
            outbox_purged=outbox_purged,
            inbox_purged=inbox_purged,
            without_retention=tuple(sorted(stored - retention_days_by_agreement.keys())),
            cases_purged=cases_purged,
        )

    def _agreements_holding_payloads(self) -> set[str]:
        query = union(
            select(outbox.c.agreement_id).where(outbox.c.envelope.is_not(None)).distinct(),
            select(inbox.c.agreement_id).where(inbox.c.envelope.is_not(None)).distinct(),
        )
        with read_transaction(self._engine) as conn:
            return set(conn.execute(query).scalars())
