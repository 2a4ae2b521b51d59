"""Receiving an envelope from a partner gateway, stage by stage.

    peer      -> AuthenticatedPeer   (TLS client certificate, by its issuing CA)
    verify    -> VerifiedEnvelope    (sender's signing key, clock window, addressed to us)
    hash key  -> the same key        (the fingerprint the sender stated for the agreement
                                      equals ours, else HASH_KEY_MISMATCH, and the
                                      agreement leaves force on both sides)
    (then, by exchange type, in the stage that knows it:)
    agreement -> AgreementInForce    (signed by both, and the same text: digest pinned;
                                      under hybrid message signatures, the ML-DSA-44
                                      signature there too, else ENVELOPE_PQ_SIGNATURE)
    payload   -> strict JSON         (gateway.envelope.payload: no duplicate keys, NaN,
                                      lone surrogates, unsafe integers or deep nesting)
    policy    -> MinimisedPayload    (re-evaluated: a field we should not hold is refused)
    fields    -> the sender's rules  (what the payload carries holds to the rules the
                                      sender's local API applies: real dates, plausible
                                      years, string and list limits)
    (a civil-record update in :class:`~gateway.exchanges.civil_inbound.CivilInbound`; a
    representation case's message in
    :class:`~gateway.exchanges.representation_inbound.CaseInbound`, which also applies
    it to our copy of the case in the transaction that stores it)
    inbox     -> stored exactly once (atomic on the message id), in one group-committed
                 transaction with the agreement's lifecycle (still in force here), the
                 purpose's daily allowance in our direction and the audit entry
    receipt   -> signed by us, binding the request digest (and, under an agreement
                 with hybrid message signatures, signed ML-DSA-44 too)

Nothing is stored, receipted or counted against the quota unless every check passed;
a refusal is audited with its reason. A message id seen before from the same
sender with the same payload (the sender retrying after a lost receipt) is answered
with a fresh receipt and not stored again; the same id with another payload is a
replay and is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from gateway.agreements.notices import AgreementNotices
from gateway.delivery.agreement_confirmation import AgreementConfirmation
from gateway.delivery.context import ExchangeContext
from gateway.delivery.receipts import AgreementReceipts
from gateway.envelope import EnvelopeVerifier, VerifiedEnvelope
from gateway.envelope.names import exchange_name
from gateway.errors import PouchError, Rejected, ReplayRejected
from gateway.events import Event, emit
from gateway.store.group_commit import WriteUnit
from gateway.store.inbox import Inbox
from pouch.v1 import common_pb2, envelope_pb2


class UnsupportedExchange(Rejected):
    reason = "EXCHANGE_NOT_SUPPORTED"


def _payload_hash(envelope_bytes: bytes) -> bytes:
    return hashlib.sha256(envelope_pb2.Envelope.FromString(envelope_bytes).payload).digest()


class CivilMessages(Protocol):
    """Takes a partner's verified civil-record update (see ``exchanges.civil_inbound``)."""

    def admit(
        self,
        peer_state: str,
        verified: VerifiedEnvelope,
        envelope: bytes,
        *,
        received: Callable[[Connection, bool], None],
    ) -> WriteUnit[bool]: ...


class CaseMessages(Protocol):
    """Takes a partner's verified case message (see ``exchanges.representation_inbound``)."""

    def receive(
        self,
        peer_state: str,
        verified: VerifiedEnvelope,
        envelope: bytes,
        *,
        received: Callable[[Connection, bool], None] | None = None,
    ) -> bool: ...


@dataclass(frozen=True)
class InboundRoutes:
    """Where a partner's verified message goes besides the inbox: its agreement notices,
    its case messages (``None``: this gateway takes none), the hashing-key confirmation,
    and ``arrived``, called on the event loop once an update is newly stored or a case
    message taken, so the loop that hands them on need not wait for its next poll."""

    notices: AgreementNotices
    civil: CivilMessages
    cases: CaseMessages | None = None
    confirmation: AgreementConfirmation | None = None
    arrived: Callable[[], object] = lambda: None


class InboundReceiver:
    """The peer listener's ``Deliver``: from a partner's envelope to our signed receipt."""

    def __init__(
        self,
        context: ExchangeContext,
        verifier: EnvelopeVerifier,
        receipts: AgreementReceipts,
        inbox: Inbox,
        routes: InboundRoutes,
    ) -> None:
        self._arrived = routes.arrived
        self.confirmation = routes.confirmation
        self._audit = context.audit
        self._group = context.group
        self._cases = routes.cases
        self._civil = routes.civil
        self._verifier = verifier
        self._gate = context.gate
        self._notices = routes.notices
        self._inbox = inbox
        self._signer = receipts
        self._clock = context.clock

    async def receive(
        self,
        peer_state: str,
        envelope: envelope_pb2.Envelope,
        *,
        certificate: str | None = None,
        fingerprints: Mapping[str, str] | None = None,
    ) -> envelope_pb2.Receipt:
        """The signed receipt once the message is stored (or known), or a refusal, audited.

        ``certificate`` (the partner's TLS certificate fingerprint) names the sender in the
        audit entry of a refusal: a replay or a forged signature is evidence against it.
        ``fingerprints`` are the hashing-key fingerprints the sender stated, by agreement.

        Civil-record updates, the bulk of the traffic, are checked on the event loop and
        only their write leaves it; notices and case messages run on a worker thread.
        """
        try:
            return await self._receive(peer_state, envelope, fingerprints or {})
        except PouchError as e:
            await asyncio.to_thread(
                self._audit.refused,
                e,
                exchange_type=exchange_name(envelope.exchange_type),
                peer_state=peer_state,
                principal=f"gateway-certificate:{certificate}" if certificate else None,
                message_id=envelope.message_id,
                agreement_id=envelope.agreement.id,
            )
            emit(
                Event.REFUSED,
                message_id=envelope.message_id,
                agreement_id=envelope.agreement.id,
                agreement_version=envelope.agreement.version,
                partner=peer_state,
                exchange_type=exchange_name(envelope.exchange_type),
                reason=e.reason,
            )
            raise

    @staticmethod
    def _delivered(peer_state: str, verified: VerifiedEnvelope, exchange_type: str) -> None:
        header = verified.header
        emit(
            Event.DELIVERED,
            message_id=header.message_id,
            agreement_id=header.agreement_id,
            agreement_version=header.agreement_version,
            partner=peer_state,
            exchange_type=exchange_type,
        )

    async def _receive(
        self, peer_state: str, envelope: envelope_pb2.Envelope, fingerprints: Mapping[str, str]
    ) -> envelope_pb2.Receipt:
        verified = self._verifier.verify(envelope, peer_state=peer_state)
        header = verified.header
        if self.confirmation is not None:
            self.confirmation.attach()
            if header.exchange_type != common_pb2.EXCHANGE_TYPE_AGREEMENT_NOTICE:
                self.confirmation.check_stated(peer_state, envelope.agreement, fingerprints)
        if header.exchange_type == common_pb2.EXCHANGE_TYPE_AGREEMENT_NOTICE:
            await asyncio.to_thread(self._notices.receive, peer_state, verified)
            return self._receipt(verified, "")
        if header.exchange_type == common_pb2.EXCHANGE_TYPE_REPRESENTATION and self._cases:
            receipt = await asyncio.to_thread(self._case_message, peer_state, verified, envelope)
            self._delivered(peer_state, verified, "representation")
            self._arrived()
            return receipt
        if header.exchange_type != common_pb2.EXCHANGE_TYPE_CIVIL_RECORD:
            raise UnsupportedExchange("this exchange type is not delivered through Deliver")
        return await self._civil_update(peer_state, verified, envelope)

    async def _civil_update(
        self, peer_state: str, verified: VerifiedEnvelope, envelope: envelope_pb2.Envelope
    ) -> envelope_pb2.Receipt:
        received = self._evidence(verified, "civil_record", peer_state)
        store = self._civil.admit(
            peer_state, verified, envelope.SerializeToString(), received=received
        )
        if await self._group.write(store):
            self._delivered(peer_state, verified, "civil_record")
            self._arrived()
            return self._receipt(verified, "")
        return await asyncio.to_thread(self._receipted, verified, envelope, False)

    def _case_message(
        self, peer_state: str, verified: VerifiedEnvelope, envelope: envelope_pb2.Envelope
    ) -> envelope_pb2.Receipt:
        assert self._cases is not None
        received = self._evidence(verified, "representation", peer_state)
        stored = self._cases.receive(
            peer_state, verified, envelope.SerializeToString(), received=received
        )
        return self._receipted(verified, envelope, stored)

    def _evidence(
        self, verified: VerifiedEnvelope, exchange_type: str, peer_state: str
    ) -> Callable[[Connection, bool], None]:
        """The RECEIVED entry, written in the unit that stores the message (told
        whether it was new)."""

        def received(conn: Connection, stored: bool) -> None:
            self._audit.received(
                verified,
                exchange_type=exchange_type,
                peer_state=peer_state,
                duplicate=not stored,
                conn=conn,
            )

        return received

    def _receipted(
        self, verified: VerifiedEnvelope, envelope: envelope_pb2.Envelope, stored: bool
    ) -> envelope_pb2.Receipt:
        if not stored:
            self._check_same_payload(verified.header.message_id, envelope)
            return self._receipt(verified, "DUPLICATE")
        return self._receipt(verified, "")

    def _check_same_payload(self, message_id: str, envelope: envelope_pb2.Envelope) -> None:
        earlier = self._inbox.get(message_id)
        if (
            earlier is None
            or earlier.envelope is None
            or _payload_hash(earlier.envelope) != hashlib.sha256(envelope.payload).digest()
        ):
            raise ReplayRejected("this message id was already used for another message")

    def _receipt(self, verified: VerifiedEnvelope, reason_code: str) -> envelope_pb2.Receipt:
        return self._signer.sign(
            agreement_id=verified.header.agreement_id,
            message_id=verified.header.message_id,
            request_digest=verified.digest,
            outcome=envelope_pb2.RECEIPT_OUTCOME_ACCEPTED,
            reason_code=reason_code,
            issued_at=self._clock(),
        )
