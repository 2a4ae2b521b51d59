"""One audit entry: a decision record that never holds personal data.

An entry says what happened to which message under which agreement, who acted and
what was decided, and which field *paths* the policy removed or transformed. It
never holds a value from a payload: the only trace of the payload is its digest.
The canonical encoding (version 1) is RFC 8785 JSON of the fields below, with
``v`` = 1; the Merkle leaf is ``SHA-256(0x00 || canonical)``. Changing a field's
meaning needs a new version, never an edit of this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from gateway import jcs

ENCODING_VERSION = 1
_STATE = re.compile(r"^[A-Z]{2}$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
_PATH = re.compile(r"^[a-z0-9_]+(\[\])?(\.[a-z0-9_]+(\[\])?)*$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,200}$")


class EventKind(StrEnum):
    SUBMITTED = "submitted"  # a local caller's request became a signed message in the outbox
    SENT = "sent"  # the partner signed for it (delivery receipt)
    RECEIVED = "received"  # a partner's envelope passed every check and was stored
    DELIVERED = "delivered"  # handed to our registry, with its decision
    RECEIPTED = "receipted"  # the partner's signed business decision reached us
    REFUSED = "refused"  # refused by validation, agreement, policy, replay or quota
    FAILED = "failed"  # a system fault (partner down, database busy)
    DEAD_LETTERED = "dead_lettered"
    CASE_TRANSITION = "case_transition"
    AGREEMENT_LOADED = "agreement_loaded"
    AGREEMENT_SUSPENDED = "agreement_suspended"
    AGREEMENT_RESUMED = "agreement_resumed"  # the party that suspended it lifted it
    AGREEMENT_TERMINATED = "agreement_terminated"
    KEY_CHANGED = "key_changed"
    ADMIN_ACTION = "admin_action"
    CHECKPOINT_REFUSED = "checkpoint_refused"


class Decision(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    APPLIED = "applied"
    REJECTED = "rejected"
    FAILED = "failed"
    RECORDED = "recorded"


def _optional(pattern: re.Pattern[str], value: str | None, name: str) -> None:
    if value is not None and not pattern.fullmatch(value):
        raise ValueError(f"audit entry field {name} breaks its rule")


@dataclass(frozen=True)
class AuditEvent:
    """What one entry records; values are checked so no free text can slip in."""

    time: datetime
    event_kind: EventKind
    decision: Decision
    message_id: str | None = None
    agreement_id: str | None = None
    agreement_version: int | None = None
    exchange_type: str | None = None
    purpose: str | None = None
    peer_state: str | None = None
    principal: str | None = None
    payload_digest: str | None = None
    reason_code: str | None = None
    removed_paths: tuple[str, ...] = field(default=())
    transformed_paths: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("audit entry time must be timezone-aware")
        _optional(_STATE, self.peer_state, "peer_state")
        _optional(_CODE, self.reason_code, "reason_code")
        for name in (
            "message_id",
            "agreement_id",
            "exchange_type",
            "purpose",
            "principal",
            "payload_digest",
        ):
            _optional(_TOKEN, getattr(self, name), name)
        for path in (*self.removed_paths, *self.transformed_paths):
            if not _PATH.fullmatch(path):
                raise ValueError("audit entry paths must be field paths, never values")

    def as_document(self) -> dict[str, Any]:
        moment = self.time.astimezone(UTC)
        return {
            "v": ENCODING_VERSION,
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "event_kind": self.event_kind.value,
            "decision": self.decision.value,
            "message_id": self.message_id,
            "agreement_id": self.agreement_id,
            "agreement_version": self.agreement_version,
            "exchange_type": self.exchange_type,
            "purpose": self.purpose,
            "peer_state": self.peer_state,
            "principal": self.principal,
            "payload_digest": self.payload_digest,
            "reason_code": self.reason_code,
            "removed_paths": sorted(self.removed_paths),
            "transformed_paths": sorted(self.transformed_paths),
        }

    def canonical(self) -> bytes:
        """The bytes the Merkle leaf covers."""
        return bytes(jcs.dumps(self.as_document()))
