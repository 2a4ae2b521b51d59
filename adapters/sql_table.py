"""The registry adapter that writes each update into an interface table the registry reads.

The table ``pouch_inbound_updates`` is the registry's interface, not part of the
gateway's own schema: it lives in the registry's database, and the adapter creates it
on first use when it is missing. One row per message id:

========================  =================================================================
``message_id``            primary key; writing the same id again changes nothing
``sender_state``          ISO 3166-1 alpha-2 code of the partner state
``agreement_id``          the agreement the update travelled under
``purpose``               the declared purpose
``event_type``            e.g. ``CIVIL_EVENT_TYPE_BIRTH``
``payload_json``          the update in protobuf JSON, proto field names
``received_at``           when the gateway handed it over (UTC)
``status``                ``new``; the registry sets ``applied`` or ``rejected``
``reason_code``           the registry's stable reason code for a rejection
``decided_at``            the registry may record when it decided (optional)
``reported_at``           set by the gateway once it has recorded the decision
========================  =================================================================

The registry decides later, so :meth:`SqlTableAdapter.apply` answers "handed over",
which is ``RegistryOutcome(applied=True)``: the row is committed and the registry
owns it. The decision follows through :meth:`SqlTableAdapter.poll_outcomes`, which
lists decided rows not yet reported; the gateway records them and then calls
:meth:`SqlTableAdapter.acknowledge_outcomes`, so a crash in between reports a decision
again rather than losing it.

Database failures leave as :class:`RegistryUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum

from google.protobuf.json_format import MessageToDict
from sqlalchemy import (
    CHAR,
    CheckConstraint,
    Column,
    Engine,
    Index,
    MetaData,
    String,
    Table,
    Text,
    exc,
    inspect,
    select,
    update,
)

from adapters.base import (
    APPLIED,
    InboundUpdate,
    RegistryDecision,
    RegistryOutcome,
    RegistryUnavailable,
)
from gateway.errors import StorageUnavailable
from gateway.store.engine import insert_unless_present, read_transaction, write_transaction
from gateway.store.tables import (
    AGREEMENT_ID_LENGTH,
    MESSAGE_ID_LENGTH,
    PURPOSE_LENGTH,
    UTCDateTime,
)
from pouch.v1 import civil_pb2

TABLE_NAME = "pouch_inbound_updates"


class UpdateStatus(StrEnum):
    NEW = "new"
    APPLIED = "applied"
    REJECTED = "rejected"


interface_metadata = MetaData()

inbound_updates = Table(
    TABLE_NAME,
    interface_metadata,
    Column("message_id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("sender_state", CHAR(2), nullable=False),
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), nullable=False),
    Column("purpose", String(PURPOSE_LENGTH), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload_json", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, server_default=UpdateStatus.NEW.value),
    Column("reason_code", String(64), nullable=False, server_default=""),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("reported_at", UTCDateTime, nullable=True),
    CheckConstraint(
        "status IN ('new', 'applied', 'rejected')", name="ck_pouch_inbound_updates_status"
    ),
    # The registry's work queue, and the gateway's search for unreported decisions.
    Index("ix_pouch_inbound_updates_status_received_at", "status", "received_at"),
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqlTableAdapter:
    """Hands updates over through ``pouch_inbound_updates`` in the registry's database."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _utc_now,
        dispose_on_close: bool = False,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._dispose_on_close = dispose_on_close
        self._table_ready = False
        self._table_lock = threading.Lock()

    async def apply(self, item: InboundUpdate) -> RegistryOutcome:
        """Commit the row (a stored id is left alone) and answer "handed over"."""
        await asyncio.to_thread(self._insert, item)
        return APPLIED

    async def poll_outcomes(self, limit: int = 100) -> Sequence[RegistryDecision]:
        return await asyncio.to_thread(self._decided, limit)

    async def acknowledge_outcomes(self, message_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self._mark_reported, tuple(message_ids))

    async def close(self) -> None:
        if self._dispose_on_close:
            await asyncio.to_thread(self._engine.dispose)

    def _insert(self, item: InboundUpdate) -> None:
        payload = MessageToDict(item.update, preserving_proto_field_name=True)
        statement = insert_unless_present(self._engine, inbound_updates).values(
            message_id=item.message_id,
            sender_state=item.sender_state,
            agreement_id=item.agreement_id,
            purpose=item.purpose,
            event_type=civil_pb2.CivilEventType.Name(item.update.event_type),
            payload_json=json.dumps(payload, ensure_ascii=False, sort_keys=True),
            received_at=self._clock(),
            status=UpdateStatus.NEW.value,
            reason_code="",
        )
        with self._registry_boundary():
            self._ensure_table()
            with write_transaction(self._engine) as conn:
                conn.execute(statement)

    def _decided(self, limit: int) -> tuple[RegistryDecision, ...]:
        if limit <= 0:
            raise ValueError("limit must be positive")
        table = inbound_updates
        query = (
            select(table.c.message_id, table.c.status, table.c.reason_code)
            .where(
                table.c.status.in_((UpdateStatus.APPLIED.value, UpdateStatus.REJECTED.value)),
                table.c.reported_at.is_(None),
            )
            .order_by(table.c.received_at, table.c.message_id)
            .limit(limit)
        )
        with self._registry_boundary():
            self._ensure_table()
            with read_transaction(self._engine) as conn:
                rows = conn.execute(query).all()
        return tuple(
            RegistryDecision(
                message_id=row.message_id,
                outcome=APPLIED
                if row.status == UpdateStatus.APPLIED.value
                else RegistryOutcome.rejected(row.reason_code or ""),
            )
            for row in rows
        )

    def _mark_reported(self, message_ids: tuple[str, ...]) -> None:
        if not message_ids:
            return
        statement = (
            update(inbound_updates)
            .where(
                inbound_updates.c.message_id.in_(message_ids),
                inbound_updates.c.status != UpdateStatus.NEW.value,
                inbound_updates.c.reported_at.is_(None),
            )
            .values(reported_at=self._clock())
        )
        with self._registry_boundary(), write_transaction(self._engine) as conn:
            conn.execute(statement)

    def _ensure_table(self) -> None:
        with self._table_lock:
            if self._table_ready:
                return
            try:
                interface_metadata.create_all(self._engine, checkfirst=True)
            except exc.DBAPIError:
                # Another gateway replica may have created it between check and create.
                if not inspect(self._engine).has_table(TABLE_NAME):
                    raise
            self._table_ready = True

    @contextmanager
    def _registry_boundary(self) -> Iterator[None]:
        try:
            yield
        except StorageUnavailable as e:
            raise RegistryUnavailable("registry database busy or unreachable") from e
        except exc.OperationalError as e:
            raise RegistryUnavailable("registry database busy or unreachable") from e
