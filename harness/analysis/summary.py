"""summary.csv: one row per strategy × trial (DESIGN.md "Results layout").

Column order: SUMMARY_CORE (harness.record.schema, stable), then SUMMARY_EXTRA (below,
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
from harness.record.schema import SUMMARY_CORE, Column, names


def _cols(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(n, d) for n, d in pairs)

SUMMARY_EXTRA = _cols(
    ("duration_s", "measured seconds (t_s ≥ 0)"),
    ("ok_requests", "successful requests"),
    ("offered_requests", "requests the load profile asked for (open model)"),
    ("sent_requests", "requests actually sent (offered − sent: load-generator lag)"),
    ("dropped_requests", "open-model send slots no free user could take"),
    ("goodput_rps", "successful requests within the latency SLO (slo.p95_ms) per second"),
    ("p50_ms", "median latency over the trial (merged histograms)"),
    ("max_ms", "maximum latency over the trial"),
    ("latency_source", "histogram (exact merge) | approx (no histograms recorded) | none"),
    ("requests_per_replica_s", "successful requests per replica-second (efficiency)"),
    ("replicas_max", "most replicas running in any second"),
    ("disturbances", "number of disturbances (load steps up and faults)"),
    ("not_recovered", "disturbances the SLO did not recover from before the trial ended"),
    ("recovered", "1 when every disturbance recovered, 0 when one did not, empty without any"),
    ("recovery_s", "worst recovery time over the disturbances; empty when one did not recover"),
    ("failed_in_disturbances", "failed requests inside disturbance windows"),
    ("scale_up_reaction_s", "mean over disturbances of: t0 → first new replica ready"),
    ("capacity_rps_per_replica", "per-replica capacity behind the demand curve"),
    ("capacity_source", "calibrated (harness calibrate) | nominal (WORKERS/SERVICE_MS) | none"),
    ("elasticity_accuracy_u_pct", "SPEC RG under-provisioning accuracy θ_U, %"),
    ("elasticity_accuracy_o_pct", "SPEC RG over-provisioning accuracy θ_O, %"),
    ("elasticity_timeshare_u_pct", "SPEC RG under-provisioning timeshare τ_U, %"),
    ("elasticity_timeshare_o_pct", "SPEC RG over-provisioning timeshare τ_O, %"),
    ("elasticity_jitter_per_min", "SPEC RG jitter: (supply − demand adaptations) per minute"),
    ("elasticity_under_replicas", "mean missing replicas (demand − ready, when positive)"),
    ("elasticity_over_replicas", "mean surplus replicas (ready − demand, when positive)"),
)

DISTURBANCE_METRICS = _cols(
    ("recovery_s", "seconds until the SLO held again for stable_s; empty = not recovered"),
    ("recovered", "1 recovered, 0 not recovered"),
    ("slo_violation_s", "SLO-violation seconds in the disturbance's window"),
    ("failed", "failed requests in the disturbance's window"),
    ("scale_up_reaction_s", "t0 → first new replica ready within the window; empty = none"),
)

DISTURBANCES_CSV = _cols(
    ("run_id", ""), ("strategy", ""), ("trial", ""),
    ("disturbance", "name, e.g. spike_t30"), ("kind", "spike | step | crash | kill | pause"),
    ("t0_s", "when it happened"), ("window_end_s", "next disturbance or trial end"),
    ("recovered", "1 / 0"), ("recovery_s", "empty = not recovered"),
    ("slo_violation_s", "in the window"), ("requests", "completed in the window"),
    ("failed", "failed in the window"), ("scale_up_reaction_s", "empty = no new replica"),
    ("replicas_hit", "fault victims, ';'-separated"),
)

# Non-numeric summary columns (not aggregated, not usable in thresholds).
TEXT_COLUMNS = frozenset({"run_id", "strategy", "latency_source", "capacity_source"})


def summary_columns() -> list[str]:
    return names(SUMMARY_CORE) + names(SUMMARY_EXTRA)


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
    }
    if cap is not None and end_s:
        demand = demand_replicas(table["offered"].to_numpy(), cap)
        supply = _per_second(m, "replicas_ready", end_s)
        row.update(elasticity_metrics(demand, supply))
    else:
        row.update(dict.fromkeys(ELASTICITY_KEYS, math.nan))

    ready_per_s = pd.Series(_per_second(m, "replicas_ready", end_s))
    dists = find_disturbances(events, end_s=end_s, scenario=scenario)
    drows: list[dict[str, Any]] = []
    for d in dists:
        rec = recovery_time(table["holds"], d.t0_s, slo.stable_s, end_s)
        win = table.loc[(table.index >= math.floor(d.t0_s)) & (table.index < d.end_s)]
        reaction = reaction_time(d, events, ready_per_s)
        drows.append({
            "run_id": run_id, "strategy": strategy, "trial": trial,
            "disturbance": d.name, "kind": d.kind, "t0_s": round(d.t0_s, 3),
            "window_end_s": round(d.end_s, 3), "recovered": int(rec.recovered),
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
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False, float_format="%.10g")
    tmp.replace(path)


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
