"""Every inbox row that can still say what its sender signed gets its request digest.

Rows stored before revision 0006 have no ``request_digest``. For each whose envelope is
still stored, the digest is computed exactly as the receiver computes it on arrival
(:func:`gateway.envelope.header.envelope_digest` of the envelope as stored, opened with
the sealing keys the migration is given in ``config.attributes["sealer"]``), in batches.
A sealed envelope and no keys stop the upgrade (nothing is changed): it is run again
with the keys, as a starting gateway does.

A row whose envelope was purged (or does not parse) has nothing left to compute the
digest from, and no receipt can ever be bound to it. If it is not finished (its
acknowledgement was not sent, and it was not given up) it is given up now, as a dead
letter with reason ``REQUEST_DIGEST_LOST``, for an operator to settle with the sender;
finished rows keep their NULL, which nothing reads again. From this revision on, every
row still owing an acknowledgement has its digest.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from google.protobuf.message import DecodeError

from gateway.envelope.header import envelope_digest
from gateway.errors import ValidationRejected
from gateway.pki.sealing import SEALED_VERSION, PayloadSealer
from pouch.v1 import envelope_pb2

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH_ROWS = 500
LOST_REASON = "REQUEST_DIGEST_LOST"

_inbox = sa.table(
    "inbox",
    sa.column("message_id", sa.String),
    sa.column("envelope", sa.LargeBinary),
    sa.column("request_digest", sa.String),
    sa.column("ack_sent", sa.Boolean),
    sa.column("dead_reason", sa.Text),
)


def upgrade() -> None:
    conn = op.get_bind()
    config = op.get_context().config
    sealer = None if config is None else config.attributes.get("sealer")
    if sealer is not None and not isinstance(sealer, PayloadSealer):
        raise TypeError("config.attributes['sealer'] must be a PayloadSealer")
    missing = (
        sa.select(_inbox.c.message_id, _inbox.c.envelope)
        .where(_inbox.c.request_digest.is_(None), _inbox.c.envelope.is_not(None))
        .order_by(_inbox.c.message_id)
        .limit(BATCH_ROWS)
    )
    fill = (
        sa.update(_inbox)
        .where(_inbox.c.message_id == sa.bindparam("target"))
        .values(request_digest=sa.bindparam("digest"))
    )
    after = ""
    while rows := conn.execute(missing.where(_inbox.c.message_id > after)).all():
        found = [
            {"target": message_id, "digest": _digest(message_id, bytes(stored), sealer)}
            for message_id, stored in rows
        ]
        computed = [row for row in found if row["digest"] is not None]
        if computed:
            conn.execute(fill, computed)
        after = rows[-1][0]
    conn.execute(
        sa.update(_inbox)
        .where(
            _inbox.c.request_digest.is_(None),
            _inbox.c.ack_sent == sa.false(),
            _inbox.c.dead_reason.is_(None),
        )
        .values(dead_reason=LOST_REASON)
    )


def downgrade() -> None:
    """Nothing to undo: a computed digest is what 0009 would have recomputed."""


def _digest(message_id: str, stored: bytes, sealer: PayloadSealer | None) -> str | None:
    """The digest the receiver kept for this envelope, or ``None`` if it does not parse."""
    if sealer is not None:
        plain = sealer.open(stored, aad=f"inbox:{message_id}")
    elif stored[:1] == bytes([SEALED_VERSION]):
        # No protobuf message begins with this byte (field number 0): the row is sealed.
        raise RuntimeError(
            "inbox rows stored before request digests were kept are sealed: "
            "migrate with the sealing keys (start the gateway, which migrates with them)"
        )
    else:
        plain = stored
    try:
        return envelope_digest(envelope_pb2.Envelope.FromString(plain))
    except (DecodeError, ValidationRejected):
        return None
