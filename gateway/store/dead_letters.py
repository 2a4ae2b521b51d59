"""Messages given up on, both ways, read in one place for the operator.

A dead letter is a message a retry loop ended on, with the reason it ended: our own
outbound message the partner never took (``delivery``), and the partner's message our
registry never took (``handover``), whose decision the partner never took
(``acknowledgement``), or a case event our case system never heard of
(``case_event``). Each row says which, with whom, under which agreement, why, after
how many attempts, and when the message was stored; never a payload.

    letters = dead_letters(engine, own_state="AT", partner_state="BE", limit=100)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, select

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
