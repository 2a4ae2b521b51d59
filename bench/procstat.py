"""What the processes under test used, read from /proc (Linux only, no psutil).

CPU time comes in clock ticks: the machine's busy ticks from the first line of
``/proc/stat`` (everything but idle and iowait), and each process's own ``utime +
stime`` from ``/proc/<pid>/stat``. What the machine spent minus what the processes
under test spent is the CPU that other processes took during a round, the noise a
figure was taken under. Memory is ``VmHWM`` (peak resident set) and ``VmRSS`` from
``/proc/<pid>/status``; the peak is reset at the start of each round through
``/proc/<pid>/clear_refs`` so that each round reports its own.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
_PROC = Path("/proc")


def machine_ticks() -> tuple[int, int]:
    """Busy and total clock ticks of the whole machine since boot."""
    fields = [int(v) for v in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user time
    total = sum(fields[:8])
    return total - idle, total


def process_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it has gone)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return 0
    # The command name is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _status_kib(pid: int, key: str) -> int:
    try:
        lines = (_PROC / str(pid) / "status").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def reset_peak(pid: int) -> None:
    """Start a new peak-memory window (best effort: needs permission to write clear_refs)."""
    with contextlib.suppress(OSError):
        (_PROC / str(pid) / "clear_refs").write_text("5")


@dataclass(frozen=True)
class ProcessUse:
    """What one process under test used during a round."""

    cpu_s: float
    peak_rss_kib: int


@dataclass(frozen=True)
class RoundUse:
    processes: Mapping[str, ProcessUse]
    wall_s: float
    other_cpu_s: float

    @property
    def other_cpu_share(self) -> float:
        """Other processes' CPU as a share of the machine's capacity during the round."""
        return self.other_cpu_s / (self.wall_s * CORES) if self.wall_s > 0 else 0.0


class UseMeter:
    """Brackets a round: CPU of each named process, the rest of the machine, peaks."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start: dict[str, int] = {}
        self._machine_start = 0
        self._started_at = 0.0

    def start(self) -> None:
        for pid in self._pids.values():
            reset_peak(pid)
        self._start = {name: process_ticks(pid) for name, pid in self._pids.items()}
        self._machine_start = machine_ticks()[0]
        self._started_at = time.monotonic()

    def stop(self) -> RoundUse:
        wall_s = time.monotonic() - self._started_at
        busy = machine_ticks()[0] - self._machine_start
        used = {name: process_ticks(pid) - self._start[name] for name, pid in self._pids.items()}
        return RoundUse(
            processes={
                name: ProcessUse(ticks / TICKS_PER_SECOND, peak_rss_kib(self._pids[name]))
                for name, ticks in used.items()
            },
            wall_s=wall_s,
            other_cpu_s=max(0, busy - sum(used.values())) / TICKS_PER_SECOND,
        )
