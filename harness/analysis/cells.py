"""How a metric reads in the tables of compare and the report: its label, unit, which
direction is better, and the text of one cell ("mean [lo, hi]", "not recovered", …)."""

from __future__ import annotations

import math

import pandas as pd

# metric → (label, unit, better: "lower" | "higher" | None)
METRICS: dict[str, tuple[str, str, str | None]] = {
    "requests": ("requests", "", "higher"),
    "error_rate": ("error rate", "%", "lower"),
    "throughput_rps": ("throughput", "req/s", "higher"),
    "goodput_rps": ("goodput (≤ SLO latency)", "req/s", "higher"),
    "p95_ms": ("p95 latency", "ms", "lower"),
    "p99_ms": ("p99 latency", "ms", "lower"),
    "slo_violation_s": ("SLO violation", "s", "lower"),
    "recovery_s": ("recovery (worst)", "s", "lower"),
    "scale_up_reaction_s": ("scale-up reaction", "s", "lower"),
    "failed_in_disturbances": ("failed in disturbances", "", "lower"),
    "replica_seconds": ("cost", "replica-s", "lower"),
    "requests_per_replica_s": ("requests / replica-s", "", "higher"),
    "elasticity_accuracy_u_pct": ("under-prov. accuracy θU", "%", "lower"),
    "elasticity_accuracy_o_pct": ("over-prov. accuracy θO", "%", "lower"),
    "elasticity_timeshare_u_pct": ("under-prov. timeshare τU", "%", "lower"),
    "elasticity_timeshare_o_pct": ("over-prov. timeshare τO", "%", "lower"),
    "elasticity_jitter_per_min": ("jitter", "/min", None),
}


# Per-disturbance summary columns shown by default, `<prefix><disturbance>`
# (harness/record/schema.py DISTURBANCE_METRICS): (prefix, label, unit, better).
PER_DISTURBANCE = (
    ("recovery_s_", "recovery", "s", "lower"),
    ("slo_violation_s_", "SLO-violation s", "s", "lower"),
    ("failed_", "failed", "", "lower"),
    ("scale_up_reaction_s_", "scale-up reaction", "s", "lower"),
)


def metric_info(metric: str) -> tuple[str, str, str | None]:
    if metric in METRICS:
        return METRICS[metric]
    for prefix, label, unit, better in PER_DISTURBANCE:
        if metric.startswith(prefix):
            return (f"{label} {metric.removeprefix(prefix)}", unit, better)
    return (metric, "", None)


def format_value(metric: str, x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    unit = metric_info(metric)[1]
    if metric == "error_rate":
        return f"{100 * x:.2f}%"
    if unit == "ms" or metric.startswith("failed_") \
            or metric in ("requests", "replica_seconds"):
        return f"{x:,.0f}"
    if unit == "%":
        return f"{x:.1f}%"
    if unit == "s":
        return f"{x:.1f}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) < 100 else f"{x:,.1f}"


def recovered_metric(metric: str) -> str | None:
    """The 0/1 `recovered…` column that tells "not recovered" from "did not happen"."""
    if metric == "recovery_s":
        return "recovered"
    if metric.startswith("recovery_s_"):
        return "recovered_" + metric.removeprefix("recovery_s_")
    return None


def recovery_counts(recovered: pd.Series | None) -> tuple[int | None, int | None]:
    """(trials in which the disturbance happened, trials that did not recover) from the
    aggregate row of a `recovered…` metric (mean = share recovered); (None, None) when
    unknown."""
    if recovered is None:
        return None, None
    happened = int(recovered["n_valid"])
    return happened, happened - round(float(recovered["mean"]) * happened) if happened else 0


def cell_text(metric: str, agg: pd.Series, recovered: pd.Series | None = None) -> str:
    """"mean [lo, hi]" for a metric's aggregate row; recovery times say "not recovered"
    (every trial), "(k/n not recovered)" (some) or "–" (the disturbance did not happen)."""
    happened, not_rec = recovery_counts(recovered)
    if happened == 0:
        return "–"
    if agg["n_valid"] == 0:
        return "not recovered" if metric.startswith("recovery_s") else "–"
    s = format_value(metric, agg["mean"])
    lo, hi = format_value(metric, agg["ci_lo"]), format_value(metric, agg["ci_hi"])
    if not math.isnan(agg["ci_lo"]) and (lo != s or hi != s):  # a zero-width CI says nothing
        s += f" [{lo}, {hi}]"
    if not_rec:
        s += f" ({not_rec}/{happened} not recovered)"
    return s
