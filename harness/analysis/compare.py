"""`harness compare`: the two questions users bring, each answered by name.

* **within a run** (`view="within"`): every strategy of a run against a baseline strategy
  (the first one, or `baseline=NAME`): Δ = strategy − baseline.
* **across runs, A/B** (`view="ab"`, the default for two or more runs): each strategy in
  run B against the same strategy in run A — before/after a code or config change —
  Δ = B − A. More runs: each against A.

A column is one strategy of one *group*: a run, or runs of one scenario pooled as
repetitions (`RUN1+RUN2`, or `pool=True` for all; harness.analysis.runsets). Runs of
different scenarios are refused unless forced; a strategy whose definition changed, and
saturated trials, are said above the table.

Each metric shows the mean over the trials with its 95 % interval and method
(harness.analysis.stats: Student-t for 2–29 trials, expanded bootstrap from 30, none
below 2). A difference is *significant* when Welch's t-test over the two sides' trials
gives p < 0.05 — the test pyperf's `compare_to` uses, not "the intervals do not overlap"
(a much stricter test than its stated level). With fewer than 2 trials on a side the noise
is unknown and nothing is called significant.

Thresholds of each run's scenario are evaluated as well (harness.analysis.thresholds):
`CompareResult.failed_gates` lists the failed lines; `raise_for_gates()` raises GateFailed
(exit 1) for the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.aggregate import aggregate
from harness.analysis.cells import (
    METRICS,
    PER_DISTURBANCE,
    cell_text,
    format_value,
    metric_info,
    recovered_metric,
    recovery_counts,
)
from harness.analysis.compare_text import render_terminal
from harness.analysis.runsets import (
    RunGroup,
    check_scenarios,
    load_groups,
    saturation_notes,
    strategy_changes,
)
from harness.analysis.stats import SIGNIFICANCE, welch_p
from harness.analysis.thresholds import GateResult, evaluate_thresholds
from harness.errors import GateFailed, UsageError
from harness.record.writer import write_frame_csv

VIEW_WITHIN = "within"
VIEW_AB = "ab"
Entity = tuple[str, str]  # (group label, strategy)
__all__ = ["METRICS", "CompareResult", "build_comparison", "cell_text", "compare",
           "format_value", "metric_info", "recovered_metric", "recovery_counts"]


@dataclass
class CompareResult:
    view: str  # VIEW_WITHIN | VIEW_AB
    question: str  # the question the table answers, in words
    table: pd.DataFrame  # long form, one row per metric × entity (comparison.csv)
    entities: list[Entity]  # column order
    sections: list[tuple[str, list[Entity]]]  # (title, columns) of each printed table
    groups: list[RunGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said above the table
    gates: dict[str, GateResult] = field(default_factory=dict)
    csv_path: Path | None = None
    html_path: Path | None = None
    text: str = ""
    # trials whose machine or load generator was the limit, stated above the table
    notes: list[str] = field(default_factory=list)

    @property
    def failed_gates(self) -> list[str]:
        return [line for g in self.gates.values() for line in g.failed]

    @property
    def gate_lines(self) -> list[str]:
        return [line for g in self.gates.values() for line in g.lines()]

    @property
    def ci_methods(self) -> list[str]:
        return list(dict.fromkeys(self.table["ci_method"].dropna())) if len(self.table) \
            else []

    def raise_for_gates(self) -> None:
        if self.failed_gates:
            raise GateFailed(f"{len(self.failed_gates)} threshold(s) failed")


COMPARE_COLUMNS = ("view", "metric", "run", "strategy", "n", "n_valid", "n_missing", "mean",
                   "ci_lo", "ci_hi", "ci_method", "n_happened", "n_not_recovered",
                   "baseline", "delta", "delta_pct", "p_value", "significant", "better",
                   "text")


def within_baselines(groups: Sequence[RunGroup], entities: list[Entity],
                     baseline: str | None) -> dict[Entity, Entity | None]:
    """entity → the same group's baseline strategy (None: it is the baseline)."""
    out: dict[Entity, Entity | None] = {}
    for g in groups:
        mine = [e for e in entities if e[0] == g.label]
        if not mine:
            continue
        if baseline is not None:
            if baseline not in g.strategies:
                raise UsageError(f"--baseline {baseline}: not a strategy of {g.label} "
                                 f"(it has {', '.join(g.strategies)})")
            base = (g.label, baseline)
        else:
            base = mine[0]
        for e in mine:
            out[e] = None if e == base else base
    return out


def ab_baselines(entities: list[Entity]) -> dict[Entity, Entity | None]:
    """entity → the same strategy in the first group that has it (None: it is A)."""
    out: dict[Entity, Entity | None] = {}
    for e in entities:
        first = next((x for x in entities if x[1] == e[1]), e)
        out[e] = None if first == e else first
    return out


def _significance(p: float) -> bool | None:
    return None if math.isnan(p) else bool(p < SIGNIFICANCE)


def build_table(aggs: pd.DataFrame, entities: list[Entity], metrics: list[str],
                baselines: dict[Entity, Entity | None], view: str) -> pd.DataFrame:
    idx = aggs.set_index(["run_id", "strategy", "metric"])
    rows = []
    for metric in metrics:
        better = metric_info(metric)[2]
        for e in entities:
            key = (e[0], e[1], metric)
            if key not in idx.index:
                continue
            a = idx.loc[key]
            rm = recovered_metric(metric)
            rec = idx.loc[(e[0], e[1], rm)] if rm and (e[0], e[1], rm) in idx.index else None
            happened, not_rec = recovery_counts(rec)
            row = {"view": view, "metric": metric, "run": e[0], "strategy": e[1],
                   "n": int(a["n"]), "n_valid": int(a["n_valid"]),
                   "n_missing": int(a["n_missing"]), "mean": a["mean"],
                   "ci_lo": a["ci_lo"], "ci_hi": a["ci_hi"], "ci_method": a["ci_method"],
                   "n_happened": happened, "n_not_recovered": not_rec,
                   "baseline": "", "delta": math.nan, "delta_pct": math.nan,
                   "p_value": math.nan, "significant": None, "better": None,
                   "text": cell_text(metric, a, rec)}
            b = baselines.get(e)
            bkey = (b[0], b[1], metric) if b else None
            if b is not None and bkey in idx.index:
                base = idx.loc[bkey]
                row["baseline"] = f"{b[0]}:{b[1]}"
                bm = float(base["mean"])
                d = float(a["mean"]) - bm
                row["delta"] = d
                row["delta_pct"] = 100.0 * d / abs(bm) if bm != 0 else math.nan
                p = welch_p(bm, float(base["std"]), int(base["n_valid"]),
                            float(a["mean"]), float(a["std"]), int(a["n_valid"]))
                row["p_value"] = p
                row["significant"] = _significance(p)
                if better and not math.isnan(d) and d != 0:
                    row["better"] = (d < 0) == (better == "lower")
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def default_metrics(summaries: Sequence[pd.DataFrame]) -> list[str]:
    cols: list[str] = []
    for s in summaries:
        cols.extend(c for c in s.columns if c not in cols)
    # every figure of a disturbance together, disturbances in time order (summary.csv's)
    per_dist = [c for d in (c.removeprefix("recovery_s_") for c in cols
                            if c.startswith("recovery_s_"))
                for c in (p + d for p, *_ in PER_DISTURBANCE) if c in cols]
    return [m for m in METRICS if m in cols] + per_dist


def _sections(view: str, groups: Sequence[RunGroup], entities: list[Entity],
              baselines: dict[Entity, Entity | None]) -> list[tuple[str, list[Entity]]]:
    if view == VIEW_WITHIN:
        out = []
        for g in groups:
            mine = [e for e in entities if e[0] == g.label]
            base = next((e for e in mine if baselines.get(e) is None), None)
            if mine:
                out.append((f"run {g.label} — baseline {base[1] if base else '–'}", mine))
        return out
    first = groups[0].label
    names = list(dict.fromkeys(e[1] for e in entities))
    out = []
    for name in names:
        cols = [e for e in entities if e[1] == name]
        if len(cols) == 1:
            title = f"{name} — only in {cols[0][0]}"
        elif cols[0][0] == first:
            title = f"{name} — " + ", ".join(f"{e[0]} vs {first}" for e in cols[1:])
        else:
            title = f"{name} — not in {first}; " + ", ".join(
                f"{e[0]} vs {cols[0][0]}" for e in cols[1:])
        out.append((title, cols))
    return out


def question(view: str, groups: Sequence[RunGroup], baseline: str | None) -> str:
    if view == VIEW_WITHIN:
        b = baseline or "the first strategy of each run"
        return f"Within a run: each strategy against {b} (Δ = strategy − baseline)"
    a = groups[0].label
    others = ", ".join(g.label for g in groups[1:])
    return (f"A/B across runs: each strategy in {others} against the same strategy in "
            f"{a} (Δ = B − A)")


def build_comparison(runs: Sequence[str | Path], *, view: str | None = None,
                     baseline: str | None = None, pool: bool = False, force: bool = False,
                     strategies: Sequence[str] | None = None,
                     metrics: Sequence[str] | None = None, seed: int = 0) -> CompareResult:
    """Load, check and compare; writes nothing (see `compare` for the files)."""
    if not runs:
        raise UsageError("compare needs at least one run folder")
    if view not in (None, VIEW_WITHIN, VIEW_AB):
        raise UsageError(f"--view {view}: use {VIEW_WITHIN} or {VIEW_AB}")
    groups = load_groups(runs, pool=pool)
    if view is None:
        view = VIEW_AB if len(groups) > 1 and baseline is None else VIEW_WITHIN
    if view == VIEW_AB and len(groups) < 2:
        raise UsageError("the A/B view needs two runs (or groups RUN1+RUN2); "
                         "one run compares its strategies: --view within")
    if view == VIEW_AB and baseline is not None:
        raise UsageError("--baseline picks a strategy for --view within; the A/B view "
                         "compares each strategy with itself in the first run")
    notes = check_scenarios(groups, force) + strategy_changes(groups) + \
        saturation_notes(groups)
    aggs = []
    gates: dict[str, GateResult] = {}
    for g in groups:
        aggs.append(aggregate(g.trials, seed=seed))
        thresholds = g.first.scenario.get("thresholds") or []
        if thresholds:
            gates[g.label] = evaluate_thresholds(
                thresholds, g.trials, label=g.label if len(groups) > 1 else None)
    allagg = pd.concat(aggs, ignore_index=True)
    entities: list[Entity] = [(g.label, s) for g in groups for s in g.strategies]
    if strategies:
        unknown = [s for s in strategies if not any(e[1] == s for e in entities)]
        if unknown:
            raise UsageError(f"strategy {unknown[0]} is in none of the compared runs")
        entities = [e for e in entities if e[1] in strategies]
    if view == VIEW_WITHIN:
        baselines = within_baselines(groups, entities, baseline)
    else:
        baselines = ab_baselines(entities)
    chosen = list(metrics) if metrics else default_metrics([g.trials for g in groups])
    table = build_table(allagg, entities, chosen, baselines, view)
    return CompareResult(view=view, question=question(view, groups, baseline), table=table,
                         entities=entities,
                         sections=_sections(view, groups, entities, baselines),
                         groups=groups, notes=notes, gates=gates)


def default_out_dir(res: CompareResult) -> Path:
    """The run folder for one plain run, else `compare-<A>--<B>…` next to the first run."""
    first = res.groups[0].first.path
    if len(res.groups) == 1 and len(res.groups[0].runs) == 1:
        return first
    return first.parent / ("compare-" + "--".join(g.label for g in res.groups))[:120]


def write_csv(res: CompareResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "comparison.csv"
    write_frame_csv(res.table, path)  # mkstemp temp + rename, never through a planted link
    res.csv_path = path
    return path


def compare(runs: Sequence[str | Path], out_dir: str | Path | None = None,
            echo: Callable[[str], object] | None = None, **options: object) -> CompareResult:
    """build_comparison, then comparison.csv into `out_dir` (default_out_dir) and the
    terminal table through `echo` when given. `options`: build_comparison's keywords."""
    res = build_comparison(runs, **options)  # type: ignore[arg-type]
    write_csv(res, Path(out_dir) if out_dir is not None else default_out_dir(res))
    res.text = render_terminal(res)
    if echo is not None:
        echo(res.text.rstrip("\n"))
        echo(f"wrote {res.csv_path}")
    return res
