"""The dashboard's index (every run with its headline figures, ticked for comparing) and
its /compare page. Kept apart from harness.report.server, which only routes and guards
requests: the functions here take the server's results folder and a query, and return
HTML.

    /                 runs: status, scenario, start (local time), duration, and per
                      strategy error rate, p95, recovery and cost; tick runs and
                      strategies, press "compare"
    /compare?run=A&run=B[&strategy=S…][&view=within|ab][&baseline=S][&pool=1][&force=1]
                      harness.report.compare_view's page; `run=A+B` pools A and B
"""

from __future__ import annotations

import html
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pandas as pd

from harness.analysis.aggregate import aggregate
from harness.analysis.cells import format_value
from harness.analysis.compare import build_comparison
from harness.analysis.rundata import load_run
from harness.analysis.summary import summarize_run
from harness.errors import UsageError
from harness.fsutil import is_regular
from harness.report.compare_view import compare_page

HEADLINE = ("error_rate", "p95_ms", "recovery_s", "replica_seconds")
HEADLINE_TITLES = ("error rate", "p95 (ms)", "recovery (s)", "cost (replica-s)")
FILE_LINKS = ("timeseries.csv", "events.csv", "run.json")
SIG_FILES = ("run.json", "timeseries.csv", "events.csv")


def signature(run_dir: Path) -> tuple[tuple[int, int], ...]:
    out = []
    for name in SIG_FILES:
        try:
            st = (run_dir / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            out.append((0, 0))
    return tuple(out)


@dataclass(frozen=True)
class Headline:
    strategy: str
    trials: int
    cells: tuple[str, ...]  # formatted, in HEADLINE order


def _recovery_text(mean: float, n: int, n_valid: int, happened: int | None) -> str:
    if happened == 0:
        return "–"  # no disturbance in this run
    if n_valid == 0:
        return "not recovered" if n else "–"
    s = format_value("recovery_s", mean)
    return s + (f" ({n - n_valid}/{n} not recovered)" if n_valid < n else "")


def headlines_from_aggregate(agg: pd.DataFrame, strategies: Sequence[str]) -> list[Headline]:
    """One Headline per strategy from an aggregate table (summary_aggregate.csv's shape)."""
    idx = {(str(r.strategy), str(r.metric)): r for r in agg.itertuples()}
    out = []
    for s in strategies:
        cells = []
        trials = 0
        for m in HEADLINE:
            r = idx.get((s, m))
            if r is None:
                cells.append("–")
                continue
            trials = max(trials, int(r.n))
            if m == "recovery_s":
                dist = idx.get((s, "disturbances"))
                happened = None if dist is None or math.isnan(float(dist.mean)) \
                    else int(float(dist.mean) > 0)
                cells.append(_recovery_text(float(r.mean), int(r.n), int(r.n_valid),
                                            happened))
            else:
                cells.append(format_value(m, float(r.mean)))
        out.append(Headline(s, trials, tuple(cells)))
    return out


class Headlines:
    """Headline figures per run, recomputed only when the run's files change. A finished
    run's summary_aggregate.csv is read when it is newer than its data (cheap); otherwise
    the summary is computed from the CSVs."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[tuple[int, int], ...], list[Headline]]] = {}
        self._lock = threading.Lock()

    def get(self, run_dir: Path) -> list[Headline]:
        sig = signature(run_dir)
        key = str(run_dir)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] == sig:
                return hit[1]
        try:
            value = self._compute(run_dir)
        except (OSError, ValueError, KeyError):
            value = []  # a run folder mid-write: no figures this time, the page still loads
        with self._lock:
            self._cache[key] = (sig, value)
        return value

    @staticmethod
    def _compute(run_dir: Path) -> list[Headline]:
        data = load_run(run_dir)
        if data.timeseries.empty:
            return []
        agg_file = run_dir / "summary_aggregate.csv"
        newest = max((run_dir / f).stat().st_mtime_ns for f in SIG_FILES
                     if (run_dir / f).exists())
        if is_regular(agg_file) and agg_file.stat().st_mtime_ns >= newest:
            agg = pd.read_csv(agg_file)
            if set(HEADLINE) <= set(agg["metric"]):
                return headlines_from_aggregate(agg, data.strategies)
        trials = summarize_run(data).trials
        agg = aggregate(trials, [*HEADLINE, "disturbances"])
        return headlines_from_aggregate(agg, data.strategies)


def local_time(iso: str | None) -> str:
    """'Sun 6 Dec 2026, 22:11' in the machine's time zone; '' when unknown."""
    if not iso:
        return ""
    try:
        t = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except ValueError:
        return str(iso)
    if t.tzinfo is None:
        return t.strftime("%a %-d %b %Y, %H:%M")
    return t.astimezone().strftime("%a %-d %b %Y, %H:%M")


def duration_text(started: str | None, ended: str | None, now: datetime) -> str:
    try:
        t0 = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        t1 = (datetime.fromisoformat(str(ended).replace("Z", "+00:00")) if ended
              else now.astimezone(t0.tzinfo) if t0.tzinfo else now)
    except (TypeError, ValueError):
        return ""
    s = max(0, round((t1 - t0).total_seconds()))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    text = f"{h} h {m} min" if h else f"{m} min {sec} s" if m else f"{sec} s"
    return text if ended else f"{text} so far"


def index_body(runs: Sequence[Mapping[str, Any]], results_dir: Path,
               headlines: Callable[[Path], list[Headline]], now: datetime) -> str:
    """The index's HTML body (inside harness.report.server's page frame)."""
    e = html.escape
    if not runs:
        return f"<h1>Runs</h1><p>No runs in {e(str(results_dir))} yet.</p>"
    names = list(dict.fromkeys(s for r in runs for s in r.get("strategies") or []))
    picks = "".join(f"<label class=chip><input type=checkbox name=strategy "
                    f"value='{e(s)}'> {e(s)}</label>" for s in names)
    head = ("<tr><th>compare</th><th>run</th><th>status</th><th>scenario</th>"
            "<th>started</th><th>duration</th><th>strategy</th><th>trials</th>"
            + "".join(f"<th class=fig>{t}</th>" for t in HEADLINE_TITLES)
            + "<th>files</th></tr>")
    rows = []
    for r in runs:
        rid = str(r["id"])
        run_dir = results_dir / rid
        figures = headlines(run_dir) or [Headline(s, 0, ("–",) * len(HEADLINE))
                                         for s in r.get("strategies") or ["–"]]
        span = f" rowspan={len(figures)}" if len(figures) > 1 else ""
        files = " ".join(f"<a href='/run/{e(rid)}/{f}'>{f}</a>" for f in FILE_LINKS
                         if is_regular(run_dir / f))  # a planted link is not offered
        lead = (f"<td{span}><input type=checkbox name=run value='{e(rid)}' "
                f"aria-label='compare {e(rid)}'></td>"
                f"<td{span}><a href='/run/{e(rid)}/'>{e(rid)}</a></td>"
                f"<td{span}><span class='badge {e(str(r['status']))}'>"
                f"{e(str(r['status']))}</span></td><td{span}>{e(str(r['scenario']))}</td>"
                f"<td{span} title='{e(str(r.get('started') or ''))}'>"
                f"{e(local_time(r.get('started')))}</td>"
                f"<td{span}>{e(duration_text(r.get('started'), r.get('ended'), now))}</td>")
        for i, h in enumerate(figures):
            cells = "".join(f"<td class=fig>{e(c)}</td>" for c in h.cells)
            tail = f"<td{span}>{files}</td>" if i == 0 else ""
            first = " class=first" if i == 0 else ""
            rows.append(f"<tr data-run='{e(rid)}'{first}>{lead if i == 0 else ''}"
                        f"<td>{e(h.strategy)}</td><td>{h.trials or ''}</td>{cells}{tail}</tr>")
    return (
        "<h1>Runs</h1><form method=get action=/compare id=pick>"
        "<div class='toolbar'><span>tick runs (and strategies, default: all), then</span>"
        "<button type=submit id=compare-button>compare</button>"
        "<label>view <select name=view><option value=''>auto (2+ runs: A/B)</option>"
        "<option value=ab>A/B across runs</option><option value=within>within a run"
        "</option></select></label>"
        "<label><input type=checkbox name=pool value=1> pool ticked runs as repetitions"
        f"</label></div><div class='toolbar' id=strategy-picks>strategies: {picks}</div>"
        f"<div class=box><table class='sum runs'><thead>{head}</thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<div class=note>figures: mean over the run's trials · recovery: worst "
        "disturbance · times in this machine's time zone · compared, the earlier run is A"
        "</div></div></form>")


class ComparePages:
    """/compare pages, cached by query and the runs' file signatures (a few at a time)."""

    def __init__(self, keep: int = 8) -> None:
        self._cache: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def page(self, query: Mapping[str, list[str]],
             resolve: Callable[[str], Path | None]) -> tuple[int, str]:
        """(HTTP status, HTML) for a /compare query; `resolve` maps a run id to its folder
        (None: not a run of this results folder)."""
        args = []
        for item in query.get("run", []):
            paths = []
            for rid in item.split("+"):
                p = resolve(rid)
                if p is None:
                    return 404, _message(f"no run {rid!r} in this results folder")
                paths.append(str(p))
            args.append("+".join(paths))
        if not args:
            return 400, _message("tick at least one run on the index page")
        # the index lists the newest run first; A/B reads "before → after": earlier is A
        args.sort(key=lambda a: _started(Path(a.split("+")[0])))
        opts = {"view": (query.get("view") or [""])[0] or None,
                "baseline": (query.get("baseline") or [""])[0] or None,
                "pool": (query.get("pool") or [""])[0] == "1",
                "force": (query.get("force") or [""])[0] == "1",
                "strategies": list(dict.fromkeys(query.get("strategy", []))) or None}
        sigs = tuple(signature(Path(p)) for a in args for p in a.split("+"))
        key = (tuple(args), tuple(sorted((k, str(v)) for k, v in opts.items())), sigs)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return 200, self._cache[key]
        try:
            res = build_comparison(args, **opts)  # type: ignore[arg-type]
        except UsageError as err:
            more = ""
            if "--force" in str(err):
                q = dict(query)
                q["force"] = ["1"]
                more = (f"<p><a id=force href='/compare?{html.escape(urlencode(q, True))}'>"
                        "compare anyway</a></p>")
            return 400, _message(str(err), more)
        page = compare_page(res)
        with self._lock:
            self._cache[key] = page
            while len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        return 200, page


def _started(run_dir: Path) -> str:
    try:
        doc = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        return str(doc.get("started") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def frame(title: str, body: str) -> str:
    """A plain page in the dashboard's style (the run and compare pages have their own)."""
    css = (Path(__file__).parent / "dashboard.css").read_text(encoding="utf-8")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(title)}</title><style>{css}"
            "a{color:#6e9fff} h1{font-size:18px;font-weight:500}</style></head>"
            f"<body><div id=app>{body}</div></body></html>\n")


def _message(text: str, more: str = "") -> str:
    return frame("harness · compare",
                 f"<h1>Compare</h1><p class=warn id=message>{html.escape(text)}</p>{more}"
                 "<p><a href='/'>back to the runs</a></p>")
