"""Our receipts, each signed with the algorithms its message's agreement asks for.

A receipt names no agreement, so the receiving gateway decides by the message it
answers: under an agreement with ``message_signatures: hybrid`` the receipt carries an
ML-DSA-44 signature beside the ES256 one, and the sender requires it; otherwise ES256
alone. The receiver (``Deliver``) and the acknowledger (the registry's later decision)
sign through one :class:`AgreementReceipts`, so the two cannot disagree.

    receipts = AgreementReceipts(ReceiptSigner.from_state_directory(pki),
                                 registry.hybrid_signatures)
    receipts.sign(agreement_id=..., message_id=..., request_digest=..., ...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway.envelope import ReceiptSigner
from pouch.v1 import envelope_pb2


@dataclass(frozen=True)
class AgreementReceipts:
    """``signer`` signs; ``hybrid_signatures`` tells, by agreement id, whether the
    agreement asks for hybrid message signatures
    (:meth:`~gateway.agreements.registry.AgreementRegistry.hybrid_signatures`)."""

    signer: ReceiptSigner
    hybrid_signatures: Callable[[str], bool]

    def sign(
        self,
        *,
        agreement_id: str,
        message_id: str,
        request_digest: str,
        outcome: envelope_pb2.ReceiptOutcome.ValueType,
        reason_code: str,
        issued_at: datetime,
    ) -> envelope_pb2.Receipt:
        """Our signed receipt for the message ``message_id`` under ``agreement_id``."""
        return self.signer.sign_receipt(
            message_id=message_id,
            request_digest=request_digest,
            outcome=outcome,
            reason_code=reason_code,
            issued_at=issued_at,
            hybrid=self.hybrid_signatures(agreement_id),
        )
