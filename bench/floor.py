"""What the identity bars cost: the gateway with required work taken out (run by hand).

    python bench/floor.py [--rounds 2] [--quick] [--json PATH] [--keep]

The identity scenarios of ``bench/run.py`` (identity-32 and identity-1), measured the
same way against the same raw relay, on four gateway chains in turn:

- ``full``: the gateway as it is;
- ``without storage``: no write unit runs (no record, quota, replay guard or audit
  entry; no commit waited for);
- ``without signatures``: no ES256 signature computed or checked;
- ``without either``.

The three reduced gateways are ``bench/unsafe_gateway.py``, which says exactly what each
leaves out. None of them is a gateway anyone may run: they show how much of the gap to
the relay is the work the design requires (every exchange durably audited before it is
answered, every envelope signed and checked) and how much is the rest. For each chain
the JSON also has how many audit entries AT's gateway wrote while it ran (read from its
database afterwards): without storage, only the few a start writes, none per exchange.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from bench import confirmations, report
from bench.chains import GatewayChain, RelayChain, prepare, running
from bench.rounds import ScenarioResult, measure
from bench.run import FULL, IDENTITY_UNIT, QUICK, Counts, identity_scenarios
from pouch_devtools.demo.deployment import Site

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "floor.json"
UNSAFE_GATEWAY = Path(__file__).resolve().parent / "unsafe_gateway.py"


@dataclass(frozen=True)
class Variant:
    name: str
    without: tuple[str, ...]

    def program(self) -> list[str] | None:
        """The command each gateway's ``serve`` runs under; None for the real one."""
        if not self.without:
            return None
        return [
            sys.executable,
            str(UNSAFE_GATEWAY),
            *(f"--without={omission}" for omission in self.without),
        ]


VARIANTS = (
    Variant("full", ()),
    Variant("without storage", ("storage",)),
    Variant("without signatures", ("signatures",)),
    Variant("without either", ("storage", "signatures")),
)


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    results: list[ScenarioResult]
    audit_entries_written: int  # by AT's gateway during the variant's rounds


def audit_entries(site: Site) -> int:
    """How many audit entries ``site``'s gateway holds, read from its SQLite file (none
    before its first start)."""
    database = site.root / "data" / "pouch.db"
    if not database.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        (count,) = db.execute("SELECT count(*) FROM audit_entries").fetchone()
    return int(count)


def run_variants(
    workdir: Path, counts: Counts, rounds: int, console: Console
) -> list[VariantResult]:
    sites = prepare(workdir / "deployment")
    at, be = sites["AT"], sites["BE"]
    confirmations.seed(be, counts.documents)
    relays = RelayChain(at, be)
    measured: list[VariantResult] = []
    with running(relays):
        for variant in VARIANTS:
            before = audit_entries(at)
            gateways = GatewayChain(at, be, program=variant.program())

            def pids(gateways: GatewayChain = gateways) -> dict[str, int]:
                return {**gateways.pids, **relays.pids, "caller": os.getpid()}

            def progress(line: str, variant: Variant = variant) -> None:
                console.log(f"{variant.name}: {line}")

            with running(gateways):
                results = [
                    measure(
                        identity.name,
                        IDENTITY_UNIT,
                        identity.description,
                        gateway=identity.gateway(at, counts.documents),
                        baseline=identity.baseline(relays),
                        rounds=rounds,
                        pids=pids,
                        progress=progress,
                    )
                    for identity in identity_scenarios(counts)
                ]
            measured.append(VariantResult(variant, results, audit_entries(at) - before))
    return measured


def _median_p99(result: ScenarioResult) -> tuple[float, float]:
    """The p99 latency of each side's median round, in ms."""
    document = result.document()
    gateway, baseline = document["gateway"], document["baseline"]
    return gateway["median_round"]["p99_ms"], baseline["median_round"]["p99_ms"]


def table(measured: Sequence[VariantResult]) -> Table:
    grid = Table(title="The identity bars with required work taken out (median of rounds)")
    for header in (
        "gateway",
        "identity-32 ratio",
        "per round",
        "identity-1 ratio",
        "identity-1 p99 ms gateway / relay",
        "p99 times the relay's",
        "audit entries at AT",
    ):
        grid.add_column(header, justify="left" if header == "gateway" else "right")
    for each in measured:
        wide, serial = each.results
        gateway_p99, relay_p99 = _median_p99(serial)
        grid.add_row(
            each.variant.name,
            f"{wide.ratio:.2f}",
            ", ".join(f"{r:.3f}" for r in wide.ratios),
            f"{serial.ratio:.2f}",
            f"{gateway_p99:.2f} / {relay_p99:.2f}",
            f"{gateway_p99 / relay_p99:.2f}",
            f"{each.audit_entries_written:,}",
        )
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny counts and one round")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument("--keep", action="store_true", help="keep the deployment directory")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    console = Console(width=None if sys.stdout.isatty() else 180)
    measured_source = report.source()
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-floor-"))
    console.log(f"deployment in {workdir}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        measured = run_variants(workdir, counts, rounds, console)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    console.print(table(measured))
    document = {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": report.machine(),
        "source": measured_source,
        "settings": {"rounds": rounds, "quick": args.quick, "counts": asdict(counts)},
        "variants": [
            {
                "name": each.variant.name,
                "without": list(each.variant.without),
                "audit_entries_written_at_AT": each.audit_entries_written,
                "scenarios": [result.document() for result in each.results],
            }
            for each in measured
        ],
    }
    report.write(args.json, document)
    console.print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
