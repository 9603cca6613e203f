"""Table tests of the HPA replica calculation for a per-replica (AverageValue) metric.

In the style of kubernetes pkg/controller/podautoscaler/replica_calculator_test.go: each row
is (controller arguments | world state | expected), and the comment shows the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.autoscale.hpa import ceil_decimal, hpa_replicas, replica_calculation


@dataclass(frozen=True)
class Case:
    # controller arguments
    current: int
    target: float
    # world state
    ready_values: list[float]
    unready: int = 0
    missing: int = 0
    tolerance: float = 0.1
    # expected
    expected: int = 0
    reason: str = field(default="")


CASES = {
    # --- no unready, no missing: ceil(ratio × ready) unless within tolerance -------------
    "scale-up": Case(3, 15, [20, 10, 30],
                     expected=4, reason="AboveTarget"),  # mean 20/15 = 1.333; ceil(1.333×3) = 4
    "scale-down": Case(5, 20, [12, 12, 12, 12, 12],
                       expected=3, reason="BelowTarget"),  # 12/20 = 0.6; ceil(0.6×5) = 3
    "within-tolerance-above": Case(3, 20, [20, 21, 21],
                                   expected=3, reason="WithinTolerance"),  # 1.033: |1−r| ≤ 0.1
    "within-tolerance-below": Case(4, 0.6, [0.55] * 4,
                                   expected=4, reason="WithinTolerance"),  # 0.917
    "just-outside-tolerance": Case(4, 0.6, [0.7] * 4,
                                   expected=5, reason="AboveTarget"),  # 1.167; ceil(4.67) = 5
    "tolerance-zero": Case(4, 0.6, [0.62] * 4, tolerance=0.0,
                           expected=5, reason="AboveTarget"),  # 1.033; ceil(4.13) = 5
    "tolerance-wide": Case(4, 0.6, [0.9] * 4, tolerance=0.6,
                           expected=4, reason="WithinTolerance"),  # 1.5: |1−1.5| = 0.5 ≤ 0.6
    "uses-ready-count-not-current": Case(5, 0.6, [1.2, 1.2, 1.2],
                                         expected=6, reason="AboveTarget"),  # 2 × 3 ready = 6
    "whole-ratio-adds-no-replica": Case(3, 0.05, [0.1, 0.1, 0.1],
                                        expected=6, reason="AboveTarget"),
    # ^ 2 × 3 = 6 (float64 says 6.000000000000002, ceil would say 7)
    "scale-to-one": Case(4, 0.6, [0.1] * 4,
                         expected=1, reason="BelowTarget"),  # 0.167 × 4 = 0.67 → 1
    "idle-recommends-zero": Case(3, 0.6, [0, 0, 0],
                                 expected=0, reason="BelowTarget"),  # min_replicas clamps later
    # --- missing metrics: target on a scale-down, 0 on a scale-up ------------------------
    "missing-scale-up-as-zero": Case(4, 1, [2, 2, 2], missing=1,
                                     expected=6, reason="AboveTarget"),  # (6+0)/4 = 1.5; ×4 = 6
    "missing-scale-down-as-target": Case(4, 0.6, [0.3, 0.3, 0.3], missing=1,
                                         expected=3, reason="BelowTarget"),
    # ^ 0.5 < 1: fill 0.6 → (0.9+0.6)/4 = 0.375 → 0.625 × 4 = 2.5 → 3 (ready only: 2)
    "missing-flips-direction": Case(2, 1, [1.2], missing=1,
                                    expected=2, reason="FillInFlipsDirection"),
    # ^ 1.2 says up; with the missing one at 0: 0.6 says down → keep 2
    "missing-lands-in-band": Case(2, 1, [0.8], missing=1,
                                  expected=2, reason="FillInWithinTolerance"),
    # ^ 0.8 says down; with the missing one at target: 0.9, within 0.1 → keep 2
    "missing-at-exact-target": Case(3, 0.6, [0.6, 0.6], missing=1,
                                    expected=3, reason="FillInWithinTolerance"),  # ratio 1
    # --- unready replicas: 0 on a scale-up, left out on a scale-down ---------------------
    "unready-scale-up-as-zero": Case(3, 1, [3, 3], unready=1,
                                     expected=6, reason="AboveTarget"),  # (3+3+0)/3 = 2; ×3 = 6
    "unready-flips-direction": Case(4, 1, [1.5], unready=3,
                                    expected=4, reason="FillInFlipsDirection"),
    # ^ 1.5 says up; [1.5,0,0,0] = 0.375 says down → keep 4 (ready alone: ceil(1.5) = 2!)
    "unready-lands-in-band": Case(2, 1, [1.8], unready=1,
                                  expected=2, reason="FillInWithinTolerance"),  # [1.8, 0] = 0.9
    "unready-ignored-on-scale-down": Case(4, 0.6, [0.3, 0.3], unready=2,
                                          expected=1, reason="BelowTarget"),  # 0.5 × 2 ready = 1
    "unready-and-missing-scale-up": Case(5, 1, [2, 2, 2], missing=1, unready=1,
                                         expected=6, reason="AboveTarget"),
    # ^ [2,2,2,0,0] = 1.2 × 5 = 6
    "scale-up-that-would-shrink": Case(6, 1, [2, 2], unready=1,
                                       expected=6, reason="FillInFlipsDirection"),
    # ^ [2,2,0] = 1.33 > 1 but ceil(1.33×3) = 4 < 6 current → keep 6
    "scale-down-that-would-grow": Case(2, 1, [0.5, 0.5, 0.5], missing=1,
                                       expected=2, reason="FillInFlipsDirection"),
    # ^ [.5,.5,.5,1] = 0.625 < 1 but ceil(0.625×4) = 3 > 2 current → keep 2
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_hpa_replicas(case: Case) -> None:
    got = hpa_replicas(case.current, case.ready_values, case.unready, case.missing,
                       case.target, case.tolerance)
    assert got == case.expected
    assert replica_calculation(case.current, case.ready_values, case.unready, case.missing,
                               case.target, case.tolerance) == (case.expected, case.reason)


def test_default_tolerance_is_the_hpas() -> None:
    # 1.09 stays (|1−1.09| ≤ 0.1), 1.2 moves: ceil(1.2 × 5) = 6
    assert hpa_replicas(5, [1.09] * 5, 0, 0, 1.0) == 5
    assert hpa_replicas(5, [1.2] * 5, 0, 0, 1.0) == 6


@pytest.mark.parametrize(("ready_values", "unready", "missing", "target"), [
    ([], 0, 0, 1.0),  # nothing at all
    ([], 2, 0, 1.0),  # only unready replicas
    ([], 0, 3, 1.0),  # ready, but none reported
    ([1.0], 0, 0, 0.0),  # a target of zero has no ratio
], ids=["nothing", "only-unready", "only-missing", "zero-target"])
def test_no_metrics_is_an_error(ready_values: list[float], unready: int, missing: int,
                                target: float) -> None:
    with pytest.raises(ValueError):
        hpa_replicas(3, ready_values, unready, missing, target)


@pytest.mark.parametrize(("x", "expected"), [
    (4.000000000000001, 4),  # float noise over a whole number
    (4.0, 4),
    (4.001, 5),  # a real milli-unit more
    (0.0, 0),
    (2.5, 3),
], ids=["noise", "whole", "milli-more", "zero", "half"])
def test_ceil_decimal(x: float, expected: int) -> None:
    assert ceil_decimal(x) == expected
