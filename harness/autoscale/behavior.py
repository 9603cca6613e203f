"""The HPA's ``behavior``: stabilization windows and rate-limit policies, as pure functions.

Ported from kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go (autoscaling/v2,
the version with scale-up *and* scale-down events in both limits and with
``stabilizeRecommendationWithBehaviors`` clamping the current count between the lowest and
highest recent recommendations):

    normalizeDesiredReplicasWithBehaviors  → normalize()
    stabilizeRecommendationWithBehaviors   → stabilize()
    convertDesiredReplicasWithBehaviorRate → rate_limit()
    calculateScaleUpLimitWithScalingRules  → scale_up_limit()
    calculateScaleDownLimitWithBehaviors   → scale_down_limit()
    getReplicasChangePerPeriod             → replicas_changed_in_period()

The HPA reads ``time.Now()`` in each of them; here ``now`` is a parameter and the history
lives in an immutable ``PolicyState`` instead of the controller's maps. Comparisons keep the
HPA's strictness: a record counts while ``t > now - window`` (Go's ``timestamp.After(cutoff)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from harness.autoscale.base import PolicyState, TimedChange
from harness.autoscale.spec import Behavior, Rules


def replicas_changed_in_period(period_s: float, events: Iterable[TimedChange],
                               now: float) -> int:
    """Replicas added (or removed) by the scale events of the last ``period_s``."""
    cutoff = now - period_s
    return sum(e.replicas for e in events if e.t > cutoff)


def scale_up_limit(current: int, up_events: Iterable[TimedChange],
                   down_events: Iterable[TimedChange], rules: Rules, now: float) -> int:
    """The most replicas the scale-up policies allow right now."""
    if rules.select_policy == "Disabled":
        return current
    up, down = tuple(up_events), tuple(down_events)
    pick = min if rules.select_policy == "Min" else max  # Min: the smallest change
    result: int | None = None
    for p in rules.policies:
        period_start = (current - replicas_changed_in_period(p.period_s, up, now)
                        + replicas_changed_in_period(p.period_s, down, now))
        if p.type == "Pods":
            proposed = period_start + p.value
        else:
            # Rounded up, or a small percentage would never add a pod. Same float64 arithmetic
            # as the HPA (Python floats are IEEE doubles), artefacts included: 50 × 110 % → 56.
            proposed = math.ceil(float(period_start) * (1 + float(p.value) / 100))
        result = proposed if result is None else pick(result, proposed)
    assert result is not None  # policies has min_length=1
    return result


def scale_down_limit(current: int, up_events: Iterable[TimedChange],
                     down_events: Iterable[TimedChange], rules: Rules, now: float) -> int:
    """The fewest replicas the scale-down policies allow right now."""
    if rules.select_policy == "Disabled":
        return current
    up, down = tuple(up_events), tuple(down_events)
    pick = max if rules.select_policy == "Min" else min  # Min: the smallest change → max count
    result: int | None = None
    for p in rules.policies:
        period_start = (current - replicas_changed_in_period(p.period_s, up, now)
                        + replicas_changed_in_period(p.period_s, down, now))
        if p.type == "Pods":
            proposed = period_start - p.value
        else:
            # int32(float64) truncates toward zero, as Python's int() does
            proposed = int(float(period_start) * (1 - float(p.value) / 100))
        result = proposed if result is None else pick(result, proposed)
    assert result is not None
    return result


def stabilize(recommendations: Iterable[TimedChange], now: float, current: int, desired: int,
              up_window_s: float, down_window_s: float) -> tuple[int, str | None]:
    """Clamp ``current`` between the lowest recommendation of the scale-up window and the
    highest of the scale-down window (both include ``desired``). Returns the stabilized
    count and ScaleUpStabilized / ScaleDownStabilized when that differs from ``desired``."""
    up_rec = down_rec = desired
    up_cut, down_cut = now - up_window_s, now - down_window_s
    for r in recommendations:
        if r.t > up_cut:
            up_rec = min(r.replicas, up_rec)
        if r.t > down_cut:
            down_rec = max(r.replicas, down_rec)
    stabilized = min(max(current, up_rec), down_rec)
    if stabilized == desired:
        return stabilized, None
    return stabilized, "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"


@dataclass(frozen=True)
class Limited:
    rate_limited: int  # after the scaling policies only
    desired: int  # after the scaling policies and min/max
    # ScaleUpLimit | ScaleDownLimit | TooManyReplicas | TooFewReplicas | DesiredWithinRange
    reason: str


def rate_limit(current: int, desired: int, min_replicas: int, max_replicas: int,
               state: PolicyState, behavior: Behavior, now: float) -> Limited:
    """convertDesiredReplicasWithBehaviorRate: the scale-up/down limits and min/max in one
    step, with the HPA's reason. ``rate_limited`` is the same step without min/max, for the
    decision log (the HPA never shows that number)."""
    up_ev, down_ev = state.scale_up_events, state.scale_down_events
    if desired > current:
        # a limit below current means the period's budget is used up: hold, never shrink
        limit = max(scale_up_limit(current, up_ev, down_ev, behavior.scale_up, now), current)
        rate_limited = min(desired, limit)
        if max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
        else:
            allowed, reason = max_replicas, "TooManyReplicas"
        if desired > allowed:
            return Limited(rate_limited, allowed, reason)
        return Limited(rate_limited, desired, "DesiredWithinRange")
    if desired < current:
        limit = min(scale_down_limit(current, up_ev, down_ev, behavior.scale_down, now), current)
        rate_limited = max(desired, limit)
        if min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
        else:
            allowed, reason = min_replicas, "TooFewReplicas"
        if desired < allowed:
            return Limited(rate_limited, allowed, reason)
        return Limited(rate_limited, desired, "DesiredWithinRange")
    return Limited(desired, desired, "DesiredWithinRange")


@dataclass(frozen=True)
class Normalized:
    stabilized: int
    rate_limited: int
    desired: int
    reasons: tuple[str, ...]
    state: PolicyState  # with this recommendation recorded and outdated entries dropped


def normalize(current: int, recommended: int, min_replicas: int, max_replicas: int,
              behavior: Behavior, state: PolicyState, now: float) -> Normalized:
    """normalizeDesiredReplicasWithBehaviors: stabilize, then rate-limit and clamp. Records the
    raw recommendation (not the stabilized one) for later windows, as the HPA does."""
    stabilized, stab_reason = stabilize(state.recommendations, now, current, recommended,
                                        behavior.scale_up.stabilization_window_s,
                                        behavior.scale_down.stabilization_window_s)
    lim = rate_limit(current, stabilized, min_replicas, max_replicas, state, behavior, now)
    keep_s = max(behavior.scale_up.stabilization_window_s,
                 behavior.scale_down.stabilization_window_s, behavior.longest_period_s)
    recs = (*state.recommendations, TimedChange(now, recommended))
    new_state = replace(state, recommendations=recs)
    reasons = ((stab_reason,) if stab_reason else ()) + (lim.reason,)
    return Normalized(stabilized, lim.rate_limited, lim.desired, reasons,
                      new_state.pruned(now, keep_s))
