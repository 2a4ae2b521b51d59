"""Scaling figures (``run.py --scaling``): does a gateway slow down or grow with history?

- Audit history: identity confirmations (32 in flight) with 10,000 and with 1,000,000
  entries already in AT's audit log, written straight through
  :class:`~gateway.audit.log.AuditLog` before AT's gateway starts.
- Agreements: the same with 1 and with 50 agreements loaded on both gateways (49
  extra ones, written and signed by both parties like the demo's).
- Memory along exchanges: ``--exchanges`` identity confirmations on one pair of
  gateways, each gateway's VmRSS sampled every twentieth of the way; the slope (KiB
  per 1,000 exchanges, least squares over the second half, after warm-up) should be
  about zero.

``--quick`` shrinks every count, for a smoke run. The memory series alone, the longest
part (about 90 minutes for 1,000,000 exchanges on a 2-core machine), also runs by itself:

    python bench/scaling.py [--exchanges 1000000] [--json bench/results/memory.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from bench import confirmations
from bench.chains import DAILY_QUOTA, GatewayChain, prepare
from bench.procstat import UseMeter, rss_kib
from bench.rounds import percentile
from gateway.audit.log import AuditLog
from gateway.store.engine import create_engine
from gateway.store.migrate import upgrade_to_head
from pouch_devtools.demo.agreements import write_hash_key, write_signed_agreement
from pouch_devtools.demo.deployment import Site
from tests.integration.civil_builders import gateway_database
from tests.unit.audit import make_event

DOCUMENTS = 1000
IN_FLIGHT = 32
PREFILL_BATCH = 50_000
SAMPLES = 20


def prefill_audit_log(site: Site, entries: int) -> None:
    """``entries`` made-up entries in ``site``'s audit log, before its gateway starts."""
    path = gateway_database(site)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}")
    try:
        upgrade_to_head(engine)
        log = AuditLog(engine, clock=lambda: datetime.now(UTC))
        for start in range(0, entries, PREFILL_BATCH):
            log.append([make_event(n) for n in range(start, min(start + PREFILL_BATCH, entries))])
    finally:
        engine.dispose()


def add_agreements(at: Site, be: Site, extra: int) -> None:
    """``extra`` more AT–BE agreements, signed by both and keyed, on both gateways."""
    today = datetime.now(UTC).date()
    for index in range(extra):
        agreement_id = f"at-be-extra-{index:02d}"
        write_signed_agreement(
            agreement_id,
            at.pki,
            be.pki,
            [at.agreements_dir, be.agreements_dir],
            today=today,
            daily_quota=DAILY_QUOTA,
        )
        write_hash_key(agreement_id, [at.hash_keys_dir, be.hash_keys_dir])


def _confirmations_under(
    workdir: Path, count: int, arrange: Callable[[Site, Site], None]
) -> dict[str, Any]:
    sites = prepare(workdir)
    at, be = sites["AT"], sites["BE"]
    confirmations.seed(be, DOCUMENTS)
    arrange(at, be)
    chain = GatewayChain(at, be)
    chain.start()
    try:
        asyncio.run(confirmations.confirm(at, IN_FLIGHT, IN_FLIGHT, DOCUMENTS))
        meter = UseMeter(chain.pids)
        meter.start()
        measured = asyncio.run(confirmations.confirm(at, count, IN_FLIGHT, DOCUMENTS))
        use = meter.stop()
    finally:
        chain.stop()
    return {
        "confirmations": count,
        "throughput": measured.throughput,
        "p50_ms": percentile(measured.latencies_s, 0.5) * 1000,
        "p99_ms": percentile(measured.latencies_s, 0.99) * 1000,
        "peak_rss_mib": {
            name: use.processes[name].peak_rss_kib / 1024 for name in ("gateway AT", "gateway BE")
        },
        "other_cpu_share": use.other_cpu_share,
    }


def slope_kib_per_1000(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of (exchanges, KiB), per 1,000 exchanges."""
    if len(points) < 2:
        return 0.0
    xs, ys = [float(x) for x, _ in points], [float(y) for _, y in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 1000 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def memory_series(workdir: Path, exchanges: int, console: Console) -> dict[str, Any]:
    sites = prepare(workdir)
    at, be = sites["AT"], sites["BE"]
    confirmations.seed(be, DOCUMENTS)
    chain = GatewayChain(at, be)
    chain.start()
    step = max(1, exchanges // SAMPLES)
    series: list[dict[str, int]] = []
    try:
        done = 0
        while done < exchanges:
            batch = min(step, exchanges - done)
            asyncio.run(confirmations.confirm(at, batch, min(IN_FLIGHT, batch), DOCUMENTS))
            done += batch
            sample = {"exchanges": done}
            for name in ("gateway AT", "gateway BE"):
                sample[name] = rss_kib(chain.pids[name])
            series.append(sample)
            console.log(f"memory along exchanges: {sample}")
    finally:
        chain.stop()
    second_half = series[len(series) // 2 :]
    return {
        "exchanges": exchanges,
        "series_rss_kib": series,
        "slope_kib_per_1000_exchanges": {
            name: slope_kib_per_1000([(s["exchanges"], s[name]) for s in second_half])
            for name in ("gateway AT", "gateway BE")
        },
    }


def run_scaling(workdir: Path, quick: bool, exchanges: int, console: Console) -> dict[str, Any]:
    count = 50 if quick else 2000
    small, large = (1_000, 10_000) if quick else (10_000, 1_000_000)
    extra = 4 if quick else 49
    figures: dict[str, Any] = {}
    arrangements: dict[str, Callable[[Site, Site], None]] = {
        f"audit_entries_{small}": lambda at, be: prefill_audit_log(at, small),
        f"audit_entries_{large}": lambda at, be: prefill_audit_log(at, large),
        "agreements_1": lambda at, be: None,
        f"agreements_{extra + 1}": lambda at, be: add_agreements(at, be, extra),
    }
    for name, arrange in arrangements.items():
        console.log(f"scaling: {name}")
        figures[name] = _confirmations_under(workdir / name, count, arrange)
        console.log(f"scaling: {name}: {figures[name]}")
    figures["memory"] = memory_series(
        workdir / "memory", min(exchanges, 200) if quick else exchanges, console
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="Memory along exchanges, by itself.")
    parser.add_argument("--exchanges", type=int, default=1_000_000)
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "memory.json"
    )
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-memory-"))
    try:
        series = memory_series(workdir, args.exchanges, console)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(series, indent=1) + "\n", encoding="utf-8")
    slopes = series["slope_kib_per_1000_exchanges"]
    console.print(
        "slope over the second half, KiB per 1,000 exchanges: "
        + ", ".join(f"{name} {slope:.1f}" for name, slope in slopes.items())
    )
    console.print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
