"""The peer API: partner gateways only.

TLS admits any certificate chaining to one of the pinned partner CAs; the guard's
authentication stage (:class:`PeerAuthenticator`) counts the key-exchange group the
connection negotiated (and, where ``[peer_api] require_hybrid_key_exchange`` is on,
refuses one that is not post-quantum hybrid), then names the one state that
certificate may speak for, by its issuing CA, and refuses a SAN that disagrees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.audit.publication import CheckpointWitness
from gateway.audit.recorder import AuditRecorder
from gateway.delivery.agreement_confirmation import AgreementConfirmation
from gateway.delivery.batches import answer_each, refused, require_batch
from gateway.delivery.bundle_announcement import BundleAnnouncements
from gateway.delivery.handover import OutcomeRecorder
from gateway.delivery.receiver import InboundReceiver
from gateway.errors import (
    AuthenticationRejected,
    FieldViolation,
    Rejected,
    Unavailable,
    ValidationRejected,
)
from gateway.exchanges.identity_answer import IdentityResponder
from gateway.metrics import GatewayMetrics
from gateway.pki.keys import certificate_fingerprint, load_certificates_pem
from gateway.server.caller import authenticated_peer, set_peer
from gateway.server.registration import register_methods
from gateway.trust.key_exchange import KeyExchangeNotHybrid, negotiated_group, require_hybrid
from gateway.trust.peer import CertificateIdentifier
from pouch.v1 import peer_pb2

MAX_NONCE_LENGTH = 128


class PeerAuthenticator:
    """The peer listener's authentication stage: the connection, then the certificate.

    Every call counts its connection's key-exchange group in
    ``pouch_peer_key_exchange_total``, refused or not. With
    ``require_hybrid_key_exchange``, a call whose connection negotiated no post-quantum
    hybrid group is refused (``KEY_EXCHANGE_NOT_HYBRID``) before its certificate is read.
    """

    def __init__(
        self,
        identifier: CertificateIdentifier,
        metrics: GatewayMetrics,
        *,
        require_hybrid_key_exchange: bool,
    ) -> None:
        self._identifier = identifier
        self._metrics = metrics
        self._require_hybrid = require_hybrid_key_exchange

    def __call__(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        auth = context.auth_context()
        group = negotiated_group(auth)
        self._metrics.peer_key_exchange.labels(group).inc()
        if self._require_hybrid:
            require_hybrid(group)
        values = list(auth.get("x509_pem_cert", ()))
        set_peer(self._identifier.identify_gateway(values[0] if values else None))


class PeerRefusalEvidence:
    """An audit entry for each refusal on the peer listener that no stage recorded.

    Stages record their own refusals with the message they concern (the receiver a
    replayed or forged envelope, the witness an inconsistent checkpoint). What reaches
    this is refused before or around them: a certificate TLS admitted (it chains to a
    pinned partner CA) used for what it may not do, such as speaking for another state,
    a connection whose key exchange is not hybrid where one is required, or a request
    that is malformed, oversized or an oversized batch. The entry records the reason and
    the certificate's SHA-256 fingerprint as the acting principal, and the partner's
    state once it is known; nothing the request or certificate claims.
    """

    def __init__(self, audit: AuditRecorder) -> None:
        self._audit = audit

    async def __call__(self, error: Rejected, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        values = list(context.auth_context().get("x509_pem_cert", ()))
        certificates = load_certificates_pem(values[0]) if values else []
        principal = (
            f"gateway-certificate:{certificate_fingerprint(certificates[0])}"
            if certificates
            else None
        )
        # Refused before the certificate named a state: no peer was set for the call.
        before_peer = isinstance(error, AuthenticationRejected | KeyExchangeNotHybrid)
        peer = None if before_peer else authenticated_peer()
        await asyncio.to_thread(
            self._audit.refused,
            error,
            exchange_type="peer_authentication" if peer is None else "peer_request",
            peer_state=peer.state if peer else None,
            principal=principal,
        )


class PeerEndpoint:
    """The gateway-to-gateway methods built so far (see :func:`register_peer_service`)."""

    def __init__(self, state: str, clock: Callable[[], datetime]) -> None:
        self._state = state
        self._clock = clock

    async def Ping(
        self, request: peer_pb2.PingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.PingResponse:
        if len(request.nonce) > MAX_NONCE_LENGTH:
            raise ValidationRejected(
                [FieldViolation("nonce", f"at most {MAX_NONCE_LENGTH} characters")]
            )
        server_time = Timestamp()
        server_time.FromDatetime(self._clock())
        return peer_pb2.PingResponse(
            nonce=request.nonce,
            gateway_state=self._state,
            caller_state=authenticated_peer().state,
            server_time=server_time,
            key_exchange_group=negotiated_group(context.auth_context()),
        )


class PeerExchanges:
    """``Deliver``, ``Acknowledge``, their batch forms, ``Query``, ``ConfirmAgreement``,
    ``CosignCheckpoint``, ``GetCosignedCheckpoint`` and ``AnnounceBundle``: the exchange
    half."""

    def __init__(
        self,
        receiver: InboundReceiver,
        outcomes: OutcomeRecorder,
        witness: CheckpointWitness,
        identity: IdentityResponder,
        announcements: BundleAnnouncements,
    ) -> None:
        self._receiver = receiver
        self._outcomes = outcomes
        self._witness = witness
        self._identity = identity
        self._announcements = announcements

    async def Deliver(
        self, request: peer_pb2.DeliverRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.DeliverResponse:
        peer = authenticated_peer()
        receipt = await self._receiver.receive(
            peer.state,
            request.envelope,
            certificate=peer.certificate_fingerprint,
            fingerprints=request.hash_key_fingerprints,
        )
        return peer_pb2.DeliverResponse(receipt=receipt)

    async def Query(
        self, request: peer_pb2.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.QueryResponse:
        peer = authenticated_peer()
        confirmation = self._confirmation()
        confirmation.attach()
        # The envelope's agreement id is not verified yet, but only this partner's own
        # agreements can be named: a false one can only refuse the partner's own query.
        await asyncio.to_thread(
            confirmation.check_stated,
            peer.state,
            request.envelope.agreement,
            request.hash_key_fingerprints,
        )
        answer = await self._identity.answer(
            peer.state,
            request.envelope,
            time_left_s=context.time_remaining(),
            certificate=peer.certificate_fingerprint,
        )
        return peer_pb2.QueryResponse(answer=answer)

    async def Acknowledge(
        self, request: peer_pb2.AcknowledgeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.AcknowledgeResponse:
        peer = authenticated_peer()
        await self._outcomes.acknowledge(peer.state, request.receipt)
        return peer_pb2.AcknowledgeResponse()

    async def DeliverBatch(
        self, request: peer_pb2.DeliverBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> peer_pb2.DeliverBatchResponse:
        peer = authenticated_peer()
        require_batch("envelopes", len(request.envelopes))
        # Each envelope takes the stages it would take alone; their writes share commits.
        answers = await answer_each(
            "DeliverBatch",
            [
                self._receiver.receive(
                    peer.state,
                    e,
                    certificate=peer.certificate_fingerprint,
                    fingerprints=request.hash_key_fingerprints,
                )
                for e in request.envelopes
            ],
        )
        return peer_pb2.DeliverBatchResponse(
            results=[
                peer_pb2.DeliveryResult(refusal=a)
                if isinstance(a, peer_pb2.ItemRefusal)
                else peer_pb2.DeliveryResult(receipt=a)
                for a in answers
            ]
        )

    async def AcknowledgeBatch(
        self,
        request: peer_pb2.AcknowledgeBatchRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.AcknowledgeBatchResponse:
        peer = authenticated_peer()
        require_batch("receipts", len(request.receipts))
        receipts = list(request.receipts)
        # The signatures are checked off the event loop, all in one hand-over; each sound
        # decision is then recorded as ``Acknowledge`` records it.
        faults = await asyncio.to_thread(self._outcomes.faults, peer.state, receipts)
        answers = await answer_each(
            "AcknowledgeBatch",
            [
                self._outcomes.record(peer.state, r) if f is None else refused(f)
                for r, f in zip(receipts, faults, strict=True)
            ],
        )
        return peer_pb2.AcknowledgeBatchResponse(
            results=[peer_pb2.AcknowledgeResult(refusal=a) for a in answers]
        )

    async def CosignCheckpoint(
        self,
        request: peer_pb2.CosignCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.CosignCheckpointResponse:
        peer = authenticated_peer()
        line = await asyncio.to_thread(
            self._witness.cosign,
            peer.state,
            request.signed_checkpoint,
            list(request.consistency_proof),
        )
        return peer_pb2.CosignCheckpointResponse(cosignature=line)

    async def GetCosignedCheckpoint(
        self,
        request: peer_pb2.GetCosignedCheckpointRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.GetCosignedCheckpointResponse:
        peer = authenticated_peer()
        seen = await asyncio.to_thread(self._witness.last_cosigned, peer.state)
        if seen is None:
            return peer_pb2.GetCosignedCheckpointResponse()
        return peer_pb2.GetCosignedCheckpointResponse(
            tree_size=seen.tree_size, root_hash=seen.root_hash
        )

    async def ConfirmAgreement(
        self,
        request: peer_pb2.ConfirmAgreementRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.ConfirmAgreementResponse:
        peer = authenticated_peer()
        confirmation = self._confirmation()
        confirmation.attach()
        return await asyncio.to_thread(confirmation.answer, peer.state, request)

    async def AnnounceBundle(
        self,
        request: peer_pb2.AnnounceBundleRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> peer_pb2.AnnounceBundleResponse:
        peer = authenticated_peer()
        digest = await asyncio.to_thread(self._announcements.receive, peer.state, request.bundle)
        return peer_pb2.AnnounceBundleResponse(bundle_digest=digest)

    def _confirmation(self) -> AgreementConfirmation:
        confirmation = self._receiver.confirmation
        if confirmation is None:  # every gateway with exchanges is built with one
            raise Unavailable("hashing keys cannot be confirmed here", reason="UNAVAILABLE")
        return confirmation


def register_peer_service(
    server: grpc.aio.Server, endpoint: PeerEndpoint, exchanges: PeerExchanges | None
) -> None:
    methods: dict[str, Callable[..., Any]] = {"Ping": endpoint.Ping}
    if exchanges is not None:
        methods |= {
            "Deliver": exchanges.Deliver,
            "Query": exchanges.Query,
            "Acknowledge": exchanges.Acknowledge,
            "DeliverBatch": exchanges.DeliverBatch,
            "AcknowledgeBatch": exchanges.AcknowledgeBatch,
            "CosignCheckpoint": exchanges.CosignCheckpoint,
            "GetCosignedCheckpoint": exchanges.GetCosignedCheckpoint,
            "ConfirmAgreement": exchanges.ConfirmAgreement,
            "AnnounceBundle": exchanges.AnnounceBundle,
        }
    register_methods(server, peer_pb2.DESCRIPTOR.services_by_name["PeerService"], methods)
