"""Did a demo run (`harness run spike.yaml`) meet the demo's bar?

    .venv/bin/python benchmarks/demo_check.py results/RUN [results/RUN2 …]

Per trial: saturated host seconds (timeseries.csv host_saturated), mean and peak host CPU,
error rate; for the autoscaled trial(s) also the p95 of the spike *once all its replicas
were ready* (the first spike second with replicas_ready ≥ the most replicas desired in the
spike, to the spike's end), against the SLO. Exit 1 when any run had a saturated second or
that p95 broke the SLO (docs/architecture.md, "Measuring the machine").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.analysis.rundata import load_run, trial_frames
from harness.record.histogram import Histogram, merged


def spike_window(events: pd.DataFrame) -> tuple[float, float] | None:
    """[start, end) of the stage with the highest rate, from load_stage events."""
    stages = events[events["kind"] == "load_stage"].sort_values("t_s")
    rows = []
    for r in stages.to_dict("records"):
        if str(r.get("stage", "")) == "warmup":
            continue
        # the structured `rps` column (schema 2; load_run upgrades older runs)
        rate = pd.to_numeric(pd.Series([r.get("rps")]), errors="coerce").iloc[0]
        if pd.notna(rate):
            rows.append((float(r["t_s"]), float(rate)))
    if not rows:
        return None
    i = max(range(len(rows)), key=lambda k: rows[k][1])
    end = rows[i + 1][0] if i + 1 < len(rows) else float("inf")
    return rows[i][0], end


def p95_once_ready(ts: pd.DataFrame, window: tuple[float, float]
                   ) -> tuple[float | None, int | None]:
    t = pd.to_numeric(ts["t_s"], errors="coerce")
    spike = ts[(t >= window[0]) & (t < window[1])]
    if spike.empty:
        return None, None
    want = pd.to_numeric(spike["replicas_desired"], errors="coerce").max()
    ready = spike[pd.to_numeric(spike["replicas_ready"], errors="coerce") >= want]
    if ready.empty:
        return None, None
    t0 = int(pd.to_numeric(ready["t_s"]).min())
    part = spike[pd.to_numeric(spike["t_s"]) >= t0]
    h = merged(Histogram.decode(c) for c in part["latency_hist"])
    return h.percentile(95), t0


def check(run: Path) -> bool:
    data = load_run(run)
    slo = data.slo
    autoscaled = {str(s.get("name")) for s in data.scenario.get("strategies") or []
                  if s.get("autoscaler")}
    good = True
    print(f"{data.run_id}:")
    for strategy, trial, ts, ev in trial_frames(data):
        m = ts[pd.to_numeric(ts["t_s"], errors="coerce") >= 0]
        sat = int(pd.to_numeric(m.get("host_saturated"), errors="coerce").fillna(0).sum()) \
            if "host_saturated" in m else 0
        cpu = pd.to_numeric(m.get("host_cpu_pct"), errors="coerce") \
            if "host_cpu_pct" in m else pd.Series(dtype=float)
        ok = pd.to_numeric(m["ok_rps"]).sum()
        failed = pd.to_numeric(m["failed_rps"]).sum()
        line = (f"  {strategy} #{trial}: host saturated {sat} s, host CPU mean "
                f"{cpu.mean():.0f} % max {cpu.max():.0f} %, errors "
                f"{failed / max(1.0, ok + failed):.1%}")
        good &= sat == 0
        if strategy in autoscaled:
            w = spike_window(ev)
            p95, t0 = p95_once_ready(ts, w) if w else (None, None)
            within = p95 is not None and p95 <= slo.p95_ms
            line += (f"; spike p95 once all ready (from t={t0}s): "
                     f"{'-' if p95 is None else f'{p95:.0f}'} ms vs SLO {slo.p95_ms:.0f} ms "
                     f"{'ok' if within else 'NOT MET'}")
            good &= within
        print(line)
    return good


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    a = ap.parse_args(argv)
    results = [check(r) for r in a.runs]
    print(f"{sum(results)} of {len(results)} run(s) met the demo's bar")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
