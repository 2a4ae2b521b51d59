"""A partner that is down: updates wait with growing delays, then arrive once, or die.

AT's gateway runs as a real process; BE's is not started until the test says so, so
every delivery attempt meets a closed port. The outbox is read directly from AT's
SQLite database while the gateway writes it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.connect import bearer, secure_channel
from pouch.v1 import civil_pb2, civil_pb2_grpc, common_pb2, gateway_pb2
from pouch_devtools.demo.deployment import GatewayProcess, RegistryProcess, Site, prepare_sites
from tests.integration.civil_builders import (
    BulkSubmission,
    applied_in_registry,
    gateway_database,
    query_sqlite,
    update_request,
    update_requests,
    wait_until,
)
from tests.integration.exchange_fixtures import LocalCaller

COUNT = 20
INITIAL_S = 0.2
MAXIMUM_S = 2.0
# The wait after the n-th failed attempt: doubling from INITIAL_S, capped at MAXIMUM_S.
EXPECTED_DELAYS_S = (0.2, 0.4, 0.8, 1.6, 2.0)
# Scheduling a retry stamps updated_at a moment after the delay was computed.
DELAY_TOLERANCE_S = 0.1
# Between one attempt falling due and the next being scheduled: a poll and a refused call.
ATTEMPT_LATENCY_S = 1.0


def _prepare(tmp_path: Path, **delivery: float) -> dict[str, Site]:
    return prepare_sites(
        tmp_path,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery={"poll_interval_seconds": 0.05, **delivery},
    )


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess | RegistryProcess]]:
    """Started processes, stopped whatever the test's outcome."""
    started: list[GatewayProcess | RegistryProcess] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            if isinstance(process, GatewayProcess):
                process.terminate()
            else:
                process.stop()


def _start(
    processes: list[GatewayProcess | RegistryProcess], process: GatewayProcess | RegistryProcess
) -> None:
    processes.append(process)
    process.start()


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


def _applied_count(at: Site) -> int:
    rows = query_sqlite(
        gateway_database(at), "SELECT count(*) FROM outbox WHERE outcome = 'applied'"
    )
    return int(rows[0][0])


class RetryObserver:
    """Per message, per attempt count: (next_attempt_at, delay) while pending.

    The delay is ``next_attempt_at - updated_at``: what the dispatcher scheduled when it
    put the message back. It samples the outbox from its own thread, started before the
    updates are submitted: the first retry falls due 0.2 s after the first attempt,
    often before the submission stream has ended.
    """

    def __init__(self, at: Site) -> None:
        self._at = at
        self.seen: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> RetryObserver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        wanted = len(EXPECTED_DELAYS_S)
        while not self._stop.is_set():
            rows = query_sqlite(
                gateway_database(self._at),
                "SELECT message_id, status, attempts, next_attempt_at, updated_at FROM outbox",
            )
            with self._lock:
                for message_id, status, attempts, next_attempt_at, updated_at in rows:
                    assert status in ("pending", "in_flight"), f"{message_id} became {status}"
                    if status == "pending" and 1 <= attempts <= wanted:
                        due, stamped = _parse(next_attempt_at), _parse(updated_at)
                        self.seen[message_id][attempts] = (
                            due.timestamp(),
                            (due - stamped).total_seconds(),
                        )
            time.sleep(0.02)

    def wait_for(self, message_ids: set[str]) -> dict[str, dict[int, tuple[float, float]]]:
        """Every expected delay of every message, or a failure once it cannot be late."""
        wanted = len(EXPECTED_DELAYS_S)
        deadline = time.monotonic() + 2 * sum(EXPECTED_DELAYS_S) + wanted * ATTEMPT_LATENCY_S
        while True:
            with self._lock:
                counts = {m: len(self.seen.get(m, {})) for m in message_ids}
                unknown = set(self.seen) - message_ids
            assert not unknown, f"unexpected messages in the outbox: {sorted(unknown)}"
            if all(count >= wanted for count in counts.values()):
                break
            assert self._thread.is_alive(), "the outbox observer stopped"
            assert time.monotonic() < deadline, (
                f"retries not observed in time; attempts seen: {sorted(counts.values())}"
            )
            time.sleep(0.05)
        with self._lock:
            return {m: dict(self.seen[m]) for m in message_ids}


def test_queued_updates_are_delivered_when_partner_comes_back_and_delays_grow(
    tmp_path: Path, processes: list[GatewayProcess | RegistryProcess]
) -> None:
    sites = _prepare(
        tmp_path,
        backoff_initial_seconds=INITIAL_S,
        backoff_multiplier=2.0,
        backoff_max_seconds=MAXIMUM_S,
        jitter_fraction=0.0,
    )
    at, be = sites["AT"], sites["BE"]
    _start(processes, GatewayProcess(at))
    submission = BulkSubmission(at, update_requests("retry", COUNT), stream_size=COUNT)
    with RetryObserver(at) as observer:
        message_ids = asyncio.run(submission.run())
        seen = observer.wait_for(set(message_ids.values()))
    for message_id, by_attempt in seen.items():
        delays = [by_attempt[n][1] for n in range(1, len(EXPECTED_DELAYS_S) + 1)]
        for delay, expected in zip(delays, EXPECTED_DELAYS_S, strict=True):
            assert expected - DELAY_TOLERANCE_S <= delay <= expected + 0.001, (
                f"{message_id}: delays {delays}, expected {EXPECTED_DELAYS_S}"
            )
        due = [by_attempt[n][0] for n in range(1, len(EXPECTED_DELAYS_S) + 1)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(due)]
        for gap, expected in zip(gaps, EXPECTED_DELAYS_S[1:], strict=True):
            assert expected - DELAY_TOLERANCE_S <= gap <= expected + ATTEMPT_LATENCY_S, (
                f"{message_id}: gaps between due times {gaps}"
            )

    _start(processes, RegistryProcess(be))
    _start(processes, GatewayProcess(be))
    wait_until(
        lambda: _applied_count(at) == COUNT,
        timeout_s=60,
        describe=lambda: str(
            query_sqlite(
                gateway_database(at),
                "SELECT status, outcome, attempts, last_error_reason FROM outbox",
            )
        ),
    )
    in_registry = applied_in_registry(be)
    assert sorted(in_registry) == sorted(message_ids.values())


async def _dead_letter_status(site: Site) -> civil_pb2.UpdateStatus:
    async with secure_channel(site.local_target, site.client_identity()) as channel:
        stub = civil_pb2_grpc.CivilRecordServiceStub(channel)
        metadata = bearer(site.token(["civil:submit"], now=time.time()))
        submitted = await stub.SubmitUpdate(
            update_request("deadline", 0), metadata=metadata, timeout=10
        )
        deadline = time.monotonic() + 30
        while True:
            answer = await stub.GetUpdateStatus(
                civil_pb2.GetUpdateStatusRequest(message_id=submitted.message_id),
                metadata=metadata,
                timeout=10,
            )
            status = answer.status
            if status.state != common_pb2.DELIVERY_STATE_QUEUED:
                return status
            assert time.monotonic() < deadline, f"still queued after 30 s: {status}"
            await asyncio.sleep(0.1)


def test_message_past_deadline_is_dead_lettered_and_visible_to_caller(
    tmp_path: Path, processes: list[GatewayProcess | RegistryProcess]
) -> None:
    sites = _prepare(tmp_path, deadline_seconds=1.5, backoff_initial_seconds=0.2)
    _start(processes, GatewayProcess(sites["AT"]))

    status = asyncio.run(_dead_letter_status(sites["AT"]))

    assert status.state == common_pb2.DELIVERY_STATE_DEAD_LETTERED, status
    assert status.reason_code.startswith("DEADLINE_PASSED"), status.reason_code
    assert status.attempts >= 1
    assert status.client_reference == "deadline:000000"
    # The operator sees it among the dead letters, with its stage and reason.
    with LocalCaller(sites["AT"], ["admin"]) as operator:
        (letter,) = operator.gateway.ListDeadLetters(
            gateway_pb2.ListDeadLettersRequest(), metadata=operator.metadata, timeout=10
        ).dead_letters
    assert (letter.direction, letter.stage, letter.partner_state) == ("outbound", "delivery", "BE")
    assert letter.reason_code == status.reason_code
    assert letter.attempts == status.attempts
