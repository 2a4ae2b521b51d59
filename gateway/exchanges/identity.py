"""Asking a partner state to confirm an identity: the local caller's request, stage by stage.

    validate  -> ValidIdentityQuery     (every field; an MRZ by its check digits)
    agreement -> AgreementInForce       (and the representation case, if one is named)
    policy    -> MinimisedPayload       (names in the agreement's comparison form first)
    sign      -> SignedQuery            (stored before it leaves, in one group-committed
                                         transaction: the agreement still in force, the
                                         purpose's daily allowance, the record, the audit)
    query     -> the partner's signed answer, within the agreement's deadline
    answer    -> ConfirmIdentityResponse (verified: signer, agreement, binding to our query)

A refusal at any stage is audited with its reason code. The partner answers with
flags and a status; nothing in the response to the caller comes from the partner's
registry but those. A partner that does not answer in time is ``DEADLINE_EXCEEDED``,
never a guess; a partner that refuses is reported with its reason code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import grpc
import grpc.aio
from sqlalchemy import Connection

from gateway.agreements.gate import AgreementInForce, ExchangeUnit
from gateway.audit.entry import Decision, EventKind
from gateway.audit.refusals import RefusalContext, audit_refusals
from gateway.delivery.context import ExchangeContext
from gateway.delivery.partners import PartnerChannels
from gateway.envelope import (
    EnvelopeVerifier,
)
from gateway.envelope.payload import encode_payload
from gateway.errors import (
    DeadlineExceeded,
    NotFound,
    PartnerRefused,
    PartnerUnavailable,
    PouchError,
    from_call,
)
from gateway.events import REQUEST_ID, REQUEST_ID_HEADER, Event, emit
from gateway.exchanges.identity_validation import ValidIdentityQuery, validate_query
from gateway.exchanges.identity_wire import (
    ANSWER_PAYLOAD_TYPE,
    CLAIM_PAYLOAD_TYPE,
    decode_answer,
    name_comparison,
    response_deadline_s,
)
from gateway.exchanges.name_matching import normalise_name
from gateway.policy.catalogue import identity_payload
from gateway.policy.evaluate import MinimisedPayload, evaluate
from gateway.store.group_commit import WriteUnit
from gateway.store.identity_queries import IdentityQueries, IdentityQuery
from gateway.trust.principal import Principal
from pouch.v1 import common_pb2, envelope_pb2, identity_pb2, peer_pb2

EXCHANGE: Final = "identity_confirmation"
# Time kept back from the caller's own deadline, so the caller hears why, not just "late".
CALLER_MARGIN_S = 0.05


class CaseOfState(Protocol):
    @property
    def requesting_state(self) -> str: ...

    @property
    def representing_state(self) -> str: ...


class CaseLinks(Protocol):
    """The representation cases a confirmation may be made for."""

    def get(self, case_id: str) -> CaseOfState | None: ...

    def link_identity_confirmation(self, case_id: str, message_id: str) -> None: ...


@dataclass(frozen=True)
class SignedQuery:
    """A query that passed every local stage, is recorded, and may leave."""

    query: ValidIdentityQuery
    agreement: AgreementInForce
    minimised: MinimisedPayload
    envelope: envelope_pb2.Envelope
    digest: str
    wait_s: float


class IdentityRequester:
    """Turns a local caller's confirmation request into the partner's verified answer."""

    def __init__(
        self,
        context: ExchangeContext,
        verifier: EnvelopeVerifier,
        queries: IdentityQueries,
        partners: PartnerChannels,
        cases: CaseLinks | None = None,
    ) -> None:
        self._group = context.group
        self._state = context.state
        self._gate = context.gate
        self._signer = context.signer
        self._verifier = verifier
        self._queries = queries
        self._partners = partners
        self._clock = context.clock
        self._audit = context.audit
        self._cases = cases

    async def confirm(
        self,
        principal: Principal,
        request: identity_pb2.ConfirmIdentityRequest,
        *,
        time_left_s: float | None,
    ) -> identity_pb2.ConfirmIdentityResponse:
        # The stages are computation and run on the event loop; only the writes leave it,
        # to the group committer (and a named case's look-ups, to a worker thread).
        context = RefusalContext(
            EXCHANGE, principal.subject, request.partner_state, request.agreement_id
        )
        async with audit_refusals(self._audit, context):
            now = self._clock()
            query = validate_query(request, requester_state=self._state, today=now.date())
            agreement = self._gate.prepare(query.agreement_id, query.partner_state)
            if query.case_id is not None:
                await asyncio.to_thread(self._require_case, query.case_id, agreement.partner_state)
            signed, store = self._sign(principal, query, agreement, now, time_left_s)
            await self._group.write(store)
            self._event(Event.SUBMITTED, signed)
            if query.case_id is not None and self._cases is not None:
                await asyncio.to_thread(
                    self._cases.link_identity_confirmation,
                    query.case_id,
                    signed.envelope.message_id,
                )
            answer = await self._ask(signed)
            response, record = self._accept(signed, answer)
            await self._group.write(record)
            self._event(Event.ANSWERED, signed)
            return response

    @staticmethod
    def _event(event: Event, signed: SignedQuery) -> None:
        emit(
            event,
            message_id=signed.envelope.message_id,
            agreement_id=signed.agreement.id,
            agreement_version=signed.agreement.version,
            partner=signed.agreement.partner_state,
            exchange_type=EXCHANGE,
        )

    # -- stages up to the signed query ------------------------------------------------------

    def _sign(
        self,
        principal: Principal,
        query: ValidIdentityQuery,
        agreement: AgreementInForce,
        now: datetime,
        time_left_s: float | None,
    ) -> tuple[SignedQuery, WriteUnit[None]]:
        """The signed query, and the unit that must commit before it may leave."""
        claim = identity_pb2.IdentityClaim()
        claim.CopyFrom(query.claim)
        names = name_comparison(agreement, agreement.outbound)
        for values in (claim.name.given_names, claim.name.family_names):
            values[:] = [normalise_name(value, names) for value in values]
        minimised = evaluate(
            agreement.outbound,
            exchange_type=EXCHANGE,
            purpose=query.purpose,
            kind=query.document_kind,
            payload=identity_payload(claim),
            legal_basis=query.legal_basis.for_policy(),
            today=now.date(),
            hash_key=agreement.hash_key,
        )
        header = agreement.new_header(
            exchange_type=common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION,
            purpose=minimised.purpose,
            created_at=now,
            payload_type=CLAIM_PAYLOAD_TYPE,
        )
        payload = encode_payload(minimised.payload)
        envelope, digest = self._signer.sign_with_digest(
            header, payload, hybrid=agreement.hybrid_signatures
        )
        record = IdentityQuery(
            message_id=header.message_id,
            direction="outbound",
            partner_state=agreement.partner_state,
            agreement_id=agreement.id,
            purpose=minimised.purpose,
            kind=minimised.kind,
            principal=principal.acting,
            case_id=query.case_id,
        )

        def store(conn: Connection) -> None:
            # The record of the query, the quota and its evidence: together or not at all,
            # and only while the agreement is in force.
            def recorded() -> bool:
                self._queries.record_outbound_within(conn, record)
                return True

            def evidence(fresh: bool) -> None:
                self._audit.submitted(
                    message_id=header.message_id,
                    agreement=agreement,
                    principal=principal.acting,
                    payload=payload,
                    minimised=minimised,
                    conn=conn,
                )

            unit = ExchangeUnit(agreement, minimised, "identity confirmations")
            self._gate.commit_exchange(conn, unit, record=recorded, evidence=evidence)

        wait_s = response_deadline_s(agreement.outbound)
        if time_left_s is not None:
            wait_s = min(wait_s, time_left_s - CALLER_MARGIN_S)
        signed = SignedQuery(
            query=query,
            agreement=agreement,
            minimised=minimised,
            envelope=envelope,
            digest=digest,
            wait_s=wait_s,
        )
        return signed, store

    def _require_case(self, case_id: str, partner_state: str) -> None:
        case = self._cases.get(case_id) if self._cases is not None else None
        parties = (case.requesting_state, case.representing_state) if case else ()
        if case is None or self._state not in parties or partner_state not in parties:
            raise NotFound("no representation case with that id is shared with this partner")

    # -- the partner's answer ------------------------------------------------------------

    async def _ask(self, signed: SignedQuery) -> envelope_pb2.Envelope:
        partner = signed.agreement.partner_state
        if signed.wait_s <= 0:
            await self._unanswered(signed, "DEADLINE_EXCEEDED")
            raise DeadlineExceeded("no time is left to ask the partner")
        try:
            # Waiting for the channel (a partner restarting, a reconnect backoff) is part
            # of the answer's time: the deadline, not a fast failure, ends the wait.
            response = await self._partners.peer(partner).Query(
                peer_pb2.QueryRequest(
                    envelope=signed.envelope,
                    hash_key_fingerprints={
                        signed.agreement.id: signed.agreement.hash_key_fingerprint
                    },
                ),
                timeout=signed.wait_s,
                wait_for_ready=True,
                # The partner's lines of this query carry the caller's request id too.
                metadata=((REQUEST_ID_HEADER, REQUEST_ID.get() or ""),),
            )
        except grpc.aio.AioRpcError as e:
            failure, recorded = _query_failure(partner, signed.wait_s, e)
            await self._unanswered(signed, recorded)
            raise failure from e
        return response.answer

    async def _unanswered(self, signed: SignedQuery, reason: str) -> None:
        def store(conn: Connection) -> None:
            self._queries.record_answer_within(
                conn,
                signed.envelope.message_id,
                result=None,
                document_status=None,
                reason_code=reason[:64],
            )

        await self._group.write(store)

    def _accept(
        self, signed: SignedQuery, envelope: envelope_pb2.Envelope
    ) -> tuple[identity_pb2.ConfirmIdentityResponse, WriteUnit[None]]:
        """The caller's answer, and the unit that records it (committed before it is given)."""
        agreement = signed.agreement
        verified = self._verifier.verify(envelope, peer_state=agreement.partner_state)
        header = verified.header
        if (
            header.exchange_type != common_pb2.EXCHANGE_TYPE_IDENTITY_CONFIRMATION
            or header.payload_type != ANSWER_PAYLOAD_TYPE
            or header.purpose != signed.minimised.purpose
        ):
            raise PartnerRefused(
                "the partner's answer is not an identity answer to this query",
                reason="ANSWER_MISMATCH",
            )
        agreement.require_envelope(verified)
        answer = decode_answer(
            verified.payload,
            request_message_id=signed.envelope.message_id,
            request_digest=signed.digest,
        )
        result = identity_pb2.MatchResult.Name(answer.result)
        status = identity_pb2.DocumentStatus.Name(answer.document_status)

        def store(conn: Connection) -> None:
            self._queries.record_answer_within(
                conn, signed.envelope.message_id, result=result, document_status=status
            )
            self._audit.record(
                EventKind.RECEIPTED,
                Decision.ACCEPTED,
                message_id=signed.envelope.message_id,
                agreement_id=agreement.id,
                agreement_version=agreement.version,
                exchange_type=EXCHANGE,
                purpose=signed.minimised.purpose,
                peer_state=agreement.partner_state,
                payload=verified.payload,
                reason_code=result.removeprefix("MATCH_RESULT_"),
                conn=conn,
            )

        response = identity_pb2.ConfirmIdentityResponse(
            message_id=signed.envelope.message_id,
            result=answer.result,
            fields=answer.fields,
            document_status=answer.document_status,
        )
        return response, store


def _query_failure(
    partner: str, wait_s: float, error: grpc.aio.AioRpcError
) -> tuple[PouchError, str]:
    """What the caller is told when the partner's ``Query`` failed, and the reason recorded."""
    failure = from_call(error, who=partner)
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        late = DeadlineExceeded(f"{partner} did not answer within {wait_s:.1f} s")
        return late, late.reason
    if isinstance(failure, PartnerRefused):
        return failure, failure.reason
    return PartnerUnavailable(f"{partner} could not answer ({error.code().name})"), failure.reason
