"""Recovery time of a disturbance (docs/architecture.md, "Definitions").

The recovery time of a disturbance at t0 is the smallest r ≥ 0 such that the SLO holds in
every second of [t0 + r, t0 + r + stable_s). A disturbance the SLO never recovers from
before the trial ends is *not recovered*: `recovered=False` and `recovery_s=NaN` — never
0, which would read as "absorbed without a scratch".

Per-second rows cover [t, t+1). The window [t0 + r, t0 + r + S) touches the rows
floor(t0 + r) … ceil(t0 + r + S) - 1, so:
  * r = 0 needs rows floor(t0) … ceil(t0 + S) - 1 to hold (S + 1 rows when t0 is
    fractional: the second the disturbance landed in counts);
  * otherwise the window starts on a row boundary: r = k - t0 for the first integer
    k > t0 with rows k … k + S - 1 holding.
The window must end inside the trial (rows < end_s): three good seconds at the very end
of a trial with stable_s = 5 are not a recovery.

A disturbance that builds up (a surge, a ramped step) has a peak after its t0. Good
seconds early in the rise, before the load outgrew the replicas, are no recovery: the
SLO must hold from t0 + r through peak + stable_s (README "Definitions"), so the window
is [t0 + r, max(t0 + r, peak) + stable_s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NOT_RECOVERED = "not recovered"


@dataclass(frozen=True)
class Recovery:
    t0_s: float
    recovered: bool
    recovery_s: float  # NaN when not recovered

    def __str__(self) -> str:
        return f"{self.recovery_s:.1f} s" if self.recovered else NOT_RECOVERED


def _run_lengths(holds: np.ndarray) -> np.ndarray:
    """run[i] = number of consecutive True values starting at i."""
    run = np.zeros(len(holds) + 1, dtype=int)
    for i in range(len(holds) - 1, -1, -1):
        run[i] = run[i + 1] + 1 if holds[i] else 0
    return run[:-1]


def recovery_time(holds: pd.Series, t0_s: float, stable_s: int,
                  end_s: int | None = None, peak_s: float | None = None) -> Recovery:
    """`holds`: bool per integer second (index = t_s) of one trial's measured window.

    Seconds absent from the index count as not holding. `end_s` (exclusive) defaults to
    the last second in `holds` + 1.
    """
    if stable_s < 1:
        raise ValueError("stable_s must be ≥ 1")
    if end_s is None:
        end_s = int(holds.index.max()) + 1 if len(holds) else 0
    start = max(0, math.floor(t0_s))
    if start >= end_s:
        return Recovery(t0_s, False, math.nan)
    arr = holds.reindex(range(start, end_s), fill_value=False).astype(bool).to_numpy()
    run = _run_lengths(arr)
    peak = t0_s if peak_s is None else max(t0_s, peak_s)

    # r = 0: rows floor(t0) … ceil(max(t0, peak) + S) - 1 all hold.
    need0 = math.ceil(peak + stable_s) - start
    if need0 <= len(arr) and run[0] >= need0:
        return Recovery(t0_s, True, 0.0)
    # Otherwise the first row boundary k > t0 from which the rows through
    # max(k, peak) + S hold.
    first_k = math.floor(t0_s) + 1
    for i in range(max(0, first_k - start), len(arr)):
        need = max(stable_s, math.ceil(peak + stable_s) - (start + i))
        if i + need <= len(arr) and run[i] >= need:
            return Recovery(t0_s, True, round(start + i - t0_s, 3))
    return Recovery(t0_s, False, math.nan)
