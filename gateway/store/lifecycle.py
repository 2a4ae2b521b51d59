"""Which agreement versions are suspended or terminated, as recorded by this gateway.

Guarantees:

* An agreement version with no record here is as its signed document says. A record
  only ever makes it less usable: ``suspended``, then ``terminated``, which is final;
  the one way back is :meth:`AgreementLifecycleStore.lift_suspension`, by the state that
  suspended it (the audit log keeps both acts).
* :meth:`AgreementLifecycleStore.record` is one atomic statement and idempotent: the
  same notice delivered twice, or by two replicas at once, changes the row once. A
  termination overrides a suspension; a suspension arriving after a termination (late,
  replayed, or out of order) changes nothing. The first record of a status is kept,
  with who changed it, when, why, and the signed notice that carried it.

Every method blocks; the async server calls them through ``asyncio.to_thread``.
Database failures leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    and_,
    bindparam,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from gateway.store.engine import is_postgresql, read_transaction, write_transaction
from gateway.store.prepared import Prepared
from gateway.store.tables import (
    AGREEMENT_ID_LENGTH,
    MESSAGE_ID_LENGTH,
    REASON_CODE_LENGTH,
    LifecycleStatus,
    agreement_lifecycle,
)

__all__ = ["AgreementLifecycleStore", "LifecycleRecord", "LifecycleStatus"]

_STATE_CODE = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True)
class LifecycleRecord:
    """The recorded status of one agreement version; ``changed_at`` is aware UTC."""

    agreement_id: str
    agreement_version: int
    status: LifecycleStatus
    changed_at: datetime
    changed_by_state: str
    reason_code: str
    message_id: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> LifecycleRecord:
        values = dict(row)
        values["status"] = LifecycleStatus(values["status"])
        return cls(**values)


_THIS_VERSION = (
    agreement_lifecycle.c.agreement_id == bindparam("agreement_id"),
    agreement_lifecycle.c.agreement_version == bindparam("agreement_version"),
)
_STATUS_OF = select(agreement_lifecycle).where(*_THIS_VERSION)
_RECORDED = Prepared(select(agreement_lifecycle.c.status).where(*_THIS_VERSION))


class AgreementLifecycleStore:
    """Suspensions and terminations of agreement versions; replicas share one store."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def record(
        self,
        agreement_id: str,
        version: int,
        status: LifecycleStatus | str,
        *,
        by_state: str,
        reason_code: str,
        message_id: str | None = None,
    ) -> bool:
        """Record ``status`` for the version; ``True`` if that changed what is stored."""
        status = LifecycleStatus(status)
        _require_text("agreement_id", agreement_id, AGREEMENT_ID_LENGTH)
        _require_text("reason_code", reason_code, REASON_CODE_LENGTH)
        if message_id is not None:
            _require_text("message_id", message_id, MESSAGE_ID_LENGTH)
        if version < 0:
            raise ValueError("version must not be negative")
        if not _STATE_CODE.fullmatch(by_state):
            raise ValueError("by_state must be a two-letter upper-case state code")
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("clock() must return a timezone-aware datetime")
        row = {
            "agreement_id": agreement_id,
            "agreement_version": version,
            "status": status.value,
            "changed_at": now,
            "changed_by_state": by_state,
            "reason_code": reason_code,
            "message_id": message_id,
        }
        with write_transaction(self._engine) as conn:
            changed = conn.execute(self._upsert(row).returning(agreement_lifecycle.c.status))
            return changed.first() is not None

    def lift_suspension(self, agreement_id: str, version: int, *, by_state: str) -> bool:
        """Remove the version's suspension if ``by_state`` declared it; True if one was
        lifted. A termination, or a suspension by the other party, stays."""
        statement = delete(agreement_lifecycle).where(
            agreement_lifecycle.c.agreement_id == agreement_id,
            agreement_lifecycle.c.agreement_version == version,
            agreement_lifecycle.c.status == LifecycleStatus.SUSPENDED.value,
            agreement_lifecycle.c.changed_by_state == by_state,
        )
        with write_transaction(self._engine) as conn:
            return conn.execute(statement).rowcount > 0

    def status_of(self, agreement_id: str, version: int) -> LifecycleRecord | None:
        """The record for this version, or ``None`` if it was never suspended or terminated."""
        with read_transaction(self._engine) as conn:
            return self.status_within(conn, agreement_id, version)

    @staticmethod
    def status_within(conn: Connection, agreement_id: str, version: int) -> LifecycleRecord | None:
        """:meth:`status_of` in the caller's transaction: a write unit that records an
        exchange reads it there, so no exchange commits after a suspension committed."""
        parameters = {"agreement_id": agreement_id, "agreement_version": version}
        if not _RECORDED.rows(conn, parameters):  # every exchange asks; almost none find one
            return None
        row = conn.execute(_STATUS_OF, parameters).mappings().one_or_none()
        return None if row is None else LifecycleRecord.from_row(row)

    def all(self) -> list[LifecycleRecord]:
        """Every record, by agreement id and version."""
        query = select(agreement_lifecycle).order_by(
            agreement_lifecycle.c.agreement_id, agreement_lifecycle.c.agreement_version
        )
        with read_transaction(self._engine) as conn:
            return [LifecycleRecord.from_row(row) for row in conn.execute(query).mappings()]

    def _upsert(self, row: dict[str, object]) -> Insert:
        # A new row is stored; an existing one changes only from suspended to terminated.
        if is_postgresql(self._engine):
            pg = postgresql.insert(agreement_lifecycle).values(row)
            return pg.on_conflict_do_update(
                index_elements=[
                    agreement_lifecycle.c.agreement_id,
                    agreement_lifecycle.c.agreement_version,
                ],
                set_=_escalation(pg.excluded),
                where=_escalates(pg.excluded),
            )
        lite = sqlite.insert(agreement_lifecycle).values(row)
        return lite.on_conflict_do_update(
            index_elements=[
                agreement_lifecycle.c.agreement_id,
                agreement_lifecycle.c.agreement_version,
            ],
            set_=_escalation(lite.excluded),
            where=_escalates(lite.excluded),
        )


def _escalation(excluded: ReadOnlyColumnCollection[str, Any]) -> dict[str, Any]:
    return {
        name: excluded[name]
        for name in ("status", "changed_at", "changed_by_state", "reason_code", "message_id")
    }


def _escalates(excluded: ReadOnlyColumnCollection[str, Any]) -> ColumnElement[bool]:
    return and_(
        agreement_lifecycle.c.status == LifecycleStatus.SUSPENDED.value,
        excluded["status"] == LifecycleStatus.TERMINATED.value,
    )


def _require_text(name: str, value: str, max_length: int) -> None:
    if not value or len(value) > max_length:
        raise ValueError(f"{name} must be 1 to {max_length} characters")
