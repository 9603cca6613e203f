"""The whole machine's CPU, measured per second: is the host, not the strategy, the limit?

`HostSampler` reads two kernel counters (docs/architecture.md, "Measuring the machine"):

- `/proc/stat`, first line: jiffies per state summed over every core; busy share =
  Δ(all − idle − iowait) / Δall, so 100 % means every core busy;
- `/proc/pressure/cpu` (PSI, Linux ≥ 4.20 with CONFIG_PSI): the `some` line's cumulative
  stall time in µs; pressure share = Δstall / Δwall, the share of time at least one
  runnable task waited for a CPU. None where the kernel has no PSI.

`SaturationRun` (pure) turns the per-second figures into the `host_saturated` verdict: a
second is saturated at ≥ 90 % busy or ≥ 80 % pressure, and a trial is flagged once 3
seconds in a row were (one busy second is a start-up, three are a limit).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from harness.clock import Clock

BUSY_PCT = 90.0
PRESSURE_PCT = 80.0
RUN_S = 3


@dataclass(frozen=True)
class CpuCounters:
    busy: int  # jiffies, all cores
    total: int


def parse_proc_stat(text: str) -> CpuCounters:
    """The aggregate `cpu` line of /proc/stat (guest time is already inside user)."""
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "cpu":
            vals = [int(v) for v in f[1:9]] + [0] * max(0, 8 - len(f[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = vals[:8]
            total = user + nice + system + idle + iowait + irq + softirq + steal
            return CpuCounters(busy=total - idle - iowait, total=total)
    raise ValueError("no aggregate cpu line in /proc/stat")


def parse_psi_some_us(text: str) -> int | None:
    """`some … total=<µs>` of /proc/pressure/cpu; None if the line is not there."""
    for line in text.splitlines():
        f = line.split()
        if f and f[0] == "some":
            for kv in f[1:]:
                k, _, v = kv.partition("=")
                if k == "total":
                    return int(v)
    return None


def busy_pct(prev: CpuCounters, cur: CpuCounters) -> float | None:
    dt = cur.total - prev.total
    if dt <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (cur.busy - prev.busy) / dt))


def pressure_pct(prev_us: int | None, cur_us: int | None, elapsed_s: float) -> float | None:
    if prev_us is None or cur_us is None or elapsed_s <= 0:
        return None
    return max(0.0, min(100.0, (cur_us - prev_us) / (elapsed_s * 1e6) * 100.0))


@dataclass(frozen=True)
class HostSecond:
    cpu_pct: float | None  # all cores busy = 100
    pressure_pct: float | None  # None: no PSI on this kernel


class HostSampler:
    """Each `sample()` returns the host's figures since the previous call."""

    def __init__(self, clock: Clock, proc_root: Path = Path("/proc")) -> None:
        self.clock = clock
        self.stat_path = proc_root / "stat"
        self.psi_path = proc_root / "pressure" / "cpu"
        self._prev = self._read()

    def _read(self) -> tuple[float, CpuCounters | None, int | None]:
        try:
            cpu: CpuCounters | None = parse_proc_stat(self.stat_path.read_text())
        except (OSError, ValueError):
            cpu = None
        try:
            psi = parse_psi_some_us(self.psi_path.read_text())
        except (OSError, ValueError):  # no PSI (kernel option off, or /proc/pressure absent)
            psi = None
        return self.clock.now(), cpu, psi

    def sample(self) -> HostSecond:
        cur = self._read()
        (t0, cpu0, psi0), (t1, cpu1, psi1) = self._prev, cur
        self._prev = cur
        busy = busy_pct(cpu0, cpu1) if cpu0 is not None and cpu1 is not None else None
        return HostSecond(None if busy is None else round(busy, 1),
                          None if (p := pressure_pct(psi0, psi1, t1 - t0)) is None
                          else round(p, 1))


def is_saturated(s: HostSecond, busy_limit: float = BUSY_PCT,
                 pressure_limit: float = PRESSURE_PCT) -> bool:
    return ((s.cpu_pct is not None and s.cpu_pct >= busy_limit)
            or (s.pressure_pct is not None and s.pressure_pct >= pressure_limit))


@dataclass
class SaturationRun:
    """Counts saturated seconds and flags the trial at the first run of `run_s` (pure)."""

    run_s: int = RUN_S
    saturated_s: int = 0  # seconds that were saturated, in or out of a run
    flagged_at: int | None = None  # t_s of the second that completed the first run
    _streak: int = 0
    _busy_sum: float = 0.0
    _busy_n: int = 0

    def feed(self, t_s: int, s: HostSecond) -> bool:
        """One measured second; True when it is saturated."""
        if s.cpu_pct is not None:
            self._busy_sum += s.cpu_pct
            self._busy_n += 1
        sat = is_saturated(s)
        self._streak = self._streak + 1 if sat else 0
        self.saturated_s += sat
        if self._streak >= self.run_s and self.flagged_at is None:
            self.flagged_at = t_s
        return sat

    @property
    def flagged(self) -> bool:
        return self.flagged_at is not None

    @property
    def mean_cpu_pct(self) -> float | None:
        return round(self._busy_sum / self._busy_n, 1) if self._busy_n else None


def machine() -> str:
    """"hostname (N cores)", for warnings that must say which machine was the limit."""
    return f"{socket.gethostname()} ({os.cpu_count() or '?'} cores)"


def warning(label: str, run: SaturationRun) -> str:
    return (f"{label}: host {machine()} saturated (≥ {BUSY_PCT:.0f} % CPU busy or "
            f"≥ {PRESSURE_PCT:.0f} % CPU pressure for {run.run_s} s in a row) at "
            f"t={run.flagged_at}s; {run.saturated_s} saturated second(s) in all — the "
            "machine, not the strategy, may have limited this trial")
