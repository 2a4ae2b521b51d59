"""The one way a stage leaves evidence of a refusal on its way to the caller.

``with audit_refusals(...)`` (blocking code, in a worker thread) or ``async with`` (on the
event loop: the write leaves it) around a request's stages: a :class:`~gateway.errors.Rejected`
leaving the block is audited as a refusal with its reason code only, an
:class:`~gateway.errors.Unavailable` as a failure, and either is one ``refused`` event line;
then it goes on to the caller unchanged. An error an earlier stage already audited is not
audited twice. Anything else is a bug and passes through untouched.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

from gateway.audit.entry import Decision, EventKind
from gateway.audit.recorder import AuditRecorder
from gateway.errors import PouchError, Rejected
from gateway.events import Event, emit


@dataclass(frozen=True)
class RefusalContext:
    """What a refusal is recorded under: the request's own identifiers, as the caller
    gave them (the recorder keeps only well-formed ones)."""

    exchange_type: str
    principal: str
    peer_state: str | None = None
    agreement_id: str | None = None


class audit_refusals:
    """Audits and logs a :class:`PouchError` leaving the block; see the module."""

    def __init__(self, audit: AuditRecorder, context: RefusalContext) -> None:
        self._audit = audit
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(error, PouchError):
            self._emit(error)
            self._record(error)

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(error, PouchError):
            self._emit(error)
            await asyncio.to_thread(self._record, error)

    def _emit(self, error: PouchError) -> None:
        emit(
            Event.REFUSED,
            agreement_id=self._context.agreement_id,
            partner=self._context.peer_state,
            exchange_type=self._context.exchange_type,
            reason=error.reason,
        )

    def _record(self, error: PouchError) -> None:
        if error.audited:
            return
        context = self._context
        if isinstance(error, Rejected):
            self._audit.refused(
                error,
                exchange_type=context.exchange_type,
                peer_state=context.peer_state,
                principal=context.principal,
                agreement_id=context.agreement_id,
            )
            return
        self._audit.record(
            EventKind.FAILED,
            Decision.FAILED,
            exchange_type=context.exchange_type,
            principal=context.principal,
            reason_code=error.reason,
        )
        error.audited = True
