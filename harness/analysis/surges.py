"""Load surges found in the offered rate itself, and disturbances marked by the scenario.

A load step between stages is already a disturbance (harness.analysis.disturbances reads
it from the stage events). A trace has no stages, and a ramp reaches its peak long after
its stage began, so the harness also looks at the per-second *offered* rate, whatever
produced it (stages, ramps, a trace):

A **surge** is a rise of the rate from a *base* (its value in some second) to at least
``base × (1 + rise)`` and at least ``base + min_rise_rps`` within ``within_s`` seconds.
It starts (t0) right after the last second of the trough before the rise: per-second rows
cover [t, t+1), so a flat 60 req/s that climbs from t=15 on has its last 60 in row 14
and t0 = 15 (not the first second whose look-ahead reaches the peak).
Its **peak** is the last new maximum of the rate reached less than ``within_s`` after the
previous one: a step peaks at once, a long ramp at its end, a flash crowd at its top.
The next surge is searched for after the peak.

Scenario keys (docs/scenario.md): ``disturbances.surge: {rise, within_s, min_rise_rps}``
(``null`` turns surge detection off) and ``disturbances.marks: [{name, at_s}]`` for
disturbances the rate does not show (a deploy, a config change).

Pure functions over plain sequences: the table tests in tests/test_surges.py feed them
hand-written rates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A new maximum must beat the previous one by this share of the rise so far, or a
# decaying trace with 0.1 req/s of noise would keep moving its peak.
_NEW_MAX_SHARE = 0.01


@dataclass(frozen=True)
class SurgeRule:
    """The scenario's `disturbances.surge` (defaults mirror harness.scenario.models)."""

    rise: float = 0.5
    within_s: float = 30.0
    min_rise_rps: float = 5.0

    @classmethod
    def from_scenario(cls, scenario: Mapping[str, Any] | None) -> SurgeRule | None:
        """None when the scenario turns surges off (`disturbances.surge: null`)."""
        dist = (scenario or {}).get("disturbances")
        if not isinstance(dist, Mapping):
            return cls()
        if "surge" in dist and dist["surge"] is None:
            return None
        s = dist.get("surge") or {}
        return cls(rise=float(s.get("rise", cls.rise)),
                   within_s=float(s.get("within_s", cls.within_s)),
                   min_rise_rps=float(s.get("min_rise_rps", cls.min_rise_rps)))


@dataclass(frozen=True)
class Surge:
    t0_s: int
    peak_s: int
    base_rps: float
    peak_rps: float


@dataclass(frozen=True)
class Mark:
    name: str
    at_s: float


def marks_of(scenario: Mapping[str, Any] | None) -> list[Mark]:
    dist = (scenario or {}).get("disturbances")
    if not isinstance(dist, Mapping):
        return []
    return [Mark(str(m["name"]), float(m["at_s"])) for m in dist.get("marks") or []]


def _clean(rates: Sequence[float]) -> list[float]:
    out: list[float] = []
    for v in rates:
        f = float(v) if v is not None else math.nan
        out.append((out[-1] if out else 0.0) if math.isnan(f) else f)
    return out


def _rises(base: float, value: float, rule: SurgeRule) -> bool:
    return value >= base * (1.0 + rule.rise) and value - base >= rule.min_rise_rps


def find_surges(rates: Sequence[float], rule: SurgeRule, start_s: int = 0) -> list[Surge]:
    """Surges in `rates` (one value per second; rates[i] is second start_s + i).

    An unrecorded second (NaN) takes the previous second's rate: a gap read as 0 req/s
    would make the next recorded second look like a surge.
    """
    x = _clean(rates)
    n, w = len(x), max(1, math.ceil(rule.within_s))
    out: list[Surge] = []
    t = 0
    while t < n:
        cross = next((j for j in range(t + 1, min(n, t + w + 1)) if _rises(x[t], x[j], rule)),
                     None)
        if cross is None:
            t += 1
            continue
        # the last second of the trough between t and the crossing; the rise starts after it
        low = min(x[t:cross])
        trough = max(i for i in range(t, cross) if x[i] == low)
        t0 = trough + 1
        peak, last_new = cross, cross
        for j in range(cross + 1, n):
            if j - last_new > w:
                break
            if x[j] > x[peak] + _NEW_MAX_SHARE * max(x[peak] - low, 1e-9):
                peak = last_new = j
        out.append(Surge(t0_s=start_s + t0, peak_s=start_s + peak, base_rps=low,
                         peak_rps=x[peak]))
        t = peak + 1
    return out
