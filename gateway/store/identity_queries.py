"""The record of identity confirmations a gateway asked for or answered.

One row per query envelope, keyed by its message id, holding who asked whom under
which agreement and for which purpose, and the answer's result and document status:
flags, never a value of the claim or of the registry's record.

On the responding side :meth:`IdentityQueries.admit_inbound_within` is the replay
guard: storing the id and refusing one already stored is a single insert, atomic on
both engines, so a replayed query is never answered twice. Every method writes in the
caller's transaction (a group commit's unit), with the quota and audit entry it goes
with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, Engine, bindparam, insert, update

from gateway.errors import ReplayRejected
from gateway.store.engine import insert_unless_present
from gateway.store.prepared import Prepared
from gateway.store.tables import identity_queries

Direction = Literal["outbound", "inbound"]


@dataclass(frozen=True)
class IdentityQuery:
    message_id: str
    direction: Direction
    partner_state: str
    agreement_id: str
    purpose: str
    kind: str
    principal: str | None = None
    case_id: str | None = None


# Statements built once; each call gives only its parameters.
_INSERT = Prepared(insert(identity_queries), columns=identity_queries.c.keys())
_ANSWER = Prepared(
    update(identity_queries)
    .where(
        identity_queries.c.message_id == bindparam("answered_message_id"),
        identity_queries.c.answered_at.is_(None),
    )
    .values(
        result=bindparam("answer_result"),
        document_status=bindparam("answer_document_status"),
        reason_code=bindparam("answer_reason_code"),
        answered_at=bindparam("answer_at"),
    )
)


class IdentityQueries:
    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._admit = Prepared(
            insert_unless_present(engine, identity_queries).returning(
                identity_queries.c.message_id
            ),
            columns=identity_queries.c.keys(),
        )

    def _values(self, query: IdentityQuery) -> dict[str, object]:
        return {
            "message_id": query.message_id,
            "direction": query.direction,
            "partner_state": query.partner_state,
            "agreement_id": query.agreement_id,
            "purpose": query.purpose,
            "kind": query.kind,
            "principal": query.principal,
            "case_id": query.case_id,
            "created_at": self._clock(),
        }

    def record_outbound_within(self, conn: Connection, query: IdentityQuery) -> None:
        """A query this gateway sends (its id is a fresh UUID)."""
        if query.direction != "outbound":
            raise ValueError("record_outbound takes outbound queries")
        _INSERT.execute(conn, self._values(query))

    def admit_inbound_within(self, conn: Connection, query: IdentityQuery) -> None:
        """Store a partner's query id, or :class:`ReplayRejected` if seen before."""
        if query.direction != "inbound":
            raise ValueError("admit_inbound takes inbound queries")
        if not self._admit.rows(conn, self._values(query)):
            raise ReplayRejected("this query's message id was already answered")

    def record_answer_within(
        self,
        conn: Connection,
        message_id: str,
        *,
        result: str | None,
        document_status: str | None,
        reason_code: str | None = None,
    ) -> None:
        """The answer given or received, or the reason there was none; once."""
        _ANSWER.execute(
            conn,
            {
                "answered_message_id": message_id,
                "answer_result": result,
                "answer_document_status": document_status,
                "answer_reason_code": reason_code,
                "answer_at": self._clock(),
            },
        )
