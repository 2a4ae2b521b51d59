"""Pouch against a raw mutual-TLS relay, scenario by scenario (run by hand, never in CI).

    python bench/run.py [--rounds 3] [--quick] [--json PATH] [--only NAME ...]
                        [--scaling] [--exchanges N] [--keep]

Builds a throw-away AT–BE deployment, starts the gateway chain (caller -> AT -> BE ->
BE's registry, each a process) and the relay chain (caller -> relay A -> relay B ->
registry stub, each a process, on the same certificates), and measures every
scenario on both, alternating gateway and baseline rounds. It prints a table and
writes JSON (``bench/results/latest.json`` unless ``--json``). ``bench/README.md``
says what each scenario measures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from bench import case_load, civil_load, confirmations, report
from bench.chains import GatewayChain, RelayChain, prepare, running
from bench.in_process import AuditAppends, PlainInserts, PolicyEvaluations
from bench.rounds import Measured, ScenarioResult, Side, measure
from pouch_devtools.demo.deployment import Site

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
GATEWAY_PROCESSES = ("gateway AT", "gateway BE", "registry BE", "caller")
RELAY_PROCESSES = ("relay A", "relay B", "registry stub", "caller")
IDENTITY_UNIT = "confirmations/s"


@dataclass(frozen=True)
class Counts:
    identity: int
    identity_serial: int
    civil: int
    cases: int
    audit: int
    policy: int
    documents: int = 1000
    identity_in_flight: int = 32
    case_in_flight: int = 8


FULL = Counts(
    identity=2000, identity_serial=1000, civil=10_000, cases=100, audit=5000, policy=20_000
)
QUICK = Counts(identity=50, identity_serial=20, civil=200, cases=10, audit=200, policy=500)


@dataclass(frozen=True)
class IdentityScenario:
    """``identity-<in_flight>``: ``count`` confirmations through AT, ``in_flight`` at a
    time, against as many round trips through the relays."""

    count: int
    in_flight: int

    @property
    def name(self) -> str:
        return f"identity-{self.in_flight}"

    @property
    def description(self) -> str:
        return f"ConfirmIdentity on AT, {self.count} calls, {self.in_flight} in flight"

    def gateway(self, at: Site, documents: int) -> Side:
        return confirmations.gateway_side(
            at, self.count, self.in_flight, documents, GATEWAY_PROCESSES
        )

    def baseline(self, relays: RelayChain) -> Side:
        return round_trips(relays, self.count, self.in_flight)


def identity_scenarios(counts: Counts) -> tuple[IdentityScenario, IdentityScenario]:
    """The two identity scenarios: many calls in flight, then one at a time."""
    return (
        IdentityScenario(counts.identity, counts.identity_in_flight),
        IdentityScenario(counts.identity_serial, 1),
    )


def round_trips(relays: RelayChain, count: int, in_flight: int) -> Side:
    return confirmations.relay_side(
        relays.caller_target, relays.caller_identity(), count, in_flight, RELAY_PROCESSES
    )


SCENARIOS = (
    "identity-32",
    "identity-1",
    "civil-1-stream",
    "civil-4-streams",
    "case-transitions",
    "audit-append",
    "policy-evaluation",
)


def run_scenarios(
    workdir: Path, counts: Counts, rounds: int, only: set[str], console: Console
) -> tuple[list[ScenarioResult], list[str]]:
    """Every scenario's result, and a line for each scenario that failed."""
    sites = prepare(workdir / "deployment")
    at, be = sites["AT"], sites["BE"]
    confirmations.seed(be, counts.documents)
    gateways, relays = GatewayChain(at, be), RelayChain(at, be)
    results: list[ScenarioResult] = []
    failures: list[str] = []

    def pids() -> dict[str, int]:
        return {**gateways.pids, **relays.pids, "caller": os.getpid()}

    def scenario(
        name: str,
        unit: str,
        description: str,
        gateway: Side,
        baseline: Side,
    ) -> None:
        if only and name not in only:
            return
        try:
            results.append(
                measure(
                    name,
                    unit,
                    description,
                    gateway=gateway,
                    baseline=baseline,
                    rounds=rounds,
                    pids=pids,
                    progress=lambda line: console.log(line),
                )
            )
        except Exception as e:  # one failed scenario must not lose the others' figures
            console.log(f"{name} failed: {type(e).__name__}: {e}")
            failures.append(f"{name}: {type(e).__name__}: {e}")

    tag = iter(range(1_000_000))

    def civil_round(streams: int) -> Measured:
        return civil_load.gateway_round(at, be, f"bench{next(tag)}", counts.civil, streams)

    with running(gateways, relays):
        for identity in identity_scenarios(counts):
            scenario(
                identity.name,
                IDENTITY_UNIT,
                identity.description,
                identity.gateway(at, counts.documents),
                identity.baseline(relays),
            )
        for streams in (1, 4):
            scenario(
                "civil-1-stream" if streams == 1 else f"civil-{streams}-streams",
                "updates/s",
                f"{counts.civil} civil-record updates over {streams} SubmitUpdates stream(s), "
                "first submit to last applied at BE's registry",
                Side(partial(civil_round, streams), GATEWAY_PROCESSES),
                Side(
                    partial(civil_load.relay_round, relays, counts.civil, streams), RELAY_PROCESSES
                ),
            )
        cases = case_load.CaseRounds(at, be, counts.cases, counts.case_in_flight)
        scenario(
            "case-transitions",
            "transitions/s",
            f"{counts.cases} representation cases moved ACKNOWLEDGED -> COMPLETED by BE, "
            f"{counts.case_in_flight} at a time, until applied at AT",
            Side(cases.run, GATEWAY_PROCESSES, prepare=lambda: cases.prepare(f"case{next(tag)}")),
            round_trips(relays, 4 * counts.cases, counts.case_in_flight),
        )
    in_process = ("caller",)
    if not only or "audit-append" in only:
        appends = AuditAppends(workdir / "audit.db")
        inserts = PlainInserts(workdir / "plain.db")
        scenario(
            "audit-append",
            "entries/s",
            f"{counts.audit} AuditLog appends of one entry, each committed (SQLite, WAL, FULL)",
            Side(lambda: appends.round(counts.audit), in_process),
            Side(lambda: inserts.round(counts.audit), in_process),
        )
    if not only or "policy-evaluation" in only:
        policy = PolicyEvaluations(at.agreements_dir)
        scenario(
            "policy-evaluation",
            "evaluations/s",
            f"{counts.policy} evaluations of the demo agreement's AT->BE civil and identity rules",
            Side(lambda: policy.round(counts.policy), in_process),
            Side(lambda: policy.copies(counts.policy), in_process),
        )
    return results, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny counts and one round")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=[])
    parser.add_argument("--scaling", action="store_true", help="also the scaling figures (long)")
    parser.add_argument(
        "--exchanges", type=int, default=1_000_000, help="scaling: exchanges in the memory series"
    )
    parser.add_argument(
        "--civil-updates", type=int, help="updates per civil round (default 10,000; quick 200)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the deployment directory")
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL
    if args.civil_updates is not None:
        counts = replace(counts, civil=args.civil_updates)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    # A table row per line even when the output is a file or a pipe.
    measured_source = report.source()  # what the gateways run, read before they start
    console = Console(width=None if sys.stdout.isatty() else 180)
    workdir = Path(tempfile.mkdtemp(prefix="pouch-bench-run-"))
    console.log(f"deployment in {workdir}")
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped and removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        results, failures = run_scenarios(workdir, counts, rounds, set(args.only), console)
        scaling = None
        if args.scaling:
            from bench.scaling import run_scaling

            scaling = run_scaling(workdir / "scaling", args.quick, args.exchanges, console)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report.show(console, results)
    settings = {"rounds": rounds, "quick": args.quick, "counts": asdict(counts)}
    report.write(args.json, report.document(results, settings, scaling, failures, measured_source))
    console.print(f"JSON written to {args.json}")
    for failure in failures:
        console.print(f"[red]failed[/red] {failure}")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
