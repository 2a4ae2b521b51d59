"""Audit log throughput and proof cost on SQLite (run by hand, never in CI).

    python bench/audit.py [--appends 20000] [--entries 1000000] [--proofs 2000] [--keep]

Works in a temporary directory on SQLite files (WAL, ``synchronous=FULL``, as served).
It prints:

- append: entries per second through :meth:`AuditLog.append` in batches of 100, each
  batch one committed transaction (index lock, entries, completed subtree nodes);
- build: how long the ``--entries`` log took through the bulk path (the same append
  code with batches of 50,000 entries);
- root / inclusion / consistency: mean and p99 milliseconds per call at that size,
  each call reading its O(log n) stored nodes in its own read transaction, plus the
  cost of verifying a proof (pure hashing);
- verify: the time of ``pouch audit verify`` on an export of that log, once the
  verifier exists (:func:`measure_verify` is the hook); until then "not measured".
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine

from gateway.audit import merkle
from gateway.audit.log import AuditLog, _row
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from tests.unit.audit import make_event
from tests.unit.store.conftest import START, FakeClock

APPEND_BATCH = 100
BUILD_BATCH = 50_000


def _sqlite(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    return engine


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def _timed(label: str, calls: int, call: Callable[[int], object]) -> None:
    durations = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        durations.append((time.perf_counter() - started) * 1000)
    mean = sum(durations) / len(durations)
    print(f"{label}: mean {mean:.3f} ms, p99 {_percentile(durations, 0.99):.3f} ms ({calls} calls)")


def measure_appends(workdir: Path, count: int) -> None:
    engine = _sqlite(workdir / "appends.db")
    try:
        log = AuditLog(engine, clock=FakeClock(START))
        batches = [
            [make_event(n) for n in range(start, min(start + APPEND_BATCH, count))]
            for start in range(0, count, APPEND_BATCH)
        ]
        started = time.perf_counter()
        for batch in batches:
            log.append(batch)
        elapsed = time.perf_counter() - started
        print(
            f"append: {count / elapsed:,.0f} entries/s in batches of {APPEND_BATCH} "
            f"({len(batches) / elapsed:,.1f} commits/s, {count} entries, {elapsed:.1f} s)"
        )
    finally:
        engine.dispose()


def build_log(workdir: Path, count: int) -> tuple[Engine, AuditLog]:
    engine = _sqlite(workdir / "large.db")
    log = AuditLog(engine, clock=FakeClock(START))
    started = time.perf_counter()
    for start in range(0, count, BUILD_BATCH):
        rows = [_row(make_event(n)) for n in range(start, min(start + BUILD_BATCH, count))]
        log._append_rows(rows)
    elapsed = time.perf_counter() - started
    size_mb = (workdir / "large.db").stat().st_size / 1e6
    rate = count / elapsed
    print(f"build: {count:,} entries in {elapsed:.1f} s ({rate:,.0f} entries/s, {size_mb:,.0f} MB)")
    return engine, log


def measure_proofs(log: AuditLog, calls: int) -> None:
    size = log.size()
    rng = random.Random(6962)  # noqa: S311 (positions to probe, not secrets)
    indexes = [rng.randrange(size) for _ in range(calls)]
    sizes1 = [rng.randrange(1, size) for _ in range(calls)]
    _timed(f"root at {size:,}", min(calls, 200), lambda _: log.root(size))
    _timed(f"inclusion proof at {size:,}", calls, lambda i: log.inclusion_proof(indexes[i], size))
    _timed(
        f"consistency proof to {size:,}",
        calls,
        lambda i: log.consistency_proof(sizes1[i], size),
    )
    root = log.root(size)
    index = indexes[0]
    proof = log.inclusion_proof(index, size)
    (leaf,) = log.leaf_hashes(index, index + 1)
    _timed(
        "verify inclusion (pure)",
        calls,
        lambda _: merkle.verify_inclusion(leaf, index, size, proof, root),
    )
    assert merkle.verify_inclusion(leaf, index, size, proof, root)


def measure_verify(engine: Engine, workdir: Path) -> str:
    """Hook: time ``pouch audit verify`` on an exported bundle of the large log.

    The export and the offline verifier are built elsewhere; when they land, export the
    log here into ``workdir`` and time the verification of the bundle.
    """
    try:
        from gateway.cli.main import main as cli
    except ImportError:
        return "verify: not measured"
    audit = getattr(cli, "commands", {}).get("audit")
    if audit is None or "verify" not in getattr(audit, "commands", {}):
        return "verify: not measured"
    return "verify: not measured (pouch audit verify exists: wire it into measure_verify)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-audit-"))
    try:
        measure_appends(workdir, args.appends)
        engine, log = build_log(workdir, args.entries)
        try:
            measure_proofs(log, args.proofs)
            print(measure_verify(engine, workdir))
        finally:
            engine.dispose()
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
