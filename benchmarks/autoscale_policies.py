"""Autoscaling policies on the spike demo (spike.yaml), on the sim platform, repeated.

    .venv/bin/python benchmarks/autoscale_policies.py                 # 5 repetitions
    .venv/bin/python benchmarks/autoscale_policies.py --repetitions 10 --json out.json

The demo's load (100 → 600 → 100 req/s, a crash at 95 s) against five strategies:

- hpa-defaults: the HPA as Kubernetes ships it — 15 s sync, 300 s scale-down window,
  utilization target 0.6
- hpa-tuned:    the demo's strategy (2 s sync, 20 s scale-down window)
- lb-rps:       the tuned HPA on the load balancer's arrivals (lb_rps, target 48 req/s =
                0.6 × the 80 req/s a replica serves)
- predictive:   Holt's linear trend on lb_rps, same target and behavior, lead measured
- fixed-peak:   8 replicas, no autoscaler (600 req/s ÷ 80 per replica): the cost yardstick

For each: time from the spike's start until the SLO held again (recovery_s of the spike
disturbance), failed requests and replica-seconds, as mean with a 95 % bootstrap interval
over the repetitions (harness.analysis.aggregate). Sim figures: the model's, not Docker's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.aggregate import aggregate  # noqa: E402
from harness.analysis.rundata import load_run  # noqa: E402
from harness.analysis.summary import summarize_run  # noqa: E402
from harness.run import RunOptions, run_scenario  # noqa: E402

TUNED_BEHAVIOR = {"scale_down": {"stabilization_window_s": 20}}


def _auto(policy: str, metric: str, target: float, interval_s: float,
          behavior: dict[str, Any] | None) -> dict[str, Any]:
    a: dict[str, Any] = {"policy": policy, "metric": metric, "target": target,
                         "min_replicas": 2, "max_replicas": 12, "interval_s": interval_s}
    if behavior is not None:
        a["behavior"] = behavior
    return a


STRATEGIES: list[dict[str, Any]] = [
    {"name": "hpa-defaults", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _auto("hpa", "utilization", 0.6, 15, None)},
    {"name": "hpa-tuned", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _auto("hpa", "utilization", 0.6, 2, TUNED_BEHAVIOR)},
    {"name": "lb-rps", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _auto("hpa", "lb_rps", 48, 2, TUNED_BEHAVIOR)},
    {"name": "predictive", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _auto("predictive", "lb_rps", 48, 2, TUNED_BEHAVIOR)},
    {"name": "fixed-peak", "kind": "orchestrated", "replicas": 8},
]

METRICS = ("recovery_s", "failures", "replica_seconds")


def _spike_column(columns: list[str]) -> str:
    cols = [c for c in columns if c.startswith("recovery_s_spike")]
    if not cols:
        raise SystemExit("no recovery_s_spike* column in the summary")
    return cols[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    scenario = yaml.safe_load((ROOT / "spike.yaml").read_text(encoding="utf-8"))
    scenario["strategies"] = STRATEGIES
    scenario["thresholds"] = []
    scenario["repetitions"] = args.repetitions
    with tempfile.TemporaryDirectory(prefix="bench-policies-") as tmp:
        path = Path(tmp) / "spike-policies.yaml"
        path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
        code = run_scenario(path, RunOptions(platform="sim", out=Path(tmp) / "out",
                                             run_id="bench", echo=lambda _: None))
        if code not in (0, 1):
            print(f"run failed with exit code {code}", file=sys.stderr)
            return code
        summary = summarize_run(load_run(Path(tmp) / "out" / "bench")).trials
    col = _spike_column(list(summary.columns))
    agg = aggregate(summary, [col, "failures", "replica_seconds"])
    out: dict[str, dict[str, Any]] = {}
    for s in (st["name"] for st in STRATEGIES):
        rows = agg[agg["strategy"] == s].set_index("metric")
        out[s] = {m: {k: _f(rows.loc[c, k]) for k in ("mean", "ci_lo", "ci_hi", "n_valid",
                                                       "n_missing")}
                  for m, c in zip(METRICS, (col, "failures", "replica_seconds"), strict=True)}
    print(f"spike demo on sim, {args.repetitions} repetitions; mean [95 % bootstrap CI]; "
          f"recovery = {col} (not recovered trials left out, counted)")
    print(f"{'strategy':<14}{'recovery s':>26}{'failed requests':>30}{'replica-s':>26}")
    for s, figs in out.items():
        cells = [_cell(figs[m]) for m in METRICS]
        print(f"{s:<14}{cells[0]:>26}{cells[1]:>30}{cells[2]:>26}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


def _f(v: Any) -> float | None:
    f = float(v)
    return None if math.isnan(f) else f


def _cell(m: dict[str, float | None]) -> str:
    mean, lo, hi = m["mean"], m["ci_lo"], m["ci_hi"]
    if mean is None:
        return "not recovered"
    txt = f"{mean:.1f} [{lo:.1f}, {hi:.1f}]" if lo is not None and hi is not None \
        else f"{mean:.1f}"
    if m["n_missing"]:
        txt += f" ({int(m['n_missing'])} n.r.)"
    return txt


if __name__ == "__main__":
    sys.exit(main())
