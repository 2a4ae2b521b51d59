"""Messages given up on, both ways, read in one place for the operator.

A dead letter is a message a retry loop ended on, with the reason it ended: our own
outbound message the partner never took (``delivery``), and the partner's message our
registry never took (``handover``), whose decision the partner never took
(``acknowledgement``), or a case event our case system never heard of
(``case_event``). Each row says which, with whom, under which agreement, why, after
how many attempts, and when the message was stored; never a payload.

Only an outbound dead letter at the delivery stage can be put back in the outbox
(:func:`held_for_resend_within`, then :func:`requeue_within`, in one write transaction):

* the message must be dead (``NOT_DEAD_LETTER``), ours (a partner's message, or a case
  event, is ``NOT_RESENDABLE``), hold its envelope (``PAYLOAD_PURGED``) and carry no
  sign that the partner took it: a delivery receipt, a registry outcome or a delivery
  time (``ALREADY_DELIVERED``). A message the partner signed for is never sent again;
* the requeue is one conditional update that checks all of that again, so two operators
  (or replicas) resending at once requeue the message once; the other is told
  ``NOT_DEAD_LETTER``.

    letters = dead_letters(engine, own_state="AT", partner_state="BE", limit=100)
    held = held_for_resend_within(conn, message_id)          # or a Rejected
    requeue_within(conn, message_id, now=now, deadline_at=now + deadline)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, select, update

from gateway.errors import NotFound, Rejected
from gateway.store.engine import storage_boundary
from gateway.store.tables import (
    OutboxStatus,
    case_events,
    inbox,
    outbox,
    representation_cases,
)


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    direction: str  # "outbound" or "inbound"
    stage: str  # "delivery", "handover", "acknowledgement" or "case_event"
    partner_state: str
    agreement_id: str
    exchange_type: str
    reason_code: str
    attempts: int
    stored_at: datetime
    case_id: str | None = None


def dead_letters(
    engine: Engine, *, own_state: str, partner_state: str | None, limit: int
) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, newest stored first, optionally with one partner;
    ``own_state`` tells a case's partner from us."""
    with storage_boundary(), engine.connect() as conn:
        outbound = conn.execute(_outbox_query(partner_state, limit)).all()
        inbound = conn.execute(_inbox_query(partner_state, limit)).all()
        events = conn.execute(_case_query(partner_state, limit)).all()
    found = [
        *(
            DeadLetter(
                message_id=r.message_id,
                direction="outbound",
                stage="delivery",
                partner_state=r.recipient_state,
                agreement_id=r.agreement_id,
                exchange_type=r.exchange_type,
                reason_code=r.last_error_reason or "",
                attempts=int(r.attempts),
                stored_at=r.created_at,
            )
            for r in outbound
        ),
        *(
            DeadLetter(
                message_id=r.message_id,
                direction="inbound",
                stage="handover" if r.handed_over_at is None else "acknowledgement",
                partner_state=r.sender_state,
                agreement_id=r.agreement_id,
                exchange_type=r.exchange_type,
                reason_code=r.dead_reason or "",
                attempts=int(r.attempts),
                stored_at=r.received_at,
            )
            for r in inbound
        ),
        *(
            DeadLetter(
                message_id=r.message_id or "",
                direction="inbound",
                stage="case_event",
                partner_state=(
                    r.representing_state if r.requesting_state == own_state else r.requesting_state
                ),
                agreement_id=r.agreement_id,
                exchange_type="representation",
                reason_code=r.registry_dead_reason or "",
                attempts=int(r.registry_attempts),
                stored_at=r.occurred_at,
                case_id=r.case_id,
            )
            for r in events
        ),
    ]
    found.sort(key=lambda d: (d.stored_at, d.message_id), reverse=True)
    return found[:limit]


def _outbox_query(partner_state: str | None, limit: int) -> Select[Any]:
    query = select(
        outbox.c.message_id,
        outbox.c.recipient_state,
        outbox.c.agreement_id,
        outbox.c.exchange_type,
        outbox.c.last_error_reason,
        outbox.c.attempts,
        outbox.c.created_at,
    ).where(outbox.c.status == OutboxStatus.DEAD.value)
    if partner_state is not None:
        query = query.where(outbox.c.recipient_state == partner_state)
    return query.order_by(outbox.c.created_at.desc()).limit(limit)


def _inbox_query(partner_state: str | None, limit: int) -> Select[Any]:
    query = select(
        inbox.c.message_id,
        inbox.c.sender_state,
        inbox.c.agreement_id,
        inbox.c.exchange_type,
        inbox.c.dead_reason,
        inbox.c.attempts,
        inbox.c.received_at,
        inbox.c.handed_over_at,
    ).where(inbox.c.dead_reason.is_not(None))
    if partner_state is not None:
        query = query.where(inbox.c.sender_state == partner_state)
    return query.order_by(inbox.c.received_at.desc()).limit(limit)


def _case_query(partner_state: str | None, limit: int) -> Select[Any]:
    cases = representation_cases
    query = (
        select(
            case_events.c.message_id,
            case_events.c.case_id,
            case_events.c.registry_dead_reason,
            case_events.c.registry_attempts,
            case_events.c.occurred_at,
            cases.c.requesting_state,
            cases.c.representing_state,
            cases.c.agreement_id,
        )
        .join(cases, cases.c.case_id == case_events.c.case_id)
        .where(case_events.c.registry_dead_reason.is_not(None))
    )
    if partner_state is not None:
        query = query.where(
            (cases.c.requesting_state == partner_state)
            | (cases.c.representing_state == partner_state)
        )
    return query.order_by(case_events.c.occurred_at.desc()).limit(limit)


NOT_DEAD_LETTER = "NOT_DEAD_LETTER"
NOT_RESENDABLE = "NOT_RESENDABLE"
ALREADY_DELIVERED = "ALREADY_DELIVERED"
PAYLOAD_PURGED = "PAYLOAD_PURGED"


@dataclass(frozen=True)
class HeldDeadLetter:
    """An outbound dead letter that may go again: what its agreement check, its audit
    entry and its event line need; never the envelope."""

    message_id: str
    agreement_id: str
    agreement_version: int
    exchange_type: str
    recipient_state: str
    purpose: str
    kind: str | None
    reason_code: str


_UNTAKEN = and_(
    outbox.c.receipt.is_(None),
    outbox.c.outcome.is_(None),
    outbox.c.delivered_at.is_(None),
)
"""No sign the partner ever took the message: no receipt, outcome or delivery time."""
_UNDELIVERED_DEAD = and_(
    outbox.c.status == OutboxStatus.DEAD.value, outbox.c.envelope.is_not(None), _UNTAKEN
)
"""Dead, its envelope held, and never taken."""


def held_for_resend_within(conn: Connection, message_id: str) -> HeldDeadLetter:
    """The dead letter ``message_id`` if it may be resent, else the :class:`Rejected`
    (or :class:`NotFound`) saying why; in the caller's transaction."""
    row = conn.execute(
        select(
            outbox.c.agreement_id,
            outbox.c.agreement_version,
            outbox.c.exchange_type,
            outbox.c.recipient_state,
            outbox.c.purpose,
            outbox.c.kind,
            outbox.c.last_error_reason,
            outbox.c.status,
            outbox.c.envelope.is_not(None).label("held"),
            _UNTAKEN.label("untaken"),
        ).where(outbox.c.message_id == message_id)
    ).one_or_none()
    if row is None:
        raise _inbound_or_unknown(conn, message_id)
    if row.status != OutboxStatus.DEAD.value:
        raise Rejected(f"the message is {row.status}, not a dead letter", reason=NOT_DEAD_LETTER)
    if not row.untaken:
        raise Rejected(
            "the partner signed for this message: it is never sent again",
            reason=ALREADY_DELIVERED,
        )
    if not row.held:
        raise Rejected(
            "the message's payload was purged: nothing is left to send", reason=PAYLOAD_PURGED
        )
    return HeldDeadLetter(
        message_id=message_id,
        agreement_id=row.agreement_id,
        agreement_version=int(row.agreement_version),
        exchange_type=row.exchange_type,
        recipient_state=row.recipient_state,
        purpose=row.purpose,
        kind=row.kind,
        reason_code=row.last_error_reason or "",
    )


def requeue_within(
    conn: Connection, message_id: str, *, now: datetime, deadline_at: datetime
) -> bool:
    """Put the dead letter back to pending, due ``now``, untried, with a new deadline;
    ``False`` if it is no longer an undelivered dead letter with its envelope."""
    statement = (
        update(outbox)
        .where(outbox.c.message_id == message_id, _UNDELIVERED_DEAD)
        .values(
            status=OutboxStatus.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            deadline_at=deadline_at,
            claimed_by=None,
            lease_until=None,
            last_error_reason=None,
            updated_at=now,
        )
    )
    return conn.execute(statement).rowcount == 1


def _inbound_or_unknown(conn: Connection, message_id: str) -> Rejected:
    """Why an id not in the outbox cannot be resent: a partner's message, or unknown."""
    received = conn.execute(
        select(inbox.c.message_id).where(inbox.c.message_id == message_id)
    ).first()
    event = conn.execute(
        select(case_events.c.case_id).where(case_events.c.message_id == message_id).limit(1)
    ).first()
    if received is not None or event is not None:
        return Rejected(
            "a partner's message is not ours to send: only our own messages given up at "
            "the delivery stage can be resent",
            reason=NOT_RESENDABLE,
        )
    return NotFound("no message has this id")
