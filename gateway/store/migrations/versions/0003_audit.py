"""The audit log: entries, Merkle nodes, checkpoints, cosignatures, witnessed checkpoints.

Revision ID: 0003
Revises: 0002
Create Date: 2024-12-09

Only new tables, spelled out here rather than created from ``tables.metadata`` (a
revision is a frozen record of one schema step). Integer keys are created without
autoincrement: the log assigns its indexes itself, under its append lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENTRY_INDEXES = ("time", "agreement_id", "peer_state", "event_kind", "message_id")


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_kind", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("agreement_id", sa.String(200), nullable=True),
        sa.Column("agreement_version", sa.Integer(), nullable=True),
        sa.Column("exchange_type", sa.String(200), nullable=True),
        sa.Column("purpose", sa.String(200), nullable=True),
        sa.Column("peer_state", sa.CHAR(2), nullable=True),
        sa.Column("principal", sa.String(200), nullable=True),
        sa.Column("reason_code", sa.String(128), nullable=True),
        sa.Column("canonical", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_audit_entries")),
    )
    for column in _ENTRY_INDEXES:
        op.create_index(op.f(f"ix_audit_entries_{column}"), "audit_entries", [column])

    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_nodes")),
    )

    op.create_table(
        "audit_checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_audit_checkpoints")),
    )

    op.create_table(
        "audit_cosignatures",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness_state", sa.CHAR(2), nullable=False),
        sa.Column("cosignature", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tree_size"],
            ["audit_checkpoints.tree_size"],
            name=op.f("fk_audit_cosignatures_tree_size_audit_checkpoints"),
        ),
        sa.PrimaryKeyConstraint("tree_size", "witness_state", name=op.f("pk_audit_cosignatures")),
    )
    op.create_index(
        op.f("ix_audit_cosignatures_witness_state_tree_size"),
        "audit_cosignatures",
        ["witness_state", "tree_size"],
    )

    op.create_table(
        "witnessed_checkpoints",
        sa.Column("partner_state", sa.CHAR(2), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partner_state", name=op.f("pk_witnessed_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("witnessed_checkpoints")
    op.drop_index(
        op.f("ix_audit_cosignatures_witness_state_tree_size"), table_name="audit_cosignatures"
    )
    op.drop_table("audit_cosignatures")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_nodes")
    for column in reversed(_ENTRY_INDEXES):
        op.drop_index(op.f(f"ix_audit_entries_{column}"), table_name="audit_entries")
    op.drop_table("audit_entries")
