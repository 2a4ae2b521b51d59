"""``kill -9`` of either gateway loses no acknowledged update and applies none twice.

AT streams 2,000 civil-record updates to BE through real gateway and registry
processes. A controller thread SIGKILLs BE's gateway while deliveries are in flight
and restarts it, then SIGKILLs AT's gateway in the middle of a submission stream and
restarts it (each restart runs beside the schedule, so both may be down at once); the
client resumes the broken stream with the same client references.
The schedule is drawn from a seeded random generator: the seed is printed, and
``POUCH_CRASH_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pouch_devtools.demo.deployment import GatewayProcess, RegistryProcess, Site, prepare_sites
from tests.integration.civil_builders import (
    BulkSubmission,
    applied_in_registry,
    gateway_database,
    query_sqlite,
    update_requests,
    wait_until,
)

COUNT = 2000
STREAM_SIZE = 400
DELIVERY = {
    "backoff_initial_seconds": 0.1,
    "backoff_max_seconds": 1.0,
    "poll_interval_seconds": 0.05,
    "batch_size": 200,
    # A killed dispatcher's claims become claimable again after this; the default
    # (30 s) would only make the test wait.
    "lease_seconds": 5.0,
}
APPLIED_WITHIN_S = 240.0


class Gateways:
    """The current process of each state's gateway; a restart gets a fresh log file.

    A fresh log per start matters: the ready marker of the previous run is still in
    the old log, and would make a restart look ready at once.
    """

    def __init__(self, sites: dict[str, Site]) -> None:
        self._sites = sites
        self._starts = dict.fromkeys(sites, 0)
        self.current: dict[str, GatewayProcess] = {}

    def start(self, state: str) -> None:
        self._starts[state] += 1
        site = self._sites[state]
        process = GatewayProcess(site, log_path=site.root / f"gateway-{self._starts[state]}.log")
        self.current[state] = process
        process.start()

    def stop_all(self) -> None:
        for process in self.current.values():
            # terminate() kills a gateway that outlives the timeout, then re-raises.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.terminate(timeout_s=15)


class CrashController(threading.Thread):
    """Kills and restarts BE, then AT, at moments drawn from ``rng``."""

    def __init__(self, rng: random.Random, gateways: Gateways, submission: BulkSubmission) -> None:
        super().__init__(name="crash-controller", daemon=True)
        self._gateways = gateways
        self._submission = submission
        self.kill_be_after = rng.randint(COUNT // 10, COUNT * 35 // 100)
        self.be_down_s = rng.uniform(0.1, 1.5)
        self.kill_at_after = rng.randint(COUNT // 2, COUNT * 85 // 100)
        self.at_down_s = rng.uniform(0.1, 1.0)
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.events: list[str] = []

    def run(self) -> None:
        # Each restart runs beside the schedule: a gateway takes longer to start than AT
        # takes to acknowledge the rest of the updates, so waiting for BE to come back
        # before watching for AT's moment would let every stream end first.
        restarts: list[threading.Thread] = []
        try:
            for state, after, down_s in (
                ("BE", self.kill_be_after, self.be_down_s),
                ("AT", self.kill_at_after, self.at_down_s),
            ):
                self._wait_for_acknowledged(after)
                self._gateways.current[state].kill()
                self.events.append(f"killed {state} at {self._submission.acknowledged} acked")
                restart = threading.Thread(target=self._restart, args=(state, down_s))
                restart.start()
                restarts.append(restart)
        except BaseException as e:
            self.error = e
        finally:
            for restart in restarts:
                restart.join()

    def _restart(self, state: str, down_s: float) -> None:
        try:
            time.sleep(down_s)
            self._gateways.start(state)
            self.events.append(f"restarted {state} after {down_s:.2f} s")
        except BaseException as e:
            self.error = e

    def _wait_for_acknowledged(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while self._submission.acknowledged < count:
            if self.stopping.is_set():
                raise RuntimeError("stopped before the crash schedule ran")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} acknowledgements not reached in 120 s")
            time.sleep(0.005)


@pytest.fixture
def crash_seed() -> int:
    seed = int(os.environ.get("POUCH_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"crash schedule seed {seed} (replay with POUCH_CRASH_SEED={seed})")
    return seed


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[dict[str, Site], Gateways]]:
    sites = prepare_sites(
        tmp_path, ["AT", "BE"], now=datetime.now(UTC), agreements=[("AT", "BE")], delivery=DELIVERY
    )
    registries = [RegistryProcess(site) for site in sites.values()]
    gateways = Gateways(sites)
    try:
        for registry in registries:
            registry.start()
        gateways.start("BE")
        gateways.start("AT")
        yield sites, gateways
    finally:
        gateways.stop_all()
        for registry in registries:
            registry.stop()


def _outbox_summary(at: Site) -> Callable[[], str]:
    def describe() -> str:
        rows = query_sqlite(
            gateway_database(at),
            "SELECT status, coalesce(outcome, '-'), count(*) FROM outbox GROUP BY 1, 2",
        )
        return f"AT outbox (status, outcome, count): {rows}"

    return describe


def test_bulk_updates_arrive_exactly_once_despite_sigkill_of_both_gateways(
    running: tuple[dict[str, Site], Gateways], crash_seed: int
) -> None:
    sites, gateways = running
    at, be = sites["AT"], sites["BE"]
    rng = random.Random(crash_seed)
    requests = update_requests(f"crash{crash_seed}", COUNT)
    submission = BulkSubmission(at, requests, stream_size=STREAM_SIZE, parallel=2)
    controller = CrashController(rng, gateways, submission)
    started = time.monotonic()
    controller.start()
    try:
        message_ids = asyncio.run(submission.run())
    finally:
        controller.stopping.set()
        controller.join(timeout=60)
    assert controller.error is None, f"crash controller failed: {controller.error!r}"
    assert not controller.is_alive(), "crash controller did not finish"
    print(f"{'; '.join(controller.events)}; {submission.resumptions} stream resumptions")
    assert len(controller.events) == 4, controller.events
    assert submission.resumptions >= 1, "killing AT mid-stream did not break a stream"
    assert len(message_ids) == COUNT
    assert len(set(message_ids.values())) == COUNT, "two client references share a message id"
    submitted_s = time.monotonic() - started

    applied_count = (
        "SELECT count(*) FROM outbox WHERE exchange_type = 'civil_record' AND outcome = 'applied'"
    )
    waited_s = wait_until(
        lambda: query_sqlite(gateway_database(at), applied_count)[0][0] == COUNT,
        timeout_s=APPLIED_WITHIN_S,
        describe=_outbox_summary(at),
        interval_s=0.5,
    )
    print(f"submitted in {submitted_s:.1f} s, all applied {waited_s:.1f} s later")

    stored = dict(
        query_sqlite(
            gateway_database(at),
            "SELECT client_reference, message_id FROM outbox WHERE exchange_type = 'civil_record'",
        )
    )
    assert stored == message_ids, "AT's outbox holds other messages than were acknowledged"
    in_registry = applied_in_registry(be)
    assert len(in_registry) == COUNT, f"BE's registry applied {len(in_registry)} rows"
    assert set(in_registry) == set(message_ids.values())
    (received,) = query_sqlite(gateway_database(be), "SELECT count(*) FROM inbox")[0]
    assert received == COUNT
