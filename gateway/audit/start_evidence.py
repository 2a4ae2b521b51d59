"""Evidence of what a start runs with: each agreement as loaded, and each key or
certificate that differs from the one the log last saw in its role."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.agreements.registry import LoadedAgreement
from gateway.audit.entry import Decision, EventKind
from gateway.audit.log import AuditLog
from gateway.audit.recorder import AuditRecorder, payload_digest
from gateway.events import Event, emit
from gateway.policy.rules import PolicySection


def record_start(
    audit: AuditRecorder,
    log: AuditLog,
    agreements: Iterable[LoadedAgreement[PolicySection]],
    certificates: Mapping[str, bytes],
) -> None:
    """Blocking. An ``AGREEMENT_LOADED`` entry for each of ``agreements`` (refused with
    its reason when it is not in force), and a ``KEY_CHANGED`` entry for each role in
    ``certificates`` (DER by role) whose certificate is not the one ``log`` last
    recorded for it; one event line each."""
    for loaded in agreements:
        reason = loaded.inactive_reason
        audit.record(
            EventKind.AGREEMENT_LOADED,
            Decision.ACCEPTED if reason is None else Decision.REFUSED,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            payload=loaded.canonical,
            reason_code=None if reason is None else reason.value,
        )
        emit(
            Event.AGREEMENT_LOADED if reason is None else Event.AGREEMENT_INACTIVE,
            agreement_id=loaded.id,
            agreement_version=loaded.version,
            reason=None if reason is None else reason.value,
        )
    seen = last_keys(log)
    for role, der in sorted(certificates.items()):
        emit(
            Event.KEY_LOADED
            if role in {"signing", "audit", "witness", "signing_pq", "audit_pq", "witness_pq"}
            else Event.CERTIFICATE_LOADED,
            kind=role,
        )
        if seen.get(role) != payload_digest(der):
            audit.record(EventKind.KEY_CHANGED, Decision.RECORDED, purpose=role, payload=der)


def last_keys(log: AuditLog) -> dict[str, str | None]:
    """The digest of the certificate last recorded in each role, by role."""
    seen: dict[str, str | None] = {}
    after: int | None = None
    while page := log.entries(event_kind=EventKind.KEY_CHANGED, after_idx=after, limit=1000):
        for record in page:
            seen[record.purpose or ""] = record.document().get("payload_digest")
        after = page[-1].idx
    return seen
