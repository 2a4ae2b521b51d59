"""The run's table (rich) and its JSON document."""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.procstat import CORES
from bench.rounds import ScenarioResult

REPOSITORY = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def source() -> dict[str, Any]:
    """The commit measured, and whether the gateway's code differed from it."""

    def git(*arguments: str) -> str:
        try:
            return subprocess.run(
                ["git", *arguments], cwd=REPOSITORY, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = git("status", "--porcelain", "--", "gateway", "adapters", "devtools", "proto")
    return {"commit": git("rev-parse", "HEAD"), "gateway_changed_since_commit": bool(changed)}


def machine() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": CORES,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _pair(values: Sequence[float | None], fmt: str) -> str:
    return " / ".join("-" if v is None else format(v, fmt) for v in values)


def table(results: Sequence[ScenarioResult]) -> Table:
    grid = Table(title="Pouch against a raw mutual-TLS relay (median round)", show_lines=False)
    for header, justify in (
        ("scenario", "left"),
        ("side", "left"),
        ("per second", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("CPU µs/op A / B", "right"),
        ("chain CPU µs/op", "right"),
        ("peak MiB A / B", "right"),
        ("other CPU", "right"),
        ("ratio", "right"),
    ):
        grid.add_column(header, justify=justify)  # type: ignore[arg-type]
    for result in results:
        document = result.document()
        for side in ("gateway", "baseline"):
            median = document[side]["median_round"]
            processes = list(median["processes"].values())[:2]
            grid.add_row(
                f"{result.name} ({result.unit})" if side == "gateway" else "",
                side,
                f"{median['throughput']:,.1f}",
                f"{median['p50_ms']:.2f}",
                f"{median['p99_ms']:.2f}",
                _pair([p["cpu_us_per_op"] for p in processes], ",.0f"),
                _pair([median["chain_cpu_us_per_op"]], ",.0f"),
                _pair([p["peak_rss_mib"] for p in processes], ".0f"),
                ", ".join(f"{r['other_cpu_share']:.0%}" for r in document[side]["rounds"]),
                f"{result.ratio:.2f}" if side == "gateway" else "",
                end_section=side == "baseline",
            )
    return grid


def document(
    results: Sequence[ScenarioResult],
    settings: Mapping[str, Any],
    scaling: Mapping[str, Any] | None,
    failures: Sequence[str] = (),
    measured_source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": dict(measured_source) if measured_source is not None else source(),
        "settings": dict(settings),
        "scenarios": [r.document() for r in results],
        "scaling": scaling,
        "failures": list(failures),
    }


def write(path: Path, content: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, allow_nan=True) + "\n", encoding="utf-8")


def show(console: Console, results: Sequence[ScenarioResult]) -> None:
    console.print(table(results))
    console.print(
        "A / B: gateway AT / gateway BE, or relay A / relay B (in-process: the bench "
        "process). chain CPU: every process of the side, the caller included. other CPU: "
        "what other processes took of the machine, per round."
    )
