"""A small synthetic results folder (what `harness run` writes), for analysis, report,
compare and dashboard tests.

Three strategies over 120 s (+5 s warm-up): 100 req/s, a spike to 400 req/s at t=30
(back to 100 at t=70), and a crash of one replica at t=95. Each replica serves 80 req/s.
* manual (3 replicas, fixed): drowns during the spike (240 < 400), loses a replica
  for good at the crash (2 × 80 = 160 still carry 100 req/s).
* compose (3 replicas, fixed): same spike; the crashed replica is restarted (ready at 98).
* autoscale (3 → 8): scales up at 32, first new replica ready at 36.4, all by 37;
  recovers; scales down at 80; the crashed replica is replaced (ready at 97).

Per-second latencies are drawn from a seeded generator and stored as real histograms
(harness.record.histogram encoding), so window percentiles are exact merges.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from harness.record.histogram import GAMMA, Histogram
from harness.record.schema import DECISIONS, EVENTS, TIMESERIES, names

CAPACITY = 80.0
WARMUP_S = 5
DURATION_S = 120
SPIKE_AT, SPIKE_END, CRASH_AT = 30, 70, 95
SLO = {"p95_ms": 300.0, "error_rate": 0.01, "stable_s": 5}
NEW_REPLICAS = ("r4", "r5", "r6", "r8", "r9")


def offered_at(t: int) -> float:
    return 400.0 if SPIKE_AT <= t < SPIKE_END else 100.0


def scenario(trials: int = 1, thresholds: list[str] | None = None) -> dict:
    return {
        "name": "synthetic", "seed": 1, "repetitions": trials,
        "app": {"env": {"WORKERS": "4", "SERVICE_MS": "50"}},
        "load": {"model": "open", "warmup_s": WARMUP_S, "warmup_rps": 100, "stages": [
            {"name": "base", "duration_s": 30, "rps": 100},
            {"name": "spike", "duration_s": 40, "rps": 400},
            {"name": "after", "duration_s": 50, "rps": 100}]},
        "faults": [{"at_s": CRASH_AT, "action": "crash", "count": 1}],
        "slo": dict(SLO),
        "strategies": [
            {"name": "manual", "kind": "manual", "replicas": 3, "autoscaler": None},
            {"name": "compose", "kind": "compose", "replicas": 3, "autoscaler": None},
            {"name": "autoscale", "kind": "orchestrated", "replicas": 3,
             "autoscaler": {"policy": "hpa", "metric": "utilization", "target": 0.6,
                            "min_replicas": 2, "max_replicas": 8}}],
        "thresholds": thresholds if thresholds is not None else [],
        "calibration": {"capacity_rps_per_replica": CAPACITY},
    }


def _hist(latencies_ms: np.ndarray) -> str:
    """Histogram of many values at once (bucketing vectorised, same as Histogram.record)."""
    h = Histogram()
    if len(latencies_ms) == 0:
        return ""
    us = latencies_ms * 1000.0
    idx = np.where(us <= 1.0, 0, np.ceil(np.log(np.maximum(us, 1.0)) / math.log(GAMMA)))
    vals, counts = np.unique(idx.astype(int), return_counts=True)
    h.counts = {int(v): int(c) for v, c in zip(vals, counts, strict=True)}
    h.total = int(counts.sum())
    h.max_ms = float(latencies_ms.max())
    return h.encode()


def _replicas(strategy: str, t: int) -> tuple[int, int, int]:
    """(desired, running, ready) of a strategy at second t."""
    if strategy == "manual":
        n = 3 if t < CRASH_AT + 1 else 2
        return 3, n, n
    if strategy == "compose":
        if CRASH_AT + 1 <= t < CRASH_AT + 3:
            return 3, 2, 2
        return 3, 3, 3
    desired = 8 if 32 <= t < 80 else 3
    running = 8 if 33 <= t < 81 else 3
    ready = 8 if 37 <= t < 81 else 3
    if CRASH_AT + 1 <= t < CRASH_AT + 2:
        running, ready = 2, 2
    return desired, running, ready


def make_synthetic_run(root: Path, run_id: str = "synthetic", trials: int = 1,
                       status: str = "complete", seed: int = 1,
                       thresholds: list[str] | None = None,
                       strategies: tuple[str, ...] = ("manual", "compose", "autoscale"),
                       slow_factor: float = 1.0, duration_s: int = DURATION_S) -> Path:
    """Write results/<run_id>/ under `root` and return its path. `slow_factor` scales
    latencies (to fake a "before/after a change" pair of runs)."""
    rng = np.random.default_rng(seed)
    run_dir = root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    sc = scenario(trials, thresholds)
    sc["strategies"] = [s for s in sc["strategies"] if s["name"] in strategies]
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": run_id, "status": status, "scenario": sc, "schema_version": 1,
        "versions": {"harness": "0.1.0"}, "host": {"cores": 2},
        "started": "2026-01-01T00:00:00Z", "ended": None if status == "running" else
        "2026-01-01T00:10:00Z", "warnings": [], "loadgen_saturated": False}, indent=2))
    ts_cols, ev_cols, dec_cols = names(TIMESERIES), names(EVENTS), names(DECISIONS)
    with (run_dir / "timeseries.csv").open("w", newline="") as fts, \
            (run_dir / "events.csv").open("w", newline="") as fev, \
            (run_dir / "decisions.csv").open("w", newline="") as fdec:
        wts = csv.DictWriter(fts, ts_cols)
        wev = csv.DictWriter(fev, ev_cols)
        wdec = csv.DictWriter(fdec, dec_cols)
        for w in (wts, wev, wdec):
            w.writeheader()
        for strategy in strategies:
            for trial in range(1, trials + 1):
                key = {"run_id": run_id, "strategy": strategy, "trial": trial}

                def ev(t: float, kind: str, replica: str = "", detail: str = "",
                       key: dict = key) -> None:
                    wev.writerow({**key, "t_s": t, "kind": kind, "replica": replica,
                                  "detail": detail})

                ev(-WARMUP_S, "load_stage", detail="stage=warmup rps=100")
                ev(0.0, "load_stage", detail="stage=0 rps=100")
                if duration_s > SPIKE_AT:
                    ev(SPIKE_AT + 0.01, "load_stage", detail="stage=1 rps=400")
                if duration_s > SPIKE_END:
                    ev(SPIKE_END + 0.01, "load_stage", detail="stage=2 rps=100")
                if duration_s > CRASH_AT:
                    ev(CRASH_AT + 0.02, "fault", "r2", "action=crash fault=0")
                    ev(CRASH_AT + 0.05, "replica_exited", "r2", "code=137")
                    if strategy == "compose":
                        ev(CRASH_AT + 1.2, "replica_restarted", "r2", "")
                        ev(CRASH_AT + 2.6, "replica_ready", "r2", "")
                    if strategy == "autoscale":
                        ev(CRASH_AT + 0.9, "replica_started", "r7", "")
                        ev(CRASH_AT + 1.8, "replica_ready", "r7", "")
                if strategy == "autoscale" and duration_s > 40:
                    ev(32.0, "scale", detail="from=3 to=8 reason=ScaleUp")
                    for i, rid in enumerate(NEW_REPLICAS):
                        ev(33.0 + 0.1 * i, "replica_started", rid, "")
                        ev(36.4 + 0.3 * i, "replica_ready", rid, "")
                    if duration_s > 80:
                        ev(80.0, "scale", detail="from=8 to=3 reason=ScaleDown")
                        for rid in NEW_REPLICAS:
                            ev(80.5, "replica_exited", rid, "code=0")
                backlog = 0.0
                for t in range(-WARMUP_S, duration_s):
                    offered = offered_at(max(t, 0))
                    desired, running, ready = _replicas(strategy, t)
                    cap = ready * CAPACITY
                    if strategy == "autoscale" and t in (37, 38):
                        backlog = 0.0  # the new replicas drain the queue at once
                    if offered <= cap:
                        ok, failed = offered, 0.0
                        util = offered / cap
                        base = 40.0 / max(0.05, 1.0 - util * 0.9)
                        lat = rng.exponential(base * 0.6, int(ok)) + base * 0.4
                        backlog = 0.0
                    else:
                        ok = cap
                        failed = offered - cap
                        backlog += failed
                        lat = rng.normal(900.0, 120.0, int(ok + failed)).clip(200.0, 3000.0)
                    lat = lat * slow_factor
                    lat_ok = lat
                    hist = _hist(lat_ok)
                    p50, p95, p99 = (float(np.percentile(lat_ok, q)) for q in (50, 95, 99))
                    metric = offered / max(ready, 1) / CAPACITY
                    sat_host = strategy == "compose" and 50 <= t < 53
                    wts.writerow({
                        **key, "t_s": t, "offered_rps": offered, "sent_rps": offered,
                        "ok_rps": ok, "failed_rps": failed, "p50_ms": round(p50, 3),
                        "p95_ms": round(p95, 3), "p99_ms": round(p99, 3),
                        "max_ms": round(float(lat_ok.max()), 3),
                        "replicas_desired": desired, "replicas_running": running,
                        "replicas_ready": ready, "dropped_rps": 0,
                        "failed_status_rps": failed, "failed_timeout_rps": 0,
                        "failed_conn_rps": 0, "failed_other_rps": 0,
                        "in_flight": min(backlog, 600.0),
                        "autoscaler_metric": round(metric, 4) if strategy == "autoscale"
                        else "",
                        "autoscaler_target": 0.6 if strategy == "autoscale" else "",
                        "replicas_cpu_pct": round(ok / 10.0, 1), "loadgen_cpu_pct": 20.0,
                        "loadgen_saturated": 0, "latency_hist": hist,
                        # compose's host is saturated for 3 s in the spike (record/host.py)
                        "host_cpu_pct": 95.0 if sat_host else round(20.0 + ok / 8.0, 1),
                        "host_cpu_pressure_pct": 60.0 if sat_host else 5.0,
                        "host_saturated": (int(sat_host) if t >= 0 else "")})
                    if strategy == "autoscale" and t >= 0 and t % 2 == 0:
                        wdec.writerow({**key, "t_s": t, "policy": "hpa",
                                       "current_replicas": running, "ready": ready,
                                       "unready": running - ready, "missing": 0,
                                       "metric_values": "", "metric_mean": round(metric, 4),
                                       "target": 0.6, "recommended": desired,
                                       "stabilized": desired, "rate_limited": desired,
                                       "desired": desired, "reason": "ScaleUp",
                                       "action": "none"})
    return run_dir
