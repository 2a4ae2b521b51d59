"""What is still to be done with a partner state's messages: counts and ages, for operators.

The outbox and the inbox each report their backlog (:meth:`Outbox.backlog
<gateway.store.outbox.Outbox.backlog>`, :meth:`Inbox.backlog
<gateway.store.inbox.Inbox.backlog>`) as :class:`StageBacklog` rows: one per partner state
and stage that holds anything. An outbox message's stage is its status (pending, in
flight, dead); an inbox message's is an :class:`InboxStage`. A row says how many
messages wait there and since when the oldest has; never anything about a message's
content or the people it concerns.

Guarantees:

* only unfinished rows are read, through the stores' status indexes: delivered outbox
  messages and acknowledged inbox messages, the bulk of a long-running gateway, are not
  counted, so a scrape costs what the backlog holds, not what the gateway ever handled.

The figures are a reading, not a ledger: on PostgreSQL each stage is counted in its own
snapshot, so a message that moves on while a scrape runs may be counted at two stages
or at none, in that scrape only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from gateway.store.tables import OutboxStatus

OUTBOX_STAGES = (OutboxStatus.PENDING, OutboxStatus.IN_FLIGHT, OutboxStatus.DEAD)
"""The statuses of an outbox message not delivered: its stages in the backlog."""


class InboxStage(StrEnum):
    """Where a received message that is not finished stands.

    ``acknowledgement_impossible`` (a message stored before digests were kept whose
    payload was purged) is no longer produced: migration 0010 gave every such message
    still owed an acknowledgement up as a dead letter (``acknowledgement_dead``)."""

    HANDOVER = "handover"
    """Received, not yet handed to the registry."""
    REGISTRY_ANSWER = "registry_answer"
    """Handed over; the registry's business answer has not come."""
    ACKNOWLEDGEMENT = "acknowledgement"
    """Answered; the signed acknowledgement is owed to the sender."""
    HANDOVER_DEAD = "handover_dead"
    """Given up before the registry took it: the registry failed past the deadline."""
    ACKNOWLEDGEMENT_DEAD = "acknowledgement_dead"
    """Answered, but the acknowledgement was given up: the sender refused it for good
    (it knows no such message) or failed past the deadline."""


@dataclass(frozen=True)
class StageBacklog:
    """The messages of one partner state at one stage."""

    partner: str
    stage: str
    count: int
    oldest: datetime
    """When the oldest of them entered the store (created or received)."""
