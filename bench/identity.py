"""Identity confirmations, end to end, on one machine (run by hand, never in CI).

    python bench/identity.py [--count 2000] [--in-flight 32] [--documents 1000] [--keep]

Builds a throw-away AT–BE deployment on SQLite in a temporary directory, seeds BE's
reference registry with ``--documents`` passports, runs both gateways and both
registries as real processes on loopback, and has AT's consulate ask for ``--count``
confirmations with ``--in-flight`` calls outstanding at a time. Each call goes caller
-> AT's local API (mTLS + token) -> AT signs -> BE's peer API (mTLS) -> BE verifies,
re-evaluates the policy, asks its registry over mTLS, compares, signs -> AT verifies
-> caller. Half the claims match, a quarter are partial, a quarter name no document.
It prints confirmations per second and p50 / p99 / max latency per call, after a
warm-up of ``--in-flight`` calls that are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.confirmations import confirm, seed
from bench.rounds import percentile
from pouch_devtools.demo.deployment import GatewayProcess, RegistryProcess, prepare_sites


def run(workdir: Path, count: int, in_flight: int, documents: int) -> None:
    sites = prepare_sites(
        workdir,
        ["AT", "BE"],
        now=datetime.now(UTC),
        agreements=[("AT", "BE")],
        daily_quota=max(100_000, 2 * count),
    )
    at, be = sites["AT"], sites["BE"]
    seed(be, documents)
    processes: list[GatewayProcess | RegistryProcess] = [
        RegistryProcess(at),
        RegistryProcess(be),
        GatewayProcess(be),
        GatewayProcess(at),
    ]
    try:
        for process in processes:
            process.start()
        asyncio.run(confirm(at, in_flight, in_flight, documents))  # warm-up, not counted
        results: Counter[str] = Counter()
        measured = asyncio.run(confirm(at, count, in_flight, documents, results))
    finally:
        for process in reversed(processes):
            if isinstance(process, GatewayProcess):
                process.terminate()
            else:
                process.stop()
    print(f"identity confirmations: {count} calls, {in_flight} in flight, {documents} documents")
    latencies = measured.latencies_s
    print(f"  throughput  {measured.throughput:8.1f} confirmations/s ({measured.elapsed_s:.1f} s)")
    print(
        f"  latency     p50 {percentile(latencies, 0.50) * 1000:7.1f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms"
    )
    print("  answers     " + ", ".join(f"{k} {v}" for k, v in sorted(results.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the deployment directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-identity-"))
    try:
        run(workdir, args.count, args.in_flight, args.documents)
    finally:
        if args.keep:
            print(f"deployment kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
