"""Autoscaling policies on the spike demo (spike.yaml), on sim or Docker, repeated.

    .venv/bin/python benchmarks/autoscale_policies.py                    # sim, 5 repetitions
    .venv/bin/python benchmarks/autoscale_policies.py --platform docker --repetitions 3
    .venv/bin/python benchmarks/autoscale_policies.py --strategies hpa-defaults,lb-queue-fast

The demo's load (100 → 400 → 100 req/s for 30 / 50 / 40 s, a crash at 95 s) against:

- hpa-defaults:    the HPA as Kubernetes ships it — 15 s sync, 300 s scale-down window,
                   scale-up max(4 pods, 100 %) per 15 s, utilization target 0.6
- hpa-tuned:       the demo's strategy (2 s sync, +1 pod per 2 s, 20 s scale-down window)
- lb-rps-fast:     the HPA on the load balancer's arrivals (lb_rps, target 56 req/s =
                   0.7 × the 80 req/s a replica serves) with a fast behaviour: 1 s sync, a
                   3 s rate window, up to +6 pods per second, a 3 s scale-down window
- predictive-fast: Holt's linear trend on lb_rps (lead measured in the run), same settings
- lb-queue-fast:   the HPA on HAProxy's queue + open sessions per ready replica (target
                   2.8 = 0.7 × 4 worker slots), same settings
- lb-rps-headroom, predictive-headroom: lb-rps-fast and predictive-fast never going below
                   the 3 replicas every strategy starts with (min_replicas 3, not 2): the
                   base load then runs at 0.42 of capacity, and a spike meets 240 req/s of
                   capacity instead of 160 and needs 5 new replicas instead of 6
- lb-rps-quick, predictive-quick: lb-rps-fast and predictive-fast seeing the spike sooner:
                   Prometheus scrapes HAProxy 4× a second (scrape_interval_s 0.25; the
                   replicas stay at 1 s), a 1 s rate window instead of 3 s, a sync every
                   0.5 s
- fixed-peak:      a fixed deployment sized for the peak the way the autoscalers size it:
                   ceil(400 req/s ÷ (80 req/s × 0.6)) = 9 replicas, no autoscaler — the
                   cost yardstick (its replica-seconds are 9 × the measured window)

For each: time from the spike's start until the SLO held again (recovery_s of the spike
disturbance), failed requests and replica-seconds, as mean with a 95 % interval over
the repetitions (harness.analysis.aggregate: Student-t below 30 trials, the expanded
bootstrap from 30), and the two ratios issue #17 asks for:
recovery ÷ hpa-defaults' and replica-seconds ÷ fixed-peak's. Sim figures are the model's.
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
from harness.fsutil import atomic_write  # noqa: E402
from harness.run import RunOptions, run_scenario  # noqa: E402

TUNED_BEHAVIOR = {"scale_down": {"stabilization_window_s": 20}}


def _auto(policy: str, metric: str, target: float, interval_s: float,
          behavior: dict[str, Any] | None, min_replicas: int = 2) -> dict[str, Any]:
    a: dict[str, Any] = {"policy": policy, "metric": metric, "target": target,
                         "min_replicas": min_replicas, "max_replicas": 12,
                         "interval_s": interval_s}
    if behavior is not None:
        a["behavior"] = behavior
    return a


# The fast behaviour of the new options: sync every second, a 3 s rate window, up to +6 pods
# a second, and a 3 s scale-down window (their metric is demand, which does not swing with
# their own capacity the way utilization does).
FAST = {"scale_up": {"stabilization_window_s": 0,
                    "policies": [{"type": "Pods", "value": 6, "period_s": 1}]},
        "scale_down": {"stabilization_window_s": 3,
                       "policies": [{"type": "Percent", "value": 100, "period_s": 1}]}}
DEMO = {"scale_up": {"policies": [{"type": "Pods", "value": 1, "period_s": 2}]},
        "scale_down": {"stabilization_window_s": 20}}
PEAK_RPS, REPLICA_RPS, TARGET = 400, 80, 0.6
# a fixed deployment sized for the peak as the demo's autoscaler sizes it (target 0.6)
PEAK_REPLICAS = math.ceil(PEAK_RPS / (REPLICA_RPS * TARGET))
FAST_TARGET = 0.7  # the new options run their replicas a little hotter (still ≤ 0.7)


def _fast(policy: str, metric: str, target: float, min_replicas: int = 2) -> dict[str, Any]:
    return {**_auto(policy, metric, target, 1, FAST, min_replicas), "window_s": 3}


def _quick(policy: str, metric: str, target: float) -> dict[str, Any]:
    return {**_auto(policy, metric, target, 0.5, FAST), "window_s": 1,
            "scrape_interval_s": 0.25}


STRATEGIES: list[dict[str, Any]] = [
    {"name": "hpa-defaults", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _auto("hpa", "utilization", TARGET, 15, None)},
    {"name": "hpa-tuned", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _auto("hpa", "utilization", TARGET, 2, DEMO)},
    {"name": "lb-rps-fast", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _fast("hpa", "lb_rps", FAST_TARGET * REPLICA_RPS)},
    {"name": "predictive-fast", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _fast("predictive", "lb_rps", FAST_TARGET * REPLICA_RPS)},
    {"name": "lb-queue-fast", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _fast("hpa", "lb_queue", FAST_TARGET * 4)},
    # headroom: the same, never below the 3 replicas every strategy starts with
    {"name": "lb-rps-headroom", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _fast("hpa", "lb_rps", FAST_TARGET * REPLICA_RPS, min_replicas=3)},
    {"name": "predictive-headroom", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _fast("predictive", "lb_rps", FAST_TARGET * REPLICA_RPS, min_replicas=3)},
    # quick: HAProxy scraped 4× a second, a 1 s rate window, a sync every 0.5 s
    {"name": "lb-rps-quick", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _quick("hpa", "lb_rps", FAST_TARGET * REPLICA_RPS)},
    {"name": "predictive-quick", "kind": "orchestrated", "replicas": 3,
     "autoscaler": _quick("predictive", "lb_rps", FAST_TARGET * REPLICA_RPS)},
    {"name": "fixed-peak", "kind": "orchestrated", "replicas": PEAK_REPLICAS},
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
    ap.add_argument("--platform", choices=("sim", "docker"), default="sim")
    ap.add_argument("--strategies", default="",
                    help="comma-separated names (default: all; the ratios need "
                         "hpa-defaults and fixed-peak)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the run folder here (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--from", dest="from_run", type=Path, default=None,
                    help="no new trials: the figures of a run this script kept (--keep "
                         "DIR → DIR/bench-docker)")
    args = ap.parse_args()
    if args.from_run is not None:
        return figures(args.from_run, args.json)
    scenario = yaml.safe_load((ROOT / "spike.yaml").read_text(encoding="utf-8"))
    chosen = [st for st in STRATEGIES
              if not args.strategies or st["name"] in args.strategies.split(",")]
    scenario["strategies"] = chosen
    scenario["thresholds"] = []
    scenario["repetitions"] = args.repetitions
    with tempfile.TemporaryDirectory(prefix="bench-policies-") as tmp:
        path = Path(tmp) / "spike-policies.yaml"
        path.write_text(yaml.safe_dump(scenario, sort_keys=False), encoding="utf-8")
        out_dir = args.keep or Path(tmp) / "out"
        quiet = args.platform == "sim"
        code = run_scenario(path, RunOptions(platform=args.platform, out=out_dir,
                                             run_id=f"bench-{args.platform}",
                                             echo=(lambda _: None) if quiet else print))
        if code not in (0, 1):
            print(f"run failed with exit code {code}", file=sys.stderr)
            return code
        return figures(out_dir / f"bench-{args.platform}", args.json)


def figures(run_dir: Path, json_out: Path | None) -> int:
    """Print (and optionally write) the figures of one run of this benchmark."""
    data = load_run(run_dir)
    summary = summarize_run(data).trials
    platform = str(data.run.get("platform", "?"))
    names = [str(s["name"]) for s in data.scenario.get("strategies") or []]
    repetitions = int(data.run.get("repetitions") or 0)
    col = _spike_column(list(summary.columns))
    agg = aggregate(summary, [col, "failures", "replica_seconds"])
    out: dict[str, dict[str, Any]] = {}
    for s in names:
        rows = agg[agg["strategy"] == s].set_index("metric")
        out[s] = {m: {k: _f(rows.loc[c, k]) for k in ("mean", "ci_lo", "ci_hi", "n_valid",
                                                       "n_missing")}
                  for m, c in zip(METRICS, (col, "failures", "replica_seconds"), strict=True)}
    methods = ", ".join(sorted(set(agg["ci_method"].dropna().astype(str))))
    print(f"spike demo on {platform}, {repetitions} repetitions; mean [95 % "
          f"interval: {methods}]; recovery = {col} (not recovered trials left out, counted)")
    base = (out.get("hpa-defaults") or {}).get("recovery_s", {}).get("mean")
    peak = (out.get("fixed-peak") or {}).get("replica_seconds", {}).get("mean")
    print(f"{'strategy':<20}{'recovery s':>24}{'failed requests':>28}{'replica-s':>24}"
          f"{'rec ÷ defaults':>16}{'rs ÷ fixed':>12}")
    for s, figs in out.items():
        cells = [_cell(figs[m]) for m in METRICS]
        rec, rs = figs["recovery_s"]["mean"], figs["replica_seconds"]["mean"]
        r1 = f"{rec / base:.2f}" if rec is not None and base else "–"
        r2 = f"{rs / peak:.2f}" if rs is not None and peak else "–"
        print(f"{s:<20}{cells[0]:>24}{cells[1]:>28}{cells[2]:>24}{r1:>16}{r2:>12}")
    if json_out:
        atomic_write(json_out, json.dumps(out, indent=2))  # never through a link
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
