"""Intervals that mean what they say: simulated coverage on normal samples.

Each check draws many samples of n trials from a normal distribution with a known mean
(fixed seeds: the figures are the same on every run) and counts how often the interval
harness.analysis.stats.mean_interval gives covers that mean. Nominal is 95 %; we ask for
within 2 points. With 20,000 samples the binomial standard error is 0.15 points, so a
correct method passes with a wide margin and a wrong one (the old percentile bootstrap:
~75 % at n = 3) fails by far — the last test shows this check can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.analysis.aggregate import aggregate
from harness.analysis.stats import (
    BOOTSTRAP_FROM_N,
    METHOD_BOOTSTRAP,
    METHOD_NONE,
    METHOD_T,
    betainc,
    mean_interval,
    t_ppf,
    t_sf,
    welch_p,
    welch_p_samples,
)

MU, SIGMA = 100.0, 15.0
NOMINAL = 0.95
TOLERANCE = 0.02


def coverage(n: int, samples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    data = rng.normal(MU, SIGMA, size=(samples, n))
    hits = 0
    for i, row in enumerate(data):
        ci = mean_interval(row, seed=i)
        hits += ci.lo <= MU <= ci.hi
    return hits / samples


# table test of the t distribution against published values (e.g. NIST/SEMATECH e-Handbook
# 1.3.6.7.2, "Critical values of the Student's t distribution")
@pytest.mark.parametrize(("p", "df", "quantile"), [
    (0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 10, 2.228),
    (0.975, 29, 2.045), (0.95, 5, 2.015), (0.995, 3, 5.841), (0.975, 1000, 1.962),
])
def test_t_quantiles_match_the_tables(p: float, df: int, quantile: float) -> None:
    assert t_ppf(p, df) == pytest.approx(quantile, abs=1e-3)
    assert t_sf(t_ppf(p, df), df) == pytest.approx(1 - p, abs=1e-9)
    assert t_ppf(1 - p, df) == pytest.approx(-quantile, abs=1e-3)


def test_incomplete_beta_edges() -> None:
    assert betainc(2.0, 3.0, 0.0) == 0.0 and betainc(2.0, 3.0, 1.0) == 1.0
    # I_x(1, 1) = x and I_x(a, b) = 1 − I_(1−x)(b, a)
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)
    assert betainc(2.5, 0.5, 0.7) == pytest.approx(1 - betainc(0.5, 2.5, 0.3))


@pytest.mark.parametrize(("n", "seed"), [(2, 2), (3, 3), (5, 5)])
def test_student_t_covers_95_percent_with_few_trials(n: int, seed: int) -> None:
    assert mean_interval(np.arange(n, dtype=float)).method == METHOD_T
    cov = coverage(n, 20_000, seed)
    print(f"coverage n={n}: {100 * cov:.2f} %")
    assert abs(cov - NOMINAL) <= TOLERANCE, cov


def test_bootstrap_covers_95_percent_from_30_trials() -> None:
    n = BOOTSTRAP_FROM_N
    assert mean_interval(np.arange(n, dtype=float)).method == METHOD_BOOTSTRAP
    # 2,000 samples × 2,000 resamples: standard error 0.5 points, still well inside 2
    cov = coverage(n, 2_000, 30)
    print(f"coverage bootstrap n={n}: {100 * cov:.2f} %")
    assert abs(cov - NOMINAL) <= TOLERANCE, cov


def test_one_trial_has_no_interval() -> None:
    ci = mean_interval([42.0])
    assert ci.method == METHOD_NONE and math.isnan(ci.lo) and math.isnan(ci.hi)


def test_welch_false_positive_rate_is_at_most_nominal() -> None:
    """Two sets of 3 trials from the same distribution: 'significant' at p < 0.05 must
    happen at most ~5 % of the time (Welch is slightly conservative with so few)."""
    rng = np.random.default_rng(18)
    a = rng.normal(MU, SIGMA, size=(20_000, 3))
    b = rng.normal(MU, SIGMA, size=(20_000, 3))
    fp = sum(welch_p_samples(x, y) < 0.05 for x, y in zip(a, b, strict=True)) / len(a)
    print(f"Welch false positives 3 vs 3: {100 * fp:.2f} %")
    assert 0.02 <= fp <= 0.05 + TOLERANCE, fp
    # and it finds a real shift of 2 σ often (power), so it is not just always silent
    c = rng.normal(MU + 2 * SIGMA, SIGMA, size=(2_000, 5))
    d = rng.normal(MU, SIGMA, size=(2_000, 5))
    power = sum(welch_p_samples(x, y) < 0.05 for x, y in zip(c, d, strict=True)) / len(c)
    assert power > 0.7, power


def test_welch_p_edges() -> None:
    # textbook example: [1,2,3] vs [4,5,6]: t = 3.674, df = 4, p = 0.0213
    assert welch_p_samples([1, 2, 3], [4, 5, 6]) == pytest.approx(0.02131, abs=1e-4)
    assert math.isnan(welch_p(1.0, 0.5, 1, 2.0, 0.5, 3))  # one trial: noise unknown
    assert welch_p(5.0, 0.0, 3, 5.0, 0.0, 3) == 1.0
    assert welch_p(5.0, 0.0, 3, 6.0, 0.0, 3) == 0.0


def test_aggregate_names_the_method() -> None:
    import pandas as pd

    summary = pd.DataFrame({"run_id": "r", "strategy": ["a"] * 3 + ["b"] + ["c"] * 30,
                            "trial": [1, 2, 3, 1, *range(1, 31)],
                            "p95_ms": list(np.linspace(100, 130, 34))})
    agg = aggregate(summary).set_index("strategy")
    assert agg.loc["a", "ci_method"] == METHOD_T
    assert agg.loc["b", "ci_method"] == METHOD_NONE
    assert agg.loc["c", "ci_method"] == METHOD_BOOTSTRAP


def test_the_check_can_fail_the_old_percentile_bootstrap_undercovers() -> None:
    """The plain percentile bootstrap the harness used before, at n = 3: far below 95 %,
    so the coverage check above would have caught it."""
    rng = np.random.default_rng(3)
    data = rng.normal(MU, SIGMA, size=(4_000, 3))
    hits = 0
    for i, row in enumerate(data):
        r = np.random.default_rng(i)
        means = row[r.integers(0, 3, size=(1000, 3))].mean(axis=1)
        lo, hi = np.quantile(means, [0.025, 0.975])
        hits += lo <= MU <= hi
    cov = hits / len(data)
    print(f"old percentile bootstrap n=3: {100 * cov:.2f} %")
    assert cov < NOMINAL - 0.10
