"""The words and marks of a comparison: the Δ cell, its colour, the legend, and the
terminal table (rich). The HTML view (harness.report.compare_view) uses the same helpers,
so the terminal and the browser say the same thing."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import pandas as pd

from harness.analysis.cells import format_value, metric_info
from harness.analysis.stats import METHOD_TEXT, SIGNIFICANCE

if TYPE_CHECKING:
    from harness.analysis.compare import CompareResult

MARKS = {True: "*", False: "~", None: "?"}


def p_text(p: float) -> str:
    if math.isnan(p):
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def delta_text(r: pd.Series) -> str:
    """'+12 (+5%) * p=0.003' for a row with a baseline, else ''."""
    if not r["baseline"] or math.isnan(r["delta"]):
        return ""
    pct = "" if math.isnan(r["delta_pct"]) else f" ({r['delta_pct']:+.0f}%)".replace("-", "−")
    sign = "±" if r["delta"] == 0 else "+" if r["delta"] > 0 else "−"
    p = p_text(float(r["p_value"]))
    sig = r["significant"] if r["significant"] in (True, False) else None
    return (f"{sign}{format_value(r['metric'], abs(r['delta']))}{pct} {MARKS[sig]}"
            + (f" {p}" if p else ""))


def colour(r: pd.Series) -> str:
    """green: significantly better · red: significantly worse · yellow: significant, no
    better direction · dim: within the noise or unknown."""
    if r["significant"] is not True:
        return "dim"
    return {True: "green", False: "red"}.get(r["better"], "yellow")


def metric_label(metric: str) -> str:
    label, unit, _ = metric_info(metric)
    return label + (f" ({unit})" if unit and unit != "%" else "")


def legend(res: CompareResult) -> str:
    methods = res.ci_methods
    ivals = "; ".join(METHOD_TEXT.get(m, m) for m in methods) or "none"
    delta = ("Δ = B − A" if res.view == "ab" else "Δ = strategy − baseline")
    return (f"[lo, hi]: 95 % interval of the mean — {ivals} · {delta}: * significant "
            f"(Welch t-test, p < {SIGNIFICANCE:g}), ~ within the noise, ? noise unknown "
            "(fewer than 2 trials on a side)")


def cell(res: CompareResult, metric: str, entity: tuple[str, str]) -> pd.Series | None:
    t = res.table
    r = t[(t["metric"] == metric) & (t["run"] == entity[0]) & (t["strategy"] == entity[1])]
    return None if r.empty else r.iloc[0]


def column_title(res: CompareResult, entity: tuple[str, str]) -> str:
    if res.view == "ab":
        return entity[0]
    return entity[1]


def render_terminal(res: CompareResult, width: int = 160) -> str:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=True, color_system="standard",
                  highlight=False)
    con.print(f"[bold]harness compare[/bold] · {escape(res.question)}", soft_wrap=True)
    for note in res.notes:
        con.print(f"[yellow]⚠ {escape(note)}[/yellow]", soft_wrap=True)
    metrics = list(dict.fromkeys(res.table["metric"]))
    for title, cols in res.sections:
        # escape(): "[lo, hi]" and user-chosen names must not be read as rich markup
        t = Table(title=escape(title), title_justify="left", show_lines=False)
        t.add_column("metric", style="bold")
        ab = res.view == "ab"
        for i, e in enumerate(cols):
            t.add_column(escape(column_title(res, e)), justify="right")
            if ab and i > 0:  # A/B: the difference gets a column of its own, one line a row
                t.add_column(escape(f"Δ {e[0]} − {cols[0][0]}"), justify="right")
        for metric in metrics:
            cells = []
            for i, e in enumerate(cols):
                r = cell(res, metric, e)
                d = delta_text(r) if r is not None else ""
                c = colour(r) if r is not None else "dim"
                text = escape(str(r["text"])) if r is not None else ""
                if ab:
                    cells.append(text)
                    if i > 0:
                        cells.append(f"[{c}]{escape(d)}[/{c}]" if d else "")
                else:
                    cells.append(text + (f"\n[{c}]Δ {escape(d)}[/{c}]" if d else ""))
            if any(cells):
                t.add_row(escape(metric_label(metric)), *cells)
        con.print(t)
    for part in legend(res).split(" · "):  # one line each, never wrapped mid-phrase
        con.print(escape(part), style="dim", soft_wrap=True)
    gate_lines = res.gate_lines
    if gate_lines:
        buf.write("\nthresholds:\n" + "\n".join(f"  {line}" for line in gate_lines) + "\n")
    return buf.getvalue()
