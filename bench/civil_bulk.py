"""Bulk civil-record throughput, end to end, on one machine (run by hand, never in CI).

    python bench/civil_bulk.py [--count 10000] [--streams 1] [--keep]

Builds a throw-away AT–BE deployment on SQLite in a temporary directory, runs both
gateways and both reference registries as real processes on loopback, streams
``--count`` updates (births, deaths, marriages in turn) into AT's local API over
``--streams`` concurrent ``SubmitUpdates`` streams, and waits until BE's registry has
applied every one and AT has recorded every signed outcome. It prints:

- end to end: updates per second from the first update durable at AT (its outbox
  ``created_at``) to the last one applied by BE's registry (``applied_at``);
- submit only: updates per second acknowledged by AT's local API;
- latency: p50 / p99 / max from durable at AT to applied at BE, per message;
- outcomes recorded at AT: when AT held the last signed "applied" acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chains import DELIVERY
from bench.rounds import percentile
from pouch_devtools.demo.deployment import GatewayProcess, RegistryProcess, prepare_sites
from tests.integration.civil_builders import (
    BulkSubmission,
    gateway_database,
    query_sqlite,
    update_requests,
    wait_until,
)


def _moment(text: str) -> datetime:
    """A UTC timestamp as SQLAlchemy stores it in SQLite (no offset)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run(workdir: Path, count: int, streams: int) -> None:
    sites = prepare_sites(
        workdir,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        delivery=DELIVERY,
        daily_quota=max(100_000, 2 * count),
    )
    at, be = sites["AT"], sites["BE"]
    processes: list[GatewayProcess | RegistryProcess] = [
        RegistryProcess(at),
        RegistryProcess(be),
        GatewayProcess(be),
        GatewayProcess(at),
    ]
    try:
        for process in processes:
            process.start()
        requests = update_requests("bench", count)
        submission = BulkSubmission(
            at, requests, stream_size=math.ceil(count / streams), parallel=streams
        )
        started = time.monotonic()
        asyncio.run(submission.run())
        submit_s = (submission.last_answer_at or started) - started
        print(f"submitted {count} in {submit_s:.1f} s ({submission.resumptions} resumptions)")

        def applied_at_be() -> int:
            rows = query_sqlite(be.registry_db, "SELECT count(*) FROM applied_updates")
            return int(rows[0][0])

        def outcomes_at_at() -> int:
            rows = query_sqlite(
                gateway_database(at), "SELECT count(*) FROM outbox WHERE outcome = 'applied'"
            )
            return int(rows[0][0])

        wait_until(
            lambda: applied_at_be() == count and outcomes_at_at() == count,
            timeout_s=max(300.0, count / 10),
            describe=lambda: f"{applied_at_be()} applied at BE, {outcomes_at_at()} outcomes at AT",
            interval_s=0.5,
        )
        durable = {
            message_id: _moment(created)
            for message_id, created in query_sqlite(
                gateway_database(at),
                "SELECT message_id, created_at FROM outbox WHERE exchange_type = 'civil_record'",
            )
        }
        outcome_last = max(
            _moment(row[0])
            for row in query_sqlite(gateway_database(at), "SELECT outcome_at FROM outbox")
        )
        applied = {
            message_id: _moment(at_time)
            for message_id, at_time in query_sqlite(
                be.registry_db, "SELECT message_id, applied_at FROM applied_updates"
            )
        }
        first, last = min(durable.values()), max(applied.values())
        span = (last - first).total_seconds()
        latencies = [(applied[m] - durable[m]).total_seconds() for m in durable]
        print(f"end to end:   {count / span:8.1f} updates/s ({count} in {span:.1f} s)")
        print(f"submit only:  {count / submit_s:8.1f} updates/s")
        print(
            "latency durable at AT -> applied at BE: "
            f"p50 {percentile(latencies, 0.5):.2f} s, "
            f"p99 {percentile(latencies, 0.99):.2f} s, max {max(latencies):.2f} s"
        )
        print(f"last outcome recorded at AT {(outcome_last - first).total_seconds():.1f} s in")
    finally:
        for process in reversed(processes):
            if isinstance(process, GatewayProcess):
                process.terminate()
            else:
                process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the deployment directory")
    args = parser.parse_args()
    if args.count < 1 or args.streams < 1:
        parser.error("--count and --streams must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-"))
    print(f"deployment in {workdir}")
    try:
        run(workdir, args.count, args.streams)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
