"""Answering a partner's identity query, stage by stage.

    peer      -> AuthenticatedPeer   (TLS client certificate, by its issuing CA)
    verify    -> VerifiedEnvelope    (sender's signing key, clock window, addressed to us)
    agreement -> AgreementInForce    (signed by both, and the same text: digest pinned)
    payload   -> strict JSON         (no duplicate keys, NaN, lone surrogates, deep nesting)
    policy    -> MinimisedPayload    (re-evaluated strictly: a field we should not get is refused)
    fields    -> the sender's rules  (names, dates, document number as its local API holds them)
    admit     -> AdmittedQuery       (one group-committed transaction: the agreement still
                                      in force here, the id stored once (a second time is
                                      refused), the purpose's daily allowance in our
                                      direction, the audit entry)
    registry  -> candidate records   (within the time the partner and the agreement leave)
    compare   -> IdentityVerdict     (computed here, from the records rendered like the claim)
    answer    -> a signed envelope   (flags and a status, bound to the query's digest)

The registry's records never leave this module: they are rendered through the same
field rules the claim crossed under (so a hashed number is compared as a hash, a
generalised date by its remaining parts) and only the verdict is signed. A registry
that does not answer in time is ``DEADLINE_EXCEEDED``; a registry that cannot be
asked is ``UNAVAILABLE``; neither becomes a ``NO_MATCH``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection

from adapters.base import IdentitySource, RegistryDeadlineExceeded
from gateway.agreements.gate import AgreementInForce, ExchangeUnit
from gateway.audit.entry import Decision, EventKind
from gateway.delivery.context import ExchangeContext
from gateway.envelope import EnvelopeHeader, EnvelopeVerifier, utc_millis
from gateway.envelope.payload import decode_payload
from gateway.envelope.verify import VerifiedEnvelope
from gateway.errors import FieldViolation, PouchError, Rejected, ValidationRejected
from gateway.events import Event, emit
from gateway.exchanges.identity_match import Candidate, IdentityVerdict, compare
from gateway.exchanges.identity_validation import (
    comparable_document_number,
    validate_received_claim,
)
from gateway.exchanges.identity_wire import (
    ANSWER_PAYLOAD_TYPE,
    CLAIM_PAYLOAD_TYPE,
    encode_answer,
    name_comparison,
    response_deadline_s,
)
from gateway.exchanges.name_matching import NameComparison, normalise_name
from gateway.policy.catalogue import catalogue_for, identity_payload, kind_name
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.evaluate import LegalBasisFlags, MinimisedPayload, evaluate, minimise_like
from gateway.policy.transforms import is_hash_token
from gateway.store.group_commit import WriteUnit
from gateway.store.identity_queries import IdentityQueries, IdentityQuery
from pouch.v1 import common_pb2, envelope_pb2, identity_pb2, registry_pb2

EXCHANGE: Final = "identity_confirmation"
# Kept back from the time left, to sign and send the answer after the registry's.
ANSWER_MARGIN_S = 0.1


class RegistryCannotConfirm(Rejected):
    """This gateway's registry adapter cannot answer identity lookups."""

    reason = "REGISTRY_CANNOT_CONFIRM"


class NotSearchable(Rejected):
    """The claim as it crossed holds nothing the registry can search by."""

    reason = "IDENTITY_NOT_SEARCHABLE"


@dataclass(frozen=True)
class AdmittedQuery:
    """A partner's query that passed every check and whose id is now spent."""

    verified: VerifiedEnvelope
    agreement: AgreementInForce
    minimised: MinimisedPayload
    names: NameComparison
    wait_s: float


def render_record(
    record: registry_pb2.IdentityRecord,
    *,
    policy: CompiledPolicy,
    reference: MinimisedPayload,
    hash_key: bytes,
    names: NameComparison,
) -> Candidate:
    """A registry record in the form the claim ``reference`` crossed in, for comparison."""
    claim = identity_pb2.IdentityClaim(
        document_type=record.document_type,
        document_number=comparable_document_number(record.document_number),
        date_of_birth=record.date_of_birth,
        sex=record.sex,
        nationality=record.nationality,
    )
    claim.name.given_names.extend(normalise_name(v, names) for v in record.name.given_names)
    claim.name.family_names.extend(normalise_name(v, names) for v in record.name.family_names)
    rendered = minimise_like(policy, reference, identity_payload(claim), hash_key=hash_key)
    return Candidate(rendered=rendered, document_status=record.document_status)


class IdentityResponder:
    """The peer listener's ``Query``: from a partner's envelope to our signed answer."""

    def __init__(
        self,
        context: ExchangeContext,
        verifier: EnvelopeVerifier,
        queries: IdentityQueries,
        registry: IdentitySource | None,
    ) -> None:
        self._state = context.state
        self._verifier = verifier
        self._gate = context.gate
        self._queries = queries
        self._group = context.group
        self._signer = context.signer
        self._registry = registry
        self._clock = context.clock
        self._audit = context.audit

    async def answer(
        self,
        peer_state: str,
        envelope: envelope_pb2.Envelope,
        *,
        time_left_s: float | None,
        certificate: str | None = None,
    ) -> envelope_pb2.Envelope:
        """The signed answer, or a refusal audited under the partner's ``certificate``."""
        # The stages are computation and run on the event loop; only the writes leave it,
        # to the group committer.
        try:
            admitted, admit = self._admit(peer_state, envelope, time_left_s)
            await self._group.write(admit)
            records = await self._look_up(admitted)
            answer, answered = self._sign_answer(admitted, records)
            await self._group.write(answered)
            self._event(Event.ANSWERED, peer_state, envelope, None)
            return answer
        except PouchError as e:
            refused = functools.partial(self._refused, e, peer_state, envelope, certificate)
            await self._group.write(refused)
            self._event(Event.REFUSED, peer_state, envelope, e.reason)
            raise

    @staticmethod
    def _event(
        event: Event, peer_state: str, envelope: envelope_pb2.Envelope, reason: str | None
    ) -> None:
        emit(
            event,
            message_id=envelope.message_id,
            agreement_id=envelope.agreement.id,
            agreement_version=envelope.agreement.version,
            partner=peer_state,
            exchange_type="identity_confirmation",
            reason=reason,
        )

    def _refused(
        self,
        error: PouchError,
        peer_state: str,
        envelope: envelope_pb2.Envelope,
        certificate: str | None,
        conn: Connection,
    ) -> None:
        self._audit.refused(
            error,
            exchange_type=EXCHANGE,
            peer_state=peer_state,
            principal=f"gateway-certificate:{certificate}" if certificate else None,
            message_id=envelope.message_id,
            agreement_id=envelope.agreement.id,
            conn=conn,
        )
        if envelope.message_id:
            self._queries.record_answer_within(
                conn,
                envelope.message_id,
                result=None,
                document_status=None,
                reason_code=error.reason[:64],
            )

    def _admit(
        self, peer_state: str, envelope: envelope_pb2.Envelope, time_left_s: float | None
    ) -> tuple[AdmittedQuery, WriteUnit[None]]:
        """The admitted query, and the unit that must commit before the registry is asked."""
        verified = self._verifier.verify(envelope, peer_state=peer_state)
        header = verified.header
        if (
            header.exchange_type != common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION
            or header.payload_type != CLAIM_PAYLOAD_TYPE
        ):
            raise ValidationRejected(
                [FieldViolation("payload_type", f"a query carries {CLAIM_PAYLOAD_TYPE}")],
                reason="EXCHANGE_NOT_SUPPORTED",
            )
        agreement = self._gate.receiving(verified, peer_state)
        tree = decode_payload(verified.payload)
        claim = tree.get("claim")
        stated = claim.get("document_type", "") if isinstance(claim, Mapping) else ""
        minimised = evaluate(
            agreement.inbound,
            exchange_type=EXCHANGE,
            purpose=header.purpose,
            kind=kind_name(EXCHANGE, stated) or "",
            payload=tree,
            legal_basis=LegalBasisFlags(),
            today=self._clock().date(),
            hash_key=agreement.hash_key,
            strict_receiver=True,
        )
        validate_received_claim(minimised.payload.get("claim", {}), today=self._clock().date())
        record = IdentityQuery(
            message_id=header.message_id,
            direction="inbound",
            partner_state=peer_state,
            agreement_id=agreement.id,
            purpose=minimised.purpose,
            kind=minimised.kind,
        )

        def admit(conn: Connection) -> None:
            # The replay guard, the quota and the evidence: together or not at all, and
            # only while the agreement is in force.
            def admitted() -> bool:
                self._queries.admit_inbound_within(conn, record)  # a replay is refused
                return True

            def evidence(fresh: bool) -> None:
                self._audit.received(
                    verified, exchange_type=EXCHANGE, peer_state=peer_state, conn=conn
                )

            unit = ExchangeUnit(agreement, minimised, "identity confirmations")
            self._gate.commit_exchange(conn, unit, record=admitted, evidence=evidence)

        wait_s = response_deadline_s(agreement.inbound)
        if time_left_s is not None:
            wait_s = min(wait_s, time_left_s)
        admitted = AdmittedQuery(
            verified=verified,
            agreement=agreement,
            minimised=minimised,
            names=name_comparison(agreement, agreement.inbound),
            wait_s=wait_s - ANSWER_MARGIN_S,
        )
        return admitted, admit

    async def _look_up(self, admitted: AdmittedQuery) -> Sequence[registry_pb2.IdentityRecord]:
        if self._registry is None:
            raise RegistryCannotConfirm("this gateway's registry cannot answer identity queries")
        claim: Mapping[str, Any] = admitted.minimised.payload.get("claim", {})
        lookup = registry_pb2.LookupIdentityRequest(
            message_id=admitted.verified.header.message_id,
            requester_state=admitted.verified.header.sender_state,
            document_type=identity_pb2.DocumentType.Value(
                catalogue_for(EXCHANGE).kinds[admitted.minimised.kind]
            ),
        )
        number = claim.get("document_number")
        if isinstance(number, str) and not is_hash_token(number):
            lookup.document_number = comparable_document_number(number)
        born = claim.get("date_of_birth")
        if isinstance(born, Mapping) and isinstance(born.get("year"), int):
            lookup.date_of_birth.CopyFrom(
                common_pb2.CivilDate(
                    year=born["year"], month=born.get("month", 0), day=born.get("day", 0)
                )
            )
        name = claim.get("name")
        if isinstance(name, Mapping):
            for field in ("given_names", "family_names"):
                values = name.get(field)
                if isinstance(values, list) and not any(is_hash_token(v) for v in values):
                    getattr(lookup.name, field).extend(values)
        if not lookup.document_number and not lookup.HasField("date_of_birth"):
            raise NotSearchable(
                "the agreement lets neither the document number nor the date of birth "
                "cross in a form the registry can search by"
            )
        try:
            return await self._registry.lookup_identity(lookup, timeout_s=admitted.wait_s)
        except RegistryDeadlineExceeded:
            raise
        except TimeoutError as e:
            raise RegistryDeadlineExceeded("the registry did not answer in time") from e

    def _sign_answer(
        self, admitted: AdmittedQuery, records: Sequence[registry_pb2.IdentityRecord]
    ) -> tuple[envelope_pb2.Envelope, WriteUnit[None]]:
        """The signed answer, and the unit that records it (committed before it leaves)."""
        candidates = [
            render_record(
                record,
                policy=admitted.agreement.inbound,
                reference=admitted.minimised,
                hash_key=admitted.agreement.hash_key,
                names=admitted.names,
            )
            for record in records
        ]
        claim = admitted.minimised.payload.get("claim", {})
        verdict: IdentityVerdict = compare(claim, candidates, names=admitted.names)
        query = admitted.verified.header
        answer = verdict.answer(
            request_message_id=query.message_id, request_digest=admitted.verified.digest
        )
        header = EnvelopeHeader(
            message_id=str(uuid.uuid4()),
            agreement_id=query.agreement_id,
            agreement_version=query.agreement_version,
            agreement_digest=query.agreement_digest,
            exchange_type=common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
            purpose=query.purpose,
            sender_state=self._state,
            recipient_state=query.sender_state,
            created_at=utc_millis(self._clock()),
            payload_type=ANSWER_PAYLOAD_TYPE,
        )
        payload = encode_answer(answer)
        envelope = self._signer.sign(header, payload, hybrid=admitted.agreement.hybrid_signatures)
        result = identity_pb2.MatchResult.Name(verdict.result)

        def answered(conn: Connection) -> None:
            self._queries.record_answer_within(
                conn,
                query.message_id,
                result=result,
                document_status=identity_pb2.DocumentStatus.Name(verdict.document_status),
            )
            self._audit.record(
                EventKind.DELIVERED,
                Decision.RECORDED,
                message_id=query.message_id,
                agreement_id=query.agreement_id,
                agreement_version=query.agreement_version,
                exchange_type=EXCHANGE,
                purpose=query.purpose,
                peer_state=query.sender_state,
                payload=payload,
                reason_code=result.removeprefix("MATCH_RESULT_"),
                conn=conn,
            )

        return envelope, answered
