"""Replicas appending to one audit log at once form one tree: no gap, no fork.

Two OS processes (as two gateway replicas would be) append to the same database at
once, on PostgreSQL and on an SQLite file.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier as ProcessBarrier

from sqlalchemy import Engine, select

from gateway.audit import merkle
from gateway.audit.log import AuditLog
from gateway.store.engine import create_engine, read_transaction
from gateway.store.tables import audit_nodes
from tests.unit.audit import make_event, merkle_reference

from .conftest import START, FakeClock

PER_PROCESS = 200


def test_concurrent_appends_from_two_processes_on_postgres_form_one_consistent_tree(
    database_url: str, migrated_engine: Engine
) -> None:
    spawn = multiprocessing.get_context("spawn")
    starting_line = spawn.Barrier(2)
    results: Queue[list[int]] = spawn.Queue()
    processes = [
        spawn.Process(
            target=_append_in_process, args=(database_url, replica, starting_line, results)
        )
        for replica in range(2)
    ]
    for process in processes:
        process.start()
    try:
        assigned = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)

    assert [process.exitcode for process in processes] == [0, 0]
    total = 2 * PER_PROCESS
    assert sorted(assigned[0] + assigned[1]) == list(range(total)), "a gap or a shared index"
    first, second = (set(indexes) for indexes in assigned)
    assert min(first) < max(second) and min(second) < max(first), "the appends never interleaved"

    log = AuditLog(migrated_engine, clock=FakeClock(START))
    assert log.size() == total
    leaves = log.leaf_hashes(0, total)
    records = log.entries(limit=1000)
    assert [r.idx for r in records] == list(range(total))
    assert [merkle.leaf_hash(r.canonical) for r in records] == leaves
    assert len({r.message_id for r in records}) == total
    assert log.root() == merkle_reference.reference_root(leaves)

    levels = merkle.subtree_levels(leaves)
    expected = {(level, i): h for level, row in enumerate(levels[1:], 1) for i, h in enumerate(row)}
    with read_transaction(migrated_engine) as conn:
        rows = conn.execute(select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash))
        stored = {(int(level), int(i)): bytes(h) for level, i, h in rows}
    assert stored == expected


def _append_in_process(
    database_url: str, replica: int, starting_line: ProcessBarrier, results: Queue[list[int]]
) -> None:
    """Runs in a spawned process: append this replica's entries in batches of random size."""
    engine = create_engine(database_url)
    try:
        log = AuditLog(engine, clock=FakeClock(START))
        # Connect before the start, so both processes compete from the first batch.
        log.size()
        rng = random.Random(replica)
        starting_line.wait(timeout=30)
        assigned: list[int] = []
        while len(assigned) < PER_PROCESS:
            batch = min(rng.randint(1, 25), PER_PROCESS - len(assigned))
            events = [
                make_event(n, message_id=f"replica-{replica}-{n:04d}")
                for n in range(len(assigned), len(assigned) + batch)
            ]
            assigned.extend(log.append(events))
            # Batches arrive apart, not back to back: let the other replica in.
            time.sleep(rng.random() * 0.004)
        results.put(assigned)
    finally:
        engine.dispose()
