"""The durable inbox: what partner states delivered to this gateway, stored exactly once.

Guarantees:

* A mutator named ``*_within`` writes on the caller's connection, inside the caller's
  write transaction; nothing it wrote is durable before that transaction commits.
* :meth:`Inbox.accept_once_within` stores a message, and is atomic: of any number of
  concurrent deliveries of one message id (a dispatcher's retry racing its own earlier
  attempt, or two replicas receiving both), exactly one gets ``True`` and hands the
  message on; the others get ``False``, and the sender is told it was already
  received. A duplicate is an outcome, not an error.
* A message id already stored for a *different* sender state is refused with
  :class:`gateway.errors.ReplayRejected`: one partner must not be able to pre-empt,
  and so silently suppress, another partner's message.
* A message moves ``received → handed_over → acknowledged`` and never back; a
  transition that does not apply (unknown id, wrong state) reports ``False``. The
  registry's answer (applied, or rejected with a reason) is recorded once, either with
  the hand-over or afterwards (:meth:`Inbox.record_outcome`); the signed
  acknowledgement carrying it is then owed to the sender until :meth:`Inbox.mark_ack_sent_within`.
* After a crash, :meth:`Inbox.pending_handover` lists what still has to reach the
  registry and :meth:`Inbox.unacknowledged` what still has to be acknowledged, both
  oldest first, so nothing accepted is lost between the stages.
* A message is stored with the digest its receipt binds (``request_digest``), which
  outlives a purged payload, so its acknowledgement binds the same digest without the
  envelope being read again (migration 0010 gave it to the rows stored before it was
  kept, or gave up those it could not be computed for).
* :meth:`Inbox.purge_payloads` drops the envelopes stored under an agreement (when it
  is terminated) and keeps every row as evidence. A purged message not yet handed over
  is still listed for hand-over, with no envelope, so that the deliverer can close it
  (as rejected) and the sender still gets an answer.
  :meth:`Inbox.purge_finished_payloads` drops, for retention, only the envelopes of
  messages that are finished: handed over, answered, and acknowledged to the sender.
* Hand-over and acknowledgement are retried with backoff: a failed try of a message's
  current stage is recorded with :meth:`Inbox.schedule_retry_within` (``attempts`` and
  ``next_attempt_at``), and the message is not listed again before then; a message given
  up at its stage (:meth:`Inbox.mark_dead_within`, with a reason) is listed by neither
  loop again and counted as a dead letter in :meth:`Inbox.backlog`. Handing over
  starts the acknowledgement stage with no attempts.
* With a ``sealer`` (:class:`gateway.pki.sealing.PayloadSealer`), every envelope is
  sealed before it is written and opened after it is read, bound to its row
  (``inbox:<message id>``); the database never holds a readable payload. The sealer
  must be given from the first write of a database's life: rows carry no marker of
  whether they are sealed, so a plaintext row read through a sealer fails to open
  (:class:`gateway.pki.sealing.SealingError`), as does a row whose key is not held.

Every method blocks; the async server calls them through ``asyncio.to_thread``.
Database failures leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import RowMapping

from gateway.errors import ReplayRejected
from gateway.pki.sealing import PayloadSealer
from gateway.store.backlog import InboxStage, StageBacklog
from gateway.store.engine import (
    insert_unless_present,
    keyed_update,
    keyed_update_parameters,
    read_transaction,
    write_transaction,
)
from gateway.store.prepared import Prepared
from gateway.store.tables import (
    AGREEMENT_ID_LENGTH,
    DIGEST_PATTERN,
    EXCHANGE_TYPE_LENGTH,
    KIND_LENGTH,
    MESSAGE_ID_LENGTH,
    PURPOSE_LENGTH,
    InboxStatus,
    RegistryOutcome,
    inbox,
)

__all__ = [
    "InboundMessage",
    "Inbox",
    "InboxEntry",
    "InboxMessage",
    "InboxStatus",
    "OwedAcknowledgement",
]

_STATE_CODE = re.compile(r"[A-Z]{2}")
# Largest batch the recovery queries return.
MAX_BATCH = 1000


@dataclass(frozen=True)
class InboundMessage:
    """A delivered envelope whose signature and agreement have already been checked."""

    message_id: str
    sender_state: str
    agreement_id: str
    exchange_type: str
    envelope: bytes = field(repr=False)
    kind: str | None = None
    purpose: str | None = None
    # The digest of ``envelope`` its receipt binds, kept for the acknowledgement.
    request_digest: str | None = None

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("message_id", self.message_id, MESSAGE_ID_LENGTH),
            ("agreement_id", self.agreement_id, AGREEMENT_ID_LENGTH),
            ("exchange_type", self.exchange_type, EXCHANGE_TYPE_LENGTH),
        ):
            if not value or len(value) > limit:
                raise ValueError(f"{name} must be 1 to {limit} characters")
        for name, optional, limit in (
            ("kind", self.kind, KIND_LENGTH),
            ("purpose", self.purpose, PURPOSE_LENGTH),
        ):
            if optional is not None and not 1 <= len(optional) <= limit:
                raise ValueError(f"{name} must be 1 to {limit} characters")
        if not _STATE_CODE.fullmatch(self.sender_state):
            raise ValueError("sender_state must be a two-letter upper-case state code")
        if not self.envelope:
            raise ValueError("envelope must not be empty")
        if self.request_digest is not None and not DIGEST_PATTERN.fullmatch(self.request_digest):
            raise ValueError("request_digest must be 'sha256:' and 64 lowercase hex")


@dataclass(frozen=True)
class InboxEntry:
    """One inbox row as stored; every timestamp is aware UTC.

    ``envelope`` is ``None`` once the payload was purged (see ``payload_purged_at``).
    ``registry_outcome`` is ``applied`` or ``rejected`` (then ``registry_reason`` says
    why), or free text recorded through :meth:`Inbox.record_outcome`.
    """

    message_id: str
    sender_state: str
    agreement_id: str
    exchange_type: str
    received_at: datetime
    envelope: bytes | None = field(repr=False)
    status: InboxStatus
    registry_outcome: str | None
    kind: str | None
    purpose: str | None
    registry_reason: str | None
    handed_over_at: datetime | None
    ack_sent: bool
    payload_purged_at: datetime | None
    request_digest: str | None
    attempts: int
    next_attempt_at: datetime | None
    dead_reason: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> InboxEntry:
        values = dict(row)
        values["status"] = InboxStatus(values["status"])
        if values["envelope"] is not None:
            values["envelope"] = bytes(values["envelope"])
        values["ack_sent"] = bool(values["ack_sent"])
        return cls(**values)


InboxMessage = InboxEntry
"""The name the exchanges use for a stored inbox row."""


@dataclass(frozen=True)
class OwedAcknowledgement:
    """What the acknowledgement owed for one answered message is made of.

    ``request_digest`` is the digest stored with the message, which the receipt binds.
    """

    message_id: str
    sender_state: str
    agreement_id: str
    exchange_type: str
    received_at: datetime
    attempts: int
    registry_outcome: str
    registry_reason: str | None
    request_digest: str


class Inbox:
    """The inbox of one gateway; several replicas may share it on PostgreSQL."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        sealer: PayloadSealer | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._sealer = sealer
        self._accept = Prepared(
            insert_unless_present(engine, inbox).returning(inbox.c.message_id),
            columns=inbox.c.keys(),
        )

    def accept_once_within(
        self, conn: Connection, message: InboundMessage, *, applied: bool = False
    ) -> bool:
        """Store ``message`` if its id is new (``True``); ``False`` if already stored.

        With ``applied`` the message is stored as already handed over and applied: the
        caller applied it in the same transaction (a representation case's message).
        """
        now = self._now()
        handed_over = {
            "status": InboxStatus.HANDED_OVER.value,
            "registry_outcome": RegistryOutcome.APPLIED.value,
            "handed_over_at": now,
        }
        row = dict(_UNHANDLED)
        row.update({name: getattr(message, name) for name in _MESSAGE_COLUMNS})
        row.update(received_at=now, envelope=self._stored_envelope(message))
        if applied:
            row.update(handed_over)
        if self._accept.rows(conn, row):
            return True
        holder = select(inbox.c.sender_state).where(inbox.c.message_id == message.message_id)
        stored_sender = conn.execute(holder).scalar_one()
        if stored_sender != message.sender_state:
            raise ReplayRejected("message id already used by another sender state")
        return False

    def mark_handed_over_within(
        self,
        conn: Connection,
        message_id: str,
        *,
        applied: bool | None = None,
        reason: str | None = None,
    ) -> bool:
        """Record that the registry adapter has the message; ``False`` if not applicable.

        ``applied`` is the registry's answer when it gave one at once, and ``reason``
        its reason code. Leave both out when the answer comes later through
        :meth:`record_outcome`.
        """
        answer: dict[str, Any] = {}
        if applied is not None:
            outcome = RegistryOutcome.APPLIED if applied else RegistryOutcome.REJECTED
            answer = {"registry_outcome": outcome.value, "registry_reason": reason or None}
        elif reason is not None:
            raise ValueError("a reason needs the registry's answer (applied)")
        return self._update_within(
            conn,
            "received",
            message_id,
            status=InboxStatus.HANDED_OVER.value,
            handed_over_at=self._now(),
            attempts=0,
            next_attempt_at=None,
            **answer,
        )

    def record_outcome(self, message_id: str, outcome: str) -> bool:
        """Record the registry's later business answer; ``False`` if not applicable.

        Applies once, to a handed-over message whose answer is not yet recorded.
        """
        if not outcome:
            raise ValueError("outcome must not be empty")
        return self._update(
            "handed_over_unanswered",
            message_id,
            status=InboxStatus.ACKNOWLEDGED.value,
            registry_outcome=outcome,
        )

    def mark_ack_sent_within(self, conn: Connection, message_id: str) -> bool:
        """Record that the signed acknowledgement went back; ``False`` if not applicable."""
        return self._update_within(
            conn,
            "answered_unacknowledged",
            message_id,
            ack_sent=True,
        )

    def schedule_retry_within(
        self, conn: Connection, message_id: str, *, attempts: int, next_attempt_at: datetime
    ) -> bool:
        """Record a failed try of the message's current stage: ``attempts`` so far, and
        not listed again before ``next_attempt_at``."""
        return self._update_within(
            conn, "unfinished", message_id, attempts=attempts, next_attempt_at=next_attempt_at
        )

    def mark_dead_within(self, conn: Connection, message_id: str, *, reason: str) -> bool:
        """Give the message up at its current stage, for ``reason`` (a reason code)."""
        if not reason:
            raise ValueError("a dead letter needs a reason")
        return self._update_within(conn, "unfinished", message_id, dead_reason=reason)

    def pending_handover(self, limit: int) -> list[InboxEntry]:
        """Received messages due to be handed to the registry, oldest first.

        A purged message comes with no envelope: hand-over can only reject it.
        """
        return self._oldest(_WHEN["received"] & self._due(), limit)

    def _due(self) -> ColumnElement[bool]:
        return or_(inbox.c.next_attempt_at.is_(None), inbox.c.next_attempt_at <= self._now())

    def unacknowledged(self, limit: int) -> list[OwedAcknowledgement]:
        """Messages with the registry's answer whose acknowledgement is owed, oldest first.

        The envelope is not read: the stored digest is what the receipt binds.
        """
        _check_limit(limit)
        query = (
            select(
                inbox.c.message_id,
                inbox.c.sender_state,
                inbox.c.agreement_id,
                inbox.c.exchange_type,
                inbox.c.received_at,
                inbox.c.attempts,
                inbox.c.registry_outcome,
                inbox.c.registry_reason,
                inbox.c.request_digest,
            )
            .where(_WHEN["answered_unacknowledged"], self._due())
            .order_by(inbox.c.received_at, inbox.c.message_id)
            .limit(limit)
        )
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query).all()
        return [
            OwedAcknowledgement(
                message_id=row.message_id,
                sender_state=row.sender_state,
                agreement_id=row.agreement_id,
                exchange_type=row.exchange_type,
                received_at=row.received_at,
                attempts=row.attempts,
                registry_outcome=row.registry_outcome,
                registry_reason=row.registry_reason,
                request_digest=row.request_digest,
            )
            for row in rows
        ]

    def backlog(self) -> list[StageBacklog]:
        """Messages not finished, per sender state and stage (see :mod:`.backlog`)."""
        stages = (
            (InboxStage.HANDOVER, _WHEN["received"]),
            (InboxStage.REGISTRY_ANSWER, _WHEN["handed_over_unanswered"]),
            (InboxStage.ACKNOWLEDGEMENT, _WHEN["answered_unacknowledged"]),
            (InboxStage.HANDOVER_DEAD, _DEAD & (inbox.c.status == InboxStatus.RECEIVED.value)),
            (
                InboxStage.ACKNOWLEDGEMENT_DEAD,
                _DEAD & (inbox.c.status != InboxStatus.RECEIVED.value),
            ),
        )
        found: list[StageBacklog] = []
        with read_transaction(self._engine) as conn:
            for stage, when in stages:
                query = (
                    select(inbox.c.sender_state, func.count(), func.min(inbox.c.received_at))
                    .where(when)
                    .group_by(inbox.c.sender_state)
                )
                found.extend(
                    StageBacklog(partner, stage.value, count, oldest)
                    for partner, count, oldest in conn.execute(query)
                )
        return found

    def purge_payloads(self, agreement_id: str) -> int:
        """Drop the envelopes stored under ``agreement_id``; return how many were dropped."""
        purge = (
            update(inbox)
            .where(inbox.c.agreement_id == agreement_id, inbox.c.envelope.is_not(None))
            .values(envelope=None, payload_purged_at=self._now())
        )
        with write_transaction(self._engine) as conn:
            return conn.execute(purge).rowcount

    def purge_finished_payloads(self, agreement_id: str, *, received_before: datetime) -> int:
        """Drop the envelopes of finished messages received before ``received_before``.

        Finished means handed over (or acknowledged) with the acknowledgement sent, which
        needs the registry's answer first: nothing will read the envelope again. Rows
        stay. Returns how many envelopes were dropped.
        """
        if received_before.tzinfo is None or received_before.utcoffset() is None:
            raise ValueError("received_before must be timezone-aware")
        purge = (
            update(inbox)
            .where(
                inbox.c.agreement_id == agreement_id,
                inbox.c.envelope.is_not(None),
                inbox.c.received_at < received_before,
                inbox.c.status.in_([InboxStatus.HANDED_OVER.value, InboxStatus.ACKNOWLEDGED.value]),
                inbox.c.registry_outcome.is_not(None),
                inbox.c.ack_sent == true(),
            )
            .values(envelope=None, payload_purged_at=self._now())
        )
        with write_transaction(self._engine) as conn:
            return conn.execute(purge).rowcount

    def get(self, message_id: str) -> InboxEntry | None:
        with read_transaction(self._engine) as conn:
            row = (
                conn.execute(select(inbox).where(inbox.c.message_id == message_id))
                .mappings()
                .one_or_none()
            )
        return None if row is None else self._entry(row)

    def _oldest(self, where: ColumnElement[bool], limit: int) -> list[InboxEntry]:
        _check_limit(limit)
        query = (
            select(inbox)
            .where(where)
            .order_by(inbox.c.received_at, inbox.c.message_id)
            .limit(limit)
        )
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [self._entry(row) for row in rows]

    def _stored_envelope(self, message: InboundMessage) -> bytes:
        if self._sealer is None:
            return message.envelope
        return self._sealer.seal(message.envelope, aad=_row_identity(message.message_id))

    def _entry(self, row: RowMapping) -> InboxEntry:
        entry = InboxEntry.from_row(row)
        if self._sealer is None or entry.envelope is None:
            return entry
        return replace(entry, envelope=self._opened(entry.message_id, entry.envelope))

    def _opened(self, message_id: str, stored: bytes | None) -> bytes | None:
        if stored is None:
            return None
        if self._sealer is None:
            return bytes(stored)
        return self._sealer.open(bytes(stored), aad=_row_identity(message_id))

    def _update(self, when: str, message_id: str, **values: Any) -> bool:
        with write_transaction(self._engine) as conn:
            return self._update_within(conn, when, message_id, **values)

    @staticmethod
    def _update_within(conn: Connection, when: str, message_id: str, **values: Any) -> bool:
        """Set ``values`` on the message if it is in state ``when`` (see :data:`_WHEN`)."""
        statement = keyed_update(inbox, _WHEN[when], tuple(sorted(values)))
        return statement.execute(conn, keyed_update_parameters(message_id, values)) == 1

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("clock() must return a timezone-aware datetime")
        return now


_ALIVE = inbox.c.dead_reason.is_(None)
_DEAD = inbox.c.dead_reason.is_not(None)

_WHEN: dict[str, ColumnElement[bool]] = {
    "received": (inbox.c.status == InboxStatus.RECEIVED.value) & _ALIVE,
    "handed_over_unanswered": (inbox.c.status == InboxStatus.HANDED_OVER.value)
    & inbox.c.registry_outcome.is_(None),
    "answered_unacknowledged": inbox.c.registry_outcome.is_not(None)
    & (inbox.c.ack_sent == false())
    & _ALIVE,
    "unfinished": _ALIVE
    & or_(
        inbox.c.status == InboxStatus.RECEIVED.value,
        inbox.c.registry_outcome.is_not(None) & (inbox.c.ack_sent == false()),
    ),
}
"""The states a message must be in for each kind of update."""

_MESSAGE_COLUMNS = tuple(f.name for f in fields(InboundMessage) if f.name in inbox.c)
"""The fields of :class:`InboundMessage` stored as they are, in the column of their name."""
_UNHANDLED: dict[str, object] = dict.fromkeys(inbox.c.keys()) | {
    "status": InboxStatus.RECEIVED.value,
    "ack_sent": False,
    "attempts": 0,
}
"""A message just received: nothing done with it yet, and every column the message
does not give empty (NULL) until a later stage sets it."""


def _row_identity(message_id: str) -> str:
    """What a sealed envelope is bound to: this table and this message."""
    return f"inbox:{message_id}"


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_BATCH:
        raise ValueError(f"limit must be 1 to {MAX_BATCH}")
