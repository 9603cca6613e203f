"""summary.csv: one row per strategy × trial (docs/columns.md).

Column order: SUMMARY_CORE (harness.record.schema, stable), then SUMMARY_EXTRA (same file,
stable), then five columns per disturbance, in time order, named
``<metric>_<disturbance>`` with the disturbance names of harness.analysis.disturbances
(``<kind>_t<seconds>``, e.g. ``spike_t30``, ``crash_t95``):

  recovery_s_<d>           seconds until the SLO held again for stable_s; empty = not recovered
  recovered_<d>            1 recovered, 0 not recovered
  slo_violation_s_<d>      SLO-violation seconds in the disturbance's window
  failed_<d>               failed requests in the disturbance's window
  scale_up_reaction_s_<d>  disturbance → first new replica ready within its window; empty = none

The measured window is t_s ≥ 0 (warm-up excluded). disturbances.csv holds the same
per-disturbance figures in long form; summary_aggregate.csv the mean and 95% interval
over repetitions with its method (harness.analysis.aggregate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.aggregate import aggregate
from harness.analysis.disturbances import Disturbance, find_disturbances
from harness.analysis.elasticity import ELASTICITY_KEYS, demand_replicas, elasticity_metrics
from harness.analysis.latency import decode_all, good_requests, window_latency
from harness.analysis.recovery import recovery_time
from harness.analysis.rundata import RunData, SloSpec, capacity_of, load_run, trial_frames
from harness.analysis.slo import measured, slo_table, violation_seconds
from harness.record.schema import (
    DISTURBANCE_METRICS,
    DISTURBANCES_CSV,
    names,
    summary_columns,
)
from harness.record.writer import write_frame_csv


def disturbance_column(metric: str, disturbance: str) -> str:
    return f"{metric}_{disturbance}"


@dataclass
class TrialResult:
    row: dict[str, Any]
    disturbances: list[dict[str, Any]]
    slo: pd.DataFrame  # per-second SLO table (harness.analysis.slo.slo_table)


def _sum(s: pd.Series) -> float:
    return float(s.astype(float).fillna(0).sum())


def reaction_time(d: Disturbance, events: pd.DataFrame, ready_col: pd.Series) -> float:
    """t0 → first replica becoming ready in [t0, window end); NaN when none did.

    From `replica_ready` events when the trial has any; otherwise from the per-second
    ready count rising (second resolution)."""
    ready_ev = events[events["kind"] == "replica_ready"] if len(events) else events
    if len(ready_ev):
        t = ready_ev["t_s"].astype(float)
        hit = t[(t >= d.t0_s) & (t < d.end_s)]
        return round(float(hit.min()) - d.t0_s, 3) if len(hit) else math.nan
    ready = ready_col.astype(float)
    lo = math.floor(d.t0_s) + 1
    for k in range(lo, min(len(ready), math.ceil(d.end_s))):
        prev, cur = ready.iloc[k - 1], ready.iloc[k]
        if not (math.isnan(prev) or math.isnan(cur)) and cur > prev:
            return round(max(0.0, k - d.t0_s), 3)
    return math.nan


def summarize_trial(ts: pd.DataFrame, events: pd.DataFrame, *, slo: SloSpec,
                    scenario: Mapping[str, Any] | None = None, run_id: str = "",
                    strategy: str = "", trial: int = 1,
                    capacity: tuple[float | None, str] | None = None) -> TrialResult:
    """All summary figures of one trial from its timeseries and events rows."""
    scenario = scenario or {}
    table = slo_table(ts, slo)
    end_s = len(table)
    m = measured(ts)
    ok, failed = _sum(m["ok_rps"]), _sum(m["failed_rps"])
    requests = ok + failed
    hists = decode_all(m["latency_hist"])
    lat = window_latency(m, hists)
    running = m["replicas_running"] if m["replicas_running"].notna().any() \
        else m["replicas_ready"]
    replica_s = _sum(running)
    cap, cap_src = capacity if capacity is not None else capacity_of(scenario)

    row: dict[str, Any] = {
        "run_id": run_id, "strategy": strategy, "trial": trial,
        "requests": round(requests), "failures": round(failed),
        "error_rate": failed / requests if requests > 0 else math.nan,
        "throughput_rps": ok / end_s if end_s else math.nan,
        "p95_ms": lat.p95_ms, "p99_ms": lat.p99_ms,
        "replica_seconds": replica_s,
        "slo_violation_s": violation_seconds(table),
        "duration_s": end_s, "ok_requests": round(ok),
        "offered_requests": round(_sum(m["offered_rps"])),
        "sent_requests": round(_sum(m["sent_rps"])),
        "dropped_requests": round(_sum(m["dropped_rps"])),
        "goodput_rps": good_requests(m, slo.p95_ms, hists) / end_s if end_s else math.nan,
        "p50_ms": lat.p50_ms, "max_ms": lat.max_ms, "latency_source": lat.source,
        "requests_per_replica_s": ok / replica_s if replica_s > 0 else math.nan,
        "replicas_max": float(running.max()) if running.notna().any() else math.nan,
        "capacity_rps_per_replica": cap if cap is not None else math.nan,
        "capacity_source": cap_src,
        **_host_figures(m),
    }
    if cap is not None and end_s:
        demand = demand_replicas(table["offered"].to_numpy(), cap)
        supply = _per_second(m, "replicas_ready", end_s)
        row.update(elasticity_metrics(demand, supply))
    else:
        row.update(dict.fromkeys(ELASTICITY_KEYS, math.nan))

    ready_per_s = pd.Series(_per_second(m, "replicas_ready", end_s))
    dists = find_disturbances(events, end_s=end_s, scenario=scenario,
                              offered=table["offered"].to_numpy())
    drows: list[dict[str, Any]] = []
    for d in dists:
        rec = recovery_time(table["holds"], d.t0_s, slo.stable_s, end_s, peak_s=d.peak)
        win = table.loc[(table.index >= math.floor(d.t0_s)) & (table.index < d.end_s)]
        reaction = reaction_time(d, events, ready_per_s)
        drows.append({
            "run_id": run_id, "strategy": strategy, "trial": trial,
            "disturbance": d.name, "kind": d.kind, "t0_s": round(d.t0_s, 3),
            "window_end_s": round(d.end_s, 3), "peak_s": round(d.peak, 3),
            "recovered": int(rec.recovered),
            "recovery_s": rec.recovery_s,
            "slo_violation_s": violation_seconds(table, d.t0_s, d.end_s),
            "requests": round(float(win["completed"].sum())),
            "failed": round(float(win["failed"].sum())),
            "scale_up_reaction_s": reaction, "replicas_hit": ";".join(d.replicas),
        })
    not_rec = sum(1 for r in drows if not r["recovered"])
    row["disturbances"] = len(drows)
    row["not_recovered"] = not_rec
    row["recovered"] = (int(not_rec == 0) if drows else math.nan)
    row["recovery_s"] = (max(r["recovery_s"] for r in drows) if drows and not_rec == 0
                         else math.nan)
    row["failed_in_disturbances"] = sum(r["failed"] for r in drows)
    reactions = [r["scale_up_reaction_s"] for r in drows
                 if not math.isnan(r["scale_up_reaction_s"])]
    row["scale_up_reaction_s"] = float(np.mean(reactions)) if reactions else math.nan
    for r in drows:
        for c in DISTURBANCE_METRICS:
            row[disturbance_column(c.name, r["disturbance"])] = r[c.name]
    return TrialResult(row=row, disturbances=drows, slo=table)


def _host_figures(m: pd.DataFrame) -> dict[str, float]:
    """The machine's share of the trial (record/host.py); NaN in runs that lack it."""
    cpu = pd.to_numeric(m["host_cpu_pct"], errors="coerce") if "host_cpu_pct" in m \
        else pd.Series(dtype=float)
    sat = pd.to_numeric(m["host_saturated"], errors="coerce") if "host_saturated" in m \
        else pd.Series(dtype=float)
    return {"host_cpu_mean_pct": float(cpu.mean()) if cpu.notna().any() else math.nan,
            "host_saturated_s": float(sat.fillna(0).sum()) if sat.notna().any()
            else math.nan}


def _per_second(m: pd.DataFrame, column: str, end_s: int) -> np.ndarray:
    s = m.assign(t=np.floor(m["t_s"].astype(float)).astype(int)) \
        .drop_duplicates("t", keep="last").set_index("t")[column]
    return s.reindex(range(end_s)).to_numpy(dtype=float)


@dataclass
class RunSummary:
    trials: pd.DataFrame  # summary.csv
    disturbances: pd.DataFrame  # disturbances.csv
    per_second: dict[tuple[str, int], pd.DataFrame]  # (strategy, trial) → SLO table


def summarize_run(data: RunData) -> RunSummary:
    scenario = data.scenario
    slo = data.slo
    cap = capacity_of(scenario)
    rows, drows, tables = [], [], {}
    for strategy, trial, ts, ev in trial_frames(data):
        res = summarize_trial(ts, ev, slo=slo, scenario=scenario, run_id=data.run_id,
                              strategy=strategy, trial=trial, capacity=cap)
        rows.append(res.row)
        drows.extend(res.disturbances)
        tables[(strategy, trial)] = res.slo
    trials = pd.DataFrame(rows)
    base = summary_columns()
    # Per-disturbance columns grouped per disturbance, disturbances in time order.
    order = (pd.DataFrame(drows).groupby("disturbance")["t0_s"].mean().sort_values().index
             if drows else [])
    extra = [disturbance_column(c.name, d) for d in order for c in DISTURBANCE_METRICS]
    trials = trials.reindex(columns=base + extra) if len(rows) else pd.DataFrame(
        columns=base)
    dist = pd.DataFrame(drows, columns=names(DISTURBANCES_CSV))
    return RunSummary(trials=trials, disturbances=dist, per_second=tables)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    write_frame_csv(df, path)  # mkstemp temp + rename, never through a planted link


def write_summary(run_dir: str | Path, data: RunData | None = None,
                  seed: int | None = None, summary: RunSummary | None = None) -> Path:
    """Write summary.csv, disturbances.csv and summary_aggregate.csv into the run folder
    (regenerated from the CSVs each time); return the summary.csv path. The aggregate's
    bootstrap is seeded with the scenario's seed unless `seed` is given."""
    data = data or load_run(run_dir)
    s = summary or summarize_run(data)
    out = Path(run_dir)
    _write_csv(s.trials, out / "summary.csv")
    _write_csv(s.disturbances, out / "disturbances.csv")
    agg_seed = seed if seed is not None else int(data.scenario.get("seed", 0) or 0)
    _write_csv(aggregate(s.trials, seed=agg_seed), out / "summary_aggregate.csv")
    return out / "summary.csv"
