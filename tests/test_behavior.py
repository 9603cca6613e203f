"""Table tests of the HPA's behaviours: stabilization windows, rate-limit policies, min/max.

Rows in the style of kubernetes horizontal_test.go ``TestNormalizeDesiredReplicasWithBehavior``
/ ``TestScalingWithRules``: controller arguments (behaviour, min/max), world state (history,
current replicas, the raw recommendation) and expected numbers, with the arithmetic in a
comment. History times are seconds relative to ``now`` = 1000.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from harness.autoscale.base import Observation, PolicyState, TimedChange
from harness.autoscale.behavior import normalize
from harness.autoscale.hpa import HpaPolicy
from harness.autoscale.registry import POLICIES, make_policy
from harness.autoscale.spec import EXTERNAL_POLICIES, AutoscalerSpec, Behavior, PolicyName

NOW = 1000.0


def _hist(pairs: list[tuple[float, int]]) -> tuple[TimedChange, ...]:
    return tuple(TimedChange(NOW + dt, n) for dt, n in pairs)


def pods(value: int, period_s: float = 15) -> dict[str, Any]:
    return {"type": "Pods", "value": value, "period_s": period_s}


def percent(value: int, period_s: float = 15) -> dict[str, Any]:
    return {"type": "Percent", "value": value, "period_s": period_s}


@dataclass(frozen=True)
class Case:
    # controller arguments
    behavior: dict[str, Any]
    current: int
    recommended: int
    min_replicas: int = 1
    max_replicas: int = 100
    # world state: (seconds relative to now, replicas)
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)
    # expected
    stabilized: int = 0
    rate_limited: int = 0
    desired: int = 0
    reasons: tuple[str, ...] = ()


NO_WINDOW = {"scale_down": {"stabilization_window_s": 0}}

CASES = {
    # --- stabilization -------------------------------------------------------------------
    "down-window-keeps-highest": Case(
        {}, current=8, recommended=4, recommendations=[(-200, 8), (-100, 6)],
        stabilized=8, rate_limited=8, desired=8,  # max(8, 6, 4) = 8 = current: no change
        reasons=("ScaleDownStabilized", "DesiredWithinRange")),
    "down-window-forgets-older": Case(
        {}, current=8, recommended=4, recommendations=[(-400, 10), (-100, 6)],
        stabilized=6, rate_limited=6, desired=6,  # the 10 is 400 s old: max(6, 4) = 6
        reasons=("ScaleDownStabilized", "DesiredWithinRange")),
    "down-window-edge-is-outside": Case(
        {}, current=8, recommended=4, recommendations=[(-300, 10)],
        stabilized=4, rate_limited=4, desired=4,  # exactly 300 s old is not "after" the cutoff
        reasons=("DesiredWithinRange",)),
    "down-window-custom-20s": Case(
        {"scale_down": {"stabilization_window_s": 20}}, current=8, recommended=4,
        recommendations=[(-30, 8), (-10, 5)],
        stabilized=5, rate_limited=5, desired=5,  # only the 5 is in the 20 s window
        reasons=("ScaleDownStabilized", "DesiredWithinRange")),
    "up-window-keeps-lowest": Case(
        {"scale_up": {"stabilization_window_s": 60}}, current=4, recommended=9,
        recommendations=[(-30, 5), (-10, 7)],
        stabilized=5, rate_limited=5, desired=5,  # min(5, 7, 9) = 5
        reasons=("ScaleUpStabilized", "DesiredWithinRange")),
    "up-window-never-below-current": Case(
        {"scale_up": {"stabilization_window_s": 60}}, current=4, recommended=9,
        recommendations=[(-30, 2)],
        stabilized=4, rate_limited=4, desired=4,  # min is 2, but the result stays ≥ current
        reasons=("ScaleUpStabilized", "DesiredWithinRange")),
    "default-up-window-is-zero": Case(
        {}, current=4, recommended=6, recommendations=[(-1, 4), (-0.5, 4)],
        stabilized=6, rate_limited=6, desired=6,  # no scale-up window: act at once
        reasons=("DesiredWithinRange",)),
    # --- scale-up rate limits ------------------------------------------------------------
    "default-up-pods-4-wins-when-small": Case(
        {}, current=1, recommended=10,
        stabilized=10, rate_limited=5, desired=5,  # Pods: 1 + 4 = 5; Percent: 1 × 2 = 2; Max
        reasons=("ScaleUpLimit",)),
    "default-up-percent-wins-when-large": Case(
        {}, current=10, recommended=40,
        stabilized=40, rate_limited=20, desired=20,  # Pods: 14; Percent: 20; Max
        reasons=("ScaleUpLimit",)),
    "up-select-min": Case(
        {"scale_up": {"select_policy": "Min"}}, current=10, recommended=40,
        stabilized=40, rate_limited=14, desired=14,  # min(14, 20)
        reasons=("ScaleUpLimit",)),
    "up-select-disabled": Case(
        {"scale_up": {"select_policy": "Disabled"}}, current=10, recommended=40,
        stabilized=40, rate_limited=10, desired=10,  # limit = current
        reasons=("ScaleUpLimit",)),
    "up-budget-used-in-period": Case(
        {"scale_up": {"policies": [pods(4, 60)]}}, current=8, recommended=20,
        up_events=[(-30, 4)],
        stabilized=20, rate_limited=8, desired=8,  # period start 8 − 4 = 4; 4 + 4 = 8
        reasons=("ScaleUpLimit",)),
    "up-budget-partly-used": Case(
        {"scale_up": {"policies": [pods(4, 60)]}}, current=6, recommended=20,
        up_events=[(-30, 2)],
        stabilized=20, rate_limited=8, desired=8,  # period start 6 − 2 = 4; 4 + 4 = 8
        reasons=("ScaleUpLimit",)),
    "up-event-at-period-edge-forgotten": Case(
        {"scale_up": {"policies": [pods(4, 60)]}}, current=8, recommended=20,
        up_events=[(-60, 4)],
        stabilized=20, rate_limited=12, desired=12,  # exactly 60 s old: 8 + 4 = 12
        reasons=("ScaleUpLimit",)),
    "up-after-scale-down-in-period": Case(
        {"scale_up": {"policies": [pods(2, 60)]}}, current=4, recommended=20,
        down_events=[(-30, 3)],
        stabilized=20, rate_limited=9, desired=9,  # period start 4 + 3 = 7; 7 + 2 = 9
        reasons=("ScaleUpLimit",)),
    "up-percent-float64-like-the-hpa": Case(
        {"scale_up": {"policies": [percent(10)]}}, current=50, recommended=100,
        stabilized=100, rate_limited=56, desired=56,  # 50 × 1.1 = 55.000000000000007 → 56
        reasons=("ScaleUpLimit",)),
    "up-small-percent-still-adds-one": Case(
        {"scale_up": {"policies": [percent(10)]}}, current=3, recommended=10,
        stabilized=10, rate_limited=4, desired=4,  # ceil(3 × 1.1) = 4
        reasons=("ScaleUpLimit",)),
    # --- scale-down rate limits ----------------------------------------------------------
    "down-percent-50": Case(
        {"scale_down": {"stabilization_window_s": 0, "policies": [percent(50, 60)]}},
        current=10, recommended=2,
        stabilized=2, rate_limited=5, desired=5,  # int(10 × 0.5) = 5
        reasons=("ScaleDownLimit",)),
    "down-pods-with-history": Case(
        {"scale_down": {"stabilization_window_s": 0, "policies": [pods(2, 60)]}},
        current=8, recommended=1, down_events=[(-30, 2)],
        stabilized=1, rate_limited=8, desired=8,  # period start 8 + 2 = 10; 10 − 2 = 8
        reasons=("ScaleDownLimit",)),
    "down-select-max-of-two": Case(
        {"scale_down": {"stabilization_window_s": 0, "policies": [pods(1), percent(50)]}},
        current=10, recommended=2,
        stabilized=2, rate_limited=5, desired=5,  # Pods → 9, Percent → 5; Max change → 5
        reasons=("ScaleDownLimit",)),
    "down-select-min-of-two": Case(
        {"scale_down": {"stabilization_window_s": 0, "select_policy": "Min",
                        "policies": [pods(1), percent(50)]}},
        current=10, recommended=2,
        stabilized=2, rate_limited=9, desired=9,  # Min change → 9
        reasons=("ScaleDownLimit",)),
    "down-select-disabled": Case(
        {"scale_down": {"stabilization_window_s": 0, "select_policy": "Disabled"}},
        current=10, recommended=2,
        stabilized=2, rate_limited=10, desired=10,
        reasons=("ScaleDownLimit",)),
    "down-after-scale-up-in-period": Case(
        {"scale_down": {"stabilization_window_s": 0, "policies": [pods(2, 60)]}},
        current=8, recommended=1, up_events=[(-30, 3)],
        stabilized=1, rate_limited=3, desired=3,  # period start 8 − 3 = 5; 5 − 2 = 3
        reasons=("ScaleDownLimit",)),
    "down-percent-truncates": Case(
        {"scale_down": {"stabilization_window_s": 0, "policies": [percent(30)]}},
        current=5, recommended=1,
        stabilized=1, rate_limited=3, desired=3,  # int(5 × 0.7) = int(3.5) = 3
        reasons=("ScaleDownLimit",)),
    # --- min / max -----------------------------------------------------------------------
    "too-many-replicas": Case(
        {}, current=8, recommended=20, max_replicas=10,
        stabilized=20, rate_limited=16, desired=10,  # limit 16 > max 10
        reasons=("TooManyReplicas",)),
    "max-equal-to-limit-says-too-many": Case(
        {}, current=4, recommended=9, max_replicas=8,
        stabilized=9, rate_limited=8, desired=8,  # limit 8, max 8: not "max > limit"
        reasons=("TooManyReplicas",)),
    "too-few-replicas": Case(
        NO_WINDOW, current=4, recommended=0, min_replicas=2,
        stabilized=0, rate_limited=0, desired=2,  # 100 % may remove all 4; min is 2
        reasons=("TooFewReplicas",)),
    "within-range": Case(
        NO_WINDOW, current=4, recommended=3, min_replicas=2,
        stabilized=3, rate_limited=3, desired=3,
        reasons=("DesiredWithinRange",)),
    "no-change": Case(
        {}, current=4, recommended=4,
        stabilized=4, rate_limited=4, desired=4,
        reasons=("DesiredWithinRange",)),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_normalize(case: Case) -> None:
    behavior = Behavior.model_validate(case.behavior)
    state = PolicyState(_hist(case.recommendations), _hist(case.up_events),
                        _hist(case.down_events))
    n = normalize(case.current, case.recommended, case.min_replicas, case.max_replicas,
                  behavior, state, NOW)
    assert (n.stabilized, n.rate_limited, n.desired) == (
        case.stabilized, case.rate_limited, case.desired)
    assert n.reasons == case.reasons
    # the raw recommendation (not the stabilized one) is remembered for later windows
    assert n.state.recommendations[-1] == TimedChange(NOW, case.recommended)


# --- over time: the policy driven call by call ---------------------------------------------


def _spec(**kw: Any) -> AutoscalerSpec:
    base: dict[str, Any] = {"target": 1.0, "min_replicas": 1, "max_replicas": 100}
    return AutoscalerSpec.model_validate(base | kw)


def _obs(current: int, per_replica: float) -> Observation:
    return Observation(current, {f"r{i}": per_replica for i in range(current)}, 0, 0, 1.0)


def _drive(policy: HpaPolicy, steps: list[tuple[float, float]], current: int
           ) -> list[tuple[float, int]]:
    """(t, total demand in target units) per sync → (t, replicas) after each, applying every
    decision as the controller does (state.with_scale after a scale)."""
    state, out = PolicyState(), []
    for t, demand in steps:
        d = policy.decide(_obs(current, demand / current), state, t)
        state = d.state
        if d.desired != current:
            state = state.with_scale(t, current, d.desired)
            current = d.desired
        out.append((t, current))
    return out


def test_scale_up_rate_is_per_period_not_per_sync() -> None:
    # demand of 100 replicas from 1, syncing every 5 s with the default 15 s policies:
    # t=0: 1 → 5 (Pods 4 beats 100 %); t=5, 10: the period's budget is spent; t=15: the
    # event at t=0 is exactly 15 s old → 5 → 10; t=30 → 20; t=45 → 40
    got = _drive(HpaPolicy(_spec()), [(t, 100.0) for t in range(0, 50, 5)], current=1)
    assert got == [(0, 5), (5, 5), (10, 5), (15, 10), (20, 10), (25, 10), (30, 20),
                   (35, 20), (40, 20), (45, 40)]


def test_scale_down_waits_for_the_default_300s_window() -> None:
    # 4 replicas at the target until t=0, then demand for 1; 15 s syncs. The t=0
    # recommendation (4) stays in the window until t=300 (exclusive), then 4 → 1 at once
    # (100 % per 15 s)
    steps = [(-15.0, 4.0), (0.0, 4.0)] + [(float(t), 0.8) for t in range(15, 331, 15)]
    got = dict(_drive(HpaPolicy(_spec()), steps, current=4))
    assert got[285.0] == 4
    assert got[300.0] == 1


def test_scale_down_window_from_the_scenario() -> None:
    spec = _spec(behavior={"scale_down": {"stabilization_window_s": 20}}, interval_s=2)
    steps = [(-2.0, 4.0), (0.0, 4.0)] + [(float(t), 0.8) for t in range(2, 31, 2)]
    got = dict(_drive(HpaPolicy(spec), steps, current=4))
    assert got[18.0] == 4  # the last 4 (t=0) is 18 s old: still in the 20 s window
    assert got[20.0] == 1  # 20 s old: out; every other recommendation says 1


def test_flapping_load_is_held_by_the_window() -> None:
    # demand alternating 4 and 2 every sync: scale-down never wins inside the 300 s window
    steps = [(float(t), 4.0 if (t // 15) % 2 == 0 else 2.0) for t in range(0, 300, 15)]
    got = _drive(HpaPolicy(_spec()), steps, current=4)
    assert {n for _, n in got} == {4}


# --- reconcile cases and reasons -------------------------------------------------------------


@pytest.mark.parametrize(("current", "desired", "reason"), [
    (12, 10, "CurrentAboveMaxReplicas"),  # brought back without looking at metrics
    (1, 2, "CurrentBelowMinReplicas"),
    (0, 0, "ScalingDisabled"),  # the HPA leaves a target scaled to zero alone
], ids=["above-max", "below-min", "zero"])
def test_out_of_range_current(current: int, desired: int, reason: str) -> None:
    policy = HpaPolicy(_spec(min_replicas=2, max_replicas=10))
    obs = Observation(current, {}, 0, 0, 1.0)  # no metrics needed
    d = policy.decide(obs, PolicyState(), NOW)
    assert (d.desired, d.reason) == (desired, reason)
    assert d.recommended is None


def test_decision_reason_names_every_step() -> None:
    policy = HpaPolicy(_spec(max_replicas=5))
    d = policy.decide(_obs(2, 3.0), PolicyState(), NOW)  # ratio 3 × 2 ready = 6
    assert (d.recommended, d.stabilized, d.rate_limited, d.desired) == (6, 6, 6, 5)
    assert d.reason == "AboveTarget;TooManyReplicas"  # limit max(2+4, 2×2) = 6 > max 5
    with pytest.raises(ValueError):
        policy.decide(Observation(2, {}, 0, 2, 1.0), PolicyState(), NOW)


# --- defaults and spec bounds -----------------------------------------------------------------


def test_hpa_defaults_when_the_scenario_gives_none() -> None:
    b = _spec().behavior
    assert b.scale_up.stabilization_window_s == 0
    assert b.scale_up.select_policy == "Max"
    assert [(p.type, p.value, p.period_s) for p in b.scale_up.policies] == [
        ("Pods", 4, 15), ("Percent", 100, 15)]
    assert b.scale_down.stabilization_window_s == 300
    assert b.scale_down.select_policy == "Max"
    assert [(p.type, p.value, p.period_s) for p in b.scale_down.policies] == [
        ("Percent", 100, 15)]
    s = _spec()
    assert (s.interval_s, s.tolerance, s.policy, s.metric) == (15, 0.1, "hpa", "utilization")


def test_partial_rules_keep_the_other_defaults() -> None:
    b = _spec(behavior={"scale_down": {"stabilization_window_s": 20}}).behavior
    assert b.scale_down.stabilization_window_s == 20
    assert [(p.type, p.value) for p in b.scale_down.policies] == [("Percent", 100)]
    assert b.scale_up.stabilization_window_s == 0


@pytest.mark.parametrize("bad", [
    {"max_replicas": 2001},
    {"min_replicas": 5, "max_replicas": 4},
    {"interval_s": 0.1},
    {"target": 0},
    {"surprise": 1},
    {"behavior": {"scale_up": {"policies": []}}},
    {"behavior": {"scale_up": {"select_policy": "Sometimes"}}},
    {"behavior": {"scale_down": {"policies": [{"type": "Pods", "value": 0, "period_s": 15}]}}},
    {"behavior": {"scale_down": {"stabilization_window_s": 3601}}},
    {"behavior": {"scale_down": {"stabilizationWindowSeconds": 10}}},
    {"policy": "step", "behavior": {}},
    {"policy": "hpa", "step": {"cooldown_s": 10}},
    {"policy": "magic"},
    {"metric": "memory"},
    {"policy": "step", "step": {"steps": [{"lower": 0, "upper": 1, "change": 1},
                                          {"lower": 0.5, "change": 2}]}},
], ids=["max>2000", "min>max", "interval", "target0", "extra", "no-policies", "select",
        "value0", "window>1h", "camelCase", "behavior-not-hpa", "step-not-step",
        "unknown-policy", "unknown-metric", "overlapping-steps"])
def test_spec_rejects(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _spec(**bad)


def test_registry_is_alphabetical_and_matches_the_spec() -> None:
    assert list(POLICIES) == sorted(POLICIES)
    assert sorted([*POLICIES, *EXTERNAL_POLICIES]) == list(
        PolicyName.__args__)  # type: ignore[attr-defined]
    assert not set(POLICIES) & set(EXTERNAL_POLICIES)
    for name in POLICIES:
        spec = _spec(policy=name)
        assert make_policy(spec).name == name


# --- the other policies --------------------------------------------------------------------


def test_step_policy_steps_and_cooldown() -> None:
    policy = make_policy(_spec(policy="step", step={"cooldown_s": 30}))
    d = policy.decide(_obs(4, 1.7), PolicyState(), 0.0)  # breach 0.7 ∈ [0.5, 1.0) → +2
    assert (d.recommended, d.desired, d.reason) == (6, 6, "AboveTarget;DesiredWithinRange")
    st = d.state.with_scale(0.0, 4, 6)
    d = policy.decide(_obs(6, 2.5), st, 10.0)  # breach 1.5 → +4, but 10 s < 30 s cooldown
    assert (d.recommended, d.desired) == (10, 6)
    assert d.reason == "AboveTarget;Cooldown;DesiredWithinRange"
    d = policy.decide(_obs(6, 2.5), d.state, 30.0)  # cooldown over
    assert d.desired == 10
    st = d.state.with_scale(30.0, 6, 10)
    d = policy.decide(_obs(10, 1.05), st, 70.0)  # breach 0.05: no step
    assert (d.desired, d.reason) == (10, "NoStep;DesiredWithinRange")
    d = policy.decide(_obs(10, 0.5), d.state, 70.0)  # breach −0.5 < −0.3 → −1
    assert d.desired == 9


def test_target_tracking_cooldowns() -> None:
    policy = make_policy(_spec(policy="target-tracking", min_replicas=2,
                               target_tracking={"scale_out_cooldown_s": 30,
                                                "scale_in_cooldown_s": 100}))
    d = policy.decide(_obs(4, 1.5), PolicyState(), 0.0)  # ceil(1.5 × 4 / 1) = 6
    assert (d.desired, d.reason) == (6, "AboveTarget;DesiredWithinRange")
    st = d.state.with_scale(0.0, 4, 6)
    d = policy.decide(_obs(6, 1.5), st, 20.0)  # 9 wanted; 20 s < 30 s since the scale-out
    assert (d.recommended, d.desired) == (9, 6)
    assert "ScaleOutCooldown" in d.reason
    d = policy.decide(_obs(6, 0.2), d.state, 50.0)  # 2 wanted; 50 s < 100 s since a scale
    assert (d.recommended, d.desired) == (2, 6)
    assert "ScaleInCooldown" in d.reason
    d = policy.decide(_obs(6, 0.2), d.state, 100.0)
    assert (d.desired, d.reason) == (2, "BelowTarget;DesiredWithinRange")
    d = policy.decide(_obs(6, 0.1), d.state, 101.0)  # ceil(0.6) = 1 → min 2
    assert (d.desired, d.reason.split(";")[-1]) == (2, "TooFewReplicas")
