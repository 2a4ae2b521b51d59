"""The durable inbox: what partner states delivered to this gateway, stored exactly once.

Guarantees:

* :meth:`Inbox.accept_once` stores a message and commits before it returns, and is
  atomic: of any number of concurrent deliveries of one message id (a dispatcher's
  retry racing its own earlier attempt, or two replicas receiving both), exactly one
  gets ``True`` and hands the message on; the others get ``False``, and the sender is
  told it was already received. A duplicate is an outcome, not an error.
* A message id already stored for a *different* sender state is refused with
  :class:`gateway.errors.ReplayRejected`: one partner must not be able to pre-empt,
  and so silently suppress, another partner's message.
* A message moves ``received → handed_over → acknowledged`` and never back; a
  transition that does not apply (unknown id, wrong state) reports ``False``.

Every method blocks; the async server calls them through ``asyncio.to_thread``.
Database failures leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import RowMapping

from gateway.errors import ReplayRejected
from gateway.store.engine import insert_unless_present, read_transaction, write_transaction
from gateway.store.tables import (
    AGREEMENT_ID_LENGTH,
    EXCHANGE_TYPE_LENGTH,
    MESSAGE_ID_LENGTH,
    InboxStatus,
    inbox,
)

__all__ = ["InboundMessage", "Inbox", "InboxEntry", "InboxStatus"]

_STATE_CODE = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True)
class InboundMessage:
    """A delivered envelope whose signature and agreement have already been checked."""

    message_id: str
    sender_state: str
    agreement_id: str
    exchange_type: str
    envelope: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("message_id", self.message_id, MESSAGE_ID_LENGTH),
            ("agreement_id", self.agreement_id, AGREEMENT_ID_LENGTH),
            ("exchange_type", self.exchange_type, EXCHANGE_TYPE_LENGTH),
        ):
            if not value or len(value) > limit:
                raise ValueError(f"{name} must be 1 to {limit} characters")
        if not _STATE_CODE.fullmatch(self.sender_state):
            raise ValueError("sender_state must be a two-letter upper-case state code")
        if not self.envelope:
            raise ValueError("envelope must not be empty")


@dataclass(frozen=True)
class InboxEntry:
    """One inbox row as stored; ``received_at`` is aware UTC."""

    message_id: str
    sender_state: str
    agreement_id: str
    exchange_type: str
    received_at: datetime
    envelope: bytes = field(repr=False)
    status: InboxStatus
    registry_outcome: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> InboxEntry:
        values = dict(row)
        values["status"] = InboxStatus(values["status"])
        values["envelope"] = bytes(values["envelope"])
        return cls(**values)


class Inbox:
    """The inbox of one gateway; several replicas may share it on PostgreSQL."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def accept_once(self, message: InboundMessage) -> bool:
        """Store ``message`` if its id is new (``True``); ``False`` if already stored."""
        received_at = self._clock()
        if received_at.tzinfo is None or received_at.utcoffset() is None:
            raise ValueError("clock() must return a timezone-aware datetime")
        statement = (
            insert_unless_present(self._engine, inbox)
            .values(
                message_id=message.message_id,
                sender_state=message.sender_state,
                agreement_id=message.agreement_id,
                exchange_type=message.exchange_type,
                received_at=received_at,
                envelope=message.envelope,
                status=InboxStatus.RECEIVED.value,
                registry_outcome=None,
            )
            .returning(inbox.c.message_id)
        )
        holder = select(inbox.c.sender_state).where(inbox.c.message_id == message.message_id)
        with write_transaction(self._engine) as conn:
            if conn.execute(statement).first() is not None:
                return True
            stored_sender = conn.execute(holder).scalar_one()
        if stored_sender != message.sender_state:
            raise ReplayRejected("message id already used by another sender state")
        return False

    def mark_handed_over(self, message_id: str) -> bool:
        """Record that the registry adapter has the message; ``False`` if not applicable."""
        return self._transition(
            message_id, InboxStatus.RECEIVED, status=InboxStatus.HANDED_OVER.value
        )

    def record_outcome(self, message_id: str, outcome: str) -> bool:
        """Record the registry's business acknowledgement; ``False`` if not applicable."""
        if not outcome:
            raise ValueError("outcome must not be empty")
        return self._transition(
            message_id,
            InboxStatus.HANDED_OVER,
            status=InboxStatus.ACKNOWLEDGED.value,
            registry_outcome=outcome,
        )

    def get(self, message_id: str) -> InboxEntry | None:
        with read_transaction(self._engine) as conn:
            row = (
                conn.execute(select(inbox).where(inbox.c.message_id == message_id))
                .mappings()
                .one_or_none()
            )
        return None if row is None else InboxEntry.from_row(row)

    def _transition(self, message_id: str, expected: InboxStatus, **values: str) -> bool:
        statement = (
            update(inbox)
            .where(inbox.c.message_id == message_id, inbox.c.status == expected.value)
            .values(**values)
        )
        with write_transaction(self._engine) as conn:
            result = conn.execute(statement)
        return result.rowcount == 1
