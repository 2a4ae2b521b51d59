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
  counted, so a scrape costs what the backlog holds, not what the gateway ever handled;
* one store's rows are read in one transaction, so its stages add up at one instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class InboxStage(StrEnum):
    """Where a received message that is not finished stands."""

    HANDOVER = "handover"
    """Received, not yet handed to the registry."""
    REGISTRY_ANSWER = "registry_answer"
    """Handed over; the registry's business answer has not come."""
    ACKNOWLEDGEMENT = "acknowledgement"
    """Answered; the signed acknowledgement is owed to the sender."""
    ACKNOWLEDGEMENT_IMPOSSIBLE = "acknowledgement_impossible"
    """Answered, but stored before digests were kept and purged since: no receipt can be
    bound to it, so it stays owed until an operator settles it with the sender."""


@dataclass(frozen=True)
class StageBacklog:
    """The messages of one partner state at one stage."""

    partner: str
    stage: str
    count: int
    oldest: datetime
    """When the oldest of them entered the store (created or received)."""
