"""Policy ``predictive``: scale now for the demand forecast one provisioning lag ahead.

Method: Holt's linear trend method (double exponential smoothing) — C. C. Holt,
"Forecasting seasonals and trends by exponentially weighted moving averages", ONR Memorandum
52, Carnegie Institute of Technology, 1957 (reprinted in the International Journal of
Forecasting 20(1):5-10, 2004); in the notation of Hyndman & Athanasopoulos, "Forecasting:
Principles and Practice" (3rd ed.), section 8.2 "Methods with trend":

    level  ℓ_t = α·y_t + (1 − α)·(ℓ_{t−1} + b_{t−1}·Δt)
    trend  b_t = β·(ℓ_t − ℓ_{t−1})/Δt + (1 − β)·b_{t−1}
    forecast ŷ_{t+h} = ℓ_t + h·b_t

The only change to the textbook form: the trend is per *second* and multiplied by the gap
Δt between decisions, so an iteration that ran late (or a replay on recorded, uneven times)
still extrapolates the right distance.

y is the total demand, ``metric mean × ready replicas`` (missing replicas taken at the mean):
for a per-replica metric whose total does not depend on how many replicas share it (rps,
lb_rps, busy slots) this is the load itself. h is the provisioning lag: ``lead_s`` when the
scenario gives it, else measured in this run — the time from a scale-up decision until the
ready count reached the new size — starting from ``initial_lead_s``.

The recommendation is ``ceil(forecast / target)`` (no change while |forecast / (target ×
current) − 1| ≤ tolerance, as the HPA's tolerance); then the HPA's own stabilization,
rate limits and min/max clamp (behavior.normalize), so it is bounded like the HPA.
"""

from __future__ import annotations

import math
from dataclasses import replace

from harness.autoscale.base import Decision, Observation, PolicyState
from harness.autoscale.behavior import normalize
from harness.autoscale.hpa import ceil_decimal, outside_bounds
from harness.autoscale.spec import AutoscalerSpec, PredictiveSpec

NAN = math.nan


def holt_update(level: float, trend: float, y: float, dt: float, alpha: float, beta: float
                ) -> tuple[float, float]:
    """One step of Holt's method over a gap of ``dt`` seconds (trend per second)."""
    if dt <= 0:  # two observations at one instant: keep the trend, move the level
        return alpha * y + (1 - alpha) * level, trend
    new_level = alpha * y + (1 - alpha) * (level + trend * dt)
    new_trend = beta * (new_level - level) / dt + (1 - beta) * trend
    return new_level, new_trend


class _Memory:
    """The policy's part of PolicyState.extra, by name (NaN = not known yet)."""

    FIELDS = ("level", "trend", "t", "seen_current", "pending_t", "pending_n", "lead")

    def __init__(self, extra: tuple[float, ...]) -> None:
        vals = extra if len(extra) == len(self.FIELDS) else (NAN,) * len(self.FIELDS)
        (self.level, self.trend, self.t, self.seen_current, self.pending_t, self.pending_n,
         self.lead) = vals

    def tuple(self) -> tuple[float, ...]:
        return (self.level, self.trend, self.t, self.seen_current, self.pending_t,
                self.pending_n, self.lead)


def measure_lead(mem: _Memory, obs: Observation, state: PolicyState, now: float) -> None:
    """Provisioning lag, measured: a scale-up (seen as a higher current count than at the
    last decision) is pending until the ready count reaches the new size."""
    cur = obs.current_replicas
    up_t = state.last_scale_up_t
    if not math.isnan(mem.seen_current) and cur > mem.seen_current and up_t is not None:
        if math.isnan(mem.pending_t):
            mem.pending_t = up_t  # the oldest unfinished scale-up sets the lag
        mem.pending_n = cur
    if not math.isnan(mem.pending_n):
        if cur < mem.pending_n:  # scaled down before it finished: nothing to measure
            mem.pending_t = mem.pending_n = NAN
        elif obs.ready >= mem.pending_n:
            mem.lead = now - mem.pending_t
            mem.pending_t = mem.pending_n = NAN
    mem.seen_current = cur


class PredictivePolicy:
    name = "predictive"

    def __init__(self, spec: AutoscalerSpec) -> None:
        self.spec = spec
        self.opts = spec.predictive or PredictiveSpec()

    def lead_of(self, mem: _Memory) -> float:
        if self.opts.lead_s is not None:
            return self.opts.lead_s
        return self.opts.initial_lead_s if math.isnan(mem.lead) else mem.lead

    def decide(self, obs: Observation, state: PolicyState, now: float) -> Decision:
        s = self.spec
        cur = obs.current_replicas
        if (early := outside_bounds(s, cur, state)) is not None:  # as the HPA
            return early
        mean = obs.metric_mean
        if mean is None:
            raise ValueError("did not receive metrics for any ready replica")
        total = mean * obs.ready
        mem = _Memory(state.extra)
        measure_lead(mem, obs, state, now)
        if math.isnan(mem.level):
            mem.level, mem.trend = total, 0.0
        else:
            mem.level, mem.trend = holt_update(mem.level, mem.trend, total, now - mem.t,
                                               self.opts.alpha, self.opts.beta)
        mem.t = now
        forecast = max(0.0, mem.level + mem.trend * self.lead_of(mem))
        ratio = forecast / (obs.target * cur)
        if abs(1.0 - ratio) <= s.tolerance:
            recommended, why = cur, "WithinTolerance"
        else:
            recommended = ceil_decimal(forecast / obs.target)
            why = "ForecastAboveTarget" if ratio > 1.0 else "ForecastBelowTarget"
        n = normalize(cur, recommended, s.min_replicas, s.max_replicas, s.behavior,
                      replace(state, extra=mem.tuple()), now)
        return Decision(recommended, n.stabilized, n.rate_limited, n.desired,
                        (why, *n.reasons), n.state, forecast=round(forecast, 6))
