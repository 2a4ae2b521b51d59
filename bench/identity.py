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
import math
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.reference_registry import ReferenceRegistry
from gateway.connect import bearer, secure_channel
from gateway.demo.deployment import (
    GatewayProcess,
    RegistryProcess,
    Site,
    agreement_id_for,
    prepare_sites,
)
from pouch.v1 import common_pb2, identity_pb2, identity_pb2_grpc

PURPOSE = "emergency_travel_document"
TOKEN_LIFETIME_S = 600


def _number(index: int) -> str:
    return f"BE{index:07d}"


def _person(index: int) -> tuple[common_pb2.PersonName, common_pb2.CivilDate]:
    name = common_pb2.PersonName(
        given_names=[f"Given{index % 97:02d}"], family_names=[f"Family{index:05d}"]
    )
    born = common_pb2.CivilDate(year=1950 + index % 50, month=1 + index % 12, day=1 + index % 28)
    return name, born


def seed(site: Site, documents: int) -> None:
    registry = ReferenceRegistry(site.registry_db)
    try:
        for index in range(documents):
            name, born = _person(index)
            registry.add_document(
                document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
                number=_number(index),
                name=name,
                date_of_birth=born,
                sex=common_pb2.SEX_FEMALE,
                nationality="BE",
            )
    finally:
        registry.close()


def claim(index: int, documents: int) -> identity_pb2.IdentityClaim:
    known = index % documents
    name, born = _person(known)
    number = _number(known)
    if index % 4 == 2:  # partial: another given name
        name = common_pb2.PersonName(given_names=["Other"], family_names=name.family_names)
    elif index % 4 == 3:  # no document of that number
        number = f"ZZ{index:07d}"
    return identity_pb2.IdentityClaim(
        document_type=identity_pb2.DOCUMENT_TYPE_PASSPORT,
        document_number=number,
        name=name,
        date_of_birth=born,
        sex=common_pb2.SEX_FEMALE,
        nationality="BE",
    )


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


async def confirm_all(
    at: Site, agreement_id: str, count: int, in_flight: int, documents: int
) -> tuple[float, list[float], Counter[str]]:
    metadata = bearer(at.token(["identity:query"], now=time.time()))
    results: Counter[str] = Counter()
    latencies: list[float] = []
    async with secure_channel(at.local_target, at.client_identity()) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)

        async def one(index: int, record: bool) -> None:
            request = identity_pb2.ConfirmIdentityRequest(
                partner_state="BE",
                agreement_id=agreement_id,
                purpose=PURPOSE,
                claim=claim(index, documents),
            )
            started = time.perf_counter()
            answer = await stub.ConfirmIdentity(request, metadata=metadata, timeout=30)
            if record:
                latencies.append(time.perf_counter() - started)
                results[identity_pb2.MatchResult.Name(answer.result)] += 1

        await asyncio.gather(*(one(i, record=False) for i in range(in_flight)))
        queue = iter(range(in_flight, in_flight + count))

        async def worker() -> None:
            for index in queue:
                await one(index, record=True)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, results


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
        agreement_id = agreement_id_for("AT", "BE")
        elapsed, latencies, results = asyncio.run(
            confirm_all(at, agreement_id, count, in_flight, documents)
        )
    finally:
        for process in reversed(processes):
            if isinstance(process, GatewayProcess):
                process.terminate()
            else:
                process.stop()
    print(f"identity confirmations: {count} calls, {in_flight} in flight, {documents} documents")
    print(f"  throughput  {count / elapsed:8.1f} confirmations/s ({elapsed:.1f} s)")
    print(
        f"  latency     p50 {_percentile(latencies, 0.50) * 1000:7.1f} ms   "
        f"p99 {_percentile(latencies, 0.99) * 1000:7.1f} ms   max {max(latencies) * 1000:7.1f} ms"
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
