"""Policy ``hpa``: the Kubernetes Horizontal Pod Autoscaler for a per-replica metric.

The replica calculation ports kubernetes/kubernetes
pkg/controller/podautoscaler/replica_calculator.go, ``calcPlainMetricReplicas`` (reached from
``GetMetricReplicas`` for ``Pods`` metrics with an ``AverageValue`` target); the decision
around it ports ``reconcileAutoscaler`` in horizontal.go (replicas outside min/max are
brought back first, without metrics; otherwise recommend → stabilize → rate-limit → clamp,
see behavior.py).

One deliberate difference, as the harness's issue asks: the HPA counts a not-ready pod as
"unready" only for the CPU resource (and Pending pods always); here every replica that is
not ready yet is unready, whatever the metric — it counts as 0 on a scale-up and is left out
on a scale-down, as the HPA does with its unready pods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.autoscale.base import Decision, Observation, PolicyState
from harness.autoscale.behavior import normalize
from harness.autoscale.spec import AutoscalerSpec


def ceil_decimal(x: float) -> int:
    # The HPA works in milli-units, so a ratio × count that is a whole number in decimal
    # stays whole; float64 on decimal fractions may land a hair above it (0.7/0.35*2 =
    # 4.000000000000001) and ceil would add a replica. Rounding to 9 places first keeps
    # the decimal answer and changes nothing a milli-unit could tell apart.
    return math.ceil(round(x, 9))


def replica_calculation(current_replicas: int, ready_values: Sequence[float], unready: int,
                        missing: int, target: float, tolerance: float = 0.1
                        ) -> tuple[int, str]:
    """``hpa_replicas`` with the reason: AboveTarget | BelowTarget | WithinTolerance |
    FillInWithinTolerance | FillInFlipsDirection."""
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")
    if not ready_values:
        raise ValueError("did not receive metrics for any ready replica")
    ready = len(ready_values)
    usage_ratio = (sum(ready_values) / ready) / target
    scale_up_with_unready = unready > 0 and usage_ratio > 1.0

    if not scale_up_with_unready and missing == 0:
        if abs(1.0 - usage_ratio) <= tolerance:
            return current_replicas, "WithinTolerance"  # the change would be too small
        return (ceil_decimal(usage_ratio * ready),
                "AboveTarget" if usage_ratio > 1.0 else "BelowTarget")

    # Fill in the replicas we know nothing about, conservatively, and calculate again.
    filled = list(ready_values)
    if missing > 0:
        if usage_ratio < 1.0:
            filled += [target] * missing  # on a scale-down, as if exactly at the target
        elif usage_ratio > 1.0:
            filled += [0.0] * missing  # on a scale-up, as if idle
    if scale_up_with_unready:
        filled += [0.0] * unready  # on a scale-up, unready replicas count as idle
    new_ratio = (sum(filled) / len(filled)) / target

    if abs(1.0 - new_ratio) <= tolerance:
        return current_replicas, "FillInWithinTolerance"
    if (usage_ratio < 1.0 < new_ratio) or (usage_ratio > 1.0 > new_ratio):
        return current_replicas, "FillInFlipsDirection"
    new_replicas = ceil_decimal(new_ratio * len(filled))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
            new_ratio > 1.0 and new_replicas < current_replicas):
        # fewer replicas reported than the scale says exist: the count would move against
        # the metric's direction
        return current_replicas, "FillInFlipsDirection"
    return new_replicas, "AboveTarget" if new_ratio > 1.0 else "BelowTarget"


def hpa_replicas(current_replicas: int, ready_values: Sequence[float], unready: int,
                 missing: int, target: float, tolerance: float = 0.1) -> int:
    """Desired replicas for a per-replica (AverageValue) metric, as the HPA's replica
    calculator computes them for plain metrics. ``ready_values``: metric of each ready
    replica that reported one; ``unready``: replicas not ready yet; ``missing``: ready
    replicas with no sample. No metrics at all → ValueError."""
    return replica_calculation(current_replicas, ready_values, unready, missing, target,
                               tolerance)[0]



def outside_bounds(spec: AutoscalerSpec, cur: int, state: PolicyState) -> Decision | None:
    """reconcileAutoscaler's first three cases, which never look at metrics or behaviours:
    scaling disabled (0 replicas), above max, below min. None: the policy decides."""
    if cur == 0:
        return Decision(None, None, None, 0, ("ScalingDisabled",), state)
    if cur > spec.max_replicas:
        return Decision(None, None, None, spec.max_replicas, ("CurrentAboveMaxReplicas",),
                        state)
    if cur < spec.min_replicas:
        return Decision(None, None, None, spec.min_replicas, ("CurrentBelowMinReplicas",),
                        state)
    return None


class HpaPolicy:
    name = "hpa"

    def __init__(self, spec: AutoscalerSpec) -> None:
        self.spec = spec

    def decide(self, obs: Observation, state: PolicyState, now: float) -> Decision:
        s = self.spec
        cur = obs.current_replicas
        if (early := outside_bounds(s, cur, state)) is not None:
            return early
        recommended, why = replica_calculation(cur, list(obs.ready_values.values()),
                                               obs.unready, obs.missing, obs.target,
                                               s.tolerance)
        n = normalize(cur, recommended, s.min_replicas, s.max_replicas, s.behavior, state, now)
        return Decision(recommended, n.stabilized, n.rate_limited, n.desired,
                        (why, *n.reasons), n.state)
