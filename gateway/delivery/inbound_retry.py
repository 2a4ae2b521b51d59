"""A received message's stage that failed (hand-over, acknowledgement): tried later, or given up.

The receiving gateway's loops report each failed try to :class:`InboundFailures`, which
promises:

* a temporary failure is tried again after the ``[delivery]`` backoff
  (:class:`RetryPolicy`), counted from the failure, with jitter; the message is not
  listed again before then, so a dependency that keeps failing costs one call per
  message per backoff step, not one per poll;
* a permanent failure (the sender refused it for good), or a temporary one whose next
  try would fall after the message's deadline (``deadline_seconds`` from when it was
  received), makes the message a dead letter at that stage, with its reason code: it
  is listed by no loop again, shows in the inbox backlog metric
  (``handover_dead``, ``acknowledgement_dead``) and is logged as ``dead_lettered``;
* the write of each outcome is one group-commit unit; the event line follows its commit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Connection

from gateway.config import DeliverySection
from gateway.delivery.backoff import Backoff, delivery_backoff
from gateway.events import Event, emit
from gateway.store.group_commit import GroupCommit
from gateway.store.inbox import Inbox


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed stage is tried next: the backoff, within the deadline."""

    backoff: Backoff
    deadline: timedelta
    clock: Callable[[], datetime]
    rng: random.Random = field(default_factory=random.SystemRandom, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: DeliverySection, clock: Callable[[], datetime]) -> RetryPolicy:
        return cls(
            backoff=delivery_backoff(settings),
            deadline=timedelta(seconds=settings.deadline_seconds),
            clock=clock,
        )

    def next_attempt(self, attempts: int, started: datetime) -> datetime | None:
        """After the ``attempts``-th failure of work started at ``started``: when to try
        again, or None when that would be past the deadline."""
        now = self.clock()
        return self.backoff.next_attempt(attempts, now, started + self.deadline, self.rng)


class Unfinished(Protocol):
    """What a loop knows of a received message whose stage failed."""

    @property
    def message_id(self) -> str: ...
    @property
    def sender_state(self) -> str: ...
    @property
    def agreement_id(self) -> str: ...
    @property
    def exchange_type(self) -> str: ...
    @property
    def received_at(self) -> datetime: ...
    @property
    def attempts(self) -> int: ...


@dataclass(frozen=True)
class Failure:
    """One failed try of ``message``'s stage, with our reason code for it."""

    message: Unfinished
    reason: str
    permanent: bool = False


class InboundFailures:
    """Records failed tries of received messages' stages."""

    def __init__(self, *, inbox: Inbox, policy: RetryPolicy, group: GroupCommit) -> None:
        self.inbox = inbox
        self._policy = policy
        self.group = group

    async def record(self, failures: Sequence[Failure]) -> int:
        """Schedule or give up each; returns how many were given up."""
        dead = await asyncio.gather(*(self._record(f) for f in failures))
        return sum(dead)

    async def _record(self, failure: Failure) -> bool:
        message = failure.message
        attempts = message.attempts + 1

        def store(conn: Connection) -> datetime | None:
            # The delay counts from when the failure is recorded, however long the write
            # waited for its turn.
            when = (
                None
                if failure.permanent
                else self._policy.next_attempt(attempts, message.received_at)
            )
            if when is None:
                self.inbox.mark_dead_within(conn, message.message_id, reason=dead_reason)
            else:
                self.inbox.schedule_retry_within(
                    conn, message.message_id, attempts=attempts, next_attempt_at=when
                )
            return when

        dead_reason = (
            failure.reason if failure.permanent else f"DEADLINE_PASSED_AFTER_{failure.reason}"
        )
        when = await self.group.write(store)
        emit(
            Event.RETRY_SCHEDULED if when is not None else Event.DEAD_LETTERED,
            message_id=message.message_id,
            agreement_id=message.agreement_id,
            partner=message.sender_state,
            exchange_type=message.exchange_type,
            reason=failure.reason if when is not None else dead_reason,
            attempts=attempts,
        )
        return when is None
