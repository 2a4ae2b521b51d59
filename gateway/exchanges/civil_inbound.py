"""Receiving a partner's civil-record update, after the receiver verified its envelope.

agreement -> AgreementInForce    (signed by both, and the same text: digest pinned;
                                  both signatures present if it asks for hybrid)
payload   -> strict JSON         (gateway.envelope.payload)
policy    -> MinimisedPayload    (re-evaluated: a field we should not hold is refused)
fields    -> the sender's rules  (real dates, plausible years, string and list limits)
inbox     -> stored exactly once, with the agreement still in force here, one unit of
             the purpose's daily allowance in our direction and the audit entry, in
             one group-committed transaction
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from gateway.agreements.gate import ExchangeUnit
from gateway.delivery.context import ExchangeContext
from gateway.envelope import VerifiedEnvelope
from gateway.envelope.payload import decode_payload
from gateway.exchanges.civil_validation import validate_received_update
from gateway.policy.catalogue import kind_name
from gateway.policy.evaluate import LegalBasisFlags, evaluate
from gateway.store.group_commit import WriteUnit
from gateway.store.inbox import InboundMessage, Inbox


class CivilInbound:
    """The agreement, policy and field stages of a partner's civil-record update."""

    def __init__(self, context: ExchangeContext, inbox: Inbox) -> None:
        self._gate = context.gate
        self._clock = context.clock
        self._inbox = inbox

    def admit(
        self,
        peer_state: str,
        verified: VerifiedEnvelope,
        envelope: bytes,
        *,
        received: Callable[[Connection, bool], None],
    ) -> WriteUnit[bool]:
        """The unit that stores the update; it commits ``received`` (the receiver's
        evidence, told whether the update was new) with it. A refusal is raised before."""
        header = verified.header
        agreement = self._gate.receiving(verified, peer_state)
        tree = decode_payload(verified.payload)
        today = self._clock().date()
        minimised = evaluate(
            agreement.inbound,
            exchange_type="civil_record",
            purpose=header.purpose,
            kind=kind_name("civil_record", tree.get("event_type", "")) or "",
            payload=tree,
            legal_basis=LegalBasisFlags(),
            today=today,
            hash_key=agreement.hash_key,
            strict_receiver=True,
        )
        validate_received_update(minimised.payload, today=today)
        message = InboundMessage(
            message_id=header.message_id,
            sender_state=peer_state,
            agreement_id=agreement.id,
            exchange_type="civil_record",
            envelope=envelope,
            kind=minimised.kind,
            purpose=minimised.purpose,
            request_digest=verified.digest,
        )

        def store(conn: Connection) -> bool:
            # Inbox row, quota and evidence commit together, and only while the agreement
            # is in force; a duplicate takes no quota.
            return self._gate.commit_exchange(
                conn,
                ExchangeUnit(agreement, minimised, "civil-record updates"),
                record=lambda: self._inbox.accept_once_within(conn, message),
                evidence=lambda stored: received(conn, stored),
            )

        return store
