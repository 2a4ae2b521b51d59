"""Stored checkpoints: ours with the partner's cosignatures, and the partner's we witnessed.

Guarantees:

* :class:`CheckpointStore` keeps one checkpoint per tree size, never two: recording a
  second, different root for a size that already has one raises
  :class:`ForkedCheckpoint` (our own log would have forked), while recording the same
  one again changes nothing. A cosignature is kept once per witness state (or per
  external witness, by its key name), the first one staying. A checkpoint is marked
  published only once it holds a partner's cosignature.
* :class:`WitnessStore` keeps, per partner state, the latest checkpoint of the
  partner's log that we cosigned, and only ever moves it forward. Each move is one
  statement, so concurrent cosign requests cannot move it backwards:
  :meth:`WitnessStore.record_seen` moves to any larger tree size, and
  :meth:`WitnessStore.advance_seen` only from exactly the checkpoint the caller proved
  consistency against (compare-and-set), so two requests checked against the same old
  checkpoint cannot both be cosigned.

Signing, notes and consistency checks belong to the callers; this module stores what
they decided. Every method blocks; the async server calls them through
``asyncio.to_thread``. Database failures leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, Table, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping

from gateway.audit.merkle import HASH_SIZE
from gateway.store.engine import (
    insert_unless_present,
    is_postgresql,
    read_transaction,
    write_transaction,
)
from gateway.store.tables import (
    audit_checkpoints,
    audit_cosignatures,
    audit_witness_cosignatures,
    witnessed_checkpoints,
)

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "CosignedCheckpoint",
    "ForkedCheckpoint",
    "SeenCheckpoint",
    "WitnessStore",
]

_STATE_CODE = re.compile(r"[A-Z]{2}")
MAX_WITNESS_NAME_BYTES = 255


class ForkedCheckpoint(RuntimeError):
    """Two different roots for one tree size of our own log: it was rewritten."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of our log; ``note`` is the C2SP signed note carrying it."""

    tree_size: int
    root_hash: bytes
    note: str = field(repr=False)
    created_at: datetime
    published: bool

    @classmethod
    def from_row(cls, row: RowMapping) -> Checkpoint:
        return cls(
            tree_size=int(row["tree_size"]),
            root_hash=bytes(row["root_hash"]),
            note=row["note"],
            created_at=row["created_at"],
            published=bool(row["published"]),
        )


class CosignedCheckpoint(NamedTuple):
    tree_size: int
    root_hash: bytes


class SeenCheckpoint(NamedTuple):
    tree_size: int
    root_hash: bytes
    note: str


class CheckpointStore:
    """The checkpoints of our log and the cosignatures partner states returned for them."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def record_checkpoint(self, size: int, root_hash: bytes, note: str) -> bool:
        """Keep a signed checkpoint; ``True`` if new, ``False`` if already kept."""
        _check_checkpoint(size, root_hash, note)
        row = {
            "tree_size": size,
            "root_hash": root_hash,
            "note": note,
            "created_at": self._now(),
        }
        statement = insert_unless_present(self._engine, audit_checkpoints).values(row)
        with write_transaction(self._engine) as conn:
            if conn.execute(statement.returning(audit_checkpoints.c.tree_size)).first():
                return True
            kept = conn.execute(
                select(audit_checkpoints.c.root_hash).where(audit_checkpoints.c.tree_size == size)
            ).scalar_one()
        if bytes(kept) != root_hash:
            raise ForkedCheckpoint(f"tree size {size} already has a different root")
        return False

    def get(self, size: int) -> Checkpoint | None:
        query = select(audit_checkpoints).where(audit_checkpoints.c.tree_size == size)
        with read_transaction(self._engine) as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else Checkpoint.from_row(row)

    def latest(self, *, published_only: bool = False) -> Checkpoint | None:
        """The checkpoint of the largest tree size (among the published ones, if asked)."""
        query = select(audit_checkpoints).order_by(audit_checkpoints.c.tree_size.desc()).limit(1)
        if published_only:
            query = query.where(audit_checkpoints.c.published)
        with read_transaction(self._engine) as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else Checkpoint.from_row(row)

    def add_cosignature(self, size: int, witness_state: str, cosignature: str) -> bool:
        """Keep ``witness_state``'s cosignature lines of checkpoint ``size``; ``True`` if
        new. A second cosignature from the same state for the same checkpoint changes
        nothing."""
        _check_state("witness_state", witness_state)
        return self._keep(audit_cosignatures, {"witness_state": witness_state}, size, cosignature)

    def _keep(self, table: Table, cosigner: dict[str, str], size: int, cosignature: str) -> bool:
        """Insert one cosigner's lines of checkpoint ``size`` into ``table`` unless that
        cosigner's are there already; the checkpoint must have been recorded."""
        if not cosignature:
            raise ValueError("a cosignature must not be empty")
        row = {
            **cosigner,
            "tree_size": size,
            "cosignature": cosignature,
            "received_at": self._now(),
        }
        statement = insert_unless_present(self._engine, table).values(row)
        with write_transaction(self._engine) as conn:
            known = conn.execute(
                select(audit_checkpoints.c.tree_size).where(audit_checkpoints.c.tree_size == size)
            ).first()
            if known is None:
                raise ValueError(f"no checkpoint of tree size {size} was recorded")
            return conn.execute(statement.returning(table.c.tree_size)).first() is not None

    def cosignatures(self, size: int) -> dict[str, str]:
        """The cosignatures of checkpoint ``size``, by witness state."""
        query = select(audit_cosignatures.c.witness_state, audit_cosignatures.c.cosignature).where(
            audit_cosignatures.c.tree_size == size
        )
        with read_transaction(self._engine) as conn:
            return {state: text for state, text in conn.execute(query)}

    def add_witness_cosignature(self, size: int, witness_name: str, cosignature: str) -> bool:
        """Keep an external witness's cosignature lines of checkpoint ``size``; ``True``
        if new. A second answer of the same witness for the same checkpoint changes
        nothing."""
        if not 1 <= len(witness_name.encode("utf-8")) <= MAX_WITNESS_NAME_BYTES:
            raise ValueError(f"a witness name is 1 to {MAX_WITNESS_NAME_BYTES} bytes")
        return self._keep(
            audit_witness_cosignatures, {"witness_name": witness_name}, size, cosignature
        )

    def witness_cosignatures(self, size: int) -> dict[str, str]:
        """The external witnesses' cosignature lines of checkpoint ``size``, by name."""
        t = audit_witness_cosignatures.c
        query = select(t.witness_name, t.cosignature).where(t.tree_size == size)
        with read_transaction(self._engine) as conn:
            return {name: text for name, text in conn.execute(query)}

    def last_cosigned_by_witness(self, witness_name: str) -> CosignedCheckpoint | None:
        """The largest checkpoint the external witness ``witness_name`` cosigned."""
        t = audit_witness_cosignatures.c
        query = (
            select(audit_checkpoints.c.tree_size, audit_checkpoints.c.root_hash)
            .join(audit_witness_cosignatures, t.tree_size == audit_checkpoints.c.tree_size)
            .where(t.witness_name == witness_name)
            .order_by(audit_checkpoints.c.tree_size.desc())
            .limit(1)
        )
        with read_transaction(self._engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else CosignedCheckpoint(int(row[0]), bytes(row[1]))

    def mark_published(self, size: int) -> bool:
        """Mark checkpoint ``size`` published; ``True`` if this call did, ``False`` if done.

        Refused (``ValueError``) for a checkpoint that is unknown or holds no cosignature:
        a checkpoint signed only by us is not published.
        """
        c = audit_checkpoints.c
        cosigned = exists().where(audit_cosignatures.c.tree_size == c.tree_size)
        statement = (
            update(audit_checkpoints)
            .where(c.tree_size == size, ~c.published, cosigned)
            .values(published=True)
            .returning(c.tree_size)
        )
        with write_transaction(self._engine) as conn:
            if conn.execute(statement).first() is not None:
                return True
            current = conn.execute(select(c.published).where(c.tree_size == size)).first()
        if current is None:
            raise ValueError(f"no checkpoint of tree size {size} was recorded")
        if not current.published:
            raise ValueError(f"checkpoint {size} holds no cosignature: it cannot be published")
        return False

    def last_cosigned_by(self, witness_state: str) -> CosignedCheckpoint | None:
        """The largest checkpoint ``witness_state`` cosigned, with its root hash."""
        _check_state("witness_state", witness_state)
        query = (
            select(audit_checkpoints.c.tree_size, audit_checkpoints.c.root_hash)
            .join(
                audit_cosignatures,
                audit_cosignatures.c.tree_size == audit_checkpoints.c.tree_size,
            )
            .where(audit_cosignatures.c.witness_state == witness_state)
            .order_by(audit_checkpoints.c.tree_size.desc())
            .limit(1)
        )
        with read_transaction(self._engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else CosignedCheckpoint(int(row[0]), bytes(row[1]))

    def _now(self) -> datetime:
        return self._clock()


class WitnessStore:
    """The latest checkpoint of each partner's log that we cosigned as its witness."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def last_seen(self, partner_state: str) -> SeenCheckpoint | None:
        _check_state("partner_state", partner_state)
        t = witnessed_checkpoints.c
        query = select(t.tree_size, t.root_hash, t.note).where(t.partner_state == partner_state)
        with read_transaction(self._engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else SeenCheckpoint(int(row[0]), bytes(row[1]), row[2])

    def record_seen(self, partner_state: str, size: int, root_hash: bytes, note: str) -> bool:
        """Keep this checkpoint if its tree is larger than the one kept; ``True`` if kept.

        One statement: of concurrent calls, the kept size only ever grows.
        """
        row = self._row(partner_state, size, root_hash, note)
        dialect = postgresql if is_postgresql(self._engine) else sqlite
        insert = dialect.insert(witnessed_checkpoints).values(row)
        statement = insert.on_conflict_do_update(
            index_elements=[witnessed_checkpoints.c.partner_state],
            set_={name: insert.excluded[name] for name in row if name != "partner_state"},
            where=witnessed_checkpoints.c.tree_size < insert.excluded.tree_size,
        ).returning(witnessed_checkpoints.c.partner_state)
        with write_transaction(self._engine) as conn:
            return conn.execute(statement).first() is not None

    def advance_seen(
        self,
        partner_state: str,
        *,
        from_size: int | None,
        size: int,
        root_hash: bytes,
        note: str,
    ) -> bool:
        """Move from exactly checkpoint ``from_size`` (``None``: none yet) to this one.

        ``True`` if moved; ``False`` if another request moved it first, in which case
        the caller must check consistency again against the new last-seen checkpoint.
        """
        row = self._row(partner_state, size, root_hash, note)
        t = witnessed_checkpoints.c
        with write_transaction(self._engine) as conn:
            if from_size is None:
                statement = insert_unless_present(self._engine, witnessed_checkpoints).values(row)
                return conn.execute(statement.returning(t.partner_state)).first() is not None
            if size <= from_size:
                raise ValueError("a witnessed checkpoint only moves to a larger tree")
            moved = conn.execute(
                update(witnessed_checkpoints)
                .where(t.partner_state == partner_state, t.tree_size == from_size)
                .values(row)
                .returning(t.partner_state)
            ).first()
            return moved is not None

    def _row(self, partner_state: str, size: int, root_hash: bytes, note: str) -> dict[str, Any]:
        _check_state("partner_state", partner_state)
        _check_checkpoint(size, root_hash, note)
        return {
            "partner_state": partner_state,
            "tree_size": size,
            "root_hash": root_hash,
            "note": note,
            "updated_at": self._clock(),
        }


def _check_state(name: str, value: str) -> None:
    if not _STATE_CODE.fullmatch(value):
        raise ValueError(f"{name} must be a two-letter upper-case state code")


def _check_checkpoint(size: int, root_hash: bytes, note: str) -> None:
    if size < 0:
        raise ValueError("a tree size is never negative")
    if len(root_hash) != HASH_SIZE:
        raise ValueError(f"a root hash is {HASH_SIZE} bytes")
    if not note:
        raise ValueError("a checkpoint note must not be empty")
