"""Policy kubernetes-hpa in a run's data: per trial, the agreement of the harness's HPA
port with the real controller (harness/autoscale/agreement.py) and the port's desired
count on the timeseries' seconds, for the report's replicas panel."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness.analysis.rundata import RunData
from harness.autoscale.agreement import REAL_POLICY, Agreement, check
from harness.autoscale.spec import RECORDED, AutoscalerSpec


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def agreements(data: RunData) -> list[tuple[str, int, Agreement]]:
    """(strategy, trial, agreement) for every trial the real HPA controller scaled."""
    dec = data.decisions
    if dec.empty or "policy" not in dec.columns:
        return []
    out = []
    for s in data.scenario.get("strategies") or []:
        a = (s or {}).get("autoscaler") or {}
        if a.get("policy") != REAL_POLICY:
            continue
        try:
            spec = AutoscalerSpec.model_validate(a, context=RECORDED)
        except ValueError:
            continue  # an edited run.json: nothing to check against
        mine = dec[(dec["strategy"] == s["name"]) & (dec["policy"] == REAL_POLICY)]
        for trial in sorted(int(t) for t in mine["trial"].dropna().unique()):
            rows = [{k: _clean(v) for k, v in r.items()}
                    for r in mine[mine["trial"] == trial].to_dict("records")]
            out.append((str(s["name"]), trial, check(rows, spec)))
    return out


def port_on_grid(ag: Agreement, t_grid: pd.Series) -> list[float | None]:
    """The port's desired count, each decision held until the next, on ``t_grid``."""
    pts = [(float(r["t_s"]), float(r["desired"])) for r in ag.port_rows
           if r["desired"] is not None]
    out: list[float | None] = []
    i, cur = 0, None
    for t in t_grid.astype(float):
        while i < len(pts) and pts[i][0] <= t + 1e-9:
            cur = pts[i][1]
            i += 1
        out.append(cur)
    return out
