"""What the exchange stages call to leave evidence: one method per kind of event.

Each method builds an :class:`~gateway.audit.entry.AuditEvent` from the stage's own
frozen results (never from a payload) and appends it to the log. Calls block on the
database, so they are made from worker threads, like the stages that make them. Given
``conn``, the entry is written in the caller's transaction (a group commit's unit), so
it commits with the change it records, or not at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from gateway.agreements.gate import AgreementInForce
from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.envelope import VerifiedEnvelope
from gateway.errors import PouchError
from gateway.policy.evaluate import MinimisedPayload


class AuditSink(Protocol):
    def append(self, events: Sequence[AuditEvent]) -> object: ...

    def append_within(self, conn: Connection, events: Sequence[AuditEvent]) -> None: ...


def payload_digest(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


_TOKEN = re.compile(r"^[\x21-\x7e]{1,200}$")
_STATE = re.compile(r"^[A-Z]{2}$")


def _safe(value: str | None) -> str | None:
    """A refused request's identifiers are untrusted: kept only if well-formed."""
    return value if value is not None and _TOKEN.match(value) else None


class AuditRecorder:
    def __init__(self, sink: AuditSink, *, clock: Callable[[], datetime]) -> None:
        self._sink = sink
        self._clock = clock

    def _append(self, conn: Connection | None, events: Sequence[AuditEvent]) -> None:
        if conn is None:
            self._sink.append(events)
        else:
            self._sink.append_within(conn, events)

    def record(
        self,
        event_kind: EventKind,
        decision: Decision,
        *,
        message_id: str | None = None,
        agreement_id: str | None = None,
        agreement_version: int | None = None,
        exchange_type: str | None = None,
        purpose: str | None = None,
        peer_state: str | None = None,
        principal: str | None = None,
        payload: bytes | None = None,
        reason_code: str | None = None,
        conn: Connection | None = None,
    ) -> None:
        self._append(
            conn,
            [
                AuditEvent(
                    time=self._clock(),
                    event_kind=event_kind,
                    decision=decision,
                    message_id=message_id,
                    agreement_id=agreement_id,
                    agreement_version=agreement_version,
                    exchange_type=exchange_type,
                    purpose=purpose,
                    peer_state=peer_state,
                    principal=principal,
                    payload_digest=payload_digest(payload) if payload is not None else None,
                    reason_code=reason_code,
                )
            ],
        )

    def submitted(
        self,
        *,
        message_id: str,
        agreement: AgreementInForce,
        principal: str,
        payload: bytes,
        minimised: MinimisedPayload,
        conn: Connection | None = None,
    ) -> None:
        """A local caller's exchange signed under ``agreement``, with the paths the
        policy removed or transformed."""
        self._append(
            conn,
            [
                AuditEvent(
                    time=self._clock(),
                    event_kind=EventKind.SUBMITTED,
                    decision=Decision.ACCEPTED,
                    message_id=message_id,
                    agreement_id=agreement.id,
                    agreement_version=agreement.version,
                    exchange_type=minimised.exchange_type,
                    purpose=minimised.purpose,
                    peer_state=agreement.partner_state,
                    principal=principal,
                    payload_digest=payload_digest(payload),
                    removed_paths=minimised.removed_paths,
                    transformed_paths=minimised.transformed_paths,
                )
            ],
        )

    def received(
        self,
        verified: VerifiedEnvelope,
        *,
        exchange_type: str,
        peer_state: str,
        duplicate: bool = False,
        conn: Connection | None = None,
    ) -> None:
        """A partner's message taken in, as its verified header names it (a duplicate
        of one already held: reason ``DUPLICATE``), in the unit that stores it."""
        header = verified.header
        self.record(
            EventKind.RECEIVED,
            Decision.ACCEPTED,
            message_id=header.message_id,
            agreement_id=header.agreement_id,
            agreement_version=header.agreement_version,
            exchange_type=exchange_type,
            purpose=header.purpose,
            peer_state=peer_state,
            payload=verified.payload,
            reason_code="DUPLICATE" if duplicate else None,
            conn=conn,
        )

    def refused(
        self,
        error: PouchError,
        *,
        exchange_type: str,
        peer_state: str | None = None,
        principal: str | None = None,
        message_id: str | None = None,
        agreement_id: str | None = None,
        removed_paths: Sequence[str] = (),
        conn: Connection | None = None,
    ) -> None:
        """A refusal: the reason code only, since messages may name what was refused."""
        self._append(
            conn,
            [
                AuditEvent(
                    time=self._clock(),
                    event_kind=EventKind.REFUSED,
                    decision=Decision.REFUSED,
                    message_id=_safe(message_id),
                    agreement_id=_safe(agreement_id),
                    exchange_type=exchange_type,
                    peer_state=peer_state if peer_state and _STATE.match(peer_state) else None,
                    principal=principal,
                    reason_code=error.reason,
                    removed_paths=tuple(removed_paths),
                )
            ],
        )
        error.audited = True
