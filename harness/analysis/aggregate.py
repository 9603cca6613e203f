"""Mean and 95% bootstrap confidence interval over repetitions (trials).

Percentile bootstrap of the mean (Efron & Tibshirani, "An Introduction to the Bootstrap",
1993, ch. 13): resample the trials with replacement B times, take the mean of each
resample, report the 2.5th and 97.5th percentiles of those means. Seeded, so the same
summary gives the same interval. With one trial there is no spread to resample: the CI
is NaN and comparisons say the noise is unknown rather than inventing a zero-width CI.

NaN values are left out (n_valid < n). For recovery times a NaN means *not recovered*:
the mean is then over the recovered trials only and `n_missing` says how many did not
recover — the display layer must show it (harness.analysis.compare does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

KEY = ("run_id", "strategy", "trial")
AGGREGATE_COLUMNS = ("run_id", "strategy", "metric", "n", "n_valid", "n_missing", "mean",
                     "ci_lo", "ci_hi", "std", "min", "max")
DEFAULT_RESAMPLES = 2000


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95,
                 n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean; NaNs dropped; (nan, nan) for fewer than 2."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


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
    """Long table: one row per run × strategy × metric with n, mean and CI."""
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
            lo, hi = bootstrap_ci(valid, confidence=confidence, n_resamples=n_resamples,
                                  seed=seed)
            rows.append({
                "run_id": run_id, "strategy": strategy, "metric": metric,
                "n": len(v), "n_valid": len(valid), "n_missing": len(v) - len(valid),
                "mean": float(valid.mean()) if len(valid) else math.nan,
                "ci_lo": lo, "ci_hi": hi,
                "std": float(valid.std(ddof=1)) if len(valid) > 1 else math.nan,
                "min": float(valid.min()) if len(valid) else math.nan,
                "max": float(valid.max()) if len(valid) else math.nan,
            })
    return pd.DataFrame(rows, columns=list(AGGREGATE_COLUMNS))
