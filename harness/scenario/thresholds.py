"""Threshold syntax (k6-style gates), parsed when the scenario loads.

    <strategy>.<metric> <op> <number>     e.g.  autoscale.recovery_s < 30
    <metric> <op> <number>                e.g.  p95_ms < 300   (every strategy)

`metric` is a numeric summary.csv column declared in harness/record/schema.py, or a
per-disturbance column such as `recovery_s_spike_t30`. Evaluation over measured rows is
harness/analysis/thresholds.py; parsing is here so that `harness validate` and `harness run`
refuse a bad line before any run folder exists.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.errors import ScenarioError
from harness.record.schema import DISTURBANCE_METRICS, TEXT_COLUMNS, summary_columns

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
