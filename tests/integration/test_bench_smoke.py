"""``bench/run.py --quick`` end to end: every scenario measured on both sides, with a ratio.

The benchmark is run by hand for its figures; this only defends that it still runs
against the current gateway and writes what its readers expect. No timing is asserted.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.integration.bench_scripts import run_quick

SCENARIOS = {
    "identity-32",
    "identity-1",
    "civil-1-stream",
    "civil-4-streams",
    "case-transitions",
    "audit-append",
    "policy-evaluation",
}


def test_quick_benchmark_measures_every_scenario_against_the_raw_relay(tmp_path: Path) -> None:
    document = run_quick("run.py", tmp_path / "bench.json")
    scenarios = {s["name"]: s for s in document["scenarios"]}
    assert set(scenarios) == SCENARIOS
    for name, scenario in scenarios.items():
        assert isinstance(scenario["ratio"], float) and math.isfinite(scenario["ratio"]), name
        assert scenario["ratio"] > 0, name
        for side in ("gateway", "baseline"):
            median = scenario[side]["median_round"]
            assert median["operations"] > 0, (name, side)
            assert median["processes"], (name, side)
            each = [p["cpu_us_per_op"] for p in median["processes"].values()]
            assert median["chain_cpu_us_per_op"] == pytest.approx(sum(each)), (name, side)
    assert document["machine"]["cores"] >= 1
