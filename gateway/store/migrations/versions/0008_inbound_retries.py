"""Hand-over, acknowledgements and case events retry with backoff and end: each inbox row
and each case event the registry must hear of keeps its attempts, when it is tried
next, and why it was given up (a dead letter), like the outbox does.

Rows stored before this revision start with no attempts and are due at once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "inbox", sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0"))
    )
    op.add_column("inbox", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("inbox", sa.Column("dead_reason", sa.Text, nullable=True))
    op.add_column(
        "case_events",
        sa.Column("registry_attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "case_events", sa.Column("registry_retry_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("case_events", sa.Column("registry_dead_reason", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case_events") as batch:
        for name in ("registry_dead_reason", "registry_retry_at", "registry_attempts"):
            batch.drop_column(name)
    with op.batch_alter_table("inbox") as batch:
        for name in ("dead_reason", "next_attempt_at", "attempts"):
            batch.drop_column(name)
