"""Quotas, agreement lifecycle, and what the exchanges need of the outbox and inbox.

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-02

Adds ``quota_usage`` and ``agreement_lifecycle``; gives the outbox idempotent
submission (``principal``, ``client_reference``), the registry's outcome and the
partner's receipt; gives the inbox the hand-over and acknowledgement bookkeeping; and
lets both drop a payload (``envelope`` NULL) while keeping the row as evidence.

SQLite cannot change a column's nullability in place, so both tables are rebuilt there
by Alembic's batch mode. The rebuild copies from the 0001 definitions spelled out below
rather than from reflection, so the named CHECK constraints and the indexes survive it.
PostgreSQL gets plain ``ALTER TABLE`` statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OUTBOX_COLUMNS = (
    "client_reference",
    "principal",
    "kind",
    "outcome",
    "outcome_reason",
    "outcome_at",
    "receipt",
    "payload_purged_at",
)
_INBOX_COLUMNS = (
    "kind",
    "purpose",
    "registry_reason",
    "handed_over_at",
    "ack_sent",
    "payload_purged_at",
)


def upgrade() -> None:
    with op.batch_alter_table("outbox", copy_from=_outbox_0001()) as batch:
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("client_reference", sa.String(128), nullable=True))
        batch.add_column(sa.Column("principal", sa.String(200), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(64), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("outcome_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("receipt", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(
            op.f("ck_outbox_outcome"), "outcome IN ('applied', 'rejected')"
        )
        batch.create_index(
            op.f("ix_outbox_principal_client_reference"),
            ["principal", "client_reference"],
            unique=True,
        )
        batch.create_index(op.f("ix_outbox_created_at_message_id"), ["created_at", "message_id"])

    with op.batch_alter_table("inbox", copy_from=_inbox_0001()) as batch:
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(64), nullable=True))
        batch.add_column(sa.Column("purpose", sa.String(128), nullable=True))
        batch.add_column(sa.Column("registry_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("handed_over_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("ack_sent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(op.f("ix_inbox_ack_sent_received_at"), ["ack_sent", "received_at"])

    op.create_table(
        "quota_usage",
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "agreement_id", "direction", "purpose", "day", name=op.f("pk_quota_usage")
        ),
        sa.CheckConstraint("used >= 0", name=op.f("ck_quota_usage_used")),
    )

    op.create_table(
        "agreement_lifecycle",
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("agreement_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by_state", sa.CHAR(2), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint(
            "agreement_id", "agreement_version", name=op.f("pk_agreement_lifecycle")
        ),
        sa.CheckConstraint(
            "status IN ('suspended', 'terminated')", name=op.f("ck_agreement_lifecycle_status")
        ),
    )


def downgrade() -> None:
    """Back to 0001; refused while any payload is purged, since 0001 cannot hold that."""
    op.drop_table("agreement_lifecycle")
    op.drop_table("quota_usage")
    with op.batch_alter_table("inbox", copy_from=_inbox_0002()) as batch:
        batch.drop_index(op.f("ix_inbox_ack_sent_received_at"))
        for name in _INBOX_COLUMNS:
            batch.drop_column(name)
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table("outbox", copy_from=_outbox_0002()) as batch:
        batch.drop_index(op.f("ix_outbox_principal_client_reference"))
        batch.drop_index(op.f("ix_outbox_created_at_message_id"))
        batch.drop_constraint(op.f("ck_outbox_outcome"), type_="check")
        for name in _OUTBOX_COLUMNS:
            batch.drop_column(name)
        batch.alter_column("envelope", existing_type=sa.LargeBinary(), nullable=False)


def _outbox_0001(
    *extra: sa.Column[Any] | sa.Constraint | sa.Index, envelope_nullable: bool = False
) -> sa.Table:
    return sa.Table(
        "outbox",
        sa.MetaData(),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("agreement_version", sa.Integer(), nullable=False),
        sa.Column("exchange_type", sa.String(64), nullable=False),
        sa.Column("recipient_state", sa.CHAR(2), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=envelope_nullable),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        *extra,
        sa.PrimaryKeyConstraint("message_id", name="pk_outbox"),
        sa.CheckConstraint(
            "status IN ('pending', 'in_flight', 'delivered', 'dead')", name="ck_outbox_status"
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_outbox_attempts"),
        sa.Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )


def _outbox_0002() -> sa.Table:
    return _outbox_0001(
        sa.Column("client_reference", sa.String(128), nullable=True),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("outcome_reason", sa.Text(), nullable=True),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipt", sa.LargeBinary(), nullable=True),
        sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("outcome IN ('applied', 'rejected')", name="ck_outbox_outcome"),
        sa.Index(
            "ix_outbox_principal_client_reference", "principal", "client_reference", unique=True
        ),
        sa.Index("ix_outbox_created_at_message_id", "created_at", "message_id"),
        envelope_nullable=True,
    )


def _inbox_0001(
    *extra: sa.Column[Any] | sa.Constraint | sa.Index, envelope_nullable: bool = False
) -> sa.Table:
    return sa.Table(
        "inbox",
        sa.MetaData(),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("sender_state", sa.CHAR(2), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("exchange_type", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=envelope_nullable),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registry_outcome", sa.Text(), nullable=True),
        *extra,
        sa.PrimaryKeyConstraint("message_id", name="pk_inbox"),
        sa.CheckConstraint(
            "status IN ('received', 'handed_over', 'acknowledged')", name="ck_inbox_status"
        ),
        sa.Index("ix_inbox_status_received_at", "status", "received_at"),
    )


def _inbox_0002() -> sa.Table:
    return _inbox_0001(
        sa.Column("kind", sa.String(64), nullable=True),
        sa.Column("purpose", sa.String(128), nullable=True),
        sa.Column("registry_reason", sa.Text(), nullable=True),
        sa.Column("handed_over_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_sent", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index("ix_inbox_ack_sent_received_at", "ack_sent", "received_at"),
        envelope_nullable=True,
    )
