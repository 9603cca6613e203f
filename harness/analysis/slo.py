"""Per-second SLO: does the SLO hold in second t? (docs/architecture.md, "Definitions").

A second holds when
  * requests completed in it (ok + failed > 0), its p95 latency ≤ `slo.p95_ms` and its
    error rate failed / (ok + failed) ≤ `slo.error_rate`; or
  * nothing completed *and nothing was offered* (an idle second cannot break an SLO).

A second with offered load > 0 but no completed request is a **violation**: the service
answered nobody (everything hung past the second or the load generator could not
connect), which is the worst case, not a neutral one. A second missing from the CSV
inside the trial (a recorder hiccup) is also counted as a violation — we cannot claim an
SLO held where nothing was measured — and flagged `missing`.

p95 comes from the row's `p95_ms`; where that is empty the row's latency histogram is used.
A second with completions but no latency at all is a violation (unknown ≠ good).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.rundata import SloSpec
from harness.record.histogram import Histogram


def measured(ts: pd.DataFrame) -> pd.DataFrame:
    """The measured window of one trial: rows with t_s ≥ 0 (warm-up excluded)."""
    return ts[ts["t_s"] >= 0]


def complete_seconds(ts: pd.DataFrame, end_s: int | None = None) -> pd.DataFrame:
    """One row per integer second 0 … end-1 of one trial (t_s as index); seconds the CSV
    lacks are added with NaN values and `missing=True`. `end_s` defaults to the last
    measured second + 1 (a row covers [t_s, t_s + 1))."""
    m = measured(ts).copy()
    m["t_s"] = np.floor(m["t_s"].astype(float)).astype(int)
    m = m.drop_duplicates("t_s", keep="last").set_index("t_s").sort_index()
    if end_s is None:
        end_s = int(m.index.max()) + 1 if len(m) else 0
    full = m.reindex(range(end_s))
    full["missing"] = ~full.index.isin(m.index)
    full.index.name = "t_s"
    return full


def p95_of_second(row_p95: pd.Series, hist: pd.Series | None) -> pd.Series:
    """`p95_ms`, filled from the second's histogram where the recorder left it empty."""
    p95 = row_p95.astype(float).copy()
    if hist is not None:
        gaps = p95.isna() & hist.fillna("").astype(str).ne("")
        for idx in p95.index[gaps]:
            v = Histogram.decode(str(hist.loc[idx])).percentile(95)
            p95.loc[idx] = np.nan if v is None else v
    return p95


def slo_table(ts: pd.DataFrame, slo: SloSpec, end_s: int | None = None) -> pd.DataFrame:
    """Per second of one trial's measured window: completed, error_rate, p95_ms, holds,
    and `why` ('' when the SLO holds, else latency / errors / no_response / missing /
    no_latency)."""
    full = complete_seconds(ts, end_s)
    ok = full["ok_rps"].astype(float).fillna(0.0)
    failed = full["failed_rps"].astype(float).fillna(0.0)
    offered = full["offered_rps"].astype(float).fillna(0.0)
    completed = ok + failed
    err = (failed / completed.where(completed > 0)).astype(float)
    hist = full["latency_hist"] if "latency_hist" in full.columns else None
    p95 = p95_of_second(full["p95_ms"], hist)

    why = pd.Series("", index=full.index, dtype=object)
    busy = completed > 0
    why[busy & p95.isna()] = "no_latency"
    why[busy & (p95 > slo.p95_ms)] = "latency"
    why[busy & (err > slo.error_rate)] = "errors"  # errors win: they are the worse news
    why[~busy & (offered > 0)] = "no_response"
    why[full["missing"]] = "missing"
    out = pd.DataFrame({"completed": completed, "ok": ok, "failed": failed,
                        "offered": offered, "error_rate": err, "p95_ms": p95,
                        "holds": why.eq(""), "why": why})
    out.index.name = "t_s"
    return out


def violation_seconds(table: pd.DataFrame, start_s: float = 0.0,
                      end_s: float | None = None) -> int:
    """Seconds in [floor(start_s), end_s) in which the SLO did not hold."""
    lo = int(np.floor(start_s))
    sel = table.loc[(table.index >= lo) & ((table.index < end_s) if end_s is not None
                                          else True)]
    return int((~sel["holds"]).sum())
