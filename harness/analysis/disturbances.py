"""Disturbances of one trial, found in its events (docs/architecture.md, "Vocabulary": "an event
the system must
absorb: a load step/spike or a fault").

* A `load_stage` event whose rate (column `rps`, or `users` in the closed model) is
  higher than the previous stage's is a load disturbance. It is a **spike** when the
  *next* stage goes back down, else a **step** (the next stage is taken from the
  scenario when it lists stages, so a trial cut short names its spike the same way).
  The first stage is compared with the warm-up rate when a warm-up stage event (t < 0)
  exists, else it is the start of the load, not a disturbance.
* A `fault` event is a disturbance named after its `action` (crash, kill, pause). The
  events of one injection (one per victim replica) within 1 s of each other and with
  the same action are one disturbance. Events recording a failed or skipped injection
  (`outcome` error / skipped) are not disturbances: nothing happened to the system.
* A **surge** is a rise of the per-second offered rate (harness.analysis.surges), found
  whatever produced the load (a trace, a ramp). A surge whose rise contains the start
  of a load step/spike is that step, not a second disturbance.
* A **mark** is a disturbance the scenario names (`disturbances.marks`); its name is the
  one given.

Every disturbance has a *peak* (`peak_s`): the surge's peak, the end of a step's ramp,
else its t0. It counts as recovered only once the SLO also held for stable_s past
its peak (harness.analysis.recovery), so good seconds early in a rise are no recovery.

Names are stable across trials and runs of one scenario, so summary columns line up:
``<kind>_t<seconds>``, e.g. ``spike_t30``, ``crash_t95``. The seconds are the planned
time from the scenario (the stage's start, the fault's `at_s`) when the event lies within
2 s of one, else the event's time rounded; a second disturbance of the same kind in the
same second gets a ``_2`` suffix. Summary columns are ``recovery_s_<name>`` etc.

The *window* of a disturbance, over which its failures and violation seconds are counted
and within which a scale-up counts as its reaction, runs from its t0 to the next
disturbance's t0 (or the trial's end).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.analysis.surges import SurgeRule, find_surges, marks_of

LOAD_KINDS = ("spike", "step", "surge")
FAULT_ACTIONS = ("crash", "kill", "pause")
_SNAP_S = 2.0
_GROUP_S = 1.0


@dataclass(frozen=True)
class Disturbance:
    name: str
    kind: str  # spike | step | crash | kill | pause | <other fault action>
    t0_s: float
    end_s: float  # end of its window (next disturbance or trial end)
    detail: str = ""
    replicas: tuple[str, ...] = ()
    peak_s: float | None = None  # None: t0 (a fault, a mark)

    @property
    def peak(self) -> float:
        return self.t0_s if self.peak_s is None else max(self.t0_s, self.peak_s)

    @property
    def is_load(self) -> bool:
        return self.kind in LOAD_KINDS


def planned_times(scenario: Mapping[str, Any] | None) -> dict[str, list[float]]:
    """Stage starts and fault times of the scenario (for stable names)."""
    scenario = scenario or {}
    load = scenario.get("load") or {}
    starts, t = [], 0.0
    for st in load.get("stages") or []:
        starts.append(t)
        t += float(st.get("duration_s", 0) or 0)
    faults = [float(f.get("at_s", 0)) for f in scenario.get("faults") or []]
    return {"load": starts, "fault": faults}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _rate(row: Any) -> float | None:
    """A stage event's rate: `rps` (open model) or `users` (closed)."""
    r = _num(getattr(row, "rps", None))
    return r if r is not None else _num(getattr(row, "users", None))


def _fault_action(row: Any) -> str | None:
    if str(getattr(row, "outcome", "") or "ok") in ("error", "skipped"):
        return None
    action = str(getattr(row, "action", "") or "")
    return action if action.isidentifier() else "fault"


def _planned_next_rate(scenario: Mapping[str, Any] | None, t: float) -> float | None:
    """The rate of the stage after the planned stage starting near t (None: unknown).

    Read from the scenario so a trial cut short names its spike as a complete one does."""
    stages = ((scenario or {}).get("load") or {}).get("stages") or []
    start = 0.0
    for i, st in enumerate(stages):
        if abs(start - t) <= _SNAP_S:
            if i + 1 >= len(stages):
                return None
            nxt = stages[i + 1]
            v = nxt.get("rps", nxt.get("users"))
            return None if v is None else float(v)
        start += float(st.get("duration_s", 0) or 0)
    return None


def _snap(t: float, planned: Sequence[float]) -> int:
    best = min(planned, key=lambda p: abs(p - t), default=None)
    if best is not None and abs(best - t) <= _SNAP_S:
        return round(best)
    return round(t)


def find_disturbances(events: pd.DataFrame, end_s: float,
                      scenario: Mapping[str, Any] | None = None,
                      offered: Sequence[float] | None = None) -> list[Disturbance]:
    """Disturbances of one trial in time order. `events`: that trial's events.csv rows
    (structured columns, harness.record.upgrade); `offered`: its per-second offered rate
    from t=0 (surges are searched in it when given)."""
    plan = planned_times(scenario)
    # (t0, kind, detail, replicas, planned times, peak or None, fixed name or None)
    found: list[tuple[float, str, str, tuple[str, ...], list[float], float | None,
                      str | None]] = []

    stages = events[events["kind"] == "load_stage"].sort_values("t_s", kind="stable")
    rated = [(float(r.t_s), _rate(r), str(r.detail), _num(getattr(r, "ramp_s", None)))
             for r in stages.itertuples()]
    rated = [x for x in rated if x[1] is not None]
    for i, (t, rate, detail, ramp) in enumerate(rated):
        if i == 0 or t < 0:
            continue
        prev = rated[i - 1][1]
        assert rate is not None and prev is not None
        if rate > prev:
            nxt = _planned_next_rate(scenario, t)
            if nxt is None:
                nxt = rated[i + 1][1] if i + 1 < len(rated) else None
            kind = "spike" if nxt is not None and nxt < rate else "step"
            found.append((t, kind, detail, (), plan["load"], t + (ramp or 0.0), None))

    faults = events[events["kind"] == "fault"].sort_values("t_s", kind="stable")
    groups: list[list[Any]] = []  # [t0, action, detail, replicas]
    for r in faults.itertuples():
        action = _fault_action(r)
        t = float(r.t_s)
        if action is None or t < 0:
            continue
        rep = "" if pd.isna(r.replica) else str(r.replica)
        g = next((g for g in groups if g[1] == action and t - g[0] <= _GROUP_S), None)
        if g is None:
            groups.append([t, action, str(r.detail), [rep] if rep else []])
        elif rep:
            g[3].append(rep)
    for t, action, detail, reps in groups:
        found.append((t, action, detail, tuple(reps), plan["fault"], None, None))

    rule = SurgeRule.from_scenario(scenario)
    if rule is not None and offered is not None:
        steps = [x[0] for x in found if x[1] in ("spike", "step")]
        for sg in find_surges(offered, rule):
            if any(sg.t0_s - _SNAP_S <= t <= sg.peak_s + _SNAP_S for t in steps):
                continue  # the stage event already names this rise
            found.append((float(sg.t0_s), "surge",
                          f"{sg.base_rps:g}→{sg.peak_rps:g} req/s", (), [],
                          float(sg.peak_s), None))
    for m in marks_of(scenario):
        if m.at_s < end_s:
            found.append((m.at_s, "mark", "", (), [], None, m.name))

    found.sort(key=lambda x: x[0])
    out: list[Disturbance] = []
    used: dict[str, int] = {}
    for i, (t, kind, detail, reps, planned, peak, fixed) in enumerate(found):
        base = fixed or f"{kind}_t{_snap(t, planned)}"
        used[base] = used.get(base, 0) + 1
        name = base if used[base] == 1 else f"{base}_{used[base]}"
        nxt = found[i + 1][0] if i + 1 < len(found) else end_s
        out.append(Disturbance(name=name, kind=kind, t0_s=t, end_s=max(t, min(nxt, end_s)),
                               detail=detail, replicas=reps, peak_s=peak))
    return out


def load_regions(events: pd.DataFrame, end_s: float) -> list[tuple[float, float, float]]:
    """(start, end, rate) of each load stage, for the dashboard's shaded bands."""
    stages = events[events["kind"] == "load_stage"].sort_values("t_s", kind="stable")
    rows = [(float(r.t_s), _rate(r)) for r in stages.itertuples()]
    out = []
    for i, (t, rate) in enumerate(rows):
        end = rows[i + 1][0] if i + 1 < len(rows) else end_s
        out.append((t, end, math.nan if rate is None else rate))
    return out
