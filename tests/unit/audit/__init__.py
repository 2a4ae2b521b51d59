"""Tests of the audit log: RFC 6962 hashing and proofs, the stored tree, checkpoints.

Published RFC 6962 vectors live under ``tests/vectors/rfc6962/`` and are read through
``tests.vectors.load_vector``. The helpers here build entries for the stored log.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.audit.merkle import leaf_hash
from tests.vectors import load_vector

EPOCH = datetime(2024, 12, 9, 8, 0, 0, tzinfo=UTC)


def vector_leaves() -> list[bytes]:
    """The data of the eight leaves of the standard RFC 6962 test tree."""
    return [bytes.fromhex(leaf) for leaf in load_vector("rfc6962/tree_heads")["leaves"]]


def vector_leaf_hashes() -> list[bytes]:
    return [leaf_hash(data) for data in vector_leaves()]


def make_event(n: int, **overrides: Any) -> AuditEvent:
    """The ``n``-th made-up entry: a civil-record update sent from France to Germany."""
    fields: dict[str, Any] = {
        "time": EPOCH + timedelta(seconds=n),
        "event_kind": EventKind.SENT,
        "decision": Decision.ACCEPTED,
        "message_id": f"m-{n:06d}",
        "agreement_id": "FR-DE/civil-records",
        "agreement_version": 3,
        "exchange_type": "civil_record_update",
        "purpose": "civil-status-update",
        "peer_state": "DE",
        "principal": "registry-fr",
        "payload_digest": f"sha256:{n:064x}",
    }
    fields.update(overrides)
    return AuditEvent(**fields)


def raw_row(data: bytes) -> dict[str, Any]:
    """An ``audit_entries`` row whose leaf covers ``data`` itself, for test vectors."""
    return {
        "time": EPOCH,
        "event_kind": EventKind.ADMIN_ACTION.value,
        "decision": Decision.RECORDED.value,
        "canonical": data,
    }
