"""The durable outbox: signed envelopes waiting to be delivered to a partner state.

Guarantees:

* A mutator named ``*_within`` writes on the caller's connection, inside the caller's
  write transaction, and nothing it wrote is durable before that transaction commits.
  :meth:`Outbox.enqueue_within` stores a batch of messages: the commit of the caller's
  transaction is the point at which a civil-record update is acknowledged to the
  caller, it covers the whole batch or nothing, and it survives ``kill -9`` on either
  engine. Enqueuing an id that is already queued changes nothing and is reported (it
  is not counted as new), not raised: a resubmission is an outcome, not an error.
* :meth:`Outbox.claim_due` hands each due message to exactly one worker at a time, as a
  lease. On PostgreSQL claimers skip rows another claimer has locked
  (``FOR UPDATE SKIP LOCKED``); on SQLite the claim runs under ``BEGIN IMMEDIATE``, so
  claimers serialise. A lease that expires (its worker died or hung) makes the message
  claimable again; every claim counts as an attempt.
* A transition out of ``in_flight`` (delivered, retry later, dead) succeeds only for the
  worker that holds an unexpired lease on the message, and reports ``False`` otherwise;
  two dispatchers therefore never both complete one message. A worker whose lease
  lapsed leaves the message to whoever reclaims it; the receiver's inbox drops the
  duplicate delivery that may follow.
* A caller's submission is idempotent: at most one message is stored per
  ``(principal, client_reference)``; a second one is reported like a known id, and
  :meth:`Outbox.find_by_client_reference` finds the first.
* The partner's receipt and the registry's outcome are each recorded once; the first
  one stays. :meth:`Outbox.purge_payloads` drops the envelopes of an agreement (when
  it is terminated) but keeps every row with its receipt and outcome as evidence;
  a purged message that was not yet delivered is dead-lettered, since nothing is left
  to deliver. :meth:`Outbox.purge_finished_payloads` drops, for retention, only the
  envelopes of messages that are finished: dead, or delivered with the partner's outcome.
* The digest of the envelope as queued (``envelope_digest``, when its signer gave one)
  is stored with it, never changed, and kept when the envelope is purged.
* With a ``sealer`` (:class:`gateway.pki.sealing.PayloadSealer`), every envelope is
  sealed before it is written and opened after it is read, bound to its row
  (``outbox:<message id>``); the database never holds a readable payload. The sealer
  must be given from the first write of a database's life: rows carry no marker of
  whether they are sealed, so a plaintext row read through a sealer fails to open
  (:class:`gateway.pki.sealing.SealingError`), as does a row whose key is not held.

Times come from the injected clock, which must return aware datetimes. Every method
blocks; the async server calls them through ``asyncio.to_thread``. Database failures
leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.dml import ReturningUpdate

from gateway.pki.sealing import PayloadSealer
from gateway.store.backlog import OUTBOX_STAGES, StageBacklog
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
    CLIENT_REFERENCE_LENGTH,
    DIGEST_PATTERN,
    EXCHANGE_TYPE_LENGTH,
    KIND_LENGTH,
    MESSAGE_ID_LENGTH,
    PRINCIPAL_LENGTH,
    PURPOSE_LENGTH,
    REQUEST_ID_LENGTH,
    WORKER_ID_LENGTH,
    OutboxStatus,
    RegistryOutcome,
    outbox,
)

__all__ = ["Outbox", "OutboxItem", "OutboxMessage", "OutboxStatus", "RegistryOutcome"]

_STATE_CODE = re.compile(r"[A-Z]{2}")
# Rows per INSERT in enqueue_many; keeps bound parameters well under SQLite's limit.
_BATCH_ROWS = 500
# Largest page :meth:`Outbox.page` returns.
MAX_PAGE = 1000
PURGED_REASON = "PAYLOAD_PURGED"
"""Why an undelivered message was dead-lettered by :meth:`Outbox.purge_payloads`."""


@dataclass(frozen=True)
class OutboxItem:
    """A signed envelope to queue for one recipient state; ``not_before`` defaults to now.

    ``client_reference`` is the submitting ``principal``'s own id for the request,
    which makes resubmission idempotent; it needs a principal. ``kind`` is the event,
    document or case kind the envelope carries. ``envelope_digest`` is the envelope's
    digest as its signer computed it (what a receipt for these bytes binds); without
    it, the dispatcher signs the message afresh before every attempt.
    """

    message_id: str
    agreement_id: str
    agreement_version: int
    exchange_type: str
    recipient_state: str
    purpose: str
    envelope: bytes = field(repr=False)
    deadline_at: datetime
    not_before: datetime | None = None
    client_reference: str | None = None
    principal: str | None = None
    kind: str | None = None
    envelope_digest: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        _require_text("message_id", self.message_id, MESSAGE_ID_LENGTH)
        if self.envelope_digest is not None and not DIGEST_PATTERN.fullmatch(self.envelope_digest):
            raise ValueError("envelope_digest must be 'sha256:' and 64 lowercase hex")
        for name, value, limit in (
            ("client_reference", self.client_reference, CLIENT_REFERENCE_LENGTH),
            ("principal", self.principal, PRINCIPAL_LENGTH),
            ("kind", self.kind, KIND_LENGTH),
            ("request_id", self.request_id, REQUEST_ID_LENGTH),
        ):
            if value is not None:
                _require_text(name, value, limit)
        if self.client_reference is not None and self.principal is None:
            # NULLs never collide in the unique index: without a principal the
            # reference would not make resubmission idempotent.
            raise ValueError("client_reference needs the principal it belongs to")
        _require_text("agreement_id", self.agreement_id, AGREEMENT_ID_LENGTH)
        _require_text("exchange_type", self.exchange_type, EXCHANGE_TYPE_LENGTH)
        _require_text("purpose", self.purpose, PURPOSE_LENGTH)
        if self.agreement_version < 0:
            raise ValueError("agreement_version must not be negative")
        if not _STATE_CODE.fullmatch(self.recipient_state):
            raise ValueError("recipient_state must be a two-letter upper-case state code")
        if not self.envelope:
            raise ValueError("envelope must not be empty")
        _require_aware("deadline_at", self.deadline_at)
        if self.not_before is not None:
            _require_aware("not_before", self.not_before)


@dataclass(frozen=True)
class OutboxMessage:
    """One outbox row as stored; every timestamp is aware UTC.

    ``envelope`` is ``None`` once the payload was purged (see ``payload_purged_at``).
    """

    message_id: str
    agreement_id: str
    agreement_version: int
    exchange_type: str
    recipient_state: str
    purpose: str
    envelope: bytes | None = field(repr=False)
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    deadline_at: datetime
    claimed_by: str | None
    lease_until: datetime | None
    last_error_reason: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    client_reference: str | None
    principal: str | None
    kind: str | None
    outcome: RegistryOutcome | None
    outcome_reason: str | None
    outcome_at: datetime | None
    receipt: bytes | None = field(repr=False)
    payload_purged_at: datetime | None
    envelope_digest: str | None
    request_id: str | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> OutboxMessage:
        values = dict(row)
        values["status"] = OutboxStatus(values["status"])
        for name in ("envelope", "receipt"):
            if values[name] is not None:
                values[name] = bytes(values[name])
        if values["outcome"] is not None:
            values["outcome"] = RegistryOutcome(values["outcome"])
        return cls(**values)


@dataclass(frozen=True)
class OutboxHeading:
    """What an acknowledgement needs of a message: whom it went to, under what, and
    whether its delivery receipt is recorded; never the envelope."""

    message_id: str
    agreement_id: str
    agreement_version: int
    exchange_type: str
    recipient_state: str
    purpose: str
    receipted: bool
    request_id: str | None = None


class Outbox:
    """The outbox of one gateway; several replicas may share it on PostgreSQL."""

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
        self._enqueue_one = Prepared(
            insert_unless_present(engine, outbox).returning(outbox.c.message_id),
            columns=outbox.c.keys(),
        )

    def enqueue_within(self, conn: Connection, items: Iterable[OutboxItem]) -> int:
        """Store ``items`` on ``conn``, inside the caller's transaction; how many were new.

        Nothing is durable until the caller's transaction commits: that commit is then
        the point of acknowledgement, for the message and whatever else it wrote.
        """
        now = self._now()
        rows = [_new_row(item, now, self._stored_envelope(item)) for item in items]
        if len(rows) == 1:
            return len(self._enqueue_one.rows(conn, rows[0]))
        stored = 0
        for start in range(0, len(rows), _BATCH_ROWS):
            statement = insert_unless_present(self._engine, outbox).values(
                rows[start : start + _BATCH_ROWS]
            )
            stored += len(conn.execute(statement.returning(outbox.c.message_id)).all())
        return stored

    def claim_due(self, worker_id: str, *, limit: int, lease_s: float) -> list[OutboxMessage]:
        """Lease up to ``limit`` due messages to ``worker_id`` for ``lease_s`` seconds.

        Due means pending with ``next_attempt_at`` reached, or in flight with a lapsed
        lease. Messages come oldest-due first. Messages past their deadline are claimed
        too: the dispatcher decides to dead-letter them.
        """
        _require_text("worker_id", worker_id, WORKER_ID_LENGTH)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        now = self._now()
        # Most polls find nothing due: a read answers them without taking the write lock
        # that submissions and group commits wait for.
        with read_transaction(self._engine) as conn:
            if not _ANY_DUE.rows(conn, {"now": now}):
                return []
        parameters = {
            "now": now,
            "worker": worker_id,
            "lease_until": now + timedelta(seconds=lease_s),
        }
        with write_transaction(self._engine) as conn:
            rows = conn.execute(_claim(limit), parameters).mappings().all()
        claimed = [self._message(row) for row in rows]
        return sorted(claimed, key=lambda m: (m.next_attempt_at, m.message_id))

    def mark_delivered_within(self, conn: Connection, message_id: str, worker_id: str) -> bool:
        """Record delivery; ``False`` if ``worker_id`` does not hold the lease."""
        now = self._now()
        return self._transition_within(
            conn,
            message_id,
            worker_id,
            now,
            status=OutboxStatus.DELIVERED.value,
            lease_until=None,
            delivered_at=now,
            updated_at=now,
        )

    def schedule_retry_within(
        self,
        conn: Connection,
        message_id: str,
        worker_id: str,
        *,
        next_attempt_at: datetime,
        reason: str,
    ) -> bool:
        """Put the message back to pending until ``next_attempt_at``; ``False`` without lease."""
        _require_aware("next_attempt_at", next_attempt_at)
        now = self._now()
        return self._transition_within(
            conn,
            message_id,
            worker_id,
            now,
            status=OutboxStatus.PENDING.value,
            next_attempt_at=next_attempt_at,
            claimed_by=None,
            lease_until=None,
            last_error_reason=reason,
            updated_at=now,
        )

    def mark_dead(self, message_id: str, worker_id: str, *, reason: str) -> bool:
        """Give up on the message (dead letter); ``False`` if ``worker_id`` lacks the lease."""
        now = self._now()
        return self._transition(
            message_id,
            worker_id,
            now,
            status=OutboxStatus.DEAD.value,
            lease_until=None,
            last_error_reason=reason,
            updated_at=now,
        )

    def record_receipt_within(self, conn: Connection, message_id: str, receipt: bytes) -> bool:
        """Keep the partner's signed delivery receipt; ``False`` if one is already kept."""
        if not receipt:
            raise ValueError("receipt must not be empty")
        values = {"receipt": receipt, "updated_at": self._now()}
        parameters = keyed_update_parameters(message_id, values)
        return _RECORD_RECEIPT.execute(conn, parameters) == 1

    def record_outcome_within(
        self,
        conn: Connection,
        message_id: str,
        *,
        outcome: RegistryOutcome | str,
        reason: str | None,
    ) -> bool:
        """Record the partner registry's answer; ``False`` if one is already recorded."""
        outcome = RegistryOutcome(outcome)
        now = self._now()
        values = {
            "outcome": outcome.value,
            "outcome_reason": reason or None,
            "outcome_at": now,
            "updated_at": now,
        }
        return _RECORD_OUTCOME.execute(conn, keyed_update_parameters(message_id, values)) == 1

    def purge_payloads(self, agreement_id: str) -> int:
        """Drop the envelopes stored under ``agreement_id``; return how many were dropped.

        Rows, receipts and outcomes stay. Messages not yet delivered become dead letters.
        """
        now = self._now()
        undelivered = outbox.c.status.in_(
            [OutboxStatus.PENDING.value, OutboxStatus.IN_FLIGHT.value]
        )
        purge = (
            update(outbox)
            .where(outbox.c.agreement_id == agreement_id, outbox.c.envelope.is_not(None))
            .values(
                envelope=None,
                payload_purged_at=now,
                updated_at=now,
                status=case((undelivered, OutboxStatus.DEAD.value), else_=outbox.c.status),
                lease_until=case((undelivered, null()), else_=outbox.c.lease_until),
                last_error_reason=case(
                    (undelivered, PURGED_REASON), else_=outbox.c.last_error_reason
                ),
            )
        )
        with write_transaction(self._engine) as conn:
            return conn.execute(purge).rowcount

    def purge_finished_payloads(self, agreement_id: str, *, created_before: datetime) -> int:
        """Drop the envelopes of finished messages created before ``created_before``.

        Finished means dead, or delivered with the partner registry's outcome recorded:
        nothing will send or resend them. Rows, receipts and outcomes stay. Returns how
        many envelopes were dropped.
        """
        _require_aware("created_before", created_before)
        now = self._now()
        finished = or_(
            outbox.c.status == OutboxStatus.DEAD.value,
            and_(
                outbox.c.status == OutboxStatus.DELIVERED.value,
                outbox.c.outcome.is_not(None),
            ),
        )
        purge = (
            update(outbox)
            .where(
                outbox.c.agreement_id == agreement_id,
                outbox.c.envelope.is_not(None),
                outbox.c.created_at < created_before,
                finished,
            )
            .values(envelope=None, payload_purged_at=now, updated_at=now)
        )
        with write_transaction(self._engine) as conn:
            return conn.execute(purge).rowcount

    def get(self, message_id: str) -> OutboxMessage | None:
        return self._one(outbox.c.message_id == message_id)

    def find_by_client_reference(
        self, principal: str, client_reference: str
    ) -> OutboxMessage | None:
        """The message ``principal`` submitted under ``client_reference``, if any."""
        return self._one(
            and_(outbox.c.principal == principal, outbox.c.client_reference == client_reference)
        )

    def message_id_for_reference(self, principal: str, client_reference: str) -> str | None:
        """The id of the message ``principal`` submitted under ``client_reference``, if any
        (:meth:`find_by_client_reference` without reading or opening the envelope)."""
        with read_transaction(self._engine) as conn:
            return self.message_id_for_reference_within(conn, principal, client_reference)

    @staticmethod
    def heading_within(conn: Connection, message_id: str) -> OutboxHeading | None:
        """The message's :class:`OutboxHeading`, in the caller's transaction."""
        found = _HEADING.rows(conn, {"message_id": message_id})
        if not found:
            return None
        agreement_id, version, exchange_type, recipient, purpose, receipted, request = found[0]
        return OutboxHeading(
            message_id=message_id,
            agreement_id=agreement_id,
            agreement_version=int(version),
            exchange_type=exchange_type,
            recipient_state=recipient,
            purpose=purpose,
            receipted=bool(receipted),
            request_id=request,
        )

    @staticmethod
    def message_id_for_reference_within(
        conn: Connection, principal: str, client_reference: str
    ) -> str | None:
        """:meth:`message_id_for_reference` in the caller's transaction."""
        parameters = {"principal": principal, "client_reference": client_reference}
        found = _ID_FOR_REFERENCE.rows(conn, parameters)
        return str(found[0][0]) if found else None

    def backlog(self) -> list[StageBacklog]:
        """Messages not delivered, per recipient state and status (see :mod:`.backlog`)."""
        query = (
            select(
                outbox.c.recipient_state,
                outbox.c.status,
                func.count(),
                func.min(outbox.c.created_at),
            )
            .where(outbox.c.status.in_([stage.value for stage in OUTBOX_STAGES]))
            .group_by(outbox.c.recipient_state, outbox.c.status)
        )
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query).all()
        return [StageBacklog(*row) for row in rows]

    def page(
        self,
        *,
        status: OutboxStatus | str | None = None,
        recipient_state: str | None = None,
        principal: str | None = None,
        exchange_type: str | None = None,
        limit: int,
        after_message_id: str | None = None,
    ) -> list[OutboxMessage]:
        """One page of the messages that match every filter given, oldest first.

        Messages are ordered by ``(created_at, message_id)``.
        The next page starts after the last message of this one (``after_message_id``);
        an id that is not stored gives an empty page.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE}")
        query = select(outbox).order_by(outbox.c.created_at, outbox.c.message_id).limit(limit)
        if status is not None:
            query = query.where(outbox.c.status == OutboxStatus(status).value)
        for column, wanted in (
            (outbox.c.recipient_state, recipient_state),
            (outbox.c.principal, principal),
            (outbox.c.exchange_type, exchange_type),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if after_message_id is not None:
            cursor = (
                select(outbox.c.created_at)
                .where(outbox.c.message_id == after_message_id)
                .scalar_subquery()
            )
            query = query.where(
                or_(
                    outbox.c.created_at > cursor,
                    and_(outbox.c.created_at == cursor, outbox.c.message_id > after_message_id),
                )
            )
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [self._message(row) for row in rows]

    def _one(self, where: ColumnElement[bool]) -> OutboxMessage | None:
        with read_transaction(self._engine) as conn:
            row = conn.execute(select(outbox).where(where)).mappings().one_or_none()
        return None if row is None else self._message(row)

    def _stored_envelope(self, item: OutboxItem) -> bytes:
        if self._sealer is None:
            return item.envelope
        return self._sealer.seal(item.envelope, aad=_row_identity(item.message_id))

    def _message(self, row: RowMapping) -> OutboxMessage:
        message = OutboxMessage.from_row(row)
        if self._sealer is None or message.envelope is None:
            return message
        plain = self._sealer.open(message.envelope, aad=_row_identity(message.message_id))
        return replace(message, envelope=plain)

    def _transition(self, message_id: str, worker_id: str, now: datetime, **values: Any) -> bool:
        with write_transaction(self._engine) as conn:
            return self._transition_within(conn, message_id, worker_id, now, **values)

    def _transition_within(
        self, conn: Connection, message_id: str, worker_id: str, now: datetime, **values: Any
    ) -> bool:
        statement = keyed_update(outbox, _HELD_BY_WORKER, tuple(sorted(values)))
        parameters = keyed_update_parameters(message_id, values)
        parameters.update(holding_worker=worker_id, held_at=now)
        return statement.execute(conn, parameters) == 1

    def _now(self) -> datetime:
        now = self._clock()
        _require_aware("clock()", now)
        return now


_HEADING = Prepared(
    select(
        outbox.c.agreement_id,
        outbox.c.agreement_version,
        outbox.c.exchange_type,
        outbox.c.recipient_state,
        outbox.c.purpose,
        outbox.c.receipt.is_not(None),
        outbox.c.request_id,
    ).where(outbox.c.message_id == bindparam("message_id"))
)
_ID_FOR_REFERENCE = Prepared(
    select(outbox.c.message_id).where(
        outbox.c.principal == bindparam("principal"),
        outbox.c.client_reference == bindparam("client_reference"),
    )
)
# Set once: on a message whose receipt (outcome) is still empty.
_RECORD_RECEIPT = keyed_update(outbox, outbox.c.receipt.is_(None), ("receipt", "updated_at"))
_RECORD_OUTCOME = keyed_update(
    outbox,
    outbox.c.outcome.is_(None),
    ("outcome", "outcome_at", "outcome_reason", "updated_at"),
)
# A leased transition: only by the worker holding an unexpired lease on it.
_IS_DUE = or_(
    and_(
        outbox.c.status == OutboxStatus.PENDING.value,
        outbox.c.next_attempt_at <= bindparam("now", type_=outbox.c.next_attempt_at.type),
    ),
    and_(
        outbox.c.status == OutboxStatus.IN_FLIGHT.value,
        outbox.c.lease_until <= bindparam("now", type_=outbox.c.lease_until.type),
    ),
)
_ANY_DUE = Prepared(select(outbox.c.message_id).where(_IS_DUE).limit(1))


@functools.cache
def _claim(limit: int) -> ReturningUpdate[Any]:
    """Lease the ``limit`` messages due first to ``:worker`` until ``:lease_until``."""
    due = (
        select(outbox.c.message_id)
        .where(_IS_DUE)
        .order_by(outbox.c.next_attempt_at, outbox.c.message_id)
        .limit(limit)
        # PostgreSQL only; SQLite's compiler leaves it out and BEGIN IMMEDIATE
        # serialises claimers instead.
        .with_for_update(skip_locked=True)
    )
    return (
        update(outbox)
        .where(outbox.c.message_id.in_(due.scalar_subquery()))
        .values(
            status=OutboxStatus.IN_FLIGHT.value,
            claimed_by=bindparam("worker"),
            lease_until=bindparam("lease_until", type_=outbox.c.lease_until.type),
            attempts=outbox.c.attempts + 1,
            updated_at=bindparam("now", type_=outbox.c.updated_at.type),
        )
        .returning(*outbox.c)
    )


_HELD_BY_WORKER = and_(
    outbox.c.status == OutboxStatus.IN_FLIGHT.value,
    outbox.c.claimed_by == bindparam("holding_worker"),
    outbox.c.lease_until > bindparam("held_at"),
)


def _row_identity(message_id: str) -> str:
    """What a sealed envelope is bound to: this table and this message."""
    return f"outbox:{message_id}"


def _new_row(item: OutboxItem, now: datetime, envelope: bytes) -> dict[str, object]:
    """The row queuing ``item``: the item's fields that are columns, and the state of a
    message never tried (:data:`_UNTRIED`)."""
    row = dict(_UNTRIED)
    row.update({name: getattr(item, name) for name in _ITEM_COLUMNS})
    row.update(envelope=envelope, next_attempt_at=item.not_before or now)
    row.update(created_at=now, updated_at=now)
    return row


_ITEM_COLUMNS = tuple(f.name for f in fields(OutboxItem) if f.name in outbox.c)
"""The fields of :class:`OutboxItem` stored as they are, in the column of their name."""
_UNTRIED: dict[str, object] = dict.fromkeys(outbox.c.keys()) | {
    "status": OutboxStatus.PENDING.value,
    "attempts": 0,
}
"""A message never tried: pending, no attempt, and every column its item does not give
empty (NULL) until a later stage sets it."""


def _require_text(name: str, value: str, max_length: int) -> None:
    if not value or len(value) > max_length:
        raise ValueError(f"{name} must be 1 to {max_length} characters")


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
