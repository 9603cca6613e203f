"""Elasticity metrics of the SPEC Research Group (Cloud Working Group).

Sources: N. Herbst, S. Kounev, R. Reussner, "Elasticity in Cloud Computing: What It Is,
and What It Is Not", ICAC 2013; N. Herbst et al., "Ready for Rain? A View from SPEC
Research on the Future of Cloud Metrics", SPEC-RG-2016-01 (2016); N. Herbst et al.,
"Quantifying Cloud Performance and Dependability: Taxonomy, Metric Design, and Emerging
Challenges", ACM TOMPECS 3(4), 2018 (section "Elasticity").

Given the demand d_t (resource units the load needs) and the supply s_t (resource units
provisioned) sampled every Δt over a period T:

  accuracy_U  θ_U = 100/T · Σ_t max(d_t − s_t, 0) / max(d_t, ε) · Δt   [%]
  accuracy_O  θ_O = 100/T · Σ_t max(s_t − d_t, 0) / max(d_t, ε) · Δt   [%]
  timeshare_U τ_U = 100/T · Σ_t max(sgn(d_t − s_t), 0) · Δt            [%]
  timeshare_O τ_O = 100/T · Σ_t max(sgn(s_t − d_t), 0) · Δt            [%]
  jitter      j   = (E_S − E_D) / T                                    [adaptations / time]

where E_S counts supply adaptations (changes of s_t) and E_D demand changes. j < 0: the
system adapts too sluggishly (misses demand changes), j > 0: it oscillates. The 2015
BUNGEE paper (Herbst et al., SEAMS 2015) states accuracy un-normalised, as the average
number of missing / surplus resource units; we report that too (`*_replicas`).

Here the resource unit is one replica: d_t = ceil(offered_rps_t / capacity) with the
calibrated per-replica capacity (the max rate one replica sustains within the SLO), and
s_t = replicas_ready. ε: we normalise by max(d_t, 1) — a service that is up needs at least
one replica, and it keeps θ_O finite in idle seconds. Jitter is given per minute.
"""

from __future__ import annotations

import math

import numpy as np

ELASTICITY_KEYS = (
    "elasticity_accuracy_u_pct", "elasticity_accuracy_o_pct",
    "elasticity_timeshare_u_pct", "elasticity_timeshare_o_pct",
    "elasticity_jitter_per_min",
    "elasticity_under_replicas", "elasticity_over_replicas",
)


def demand_replicas(offered_rps: np.ndarray, capacity_rps_per_replica: float) -> np.ndarray:
    """d_t = ceil(offered / capacity); NaN offered → 0. A hair of tolerance keeps
    240 / 80 at 3 despite floating point."""
    if not capacity_rps_per_replica or capacity_rps_per_replica <= 0:
        raise ValueError("capacity_rps_per_replica must be > 0")
    x = np.nan_to_num(np.asarray(offered_rps, dtype=float), nan=0.0)
    return np.ceil(np.maximum(x, 0.0) / capacity_rps_per_replica - 1e-9).clip(min=0)


def _changes(x: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(x) != 0)) if len(x) > 1 else 0


def elasticity_metrics(demand: np.ndarray, supply: np.ndarray,
                       dt_s: float = 1.0) -> dict[str, float]:
    """The SPEC RG metrics over equally spaced samples (see module docstring).

    NaN supply samples (an unrecorded second) are carried forward from the last known
    value (0 before any). Empty input → every metric NaN.
    """
    d = np.asarray(demand, dtype=float)
    s = np.asarray(supply, dtype=float)
    if d.shape != s.shape:
        raise ValueError("demand and supply must have the same length")
    if len(d) == 0:
        return dict.fromkeys(ELASTICITY_KEYS, math.nan)
    s = _ffill(s)
    d = np.nan_to_num(d, nan=0.0)
    total_t = len(d) * dt_s
    under = np.maximum(d - s, 0.0)
    over = np.maximum(s - d, 0.0)
    norm = np.maximum(d, 1.0)
    return {
        "elasticity_accuracy_u_pct": 100.0 * float(np.sum(under / norm) * dt_s) / total_t,
        "elasticity_accuracy_o_pct": 100.0 * float(np.sum(over / norm) * dt_s) / total_t,
        "elasticity_timeshare_u_pct": 100.0 * float(np.sum(d > s) * dt_s) / total_t,
        "elasticity_timeshare_o_pct": 100.0 * float(np.sum(s > d) * dt_s) / total_t,
        "elasticity_jitter_per_min": (_changes(s) - _changes(d)) / (total_t / 60.0),
        "elasticity_under_replicas": float(np.sum(under) * dt_s) / total_t,
        "elasticity_over_replicas": float(np.sum(over) * dt_s) / total_t,
    }


def _ffill(x: np.ndarray) -> np.ndarray:
    out = x.copy()
    last = 0.0
    for i, v in enumerate(out):
        if np.isnan(v):
            out[i] = last
        else:
            last = v
    return out
