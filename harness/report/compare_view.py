"""The compare page: the report's Grafana-like panels with every compared strategy × run
overlaid, and the compare table with its intervals and Δ — one self-contained HTML file
(`harness compare --html FILE`) or a page of `harness dashboard` (/compare).

It reuses report.html's page and plotter (harness.report.html, dashboard.js): a column of
the comparison (one strategy of one run or pooled group) is one "strategy" of the page,
named `strategy · run` when several runs are compared. The table cells are worded here
with harness.analysis.compare_text, so the page and the terminal say the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.analysis.compare import CompareResult
from harness.analysis.compare_text import (
    cell,
    colour,
    column_title,
    delta_text,
    legend,
    metric_label,
)
from harness.analysis.rundata import capacity_of, trial_frames
from harness.fsutil import atomic_write
from harness.report.html import PALETTE, _annotations, _series_of, render_html

CLASSES = {"green": "good", "red": "bad", "yellow": "odd", "dim": "dim"}
# shown at once; the other metrics sit behind "all metrics" so the tables fit side by side
KEY_METRICS = frozenset({"error_rate", "p95_ms", "p99_ms", "goodput_rps", "slo_violation_s",
                         "recovery_s", "scale_up_reaction_s", "replica_seconds"})


def entity_name(res: CompareResult, entity: tuple[str, str]) -> str:
    return f"{entity[1]} · {entity[0]}" if len(res.groups) > 1 else entity[1]


def _series(res: CompareResult) -> dict[str, dict[str, Any]]:
    """entity name → pooled trial number → the panels' series of that trial."""
    out: dict[str, dict[str, Any]] = {}
    for g in res.groups:
        frames = []
        for run in g.runs:
            cap, _ = capacity_of(run.scenario)
            frames.append(({(s, t): ts for s, t, ts, _ev in trial_frames(run)}, cap))
        for (strategy, pooled), (i, trial) in sorted(g.origin.items(),
                                                     key=lambda kv: kv[0][1]):
            e = (g.label, strategy)
            if e not in res.entities:
                continue
            by_trial, cap = frames[i]
            ts = by_trial.get((strategy, trial))
            if ts is not None:
                out.setdefault(entity_name(res, e), {})[str(pooled)] = _series_of(ts, cap)
    return out


def _annotations_of(res: CompareResult) -> list[dict[str, Any]]:
    """The disturbances of every run, one mark per name (earliest start, latest end)."""
    merged: dict[str, dict[str, Any]] = {}
    for g in res.groups:
        for run, summary in zip(g.runs, g.summaries, strict=True):
            for a in _annotations(run, summary):
                m = merged.setdefault(a["name"], dict(a))
                m["t0"] = min(m["t0"], a["t0"])
                if a.get("end") is not None:
                    m["end"] = max(m.get("end") or a["end"], a["end"])
    return sorted(merged.values(), key=lambda a: a["t0"])


def _tables(res: CompareResult, colors: Mapping[str, str]) -> list[dict[str, Any]]:
    metrics = list(dict.fromkeys(res.table["metric"]))
    out = []
    for title, cols in res.sections:
        rows = []
        for metric in metrics:
            cells = []
            for e in cols:
                r = cell(res, metric, e)
                if r is None:
                    cells.append({"text": "", "delta": "", "cls": ""})
                    continue
                cells.append({"text": str(r["text"]), "delta": delta_text(r),
                              "cls": CLASSES[colour(r)]})
            if any(c["text"] for c in cells):
                rows.append({"label": metric_label(metric), "metric": metric,
                             "key": metric in KEY_METRICS, "cells": cells})
        out.append({"title": title, "rows": rows,
                    "columns": [{"title": column_title(res, e),
                                 "color": colors[entity_name(res, e)]} for e in cols]})
    return out


def compare_model(res: CompareResult) -> dict[str, Any]:
    """The page's JSON document (the shape of harness.report.html.dashboard_data, plus
    a `compare` section in place of the run's summary table)."""
    first = res.groups[0].first
    names = [entity_name(res, e) for e in res.entities]
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    series = _series(res)
    cap, cap_src = capacity_of(first.scenario)
    slo = first.slo
    specs = {entity_name(res, e): (next(g for g in res.groups if g.label == e[0])
                                   .strategy_spec(e[1]) or {}) for e in res.entities}
    title = " vs ".join(g.label for g in res.groups)
    return {
        "run": {"id": f"compare {title}", "status": "complete",
                "scenario": first.scenario.get("name", ""),
                "description": res.question, "started": None, "ended": None,
                "platform": first.run.get("platform") or first.scenario.get("platform"),
                "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")},
        "slo": {"p95_ms": slo.p95_ms, "error_rate": slo.error_rate, "stable_s": slo.stable_s},
        "capacity": {"rps_per_replica": cap, "source": cap_src},
        "warnings": list(res.notes),
        "strategies": [{"name": n, "color": colors[n], "kind": specs[n].get("kind", ""),
                        "autoscaler": bool(specs[n].get("autoscaler")),
                        "trials": sorted(int(t) for t in series.get(n, {}))}
                       for n in names],
        "series": series,
        "annotations": _annotations_of(res),
        "summary": {"columns": [], "metrics": [], "rows": [], "note": ""},
        "disturbances": [],
        "gates": ([{"ok": True, "text": t} for g in res.gates.values() for t in g.passed]
                  + [{"ok": False, "text": t} for t in res.failed_gates]),
        "compare": {"view": res.view, "question": res.question, "legend": legend(res),
                    "tables": _tables(res, colors)},
    }


def compare_page(res: CompareResult) -> str:
    return render_html(compare_model(res))


def write_compare_page(res: CompareResult, path: str | Path) -> Path:
    """Write the page atomically (harness/fsutil.py: never through a link)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, compare_page(res))
    res.html_path = out
    return out

