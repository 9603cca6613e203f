"""``SimMetricSource``: per-replica metrics of the model, sampled as Prometheus samples them.

Every ``scrape_interval_s`` the engine calls ``scrape(t)``: each replica Prometheus has
discovered (``prom_discovery_s`` after its start) and that is alive gives one sample of
what its /metrics page would show at t — ``app_utilization`` (busy workers / workers, read
at that instant), the ``app_requests_total{path="/work"}`` counter and the latency
histogram's cumulative bucket counts. A restarted process starts its counters from 0.

``sample(replicas)`` then computes the preset's PromQL over those samples (see
harness.autoscale.metrics.PRESETS), with the same arithmetic helpers the direct-scrape
source uses:

- utilization:     avg_over_time over the window
- rps:             increase over the window (counter resets count as restarts from 0) / span
- latency_p95_ms:  histogram_quantile(0.95) of the window's bucket increases
- cpu:             requests/s × (CPU_MS + 0.3 ms of HTTP handling): a crude model
- lb_rps:          rate of the load balancer's arrivals counter (every request sent passes
                   HAProxy: the world's ``sent_total``) ÷ ready replicas
- lb_queue:        avg_over_time of HAProxy's open backend sessions (``lb_sessions``) ÷ ready

A replica whose newest sample is older than ``stale_after_s`` or that has too few samples
(a rate needs two) is missing, as it is for the Prometheus source.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.autoscale import metrics as m
from harness.autoscale.spec import AutoscalerSpec
from harness.clock import Clock
from harness.deploy.base import Replica
from harness.platforms.sim.params import SimParams

# sample_app/metrics.py DURATION_BUCKETS, plus +Inf
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                     0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, math.inf)
HTTP_CPU_MS = 0.3  # CPU the real app spends per request outside CPU_MS (rough)

PRESETS = ("utilization", "rps", "latency_p95_ms", "cpu", "lb_rps", "lb_queue")
LB_PRESETS = ("lb_rps", "lb_queue")  # one backend-level series, scraped from HAProxy


class SimMetricSource:
    def __init__(self, spec: AutoscalerSpec, deployer: Any, clock: Clock, world: Any, *,
                 params: SimParams | None = None) -> None:
        metric = spec.metric
        if not isinstance(metric, str) or metric not in PRESETS:
            raise ValueError(f"the sim platform models the metric presets {PRESETS}; a custom "
                             f"PromQL metric ({spec.metric_name!r}) needs a real Prometheus")
        self.metric = metric
        self.window_s = spec.window_s
        self.params = params or SimParams()
        self.deployer = deployer
        self.clock = clock
        self.world = world
        self.last_error: str | None = None
        # history ring: one row per scrape, one column per model slot
        self.rows = math.ceil(max(self.window_s, self.params.stale_after_s)
                                  / self.params.scrape_interval_s) + 3
        self._t = np.full(self.rows, -np.inf)
        self._inst = np.zeros((self.rows, 0), np.int64)
        self._util = np.zeros((self.rows, 0))
        self._reqs = np.zeros((self.rows, 0))
        self._lat = np.zeros((self.rows, 0, len(LATENCY_BUCKETS_S)))
        self._lb_t = np.full(self.rows, -np.inf)  # HAProxy's exporter, always scraped
        self._lb_reqs = np.zeros(self.rows)
        self._lb_sessions = np.zeros(self.rows)
        self._next = 0
        if metric == "latency_p95_ms":
            world.bank.track_latency(LATENCY_BUCKETS_S)

    def _fit(self, cap: int) -> None:
        have = self._inst.shape[1]
        if cap <= have:
            return
        add = cap - have
        self._inst = np.concatenate([self._inst, np.zeros((self.rows, add), np.int64)], 1)
        self._util = np.concatenate([self._util, np.zeros((self.rows, add))], 1)
        self._reqs = np.concatenate([self._reqs, np.zeros((self.rows, add))], 1)
        self._lat = np.concatenate(
            [self._lat, np.zeros((self.rows, add, len(LATENCY_BUCKETS_S)))], 1)

    def scrape(self, t: float) -> None:
        bank = self.world.bank
        self._fit(bank.capacity)
        pairs = self.deployer.scraped(t)
        i = self._next % self.rows
        self._next += 1
        self._lb_t[i] = t
        self._lb_reqs[i] = self.world.sent_total
        self._lb_sessions[i] = self.world.lb_sessions(t)
        self._t[i] = t
        self._inst[i] = 0  # 0: nobody scraped in this slot
        if not pairs:
            return
        slots = np.fromiter((p[0] for p in pairs), np.int64, len(pairs))
        self._inst[i, slots] = np.fromiter((p[1] for p in pairs), np.int64, len(pairs))
        self._util[i, slots] = bank.busy(slots, t) / bank.c
        self._reqs[i, slots] = bank.received[slots]
        if self.metric == "latency_p95_ms":
            self._lat[i, slots] = np.cumsum(bank.lat_counts[slots], axis=1)

    def sample(self, replicas: list[Replica]) -> dict[str, float | None]:
        self.last_error = None
        out: dict[str, float | None] = {}
        if not replicas:
            return out
        now = self.clock.now()
        if self.metric in LB_PRESETS:
            return self._lb_sample(replicas, now)
        where = self.deployer.instances()
        known = [(r.id, *where[r.id]) for r in replicas if r.id in where]
        out = {r.id: None for r in replicas}
        if not known:
            return out
        slots = np.array([k[1] for k in known], np.int64)
        insts = np.array([k[2] for k in known], np.int64)
        self._fit(int(slots.max()) + 1)
        order = np.argsort(self._t)  # oldest row first
        t = self._t[order]
        mine = self._inst[order][:, slots] == insts[None, :]  # (rows, replicas)
        latest = np.where(mine, t[:, None], -np.inf).max(axis=0)
        fresh = latest > now - self.params.stale_after_s
        win = mine & (t[:, None] > now - self.window_s) & (t[:, None] <= now)
        n = win.sum(axis=0)
        vals = np.full(len(known), np.nan)
        if self.metric == "utilization":
            u = self._util[order][:, slots]
            s = np.where(win, u, 0.0).sum(axis=0)
            ok = n > 0
            vals[ok] = s[ok] / n[ok]
        else:
            for k in np.flatnonzero(n >= 2):
                rows = np.flatnonzero(win[:, k])
                ts = t[rows]
                span = ts[-1] - ts[0]
                if span <= 0:
                    continue
                col = slots[k]
                if self.metric in ("rps", "cpu"):
                    inc = m.counter_increase(self._reqs[order][rows, col].tolist())
                    rate = inc / span
                    vals[k] = rate if self.metric == "rps" else \
                        rate * (self.world.app.cpu_ms + HTTP_CPU_MS) / 1000.0
                else:
                    series = self._lat[order][rows, col]  # (samples, buckets) cumulative
                    delta = {le: m.counter_increase(series[:, b].tolist())
                             for b, le in enumerate(LATENCY_BUCKETS_S)}
                    q = m.bucket_quantile(0.95, delta)
                    if math.isfinite(q):
                        vals[k] = q * 1000.0
        gaps = []
        for k, (rid, _, _) in enumerate(known):
            v = vals[k]
            if fresh[k] and not math.isnan(v):
                out[rid] = float(v)
            else:
                gaps.append(rid)
        if gaps:
            self.last_error = f"no fresh series for {', '.join(gaps[:5])}" + \
                (" …" if len(gaps) > 5 else "")
        return out

    def _lb_sample(self, replicas: list[Replica], now: float) -> dict[str, float | None]:
        """A backend-level value ÷ ready replicas, the same share for each (as
        harness.autoscale.source.PrometheusSource with per_ready)."""
        order = np.argsort(self._lb_t)
        t = self._lb_t[order]
        win = (t > now - self.window_s) & (t <= now)
        total: float | None = None
        if self.metric == "lb_queue" and win.any():
            total = float(self._lb_sessions[order][win].mean())
        elif self.metric == "lb_rps" and win.sum() >= 2:
            ts = t[win]
            span = ts[-1] - ts[0]
            if span > 0:
                total = m.counter_increase(self._lb_reqs[order][win].tolist()) / span
        if total is None:
            self.last_error = "no fresh series from the load balancer"
            return {r.id: None for r in replicas}
        return {r.id: total / len(replicas) for r in replicas}
