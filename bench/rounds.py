"""Alternating rounds and what a scenario reports from them.

A scenario has two sides, the gateway and its raw baseline, each a callable that
performs one round and returns a :class:`Measured`. Rounds alternate (gateway,
baseline, baseline, gateway, gateway, ... so that a slow drift of the machine hits both
sides alike), each bracketed by a :class:`~bench.procstat.UseMeter` over every process
of the run, and the ratio is the median of the per-round ratios
``gateway throughput / baseline throughput``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.procstat import RoundUse, UseMeter


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


@dataclass(frozen=True)
class Measured:
    """One round of one side: operations done, over how long, each one's latency."""

    operations: int
    elapsed_s: float
    latencies_s: Sequence[float]
    retried: int = 0  # calls answered UNAVAILABLE and made again

    @property
    def throughput(self) -> float:
        return self.operations / self.elapsed_s if self.elapsed_s > 0 else math.nan


@dataclass(frozen=True)
class Round:
    measured: Measured
    use: RoundUse
    processes: Sequence[str]  # the names of this side's processes, in the order shown

    def document(self) -> dict[str, Any]:
        ops = self.measured.operations
        processes = {
            name: {
                "cpu_us_per_op": self.use.processes[name].cpu_s * 1e6 / ops if ops else None,
                "peak_rss_mib": self.use.processes[name].peak_rss_kib / 1024,
            }
            for name in self.processes
            if name in self.use.processes
        }
        chain_s = sum(self.use.processes[name].cpu_s for name in processes)
        return {
            "operations": ops,
            "elapsed_s": self.measured.elapsed_s,
            "throughput": self.measured.throughput,
            "retried": self.measured.retried,
            "p50_ms": percentile(self.measured.latencies_s, 0.50) * 1000,
            "p99_ms": percentile(self.measured.latencies_s, 0.99) * 1000,
            "other_cpu_share": self.use.other_cpu_share,
            "other_cpu_s": self.use.other_cpu_s,
            "wall_s": self.use.wall_s,
            # Every process of the side, the caller included: what one operation costs the
            # machine, and so how many it could make a second with every core busy.
            "chain_cpu_us_per_op": chain_s * 1e6 / ops if ops else None,
            "processes": processes,
        }


@dataclass(frozen=True)
class Side:
    """One side of a scenario: what runs a round, and which processes are its own.

    ``prepare`` runs before each round, outside the metered window (warm-up calls,
    cases to move), so a round's CPU covers only the operations it counts.
    """

    run_round: Callable[[], Measured]
    processes: Sequence[str]
    prepare: Callable[[], object] = lambda: None


@dataclass
class ScenarioResult:
    name: str
    unit: str
    description: str
    gateway: list[Round] = field(default_factory=list)
    baseline: list[Round] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [
            g.measured.throughput / b.measured.throughput
            for g, b in zip(self.gateway, self.baseline, strict=True)
        ]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "description": self.description,
            "ratio": self.ratio,
            "ratios": self.ratios,
            "gateway": _summary(self.gateway),
            "baseline": _summary(self.baseline),
        }


def _summary(rounds: Sequence[Round]) -> dict[str, Any]:
    """The median round by throughput, and every round."""
    documents = [r.document() for r in rounds]
    ordered = sorted(documents, key=lambda d: d["throughput"])
    return {"median_round": ordered[len(ordered) // 2], "rounds": documents}


def measure(
    name: str,
    unit: str,
    description: str,
    *,
    gateway: Side,
    baseline: Side,
    rounds: int,
    pids: Callable[[], Mapping[str, int]],
    progress: Callable[[str], None] = lambda _: None,
) -> ScenarioResult:
    """Run ``rounds`` of each side, alternating, metering every process in ``pids()``."""
    result = ScenarioResult(name, unit, description)
    for index in range(rounds):
        order = [("gateway", gateway), ("baseline", baseline)]
        if index % 2:
            order.reverse()
        for label, side in order:
            side.prepare()
            meter = UseMeter(pids())
            meter.start()
            measured = side.run_round()
            use = meter.stop()
            done = Round(measured, use, side.processes)
            (result.gateway if label == "gateway" else result.baseline).append(done)
            progress(
                f"{name}: round {index + 1}/{rounds} {label} "
                f"{measured.throughput:,.1f} {unit} "
                f"(other CPU {use.other_cpu_share:.0%}"
                + (f", {measured.retried} calls retried)" if measured.retried else ")")
            )
    return result
