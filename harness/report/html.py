"""report.html: one self-contained file (inline CSS + JS, no CDN, works offline) laid out
like a Grafana dashboard.

Panels: offered vs served rate, p95/p99 latency, error rate, replicas (desired vs ready
vs demand, and with policy kubernetes-hpa what the harness's HPA port decides on the real
controller's inputs), autoscaler metric vs target (with a predictive policy's forecast ÷
ready replicas when decisions.csv has one). Every strategy is overlaid in its own colour;
disturbances are shaded regions (load spikes/steps, surges) and vertical lines (faults,
marks); the time axis is shared (drag to zoom, wheel to zoom, double-click or "reset
zoom" to reset) with a crosshair and tooltip; the summary table is on top.

The page is built from one JSON document (`dashboard_data`) embedded in the HTML; the
drawing code is a small hand-written canvas plotter (dashboard.js next to this file). In
live mode (`harness dashboard` while a run writes) the same page polls a URL for fresh
JSON and redraws, keeping the zoom.

After drawing, the page marks each panel with `data-points` (points drawn) and sets
`<body data-render-state="done">`; script errors are counted in `data-js-errors`. The
browser tests read those.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.aggregate import aggregate
from harness.analysis.cells import cell_text, metric_info, recovered_metric
from harness.analysis.disturbances import load_regions
from harness.analysis.elasticity import demand_replicas
from harness.analysis.hpa_agreement import agreements, port_on_grid
from harness.analysis.latency import per_second_percentile
from harness.analysis.rundata import RunData, capacity_of, load_run, trial_frames
from harness.analysis.stats import METHOD_TEXT
from harness.analysis.summary import RunSummary, summarize_run, write_summary
from harness.analysis.thresholds import evaluate_thresholds
from harness.errors import HarnessError
from harness.fsutil import UnsafeFileError, atomic_write, is_regular
from harness.record.histogram import CorruptHistogram
from harness.report.websec import meta_csp

HERE = Path(__file__).parent
# Grafana's classic palette, red left out: red means "SLO line" and "fault" here.
PALETTE = ("#73BF69", "#5794F2", "#FF9830", "#B877D9", "#F2CC0C", "#8AB8FF", "#FF7383",
           "#96D98D", "#CA95E5", "#FFB357")

TABLE_METRICS = ("requests", "error_rate", "throughput_rps", "goodput_rps", "p95_ms",
                 "p99_ms", "slo_violation_s", "recovery_s", "scale_up_reaction_s",
                 "replica_seconds", "requests_per_replica_s", "elasticity_accuracy_u_pct",
                 "elasticity_accuracy_o_pct", "elasticity_timeshare_u_pct",
                 "elasticity_timeshare_o_pct", "elasticity_jitter_per_min")

# series key in the JSON → how it is computed from a timeseries row
SERIES = ("offered", "sent", "ok", "failed", "err_pct", "p50", "p95", "p99", "desired",
          "running", "ready", "demand", "metric", "target")


def _clean(values: Any, digits: int = 3) -> list[float | None]:
    arr = np.asarray(values, dtype=float)
    return [None if not math.isfinite(v) else round(float(v), digits) for v in arr]


def _series_of(ts: pd.DataFrame, capacity: float | None) -> dict[str, list[Any]]:
    ok = ts["ok_rps"].astype(float)
    failed = ts["failed_rps"].astype(float)
    done = ok.fillna(0) + failed.fillna(0)
    err = (100.0 * failed.fillna(0) / done.where(done > 0)).where(done > 0)
    offered = ts["offered_rps"].astype(float)
    demand = (demand_replicas(offered.to_numpy(), capacity) if capacity
              else np.full(len(ts), np.nan))
    return {
        "t": _clean(ts["t_s"], 3),
        "offered": _clean(offered), "sent": _clean(ts["sent_rps"]), "ok": _clean(ok),
        "failed": _clean(failed), "err_pct": _clean(err),
        "p50": _clean(per_second_percentile(ts, 50, "p50_ms")),
        "p95": _clean(per_second_percentile(ts, 95, "p95_ms")),
        "p99": _clean(per_second_percentile(ts, 99, "p99_ms")),
        "desired": _clean(ts["replicas_desired"]), "running": _clean(ts["replicas_running"]),
        "ready": _clean(ts["replicas_ready"]), "demand": _clean(demand),
        "metric": _clean(ts["autoscaler_metric"], 4),
        "target": _clean(ts["autoscaler_target"], 4),
        "host_cpu": _clean(_col(ts, "host_cpu_pct"), 1),
        "host_pressure": _clean(_col(ts, "host_cpu_pressure_pct"), 1),
    }


def _col(ts: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, all-NaN in runs recorded before it existed."""
    if name not in ts:
        return pd.Series(np.nan, index=ts.index)
    return pd.to_numeric(ts[name], errors="coerce")


def _forecast_of(dec: pd.DataFrame, strategy: str, trial: int, ts: pd.DataFrame
                 ) -> list[float | None] | None:
    """A predictive policy's forecast (decisions.csv ``forecast``, a total) ÷ the ready
    replicas, on the timeseries' seconds (each decision holds until the next), so it
    reads on the same scale as the per-replica metric and target. None: no forecast."""
    if dec.empty or "forecast" not in dec.columns:
        return None
    d = dec[(dec["strategy"] == strategy) & (dec["trial"] == trial)
            & dec["forecast"].notna() & (dec["ready"] > 0)]
    if d.empty or ts.empty:
        return None
    per = pd.DataFrame({"t_s": d["t_s"].astype(float),
                        "forecast": d["forecast"].astype(float) / d["ready"].astype(float)}
                       ).sort_values("t_s")
    grid = pd.DataFrame({"t_s": ts["t_s"].astype(float)}).sort_values("t_s")
    merged = pd.merge_asof(grid, per, on="t_s", direction="backward")
    return _clean(merged["forecast"], 4)


def _summary_table(summary: RunSummary, strategies: list[str], colors: dict[str, str],
                   seed: int) -> dict[str, Any]:
    trials = summary.trials
    per_dist = [c for c in trials.columns if c.startswith("recovery_s_")]
    metrics = [m for m in TABLE_METRICS if m in trials.columns] + per_dist
    rec_cols = [c for c in (recovered_metric(m) for m in metrics) if c and c in trials.columns]
    agg = aggregate(trials, metrics + rec_cols, seed=seed) if len(trials) else pd.DataFrame()
    cols = []
    for m in metrics:
        label, unit, _ = metric_info(m)
        cols.append(label + (f" ({unit})" if unit and unit != "%" else ""))
    rows = []
    for s in strategies:
        cells = []
        for m in metrics:
            a = agg[(agg["strategy"] == s) & (agg["metric"] == m)] if len(agg) else agg
            if a.empty:
                cells.append("–")
                continue
            rm = recovered_metric(m)
            rec = agg[(agg["strategy"] == s) & (agg["metric"] == rm)] if rm else agg.iloc[:0]
            cells.append(cell_text(m, a.iloc[0], rec.iloc[0] if len(rec) else None))
        n = len(trials[trials["strategy"] == s])
        rows.append({"strategy": s, "color": colors[s], "trials": n, "cells": cells})
    methods = list(dict.fromkeys(agg["ci_method"].dropna())) if len(agg) else []
    return {"columns": cols, "metrics": metrics, "rows": rows,
            "note": "mean over trials [lo, hi]: 95 % interval of the mean — "
                    + ("; ".join(METHOD_TEXT.get(m, m) for m in methods) or "none")}


def _disturbance_table(summary: RunSummary, colors: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    d = summary.disturbances
    for r in d.itertuples():
        rec = (f"{r.recovery_s:.1f} s" if r.recovered else "not recovered")
        react = ("–" if pd.isna(r.scale_up_reaction_s) else f"{r.scale_up_reaction_s:.1f} s")
        out.append({"strategy": r.strategy, "color": colors.get(str(r.strategy), "#ccc"),
                    "trial": int(r.trial), "disturbance": r.disturbance, "kind": r.kind,
                    "t0": round(float(r.t0_s), 2), "recovery": rec,
                    "recovered": bool(r.recovered),
                    "violation_s": int(r.slo_violation_s), "failed": int(r.failed),
                    "reaction": react})
    return out


def _annotations(data: RunData, summary: RunSummary) -> list[dict[str, Any]]:
    """One entry per disturbance name (union over trials): where to shade or draw."""
    by_name: dict[str, dict[str, Any]] = {}
    for strategy, trial, ts, ev in trial_frames(data):
        end = float(ts["t_s"].max()) + 1 if len(ts) else 0.0
        regions = load_regions(ev, end)
        d = summary.disturbances
        mine = d[(d["strategy"] == strategy) & (d["trial"] == trial)]
        for r in mine.itertuples():
            a = by_name.setdefault(str(r.disturbance), {
                "name": str(r.disturbance), "kind": str(r.kind), "t0": float(r.t0_s),
                "end": None})
            a["t0"] = min(a["t0"], float(r.t0_s))
            if r.kind in ("spike", "step"):
                reg = [x for x in regions if abs(x[0] - float(r.t0_s)) < 0.5]
                if reg:
                    a["end"] = max(a["end"] or 0.0, reg[0][1])
            elif r.kind == "surge":  # shaded over its rise
                a["end"] = max(a["end"] or 0.0, float(r.peak_s))
    return sorted(by_name.values(), key=lambda a: a["t0"])


def _gates(data: RunData, summary: RunSummary) -> list[dict[str, Any]]:
    thresholds = data.scenario.get("thresholds") or []
    if not thresholds or summary.trials.empty:
        return []
    try:
        res = evaluate_thresholds(thresholds, summary.trials)
    except HarnessError as e:
        return [{"ok": False, "text": f"thresholds: {e}"}]
    return ([{"ok": True, "text": t} for t in res.passed]
            + [{"ok": False, "text": t} for t in res.failed])


def dashboard_data(data: RunData, summary: RunSummary | None = None) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready values (NaN → null)."""
    summary = summary or summarize_run(data)
    scenario = data.scenario
    strategies = data.strategies
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(strategies)}
    cap, cap_src = capacity_of(scenario)
    declared = {str(s.get("name")): s for s in scenario.get("strategies") or []}
    series: dict[str, dict[str, Any]] = {}
    trials_of: dict[str, list[int]] = {}
    for strategy, trial, ts, _ev in trial_frames(data):
        one = _series_of(ts, cap)
        fc = _forecast_of(data.decisions, strategy, trial, ts)
        if fc is not None:
            one["forecast"] = fc
        series.setdefault(strategy, {})[str(trial)] = one
        trials_of.setdefault(strategy, []).append(trial)
    controllers = []
    for strategy, trial, ag in agreements(data):  # policy kubernetes-hpa: the real HPA
        one = series.get(strategy, {}).get(str(trial))
        if one is not None:
            one["port"] = port_on_grid(ag, pd.Series(one["t"], dtype=float))
        controllers.append(ag.text(f"{strategy} #{trial}"))
    slo = data.slo
    warnings = list(data.warnings) + [str(w) for w in data.run.get("warnings") or []]
    if data.run.get("loadgen_saturated"):
        warnings.append("the load generator was saturated: sent rates may lag the offered "
                        "rates (see the rate panel)")
    if data.run.get("host_saturated"):
        warnings.append("the host machine was saturated in at least one trial (see the Host "
                        "panel): the machine, not the strategy, may have been the limit")
    if cap_src == "nominal":
        warnings.append("no calibrated capacity: demand uses the nominal WORKERS/SERVICE_MS "
                        "capacity (run `harness calibrate`)")
    seed = int(scenario.get("seed", 0) or 0)
    return {
        "run": {"id": data.run_id, "status": data.status,
                "scenario": scenario.get("name", ""),
                "description": scenario.get("description", ""),
                "started": data.run.get("started"), "ended": data.run.get("ended"),
                "platform": data.run.get("platform") or scenario.get("platform"),
                "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")},
        "slo": {"p95_ms": slo.p95_ms, "error_rate": slo.error_rate, "stable_s": slo.stable_s},
        "capacity": {"rps_per_replica": cap, "source": cap_src},
        "warnings": warnings,
        "strategies": [{"name": s, "color": colors[s],
                        "kind": (declared.get(s) or {}).get("kind", ""),
                        "autoscaler": bool((declared.get(s) or {}).get("autoscaler")),
                        "trials": trials_of.get(s, [])} for s in strategies],
        "series": series,
        "annotations": _annotations(data, summary),
        "summary": _summary_table(summary, strategies, colors, seed),
        "disturbances": _disturbance_table(summary, colors),
        "gates": _gates(data, summary),
        "controllers": controllers,
    }


def _json_for_script(obj: Any) -> str:
    # "</" would end the <script> element early; "<!--" could open a comment.
    return (json.dumps(obj, allow_nan=False, separators=(",", ":"))
            .replace("</", "<\\/").replace("<!--", "<\\!--"))


def render_html(model: Mapping[str, Any], live: Mapping[str, Any] | None = None) -> str:
    """The page. `live`: {"url": "data.json", "interval_ms": 3000} to poll while running."""
    doc = dict(model)
    doc["live"] = dict(live) if live else None
    css = (HERE / "dashboard.css").read_text(encoding="utf-8")
    js = (HERE / "dashboard.js").read_text(encoding="utf-8")
    title = html.escape(f"harness · {model['run']['id']}")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"{meta_csp(js)}"
        f"<title>{title}</title><style>{css}</style></head>"
        "<body data-render-state=loading data-js-errors=0>"
        "<div id=app></div>"
        f"<script type='application/json' id=harness-data>{_json_for_script(doc)}</script>"
        f"<script>{js}</script></body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write summary.csv (+ disturbances.csv, summary_aggregate.csv) and report.html into
    the run folder; return the report's path."""
    run_dir = Path(run_dir)
    rj = run_dir / "run.json"
    if (rj.exists() or rj.is_symlink()) and not is_regular(rj):
        # a FIFO would hang us and a link could be anything: this is not our run folder
        raise UnsafeFileError(f"{rj}: not a regular file; not a run folder to report on")
    data = load_run(run_dir)
    if data.timeseries.empty:
        raise HarnessError(f"{run_dir}: no timeseries.csv rows to report on")
    try:
        # everything computed before anything is written: a bad cell leaves no half output
        summary = summarize_run(data)
        page = render_html(dashboard_data(data, summary))
    except CorruptHistogram as e:
        raise HarnessError(f"{run_dir / 'timeseries.csv'}: {e}") from None
    write_summary(run_dir, data, summary=summary)
    return atomic_write(run_dir / "report.html", page)
