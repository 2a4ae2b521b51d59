"""The stored audit log: one RFC 6962 tree in the database, proven from stored nodes.

Each test runs once on SQLite and once on PostgreSQL, through the store's fixtures.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, update

from gateway.audit import merkle
from gateway.audit.entry import Decision, EventKind
from gateway.audit.log import AuditLog, AuditLogCorrupted
from gateway.store.engine import read_transaction, write_transaction
from gateway.store.tables import audit_entries, audit_nodes
from tests.unit.audit import merkle_reference
from tests.unit.store import conftest as store_fixtures
from tests.unit.store.conftest import START, FakeClock
from tests.vectors import load_vector

from . import EPOCH, make_event, raw_row, vector_leaves

# The store's fixtures: each test runs on a fresh SQLite file and a fresh PostgreSQL schema.
database_url = store_fixtures.database_url
engine = store_fixtures.engine
migrated_engine = store_fixtures.migrated_engine

LARGEST = 300


@pytest.fixture
def log(migrated_engine: Engine) -> AuditLog:
    return AuditLog(migrated_engine, clock=FakeClock(START))


def _append_data(log: AuditLog, datas: list[bytes], batches: list[int]) -> None:
    """Append leaves whose data is ``datas`` itself, in batches of the given sizes."""
    position = 0
    for batch in batches:
        appended = log._append_rows([raw_row(d) for d in datas[position : position + batch]])
        assert appended == list(range(position, position + len(appended)))
        position += batch


def _stored_nodes(engine: Engine) -> dict[tuple[int, int], bytes]:
    with read_transaction(engine) as conn:
        leaves = conn.execute(select(audit_entries.c.idx, audit_entries.c.leaf_hash)).all()
        nodes = conn.execute(select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash))
        stored = {(int(level), int(i)): bytes(h) for level, i, h in nodes}
    stored.update({(0, int(i)): bytes(h) for i, h in leaves})
    return stored


def _all_subtrees(leaf_hashes: list[bytes]) -> dict[tuple[int, int], bytes]:
    levels = merkle.subtree_levels(leaf_hashes)
    return {(level, i): h for level, row in enumerate(levels) for i, h in enumerate(row)}


def _wipe(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        conn.execute(delete(audit_nodes))
        conn.execute(delete(audit_entries))


def test_published_rfc6962_vectors_hold_for_the_stored_tree(log: AuditLog) -> None:
    _append_data(log, vector_leaves(), [3, 1, 4])

    for head in load_vector("rfc6962/tree_heads")["tree_heads"]:
        assert log.root(head["size"]).hex() == head["root"]
    for vector in load_vector("rfc6962/inclusion_proofs")["inclusion_proofs"]:
        proof = log.inclusion_proof(vector["leaf_index"], vector["tree_size"])
        assert [h.hex() for h in proof] == vector["proof"]
    for vector in load_vector("rfc6962/consistency_proofs")["consistency_proofs"]:
        proof = log.consistency_proof(vector["size1"], vector["size2"])
        assert [h.hex() for h in proof] == vector["proof"]


def test_an_empty_log_has_the_empty_root(log: AuditLog) -> None:
    assert log.size() == 0
    assert log.root() == merkle.EMPTY_ROOT
    assert log.append([]) == []
    assert log.consistency_proof(0, 0) == []


def test_appends_take_consecutive_indexes_and_leaves_cover_the_canonical_entry(
    log: AuditLog,
) -> None:
    first = [make_event(n) for n in range(3)]
    second = [make_event(n) for n in range(3, 8)]

    assert log.append(first) == [0, 1, 2]
    assert log.append(second) == [3, 4, 5, 6, 7]

    events = first + second
    assert log.size() == 8
    leaves = [merkle.leaf_hash(e.canonical()) for e in events]
    assert log.leaf_hashes(0, 8) == leaves
    assert log.root() == merkle_reference.reference_root(leaves)
    assert log.root(5) == merkle_reference.reference_root(leaves[:5])
    stored = log.entry(6)
    assert stored is not None
    assert stored.canonical == events[6].canonical()
    assert stored.document()["message_id"] == "m-000006"
    assert log.verify_stored_entry(6)


@settings(max_examples=12, deadline=None)
@given(batches=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=10))
def _check_batching(engine: Engine, batches: list[int]) -> None:
    _wipe(engine)
    log = AuditLog(engine, clock=FakeClock(START))
    datas = [i.to_bytes(2, "big") for i in range(sum(batches))]
    _append_data(log, datas, batches)

    leaves = [merkle.leaf_hash(d) for d in datas]
    assert _stored_nodes(engine) == _all_subtrees(leaves)
    assert log.root() == merkle_reference.reference_root(leaves)


def test_stored_nodes_are_every_complete_subtree_whatever_the_batching(
    migrated_engine: Engine,
) -> None:
    _check_batching(migrated_engine)


def test_every_proof_from_stored_nodes_verifies_and_equals_the_reference(
    log: AuditLog, migrated_engine: Engine
) -> None:
    rng = random.Random(6962)
    batches: list[int] = []
    while sum(batches) < LARGEST:
        batches.append(min(rng.randint(1, 50), LARGEST - sum(batches)))
    datas = [i.to_bytes(2, "big") for i in range(LARGEST)]
    _append_data(log, datas, batches)
    leaves = [merkle.leaf_hash(d) for d in datas]
    stored = _stored_nodes(migrated_engine)

    def node(level: int, index: int) -> bytes:
        return stored[(level, index)]

    @settings(max_examples=40, deadline=None)
    @given(data=st.data(), size=st.integers(min_value=1, max_value=LARGEST))
    def check(data: st.DataObject, size: int) -> None:
        root = merkle_reference.reference_root(leaves[:size])
        assert merkle.root(size, node) == root
        # Every proof of this size, through the stored nodes ...
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, node)
            assert proof == merkle_reference.reference_inclusion_proof(leaves[:size], index)
            assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
        for size1 in range(size + 1):
            proof = merkle.consistency_proof(size1, size, node)
            assert proof == merkle_reference.reference_consistency_proof(leaves[:size], size1)
            root1 = merkle_reference.reference_root(leaves[:size1])
            assert merkle.verify_consistency(size1, size, proof, root1, root)
        # ... and some through the log's own queries.
        index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
        size1 = data.draw(st.integers(min_value=0, max_value=size), label="size1")
        assert log.root(size) == root
        assert log.inclusion_proof(index, size) == merkle.inclusion_proof(index, size, node)
        assert log.consistency_proof(size1, size) == merkle.consistency_proof(size1, size, node)

    check()


def test_proofs_beyond_the_log_are_refused(log: AuditLog) -> None:
    log.append([make_event(n) for n in range(5)])
    with pytest.raises(ValueError):
        log.root(6)
    with pytest.raises(ValueError):
        log.inclusion_proof(2, 6)
    with pytest.raises(ValueError):
        log.inclusion_proof(5, 5)
    with pytest.raises(ValueError):
        log.consistency_proof(3, 6)
    with pytest.raises(ValueError):
        log.consistency_proof(4, 3)


def test_a_rewritten_entry_no_longer_matches_its_leaf(
    log: AuditLog, migrated_engine: Engine
) -> None:
    log.append([make_event(n) for n in range(3)])
    forged = make_event(1, decision=Decision.REFUSED).canonical()
    with write_transaction(migrated_engine) as conn:
        conn.execute(update(audit_entries).where(audit_entries.c.idx == 1).values(canonical=forged))

    assert log.verify_stored_entry(0)
    assert not log.verify_stored_entry(1)
    with pytest.raises(ValueError):
        log.verify_stored_entry(3)


def test_a_deleted_node_is_reported_as_corruption_not_a_wrong_proof(
    log: AuditLog, migrated_engine: Engine
) -> None:
    log.append([make_event(n) for n in range(8)])
    with write_transaction(migrated_engine) as conn:
        conn.execute(delete(audit_nodes).where(audit_nodes.c.level == 2, audit_nodes.c.idx == 1))

    with pytest.raises(AuditLogCorrupted):
        log.inclusion_proof(0, 8)
    with pytest.raises(AuditLogCorrupted):
        log.consistency_proof(4, 8)


def test_entries_are_filtered_and_paged_in_index_order(log: AuditLog) -> None:
    log.append(
        [
            make_event(0),
            make_event(1, peer_state="IT", agreement_id="IT-DE/civil-records"),
            make_event(2, event_kind=EventKind.REFUSED, decision=Decision.REFUSED),
            make_event(3, exchange_type="case_transition", message_id="m-special"),
            make_event(4, peer_state="IT", agreement_id="IT-DE/civil-records"),
        ]
    )

    def indexes(**filters: object) -> list[int]:
        return [record.idx for record in log.entries(**filters)]  # type: ignore[arg-type]

    assert indexes() == [0, 1, 2, 3, 4]
    assert indexes(peer_state="IT") == [1, 4]
    assert indexes(agreement_id="FR-DE/civil-records") == [0, 2, 3]
    assert indexes(event_kind=EventKind.REFUSED) == [2]
    assert indexes(event_kind="sent", exchange_type="case_transition") == [3]
    assert indexes(message_id="m-special") == [3]
    assert indexes(since=EPOCH + timedelta(seconds=1), until=EPOCH + timedelta(seconds=3)) == [
        1,
        2,
    ]
    assert indexes(agreement_ids={"IT-DE/civil-records"}) == [1, 4]
    assert indexes(agreement_ids=set()) == [], "an empty scope must match nothing"
    assert indexes(agreement_ids={"IT-DE/civil-records"}, agreement_id="FR-DE/civil-records") == []
    assert indexes(limit=2) == [0, 1]
    assert indexes(after_idx=1, limit=2) == [2, 3]
    with pytest.raises(ValueError):
        log.entries(limit=0)


def test_stored_time_is_the_time_the_leaf_states(log: AuditLog) -> None:
    moment = EPOCH + timedelta(microseconds=123_999)
    log.append([make_event(0, time=moment)])

    record = log.entry(0)
    assert record is not None
    assert record.time == EPOCH + timedelta(milliseconds=123)
    assert record.document()["time"] == "2024-12-09T08:00:00.123Z"
    assert log.entries(since=EPOCH + timedelta(milliseconds=123)) == [record]
    assert log.entry(1) is None
