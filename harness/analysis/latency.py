"""Latency over windows from the per-second histograms (exact merges, docs/architecture.md,
"Definitions").

Percentiles over a trial or a disturbance come from merging the seconds' histograms
(bucket counts add), never from averaging per-second percentiles. Only where a run has
no histograms at all (an older or external writer) do we fall back on an approximation,
and we say so (`source = "approx"`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.record.histogram import Histogram, bucket_value_ms, merged


@dataclass(frozen=True)
class WindowLatency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    source: str  # histogram | approx | none


def decode_all(cells: Iterable[object]) -> list[Histogram]:
    return [Histogram.decode(c if isinstance(c, str) else None) for c in cells]


def count_at_or_below(h: Histogram, threshold_ms: float) -> int:
    """Requests whose (bucketed, ≤1%-accurate) latency is ≤ threshold_ms."""
    if h.total == 0:
        return 0
    if h.max_ms <= threshold_ms:
        return h.total
    return sum(c for i, c in h.counts.items() if bucket_value_ms(i) <= threshold_ms)


def window_latency(ts: pd.DataFrame, hists: list[Histogram] | None = None) -> WindowLatency:
    """p50/p95/p99/max over the rows of `ts` (one trial's seconds, any window);
    `hists`: the rows' decoded histograms when the caller has them already."""
    if hists is None:
        hists = decode_all(ts["latency_hist"]) if "latency_hist" in ts.columns else []
    h = merged(hists)
    if h.total > 0:
        return WindowLatency(_f(h.percentile(50)), _f(h.percentile(95)),
                             _f(h.percentile(99)), h.max_ms, "histogram")
    # No histograms: request-weighted percentile of the per-second percentiles. Not exact
    # (a percentile of percentiles), hence labelled.
    w = (ts["ok_rps"].fillna(0) + ts["failed_rps"].fillna(0)).to_numpy(dtype=float)
    if w.sum() <= 0:
        return WindowLatency(math.nan, math.nan, math.nan, math.nan, "none")
    vals = []
    for col, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
        vals.append(_weighted_percentile(ts[col].to_numpy(dtype=float), w, q))
    mx = float(np.nanmax(ts["max_ms"].to_numpy(dtype=float))) \
        if ts["max_ms"].notna().any() else math.nan
    return WindowLatency(vals[0], vals[1], vals[2], mx, "approx")


def _weighted_percentile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    keep = ~np.isnan(x) & (w > 0)
    if not keep.any():
        return math.nan
    x, w = x[keep], w[keep]
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    idx = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
    return float(x[order][min(idx, len(x) - 1)])


def good_requests(ts: pd.DataFrame, threshold_ms: float,
                  hists: list[Histogram] | None = None) -> float:
    """Successful requests with latency ≤ threshold_ms (goodput numerator).

    Per second: ok × (share of that second's histogram at or below the threshold). The
    histogram holds every completed request of the second, failed ones included; we assume
    ok and failed requests share the second's latency distribution — exact when a second
    has no failures. Seconds without a histogram count their ok requests when the second's
    p95 is within the threshold and none otherwise (a coarse fallback).
    """
    ok = ts["ok_rps"].fillna(0).to_numpy(dtype=float)
    if hists is None:
        hists = decode_all(ts["latency_hist"] if "latency_hist" in ts.columns
                           else [None] * len(ts))
    p95 = ts["p95_ms"].to_numpy(dtype=float)
    total = 0.0
    for i, h in enumerate(hists):
        if ok[i] <= 0:
            continue
        if h.total > 0:
            total += ok[i] * count_at_or_below(h, threshold_ms) / h.total
        elif not math.isnan(p95[i]) and p95[i] <= threshold_ms:
            total += ok[i]
    return total


def per_second_percentile(ts: pd.DataFrame, q: float, column: str) -> pd.Series:
    """The row's own percentile column, filled from its histogram where empty."""
    vals = ts[column].astype(float).copy()
    if "latency_hist" in ts.columns:
        for idx in vals.index[vals.isna()]:
            cell = ts.at[idx, "latency_hist"]
            if isinstance(cell, str) and cell:
                v = Histogram.decode(cell).percentile(q)
                vals.at[idx] = math.nan if v is None else v
    return vals


def _f(v: float | None) -> float:
    return math.nan if v is None else float(v)
