"""Which runs are compared with which: run folders → groups of repetitions.

A *group* is what one column of `harness compare` stands for: one run, or several runs of
one scenario pooled as repetitions of it (`RUN1+RUN2` pools exactly those; `--pool` pools
every run given). Runs may be compared (or pooled) only when they ran the same scenario:
the same app, load, faults, SLO and platform. Anything else differs in what was measured,
so it is refused in one line unless the user forces it; the strategies themselves may
differ (that is often the point of an A/B), and a changed definition is said above the
table.

Saturation (`saturation_notes`) is where compare states trials whose figures the measuring
machine may have bent: every column in SATURATION_COLUMNS that a run's timeseries.csv has
is read, so a new per-second flag (e.g. a `host_saturated` column) only needs an entry
there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis.rundata import RunData, load_run
from harness.analysis.summary import RunSummary, summarize_run
from harness.errors import UsageError

# The parts of a scenario that decide what was measured (see the module docstring).
SCENARIO_KEYS = ("app", "load", "faults", "slo", "platform")
# per-second 0/1 columns of timeseries.csv → who was saturated
SATURATION_COLUMNS = {"loadgen_saturated": "the load generator",
                      "host_saturated": "the host"}


@dataclass
class RunGroup:
    """One compared column: the runs in it, their trials pooled and renumbered 1..k per
    strategy (run_id = the group's label)."""

    label: str
    runs: list[RunData]
    summaries: list[RunSummary]
    trials: pd.DataFrame
    # (strategy, pooled trial) → (run index in `runs`, the trial's number in that run)
    origin: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    @property
    def strategies(self) -> list[str]:
        out: list[str] = []
        for r in self.runs:
            out.extend(s for s in r.strategies if s not in out)
        return out

    @property
    def first(self) -> RunData:
        return self.runs[0]

    def strategy_spec(self, name: str) -> dict[str, Any] | None:
        for r in self.runs:
            for s in r.scenario.get("strategies") or []:
                if isinstance(s, Mapping) and s.get("name") == name:
                    return dict(s)
        return None


def split_args(args: Sequence[str | Path], pool: bool) -> list[list[Path]]:
    """Command-line runs → groups of folders. `A+B` is one group unless a folder of that
    very name exists; `pool` puts every run into one group."""
    groups: list[list[Path]] = []
    for a in args:
        p = Path(a)
        if p.is_dir() or "+" not in str(a):
            groups.append([p])
        else:
            # results/a+b and results/a+results/b both name results/a and results/b
            first, *rest = str(a).split("+")
            paths = [Path(first)]
            for piece in rest:
                q = Path(piece)
                paths.append(q if q.is_dir() or "/" in piece else Path(first).parent / q)
            groups.append(paths)
    if pool:
        groups = [[p for g in groups for p in g]]
    seen: set[Path] = set()
    for g in groups:
        for p in g:
            if not p.is_dir():
                raise UsageError(f"{p}: not a run folder")
            # a run on both sides would make the two sides' trials dependent
            if p.resolve() in seen:
                raise UsageError(f"{p}: a run is named twice")
            seen.add(p.resolve())
    return groups


def _label(runs: list[RunData], taken: list[str]) -> str:
    label = "+".join(r.run_id for r in runs)
    if label in taken:
        label = "+".join(str(r.path) for r in runs)
    return label


def load_group(paths: Sequence[Path], taken: list[str]) -> RunGroup:
    runs = []
    for p in paths:
        data = load_run(p)
        if data.timeseries.empty:
            raise UsageError(f"{p}: no timeseries.csv rows to compare")
        runs.append(data)
    summaries = [summarize_run(r) for r in runs]
    label = _label(runs, taken)
    frames, origin = [], {}
    counters: dict[str, int] = {}
    for i, s in enumerate(summaries):
        t = s.trials.copy()
        new = []
        for strategy, trial in zip(t["strategy"], t["trial"], strict=True):
            counters[strategy] = counters.get(strategy, 0) + 1
            origin[(str(strategy), counters[strategy])] = (i, int(trial))
            new.append(counters[strategy])
        t["trial"] = new
        t["run_id"] = label
        frames.append(t)
    trials = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return RunGroup(label=label, runs=runs, summaries=summaries, trials=trials, origin=origin)


def load_groups(args: Sequence[str | Path], pool: bool = False) -> list[RunGroup]:
    groups: list[RunGroup] = []
    for paths in split_args(args, pool):
        groups.append(load_group(paths, [g.label for g in groups]))
    return groups


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": [1, 2]}} → {"a.b[0]": 1, "a.b[1]": 2}; a path names one setting."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        if not obj:
            out[prefix] = []
    else:
        out[prefix] = obj
    return out


def differences(a: Any, b: Any) -> list[str]:
    """'path old → new' for every setting that differs; a setting missing on one side
    counts as null (a newer harness may write more defaults)."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k), fb.get(k)
        if va != vb and not (_num(va) is not None and _num(va) == _num(vb)):
            out.append(f"{k} {json.dumps(va)} → {json.dumps(vb)}")
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def scenario_of(run: RunData) -> dict[str, Any]:
    sc = run.scenario
    out = {k: sc.get(k) for k in SCENARIO_KEYS}
    out["platform"] = run.run.get("platform") or sc.get("platform")
    return out


def scenario_mismatches(groups: Sequence[RunGroup]) -> list[str]:
    """One phrase per run whose scenario differs from the first run's."""
    runs = [r for g in groups for r in g.runs]
    ref = runs[0]
    out = []
    for r in runs[1:]:
        diff = differences(scenario_of(ref), scenario_of(r))
        if diff:
            keys = sorted({d.split(".")[0].split("[")[0].split(" ")[0] for d in diff})
            more = f" (+{len(diff) - 2} more)" if len(diff) > 2 else ""
            out.append(f"{r.run_id} differs from {ref.run_id} in {', '.join(keys)}: "
                       f"{'; '.join(diff[:2])}{more}")
    return out


def check_scenarios(groups: Sequence[RunGroup], force: bool) -> list[str]:
    """Refuse runs of different scenarios (UsageError, exit 2) unless forced; forced, the
    differences come back as warnings to print above the table."""
    mism = scenario_mismatches(groups)
    if mism and not force:
        raise UsageError(f"not the same scenario: {mism[0]}"
                         + (f" (and {len(mism) - 1} more run(s))" if len(mism) > 1 else "")
                         + "; compare anyway with --force")
    return [f"different scenarios, compared anyway (--force): {m}" for m in mism]


def strategy_changes(groups: Sequence[RunGroup]) -> list[str]:
    """A strategy whose definition is not the same in every run compared or pooled."""
    out = []
    runs = [r for g in groups for r in g.runs]
    names = list(dict.fromkeys(s for g in groups for s in g.strategies))
    for name in names:
        specs = []
        for r in runs:
            spec = next((dict(s) for s in r.scenario.get("strategies") or []
                         if isinstance(s, Mapping) and s.get("name") == name), None)
            if spec is not None:
                specs.append((r.run_id, spec))
        for rid, spec in specs[1:]:
            diff = differences(specs[0][1], spec)
            if diff:
                out.append(f"strategy {name} changed from {specs[0][0]} to {rid}: "
                           + "; ".join(diff[:3]) + (" …" if len(diff) > 3 else ""))
    return out


def _flagged_trials(ts: pd.DataFrame, col: str) -> pd.Series:
    """Trials (strategy, trial) → flagged seconds, for the trials the flag marks: the host
    needs RUN_S saturated seconds in a row, as the run's own flag (harness/record/host.py);
    the load generator one."""
    from harness.record.host import RUN_S

    need = RUN_S if col == "host_saturated" else 1
    m = ts[pd.to_numeric(ts["t_s"], errors="coerce") >= 0]
    flags = pd.to_numeric(m[col], errors="coerce").fillna(0) > 0
    out: dict[tuple[str, int], int] = {}
    for key, f in flags.groupby([m["strategy"], m["trial"]], sort=False):
        streak = best = 0
        for on in f:
            streak = streak + 1 if on else 0
            best = max(best, streak)
        if best >= need:
            out[key] = int(f.sum())
    return pd.Series(out, dtype=int)


def saturation_notes(groups: Sequence[RunGroup]) -> list[str]:
    """'run X: the load generator was saturated in 2 of 9 trials (a#1, b#3)' per run and
    flag column; an empty list when no trial was."""
    out = []
    for g in groups:
        for r in g.runs:
            ts = r.timeseries
            n_trials = len(ts.groupby(["strategy", "trial"])) if len(ts) else 0
            for col, who in SATURATION_COLUMNS.items():
                if col not in ts.columns:
                    continue
                hit = _flagged_trials(ts, col)
                if len(hit):
                    which = ", ".join(f"{s}#{t}" for s, t in hit.index[:6])
                    out.append(f"run {r.run_id}: {who} was saturated in {len(hit)} of "
                               f"{n_trials} trials ({which}{' …' if len(hit) > 6 else ''}); "
                               "their figures may be bent by the measuring machine")
    return out
