"""Receipts: the receiving state's signed answer, bound to the request it answers.

A receipt's signing input is the RFC 8785 canonical JSON of ``{"v": 1}`` and
every receipt field except ``signature`` and ``pq_signature`` (``issued_at`` as RFC
3339 with milliseconds and ``Z``, ``outcome`` by enum name), signed as a compact
detached JWS with ``typ`` ``pouch-receipt+jws`` by the receiver's message-signing
key; a receipt for a message under an agreement with hybrid message signatures
carries the same signing input signed with the receiver's ML-DSA-44 key too, in
``pq_signature``.

Guarantees:

* :meth:`ReceiptSigner.sign_receipt` signs as its own state only, with a fresh
  random receipt id, and refuses (:class:`ValueError`) what it could not later
  verify: a non-canonical message id, a malformed request digest, an unspecified
  outcome, a rejection without a reason code.
* :func:`verify_receipt` checks, in order: structure (``MALFORMED_RECEIPT``,
  :class:`~gateway.errors.ValidationRejected`), then the signature under the
  receiver's bundle signing certificate (``RECEIPT_SIGNATURE``,
  :class:`~gateway.errors.AuthenticationRejected`), then the ML-DSA-44 signature
  under the bundle's ML-DSA-44 signing certificate (``RECEIPT_PQ_SIGNATURE``,
  AuthenticationRejected): required with ``hybrid``, and checked wherever it is
  present (one that does not verify, or that the bundle holds no key for, is
  refused), then that the receipt answers
  this request: the expected message id, the expected request digest and the
  bundle's state as receiver (``RECEIPT_MISMATCH``, :class:`ReceiptMismatch`). A
  receipt for another request, even one genuinely signed, never counts.
* ``issued_at`` is not held to a window: a registry's answer may legitimately
  come days later. The receiving outbox decides what a late receipt means.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import grpc

from gateway import jcs
from gateway.envelope.header import (
    SIGNING_INPUT_VERSION,
    datetime_of,
    is_canonical_uuid,
    is_state_code,
    rfc3339_millis,
    timestamp_of,
)
from gateway.envelope.jws import (
    ALGORITHM,
    PQ_ALGORITHM,
    RECEIPT_TYP,
    SignatureRefused,
    StateSigningKey,
    signer_among,
    verify_detached,
    verify_post_quantum,
)
from gateway.errors import AuthenticationRejected, FieldViolation, Rejected, ValidationRejected
from gateway.pki.bundle import TrustBundle
from gateway.store.tables import DIGEST_PATTERN
from pouch.v1 import envelope_pb2

MALFORMED_RECEIPT: Final = "MALFORMED_RECEIPT"
RECEIPT_SIGNATURE: Final = "RECEIPT_SIGNATURE"
RECEIPT_PQ_SIGNATURE: Final = "RECEIPT_PQ_SIGNATURE"
RECEIPT_MISMATCH: Final = "RECEIPT_MISMATCH"
_REASON_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class ReceiptMismatch(Rejected):
    """A validly signed receipt that does not answer the request it is presented for."""

    reason = RECEIPT_MISMATCH
    code = grpc.StatusCode.FAILED_PRECONDITION


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose signature and binding to one request were checked."""

    receipt_id: str
    message_id: str
    request_digest: str
    receiver_state: str
    issued_at: datetime
    outcome: envelope_pb2.ReceiptOutcome.ValueType
    reason_code: str
    #: The algorithms whose signatures verified: ES256, and ML-DSA-44 for a hybrid one.
    signature_algorithms: tuple[str, ...]


def _outcome_name(outcome: int) -> str | None:
    if outcome == envelope_pb2.RECEIPT_OUTCOME_UNSPECIFIED:
        return None
    try:
        return envelope_pb2.ReceiptOutcome.Name(outcome)  # type: ignore[arg-type]
    except ValueError:
        return None


def _receipt_violations(
    *,
    receipt_id: str,
    message_id: str,
    request_digest: str,
    receiver_state: str,
    outcome: int,
    reason_code: str,
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for name, value in (("receipt_id", receipt_id), ("message_id", message_id)):
        if not is_canonical_uuid(value):
            violations.append(FieldViolation(name, "a UUID in canonical lowercase form"))
    if DIGEST_PATTERN.fullmatch(request_digest) is None:
        violations.append(FieldViolation("request_digest", "'sha256:' and 64 lowercase hex"))
    if not is_state_code(receiver_state):
        violations.append(FieldViolation("receiver_state", "ISO 3166-1 alpha-2 code"))
    if _outcome_name(outcome) is None:
        violations.append(FieldViolation("outcome", "a known, specified outcome"))
    if reason_code and _REASON_CODE.fullmatch(reason_code) is None:
        violations.append(FieldViolation("reason_code", "an UPPER_SNAKE_CASE code"))
    elif not reason_code and outcome == envelope_pb2.RECEIPT_OUTCOME_REJECTED:
        violations.append(FieldViolation("reason_code", "required when rejected"))
    return violations


def _receipt_signing_input(
    *,
    receipt_id: str,
    message_id: str,
    request_digest: str,
    receiver_state: str,
    issued_at: datetime,
    outcome: int,
    reason_code: str,
) -> bytes:
    return jcs.dumps(
        {
            "v": SIGNING_INPUT_VERSION,
            "receipt_id": receipt_id,
            "message_id": message_id,
            "request_digest": request_digest,
            "receiver_state": receiver_state,
            "issued_at": rfc3339_millis(issued_at),
            "outcome": _outcome_name(outcome),
            "reason_code": reason_code,
        }
    )


class ReceiptSigner(StateSigningKey):
    """Signs receipts as ``state`` with its message-signing key (as :class:`EnvelopeSigner`)."""

    def sign_receipt(
        self,
        *,
        message_id: str,
        request_digest: str,
        outcome: envelope_pb2.ReceiptOutcome.ValueType,
        reason_code: str,
        issued_at: datetime,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
        hybrid: bool = False,
    ) -> envelope_pb2.Receipt:
        """A signed receipt for the request ``message_id`` whose digest is ``request_digest``.

        ``issued_at`` must be aware; it is truncated to the millisecond. ``hybrid`` (the
        request's agreement asks for hybrid message signatures) adds the ML-DSA-44
        signature; without an ML-DSA-44 key that is a :class:`ValueError`.
        """
        receipt_id = str(new_id())
        violations = _receipt_violations(
            receipt_id=receipt_id,
            message_id=message_id,
            request_digest=request_digest,
            receiver_state=self.state,
            outcome=outcome,
            reason_code=reason_code,
        )
        if violations:
            summary = "; ".join(f"{v.field}: {v.rule}" for v in violations)
            raise ValueError(f"invalid receipt: {summary}")
        stamp = timestamp_of(issued_at)
        canonical = _receipt_signing_input(
            receipt_id=receipt_id,
            message_id=message_id,
            request_digest=request_digest,
            receiver_state=self.state,
            issued_at=stamp.ToDatetime(tzinfo=UTC),
            outcome=outcome,
            reason_code=reason_code,
        )
        return envelope_pb2.Receipt(
            receipt_id=receipt_id,
            message_id=message_id,
            request_digest=request_digest,
            receiver_state=self.state,
            issued_at=stamp,
            outcome=outcome,
            reason_code=reason_code,
            signature=self.sign_detached(RECEIPT_TYP, canonical),
            pq_signature=self.sign_pq_detached(RECEIPT_TYP, canonical) if hybrid else "",
        )


def verify_receipt(
    receipt: envelope_pb2.Receipt,
    *,
    receiver_bundle: TrustBundle,
    expected_message_id: str,
    expected_request_digest: str,
    now: datetime | None = None,
    hybrid: bool = False,
    in_overlap: Sequence[TrustBundle] = (),
) -> VerifiedReceipt:
    """Check ``receipt`` is ``receiver_bundle``'s state's answer to this very request.

    ``now`` (aware; default the system clock) is when the receiver's signing
    certificates must be valid. ``hybrid`` (the request's agreement asks for hybrid
    message signatures) requires the ML-DSA-44 signature as well. ``in_overlap`` are
    the receiver's bundles replaced by ``receiver_bundle`` and still in their overlap
    window: a receipt whose ``kid`` names one of their signing keys is checked with it.
    """
    violations = _receipt_violations(
        receipt_id=receipt.receipt_id,
        message_id=receipt.message_id,
        request_digest=receipt.request_digest,
        receiver_state=receipt.receiver_state,
        outcome=receipt.outcome,
        reason_code=receipt.reason_code,
    )
    issued_at = datetime_of(receipt.issued_at) if receipt.HasField("issued_at") else None
    if issued_at is None:
        violations.append(
            FieldViolation("issued_at", "required, in range, with millisecond precision")
        )
    if not receipt.signature:
        violations.append(FieldViolation("signature", "required"))
    if violations or issued_at is None:
        raise ValidationRejected(violations, reason=MALFORMED_RECEIPT)
    canonical = _receipt_signing_input(
        receipt_id=receipt.receipt_id,
        message_id=receipt.message_id,
        request_digest=receipt.request_digest,
        receiver_state=receipt.receiver_state,
        issued_at=issued_at,
        outcome=receipt.outcome,
        reason_code=receipt.reason_code,
    )
    moment = now if now is not None else datetime.now(UTC)
    signer = signer_among(receipt.signature, (receiver_bundle, *in_overlap))
    try:
        verify_detached(
            receipt.signature,
            signing_input=canonical,
            certificate=signer.signing_certificate,
            typ=RECEIPT_TYP,
            now=moment,
        )
    except SignatureRefused as e:
        raise AuthenticationRejected(
            f"receipt signature refused: {e}", reason=RECEIPT_SIGNATURE
        ) from e
    algorithms: tuple[str, ...] = (ALGORITHM,)
    if receipt.pq_signature or hybrid:
        try:
            verify_post_quantum(
                receipt.pq_signature,
                signing_input=canonical,
                bundle=signer,
                typ=RECEIPT_TYP,
                now=moment,
            )
        except SignatureRefused as e:
            raise AuthenticationRejected(
                f"receipt post-quantum signature refused: {e}", reason=RECEIPT_PQ_SIGNATURE
            ) from e
        algorithms = (ALGORITHM, PQ_ALGORITHM)
    if receipt.receiver_state != receiver_bundle.state:
        raise ReceiptMismatch(
            f"receipt is from {receipt.receiver_state}, expected {receiver_bundle.state}"
        )
    if receipt.message_id != expected_message_id:
        raise ReceiptMismatch("receipt answers another message id")
    if receipt.request_digest != expected_request_digest:
        raise ReceiptMismatch("receipt binds another request digest")
    return VerifiedReceipt(
        receipt_id=receipt.receipt_id,
        message_id=receipt.message_id,
        request_digest=receipt.request_digest,
        receiver_state=receipt.receiver_state,
        issued_at=issued_at,
        outcome=receipt.outcome,
        reason_code=receipt.reason_code,
        signature_algorithms=algorithms,
    )
