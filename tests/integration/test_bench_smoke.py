"""``bench/run.py --quick`` end to end: every scenario measured on both sides, with a ratio.

The benchmark is run by hand for its figures; this only defends that it still runs
against the current gateway and writes what its readers expect. No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
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
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "bench" / "run.py"), "--quick", "--json", str(output)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(output.read_text(encoding="utf-8"))
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
