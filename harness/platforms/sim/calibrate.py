"""Fit the simulator's platform lags to a real run's events.csv (pure: DataFrame in).

The defaults of ``SimParams`` are this project's measured figures on an idle machine; a
busy or a different machine starts containers slower, discovers them later, etc. A real
run records each of those lags as events, so the sim can take them from there:

- container start: ``replica_ready`` ``start_to_ready_s`` minus the app's STARTUP_S
- ready → LB: ``replica_lb_traffic`` ``since_start_s`` minus that replica's start-to-ready
  (replicas of the deploy and compose restarts), and since start for replicas added later
  (DNS discovery of a new address)
- Prometheus discovery: ``replica_first_scrape`` ``since_start_s``
- scale command: ``scale`` event → the next ``replica_started`` events it caused
- restart / reschedule lag: a crash ``fault`` → ``replica_restarted`` (compose, minus
  Docker's first 100 ms back-off) / ``replica_started … `` of the replacement (orchestrated,
  minus the strategy's restart_delay_s)

Each lag becomes the range (10th, 90th percentile) of what was observed; a lag with no
observation keeps its default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness.deploy.local_policy import DOCKER_BACKOFF_START_S
from harness.platforms.sim.params import Range, SimParams
from harness.record.upgrade import upgrade_events

_NUM = r"([-+0-9.eE]+)"


def _field(detail: str, key: str) -> float | None:
    m = re.search(rf"\b{key}={_NUM}", detail or "")
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


def _range(values: list[float]) -> Range | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, [10, 90])
    return (round(max(0.0, float(lo)), 3), round(max(0.0, float(hi)), 3))


def observed_lags(events: pd.DataFrame, *, startup_s: float,
                  restart_delay_s: Mapping[str, float] | None = None
                  ) -> dict[str, list[float]]:
    """Every lag a run's events show, per SimParams range name (seconds)."""
    restart_delay_s = restart_delay_s or {}
    out: dict[str, list[float]] = {k: [] for k in (
        "container_start_s", "lb_check_s", "dns_discovery_s", "prom_discovery_s",
        "scale_command_s", "restart_lag_s", "reschedule_lag_s")}
    ev = upgrade_events(events)  # fault action/outcome columns, also for version-1 runs
    ev["detail"] = ev["detail"].fillna("").astype(str)
    ev["replica"] = ev["replica"].fillna("").astype(str)
    keys = [k for k in ("run_id", "strategy", "trial") if k in ev.columns]
    for _, trial in ev.groupby(keys, sort=False):
        trial = trial.sort_values("t_s", kind="stable")
        kinds = trial["kind"]
        loaded_at = float(trial[kinds == "load_stage"]["t_s"].min()) \
            if (kinds == "load_stage").any() else 0.0
        # each replica life: how it began (started / restarted), when, and its readiness
        lives: dict[str, tuple[str, float, float | None]] = {}
        for r in trial[kinds.isin(["replica_started", "replica_restarted", "replica_ready",
                                   "replica_lb_traffic"])].itertuples():
            if r.kind in ("replica_started", "replica_restarted"):
                if r.kind == "replica_started" and "state=starting" not in r.detail \
                        and r.replica in lives:
                    continue  # a platform's second look at the same start
                lives[r.replica] = (r.kind, float(r.t_s), None)
            elif r.kind == "replica_ready":
                s2r = _field(r.detail, "start_to_ready_s")
                life = lives.get(r.replica)
                if s2r is None or life is None or life[2] is not None:
                    continue
                lives[r.replica] = (life[0], life[1], s2r)
                out["container_start_s"].append(s2r - startup_s)
            else:
                since = _field(r.detail, "since_start_s")
                life = lives.get(r.replica)
                if since is None or life is None or life[1] < loaded_at:
                    continue  # a first replica: the LB knew it before anyone looked
                if life[0] == "replica_restarted":
                    if life[2] is not None:
                        out["lb_check_s"].append(since - life[2])  # same address: ready → LB
                else:
                    out["dns_discovery_s"].append(since)  # a new address: since its start
        for r in trial[kinds == "replica_first_scrape"].itertuples():
            since = _field(r.detail, "since_start_s")
            if since is not None:
                out["prom_discovery_s"].append(since)
        started = trial[kinds == "replica_started"]
        for r in trial[kinds == "scale"].itertuples():
            m = re.match(r"\s*(\d+)→(\d+)", r.detail)
            if not m or int(m.group(2)) <= int(m.group(1)):
                continue
            n = int(m.group(2)) - int(m.group(1))
            after = started[started["t_s"] >= r.t_s]["t_s"].head(n)
            out["scale_command_s"].extend((after - r.t_s).tolist())
        strategy = str(trial["strategy"].iloc[0])
        delay = float(restart_delay_s.get(strategy, 1.0))
        for r in trial[(kinds == "fault") & (trial["action"] == "crash")].itertuples():
            if r.outcome in ("error", "skipped") or not r.replica:
                continue
            rs = trial[(kinds == "replica_restarted") & (trial["replica"] == r.replica)
                       & (trial["t_s"] >= r.t_s)]
            if len(rs):
                out["restart_lag_s"].append(float(rs["t_s"].iloc[0]) - r.t_s
                                            - DOCKER_BACKOFF_START_S)
                continue
            new = started[(started["t_s"] >= r.t_s) & (started["t_s"] < r.t_s + 30)]
            if len(new):
                out["reschedule_lag_s"].append(float(new["t_s"].iloc[0]) - r.t_s - delay)
    return out


def fit_params(events: pd.DataFrame, *, startup_s: float,
               restart_delay_s: Mapping[str, float] | None = None,
               base: SimParams | None = None) -> tuple[SimParams, dict[str, Any]]:
    """SimParams whose lag ranges are the ones the events show; and what was observed."""
    base = base or SimParams()
    lags = observed_lags(events, startup_s=startup_s, restart_delay_s=restart_delay_s)
    fitted: dict[str, Any] = {}
    for name, values in lags.items():
        r = _range(values)
        if r is not None:
            fitted[name] = r
    report = {name: {"n": len(v), "range": fitted.get(name)} for name, v in lags.items()}
    return base.with_(**fitted), report
