"""The audit log: audit entries as the leaves of one RFC 6962 Merkle tree, in the database.

Guarantees:

* :meth:`AuditLog.append` stores a batch of entries at consecutive indexes in one
  transaction, and returns only after it is committed. Indexes are assigned under a
  lock held to the commit: a transaction-scoped PostgreSQL advisory lock (keyed on the
  schema, so each schema is its own log) or SQLite's ``BEGIN IMMEDIATE``. Replicas
  sharing one PostgreSQL database therefore append to one tree, without gaps and
  without forks; the primary key on the index would refuse a fork even if the lock
  were bypassed.
* The same transaction stores the hash of every subtree the batch completes
  (``audit_nodes``; leaf hashes live with their entries). Entries and nodes are only
  ever inserted, so a node once stored is that subtree's hash forever.
* The log remembers the tree's frontier (the complete subtrees a next entry attaches
  to) as of its own last committed append. An append uses it only when the stored size
  is still that size; entries are insert-only, so the frontier of a committed size never
  changes. Otherwise (another replica appended, or this one outside a group
  transaction) it reads the frontier's nodes again.
* Roots and proofs are read from stored nodes, ``O(log n)`` of them in one or two
  queries: the tree is never rebuilt. Any size up to the current one can be asked for.
* A stored entry's columns are copies of its event for filtering; the leaf covers the
  canonical bytes, and :meth:`AuditLog.verify_stored_entry` checks they still hash to
  the stored leaf.

Every method blocks; the async server calls them through ``asyncio.to_thread``.
Database failures leave as :class:`gateway.errors.StorageUnavailable`.
:class:`GroupCommittedLog` appends through a :class:`~gateway.store.group_commit.GroupCommit`,
so the entries of many concurrent requests share one commit.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, false, func, insert, or_, select
from sqlalchemy.engine import RowMapping

from gateway.audit import merkle
from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.store.engine import is_postgresql, read_transaction, write_transaction
from gateway.store.group_commit import GroupCommit, after_commit, defer
from gateway.store.prepared import Prepared
from gateway.store.tables import audit_entries, audit_nodes

__all__ = ["MAX_PAGE", "AuditLog", "AuditLogCorrupted", "AuditRecord", "GroupCommittedLog"]

MAX_PAGE = 1000
"""Largest page :meth:`AuditLog.entries` returns."""

# First key of the two-key advisory lock: "Audi". The second is the schema's hash, as
# for migrations, so separate schemas in one database are separate logs.
_APPEND_LOCK_CLASS = 0x41756469
# Leaves per INSERT batch when a caller appends a very large batch (the bulk path).
_INSERT_CHUNK = 10_000


class AuditLogCorrupted(RuntimeError):
    """A node the stored tree must hold is missing: the log was damaged outside the gateway."""


@dataclass(frozen=True)
class AuditRecord:
    """One stored entry: its index, the bytes its leaf covers, and columns copied from them."""

    idx: int
    time: datetime
    event_kind: EventKind
    decision: Decision
    message_id: str | None
    agreement_id: str | None
    agreement_version: int | None
    exchange_type: str | None
    purpose: str | None
    peer_state: str | None
    principal: str | None
    reason_code: str | None
    canonical: bytes = field(repr=False)
    leaf_hash: bytes = field(repr=False)

    def document(self) -> dict[str, Any]:
        """The entry as its canonical JSON says it (the fields the leaf covers)."""
        parsed = json.loads(self.canonical)
        if not isinstance(parsed, dict):
            raise AuditLogCorrupted(f"entry {self.idx} is not a JSON object")
        return parsed


class AuditLog:
    """The audit log of one state; replicas sharing a PostgreSQL database share it.

    ``clock`` is accepted like every store's, though entries carry their own time.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        self._frontier_lock = threading.Lock()
        self._frontier: tuple[int, dict[tuple[int, int], bytes]] = (0, {})

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Store ``events`` at the next consecutive indexes, in one transaction; return them."""
        return self._append_rows([_row(event) for event in events])

    def _append_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append entries given as ``audit_entries`` rows without ``idx`` and ``leaf_hash``.

        The leaf covers ``row["canonical"]``, whatever it holds: tests use this to append
        published test-vector leaves, and the benchmark to build a large log quickly.
        """
        if not rows:
            return []
        with write_transaction(self._engine) as conn:
            indexes, remember = self._extend(conn, rows)
        remember()  # committed: the next append attaches here without reading the tree
        return indexes

    def append_within(self, conn: Connection, events: Sequence[AuditEvent]) -> None:
        """:meth:`append` inside the caller's write transaction, so entries commit with the
        change they record, or not at all. In a group transaction the entries of all its
        units are appended together just before the commit (one index lookup, one tree
        extension), in the order of the units."""
        defer(conn, self._append_rows_within, [_row(event) for event in events])

    def _append_rows_within(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        if not rows:
            return []
        indexes, remember = self._extend(conn, rows)
        after_commit(conn, remember)
        return indexes

    def _extend(
        self, conn: Connection, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[int], Callable[[], None]]:
        """Write ``rows`` at the next indexes; their indexes, and what remembers the tree's
        new frontier, to be called only once the transaction has committed."""
        if is_postgresql(self._engine):
            conn.execute(
                select(
                    func.pg_advisory_xact_lock(
                        _APPEND_LOCK_CLASS, func.hashtext(func.current_schema())
                    )
                )
            )
        start = _size(conn)
        leaves = [merkle.leaf_hash(bytes(row["canonical"])) for row in rows]
        entries = [
            {**row, "idx": start + offset, "leaf_hash": leaf}
            for offset, (row, leaf) in enumerate(zip(rows, leaves, strict=True))
        ]
        with self._frontier_lock:
            known_size, known = self._frontier
        attach_to = known if known_size == start else _fetch(conn, _frontier_nodes(start))
        completed = merkle.extend(start, leaves, _accessor(attach_to))
        nodes = [
            {"level": level, "idx": index, "hash": digest} for (level, index), digest in completed
        ]
        end = start + len(rows)
        reachable = {**attach_to, **dict(completed)}
        reachable.update(((0, start + offset), leaf) for offset, leaf in enumerate(leaves))
        frontier = {node: reachable[node] for node in _frontier_nodes(end)}
        for chunk in range(0, len(entries), _INSERT_CHUNK):
            _INSERT_ENTRIES.execute_many(conn, entries[chunk : chunk + _INSERT_CHUNK])
        for chunk in range(0, len(nodes), _INSERT_CHUNK):
            _INSERT_NODES.execute_many(conn, nodes[chunk : chunk + _INSERT_CHUNK])
        return list(range(start, end)), lambda: self._remember_frontier(end, frontier)

    def _remember_frontier(self, size: int, frontier: dict[tuple[int, int], bytes]) -> None:
        with self._frontier_lock:
            if size > self._frontier[0]:
                self._frontier = (size, frontier)

    def size(self) -> int:
        """How many entries the log holds; the tree size of its latest root."""
        with read_transaction(self._engine) as conn:
            return _size(conn)

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the tree of the first ``size`` entries (default: all of them)."""
        with read_transaction(self._engine) as conn:
            if size is None:
                size = _size(conn)
            self._require_size(conn, size)
            return merkle.root(size, _accessor(_fetch(conn, merkle.root_nodes(size))))

    def inclusion_proof(self, idx: int, size: int) -> list[bytes]:
        """The audit path of entry ``idx`` in the tree of ``size`` entries, bottom up."""
        if not 0 <= idx < size:
            raise ValueError(f"entry {idx} is not in a tree of size {size}")
        with read_transaction(self._engine) as conn:
            self._require_size(conn, size)
            stored = _fetch(conn, merkle.inclusion_nodes(idx, size))
        return merkle.inclusion_proof(idx, size, _accessor(stored))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The proof that the tree of ``size1`` entries is a prefix of that of ``size2``."""
        if not 0 <= size1 <= size2:
            raise ValueError("a consistency proof needs 0 <= size1 <= size2")
        with read_transaction(self._engine) as conn:
            self._require_size(conn, size2)
            stored = _fetch(conn, merkle.consistency_nodes(size1, size2))
        return merkle.consistency_proof(size1, size2, _accessor(stored))

    def entry(self, idx: int) -> AuditRecord | None:
        with read_transaction(self._engine) as conn:
            row = conn.execute(select(audit_entries).where(audit_entries.c.idx == idx)).first()
        return None if row is None else _record(row._mapping)

    def entries(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agreement_id: str | None = None,
        exchange_type: str | None = None,
        peer_state: str | None = None,
        event_kind: EventKind | str | None = None,
        message_id: str | None = None,
        agreement_ids: Collection[str] | None = None,
        after_idx: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Entries matching every given filter, in index order, after ``after_idx``.

        ``since`` is inclusive and ``until`` exclusive. ``agreement_ids`` restricts the
        answer to those agreements (an auditor's scope); an empty collection matches
        nothing. Page on with the last index returned as ``after_idx``.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE}")
        c = audit_entries.c
        conditions: list[ColumnElement[bool]] = []
        if since is not None:
            conditions.append(c.time >= since)
        if until is not None:
            conditions.append(c.time < until)
        for column, value in (
            (c.agreement_id, agreement_id),
            (c.exchange_type, exchange_type),
            (c.peer_state, peer_state),
            (c.message_id, message_id),
            (c.event_kind, None if event_kind is None else EventKind(event_kind).value),
        ):
            if value is not None:
                conditions.append(column == value)
        if agreement_ids is not None:
            scope = sorted(set(agreement_ids))
            conditions.append(c.agreement_id.in_(scope) if scope else false())
        if after_idx is not None:
            conditions.append(c.idx > after_idx)
        query = select(audit_entries).where(*conditions).order_by(c.idx).limit(limit)
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [_record(row) for row in rows]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """The stored leaf hashes of entries ``[start, end)``, in index order."""
        if not 0 <= start <= end:
            raise ValueError("a range needs 0 <= start <= end")
        query = (
            select(audit_entries.c.leaf_hash)
            .where(audit_entries.c.idx >= start, audit_entries.c.idx < end)
            .order_by(audit_entries.c.idx)
        )
        with read_transaction(self._engine) as conn:
            hashes = [bytes(h) for h in conn.execute(query).scalars()]
        if len(hashes) != end - start:
            raise ValueError(f"the log does not hold every entry of [{start}, {end})")
        return hashes

    def verify_stored_entry(self, idx: int) -> bool:
        """Whether entry ``idx``'s canonical bytes still hash to its stored leaf."""
        record = self.entry(idx)
        if record is None:
            raise ValueError(f"the log holds no entry {idx}")
        return merkle.leaf_hash(record.canonical) == record.leaf_hash

    @staticmethod
    def _require_size(conn: Connection, size: int) -> None:
        if size < 0:
            raise ValueError("a tree size is never negative")
        current = _size(conn)
        if size > current:
            raise ValueError(f"the log holds {current} entries, not {size}")


_LAST_INDEX = Prepared(select(func.max(audit_entries.c.idx)))
_INSERT_ENTRIES = Prepared(insert(audit_entries), columns=audit_entries.c.keys())
_INSERT_NODES = Prepared(insert(audit_nodes), columns=audit_nodes.c.keys())


def _size(conn: Connection) -> int:
    ((last,),) = _LAST_INDEX.rows(conn, {})
    return 0 if last is None else int(last) + 1


def _frontier_nodes(size: int) -> list[tuple[int, int]]:
    """The complete subtrees that entries appended at ``size`` attach to."""
    return merkle.complete_subtrees(0, size)


def _fetch(conn: Connection, wanted: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of the complete subtrees ``wanted``, in at most two queries."""
    by_level: dict[int, list[int]] = {}
    for level, index in wanted:
        by_level.setdefault(level, []).append(index)
    found: dict[tuple[int, int], bytes] = {}
    leaves = by_level.pop(0, None)
    if leaves:
        query = select(audit_entries.c.idx, audit_entries.c.leaf_hash).where(
            audit_entries.c.idx.in_(sorted(leaves))
        )
        for index, digest in conn.execute(query):
            found[(0, int(index))] = bytes(digest)
    if by_level:
        query = select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash).where(
            or_(
                *(
                    and_(audit_nodes.c.level == level, audit_nodes.c.idx.in_(sorted(indexes)))
                    for level, indexes in by_level.items()
                )
            )
        )
        for level, index, digest in conn.execute(query):
            found[(int(level), int(index))] = bytes(digest)
    return found


def _accessor(stored: Mapping[tuple[int, int], bytes]) -> merkle.NodeAccessor:
    def node(level: int, index: int) -> bytes:
        digest = stored.get((level, index))
        if digest is None:
            raise AuditLogCorrupted(f"the stored tree lacks node (level {level}, index {index})")
        return digest

    return node


def _row(event: AuditEvent) -> dict[str, Any]:
    moment = event.time.astimezone(UTC)
    return {
        # The time the canonical encoding states, so filters agree with the leaf.
        "time": moment.replace(microsecond=moment.microsecond // 1000 * 1000),
        "event_kind": event.event_kind.value,
        "decision": event.decision.value,
        "message_id": event.message_id,
        "agreement_id": event.agreement_id,
        "agreement_version": event.agreement_version,
        "exchange_type": event.exchange_type,
        "purpose": event.purpose,
        "peer_state": event.peer_state,
        "principal": event.principal,
        "reason_code": event.reason_code,
        "canonical": event.canonical(),
    }


def _record(row: RowMapping) -> AuditRecord:
    values = dict(row)
    values["event_kind"] = EventKind(values["event_kind"])
    values["decision"] = Decision(values["decision"])
    values["canonical"] = bytes(values["canonical"])
    values["leaf_hash"] = bytes(values["leaf_hash"])
    return AuditRecord(**values)


class GroupCommittedLog:
    """An audit sink whose appends share group transactions with other writers."""

    def __init__(self, log: AuditLog, group: GroupCommit) -> None:
        self._log = log
        self._group = group

    def append(self, events: Sequence[AuditEvent]) -> None:
        self._group.run(lambda conn: self._log.append_within(conn, events))

    def append_within(self, conn: Connection, events: Sequence[AuditEvent]) -> None:
        self._log.append_within(conn, events)
