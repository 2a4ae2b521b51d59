"""Daily quotas: counted by the database, so no process, thread or replica can overspend."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier as ProcessBarrier
from threading import Barrier

import pytest
from sqlalchemy import Engine, func, select

from gateway.store.engine import create_engine
from gateway.store.quota import QuotaDecision, QuotaLedger
from gateway.store.tables import quota_usage

from .conftest import START, FakeClock, within

AGREEMENT = "AT-BE/identity"
DIRECTION = "AT->BE"
PURPOSE = "identity-confirmation"
TODAY = START.date()


@pytest.fixture
def ledger(migrated_engine: Engine, clock: FakeClock) -> QuotaLedger:
    return QuotaLedger(migrated_engine, clock=clock)


def test_consumed_units_are_counted_until_the_limit(
    ledger: QuotaLedger, migrated_engine: Engine
) -> None:
    decisions = []
    for _ in range(4):
        with within(migrated_engine) as conn:
            decisions.append(ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=3))

    assert decisions == [
        QuotaDecision(allowed=True, used=1, limit=3, day=TODAY),
        QuotaDecision(allowed=True, used=2, limit=3, day=TODAY),
        QuotaDecision(allowed=True, used=3, limit=3, day=TODAY),
        QuotaDecision(allowed=False, used=3, limit=3, day=TODAY),
    ]
    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE) == 3


def test_quota_exhausted_refuses_without_writing(
    ledger: QuotaLedger, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        assert ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=5, amount=4).allowed

    # Units that do not fit are not taken at all, not even partly.
    with within(migrated_engine) as conn:
        refused = ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=5, amount=2)
    assert (refused.allowed, refused.used) == (False, 4)
    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE) == 4

    # A first request larger than the whole quota, or any request under a zero quota,
    # must not even create the day's counter.
    with within(migrated_engine) as conn:
        assert not ledger.consume_within(
            conn, AGREEMENT, DIRECTION, "emergency-travel", limit=2, amount=3
        ).allowed
    with within(migrated_engine) as conn:
        assert not ledger.consume_within(
            conn, AGREEMENT, DIRECTION, "detention-visit", limit=0
        ).allowed
    with migrated_engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(quota_usage)).scalar_one()
    assert rows == 1


def test_quota_resets_next_day(
    ledger: QuotaLedger, clock: FakeClock, migrated_engine: Engine
) -> None:
    for _ in range(2):
        with within(migrated_engine) as conn:
            ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=2)
    with within(migrated_engine) as conn:
        assert not ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=2).allowed

    midnight = datetime.combine(TODAY + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    clock.advance((midnight - clock()).total_seconds())

    with within(migrated_engine) as conn:
        assert ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=2) == QuotaDecision(
            allowed=True, used=1, limit=2, day=TODAY + timedelta(days=1)
        )
    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE, day=TODAY) == 2


def test_quota_day_is_the_utc_day(migrated_engine: Engine) -> None:
    # 01:30 in Vienna's summer time is still the previous day in UTC.
    vienna_summer = timezone(timedelta(hours=2))
    ledger = QuotaLedger(
        migrated_engine, clock=lambda: datetime(2024, 7, 2, 1, 30, tzinfo=vienna_summer)
    )

    with within(migrated_engine) as conn:
        assert ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=1).day == date(
            2024, 7, 1
        )

    naive = QuotaLedger(migrated_engine, clock=lambda: datetime(2024, 7, 2, 1, 30))
    with pytest.raises(ValueError, match="timezone-aware"), within(migrated_engine) as conn:
        naive.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=1)


def test_each_direction_and_purpose_has_its_own_quota(
    ledger: QuotaLedger, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        assert ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=1).allowed
    with within(migrated_engine) as conn:
        assert ledger.consume_within(conn, AGREEMENT, "BE->AT", PURPOSE, limit=1).allowed
    with within(migrated_engine) as conn:
        assert ledger.consume_within(
            conn, AGREEMENT, DIRECTION, "emergency-travel", limit=1
        ).allowed
    with within(migrated_engine) as conn:
        assert ledger.consume_within(
            conn, "AT-BE/representation", DIRECTION, PURPOSE, limit=1
        ).allowed
    with within(migrated_engine) as conn:
        assert not ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=1).allowed


def test_released_unit_returns_to_the_day_it_was_taken_from(
    ledger: QuotaLedger, clock: FakeClock, migrated_engine: Engine
) -> None:
    with within(migrated_engine) as conn:
        taken = ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=1)
    clock.advance(24 * 3600)

    assert ledger.release(AGREEMENT, DIRECTION, PURPOSE, day=taken.day) is True

    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE, day=taken.day) == 0
    # Never below zero, and never onto a day with nothing taken.
    assert ledger.release(AGREEMENT, DIRECTION, PURPOSE, day=taken.day) is False
    assert ledger.release(AGREEMENT, DIRECTION, PURPOSE, day=clock().date()) is False
    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE, day=taken.day) == 0


def test_malformed_quota_requests_are_refused(ledger: QuotaLedger, migrated_engine: Engine) -> None:
    for direction in ("AT-BE", "at->be", "AT->", ""):
        with pytest.raises(ValueError, match="direction"), within(migrated_engine) as conn:
            ledger.consume_within(conn, AGREEMENT, direction, PURPOSE, limit=1)
    with pytest.raises(ValueError, match="amount"), within(migrated_engine) as conn:
        ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=1, amount=0)
    with pytest.raises(ValueError, match="limit"), within(migrated_engine) as conn:
        ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=-1)
    with pytest.raises(ValueError, match="purpose"), within(migrated_engine) as conn:
        ledger.consume_within(conn, AGREEMENT, DIRECTION, "", limit=1)


def test_concurrent_consumers_never_exceed_limit(
    database_url: str, ledger: QuotaLedger, clock: FakeClock
) -> None:
    limit = 40
    consumers = 6
    starting_line = Barrier(consumers)

    def consume_until_refused() -> int:
        # Its own engine for every other consumer: as separate replicas would have.
        engine = create_engine(database_url)
        try:
            replica = QuotaLedger(engine, clock=clock)
            starting_line.wait(timeout=10)
            allowed = 0
            while _consume(engine, replica, limit):
                allowed += 1
            return allowed
        finally:
            engine.dispose()

    with ThreadPoolExecutor(max_workers=consumers) as pool:
        futures = [pool.submit(consume_until_refused) for _ in range(consumers)]
        allowed = [f.result(timeout=60) for f in futures]

    assert sum(allowed) == limit
    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE) == limit


def test_quota_is_shared_by_two_processes(database_url: str, ledger: QuotaLedger) -> None:
    limit = 60
    spawn = multiprocessing.get_context("spawn")
    starting_line = spawn.Barrier(2)
    results: Queue[int] = spawn.Queue()
    processes = [
        spawn.Process(
            target=_consume_in_process, args=(database_url, limit, starting_line, results)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    try:
        allowed = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)

    assert [process.exitcode for process in processes] == [0, 0]
    assert sum(allowed) == limit
    assert min(allowed) > 0, "one process took every unit: the counter was never contended"
    assert ledger.usage(AGREEMENT, DIRECTION, PURPOSE) == limit


def _consume_in_process(
    database_url: str, limit: int, starting_line: ProcessBarrier, results: Queue[int]
) -> None:
    """Runs in a spawned process: consume until refused, report how many were allowed."""
    engine = create_engine(database_url)
    try:
        ledger = QuotaLedger(engine, clock=FakeClock(START))
        # Connect before the start, so both processes compete from the first unit.
        ledger.usage(AGREEMENT, DIRECTION, PURPOSE)
        starting_line.wait(timeout=30)
        allowed = 0
        while _consume(engine, ledger, limit):
            allowed += 1
            # Requests arrive apart, not back to back: let the other process in.
            time.sleep(0.002)
        results.put(allowed)
    finally:
        engine.dispose()


def _consume(engine: Engine, ledger: QuotaLedger, limit: int) -> bool:
    """Whether one more unit fits, taken in its own transaction, as one request takes it."""
    with within(engine) as conn:
        return ledger.consume_within(conn, AGREEMENT, DIRECTION, PURPOSE, limit=limit).allowed
