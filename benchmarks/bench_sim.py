"""Speed of the simulator: one hour of simulated time at 10,000 req/s.

    .venv/bin/python benchmarks/bench_sim.py               # the three cases below, 1 h each
    .venv/bin/python benchmarks/bench_sim.py --seconds 300 --cases fleet-1000

Each case is one trial of `run_sim_trial` (the same code path as `harness run --platform
sim`: model, load balancer, controller, recorder writing the CSVs), pinned to one CPU core.
Cases:

- fleet-1000: 1,000 replicas at 10 req/s each (many replicas, light load)
- fixed-150:  150 replicas at ~67 req/s each, 83 % busy (the per-replica rate is what the
              batched model's cost grows with)
- autoscale:  the HPA from 60 replicas within 30..200, sync every 15 s, a crash of 20
              replicas every 10 minutes

Prints wall and CPU seconds per case and whether the target (< 60 s per simulated hour on
one core) is met; --json writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.platforms.sim.params import SimParams  # noqa: E402
from harness.platforms.sim.trial import run_sim_trial  # noqa: E402
from harness.scenario.loader import load_scenario  # noqa: E402
from harness.trial import Recorder  # noqa: E402

TARGET_S_PER_HOUR = 60.0

STRATEGIES = {
    "fleet-1000": "{name: fleet-1000, kind: compose, replicas: 1000}",
    "fixed-150": "{name: fixed-150, kind: compose, replicas: 150}",
    "autoscale": textwrap.dedent("""\
        name: autoscale
        kind: orchestrated
        replicas: 60
        autoscaler: {policy: hpa, metric: utilization, target: 0.6, min_replicas: 30,
                     max_replicas: 200, interval_s: 15}"""),
}


def scenario_text(seconds: int, rate: float, case: str) -> str:
    strategy = textwrap.indent(STRATEGIES[case], "    ").lstrip()
    faults = "\n".join(f"  - {{at_s: {t}, action: crash, count: 20}}"
                       for t in range(300, seconds, 600)) or "  []"
    return textwrap.dedent(f"""\
        name: bench-{case}
        seed: 1
        app:
          env: {{WORKERS: 4, SERVICE_MS: 50, SERVICE_DIST: exponential, QUEUE_LIMIT: 50}}
        load:
          warmup_s: 0
          timeout_s: 5
          max_in_flight: 20000
          stages:
            - {{duration_s: {seconds}, rps: {rate:g}}}
        faults:
        """) + faults + "\nstrategies:\n  - " + strategy + "\n"


def run_case(case: str, seconds: int, rate: float, params: SimParams) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        d = Path(tmp)
        (d / "s.yaml").write_text(scenario_text(seconds, rate, case), encoding="utf-8")
        loaded = load_scenario(d / "s.yaml")
        rec = Recorder(d, "bench")
        w0, c0 = time.perf_counter(), time.process_time()
        res = run_sim_trial(loaded, loaded.scenario.strategies[0], 1, rec,
                            echo=lambda _: None, params=params)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rec.close()
        rows = sum(1 for _ in (d / "timeseries.csv").open()) - 1
    per_hour = cpu * 3600.0 / seconds
    return {"case": case, "simulated_s": seconds, "rate_rps": rate, "requests": res.requests,
            "ok": res.ok, "p95_ms": res.p95_ms, "replicas_max": res.replicas_max,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cpu_s_per_sim_hour": round(per_hour, 1), "rows": rows,
            "requests_per_cpu_s": round(res.requests / cpu) if cpu else None,
            "meets_target": per_hour < TARGET_S_PER_HOUR, "status": res.status}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--cases", default=",".join(STRATEGIES))
    ap.add_argument("--tick-ms", type=float, default=SimParams().tick_s * 1000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    params = SimParams(tick_s=args.tick_ms / 1000.0)
    out = []
    for case in args.cases.split(","):
        r = run_case(case, args.seconds, args.rate, params)
        out.append(r)
        print(f"{case:>11}: {r['simulated_s']} s at {args.rate:g} req/s → "
              f"{r['requests']:,} requests, p95 {r['p95_ms']:.0f} ms, replicas ≤ "
              f"{r['replicas_max']}; wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s "
              f"({r['cpu_s_per_sim_hour']:.1f} CPU s per simulated hour, "
              f"{'meets' if r['meets_target'] else 'MISSES'} < {TARGET_S_PER_HOUR:g} s)",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return 0 if all(r["meets_target"] for r in out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
