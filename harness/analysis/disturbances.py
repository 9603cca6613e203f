"""Disturbances of one trial, found in its events (docs/architecture.md, "Vocabulary": "an event
the system must
absorb: a load step/spike or a fault").

* A `load_stage` event whose rate (detail `rps=…`, or `users=…` in the closed model) is
  higher than the previous stage's is a load disturbance. It is a **spike** when the
  *next* stage goes back down, else a **step** (the next stage is taken from the
  scenario when it lists stages, so a trial cut short names its spike the same way).
  The first stage is compared with the warm-up rate when a warm-up stage event (t < 0)
  exists, else it is the start of the load, not a disturbance.
* A `fault` event is a disturbance named after its action (crash, kill, pause). The
  events of one injection (one per victim replica) within 1 s of each other and with
  the same action are one disturbance. Events recording a failed or skipped injection
  (`error=…`, `skipped=…`) are not disturbances: nothing happened to the system.

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

LOAD_KINDS = ("spike", "step")
FAULT_ACTIONS = ("crash", "kill", "pause")
_RATE = re.compile(r"\b(?:rps|users)=([-+0-9.eE]+)")
_ACTION = re.compile(r"\baction=([a-z_]+)")
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


def _rate(detail: str) -> float | None:
    m = _RATE.search(detail or "")
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def _fault_action(detail: str) -> str | None:
    d = detail or ""
    if "error=" in d or "skipped" in d:
        return None
    m = _ACTION.search(d)
    if m:
        return m.group(1)
    first = d.split()[0] if d.split() else ""
    return first if first.isidentifier() else "fault"


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
                      scenario: Mapping[str, Any] | None = None) -> list[Disturbance]:
    """Disturbances of one trial in time order. `events`: that trial's events.csv rows."""
    plan = planned_times(scenario)
    found: list[tuple[float, str, str, tuple[str, ...], list[float]]] = []

    stages = events[events["kind"] == "load_stage"].sort_values("t_s", kind="stable")
    rated = [(float(r.t_s), _rate(str(r.detail)), str(r.detail))
             for r in stages.itertuples()]
    rated = [x for x in rated if x[1] is not None]
    for i, (t, rate, detail) in enumerate(rated):
        if i == 0 or t < 0:
            continue
        prev = rated[i - 1][1]
        assert rate is not None and prev is not None
        if rate > prev:
            nxt = _planned_next_rate(scenario, t)
            if nxt is None:
                nxt = rated[i + 1][1] if i + 1 < len(rated) else None
            kind = "spike" if nxt is not None and nxt < rate else "step"
            found.append((t, kind, detail, (), plan["load"]))

    faults = events[events["kind"] == "fault"].sort_values("t_s", kind="stable")
    groups: list[list[Any]] = []  # [t0, action, detail, replicas]
    for r in faults.itertuples():
        action = _fault_action(str(r.detail))
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
        found.append((t, action, detail, tuple(reps), plan["fault"]))

    found.sort(key=lambda x: x[0])
    out: list[Disturbance] = []
    used: dict[str, int] = {}
    for i, (t, kind, detail, reps, planned) in enumerate(found):
        base = f"{kind}_t{_snap(t, planned)}"
        used[base] = used.get(base, 0) + 1
        name = base if used[base] == 1 else f"{base}_{used[base]}"
        nxt = found[i + 1][0] if i + 1 < len(found) else end_s
        out.append(Disturbance(name=name, kind=kind, t0_s=t, end_s=max(t, min(nxt, end_s)),
                               detail=detail, replicas=reps))
    return out


def load_regions(events: pd.DataFrame, end_s: float) -> list[tuple[float, float, float]]:
    """(start, end, rate) of each load stage, for the dashboard's shaded bands."""
    stages = events[events["kind"] == "load_stage"].sort_values("t_s", kind="stable")
    rows = [(float(r.t_s), _rate(str(r.detail))) for r in stages.itertuples()]
    out = []
    for i, (t, rate) in enumerate(rows):
        end = rows[i + 1][0] if i + 1 < len(rows) else end_s
        out.append((t, end, math.nan if rate is None else rate))
    return out
