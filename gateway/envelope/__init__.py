"""Signed inter-state envelopes and receipts (DESIGN §3, "Message signatures").

Every envelope a state sends is signed by its message-signing key as a compact JWS
with detached payload (ES256) over the RFC 8785 canonical form of its header and
the payload's SHA-256, independently of TLS, so the evidence outlives the
connection. Every receipt is signed by the receiver and binds the request's
digest (:func:`envelope_digest`). Under an agreement with hybrid message signatures
both carry a second signature, ML-DSA-44 over the same signing input
(``pq_signature``), and each is valid only if both verify.

Stages: :class:`EnvelopeHeader` → :meth:`EnvelopeSigner.sign` → wire →
:meth:`EnvelopeVerifier.verify` → :class:`VerifiedEnvelope` →
:meth:`ReceiptSigner.sign_receipt` → wire → :func:`verify_receipt` →
:class:`VerifiedReceipt`.

Replay of a message id is deliberately not checked here: the inbox checks and
records ids in one transaction (see :mod:`gateway.envelope.verify`).

With :mod:`gateway.pki`, the only package allowed to import ``jwt`` and
``cryptography.hazmat``; within it only :mod:`gateway.envelope.jws` does.
"""

from gateway.envelope.header import (
    MALFORMED_ENVELOPE,
    EnvelopeHeader,
    envelope_digest,
    header_from_envelope,
    rfc3339_millis,
    signing_input,
    utc_millis,
)
from gateway.envelope.jws import (
    ENVELOPE_TYP,
    RECEIPT_TYP,
    PostQuantumSigningKey,
    StateSigningKey,
)
from gateway.envelope.receipt import (
    MALFORMED_RECEIPT,
    RECEIPT_MISMATCH,
    RECEIPT_PQ_SIGNATURE,
    RECEIPT_SIGNATURE,
    ReceiptMismatch,
    ReceiptSigner,
    VerifiedReceipt,
    verify_receipt,
)
from gateway.envelope.signing import EnvelopeSigner
from gateway.envelope.verify import (
    CLOCK_WINDOW,
    ENVELOPE_PQ_SIGNATURE,
    ENVELOPE_SIGNATURE,
    MISDIRECTED,
    SENDER_MISMATCH,
    UNKNOWN_SENDER,
    EnvelopeVerifier,
    MisdirectedEnvelope,
    StaleEnvelope,
    VerifiedEnvelope,
)

__all__ = [
    "CLOCK_WINDOW",
    "ENVELOPE_PQ_SIGNATURE",
    "ENVELOPE_SIGNATURE",
    "ENVELOPE_TYP",
    "MALFORMED_ENVELOPE",
    "MALFORMED_RECEIPT",
    "MISDIRECTED",
    "RECEIPT_MISMATCH",
    "RECEIPT_PQ_SIGNATURE",
    "RECEIPT_SIGNATURE",
    "RECEIPT_TYP",
    "SENDER_MISMATCH",
    "UNKNOWN_SENDER",
    "EnvelopeHeader",
    "EnvelopeSigner",
    "EnvelopeVerifier",
    "MisdirectedEnvelope",
    "PostQuantumSigningKey",
    "ReceiptMismatch",
    "ReceiptSigner",
    "StaleEnvelope",
    "StateSigningKey",
    "VerifiedEnvelope",
    "VerifiedReceipt",
    "envelope_digest",
    "header_from_envelope",
    "rfc3339_millis",
    "signing_input",
    "utc_millis",
    "verify_receipt",
]
