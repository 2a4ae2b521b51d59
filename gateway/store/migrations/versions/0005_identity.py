"""Identity confirmations: one row per query, asked or answered (flags, never values).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity_queries",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("partner_state", sa.CHAR(2), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("case_id", sa.String(36), nullable=True),
        sa.Column("result", sa.String(32), nullable=True),
        sa.Column("document_status", sa.String(32), nullable=True),
        sa.Column("reason_code", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "direction IN ('outbound', 'inbound')", name=op.f("ck_identity_queries_direction")
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_identity_queries")),
    )
    op.create_index(op.f("ix_identity_queries_case_id"), "identity_queries", ["case_id"])
    op.create_index(
        op.f("ix_identity_queries_created_at_message_id"),
        "identity_queries",
        ["created_at", "message_id"],
    )


def downgrade() -> None:
    op.drop_table("identity_queries")
