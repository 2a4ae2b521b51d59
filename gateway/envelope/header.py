"""The envelope header, its signing input and the digest receipts bind.

Guarantees:

* An :class:`EnvelopeHeader` is structurally valid by construction: a canonical
  lowercase UUID message id (so one id has one spelling and the inbox's replay
  check cannot be dodged by changing case), ISO 3166-1 alpha-2 state codes, a known
  exchange type, a bounded printable purpose, an agreement reference with a
  ``sha256:`` digest, and a timezone-aware UTC creation time with millisecond
  precision. A bad header is a bug on the sending side (:class:`ValueError`).
* :func:`header_from_envelope` applies the same rules to a header received off the
  wire and reports every broken rule at once as a
  :class:`~gateway.errors.ValidationRejected` with reason ``MALFORMED_ENVELOPE``,
  naming fields, never echoing their values.
* :func:`signing_input` is the RFC 8785 canonical JSON of ``{"v": 1}``, every header
  field and ``payload_sha256``. Every field of the protobuf envelope except the
  signatures (``signature``, ``pq_signature``) is covered by it: a timestamp finer
  than a millisecond would carry bits the signature does not cover, so it is refused
  rather than rounded. Both signatures cover the same input, so neither is part of
  what the other signs nor of the digest a receipt binds.
* :func:`envelope_digest` is recomputed from the envelope's fields, never taken
  from anything the sender states, so a receipt binds exactly what was signed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from google.protobuf import timestamp_pb2

from gateway import jcs
from gateway.errors import FieldViolation, ValidationRejected
from gateway.pki.identity import validate_state_code
from gateway.store.tables import DIGEST_PATTERN
from pouch.v1 import common_pb2, envelope_pb2

SIGNING_INPUT_VERSION: Final = 1
MALFORMED_ENVELOPE: Final = "MALFORMED_ENVELOPE"
MAX_PURPOSE_CHARS: Final = 128
MAX_AGREEMENT_ID_CHARS: Final = 128
MAX_PAYLOAD_TYPE_CHARS: Final = 256

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Printable ASCII without spaces: identifiers, never prose (and never personal data).
_TOKEN = re.compile(r"[\x21-\x7e]+")
_PROTOBUF_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_NANOS_PER_MILLI = 1_000_000
_UINT32_MAX = 2**32 - 1


def utc_millis(moment: datetime) -> datetime:
    """``moment`` in UTC truncated to the millisecond; a naive datetime is refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required (got a naive one)")
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def rfc3339_millis(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for an aware datetime (truncated to the millisecond)."""
    return utc_millis(moment).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def timestamp_of(moment: datetime) -> timestamp_pb2.Timestamp:
    """The protobuf timestamp of an aware datetime, at millisecond precision."""
    utc = utc_millis(moment)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(utc)
    return stamp


def datetime_of(stamp: timestamp_pb2.Timestamp) -> datetime | None:
    """The aware UTC datetime of a timestamp, or None unless it is in range and whole ms."""
    if not 0 <= stamp.nanos < 1_000_000_000 or stamp.nanos % _NANOS_PER_MILLI:
        return None
    try:
        seconds = datetime.fromtimestamp(stamp.seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return seconds + timedelta(milliseconds=stamp.nanos // _NANOS_PER_MILLI)


def is_canonical_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID in its one canonical spelling (lowercase, hyphenated):
    exactly the strings ``str(uuid.UUID(value)) == value`` holds for, without parsing."""
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


def is_state_code(value: str) -> bool:
    try:
        validate_state_code(value)
    except ValueError:
        return False
    return True


def exchange_type_name(value: int) -> str | None:
    """The enum name of a known, specified exchange type; None otherwise."""
    if value == common_pb2.EXCHANGE_TYPE_UNSPECIFIED:
        return None
    try:
        return common_pb2.ExchangeType.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return None


def _token_violation(field: str, value: str, limit: int) -> FieldViolation | None:
    if not value:
        return FieldViolation(field, "required")
    if len(value) > limit:
        return FieldViolation(field, f"at most {limit} characters")
    if _TOKEN.fullmatch(value) is None:
        return FieldViolation(field, "printable ASCII without spaces")
    return None


def header_violations(
    *,
    message_id: str,
    agreement_id: str,
    agreement_version: int,
    agreement_digest: str,
    exchange_type: int,
    purpose: str,
    sender_state: str,
    recipient_state: str,
    payload_type: str,
) -> list[FieldViolation]:
    """Every structural rule the header fields break (empty when valid).

    Field names are the protobuf envelope's paths; values are never echoed.
    """
    violations: list[FieldViolation] = []
    if not is_canonical_uuid(message_id):
        violations.append(FieldViolation("message_id", "a UUID in canonical lowercase form"))
    broken = _token_violation("agreement.id", agreement_id, MAX_AGREEMENT_ID_CHARS)
    if broken is not None:
        violations.append(broken)
    if not 1 <= agreement_version <= _UINT32_MAX:
        violations.append(FieldViolation("agreement.version", "required (at least 1)"))
    if DIGEST_PATTERN.fullmatch(agreement_digest) is None:
        violations.append(FieldViolation("agreement.digest", "'sha256:' and 64 lowercase hex"))
    if exchange_type_name(exchange_type) is None:
        violations.append(FieldViolation("exchange_type", "a known, specified exchange type"))
    broken = _token_violation("purpose", purpose, MAX_PURPOSE_CHARS)
    if broken is not None:
        violations.append(broken)
    for field, state in (("sender_state", sender_state), ("recipient_state", recipient_state)):
        if not is_state_code(state):
            violations.append(FieldViolation(field, "ISO 3166-1 alpha-2 code"))
    if len(payload_type) > MAX_PAYLOAD_TYPE_CHARS or _PROTOBUF_TYPE.fullmatch(payload_type) is None:
        violations.append(FieldViolation("payload_type", "a fully qualified protobuf type name"))
    return violations


@dataclass(frozen=True)
class EnvelopeHeader:
    """What an envelope says about its payload; all of it is signed."""

    message_id: str
    agreement_id: str
    agreement_version: int
    agreement_digest: str
    exchange_type: common_pb2.ExchangeType.ValueType
    purpose: str
    sender_state: str
    recipient_state: str
    created_at: datetime
    payload_type: str

    def __post_init__(self) -> None:
        violations = header_violations(
            message_id=self.message_id,
            agreement_id=self.agreement_id,
            agreement_version=self.agreement_version,
            agreement_digest=self.agreement_digest,
            exchange_type=self.exchange_type,
            purpose=self.purpose,
            sender_state=self.sender_state,
            recipient_state=self.recipient_state,
            payload_type=self.payload_type,
        )
        created = self.created_at
        if created.tzinfo is None or created.utcoffset() != timedelta(0):
            violations.append(FieldViolation("created_at", "a timezone-aware UTC datetime"))
        elif created.microsecond % 1000:
            violations.append(FieldViolation("created_at", "millisecond precision"))
        if violations:
            summary = "; ".join(f"{v.field}: {v.rule}" for v in violations)
            raise ValueError(f"invalid envelope header: {summary}")


def signing_input(header: EnvelopeHeader, payload: bytes) -> bytes:
    """The RFC 8785 canonical JSON the envelope's signature covers."""
    return jcs.dumps(
        {
            "v": SIGNING_INPUT_VERSION,
            "message_id": header.message_id,
            "agreement_id": header.agreement_id,
            "agreement_version": header.agreement_version,
            "agreement_digest": header.agreement_digest,
            "exchange_type": exchange_type_name(header.exchange_type),
            "purpose": header.purpose,
            "sender_state": header.sender_state,
            "recipient_state": header.recipient_state,
            "created_at": rfc3339_millis(header.created_at),
            "payload_type": header.payload_type,
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
    )


def digest_of(canonical: bytes) -> str:
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def header_from_envelope(envelope: envelope_pb2.Envelope) -> EnvelopeHeader:
    """The header an envelope carries, or ValidationRejected(MALFORMED_ENVELOPE)."""
    violations = header_violations(
        message_id=envelope.message_id,
        agreement_id=envelope.agreement.id,
        agreement_version=envelope.agreement.version,
        agreement_digest=envelope.agreement.digest,
        exchange_type=envelope.exchange_type,
        purpose=envelope.purpose,
        sender_state=envelope.sender_state,
        recipient_state=envelope.recipient_state,
        payload_type=envelope.payload_type,
    )
    if not envelope.HasField("agreement"):
        violations.insert(0, FieldViolation("agreement", "required"))
    created_at = datetime_of(envelope.created_at) if envelope.HasField("created_at") else None
    if created_at is None:
        violations.append(
            FieldViolation("created_at", "required, in range, with millisecond precision")
        )
    if violations or created_at is None:
        raise ValidationRejected(violations, reason=MALFORMED_ENVELOPE)
    return EnvelopeHeader(
        message_id=envelope.message_id,
        agreement_id=envelope.agreement.id,
        agreement_version=envelope.agreement.version,
        agreement_digest=envelope.agreement.digest,
        exchange_type=envelope.exchange_type,
        purpose=envelope.purpose,
        sender_state=envelope.sender_state,
        recipient_state=envelope.recipient_state,
        created_at=created_at,
        payload_type=envelope.payload_type,
    )


def envelope_digest(envelope: envelope_pb2.Envelope) -> str:
    """``sha256:`` hex of the signing input recomputed from the envelope's fields.

    This is the request digest a receipt binds. A malformed envelope has no digest
    (ValidationRejected, reason ``MALFORMED_ENVELOPE``).
    """
    return digest_of(signing_input(header_from_envelope(envelope), envelope.payload))
