"""Outbox and inbox for civil-record updates.

Revision ID: 0001
Revises:
Create Date: 2024-11-22

The tables are spelled out here rather than created from ``tables.metadata``: a
revision is a frozen record of one schema step, and later revisions diff against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("agreement_version", sa.Integer(), nullable=False),
        sa.Column("exchange_type", sa.String(64), nullable=False),
        sa.Column("recipient_state", sa.CHAR(2), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
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
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_outbox")),
        sa.CheckConstraint(
            "status IN ('pending', 'in_flight', 'delivered', 'dead')",
            name=op.f("ck_outbox_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_attempts")),
    )
    op.create_index(
        op.f("ix_outbox_status_next_attempt_at"),
        "outbox",
        ["status", "next_attempt_at"],
    )

    op.create_table(
        "inbox",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("sender_state", sa.CHAR(2), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("exchange_type", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registry_outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_inbox")),
        sa.CheckConstraint(
            "status IN ('received', 'handed_over', 'acknowledged')",
            name=op.f("ck_inbox_status"),
        ),
    )
    op.create_index(
        op.f("ix_inbox_status_received_at"),
        "inbox",
        ["status", "received_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_inbox_status_received_at"), table_name="inbox")
    op.drop_table("inbox")
    op.drop_index(op.f("ix_outbox_status_next_attempt_at"), table_name="outbox")
    op.drop_table("outbox")
