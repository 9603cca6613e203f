"""How busy is this load process? CPU time, and time it waited for a core.

A load generator that cannot keep up is not always at 100% CPU: on a shared machine it
may be runnable but waiting for a core (other processes, the system under test itself).
Either way its requests go out late and its latencies are not trustworthy, so the
saturation check uses *busy* = running + waiting-to-run, from Linux's per-task
``schedstat`` (nanoseconds on a CPU, nanoseconds waiting on a run queue). Without that
file it falls back to CPU time alone.
"""

from __future__ import annotations

import time
from pathlib import Path


class CpuSampler:
    def __init__(self, schedstat: Path | str = "/proc/self/schedstat") -> None:
        self._path = Path(schedstat)
        self._last = self._read()

    def _read(self) -> tuple[float, float, float, float | None]:
        wall, cpu = time.monotonic(), time.process_time()
        wait: float | None = None
        try:
            fields = self._path.read_text().split()
            wait = int(fields[1]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
        return wall, cpu, 0.0, wait

    def sample(self) -> tuple[float, float]:
        """(cpu %, busy %) of one core since the last sample."""
        now = self._read()
        wall = now[0] - self._last[0]
        if wall < 0.05:
            return 0.0, 0.0
        cpu = 100.0 * (now[1] - self._last[1]) / wall
        waited = 0.0
        if now[3] is not None and self._last[3] is not None:
            waited = 100.0 * (now[3] - self._last[3]) / wall
        self._last = now
        return cpu, cpu + waited
