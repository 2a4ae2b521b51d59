"""Cosignatures of our checkpoints by external witnesses (c2sp.org/tlog-witness).

A partner cosigns as a state (``audit_cosignatures.witness_state``, two letters); an
external witness is named by its key name, up to 255 bytes, so its cosignatures have a
table of their own with the same shape.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_witness_cosignatures",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness_name", sa.String(255), nullable=False),
        sa.Column("cosignature", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tree_size"],
            ["audit_checkpoints.tree_size"],
            name=op.f("fk_audit_witness_cosignatures_tree_size_audit_checkpoints"),
        ),
        sa.PrimaryKeyConstraint(
            "tree_size", "witness_name", name=op.f("pk_audit_witness_cosignatures")
        ),
    )
    op.create_index(
        op.f("ix_audit_witness_cosignatures_witness_name_tree_size"),
        "audit_witness_cosignatures",
        ["witness_name", "tree_size"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_audit_witness_cosignatures_witness_name_tree_size"),
        table_name="audit_witness_cosignatures",
    )
    op.drop_table("audit_witness_cosignatures")
