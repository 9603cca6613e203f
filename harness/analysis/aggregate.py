"""Mean and 95% interval over repetitions (trials), with the interval's method.

The interval is harness.analysis.stats.mean_interval: Student-t on the mean for 2–29
valid trials, the expanded percentile bootstrap (seeded, so the same summary gives the
same interval) for 30 or more, and none ("n too small") below 2 — the method is in the
`ci_method` column. With one trial comparisons say the noise is unknown rather than
inventing a zero-width interval.

NaN values are left out (n_valid < n). For recovery times a NaN means *not recovered*:
the mean is then over the recovered trials only and `n_missing` says how many did not
recover — the display layer must show it (harness.analysis.compare does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.analysis.stats import DEFAULT_RESAMPLES, mean_interval

KEY = ("run_id", "strategy", "trial")
AGGREGATE_COLUMNS = ("run_id", "strategy", "metric", "n", "n_valid", "n_missing", "mean",
                     "ci_lo", "ci_hi", "ci_method", "std", "min", "max")


def numeric_metrics(summary: pd.DataFrame) -> list[str]:
    out = []
    for c in summary.columns:
        if c in KEY:
            continue
        col = pd.to_numeric(summary[c], errors="coerce")
        if summary[c].isna().all() or col.notna().any():
            out.append(c)
    return out


def aggregate(summary: pd.DataFrame, metrics: Sequence[str] | None = None, *,
              seed: int = 0, confidence: float = 0.95,
              n_resamples: int = DEFAULT_RESAMPLES) -> pd.DataFrame:
    """Long table: one row per run × strategy × metric with n, mean, interval and method."""
    if summary.empty:
        return pd.DataFrame(columns=list(AGGREGATE_COLUMNS))
    metrics = list(metrics) if metrics is not None else numeric_metrics(summary)
    rows = []
    for (run_id, strategy), g in summary.groupby(["run_id", "strategy"], sort=False):
        for metric in metrics:
            if metric not in g.columns:
                continue
            v = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float)
            valid = v[~np.isnan(v)]
            ci = mean_interval(valid, confidence, seed=seed, n_resamples=n_resamples)
            rows.append({
                "run_id": run_id, "strategy": strategy, "metric": metric,
                "n": len(v), "n_valid": len(valid), "n_missing": len(v) - len(valid),
                "mean": float(valid.mean()) if len(valid) else math.nan,
                "ci_lo": ci.lo, "ci_hi": ci.hi, "ci_method": ci.method,
                "std": float(valid.std(ddof=1)) if len(valid) > 1 else math.nan,
                "min": float(valid.min()) if len(valid) else math.nan,
                "max": float(valid.max()) if len(valid) else math.nan,
            })
    return pd.DataFrame(rows, columns=list(AGGREGATE_COLUMNS))
