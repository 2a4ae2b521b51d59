"""Group commit: one transaction for many callers, each unit atomic, nothing told early."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Connection, Engine, event, exc, func, insert, select

from gateway.audit import merkle
from gateway.audit.entry import AuditEvent, Decision, EventKind
from gateway.audit.log import AuditLog, GroupCommittedLog
from gateway.errors import QuotaRejected, StorageUnavailable
from gateway.store.group_commit import CommitStats, GroupCommit, WriteUnit
from gateway.store.tables import agreement_lifecycle, audit_entries
from tests.unit.audit import merkle_reference
from tests.unit.store.conftest import START, FakeClock


@pytest.fixture
def group(migrated_engine: Engine) -> Iterator[GroupCommit]:
    committer = GroupCommit(migrated_engine)
    try:
        yield committer
    finally:
        committer.close()


def _event(message_id: str) -> AuditEvent:
    return AuditEvent(
        time=START,
        event_kind=EventKind.SUBMITTED,
        decision=Decision.ACCEPTED,
        message_id=message_id,
        exchange_type="identity_confirmation",
    )


def _lifecycle_row(agreement_id: str) -> dict[str, object]:
    return {
        "agreement_id": agreement_id,
        "agreement_version": 1,
        "status": "suspended",
        "changed_at": START,
        "changed_by_state": "AT",
        "reason_code": "TEST",
    }


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(agreement_lifecycle)).scalar_one())


def test_a_units_result_comes_back_once_its_writes_are_committed(
    migrated_engine: Engine, group: GroupCommit
) -> None:
    def unit(conn: Connection) -> str:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("committed")))
        return "stored"

    assert group.run(unit) == "stored"
    # Another connection sees it: the caller was told only after the commit.
    assert _count(migrated_engine) == 1


def test_a_failing_unit_writes_nothing_and_its_neighbours_still_commit(
    migrated_engine: Engine, group: GroupCommit
) -> None:
    hold = threading.Event()
    started = threading.Event()

    def holding(conn: Connection) -> None:
        started.set()
        hold.wait(timeout=10)
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("first")))

    def failing(conn: Connection) -> None:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("refused")))
        raise QuotaRejected("used up")

    def following(conn: Connection) -> None:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("third")))

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(group.run, holding)
        assert started.wait(timeout=10)
        refused = pool.submit(group.run, failing)
        third = pool.submit(group.run, following)
        hold.set()
        first.result(timeout=10)
        third.result(timeout=10)
        with pytest.raises(QuotaRejected):
            refused.result(timeout=10)

    with migrated_engine.connect() as conn:
        ids = set(conn.execute(select(agreement_lifecycle.c.agreement_id)).scalars())
    assert ids == {"first", "third"}


def test_units_waiting_together_share_one_commit_and_consecutive_audit_indexes(
    migrated_engine: Engine, group: GroupCommit, clock: FakeClock
) -> None:
    commits: list[int] = []
    event.listen(migrated_engine, "commit", lambda conn: commits.append(1))
    log = GroupCommittedLog(AuditLog(migrated_engine, clock=clock), group)

    with _committer_held(group) as hold, ThreadPoolExecutor(32) as pool:
        appends = [pool.submit(log.append, [_event(f"m-{i}")]) for i in range(32)]
        _until_waiting(group, 32)
        hold.set()
        for append in appends:
            append.result(timeout=10)

    stored = AuditLog(migrated_engine, clock=clock).entries(limit=100)
    assert [r.idx for r in stored] == list(range(32))
    assert {r.message_id for r in stored} == {f"m-{i}" for i in range(32)}
    # The held unit's transaction, then all 32 waiting appends in one more.
    assert len(commits) == 2
    audit = AuditLog(migrated_engine, clock=clock)
    assert audit.root() == merkle_reference.reference_root(audit.leaf_hashes(0, 32))


def test_a_failed_commit_fails_every_unit_of_the_batch_and_stores_none(
    migrated_engine: Engine, group: GroupCommit
) -> None:
    def refuse_commit(conn: Connection) -> None:
        raise exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    event.listen(migrated_engine, "commit", refuse_commit)
    try:
        with pytest.raises(StorageUnavailable):
            group.run(
                lambda conn: conn.execute(
                    insert(agreement_lifecycle).values(_lifecycle_row("lost"))
                )
            )
    finally:
        event.remove(migrated_engine, "commit", refuse_commit)
    assert _count(migrated_engine) == 0


def test_after_close_nothing_more_is_taken(group: GroupCommit) -> None:
    group.run(lambda conn: None)
    group.close()

    with pytest.raises(StorageUnavailable):
        group.run(lambda conn: None)


def test_deferred_audit_entries_follow_the_order_of_the_units(
    migrated_engine: Engine, group: GroupCommit, clock: FakeClock
) -> None:
    audit = AuditLog(migrated_engine, clock=clock)
    hold = threading.Event()
    started = threading.Event()

    def holding(conn: Connection) -> None:
        started.set()
        hold.wait(timeout=10)

    def appending(message_id: str) -> WriteUnit[None]:
        return lambda conn: audit.append_within(conn, [_event(message_id)])

    with ThreadPoolExecutor(4) as pool:
        blocker = pool.submit(group.run, holding)
        assert started.wait(timeout=10)
        queued = []
        for message_id in ("first", "second", "third"):
            queued.append(pool.submit(group.run, appending(message_id)))
            while group.waiting() < len(queued):
                threading.Event().wait(0.01)
        hold.set()
        for future in (blocker, *queued):
            future.result(timeout=10)

    assert [r.message_id for r in audit.entries(limit=10)] == ["first", "second", "third"]


def test_audit_entries_appended_in_a_unit_commit_with_its_other_writes(
    migrated_engine: Engine, group: GroupCommit, clock: FakeClock
) -> None:
    audit = AuditLog(migrated_engine, clock=clock)

    def unit(conn: Connection) -> None:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("with-evidence")))
        audit.append_within(conn, [_event("m-evidence")])
        raise QuotaRejected("refused after writing")

    with pytest.raises(QuotaRejected):
        group.run(unit)

    with migrated_engine.connect() as conn:
        entries = conn.execute(select(func.count()).select_from(audit_entries)).scalar_one()
    assert entries == 0 and _count(migrated_engine) == 0


def _selects_of_nodes(engine: Engine) -> list[str]:
    seen: list[str] = []

    def watch(conn: Connection, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "audit_nodes" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", watch)
    return seen


@pytest.mark.parametrize("grouped", [True, False], ids=["in a group", "outside a group"])
def test_a_logs_next_append_attaches_to_the_frontier_it_remembered_after_its_commit(
    migrated_engine: Engine, group: GroupCommit, clock: FakeClock, grouped: bool
) -> None:
    plain = AuditLog(migrated_engine, clock=clock)
    log = GroupCommittedLog(plain, group) if grouped else plain
    for i in range(5):
        log.append([_event(f"warm-{i}")])
    seen = _selects_of_nodes(migrated_engine)
    for i in range(6):
        log.append([_event(f"m-{i}")])

    assert seen == []
    audit = AuditLog(migrated_engine, clock=clock)
    assert audit.root() == merkle_reference.reference_root(audit.leaf_hashes(0, 11))


def test_appends_by_other_writers_and_failed_commits_never_leave_a_stale_frontier(
    migrated_engine: Engine, clock: FakeClock
) -> None:
    # Two "replicas" on one database, a writer outside any group, and a lost commit.
    first, second = GroupCommit(migrated_engine), GroupCommit(migrated_engine)
    replica_a = GroupCommittedLog(AuditLog(migrated_engine, clock=clock), first)
    replica_b = GroupCommittedLog(AuditLog(migrated_engine, clock=clock), second)
    direct = AuditLog(migrated_engine, clock=clock)

    def refuse_commit(conn: Connection) -> None:
        raise exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    try:
        sizes = []
        for i in range(13):
            writer = (replica_a, replica_b, direct)[i % 3]
            writer.append([_event(f"m-{i}-{j}") for j in range(i % 4 + 1)])
            if i in (0, 7):
                # A lost commit; the store then reaches the size the lost batch would
                # have left, with other entries, and the replica that lost it appends a
                # batch whose new nodes hash the lost batch's place in the tree.
                event.listen(migrated_engine, "commit", refuse_commit)
                with pytest.raises(StorageUnavailable):
                    replica_a.append([_event(f"lost-{i}")])
                event.remove(migrated_engine, "commit", refuse_commit)
                direct.append([_event(f"other-{i}")])
                replica_a.append([_event(f"after-{i}-{j}") for j in range(8)])
            sizes.append(direct.size())
    finally:
        first.close()
        second.close()

    size = direct.size()
    leaves = direct.leaf_hashes(0, size)
    assert not {"lost-0", "lost-7"} & {r.message_id for r in direct.entries(limit=1000)}
    for earlier in sizes:
        assert direct.root(earlier) == merkle_reference.reference_root(leaves[:earlier])
        proof = direct.consistency_proof(earlier, size)
        assert merkle.verify_consistency(
            earlier, size, proof, direct.root(earlier), direct.root(size)
        )


# A server-side disconnect needs a server: PostgreSQL only.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_connection_lost_between_batches_is_replaced_and_the_batch_still_commits(
    migrated_engine: Engine, group: GroupCommit
) -> None:
    backend = group.run(lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    with migrated_engine.connect() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({backend:d})")

    def unit(conn: Connection) -> str:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("after-restart")))
        return "stored"

    assert group.run(unit) == "stored"
    assert _count(migrated_engine) == 1
    after = group.run(lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    assert after != backend


def test_a_unit_that_hands_over_another_unit_fails_instead_of_waiting_forever(
    group: GroupCommit,
) -> None:
    def nested(conn: Connection) -> None:
        group.run(lambda inner: None)

    with pytest.raises(RuntimeError, match="may not hand over"):
        group.run(nested)
    assert group.run(lambda conn: "still committing") == "still committing"


def _transaction(conn: Connection) -> object:
    return conn.get_transaction()


def _burst_then_late_unit(group: GroupCommit) -> tuple[list[object], object]:
    """Twelve units waiting at once, then one more handed over as soon as the committer
    has taken them: each unit's transaction."""
    with _committer_held(group) as hold, ThreadPoolExecutor(13) as pool:
        burst = [pool.submit(group.run, _transaction) for _ in range(12)]
        _until_waiting(group, 12)
        hold.set()
        _until_taken(group)
        late = pool.submit(group.run, _transaction)
        return [unit.result(timeout=10) for unit in burst], late.result(timeout=10)


@pytest.mark.parametrize("commit_delay_s", [0.0, 2.0])
def test_under_sustained_load_the_commit_delay_gathers_the_units_that_come_meanwhile(
    migrated_engine: Engine, commit_delay_s: float
) -> None:
    committer = GroupCommit(migrated_engine, commit_delay_s=commit_delay_s)
    try:
        burst, late = _burst_then_late_unit(committer)
    finally:
        committer.close()

    assert all(transaction is burst[0] for transaction in burst)
    # Twelve waiting is pressure enough: with a delay, the batch waits for the late unit.
    assert (late is burst[0]) == (commit_delay_s > 0)
    # The holding unit's batch, then the burst with the late unit, or the two apart.
    if commit_delay_s:
        assert committer.stats() == CommitStats(batches=2, units=14, delayed_batches=1)
    else:
        assert committer.stats() == CommitStats(batches=3, units=14, delayed_batches=0)


def test_a_lone_writer_never_waits_for_the_commit_delay(migrated_engine: Engine) -> None:
    committer = GroupCommit(migrated_engine, commit_delay_s=5.0)
    try:
        started = time.monotonic()
        stored = [committer.run(_storing(f"alone-{i}")) for i in range(20)]
        elapsed = time.monotonic() - started
    finally:
        committer.close()

    assert stored == [f"alone-{i}" for i in range(20)]
    assert elapsed < 5.0
    assert _count(migrated_engine) == 20


def test_once_writes_come_one_at_a_time_again_the_delay_stops_within_three_commits(
    migrated_engine: Engine,
) -> None:
    committer = GroupCommit(migrated_engine, commit_delay_s=1.0)
    try:
        _burst_then_late_unit(committer)
        took = []
        for i in range(8):
            started = time.monotonic()
            committer.run(_storing(f"after-{i}"))
            took.append(time.monotonic() - started)
    finally:
        committer.close()

    # The pressure is a moving average: a lone write or two bring it below the mark.
    assert all(seconds < 0.5 for seconds in took[2:]), took


def test_a_negative_commit_delay_is_refused(migrated_engine: Engine) -> None:
    with pytest.raises(ValueError, match="commit_delay_s"):
        GroupCommit(migrated_engine, commit_delay_s=-0.001)


def _until_waiting(group: GroupCommit, count: int) -> None:
    for _ in range(1000):
        if group.waiting() >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} units never waited together")


def _until_taken(group: GroupCommit) -> None:
    for _ in range(10_000):
        if group.waiting() == 0:
            return
        threading.Event().wait(0.001)
    raise AssertionError("the committer never took the waiting units")


@contextlib.contextmanager
def _committer_held(group: GroupCommit) -> Iterator[threading.Event]:
    """The committer busy with a unit of its own until the event yielded is set, so that
    the units handed over meanwhile wait for one batch."""
    hold = threading.Event()
    started = threading.Event()

    def holding(conn: Connection) -> None:
        started.set()
        hold.wait(timeout=10)

    with ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(group.run, holding)
        assert started.wait(timeout=10)
        try:
            yield hold
        finally:
            hold.set()
            blocker.result(timeout=10)


def _storing(agreement_id: str) -> WriteUnit[str]:
    def unit(conn: Connection) -> str:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row(agreement_id)))
        return agreement_id

    return unit


def test_coroutines_units_share_one_commit_and_each_hears_only_its_own_failure(
    migrated_engine: Engine, group: GroupCommit
) -> None:
    commits: list[int] = []
    event.listen(migrated_engine, "commit", lambda conn: commits.append(1))

    def failing(conn: Connection) -> str:
        conn.execute(insert(agreement_lifecycle).values(_lifecycle_row("refused")))
        raise QuotaRejected("used up")

    async def hand_over(hold: threading.Event) -> list[str | BaseException]:
        units = [_storing(f"a-{i}") for i in range(8)]
        units.insert(3, failing)
        writes = [asyncio.ensure_future(group.write(unit)) for unit in units]
        await asyncio.to_thread(_until_waiting, group, len(units))
        hold.set()
        return list(await asyncio.gather(*writes, return_exceptions=True))

    with _committer_held(group) as hold:
        answers = asyncio.run(hand_over(hold))

    assert isinstance(answers.pop(3), QuotaRejected)
    assert answers == [f"a-{i}" for i in range(8)]
    with migrated_engine.connect() as conn:
        ids = set(conn.execute(select(agreement_lifecycle.c.agreement_id)).scalars())
    assert ids == {f"a-{i}" for i in range(8)}
    # The held unit's transaction, then the nine coroutines' units: one attempt rolled back
    # by the failing unit, and one commit for the eight others.
    assert len(commits) == 2


def test_a_coroutine_cancelled_while_its_unit_waits_leaves_the_write_and_the_batch_intact(
    migrated_engine: Engine, group: GroupCommit
) -> None:
    async def hand_over(hold: threading.Event) -> str:
        abandoned = asyncio.ensure_future(group.write(_storing("abandoned")))
        kept = asyncio.ensure_future(group.write(_storing("kept")))
        await asyncio.to_thread(_until_waiting, group, 2)
        abandoned.cancel()
        hold.set()
        return await kept

    with _committer_held(group) as hold:
        assert asyncio.run(hand_over(hold)) == "kept"

    # A unit handed over is written even if its caller stopped waiting: it was never
    # told otherwise, and a caller that retries is deduplicated by the unit's own keys.
    with migrated_engine.connect() as conn:
        ids = set(conn.execute(select(agreement_lifecycle.c.agreement_id)).scalars())
    assert ids == {"abandoned", "kept"}
