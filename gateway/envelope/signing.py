"""Signing outbound envelopes with the sending state's message-signing key.

Guarantees:

* :meth:`EnvelopeSigner.sign` only signs as its own state: a header naming another
  sender, or addressed to its own state, is a bug (:class:`ValueError`), never an
  envelope.
* The envelope it returns has every field filled, and its ``signature`` is a
  compact detached JWS (``typ`` ``pouch-envelope+jws``) over
  :func:`~gateway.envelope.header.signing_input` of exactly the header and payload
  it carries, so :func:`~gateway.envelope.header.envelope_digest` of the result is
  the digest a receipt for it must bind.
* Signed ``hybrid`` (an agreement with ``message_signatures: hybrid``), its
  ``pq_signature`` is the ML-DSA-44 token over the very same signing input; otherwise
  ``pq_signature`` is empty. A signer without an ML-DSA-44 key refuses to sign hybrid
  (:class:`ValueError`) rather than send a classical envelope the partner must refuse.
* A signer holds no mutable state; signing is CPU work and may run on worker
  threads (``asyncio.to_thread``) concurrently with one shared instance.
"""

from __future__ import annotations

from gateway.envelope.header import EnvelopeHeader, digest_of, signing_input, timestamp_of
from gateway.envelope.jws import ENVELOPE_TYP, StateSigningKey
from pouch.v1 import common_pb2, envelope_pb2


class EnvelopeSigner(StateSigningKey):
    """Signs envelopes as ``state``; build with :meth:`from_state_directory` in production."""

    def sign(
        self, header: EnvelopeHeader, payload: bytes, *, hybrid: bool = False
    ) -> envelope_pb2.Envelope:
        """The signed envelope carrying ``payload`` under ``header``; ``hybrid`` adds the
        ML-DSA-44 signature its agreement asks for."""
        return self.sign_with_digest(header, payload, hybrid=hybrid)[0]

    def sign_with_digest(
        self, header: EnvelopeHeader, payload: bytes, *, hybrid: bool = False
    ) -> tuple[envelope_pb2.Envelope, str]:
        """:meth:`sign`, and the envelope's digest (what :func:`envelope_digest` would
        recompute from it, and a receipt binds), from the signing input just made."""
        if header.sender_state != self.state:
            raise ValueError(
                f"signer of {self.state} cannot sign an envelope from {header.sender_state}"
            )
        if header.recipient_state == self.state:
            raise ValueError("an envelope must be addressed to another state")
        canonical = signing_input(header, payload)
        envelope = envelope_pb2.Envelope(
            message_id=header.message_id,
            agreement=common_pb2.AgreementRef(
                id=header.agreement_id,
                version=header.agreement_version,
                digest=header.agreement_digest,
            ),
            exchange_type=header.exchange_type,
            purpose=header.purpose,
            sender_state=header.sender_state,
            recipient_state=header.recipient_state,
            created_at=timestamp_of(header.created_at),
            payload=payload,
            payload_type=header.payload_type,
            signature=self.sign_detached(ENVELOPE_TYP, canonical),
            pq_signature=self.sign_pq_detached(ENVELOPE_TYP, canonical) if hybrid else "",
        )
        return envelope, digest_of(canonical)
