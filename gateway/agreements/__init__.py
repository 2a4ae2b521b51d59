"""Bilateral agreements: strict files, canonical form, both parties' signatures, activation.

Load order, each stage accepting only what the previous one produced:
YAML text -> :class:`AgreementFile` (schema-valid, canonical form and digest)
-> signature verdicts against the pinned trust bundles -> :class:`LoadedAgreement`
(in force or not, and why). Exchange code only ever receives an agreement from
:meth:`AgreementRegistry.active_for`, which refuses one that is not in force.
"""

from gateway.agreements.canonical import canonical_bytes, digest_of
from gateway.agreements.loader import (
    AgreementFile,
    AgreementFileError,
    AgreementIssue,
    load_agreement,
    parse_agreement_text,
    sign_agreement,
)
from gateway.agreements.model import (
    EXCHANGES_VALIDATOR,
    Agreement,
    AgreementSignature,
    DeclaredStatus,
    OnwardTransfer,
)
from gateway.agreements.registry import (
    ActivationStatus,
    AgreementRegistry,
    InactiveReason,
    LoadedAgreement,
    SignatureVerdict,
    assess,
    check_signatures,
)

__all__ = [
    "EXCHANGES_VALIDATOR",
    "ActivationStatus",
    "Agreement",
    "AgreementFile",
    "AgreementFileError",
    "AgreementIssue",
    "AgreementRegistry",
    "AgreementSignature",
    "DeclaredStatus",
    "InactiveReason",
    "LoadedAgreement",
    "OnwardTransfer",
    "SignatureVerdict",
    "assess",
    "canonical_bytes",
    "check_signatures",
    "digest_of",
    "load_agreement",
    "parse_agreement_text",
    "sign_agreement",
]
