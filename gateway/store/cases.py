"""The representation cases this gateway holds, one row per case, kept in step with the partner.

Guarantees:

* Every change to a case happens inside :meth:`CaseStore.write`, one database
  transaction (a group-commit unit, shared with other callers' units): the case row is
  locked first (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), then its
  state, sequence numbers, deadline, events, notes and claims change together with
  whatever else the caller writes on the same connection (the outbox entry of the
  signed message, the inbox entry of a received one, the audit entry). A crash leaves
  either all of it or none.
* Events of a case are numbered 1, 2, 3 ... under the row lock, so a watcher that read
  up to ``n`` finds every later event with ``seq > n``, whichever replica wrote it.
* What crossed between the states (person and summary, notes, cost descriptions) is
  sealed with the :class:`~gateway.pki.sealing.PayloadSealer`, bound to its row
  (``case:<id>``, ``case_note:<id>``, ``case_claim:<id>``), and dropped by
  :meth:`CaseStore.purge_payloads` (termination) and
  :meth:`CaseStore.purge_finished_payloads` (retention, finished cases only). Rows,
  states and events stay as evidence.
* :meth:`CaseStore.link_identity_confirmation` is idempotent.

The person, summary and note trees are stored as the bytes ``encode_content`` makes of
them (the exchanges' payload encoding, handed in: the store knows no payload format).

Every method blocks; the async server calls them through ``asyncio.to_thread``.
Database failures leave as :class:`gateway.errors.StorageUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import RowMapping

from gateway.pki.sealing import PayloadSealer
from gateway.store.engine import insert_unless_present, read_transaction, write_transaction
from gateway.store.group_commit import GroupCommit
from gateway.store.tables import (
    MESSAGE_ID_LENGTH,
    CaseStatus,
    case_cost_claims,
    case_events,
    case_identity_links,
    case_notes,
    representation_cases,
)

T = TypeVar("T")

__all__ = ["CaseEvent", "CaseRecord", "CaseStore", "CaseView", "CostClaimRecord", "NoteRecord"]

MAX_PAGE = 500
FINISHED = (
    CaseStatus.COMPLETED.value,
    CaseStatus.DECLINED.value,
    CaseStatus.FAILED.value,
    CaseStatus.CANCELLED.value,
)


@dataclass(frozen=True)
class CaseRecord:
    """One case as this gateway holds it; ``content`` is None once purged."""

    case_id: str
    requesting_state: str
    representing_state: str
    agreement_id: str
    state: CaseStatus
    agreement_version: int
    mission_country: str
    kind: str
    purpose: str
    has_legal_basis: bool
    consent_recorded: bool
    rule_set: str
    sent_seq: int
    received_seq: int
    event_count: int
    next_deadline: datetime | None
    deadline_step: str | None
    deadline_missed: bool
    created_at: datetime
    updated_at: datetime
    payload_purged_at: datetime | None
    client_reference: str | None
    principal: str | None
    content: Mapping[str, Any] | None = field(repr=False)

    def party(self, state: str) -> bool:
        return state in (self.requesting_state, self.representing_state)


@dataclass(frozen=True)
class NoteRecord:
    note_id: str
    case_id: str
    author_state: str
    created_at: datetime
    content: Mapping[str, Any] | None = field(repr=False)


@dataclass(frozen=True)
class CostClaimRecord:
    claim_id: str
    case_id: str
    currency: str
    amount_minor: int
    created_at: datetime
    acknowledged_at: datetime | None
    description: str | None = field(repr=False)


@dataclass(frozen=True)
class CaseEvent:
    case_id: str
    seq: int
    event_kind: str
    state: CaseStatus
    actor_state: str | None
    message_id: str | None
    occurred_at: datetime
    registry_attempts: int = 0


@dataclass(frozen=True)
class CaseView:
    """A case with everything attached to it, as ``GetCase`` shows it."""

    record: CaseRecord
    notes: tuple[NoteRecord, ...]
    claims: tuple[CostClaimRecord, ...]
    identity_confirmations: tuple[str, ...]


class CaseWrite:
    """One open write transaction over one or more cases; see :meth:`CaseStore.write`."""

    def __init__(self, store: CaseStore, conn: Connection) -> None:
        self._store = store
        self.conn = conn
        self.events_added = 0

    def lock(self, case_id: str) -> CaseRecord | None:
        row = self.conn.execute(_LOCK_CASE, {"case_id": case_id}).mappings().one_or_none()
        return None if row is None else self._store.record(row)

    def insert_case(self, record: CaseRecord) -> bool:
        """Store a new case; ``False`` if its id or client reference is already stored."""
        values = {
            column.name: getattr(record, column.name)
            for column in representation_cases.columns
            if column.name != "content"
        }
        values["state"] = record.state.value
        values["content"] = self._store.seal_tree(record.content, f"case:{record.case_id}")
        statement = insert_unless_present(self._store.engine, representation_cases).values(**values)
        return bool(self.conn.execute(statement.returning(representation_cases.c.case_id)).all())

    def update_case(self, case_id: str, **values: Any) -> None:
        if isinstance(values.get("state"), CaseStatus):
            values["state"] = values["state"].value
        self.conn.execute(_UPDATE_CASE, {**values, "target_case_id": case_id})

    def add_event(
        self,
        case: CaseRecord,
        event_kind: str,
        state: CaseStatus,
        *,
        actor_state: str | None,
        message_id: str | None,
        at: datetime,
        notify_registry: bool,
    ) -> int:
        """Append the case's next event; ``case`` must be the row as locked (or inserted)."""
        current = self.conn.execute(_EVENT_COUNT, {"case_id": case.case_id}).scalar_one()
        seq = int(current) + 1
        self.conn.execute(
            _INSERT_EVENT,
            {
                "case_id": case.case_id,
                "seq": seq,
                "event_kind": event_kind,
                "state": state.value,
                "actor_state": actor_state,
                "message_id": message_id,
                "occurred_at": at,
                "notify_registry": notify_registry,
                "registry_notified_at": None,
            },
        )
        self.update_case(case.case_id, event_count=seq, updated_at=at)
        self.events_added += 1
        return seq

    def add_note(self, note: NoteRecord) -> None:
        self.conn.execute(
            case_notes.insert().values(
                note_id=note.note_id,
                case_id=note.case_id,
                author_state=note.author_state,
                created_at=note.created_at,
                content=self._store.seal_tree(note.content, f"case_note:{note.note_id}"),
            )
        )

    def add_claim(self, claim: CostClaimRecord) -> None:
        description = (claim.description or "").encode("utf-8")
        sealed = self._store.seal(description, f"case_claim:{claim.claim_id}")
        self.conn.execute(
            case_cost_claims.insert().values(
                claim_id=claim.claim_id,
                case_id=claim.case_id,
                currency=claim.currency,
                amount_minor=claim.amount_minor,
                description=sealed,
                created_at=claim.created_at,
                acknowledged_at=None,
            )
        )

    def claim(self, case_id: str, claim_id: str) -> CostClaimRecord | None:
        query = select(case_cost_claims).where(
            case_cost_claims.c.claim_id == claim_id, case_cost_claims.c.case_id == case_id
        )
        row = self.conn.execute(query).mappings().one_or_none()
        return None if row is None else self._store.claim(row)

    def acknowledge_claim(self, claim_id: str, at: datetime) -> bool:
        result = self.conn.execute(
            update(case_cost_claims)
            .where(
                case_cost_claims.c.claim_id == claim_id,
                case_cost_claims.c.acknowledged_at.is_(None),
            )
            .values(acknowledged_at=at)
        )
        return result.rowcount == 1


class CaseStore:
    """The cases of one gateway; several replicas may share it on PostgreSQL."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        encode_content: Callable[[Mapping[str, Any]], bytes],
        sealer: PayloadSealer | None = None,
        on_event: Callable[[], None] = lambda: None,
        group: GroupCommit | None = None,
    ) -> None:
        self.engine = engine
        self._clock = clock
        self._encode_content = encode_content
        self._sealer = sealer
        self._on_event = on_event
        self._group = group

    def write(self, unit: Callable[[CaseWrite], T]) -> T:
        """Run ``unit`` in a group-commit unit (or, without a group, its own transaction)
        and return what it returns; watchers are woken after it commits, if it added
        events. ``unit`` may run more than once (see :mod:`gateway.store.group_commit`)."""

        def run(conn: Connection) -> tuple[T, int]:
            write = CaseWrite(self, conn)
            return unit(write), write.events_added

        if self._group is not None:
            result, added = self._group.run(run)
        else:
            with write_transaction(self.engine) as conn:
                result, added = run(conn)
        if added:
            self._on_event()
        return result

    # -- the identity confirmations' entry points --------------------------

    def get(self, case_id: str) -> CaseRecord | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(_CASE, {"case_id": case_id}).mappings().one_or_none()
        return None if row is None else self.record(row)

    def link_identity_confirmation(self, case_id: str, message_id: str) -> None:
        """Record that identity confirmation ``message_id`` was made for the case; idempotent.

        :class:`KeyError` if the case is not held here.
        """
        if not 0 < len(message_id) <= MESSAGE_ID_LENGTH:
            raise ValueError(f"message_id must be 1 to {MESSAGE_ID_LENGTH} characters")
        if self.get(case_id) is None:
            raise KeyError(case_id)
        statement = insert_unless_present(self.engine, case_identity_links).values(
            case_id=case_id, message_id=message_id, linked_at=self._clock()
        )
        with write_transaction(self.engine) as conn:
            conn.execute(statement)

    # -- reading -----------------------------------------------------------

    def view(self, case_id: str) -> CaseView | None:
        with read_transaction(self.engine) as conn:
            key = {"case_id": case_id}
            row = conn.execute(_CASE, key).mappings().one_or_none()
            if row is None:
                return None
            notes = conn.execute(_NOTES, key).mappings()
            claims = conn.execute(_CLAIMS, key).mappings()
            links = conn.execute(_LINKS, key).scalars()
            return CaseView(
                record=self.record(row),
                notes=tuple(self._note(n) for n in notes),
                claims=tuple(self.claim(c) for c in claims),
                identity_confirmations=tuple(links),
            )

    def find_by_client_reference(self, principal: str, client_reference: str) -> CaseRecord | None:
        query = select(representation_cases).where(
            representation_cases.c.principal == principal,
            representation_cases.c.client_reference == client_reference,
        )
        with read_transaction(self.engine) as conn:
            row = conn.execute(query).mappings().one_or_none()
        return None if row is None else self.record(row)

    def page(
        self,
        *,
        state: CaseStatus | None,
        kind: str | None,
        deadline_before: datetime | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[CaseRecord]:
        """One page of cases matching every filter, ordered by ``(created_at, case_id)``."""
        if not 1 <= limit <= MAX_PAGE + 1:
            raise ValueError(f"limit must be 1 to {MAX_PAGE + 1}")
        c = representation_cases.c
        query = select(representation_cases).order_by(c.created_at, c.case_id).limit(limit)
        if state is not None:
            query = query.where(c.state == state.value)
        if kind is not None:
            query = query.where(c.kind == kind)
        if deadline_before is not None:
            query = query.where(c.next_deadline.is_not(None), c.next_deadline < deadline_before)
        if after is not None:
            created, case_id = after
            query = query.where(
                or_(c.created_at > created, and_(c.created_at == created, c.case_id > case_id))
            )
        with read_transaction(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [self.record(row) for row in rows]

    def events_after(self, case_id: str, after_seq: int, limit: int = 100) -> list[CaseEvent]:
        query = (
            select(case_events)
            .where(case_events.c.case_id == case_id, case_events.c.seq > after_seq)
            .order_by(case_events.c.seq)
            .limit(limit)
        )
        with read_transaction(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [_event(row) for row in rows]

    # -- deadlines and the registry --------------------------------------------

    def due_deadlines(self, now: datetime, limit: int) -> list[CaseRecord]:
        c = representation_cases.c
        query = (
            select(representation_cases)
            .where(
                c.next_deadline.is_not(None), c.next_deadline <= now, c.deadline_missed == false()
            )
            .order_by(c.next_deadline, c.case_id)
            .limit(limit)
        )
        with read_transaction(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [self.record(row) for row in rows]

    def pending_registry_events(self, limit: int) -> list[CaseEvent]:
        query = (
            select(case_events)
            .where(
                case_events.c.notify_registry == true(),
                case_events.c.registry_notified_at.is_(None),
                case_events.c.registry_dead_reason.is_(None),
                or_(
                    case_events.c.registry_retry_at.is_(None),
                    case_events.c.registry_retry_at <= self._clock(),
                ),
            )
            .order_by(case_events.c.occurred_at, case_events.c.case_id, case_events.c.seq)
            .limit(limit)
        )
        with read_transaction(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [_event(row) for row in rows]

    def mark_registry_notified(self, case_id: str, seq: int) -> None:
        """Record that the registry has heard of event ``seq`` of ``case_id``: a unit of
        the group commit, like the case's other writes, not a transaction of its own."""
        statement = (
            update(case_events)
            .where(case_events.c.case_id == case_id, case_events.c.seq == seq)
            .values(registry_notified_at=self._clock())
        )

        def mark(write: CaseWrite) -> None:
            write.conn.execute(statement)

        self.write(mark)

    def schedule_registry_retry(
        self, case_id: str, seq: int, *, attempts: int, retry_at: datetime
    ) -> None:
        """Record a failed hand-over of event ``seq``: not listed again before ``retry_at``."""
        self._registry_event(case_id, seq, registry_attempts=attempts, registry_retry_at=retry_at)

    def mark_registry_dead(self, case_id: str, seq: int, *, reason: str) -> None:
        """Give up handing event ``seq`` over, for ``reason`` (a reason code)."""
        self._registry_event(case_id, seq, registry_dead_reason=reason)

    def _registry_event(self, case_id: str, seq: int, **values: object) -> None:
        statement = (
            update(case_events)
            .where(case_events.c.case_id == case_id, case_events.c.seq == seq)
            .values(**values)
        )

        def mark(write: CaseWrite) -> None:
            write.conn.execute(statement)

        self.write(mark)

    def dead_registry_events(self) -> int:
        """How many events the registry was never told of, given up."""
        query = select(func.count()).where(case_events.c.registry_dead_reason.is_not(None))
        with read_transaction(self.engine) as conn:
            return int(conn.execute(query).scalar_one())

    # -- purging -----------------------------------------------------------

    def purge_payloads(self, agreement_id: str) -> int:
        """Drop what crossed under ``agreement_id`` (termination); rows and events stay."""
        return self._purge(representation_cases.c.agreement_id == agreement_id)

    def purge_finished_payloads(self, agreement_id: str, *, updated_before: datetime) -> int:
        """Drop what crossed in finished cases last changed before ``updated_before``."""
        c = representation_cases.c
        return self._purge(
            and_(
                c.agreement_id == agreement_id, c.state.in_(FINISHED), c.updated_at < updated_before
            )
        )

    def _purge(self, which: Any) -> int:
        now = self._clock()
        ids = select(representation_cases.c.case_id).where(which).scalar_subquery()
        with write_transaction(self.engine) as conn:
            purged = conn.execute(
                update(representation_cases)
                .where(which, representation_cases.c.content.is_not(None))
                .values(content=None, payload_purged_at=now)
            ).rowcount
            purged += conn.execute(
                update(case_notes)
                .where(case_notes.c.case_id.in_(ids), case_notes.c.content.is_not(None))
                .values(content=None)
            ).rowcount
            purged += conn.execute(
                update(case_cost_claims)
                .where(
                    case_cost_claims.c.case_id.in_(ids), case_cost_claims.c.description.is_not(None)
                )
                .values(description=None)
            ).rowcount
        return int(purged)

    def count(self) -> int:
        with read_transaction(self.engine) as conn:
            return int(
                conn.execute(select(func.count()).select_from(representation_cases)).scalar_one()
            )

    # -- sealing -----------------------------------------------------------

    def seal(self, plain: bytes, aad: str) -> bytes:
        return plain if self._sealer is None else self._sealer.seal(plain, aad=aad)

    def seal_tree(self, tree: Mapping[str, Any] | None, aad: str) -> bytes | None:
        return None if tree is None else self.seal(self._encode_content(tree), aad)

    def _open(self, sealed: Any, aad: str) -> bytes | None:
        if sealed is None:
            return None
        data = bytes(sealed)
        return data if self._sealer is None else self._sealer.open(data, aad=aad)

    def _open_tree(self, sealed: Any, aad: str) -> Mapping[str, Any] | None:
        plain = self._open(sealed, aad)
        return None if plain is None else json.loads(plain)

    def record(self, row: RowMapping) -> CaseRecord:
        values = dict(row)
        values["state"] = CaseStatus(values["state"])
        for flag in ("has_legal_basis", "consent_recorded", "deadline_missed"):
            values[flag] = bool(values[flag])
        values["content"] = self._open_tree(values["content"], f"case:{values['case_id']}")
        return CaseRecord(**values)

    def _note(self, row: RowMapping) -> NoteRecord:
        values = dict(row)
        values["content"] = self._open_tree(values["content"], f"case_note:{values['note_id']}")
        return NoteRecord(**values)

    def claim(self, row: RowMapping) -> CostClaimRecord:
        values = dict(row)
        plain = self._open(values["description"], f"case_claim:{values['claim_id']}")
        values["description"] = None if plain is None else plain.decode("utf-8")
        return CostClaimRecord(**values)


# Statements of every case step, built once (their cache keys are then remembered).
_CASE = select(representation_cases).where(representation_cases.c.case_id == bindparam("case_id"))
_LOCK_CASE = _CASE.with_for_update()
_EVENT_COUNT = select(representation_cases.c.event_count).where(
    representation_cases.c.case_id == bindparam("case_id")
)
_UPDATE_CASE = update(representation_cases).where(
    representation_cases.c.case_id == bindparam("target_case_id")
)
_INSERT_EVENT = insert(case_events)
_NOTES = (
    select(case_notes)
    .where(case_notes.c.case_id == bindparam("case_id"))
    .order_by(case_notes.c.created_at, case_notes.c.note_id)
)
_CLAIMS = (
    select(case_cost_claims)
    .where(case_cost_claims.c.case_id == bindparam("case_id"))
    .order_by(case_cost_claims.c.created_at, case_cost_claims.c.claim_id)
)
_LINKS = (
    select(case_identity_links.c.message_id)
    .where(case_identity_links.c.case_id == bindparam("case_id"))
    .order_by(case_identity_links.c.linked_at, case_identity_links.c.message_id)
)


def _event(row: RowMapping) -> CaseEvent:
    values = dict(row)
    values.pop("notify_registry")
    values.pop("registry_notified_at")
    values.pop("registry_retry_at")
    values.pop("registry_dead_reason")
    values["state"] = CaseStatus(values["state"])
    return CaseEvent(**values)
