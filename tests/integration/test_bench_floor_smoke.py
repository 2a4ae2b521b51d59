"""``bench/floor.py --quick`` end to end: the gateway with required work taken out.

The floor is run by hand for its figures; this defends that every reduced gateway still
starts and answers, and that the one said to write nothing wrote nothing. No timing is
asserted.
"""

from __future__ import annotations

import math
from pathlib import Path

from tests.integration.bench_scripts import run_quick


def test_quick_floor_measures_each_reduced_gateway_and_storage_free_ones_audit_nothing(
    tmp_path: Path,
) -> None:
    document = run_quick("floor.py", tmp_path / "floor.json")
    variants = {v["name"]: v for v in document["variants"]}
    assert set(variants) == {
        "full",
        "without storage",
        "without signatures",
        "without either",
    }
    counts = document["settings"]["counts"]
    # Each confirmation is audited twice at AT (submitted, then the answer received), the
    # warm-up calls before each round included; a start writes a few entries of its own
    # (not through the group commit), with or without storage.
    calls = counts["identity"] + counts["identity_in_flight"]
    calls += counts["identity_serial"] + 1
    for name, variant in variants.items():
        assert [s["name"] for s in variant["scenarios"]] == ["identity-32", "identity-1"], name
        for scenario in variant["scenarios"]:
            assert math.isfinite(scenario["ratio"]) and scenario["ratio"] > 0, name
        written = variant["audit_entries_written_at_AT"]
        if "storage" in variant["without"]:
            assert written < calls, name
        else:
            assert written >= 2 * calls, name
