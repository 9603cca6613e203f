"""`harness compare RUN_DIR [RUN_DIR ...]`: strategies side by side, within and across runs,
with the differences and whether they exceed the noise.

Every column is one strategy of one run ("entity"). Each metric shows the mean over the
trials with its 95% bootstrap CI (harness.analysis.aggregate) and, against a baseline,
the difference and whether it is *significant*: the two CIs do not overlap. That is the
conservative reading pyperf's `compare_to` also takes — a difference whose CIs overlap is
reported as "within noise", and with a single trial (no CI) as "noise unknown", never
as a real change.

Baseline: with one run, the first strategy of that run. With several runs that share
strategy names (the same strategy before and after a change), each strategy is compared
with itself in the first run that has it; a strategy found in one run only is compared
with the first strategy of its run. `baseline="run:strategy"` or `"strategy"` forces one.

Thresholds of each run's scenario are evaluated as well (harness.analysis.thresholds):
`CompareResult.failed_gates` lists the failed lines; `raise_for_gates()` raises GateFailed
(exit 1) for the CLI.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.analysis.aggregate import aggregate
from harness.analysis.rundata import load_run
from harness.analysis.summary import summarize_run
from harness.analysis.thresholds import GateResult, evaluate_thresholds
from harness.errors import GateFailed, UsageError
from harness.fsutil import atomic_write
from harness.record.writer import write_frame_csv
from harness.report.websec import meta_csp

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
# (harness.analysis.summary.DISTURBANCE_METRICS): (prefix, label, unit, better).
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


@dataclass
class CompareResult:
    table: pd.DataFrame  # long form, one row per metric × entity (comparison.csv)
    entities: list[tuple[str, str]]  # (run label, strategy) in column order
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

    def raise_for_gates(self) -> None:
        if self.failed_gates:
            raise GateFailed(f"{len(self.failed_gates)} threshold(s) failed")


COMPARE_COLUMNS = ("metric", "run", "strategy", "n", "n_valid", "n_missing", "mean",
                   "ci_lo", "ci_hi", "n_happened", "n_not_recovered", "baseline", "delta",
                   "delta_pct", "significant", "better", "text")


def _overlap(a: pd.Series, b: pd.Series) -> bool | None:
    if any(math.isnan(float(v)) for v in (a["ci_lo"], a["ci_hi"], b["ci_lo"], b["ci_hi"])):
        return None
    return not (a["ci_hi"] < b["ci_lo"] or b["ci_hi"] < a["ci_lo"])


def _baselines(entities: list[tuple[str, str]], n_runs: int,
               forced: str | None) -> dict[tuple[str, str], tuple[str, str] | None]:
    """entity → the entity it is compared with (None: it is a baseline itself)."""
    if forced:
        run, _, strat = forced.rpartition(":")
        cands = [e for e in entities if e[1] == strat and (not run or e[0] == run)]
        if not cands:
            raise UsageError(f"baseline {forced!r} is not among the compared strategies")
        return {e: (cands[0] if e != cands[0] else None) for e in entities}
    first_of_run: dict[str, tuple[str, str]] = {}
    for e in entities:
        first_of_run.setdefault(e[0], e)
    out: dict[tuple[str, str], tuple[str, str] | None] = {}
    for e in entities:
        same = [x for x in entities if x[1] == e[1]]
        b = same[0] if n_runs > 1 and len(same) > 1 else first_of_run[e[0]]
        out[e] = None if b == e else b
    return out


def build_table(aggs: pd.DataFrame, entities: list[tuple[str, str]], metrics: list[str],
                baselines: dict[tuple[str, str], tuple[str, str] | None]) -> pd.DataFrame:
    idx = aggs.set_index(["run", "strategy", "metric"])
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
            row = {"metric": metric, "run": e[0], "strategy": e[1], "n": int(a["n"]),
                   "n_valid": int(a["n_valid"]), "n_missing": int(a["n_missing"]),
                   "mean": a["mean"], "ci_lo": a["ci_lo"], "ci_hi": a["ci_hi"],
                   "n_happened": happened, "n_not_recovered": not_rec,
                   "baseline": "", "delta": math.nan, "delta_pct": math.nan,
                   "significant": None, "better": None, "text": cell_text(metric, a, rec)}
            b = baselines.get(e)
            bkey = (b[0], b[1], metric) if b else None
            if bkey is not None and bkey in idx.index:
                base = idx.loc[bkey]
                row["baseline"] = f"{b[0]}:{b[1]}" if b else ""
                d = float(a["mean"]) - float(base["mean"])
                row["delta"] = d
                bm = float(base["mean"])
                row["delta_pct"] = 100.0 * d / abs(bm) if bm != 0 else math.nan
                sig = _overlap(a, base)
                row["significant"] = None if sig is None else not sig
                if better and not math.isnan(d) and d != 0:
                    row["better"] = (d < 0) == (better == "lower")
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def _cell(r: pd.Series) -> str:
    return str(r["text"])


def _delta(r: pd.Series) -> str:
    if not r["baseline"] or math.isnan(r["delta"]):
        return ""
    pct = "" if math.isnan(r["delta_pct"]) else f" ({r['delta_pct']:+.0f}%)"
    sig = {True: " *", False: " ~", None: " ?"}[r["significant"]]
    sign = "+" if r["delta"] >= 0 else "−"
    return f"{sign}{format_value(r['metric'], abs(r['delta']))}{pct}{sig}"


def _colour(r: pd.Series) -> str:
    if not r["significant"]:
        return "dim"
    return {True: "green", False: "red"}.get(r["better"], "yellow")


def _legend() -> str:
    return ("[lo, hi] 95% bootstrap CI over trials · Δ vs baseline: * beyond the noise "
            "(CIs apart), ~ within the noise (CIs overlap), ? noise unknown (1 trial)")


def render_terminal(res: CompareResult, width: int = 160) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # escape(): "[lo, hi]" and user-chosen names must not be read as rich markup
    t = Table(title="harness compare", caption=escape(_legend()), show_lines=False)
    t.add_column("metric", style="bold")
    for run, strat in res.entities:
        t.add_column(escape(f"{strat}\n{run}" if len({e[0] for e in res.entities}) > 1
                            else strat), justify="right")
    for metric in dict.fromkeys(res.table["metric"]):
        rows = res.table[res.table["metric"] == metric]
        label, unit, _ = metric_info(metric)
        cells = []
        for run, strat in res.entities:
            r = rows[(rows["run"] == run) & (rows["strategy"] == strat)]
            if r.empty:
                cells.append("")
                continue
            r0 = r.iloc[0]
            d = _delta(r0)
            colour = _colour(r0)
            cells.append(escape(_cell(r0)) + (f"\n[{colour}]Δ {escape(d)}[/{colour}]" if d
                                              else ""))
        t.add_row(f"{label}" + (f" ({unit})" if unit and unit != "%" else ""), *cells)
    buf = io.StringIO()
    for note in res.notes:
        buf.write(f"WARNING: {note}\n")
    Console(file=buf, width=width, force_terminal=True, color_system="standard").print(t)
    gate_lines = res.gate_lines
    if gate_lines:
        buf.write("\nthresholds:\n" + "\n".join(f"  {line}" for line in gate_lines) + "\n")
    return buf.getvalue()


HTML_STYLE = """
body{background:#111217;color:#d8d9da;font:14px/1.4 -apple-system,Segoe UI,Roboto,
Helvetica,Arial,sans-serif;margin:24px}
h1{font-size:20px;font-weight:500} table{border-collapse:collapse;margin:12px 0}
th,td{border:1px solid #2c3235;padding:6px 10px;text-align:right;vertical-align:top}
th{background:#181b1f;color:#9fa7b3;font-weight:500} td:first-child,th:first-child{
text-align:left} .d{display:block;font-size:12px;color:#8e8e8e} .good{color:#73bf69}
.bad{color:#f2495c} .fail{color:#f2495c} .pass{color:#73bf69} .note{color:#8e8e8e}
"""


def render_html(res: CompareResult) -> str:
    e = html.escape
    multi = len({x[0] for x in res.entities}) > 1
    head = "".join(f"<th>{e(s)}{'<br><span class=note>' + e(r) + '</span>' if multi else ''}"
                   "</th>" for r, s in res.entities)
    body = []
    for metric in dict.fromkeys(res.table["metric"]):
        rows = res.table[res.table["metric"] == metric]
        label, unit, _ = metric_info(metric)
        tds = []
        for run, strat in res.entities:
            r = rows[(rows["run"] == run) & (rows["strategy"] == strat)]
            if r.empty:
                tds.append("<td></td>")
                continue
            r0 = r.iloc[0]
            d = _delta(r0)
            cls = {"green": "good", "red": "bad"}.get(_colour(r0), "")
            dd = f"<span class='d {cls}'>Δ {e(d)}</span>" if d else ""
            tds.append(f"<td>{e(_cell(r0))}{dd}</td>")
        u = f" ({e(unit)})" if unit and unit != "%" else ""
        body.append(f"<tr><td>{e(label)}{u}</td>{''.join(tds)}</tr>")
    gates = "".join(
        f"<li class={'fail' if line.startswith('✗') else 'pass'}>{e(line)}</li>"
        for line in res.gate_lines)
    return (f"<!doctype html><html><head><meta charset=utf-8>{meta_csp()}"
            f"<title>harness compare</title>"
            f"<style>{HTML_STYLE}</style></head><body><h1>harness compare</h1>"
            + "".join(f"<p class=fail>⚠ {e(n)}</p>" for n in res.notes)
            + f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table><p class=note>{e(_legend())}</p>"
            + (f"<h2>thresholds</h2><ul>{gates}</ul>" if gates else "")
            + "</body></html>")


def longest_run(flags: Sequence[object]) -> int:
    """Longest streak of true values (1, "1", True) in a per-second column (pure)."""
    best = cur = 0
    for f in flags:
        on = str(f).strip() in ("1", "1.0", "True", "true")
        cur = cur + 1 if on else 0
        best = max(best, cur)
    return best


def saturation_notes(label: str, ts: pd.DataFrame) -> list[str]:
    """"run X, strategy #n: host saturated …" for every trial the machine or the load
    generator limited (the same 3-seconds-in-a-row rule as record/host.py)."""
    from harness.record.host import RUN_S

    out = []
    if ts.empty:
        return out
    for (strategy, trial), g in ts.groupby(["strategy", "trial"], sort=False):
        m = g[pd.to_numeric(g["t_s"], errors="coerce") >= 0]
        if "host_saturated" in m and longest_run(m["host_saturated"].tolist()) >= RUN_S:
            n = int(pd.to_numeric(m["host_saturated"], errors="coerce").fillna(0).sum())
            out.append(f"{label}, {strategy} #{trial}: the host was saturated ({n} s); "
                       "its figures may show the machine's limit, not the strategy's")
        if "loadgen_saturated" in m and longest_run(m["loadgen_saturated"].tolist()) >= 1:
            out.append(f"{label}, {strategy} #{trial}: the load generator was saturated")
    return out


def default_metrics(summaries: Sequence[pd.DataFrame]) -> list[str]:
    cols: list[str] = []
    for s in summaries:
        cols.extend(c for c in s.columns if c not in cols)
    # every figure of a disturbance together, disturbances in time order (summary.csv's)
    per_dist = [c for d in (c.removeprefix("recovery_s_") for c in cols
                            if c.startswith("recovery_s_"))
                for c in (p + d for p, *_ in PER_DISTURBANCE) if c in cols]
    return [m for m in METRICS if m in cols] + per_dist


def compare(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
            echo: Callable[[str], object] | None = None, *,
            metrics: Sequence[str] | None = None, baseline: str | None = None,
            seed: int = 0) -> CompareResult:
    """Compare every strategy of every run; write comparison.csv/.html into `out_dir`
    (default: the run folder for one run, else `<parent>/compare-<id>--<id>…` next to the
    first run); print the table and the gate lines through `echo` when given."""
    if not run_dirs:
        raise UsageError("compare needs at least one run folder")
    labels: list[str] = []
    summaries, aggs = [], []
    gates: dict[str, GateResult] = {}
    notes: list[str] = []
    for d in run_dirs:
        p = Path(d)
        if not p.is_dir():
            raise UsageError(f"{p}: not a run folder")
        data = load_run(p)
        if data.timeseries.empty:
            raise UsageError(f"{p}: no timeseries.csv rows to compare")
        label = data.run_id if data.run_id not in labels else str(p)
        labels.append(label)
        notes.extend(saturation_notes(label, data.timeseries))
        s = summarize_run(data)
        summaries.append(s.trials)
        a = aggregate(s.trials, seed=seed)
        a["run"] = label
        aggs.append(a)
        thresholds = data.scenario.get("thresholds") or []
        if thresholds:
            gates[label] = evaluate_thresholds(thresholds, s.trials,
                                               label=label if len(run_dirs) > 1 else None)
    allagg = pd.concat(aggs, ignore_index=True)
    entities = list(dict.fromkeys(zip(allagg["run"], allagg["strategy"], strict=True)))
    chosen = list(metrics) if metrics else default_metrics(summaries)
    table = build_table(allagg, entities, chosen, _baselines(entities, len(labels), baseline))
    res = CompareResult(table=table, entities=entities, gates=gates, notes=notes)

    if out_dir is None:
        first = Path(run_dirs[0])
        out_dir = first if len(run_dirs) == 1 else \
            first.parent / ("compare-" + "--".join(labels))[:120]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res.csv_path = out / "comparison.csv"
    write_frame_csv(table, res.csv_path)
    res.html_path = atomic_write(out / "comparison.html", render_html(res))
    res.text = render_terminal(res)
    if echo is not None:
        echo(res.text.rstrip("\n"))
        echo(f"wrote {res.csv_path} and {res.html_path}")
    return res
