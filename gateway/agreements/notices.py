"""Suspension and termination: declared by either party, in force at once on both sides.

A party's operator suspends or terminates an agreement through ``AgreementService``.
This gateway records it in the lifecycle store first (from that moment
:class:`~gateway.agreements.gate.AgreementGate` refuses the agreement in both
directions, and the dispatcher dead-letters what was queued under it), then queues
a signed :class:`AgreementNotice` envelope to the partner through the outbox, so
the notice itself has guaranteed delivery. The partner verifies the envelope like
any other, checks the notice names an agreement it holds with the same text, and
records it too. Termination also purges the payloads stored under the agreement on
each side; the rows, digests and receipts stay as evidence.

Resumption lifts a suspension, and only the suspending party may lift its own: the
operator's gateway checks that this state declared the suspension in force, lifts it,
then sends the signed resumption; the partner lifts the suspension only if the sender
declared it (a resumption naming the receiver's own suspension is refused with
``SUSPENDED_BY_PARTNER``, one for an agreement not suspended by the sender changes
nothing). A termination is never lifted.

Every notice carries the sender's hashing-key fingerprint for the agreement
(:mod:`gateway.agreements.hash_key`). The receiver records the notice whatever it
says (a suspension must never be lost), then compares: another fingerprint holds the
agreement out of force here with ``HASH_KEY_MISMATCH``, and the partner is told.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.agreements.hash_key import Mismatch
from gateway.agreements.registry import LoadedAgreement
from gateway.audit.entry import Decision, EventKind
from gateway.delivery.context import ExchangeContext
from gateway.envelope import EnvelopeHeader, VerifiedEnvelope, utc_millis
from gateway.errors import AgreementRejected, FieldViolation, NotFound, ValidationRejected
from gateway.events import Event, emit
from gateway.policy.rules import PolicySection
from gateway.store.engine import write_transaction
from gateway.store.outbox import Outbox, OutboxItem
from pouch.v1 import agreement_pb2, common_pb2

NOTICE_PURPOSE = "agreement_notice"
PAYLOAD_TYPE = agreement_pb2.AgreementNotice.DESCRIPTOR.full_name
_ACTIONS: dict[int, str] = {
    agreement_pb2.AGREEMENT_NOTICE_ACTION_SUSPEND: "suspended",
    agreement_pb2.AGREEMENT_NOTICE_ACTION_TERMINATE: "terminated",
    agreement_pb2.AGREEMENT_NOTICE_ACTION_RESUME: "resumed",
}
_RESUME = agreement_pb2.AGREEMENT_NOTICE_ACTION_RESUME


@dataclass(frozen=True)
class NoticeOutcome:
    agreement: LoadedAgreement[PolicySection]
    status: str
    purged_payloads: int


class AgreementNotices:
    def __init__(
        self,
        context: ExchangeContext,
        engine: Engine,
        outbox: Outbox,
        purge: Callable[[str], int],
    ) -> None:
        """``purge`` drops every payload stored under a terminated agreement
        (:meth:`~gateway.store.retention.RetentionPurger.purge_agreement`). Notices carry
        our hashing-key fingerprint of the agreement, none without a key (then those
        received are not compared)."""
        self._engine = engine
        self._fingerprint_of = context.gate.fingerprint_of
        self._audit = context.audit
        self._purge = purge
        self._state = context.state
        self._registry = context.gate.registry
        self._lifecycle = context.gate.lifecycle
        self._outbox = outbox
        self._signer = context.signer
        self._clock = context.clock
        self._deadline = context.delivery_deadline

    def _ours(
        self, agreement_id: str, version: int | None = None
    ) -> LoadedAgreement[PolicySection]:
        """The version in force (or that ``version``, named by a partner's notice)."""
        loaded = (
            self._registry.get(agreement_id)
            if version is None
            else self._registry.version(agreement_id, version)
        )
        if self._state not in loaded.agreement.parties:
            raise NotFound(f"no agreement {agreement_id!r} binds this state")
        return loaded

    def _apply(
        self,
        loaded: LoadedAgreement[PolicySection],
        action: int,
        by_state: str,
        reason: str,
        message_id: str | None,
        *,
        principal: str,
    ) -> int:
        status = _ACTIONS[action]
        if action == _RESUME:
            self._resume(loaded, by_state, reason, message_id, principal=principal)
            return 0
        self._audit.record(
            EventKind.AGREEMENT_TERMINATED
            if status == "terminated"
            else EventKind.AGREEMENT_SUSPENDED,
            Decision.RECORDED,
            message_id=message_id,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            exchange_type="agreement_notice",
            peer_state=by_state
            if by_state != self._state
            else loaded.agreement.partner_of(self._state),
            principal=principal,
            reason_code=reason,
        )
        terminated = status == "terminated"
        # Purge before the status shows, so whoever sees "terminated" sees no payload;
        # and once more after, for a message that slipped in between.
        purged = self._purge(loaded.id) if terminated else 0
        self._lifecycle.record(
            loaded.id,
            loaded.version,
            status,
            by_state=by_state,
            reason_code=reason,
            message_id=message_id,
        )
        emit(
            Event.AGREEMENT_TERMINATED if terminated else Event.AGREEMENT_SUSPENDED,
            message_id=message_id,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            partner=loaded.agreement.partner_of(self._state),
            exchange_type="agreement_notice",
            reason=reason,
            by="own" if by_state == self._state else "partner",
        )
        return purged + self._purge(loaded.id) if terminated else 0

    def _resume(
        self,
        loaded: LoadedAgreement[PolicySection],
        by_state: str,
        reason: str,
        message_id: str | None,
        *,
        principal: str,
    ) -> None:
        partner = loaded.agreement.partner_of(self._state)
        record = self._lifecycle.status_of(loaded.id, loaded.version)
        if record is not None and record.changed_by_state != by_state:
            raise AgreementRejected(
                f"agreement {loaded.id!r} version {loaded.version} was {record.status} by "
                f"{record.changed_by_state}: only that party lifts it",
                reason="SUSPENDED_BY_PARTNER" if record.status == "suspended" else "TERMINATED",
            )
        if record is not None and record.status != "suspended":
            raise AgreementRejected(
                f"agreement {loaded.id!r} version {loaded.version} is terminated",
                reason="TERMINATED",
            )
        if record is None and by_state == self._state:
            raise AgreementRejected(
                f"agreement {loaded.id!r} version {loaded.version} is not suspended",
                reason="NOT_SUSPENDED",
            )
        self._audit.record(
            EventKind.AGREEMENT_RESUMED,
            Decision.RECORDED,
            message_id=message_id,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            exchange_type="agreement_notice",
            peer_state=partner,
            principal=principal,
            reason_code=reason,
        )
        self._lifecycle.lift_suspension(loaded.id, loaded.version, by_state=by_state)
        emit(
            Event.AGREEMENT_RESUMED,
            message_id=message_id,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            partner=partner,
            exchange_type="agreement_notice",
            reason=reason,
            by="own" if by_state == self._state else "partner",
        )

    def declare(
        self, agreement_id: str, action: int, reason_code: str, *, principal: str
    ) -> NoticeOutcome:
        """Suspend, terminate or resume here at once, and queue the signed notice to the
        partner."""
        if action not in _ACTIONS:
            raise ValidationRejected(
                [FieldViolation("action", "must be suspend, terminate or resume")]
            )
        loaded = self._ours(agreement_id)
        partner = loaded.agreement.partner_of(self._state)
        now = self._clock()
        notice = agreement_pb2.AgreementNotice(
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            action=action,  # type: ignore[arg-type]  # checked against _ACTIONS above
            reason_code=reason_code,
            hash_key_fingerprint=self._fingerprint_of(loaded) or "",
        )
        header = EnvelopeHeader(
            message_id=str(uuid.uuid4()),
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            agreement_digest=loaded.digest,
            exchange_type=common_pb2.EXCHANGE_TYPE_AGREEMENT_NOTICE,
            purpose=NOTICE_PURPOSE,
            sender_state=self._state,
            recipient_state=partner,
            created_at=utc_millis(now),
            payload_type=PAYLOAD_TYPE,
        )
        purged = self._apply(
            loaded, action, self._state, reason_code, header.message_id, principal=principal
        )
        envelope, digest = self._signer.sign_with_digest(
            header, notice.SerializeToString(), hybrid=loaded.agreement.hybrid_signatures
        )
        queued = OutboxItem(
            message_id=header.message_id,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            exchange_type="agreement_notice",
            recipient_state=partner,
            purpose=NOTICE_PURPOSE,
            envelope=envelope.SerializeToString(),
            deadline_at=now + self._deadline,
            kind=_ACTIONS[action],
            envelope_digest=digest,
        )
        with write_transaction(self._engine) as conn:
            self._outbox.enqueue_within(conn, [queued])
        return NoticeOutcome(loaded, _ACTIONS[action], purged)

    def receive(self, peer_state: str, verified: VerifiedEnvelope) -> None:
        """A partner's notice, already verified as signed by ``peer_state``."""
        try:
            notice = agreement_pb2.AgreementNotice.FromString(verified.payload)
        except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass
            raise ValidationRejected(
                [FieldViolation("payload", "must be an AgreementNotice")],
                reason="MALFORMED_PAYLOAD",
            ) from e
        header = verified.header
        if notice.action not in _ACTIONS or not notice.reason_code:
            raise ValidationRejected(
                [
                    FieldViolation(
                        "payload.action", "must be suspend, terminate or resume, with a reason"
                    )
                ]
            )
        loaded = self._ours(notice.agreement_id, notice.agreement_version)
        if peer_state not in loaded.agreement.parties:
            raise AgreementRejected(
                "the sender is not a party to this agreement", reason="NOT_A_PARTY"
            )
        if (
            header.agreement_id != loaded.id
            or notice.agreement_version != loaded.version
            or header.agreement_version != loaded.version
            or header.agreement_digest != loaded.digest
        ):
            raise AgreementRejected(
                "the notice names another version or text of the agreement",
                reason="AGREEMENT_DIGEST_MISMATCH",
            )
        if loaded.agreement.hybrid_signatures:
            verified.require_hybrid()
        self._apply(
            loaded,
            notice.action,
            peer_state,
            notice.reason_code,
            header.message_id,
            principal=f"state:{peer_state}",
        )
        self._compare_hash_key(loaded, peer_state, notice.hash_key_fingerprint)

    def _compare_hash_key(
        self, loaded: LoadedAgreement[PolicySection], peer_state: str, stated: str
    ) -> None:
        own = self._fingerprint_of(loaded)
        if not stated or own is None or hmac.compare_digest(own.encode(), stated.encode()):
            return
        self._registry.hash_keys.record_mismatch(
            Mismatch(loaded.id, loaded.version, loaded.digest, peer_state, partner_knows=False)
        )
