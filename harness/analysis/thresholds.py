"""k6-style thresholds: pass/fail gates over summary metrics, for CI.

Syntax, one per line of the scenario's `thresholds:` list::

    <strategy>.<metric> <op> <number>     e.g.  autoscale.recovery_s < 30
    <metric> <op> <number>                e.g.  p95_ms < 300   (every strategy)

`op` is one of < <= > >= == !=. `metric` is a numeric summary.csv column
(harness.analysis.summary: SUMMARY_CORE, SUMMARY_EXTRA, or a per-disturbance column
such as `recovery_s_spike_t30`). With repetitions the gate applies to the mean over the
trials. A gate passes only on numbers: a trial that did not recover (recovery_s empty),
or any other missing value, fails the gate and says why — "not recovered" is never
mistaken for a fast recovery.

Parsing errors (bad syntax, unknown metric or strategy) are ScenarioErrors (exit 2);
failed gates are returned as lines; the CLI turns them into GateFailed (exit 1).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.summary import DISTURBANCE_METRICS, TEXT_COLUMNS, summary_columns
from harness.errors import GateFailed, ScenarioError

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_EXPR = re.compile(
    r"^\s*(?:(?P<strategy>[a-z0-9][a-z0-9_-]{0,39})\.)?(?P<metric>[a-z][a-z0-9_]*)"
    r"\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_PER_DISTURBANCE = re.compile(
    r"^(?:" + "|".join(re.escape(c.name) for c in DISTURBANCE_METRICS)
    + r")_[a-z]+_t\d+(?:_\d+)?$")
_NOT_METRICS = {"run_id", "strategy", "trial"} | set(TEXT_COLUMNS)


def known_metrics() -> list[str]:
    return [c for c in summary_columns() if c not in _NOT_METRICS]


@dataclass(frozen=True)
class Threshold:
    text: str
    strategy: str | None
    metric: str
    op: str
    value: float

    def holds(self, x: float) -> bool:
        return OPS[self.op](x, self.value)


def parse_threshold(text: str, index: int | None = None,
                    strategies: Sequence[str] | None = None) -> Threshold:
    key = f"thresholds[{index}]" if index is not None else "thresholds"
    m = _EXPR.match(text)
    if not m:
        raise ScenarioError(f"{text!r} is not a threshold; write '<metric> <op> <number>' "
                            "or '<strategy>.<metric> <op> <number>', op one of "
                            "< <= > >= == != (e.g. 'autoscale.recovery_s < 30')", key=key)
    metric = m["metric"]
    if metric not in known_metrics() and not _PER_DISTURBANCE.match(metric):
        raise ScenarioError(f"unknown metric {metric!r} in {text!r}; known: "
                            f"{', '.join(known_metrics())}, or per disturbance "
                            "e.g. recovery_s_spike_t30", key=key)
    strategy = m["strategy"]
    if strategy is not None and strategies is not None and strategy not in strategies:
        raise ScenarioError(f"unknown strategy {strategy!r} in {text!r}; the scenario has "
                            f"{', '.join(strategies)}", key=key)
    value = float(m["value"])
    if not math.isfinite(value):  # '< 1e999' is '< inf': a gate that can never fail
        raise ScenarioError(f"{m['value']!r} in {text!r} is not a finite number", key=key)
    return Threshold(text=text.strip(), strategy=strategy, metric=metric, op=m["op"],
                     value=value)


def parse_thresholds(texts: Sequence[str],
                     strategies: Sequence[str] | None = None) -> list[Threshold]:
    """Parse every line (for `harness validate` too): the first bad one raises."""
    return [parse_threshold(t, i, strategies) for i, t in enumerate(texts)]


@dataclass
class GateResult:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        return self.passed + self.failed

    def raise_if_failed(self) -> None:
        if self.failed:
            raise GateFailed(f"{len(self.failed)} threshold(s) failed: "
                             + "; ".join(self.failed))


def _why_missing(metric: str, rows: pd.DataFrame, vals: pd.Series) -> str:
    """Why a gate has no number: not recovered, the disturbance did not happen, or no value."""
    n = len(vals)
    rec_col = ("recovered" if metric == "recovery_s" else
               "recovered_" + metric.removeprefix("recovery_s_")
               if metric.startswith("recovery_s_") else None)
    if rec_col and rec_col in rows.columns:
        rec = pd.to_numeric(rows[rec_col], errors="coerce")
        not_rec = int((rec == 0).sum())
        absent = int(rec.isna().sum())
        parts = []
        if not_rec:
            parts.append(f"not recovered in {not_rec} of {n} trial(s)")
        if absent:
            parts.append(f"no disturbance in {absent} of {n} trial(s)")
        if parts:
            return "; ".join(parts)
    return f"no value in {int(vals.isna().sum())} of {n} trial(s)"


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def evaluate_thresholds(thresholds: Sequence[str | Threshold], summary: pd.DataFrame,
                        label: str | None = None) -> GateResult:
    """Evaluate gates over summary.csv rows (one run, one row per strategy × trial).

    Each gate is checked per strategy on the mean over that strategy's trials. `label`
    (e.g. the run id) is added to each line when comparing several runs.
    """
    strategies = list(dict.fromkeys(summary["strategy"].astype(str))) \
        if len(summary) else []
    parsed = [t if isinstance(t, Threshold) else parse_threshold(t, i, strategies)
              for i, t in enumerate(thresholds)]
    result = GateResult()
    where = f" [{label}]" if label else ""
    for th in parsed:
        if th.metric not in summary.columns:
            raise ScenarioError(f"metric {th.metric!r} of {th.text!r} is not in this run's "
                                "summary (no such disturbance?)", key="thresholds")
        targets = [th.strategy] if th.strategy else strategies
        for strategy in targets:
            rows = summary[summary["strategy"].astype(str) == strategy]
            tag = "" if th.strategy else f" ({strategy})"
            head = f"{th.text}{tag}{where}"
            if rows.empty:
                result.failed.append(f"✗ {head}: no trial of {strategy!r} in this run")
                continue
            vals = pd.to_numeric(rows[th.metric], errors="coerce")
            n, missing = len(vals), int(vals.isna().sum())
            if missing:
                result.failed.append(f"✗ {head}: {_why_missing(th.metric, rows, vals)}")
                continue
            x = float(vals.mean())
            what = _fmt(x) if n == 1 else f"{_fmt(x)} (mean of {n} trials)"
            if math.isfinite(x) and th.holds(x):
                result.passed.append(f"✓ {head}: {what}")
            else:
                result.failed.append(f"✗ {head}: {what}")
    return result


def gate_run(run_dir: str | Path) -> GateResult:
    """The scenario's thresholds over one run folder (for `harness run`'s exit code):
    `gate_run(dir).raise_if_failed()` raises GateFailed (exit 1) when one fails."""
    from harness.analysis.rundata import load_run
    from harness.analysis.summary import summarize_run

    data = load_run(run_dir)
    thresholds = data.scenario.get("thresholds") or []
    if not thresholds:
        return GateResult()
    return evaluate_thresholds(thresholds, summarize_run(data).trials)
