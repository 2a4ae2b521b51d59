"""The gateway's tables, as SQLAlchemy Core metadata: the model the migrations must build.

The schema is created and changed only by the Alembic migrations in
``gateway/store/migrations``; this module is what they are checked against
(``migrate.schema_drift`` must find no difference). Constraint and index names come
from one naming convention so that later migrations can name what they alter.

Every timestamp column is :class:`UTCDateTime`: it refuses naive datetimes on the way
in, stores UTC, and always hands back an aware UTC datetime, whatever the engine (SQLite
stores no offset; PostgreSQL answers in the session's time zone).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

VERSION_TABLE = "schema_info"
"""Alembic's version table; it belongs to the migrations, not to this metadata."""

MESSAGE_ID_LENGTH = 36
AGREEMENT_ID_LENGTH = 128
EXCHANGE_TYPE_LENGTH = 64
PURPOSE_LENGTH = 128
WORKER_ID_LENGTH = 128
STATUS_LENGTH = 16
DIRECTION_LENGTH = 16
KIND_LENGTH = 64
REASON_CODE_LENGTH = 64
CLIENT_REFERENCE_LENGTH = 128
PRINCIPAL_LENGTH = 200
AUDIT_TOKEN_LENGTH = 200
"""Longest identifier an audit entry accepts (``gateway.audit.entry``)."""
AUDIT_REASON_CODE_LENGTH = 128
HASH_LENGTH = 32
DIGEST_LENGTH = 71
"""A ``sha256:`` digest in hex."""
DIGEST_PATTERN: Final = re.compile(r"sha256:[0-9a-f]{64}")
"""The form of every digest stored and sent: ``sha256:`` and 64 lowercase hex."""
REQUEST_ID_LENGTH = 128
"""Longest request id a caller may give (``gateway.events``)."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored as UTC and read back as aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime has no place in the store: give a time zone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class OutboxStatus(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DEAD = "dead"


class InboxStatus(StrEnum):
    RECEIVED = "received"
    HANDED_OVER = "handed_over"
    ACKNOWLEDGED = "acknowledged"


class RegistryOutcome(StrEnum):
    """The partner registry's business answer to a civil-record update."""

    APPLIED = "applied"
    REJECTED = "rejected"


class LifecycleStatus(StrEnum):
    """How an agreement version left the active state; ``terminated`` is final."""

    SUSPENDED = "suspended"
    TERMINATED = "terminated"


def _one_of(column: str, values: type[StrEnum]) -> str:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({allowed})"


outbox = Table(
    "outbox",
    metadata,
    Column("message_id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), nullable=False),
    Column("agreement_version", Integer, nullable=False),
    Column("exchange_type", String(EXCHANGE_TYPE_LENGTH), nullable=False),
    Column("recipient_state", CHAR(2), nullable=False),
    Column("purpose", String(PURPOSE_LENGTH), nullable=False),
    # NULL once the payload was purged (agreement terminated, retention elapsed).
    Column("envelope", LargeBinary, nullable=True),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(WORKER_ID_LENGTH), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("last_error_reason", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("client_reference", String(CLIENT_REFERENCE_LENGTH), nullable=True),
    Column("principal", String(PRINCIPAL_LENGTH), nullable=True),
    Column("kind", String(KIND_LENGTH), nullable=True),
    Column("outcome", String(STATUS_LENGTH), nullable=True),
    Column("outcome_reason", Text, nullable=True),
    Column("outcome_at", UTCDateTime, nullable=True),
    # The partner's signed delivery receipt, serialized: evidence, never purged.
    Column("receipt", LargeBinary, nullable=True),
    Column("payload_purged_at", UTCDateTime, nullable=True),
    # The digest of the envelope as stored, which a receipt for those very bytes binds;
    # NULL on rows stored before it was kept (every attempt then signs afresh).
    Column("envelope_digest", String(DIGEST_LENGTH), nullable=True),
    # The request id of the submitting call, for the event lines of the later stages.
    Column("request_id", String(REQUEST_ID_LENGTH), nullable=True),
    CheckConstraint(_one_of("status", OutboxStatus), name="status"),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint(_one_of("outcome", RegistryOutcome), name="outcome"),
    # The dispatcher's claim query: due pending messages, oldest first.
    Index(None, "status", "next_attempt_at"),
    # Idempotent submission: one message per caller reference. Rows without a
    # reference (NULLs) never collide, on either engine.
    Index(None, "principal", "client_reference", unique=True),
    # Paging through the outbox in a stable order.
    Index(None, "created_at", "message_id"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("sender_state", CHAR(2), nullable=False),
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), nullable=False),
    Column("exchange_type", String(EXCHANGE_TYPE_LENGTH), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    # NULL once the payload was purged (agreement terminated, retention elapsed).
    Column("envelope", LargeBinary, nullable=True),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("registry_outcome", Text, nullable=True),
    Column("kind", String(KIND_LENGTH), nullable=True),
    Column("purpose", String(PURPOSE_LENGTH), nullable=True),
    Column("registry_reason", Text, nullable=True),
    Column("handed_over_at", UTCDateTime, nullable=True),
    # Whether the signed business acknowledgement went back to the sender.
    Column("ack_sent", Boolean, nullable=False, server_default=false()),
    Column("payload_purged_at", UTCDateTime, nullable=True),
    # The digest of the envelope as first stored, which the acknowledgement binds. NULL
    # only on rows finished before it was kept, whose payload was purged (0010).
    Column("request_digest", String(DIGEST_LENGTH), nullable=True),
    # Failed tries of the current stage (hand-over, then acknowledgement), when the
    # next is due, and why the message was given up at that stage (a dead letter).
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("dead_reason", Text, nullable=True),
    CheckConstraint(_one_of("status", InboxStatus), name="status"),
    # Finding what was received but not yet handed over to the registry, after a crash.
    Index(None, "status", "received_at"),
    # Finding the acknowledgements still owed to senders, after a crash.
    Index(None, "ack_sent", "received_at"),
)

quota_usage = Table(
    "quota_usage",
    metadata,
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), primary_key=True),
    # Sender to receiver, such as "AT->BE": each party's quota is counted apart.
    Column("direction", String(DIRECTION_LENGTH), primary_key=True),
    Column("purpose", String(PURPOSE_LENGTH), primary_key=True),
    # The UTC day the units were consumed on.
    Column("day", Date, primary_key=True),
    Column("used", Integer, nullable=False),
    CheckConstraint("used >= 0", name="used"),
)

agreement_lifecycle = Table(
    "agreement_lifecycle",
    metadata,
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), primary_key=True),
    Column("agreement_version", Integer, primary_key=True),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
    Column("changed_by_state", CHAR(2), nullable=False),
    Column("reason_code", String(REASON_CODE_LENGTH), nullable=False),
    # The signed notice that carried the change, when it came from the partner.
    Column("message_id", String(MESSAGE_ID_LENGTH), nullable=True),
    CheckConstraint(_one_of("status", LifecycleStatus), name="status"),
)


# The audit log (DESIGN section 6). Rows are only ever inserted: an entry, a node or a
# checkpoint never changes once committed; only ``published`` flips to true.

audit_entries = Table(
    "audit_entries",
    metadata,
    # The leaf index in the Merkle tree, assigned under the append lock: 0, 1, 2, ...
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    # The entry's time as its canonical encoding states it (millisecond precision).
    Column("time", UTCDateTime, nullable=False),
    Column("event_kind", String(KIND_LENGTH), nullable=False),
    Column("decision", String(STATUS_LENGTH), nullable=False),
    Column("message_id", String(AUDIT_TOKEN_LENGTH), nullable=True),
    Column("agreement_id", String(AUDIT_TOKEN_LENGTH), nullable=True),
    Column("agreement_version", Integer, nullable=True),
    Column("exchange_type", String(AUDIT_TOKEN_LENGTH), nullable=True),
    Column("purpose", String(AUDIT_TOKEN_LENGTH), nullable=True),
    Column("peer_state", CHAR(2), nullable=True),
    Column("principal", String(AUDIT_TOKEN_LENGTH), nullable=True),
    Column("reason_code", String(AUDIT_REASON_CODE_LENGTH), nullable=True),
    # The bytes the leaf covers; the columns above are a copy for filtering.
    Column("canonical", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(HASH_LENGTH), nullable=False),
    # Auditors' filters.
    Index(None, "time"),
    Index(None, "agreement_id"),
    Index(None, "peer_state"),
    Index(None, "event_kind"),
    Index(None, "message_id"),
)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    # Node (level, idx) covers leaves [idx * 2**level, (idx + 1) * 2**level); only
    # complete subtrees of level 1 and up are stored (level 0 is audit_entries.leaf_hash).
    Column("level", SmallInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("hash", LargeBinary(HASH_LENGTH), nullable=False),
    PrimaryKeyConstraint("level", "idx"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(HASH_LENGTH), nullable=False),
    # The checkpoint as a C2SP signed note, with our signature.
    Column("note", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # True once the partner's cosignature is also held.
    Column("published", Boolean, nullable=False, server_default=false()),
)

audit_cosignatures = Table(
    "audit_cosignatures",
    metadata,
    Column(
        "tree_size",
        BigInteger,
        ForeignKey("audit_checkpoints.tree_size"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("witness_state", CHAR(2), primary_key=True),
    # One C2SP tlog-cosignature signature line.
    Column("cosignature", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    # The last checkpoint a given partner cosigned.
    Index(None, "witness_state", "tree_size"),
)

audit_witness_cosignatures = Table(
    "audit_witness_cosignatures",
    metadata,
    Column(
        "tree_size",
        BigInteger,
        ForeignKey("audit_checkpoints.tree_size"),
        primary_key=True,
        autoincrement=False,
    ),
    # An external witness (c2sp.org/tlog-witness), by its key name.
    Column("witness_name", String(255), primary_key=True),
    # Its cosignature lines, one per key configured for it.
    Column("cosignature", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index(None, "witness_name", "tree_size"),
)

witnessed_checkpoints = Table(
    "witnessed_checkpoints",
    metadata,
    # The partner whose log we witness, and the latest checkpoint of it we cosigned.
    Column("partner_state", CHAR(2), primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary(HASH_LENGTH), nullable=False),
    Column("note", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


# Representation cases (DESIGN section 5). A case is one row here on each of the two
# gateways, kept in step by signed messages; what crossed (the minimised person and
# summary, notes, cost descriptions) is held sealed and purged like other payloads.


class CaseStatus(StrEnum):
    """A representation case's state; ``gateway.exchanges.case_machine`` moves it."""

    SUBMITTED = "submitted"
    ACKNOWLEDGED = "acknowledged"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


CASE_ID_LENGTH = 36


def _case_reference(*, primary_key: bool = False) -> Column[str]:
    """The case a row belongs to (part of the row's key, or a plain reference)."""
    return Column(
        "case_id",
        String(CASE_ID_LENGTH),
        ForeignKey("representation_cases.case_id"),
        primary_key=primary_key,
        nullable=False,
    )


CASE_EVENT_KIND_LENGTH = 32
CASE_DEADLINE_STEP_LENGTH = 32

representation_cases = Table(
    "representation_cases",
    metadata,
    Column("case_id", String(CASE_ID_LENGTH), primary_key=True),
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), nullable=False),
    Column("agreement_version", Integer, nullable=False),
    Column("requesting_state", CHAR(2), nullable=False),
    Column("representing_state", CHAR(2), nullable=False),
    Column("mission_country", CHAR(2), nullable=False),
    Column("kind", String(KIND_LENGTH), nullable=False),
    Column("purpose", String(PURPOSE_LENGTH), nullable=False),
    Column("state", String(STATUS_LENGTH), nullable=False),
    # The policy context every later message of the case is evaluated in: the legal
    # basis the request recorded, and whether the minors' rules govern it.
    Column("has_legal_basis", Boolean, nullable=False),
    Column("consent_recorded", Boolean, nullable=False),
    Column("rule_set", String(STATUS_LENGTH), nullable=False),
    # Sealed RFC 8785 JSON of the minimised person and summary; NULL once purged.
    Column("content", LargeBinary, nullable=True),
    Column("client_reference", String(CLIENT_REFERENCE_LENGTH), nullable=True),
    Column("principal", String(PRINCIPAL_LENGTH), nullable=True),
    # The last sequence number this gateway sent for the case, and the last one it
    # applied from the partner: messages of one case apply in order.
    Column("sent_seq", Integer, nullable=False),
    Column("received_seq", Integer, nullable=False),
    Column("event_count", Integer, nullable=False),
    # When the current step must be answered by, the step, and whether it was missed.
    Column("next_deadline", UTCDateTime, nullable=True),
    Column("deadline_step", String(CASE_DEADLINE_STEP_LENGTH), nullable=True),
    Column("deadline_missed", Boolean, nullable=False, server_default=false()),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("payload_purged_at", UTCDateTime, nullable=True),
    CheckConstraint(_one_of("state", CaseStatus), name="state"),
    CheckConstraint("sent_seq >= 0 AND received_seq >= 0", name="seq"),
    Index(None, "created_at", "case_id"),
    Index(None, "state"),
    Index(None, "next_deadline"),
    Index(None, "principal", "client_reference", unique=True),
)

case_events = Table(
    "case_events",
    metadata,
    _case_reference(primary_key=True),
    # 1, 2, 3 ... per case, assigned under the case row's lock: watchers read after it.
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("event_kind", String(CASE_EVENT_KIND_LENGTH), nullable=False),
    Column("state", String(STATUS_LENGTH), nullable=False),
    Column("actor_state", CHAR(2), nullable=True),
    Column("message_id", String(MESSAGE_ID_LENGTH), nullable=True),
    Column("occurred_at", UTCDateTime, nullable=False),
    # Events the registry or case system must hear of (from the partner, missed
    # deadlines), and when it did.
    Column("notify_registry", Boolean, nullable=False, server_default=false()),
    Column("registry_notified_at", UTCDateTime, nullable=True),
    # Failed hand-overs of the event, when the next is due, and why it was given up.
    Column("registry_attempts", Integer, nullable=False, server_default=text("0")),
    Column("registry_retry_at", UTCDateTime, nullable=True),
    Column("registry_dead_reason", Text, nullable=True),
    Index(None, "notify_registry", "registry_notified_at"),
)

case_notes = Table(
    "case_notes",
    metadata,
    Column("note_id", String(CASE_ID_LENGTH), primary_key=True),
    _case_reference(),
    Column("author_state", CHAR(2), nullable=False),
    # Sealed RFC 8785 JSON of the minimised note (text, attachments); NULL once purged.
    Column("content", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "case_id", "created_at"),
)

case_cost_claims = Table(
    "case_cost_claims",
    metadata,
    Column("claim_id", String(CASE_ID_LENGTH), primary_key=True),
    _case_reference(),
    Column("currency", CHAR(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    # Sealed description; NULL once purged.
    Column("description", LargeBinary, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("acknowledged_at", UTCDateTime, nullable=True),
    CheckConstraint("amount_minor > 0", name="amount"),
    Index(None, "case_id", "created_at"),
)

case_identity_links = Table(
    "case_identity_links",
    metadata,
    _case_reference(primary_key=True),
    Column("message_id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("linked_at", UTCDateTime, nullable=False),
)

IDENTITY_RESULT_LENGTH = 32

identity_queries = Table(
    "identity_queries",
    metadata,
    # The query envelope's id. On the responding side the insert is the replay guard:
    # an id is answered once, whoever asks again.
    Column("message_id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("direction", String(DIRECTION_LENGTH), nullable=False),
    Column("partner_state", CHAR(2), nullable=False),
    Column("agreement_id", String(AGREEMENT_ID_LENGTH), nullable=False),
    Column("purpose", String(PURPOSE_LENGTH), nullable=False),
    Column("kind", String(KIND_LENGTH), nullable=False),
    # The local caller (outbound only) and the representation case it was made for.
    Column("principal", String(PRINCIPAL_LENGTH), nullable=True),
    Column("case_id", String(CASE_ID_LENGTH), nullable=True),
    # Flags and a status only: an answer never holds a recorded value.
    Column("result", String(IDENTITY_RESULT_LENGTH), nullable=True),
    Column("document_status", String(IDENTITY_RESULT_LENGTH), nullable=True),
    Column("reason_code", String(REASON_CODE_LENGTH), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime, nullable=True),
    CheckConstraint("direction IN ('outbound', 'inbound')", name="direction"),
    Index(None, "case_id"),
    Index(None, "created_at", "message_id"),
)
