"""`harness calibrate`, the pure part: from per-rate measurements of ONE replica, the
highest rate it sustains within the SLO, and which rate to try next.

The measuring part (deploy one replica, hold each probe rate for a while, record) lives
with the run loop; it hands each probe's per-second rows to `measurement_from_seconds`,
asks `next_probe` for the next rate until it returns None, and stores
`max_rate_within_slo(...).capacity_rps_per_replica` in the scenario's `calibration`.

A probe rate *passes* when, over its measured seconds, the merged p95 latency is within
`slo.p95_ms`, the error rate within `slo.error_rate`, and the replica actually served at
least `min_served_fraction` of the rate (a load generator that could not send, or a
replica that silently drops, is not "sustaining" the rate). Capacity is monotone in
reality but noisy in measurement, so we are conservative: the capacity is the highest
passing rate *below the lowest failing rate* — a lucky pass above a failure is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from harness.analysis.latency import window_latency
from harness.analysis.rundata import SloSpec

MIN_SERVED_FRACTION = 0.95


@dataclass(frozen=True)
class RateMeasurement:
    rate_rps: float  # offered
    p95_ms: float
    error_rate: float
    served_rps: float  # ok requests per second
    seconds: int = 0


@dataclass(frozen=True)
class Verdict:
    measurement: RateMeasurement
    passed: bool
    reason: str


@dataclass
class CalibrationResult:
    capacity_rps_per_replica: float | None
    verdicts: list[Verdict] = field(default_factory=list)
    reason: str = ""


def measurement_from_seconds(ts: pd.DataFrame, rate_rps: float,
                             skip_s: int = 0) -> RateMeasurement:
    """Summarise one probe's timeseries rows (columns of timeseries.csv), skipping its
    first `skip_s` seconds (queues settling after the rate change)."""
    rows = ts.sort_values("t_s").iloc[skip_s:]
    ok = float(rows["ok_rps"].fillna(0).sum())
    failed = float(rows["failed_rps"].fillna(0).sum())
    n = len(rows)
    lat = window_latency(rows)
    return RateMeasurement(rate_rps=float(rate_rps), p95_ms=lat.p95_ms,
                           error_rate=failed / (ok + failed) if ok + failed else math.nan,
                           served_rps=ok / n if n else 0.0, seconds=n)


def judge(m: RateMeasurement, slo: SloSpec,
          min_served_fraction: float = MIN_SERVED_FRACTION) -> Verdict:
    if m.rate_rps <= 0:
        return Verdict(m, False, "rate must be > 0")
    if math.isnan(m.p95_ms) or math.isnan(m.error_rate):
        return Verdict(m, False, "no completed requests")
    if m.error_rate > slo.error_rate:
        return Verdict(m, False, f"error rate {m.error_rate:.3%} > {slo.error_rate:.3%}")
    if m.p95_ms > slo.p95_ms:
        return Verdict(m, False, f"p95 {m.p95_ms:.0f} ms > {slo.p95_ms:.0f} ms")
    if m.served_rps < min_served_fraction * m.rate_rps:
        return Verdict(m, False, f"served {m.served_rps:.1f} of {m.rate_rps:.1f} req/s")
    return Verdict(m, True, "within SLO")


def max_rate_within_slo(measurements: Sequence[RateMeasurement], slo: SloSpec,
                        min_served_fraction: float = MIN_SERVED_FRACTION
                        ) -> CalibrationResult:
    verdicts = [judge(m, slo, min_served_fraction)
                for m in sorted(measurements, key=lambda m: m.rate_rps)]
    lowest_fail = min((v.measurement.rate_rps for v in verdicts if not v.passed),
                      default=math.inf)
    passes = [v.measurement.rate_rps for v in verdicts
              if v.passed and v.measurement.rate_rps < lowest_fail]
    if not passes:
        return CalibrationResult(None, verdicts, "no probe rate was sustained within the SLO")
    cap = max(passes)
    why = (f"{cap:g} req/s passed; {lowest_fail:g} req/s failed" if math.isfinite(lowest_fail)
           else f"{cap:g} req/s passed; no higher rate was tried")
    return CalibrationResult(cap, verdicts, why)


def next_probe(measurements: Sequence[RateMeasurement], slo: SloSpec, *,
               start_rps: float, max_rps: float, resolution_rps: float,
               min_served_fraction: float = MIN_SERVED_FRACTION) -> float | None:
    """Next rate to try, or None when the capacity is pinned down to `resolution_rps`.

    Doubling from `start_rps` until a rate fails (capped at `max_rps`), then bisection
    between the highest pass and the lowest failure; halving when even the first fails.
    """
    if resolution_rps <= 0 or start_rps <= 0 or max_rps <= 0:
        raise ValueError("rates and resolution must be > 0")
    if not measurements:
        return min(start_rps, max_rps)
    res = max_rate_within_slo(measurements, slo, min_served_fraction)
    fails = [v.measurement.rate_rps for v in res.verdicts if not v.passed]
    lowest_fail = min(fails, default=math.inf)
    best = res.capacity_rps_per_replica
    if best is None:
        nxt = lowest_fail / 2.0
        return nxt if nxt >= resolution_rps else None
    if not math.isfinite(lowest_fail):
        return None if best >= max_rps else min(best * 2.0, max_rps)
    if lowest_fail - best <= resolution_rps:
        return None
    return (best + lowest_fail) / 2.0
