"""How fast does the autoscaler react to a load step? (issue: autoscaler, done-when figures)

Runs `harness run` on the docker platform with an orchestrated (Swarm) strategy under a
load step 60 → 300 req/s at t=10 s and back at t=70 s, once with interval_s=2 and once
with the HPA's default 15 s, then reads the run's CSVs and prints, side by side:

- step → first decision that saw the metric over target (+ tolerance)
- step → first scale decision
- step → first new replica ready, and first receiving traffic through the LB
- step down → first scale-down (after the scale-down stabilization window)

    .venv/bin/python benchmarks/autoscale_reaction.py [--platform docker|local]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
STEP_UP_S, STEP_DOWN_S = 10.0, 70.0

SCENARIO = """\
name: react-i{interval}
seed: 5
output: {out}
app:
  env: {{WORKERS: 4, SERVICE_MS: 50, SERVICE_DIST: exponential, QUEUE_LIMIT: 20}}
load:
  warmup_s: 3
  timeout_s: 3
  stages:
    - {{duration_s: 10, rps: 60}}
    - {{duration_s: 60, rps: 300}}
    - {{duration_s: 40, rps: 60}}
slo: {{p95_ms: 300, error_rate: 0.01, stable_s: 5}}
strategies:
  - name: hpa
    kind: orchestrated
    replicas: 2
    autoscaler:
      policy: hpa
      metric: utilization
      target: 0.6
      min_replicas: 2
      max_replicas: 10
      interval_s: {interval}
      behavior: {{scale_down: {{stabilization_window_s: 20}}}}
"""


def first(series: pd.Series) -> float | None:
    return None if series.empty else float(series.min())


def measure(run_dir: Path) -> dict[str, float | None]:
    ev = pd.read_csv(run_dir / "events.csv")
    dec = pd.read_csv(run_dir / "decisions.csv")
    initial = set(ev[(ev.kind == "replica_ready") & (ev.t_s < STEP_UP_S)].replica)
    after = ev[ev.t_s >= STEP_UP_S]
    new_ready = after[(after.kind == "replica_ready") & ~after.replica.isin(initial)]
    new_lb = after[(after.kind == "replica_lb_traffic") & ~after.replica.isin(initial)]
    d_up = dec[dec.t_s >= STEP_UP_S]
    over = d_up[d_up.metric_mean > d_up.target * 1.1]
    scale_up = d_up[(d_up.action == "scale") & (d_up.desired > d_up.current_replicas)]
    d_down = dec[dec.t_s >= STEP_DOWN_S]
    scale_down = d_down[(d_down.action == "scale") & (d_down.desired < d_down.current_replicas)]

    def rel(x: float | None, t0: float) -> float | None:
        return None if x is None else round(x - t0, 2)

    return {
        "metric over target": rel(first(over.t_s), STEP_UP_S),
        "first scale-up decision": rel(first(scale_up.t_s), STEP_UP_S),
        "first new replica ready": rel(first(new_ready.t_s), STEP_UP_S),
        "first new replica serving (LB)": rel(first(new_lb.t_s), STEP_UP_S),
        "max replicas": float(dec.desired.max()),
        "step down → first scale-down": rel(first(scale_down.t_s), STEP_DOWN_S),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--platform", default="docker", choices=["docker", "local"])
    ap.add_argument("--intervals", default="2,15")
    args = ap.parse_args()
    table: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for interval in [int(x) for x in args.intervals.split(",")]:
            sc = Path(tmp) / f"react-{interval}.yaml"
            sc.write_text(SCENARIO.format(interval=interval, out=Path(tmp) / "results"))
            r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sc),
                                "--platform", args.platform], cwd=ROOT, text=True,
                               capture_output=True, timeout=900)
            if r.returncode != 0:
                print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
                return 1
            run_dir = next((Path(tmp) / "results").glob(f"react-i{interval}-*"))
            table[f"interval_s={interval}"] = measure(run_dir)
    df = pd.DataFrame(table)
    print(f"seconds after the load step (60 → 300 req/s at t={STEP_UP_S:g} s; back at "
          f"t={STEP_DOWN_S:g} s), platform {args.platform}, scale-down window 20 s")
    print(df.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
