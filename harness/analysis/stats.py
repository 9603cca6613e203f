"""Intervals and tests over repetitions that keep their nominal error rates.

Why not a percentile bootstrap everywhere: with 2–5 trials it covers the mean far less
often than it claims (with 2 trials its interval is [min, max], which covers the mean half
the time). So:

* 2–29 valid trials: Student-t interval on the mean, mean ± t(1−α/2, n−1)·s/√n. Exact for
  normal data; the usual choice for few repetitions.
* 30 or more: the *expanded* percentile bootstrap (Hesterberg 2015, "What teachers should
  know about the bootstrap", §4.2): percentiles at α′/2 and 1−α′/2 with
  α′ = 2·Φ(−√(n/(n−1))·t(1−α/2, n−1)), which undoes the percentile bootstrap's
  narrowness bias and does not assume normal data.
* fewer than 2: no interval ("n too small").

Significance between two sets of trials is Welch's t-test (unequal variances), as pyperf's
`compare_to` uses a t-test — not "the intervals do not overlap", which is a far stricter
test than its nominal level.

The t distribution is computed here (regularised incomplete beta by Lentz's continued
fraction, Numerical Recipes §6.4) so the harness needs no SciPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

METHOD_T = "student-t"
METHOD_BOOTSTRAP = "bootstrap-expanded"
METHOD_NONE = "n too small"
BOOTSTRAP_FROM_N = 30
DEFAULT_RESAMPLES = 2000
SIGNIFICANCE = 0.05

METHOD_TEXT = {
    METHOD_T: "Student-t on the mean (2–29 trials)",
    METHOD_BOOTSTRAP: "expanded percentile bootstrap (≥ 30 trials)",
    METHOD_NONE: "n too small (fewer than 2 trials): no interval",
}


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
          + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(ln)
    # the continued fraction converges fast only on one side of the mode
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` (possibly fractional) degrees of freedom."""
    if math.isnan(t) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@lru_cache(maxsize=256)  # the same few (p, n − 1) pairs come back for every metric
def t_ppf(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on t_sf: slow-ish but exact to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    q = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > q:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    method: str


def t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    n = len(x)
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * float(np.std(x, ddof=1)) / math.sqrt(n)
    m = float(np.mean(x))
    return m - half, m + half


def expanded_alpha(n: int, confidence: float = 0.95) -> float:
    """α′ of the expanded percentile bootstrap for n observations."""
    t = t_ppf(0.5 + confidence / 2.0, n - 1)
    return 2.0 * normal_cdf(-math.sqrt(n / (n - 1.0)) * t)


def bootstrap_interval(x: np.ndarray, confidence: float = 0.95, *,
                       n_resamples: int = DEFAULT_RESAMPLES,
                       rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Expanded percentile bootstrap of the mean (see the module docstring)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    means = x[idx].mean(axis=1)
    a = expanded_alpha(len(x), confidence) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return float(lo), float(hi)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95, *,
                  seed: int = 0, n_resamples: int = DEFAULT_RESAMPLES) -> Interval:
    """The interval of the mean for these trials (NaNs dropped), with its method."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return Interval(math.nan, math.nan, METHOD_NONE)
    if len(x) < BOOTSTRAP_FROM_N:
        lo, hi = t_interval(x, confidence)
        return Interval(lo, hi, METHOD_T)
    if np.all(x == x[0]):
        return Interval(float(x[0]), float(x[0]), METHOD_BOOTSTRAP)
    lo, hi = bootstrap_interval(x, confidence, n_resamples=n_resamples,
                                rng=np.random.default_rng(seed))
    return Interval(lo, hi, METHOD_BOOTSTRAP)


def welch_p(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float,
            n_b: int) -> float:
    """Two-sided p-value of Welch's t-test from summary figures; NaN when either side has
    fewer than 2 trials (the noise is unknown)."""
    if n_a < 2 or n_b < 2 or any(math.isnan(v) for v in (mean_a, mean_b, sd_a, sd_b)):
        return math.nan
    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    if va + vb == 0.0:
        # no spread on either side: identical means are the same, different ones are not
        return 1.0 if mean_a == mean_b else 0.0
    t = (mean_b - mean_a) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va * va / (n_a - 1) if va else 0.0)
                           + (vb * vb / (n_b - 1) if vb else 0.0))
    return min(1.0, 2.0 * t_sf(abs(t), df))


def welch_p_samples(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    return welch_p(_mean(x), _sd(x), len(x), _mean(y), _sd(y), len(y))


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if len(v) else math.nan


def _sd(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
