"""Putting one of our dead letters back in the outbox, for an operator, stage by stage.

    held      -> HeldDeadLetter     (ours, dead at the delivery stage, its envelope held,
                                     no sign the partner took it: gateway.store.dead_letters)
    agreement -> AgreementInForce   (refused as a submission would be; an agreement
                                     notice, which tells the partner the agreement left
                                     force, needs none, as in the dispatcher)
    requeue   -> pending            (due now, untried, a fresh deadline from [delivery]),
                                     in one group-committed unit with the agreement's
                                     lifecycle read again and the admin action's audit
                                     entry naming who acted
    wake      -> the dispatcher claims it without waiting for its next poll

Every refusal is audited as an admin action refused, with its reason code, and the
resend as an admin action (``DEAD_LETTER_RESENT``); each is one event line.

Why the partner applies a resent message at most once:

* it keeps its message id and its payload. The partner's inbox stores an id once: the
  same id with the same payload (a message it already holds, whose receipt never
  reached us) is answered with a fresh ``DUPLICATE`` receipt and never handed to its
  registry again; that receipt then records the delivery here;
* an envelope carries no expiry field: what ages is its signature's creation time,
  which the receiver holds to its clock window. The dispatcher sends the stored
  envelope only on a first attempt while that signature is younger than
  ``resign_after_seconds``, and otherwise signs the same header and payload afresh (a
  new creation time, the signing key in use today). A message dead for days is
  therefore re-signed, not refused as stale, and still the same message;
* a message the partner signed for (a receipt, an outcome or a delivery time recorded)
  is refused with ``ALREADY_DELIVERED``; the requeue re-checks that in its update, so
  two operators resending at once requeue it once.

Usage::

    resend = DeadLetterResend(context, wake=dispatcher.wake.set)
    status = await resend.resend(principal.acting, message_id)   # "pending"
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import Connection, Engine

from gateway.agreements.gate import AgreementInForce
from gateway.audit.entry import Decision, EventKind
from gateway.delivery.context import ExchangeContext
from gateway.errors import AgreementRejected, PouchError, Rejected
from gateway.events import Event, emit
from gateway.store.dead_letters import (
    NOT_DEAD_LETTER,
    HeldDeadLetter,
    held_for_resend_within,
    requeue_within,
)
from gateway.store.engine import read_transaction
from gateway.store.tables import OutboxStatus

RESENT = "DEAD_LETTER_RESENT"
"""The reason code of the admin action's audit entry."""
_NOTICE = "agreement_notice"


class DeadLetterResend:
    """``GatewayService.ResendDeadLetter``: one dead letter back to the dispatcher."""

    def __init__(
        self, context: ExchangeContext, engine: Engine, wake: Callable[[], object]
    ) -> None:
        self._context = context
        self._engine = engine
        self._wake = wake

    async def resend(self, principal: str, message_id: str) -> str:
        """The message's status once it is back in the outbox (``pending``), or the
        refusal, audited as the admin action of ``principal``."""
        try:
            held = await asyncio.to_thread(self._held, message_id)
            agreement = await asyncio.to_thread(self._agreement, held)
            refusal = await self._context.group.write(self._requeue(principal, held, agreement))
            if refusal is not None:
                raise refusal
        except Rejected as e:
            await asyncio.to_thread(self._refused, principal, message_id, e)
            emit(Event.REFUSED, message_id=message_id, reason=e.reason)
            raise
        self._wake()
        self._context.metrics.dead_letters_resent.labels(held.recipient_state).inc()
        emit(
            Event.DEAD_LETTER_RESENT,
            message_id=held.message_id,
            agreement_id=held.agreement_id,
            agreement_version=held.agreement_version,
            partner=held.recipient_state,
            exchange_type=held.exchange_type,
            kind=held.kind,
            reason=held.reason_code or None,
        )
        return OutboxStatus.PENDING.value

    def _held(self, message_id: str) -> HeldDeadLetter:
        with read_transaction(self._engine) as conn:
            return held_for_resend_within(conn, message_id)

    def _agreement(self, held: HeldDeadLetter) -> AgreementInForce | None:
        if held.exchange_type == _NOTICE:
            return None
        return self._context.gate.prepare(held.agreement_id, held.recipient_state)

    def _requeue(
        self, principal: str, held: HeldDeadLetter, agreement: AgreementInForce | None
    ) -> Callable[[Connection], PouchError | None]:
        context = self._context

        def unit(conn: Connection) -> PouchError | None:
            # A refusal is returned, not raised: it costs the batch's other units nothing.
            if agreement is not None:
                try:
                    context.gate.confirm_within(conn, agreement)
                except AgreementRejected as e:
                    return e
            now = context.clock()
            deadline = now + context.delivery_deadline
            if not requeue_within(conn, held.message_id, now=now, deadline_at=deadline):
                return Rejected(
                    "the message changed meanwhile: it is no longer a dead letter",
                    reason=NOT_DEAD_LETTER,
                )
            context.audit.record(
                EventKind.ADMIN_ACTION,
                Decision.ACCEPTED,
                message_id=held.message_id,
                agreement_id=held.agreement_id,
                agreement_version=held.agreement_version,
                exchange_type=held.exchange_type,
                purpose=held.purpose,
                peer_state=held.recipient_state,
                principal=principal,
                reason_code=RESENT,
                conn=conn,
            )
            return None

        return unit

    def _refused(self, principal: str, message_id: str, error: Rejected) -> None:
        self._context.audit.record(
            EventKind.ADMIN_ACTION,
            Decision.REFUSED,
            message_id=message_id,
            principal=principal,
            reason_code=error.reason,
        )
        error.audited = True
