"""Per-agreement, per-direction, per-purpose daily quotas, counted in the database.

Guarantees:

* :meth:`QuotaLedger.consume_within` is one statement, ``INSERT ... ON CONFLICT DO UPDATE SET
  used = used + :amount WHERE used + :amount <= :limit RETURNING used``, on both
  engines. The database decides, not the process: however many threads, processes or
  replicas consume against one database, the units allowed on one day never add up to
  more than the limit. A refusal writes nothing.
* A day is the UTC calendar day of the injected clock; a new day starts from zero, and
  earlier days' counts stay as they were.
* :meth:`QuotaLedger.release` gives units back to the day they were taken from, never
  below zero, for a request a later stage refused after its quota was consumed.

The quota itself (the limit) belongs to the agreement and is passed in on each call.
Every method blocks; the async server calls them through ``asyncio.to_thread``.
Database failures leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from gateway.errors import QuotaRejected
from gateway.store.engine import is_postgresql, read_transaction, write_transaction
from gateway.store.prepared import Prepared
from gateway.store.tables import AGREEMENT_ID_LENGTH, PURPOSE_LENGTH, quota_usage

__all__ = ["QuotaDecision", "QuotaLedger"]

_DIRECTION = re.compile(r"[A-Z]{2}->[A-Z]{2}")
# UPSERT with RETURNING on SQLite.
_MIN_SQLITE = (3, 35, 0)


@dataclass(frozen=True)
class QuotaDecision:
    """Whether a request fits its quota; ``used`` counts the day's units after the decision."""

    allowed: bool
    used: int
    limit: int
    day: date


@dataclass(frozen=True)
class _Key:
    agreement_id: str
    direction: str
    purpose: str

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("agreement_id", self.agreement_id, AGREEMENT_ID_LENGTH),
            ("purpose", self.purpose, PURPOSE_LENGTH),
        ):
            if not value or len(value) > limit:
                raise ValueError(f"{name} must be 1 to {limit} characters")
        if not _DIRECTION.fullmatch(self.direction):
            raise ValueError("direction must name sender and receiver, as in 'AT->BE'")

    def matches(self, day: date) -> ColumnElement[bool]:
        return and_(
            quota_usage.c.agreement_id == self.agreement_id,
            quota_usage.c.direction == self.direction,
            quota_usage.c.purpose == self.purpose,
            quota_usage.c.day == day,
        )


class QuotaLedger:
    """The daily quota counters of one gateway; replicas sharing a database share them."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        if engine.dialect.name == "sqlite" and sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} lacks UPSERT with RETURNING: need 3.35 or later"
            )
        self._engine = engine
        self._clock = clock
        self._take_statement = Prepared(_take_statement(is_postgresql(engine)))

    def consume_within(
        self,
        conn: Connection,
        agreement_id: str,
        direction: str,
        purpose: str,
        *,
        limit: int,
        amount: int = 1,
    ) -> QuotaDecision:
        """Take ``amount`` units of today's ``limit`` if they fit, on ``conn`` inside the
        caller's write transaction (a group commit's unit); otherwise take nothing."""
        key = _Key(agreement_id, direction, purpose)
        if limit < 0:
            raise ValueError("limit must not be negative")
        if amount < 1:
            raise ValueError("amount must be at least 1")
        day = self._today()
        if amount > limit:
            # Refused before the statement: its INSERT branch has no limit check.
            current = conn.execute(_used_on(key, day)).scalar_one_or_none()
            return QuotaDecision(False, current or 0, limit, day)
        taken = self._take_statement.rows(conn, self._take(key, day, limit, amount))
        if taken:
            return QuotaDecision(True, int(taken[0][0]), limit, day)
        current = conn.execute(_used_on(key, day)).scalar_one_or_none()
        return QuotaDecision(False, current or 0, limit, day)

    def take_within(
        self,
        conn: Connection,
        agreement_id: str,
        direction: str,
        purpose: str,
        *,
        limit: int | None,
        what: str,
    ) -> date | None:
        """One unit of today's ``limit`` in the caller's write transaction (a group commit's
        unit), or :class:`QuotaRejected`; the day it counted on.

        No limit (the agreement sets none for the purpose) takes nothing. ``what`` names
        the unit in the refusal (``"identity confirmations"``).
        """
        if limit is None:
            return None
        decision = self.consume_within(conn, agreement_id, direction, purpose, limit=limit)
        if not decision.allowed:
            raise QuotaRejected(
                f"the daily quota of {limit} {what} for this purpose under agreement "
                f"{agreement_id!r} is used up",
                reason="QUOTA_EXHAUSTED",
            )
        return decision.day

    def release(
        self, agreement_id: str, direction: str, purpose: str, *, day: date, amount: int = 1
    ) -> bool:
        """Give ``amount`` units back to ``day`` (from :attr:`QuotaDecision.day`).

        ``False``, and nothing changes, if fewer than ``amount`` units are in use that day.
        """
        key = _Key(agreement_id, direction, purpose)
        if amount < 1:
            raise ValueError("amount must be at least 1")
        give_back = (
            update(quota_usage)
            .where(key.matches(day), quota_usage.c.used >= amount)
            .values(used=quota_usage.c.used - amount)
        )
        with write_transaction(self._engine) as conn:
            return conn.execute(give_back).rowcount == 1

    def usage(
        self, agreement_id: str, direction: str, purpose: str, *, day: date | None = None
    ) -> int:
        """Units used on ``day`` (today by default)."""
        key = _Key(agreement_id, direction, purpose)
        return self._used(key, self._today() if day is None else day)

    def _used(self, key: _Key, day: date) -> int:
        with read_transaction(self._engine) as conn:
            return conn.execute(_used_on(key, day)).scalar_one_or_none() or 0

    @staticmethod
    def _take(key: _Key, day: date, limit: int, amount: int) -> dict[str, Any]:
        """The parameters of :data:`_take_statement` for one step."""
        return {
            "agreement_id": key.agreement_id,
            "direction": key.direction,
            "purpose": key.purpose,
            "day": day,
            "amount": amount,
            "limit": limit,
        }

    def _today(self) -> date:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("clock() must return a timezone-aware datetime")
        return now.astimezone(UTC).date()


def _used_on(key: _Key, day: date) -> Select[int]:
    return select(quota_usage.c.used).where(key.matches(day))


def _take_statement(postgres: bool) -> ReturningInsert[Any]:
    """One step of a counter, built once: ``amount`` units if ``used + amount <= limit``.

    ``RETURNING`` gives the new count, or no row when the step would pass the limit.
    """
    c = quota_usage.c
    amount = bindparam("amount", type_=c.used.type)
    insert = (postgresql.insert if postgres else sqlite.insert)(quota_usage)
    return (
        insert.values(
            agreement_id=bindparam("agreement_id", type_=c.agreement_id.type),
            direction=bindparam("direction", type_=c.direction.type),
            purpose=bindparam("purpose", type_=c.purpose.type),
            day=bindparam("day", type_=c.day.type),
            used=amount,
        )
        .on_conflict_do_update(
            index_elements=[c.agreement_id, c.direction, c.purpose, c.day],
            set_={"used": c.used + amount},
            where=c.used + amount <= bindparam("limit", type_=c.used.type),
        )
        .returning(c.used)
    )
