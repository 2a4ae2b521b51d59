"""Representation cases: the case, its events, notes, cost claims and identity links.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-13

Only new tables, spelled out here rather than created from ``tables.metadata`` (a
revision is a frozen record of one schema step). Columns holding what crossed between
the states (``content``, ``description``) hold sealed values and may be NULL once the
payload is purged; the rows stay as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CASE_STATES = (
    "submitted",
    "acknowledged",
    "accepted",
    "declined",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
)
_CASE_INDEXES: tuple[tuple[str, ...], ...] = (
    ("created_at", "case_id"),
    ("state",),
    ("next_deadline",),
)


def _case_fk() -> sa.Column[str]:
    return sa.Column("case_id", sa.String(36), nullable=False)


def upgrade() -> None:
    states = ", ".join(f"'{s}'" for s in _CASE_STATES)
    op.create_table(
        "representation_cases",
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("agreement_id", sa.String(128), nullable=False),
        sa.Column("agreement_version", sa.Integer(), nullable=False),
        sa.Column("requesting_state", sa.CHAR(2), nullable=False),
        sa.Column("representing_state", sa.CHAR(2), nullable=False),
        sa.Column("mission_country", sa.CHAR(2), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("has_legal_basis", sa.Boolean(), nullable=False),
        sa.Column("consent_recorded", sa.Boolean(), nullable=False),
        sa.Column("rule_set", sa.String(16), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("client_reference", sa.String(128), nullable=True),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("sent_seq", sa.Integer(), nullable=False),
        sa.Column("received_seq", sa.Integer(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("next_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline_step", sa.String(32), nullable=True),
        sa.Column("deadline_missed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload_purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN ({states})", name=op.f("ck_representation_cases_state")),
        sa.CheckConstraint(
            "sent_seq >= 0 AND received_seq >= 0", name=op.f("ck_representation_cases_seq")
        ),
        sa.PrimaryKeyConstraint("case_id", name=op.f("pk_representation_cases")),
    )
    for columns in _CASE_INDEXES:
        op.create_index(
            op.f(f"ix_representation_cases_{'_'.join(columns)}"),
            "representation_cases",
            list(columns),
        )
    op.create_index(
        op.f("ix_representation_cases_principal_client_reference"),
        "representation_cases",
        ["principal", "client_reference"],
        unique=True,
    )

    op.create_table(
        "case_events",
        _case_fk(),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event_kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor_state", sa.CHAR(2), nullable=True),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notify_registry", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("registry_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["representation_cases.case_id"],
            name=op.f("fk_case_events_case_id_representation_cases"),
        ),
        sa.PrimaryKeyConstraint("case_id", "seq", name=op.f("pk_case_events")),
    )
    op.create_index(
        op.f("ix_case_events_notify_registry_registry_notified_at"),
        "case_events",
        ["notify_registry", "registry_notified_at"],
    )

    op.create_table(
        "case_notes",
        sa.Column("note_id", sa.String(36), nullable=False),
        _case_fk(),
        sa.Column("author_state", sa.CHAR(2), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["representation_cases.case_id"],
            name=op.f("fk_case_notes_case_id_representation_cases"),
        ),
        sa.PrimaryKeyConstraint("note_id", name=op.f("pk_case_notes")),
    )
    op.create_index(
        op.f("ix_case_notes_case_id_created_at"), "case_notes", ["case_id", "created_at"]
    )

    op.create_table(
        "case_cost_claims",
        sa.Column("claim_id", sa.String(36), nullable=False),
        _case_fk(),
        sa.Column("currency", sa.CHAR(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_case_cost_claims_amount")),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["representation_cases.case_id"],
            name=op.f("fk_case_cost_claims_case_id_representation_cases"),
        ),
        sa.PrimaryKeyConstraint("claim_id", name=op.f("pk_case_cost_claims")),
    )
    op.create_index(
        op.f("ix_case_cost_claims_case_id_created_at"),
        "case_cost_claims",
        ["case_id", "created_at"],
    )

    op.create_table(
        "case_identity_links",
        _case_fk(),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["representation_cases.case_id"],
            name=op.f("fk_case_identity_links_case_id_representation_cases"),
        ),
        sa.PrimaryKeyConstraint("case_id", "message_id", name=op.f("pk_case_identity_links")),
    )


def downgrade() -> None:
    op.drop_table("case_identity_links")
    op.drop_index(op.f("ix_case_cost_claims_case_id_created_at"), table_name="case_cost_claims")
    op.drop_table("case_cost_claims")
    op.drop_index(op.f("ix_case_notes_case_id_created_at"), table_name="case_notes")
    op.drop_table("case_notes")
    op.drop_index(
        op.f("ix_case_events_notify_registry_registry_notified_at"), table_name="case_events"
    )
    op.drop_table("case_events")
    op.drop_index(
        op.f("ix_representation_cases_principal_client_reference"),
        table_name="representation_cases",
    )
    for columns in reversed(_CASE_INDEXES):
        op.drop_index(
            op.f(f"ix_representation_cases_{'_'.join(columns)}"), table_name="representation_cases"
        )
    op.drop_table("representation_cases")
