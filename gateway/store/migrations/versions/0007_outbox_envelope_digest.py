"""The outbox keeps the digest of each envelope as stored, so that a first attempt can
send those very bytes and check the receipt against it without signing again.

Rows stored before this revision have none; the dispatcher signs them afresh on every
attempt, as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("envelope_digest", sa.String(71), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("envelope_digest")
