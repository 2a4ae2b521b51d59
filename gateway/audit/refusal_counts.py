"""Recent refusals by reason code, read from the audit log for the operator.

A refusal is an audit entry whose decision is ``refused`` (a caller's request, a
partner's message, an admin action the gateway would not take). The operator sees how
many of each reason code were recorded since a moment, and when the latest was;
never which message, principal or partner: only codes, counts and times.

Guarantees:

* the read is bounded by time through the index on ``audit_entries.time``: it costs
  what the window holds, not what the log ever held;
* at most ``limit`` reason codes come back, the most frequent first (ties by code), so
  an attack that invents reason codes cannot grow the answer.

Usage::

    counts = recent_refusals(engine, since=now - timedelta(hours=24))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from gateway.audit.entry import Decision
from gateway.store.engine import read_transaction
from gateway.store.tables import audit_entries

RECENT_REASONS = 100
"""The most reason codes one answer names."""


@dataclass(frozen=True)
class RefusalCount:
    """How many refusals carried one reason code, and when the latest was recorded."""

    reason_code: str
    count: int
    last_at: datetime


def recent_refusals(
    engine: Engine, *, since: datetime, limit: int = RECENT_REASONS
) -> list[RefusalCount]:
    """The refusals recorded at or after ``since``, counted by reason code, most first.

    Blocks; the async server calls it through ``asyncio.to_thread``.
    """
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    counted = func.count().label("n")
    query = (
        select(audit_entries.c.reason_code, counted, func.max(audit_entries.c.time))
        .where(
            audit_entries.c.time >= since,
            audit_entries.c.decision == Decision.REFUSED.value,
        )
        .group_by(audit_entries.c.reason_code)
        .order_by(counted.desc(), audit_entries.c.reason_code)
        .limit(limit)
    )
    with read_transaction(engine) as conn:
        rows = conn.execute(query).all()
    return [RefusalCount(reason or "", int(n), last) for reason, n, last in rows]
