"""Verifying inbound envelopes: the receiving gateway's first look at a partner's message.

Checks run in this order, each with a stable reason code, and the first failure
wins:

1. structure — ``MALFORMED_ENVELOPE`` (:class:`~gateway.errors.ValidationRejected`,
   naming every broken field, never echoing a value): canonical UUID message id,
   ISO 3166-1 alpha-2 states, known exchange type, purpose of 1..128 printable
   characters, agreement reference present, creation time at millisecond
   precision, payload type, payload at most ``max_payload_bytes``;
2. ``MISDIRECTED`` (:class:`MisdirectedEnvelope`): addressed to another state;
3. ``SENDER_MISMATCH`` (:class:`~gateway.errors.AuthenticationRejected`): the
   declared sender is not the TLS-authenticated peer, so one partner can never
   forward or forge traffic as another;
4. ``UNKNOWN_SENDER`` (AuthenticationRejected): no trust bundle for the sender;
5. ``CLOCK_WINDOW`` (:class:`StaleEnvelope`): created more than ``window_s``
   before or after the verifier's clock;
6. ``ENVELOPE_SIGNATURE`` (AuthenticationRejected): the detached JWS must be ES256
   under the sender's bundle signing certificate (``kid`` is its fingerprint; after a
   rotation, the replaced bundle's within its overlap window), the
   certificate valid now, and the signature valid over the signing input
   recomputed from the protobuf fields. Any field changed after signing
   (payload, purpose, states, agreement, time, type, id) fails here;
7. ``ENVELOPE_PQ_SIGNATURE`` (AuthenticationRejected): a ``pq_signature``, where
   there is one, must be ML-DSA-44 under the sender's bundle ML-DSA-44 signing
   certificate, over the same signing input. One that does not verify, or that the
   sender's bundle holds no key to check, is refused, whatever the agreement says:
   nothing unverified is carried along as if it were evidence.

Only a :class:`VerifiedEnvelope` leaves this module, so later stages cannot be
handed an unchecked envelope.

The :class:`VerifiedEnvelope` names the algorithms whose signatures verified. Whether
the agreement asks for both is the agreement stage's question, since only it knows the
agreement: :meth:`VerifiedEnvelope.require_hybrid` refuses a classical envelope under
an agreement with hybrid message signatures (``ENVELOPE_PQ_SIGNATURE``), so an
attacker who strips the ML-DSA-44 signature gains nothing.

Not checked here, by design: whether the message id was seen before. Replay
protection needs "check and record" to be one atomic step, so the inbox does it
when it stores the verified envelope; the clock window bounds how long it must
remember ids. Agreement, purpose and policy checks also belong to later stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

import grpc

from gateway.envelope.header import (
    MALFORMED_ENVELOPE,
    EnvelopeHeader,
    digest_of,
    header_from_envelope,
    is_state_code,
    signing_input,
)
from gateway.envelope.jws import (
    ALGORITHM,
    ENVELOPE_TYP,
    PQ_ALGORITHM,
    SignatureRefused,
    signer_among,
    verify_detached,
    verify_post_quantum,
)
from gateway.errors import AuthenticationRejected, FieldViolation, Rejected, ValidationRejected
from gateway.pki.bundle import TrustBundle
from gateway.pki.bundle_chain import PartnerBundles, verifying_bundles
from gateway.pki.keys import as_utc
from pouch.v1 import envelope_pb2

MISDIRECTED: Final = "MISDIRECTED"
SENDER_MISMATCH: Final = "SENDER_MISMATCH"
UNKNOWN_SENDER: Final = "UNKNOWN_SENDER"
CLOCK_WINDOW: Final = "CLOCK_WINDOW"
ENVELOPE_SIGNATURE: Final = "ENVELOPE_SIGNATURE"
ENVELOPE_PQ_SIGNATURE: Final = "ENVELOPE_PQ_SIGNATURE"


class MisdirectedEnvelope(Rejected):
    """The envelope is addressed to a state other than this gateway's."""

    reason = MISDIRECTED
    code = grpc.StatusCode.FAILED_PRECONDITION


class StaleEnvelope(Rejected):
    """The envelope's creation time is outside the accepted window around now."""

    reason = CLOCK_WINDOW
    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope whose structure, routing, freshness and signature were checked."""

    header: EnvelopeHeader
    payload: bytes
    #: ``sha256:`` hex of the signing input: what this state's receipt will bind.
    digest: str
    #: The algorithms whose signatures verified: ES256, and ML-DSA-44 for a hybrid one.
    signature_algorithms: tuple[str, ...]

    def require_hybrid(self) -> None:
        """:class:`~gateway.errors.AuthenticationRejected` (``ENVELOPE_PQ_SIGNATURE``)
        unless an ML-DSA-44 signature verified beside the ES256 one: what an agreement
        with hybrid message signatures asks of every envelope made under it."""
        if PQ_ALGORITHM not in self.signature_algorithms:
            raise AuthenticationRejected(
                "the agreement asks for hybrid signatures and the envelope carries no "
                "ML-DSA-44 signature",
                reason=ENVELOPE_PQ_SIGNATURE,
            )


class EnvelopeVerifier:
    """Verifies envelopes addressed to ``own_state`` from partners in ``bundles``.

    ``bundles`` maps a state code to that state's trust bundle; a
    :class:`~gateway.pki.bundle_chain.PartnerBundles` is held live, so a partner's
    announced bundle takes effect at once and the one it replaced verifies for the
    overlap window (the signature's ``kid`` picks which); any other mapping is copied.
    ``clock`` returns an aware datetime. The verifier holds no mutable state of its own
    and is safe to share across threads.
    """

    def __init__(
        self,
        own_state: str,
        bundles: Mapping[str, TrustBundle],
        *,
        window_s: float,
        max_payload_bytes: int,
        clock: Callable[[], datetime],
    ) -> None:
        if not is_state_code(own_state):
            raise ValueError(f"own_state {own_state!r} is not an ISO 3166-1 alpha-2 code")
        for state, bundle in bundles.items():
            if bundle.state != state:
                raise ValueError(f"bundle for {state} is the bundle of {bundle.state}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError("window_s must be a positive number of seconds")
        if max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        self._own_state = own_state
        # A PartnerBundles is live (a partner's announced bundle is taken at once); any
        # other mapping is copied.
        self._bundles: Mapping[str, TrustBundle] = (
            bundles if isinstance(bundles, PartnerBundles) else MappingProxyType(dict(bundles))
        )
        self._window_s = window_s
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock

    def verify(self, envelope: envelope_pb2.Envelope, *, peer_state: str) -> VerifiedEnvelope:
        """Check ``envelope`` received from the TLS-authenticated ``peer_state``."""
        violations: list[FieldViolation] = []
        header: EnvelopeHeader | None = None
        try:
            header = header_from_envelope(envelope)
        except ValidationRejected as e:
            violations.extend(e.violations)
        if len(envelope.payload) > self._max_payload_bytes:
            violations.append(FieldViolation("payload", f"at most {self._max_payload_bytes} bytes"))
        if not envelope.signature:
            violations.append(FieldViolation("signature", "required"))
        if violations or header is None:
            raise ValidationRejected(violations, reason=MALFORMED_ENVELOPE)

        if header.recipient_state != self._own_state:
            raise MisdirectedEnvelope(
                f"envelope is addressed to {header.recipient_state}, "
                f"this gateway serves {self._own_state}"
            )
        if header.sender_state != peer_state:
            raise AuthenticationRejected(
                f"envelope claims sender {header.sender_state} "
                f"but the authenticated peer is {peer_state}",
                reason=SENDER_MISMATCH,
            )
        if header.sender_state not in self._bundles:
            raise AuthenticationRejected(
                f"no trust bundle for sender {header.sender_state}", reason=UNKNOWN_SENDER
            )
        now = as_utc(self._clock())
        skew_s = (header.created_at - now).total_seconds()
        if abs(skew_s) > self._window_s:
            when = "in the future" if skew_s > 0 else "in the past"
            raise StaleEnvelope(
                f"envelope created_at is {abs(skew_s):.0f}s {when}; "
                f"the accepted window is ±{self._window_s:g}s"
            )
        canonical = signing_input(header, envelope.payload)
        bundle = signer_among(
            envelope.signature, verifying_bundles(self._bundles, header.sender_state, now)
        )
        try:
            verify_detached(
                envelope.signature,
                signing_input=canonical,
                certificate=bundle.signing_certificate,
                typ=ENVELOPE_TYP,
                now=now,
            )
        except SignatureRefused as e:
            raise AuthenticationRejected(
                f"envelope signature refused: {e}", reason=ENVELOPE_SIGNATURE
            ) from e
        algorithms: tuple[str, ...] = (ALGORITHM,)
        if envelope.pq_signature:
            try:
                verify_post_quantum(
                    envelope.pq_signature,
                    signing_input=canonical,
                    bundle=bundle,
                    typ=ENVELOPE_TYP,
                    now=now,
                )
            except SignatureRefused as e:
                raise AuthenticationRejected(
                    f"envelope post-quantum signature refused: {e}", reason=ENVELOPE_PQ_SIGNATURE
                ) from e
            algorithms = (ALGORITHM, PQ_ALGORITHM)
        return VerifiedEnvelope(
            header=header,
            payload=envelope.payload,
            digest=digest_of(canonical),
            signature_algorithms=algorithms,
        )
