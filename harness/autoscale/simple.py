"""Two simpler policies next to ``hpa``, for comparison runs: ``step`` and ``target-tracking``.

Both follow AWS Application Auto Scaling's ideas (step scaling with a cooldown; target
tracking with separate scale-out / scale-in cooldowns), simplified to the harness's one
per-replica metric. Like every policy they are pure: cooldowns are read from the scale
events in ``PolicyState`` and ``now`` is a parameter.
"""

from __future__ import annotations

from harness.autoscale.base import Decision, Observation, PolicyState
from harness.autoscale.hpa import ceil_decimal
from harness.autoscale.spec import AutoscalerSpec, StepSpec, TargetTrackingSpec


def clamp(recommended: int, min_replicas: int, max_replicas: int) -> tuple[int, str]:
    if recommended > max_replicas:
        return max_replicas, "TooManyReplicas"
    if recommended < min_replicas:
        return min_replicas, "TooFewReplicas"
    return recommended, "DesiredWithinRange"


def _out_of_range(obs: Observation, spec: AutoscalerSpec, state: PolicyState
                  ) -> Decision | None:
    cur = obs.current_replicas
    if cur > spec.max_replicas:
        return Decision(None, None, None, spec.max_replicas, ("CurrentAboveMaxReplicas",), state)
    if cur < spec.min_replicas:
        return Decision(None, None, None, spec.min_replicas, ("CurrentBelowMinReplicas",), state)
    return None


def _mean(obs: Observation) -> float:
    mean = obs.metric_mean
    if mean is None:
        raise ValueError("did not receive metrics for any ready replica")
    return mean


class StepPolicy:
    """Add or remove a fixed number of replicas by how far the mean is from the target;
    then wait ``cooldown_s`` after any scale before the next step."""

    name = "step"

    def __init__(self, spec: AutoscalerSpec) -> None:
        self.spec = spec
        self.opts = spec.step or StepSpec()

    def decide(self, obs: Observation, state: PolicyState, now: float) -> Decision:
        early = _out_of_range(obs, self.spec, state)
        if early is not None:
            return early
        cur = obs.current_replicas
        breach = _mean(obs) / obs.target - 1.0
        change = 0
        for step in self.opts.steps:
            lo = step.lower if step.lower is not None else float("-inf")
            hi = step.upper if step.upper is not None else float("inf")
            if lo <= breach < hi:
                change = step.change
                break
        recommended = max(cur + change, 0)
        why = "NoStep" if change == 0 else ("AboveTarget" if change > 0 else "BelowTarget")
        reasons = [why]
        stabilized = recommended
        last = state.last_scale_t
        if change != 0 and last is not None and now - last < self.opts.cooldown_s:
            stabilized = cur
            reasons.append("Cooldown")
        desired, limit_reason = clamp(stabilized, self.spec.min_replicas, self.spec.max_replicas)
        reasons.append(limit_reason)
        return Decision(recommended, stabilized, stabilized, desired, tuple(reasons),
                        state.pruned(now, self.opts.cooldown_s))


class TargetTrackingPolicy:
    """replicas = ceil(mean × ready / target) — enough replicas to bring the mean to the
    target — with no scale-out within ``scale_out_cooldown_s`` of the last scale-out and no
    scale-in within ``scale_in_cooldown_s`` of any scale."""

    name = "target-tracking"

    def __init__(self, spec: AutoscalerSpec) -> None:
        self.spec = spec
        self.opts = spec.target_tracking or TargetTrackingSpec()

    def decide(self, obs: Observation, state: PolicyState, now: float) -> Decision:
        early = _out_of_range(obs, self.spec, state)
        if early is not None:
            return early
        cur = obs.current_replicas
        # missing ready replicas are assumed to run at the mean of those that reported
        recommended = ceil_decimal(_mean(obs) * obs.ready / obs.target)
        reasons = ["AboveTarget" if recommended > cur else
                   "BelowTarget" if recommended < cur else "AtTarget"]
        stabilized = recommended
        last_up, last_any = state.last_scale_up_t, state.last_scale_t
        if (recommended > cur and last_up is not None
                and now - last_up < self.opts.scale_out_cooldown_s):
            stabilized = cur
            reasons.append("ScaleOutCooldown")
        elif (recommended < cur and last_any is not None
              and now - last_any < self.opts.scale_in_cooldown_s):
            stabilized = cur
            reasons.append("ScaleInCooldown")
        desired, limit_reason = clamp(stabilized, self.spec.min_replicas, self.spec.max_replicas)
        reasons.append(limit_reason)
        keep = max(self.opts.scale_out_cooldown_s, self.opts.scale_in_cooldown_s)
        return Decision(recommended, stabilized, stabilized, desired, tuple(reasons),
                        state.pruned(now, keep))
