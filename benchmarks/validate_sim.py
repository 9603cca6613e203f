"""Validate the simulator against real runs of the same scenario.

    .venv/bin/python benchmarks/validate_sim.py                      # docker run + sim
    .venv/bin/python benchmarks/validate_sim.py --docker-run results/docker-1
    .venv/bin/python benchmarks/validate_sim.py --docker-run A --docker-run B  # B wins

Runs the scenario (default examples/validate.yaml: a spike and a crash, three strategies)
with `harness run --platform docker` unless real runs are given, then on the sim twice —
with the default platform lags and with lags fitted to the real run's own events
(harness.platforms.sim.calibrate) — each with several seeds, and prints per strategy, sim vs real:
throughput, p95 during the spike, failed requests and the recovery time of every
disturbance, against the targets (throughput within 5 %, p95 within 25 %, recovery within
20 % or 3 s). The table also goes to <out>/validation.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.analysis.rundata import load_run  # noqa: E402
from harness.analysis.summary import summarize_run  # noqa: E402
from harness.platforms.sim.calibrate import fit_params  # noqa: E402
from harness.platforms.sim.model import AppModel  # noqa: E402
from harness.platforms.sim.params import SimParams  # noqa: E402
from harness.platforms.sim.trial import run_sim_scenario  # noqa: E402
from harness.record.histogram import Histogram  # noqa: E402
from harness.scenario.loader import load_scenario  # noqa: E402

TARGETS = {"throughput_rps": ("rel", 0.05), "p95_spike_ms": ("rel", 0.25),
           "recovery": ("rel_or_abs", (0.20, 3.0))}


def spike_windows(scenario: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(name, start, end) of every stage whose rate is above the previous one."""
    out, t, prev = [], 0.0, None
    stages = scenario["load"]["stages"]
    warm = scenario["load"].get("warmup_rps")
    prev = warm if warm is not None else None
    for i, st in enumerate(stages):
        rate = st.get("rps", st.get("users"))
        nxt = stages[i + 1].get("rps", stages[i + 1].get("users")) if i + 1 < len(stages) \
            else None
        if prev is not None and rate > prev and nxt is not None and nxt < rate:
            out.append((f"spike_t{round(t)}", t, t + float(st["duration_s"])))
        prev = rate
        t += float(st["duration_s"])
    return out


def trial_metrics(run_dir: Path) -> pd.DataFrame:
    """One row per strategy × trial: the validation figures."""
    data = load_run(run_dir)
    summ = summarize_run(data).trials
    ts = data.timeseries
    rows = []
    windows = spike_windows(data.scenario)
    for r in summ.to_dict("records"):
        row: dict[str, Any] = {"strategy": r["strategy"], "trial": r["trial"],
                               "throughput_rps": r["throughput_rps"],
                               "failures": r["failures"], "p95_ms": r["p95_ms"]}
        t = ts[(ts["strategy"] == r["strategy"]) & (ts["trial"] == r["trial"])]
        for _name, a, b in windows[:1]:
            h = Histogram()
            for cell in t[(t["t_s"] >= a) & (t["t_s"] < b)]["latency_hist"]:
                h.merge(Histogram.decode(cell))
            row["p95_spike_ms"] = h.percentile(95)
        for k, v in r.items():
            if k.startswith("recovery_s_"):
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def _comparable(real: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Strategies whose definition, and the load, app and faults, match the scenario."""
    if any(real.get(k) != wanted.get(k) for k in ("app", "load", "faults", "slo")):
        return []
    mine = {s["name"]: s for s in wanted["strategies"]}
    return [s["name"] for s in real.get("strategies", []) if mine.get(s["name"]) == s]


def run_docker(scenario: Path, out: Path) -> Path:
    run_id = "docker-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-m", "harness.cli", "run", str(scenario), "--platform", "docker",
           "--out", str(out), "--run-id", run_id]
    print("running:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=False, cwd=ROOT)
    return out / run_id


def _fmt(v: Any, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "not recovered" if unit == "s" else "-"
    return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def _verdict(metric: str, real: float, sim: float) -> str:
    if real is None or sim is None or any(isinstance(x, float) and math.isnan(x)
                                          for x in (real, sim)):
        both_nan = all(x is None or (isinstance(x, float) and math.isnan(x))
                       for x in (real, sim))
        return "ok (both)" if both_nan else "MISS"
    diff = sim - real
    rel = diff / real if real else math.inf
    key = "recovery" if metric.startswith("recovery_s_") else metric
    kind, tol = TARGETS.get(key, (None, None))
    if kind == "rel":
        return "ok" if abs(rel) <= tol else "MISS"
    if kind == "rel_or_abs":
        return "ok" if abs(rel) <= tol[0] or abs(diff) <= tol[1] else "MISS"
    return ""


def compare(real: pd.DataFrame, sims: dict[str, pd.DataFrame]) -> tuple[str, list[dict]]:
    recoveries = sorted(c for c in real.columns if c.startswith("recovery_s_"))
    metrics = ["throughput_rps", "p95_spike_ms", "p95_ms", "failures", *recoveries]
    lines = ["| strategy | metric | real (mean [min–max]) | " + " | ".join(
        f"sim {k} (mean [min–max])" for k in sims) + " | " + " | ".join(
        f"Δ {k}" for k in sims) + " |",
        "|" + "---|" * (3 + 2 * len(sims))]
    records = []
    for strat in real["strategy"].unique():
        rr = real[real["strategy"] == strat]
        for m in metrics:
            unit = "s" if m.startswith("recovery") else ""
            rvals = rr[m].astype(float) if m in rr else pd.Series(dtype=float)
            rv = float(rvals.mean()) if rvals.notna().any() else math.nan
            rcell = _fmt(rv, unit) if len(rvals) < 2 or rvals.isna().all() else \
                f"{rv:.1f} [{rvals.min():.1f}–{rvals.max():.1f}]"
            cells, deltas = [], []
            rec: dict[str, Any] = {"strategy": strat, "metric": m, "real": rv,
                                   "real_values": rvals.tolist()}
            for k, sdf in sims.items():
                vals = sdf[sdf["strategy"] == strat][m].astype(float) if m in sdf else \
                    pd.Series(dtype=float)
                if vals.isna().all():
                    mean = math.nan
                    cells.append("not recovered" if unit == "s" else "-")
                else:
                    mean = float(vals.mean())  # NaN (not recovered) seeds are left out
                    miss = int(vals.isna().sum())
                    cells.append(f"{mean:.1f} [{vals.min():.1f}–{vals.max():.1f}]"
                                 + (f" ({miss} n.r.)" if miss else ""))
                verdict = _verdict(m, rv, mean)
                if not math.isnan(rv) and not math.isnan(mean):
                    d = mean - rv
                    pct = f" ({d / rv:+.0%})" if rv else ""
                    deltas.append(f"{d:+.1f}{pct} {verdict}")
                else:
                    deltas.append(verdict)
                rec[f"sim_{k}"] = mean
                rec[f"verdict_{k}"] = verdict
            records.append(rec)
            lines.append(f"| {strat} | {m} | {rcell} | " + " | ".join(cells)
                         + " | " + " | ".join(deltas) + " |")
    return "\n".join(lines), records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "examples" / "validate.yaml")
    ap.add_argument("--docker-run", type=Path, action="append", default=[],
                    help="an existing real run of the scenario (repeat: later ones win "
                         "per strategy)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=5, help="sim repetitions per variant")
    ap.add_argument("--exclude", action="append", default=[], metavar="RUN:STRATEGY",
                    help="leave a real trial out (e.g. one disturbed by other work)")
    args = ap.parse_args(argv)
    excl: dict[str, list[str]] = {}
    for e in args.exclude:
        run, _, strat = e.partition(":")
        excl.setdefault(Path(run).name, []).append(strat)
    args.exclude = excl
    out = args.out or ROOT / "results" / ("validate-" + dt.datetime.now().strftime(
        "%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    real_dirs = args.docker_run or [run_docker(args.scenario, out)]
    loaded = load_scenario(args.scenario)
    frames, events = [], []
    for d in real_dirs:
        data = load_run(d)
        m = trial_metrics(d)
        # a real trial counts only if it ran this scenario's definition of its strategy
        # (and the same load, app and faults)
        same = _comparable(data.scenario, loaded.scenario.model_dump(mode="json"))
        m = m[m["strategy"].isin(same)]
        m = m[~m["strategy"].isin(args.exclude.get(d.name, ()))]
        if len(m):
            frames.append(m.assign(run=d.name))
            events.append(data.events[data.events["strategy"].isin(m["strategy"])])
    if not frames:
        print("no comparable real trial", file=sys.stderr)
        return 2
    real = pd.concat(frames, ignore_index=True)
    ev = pd.concat(events)  # every real trial's lags help the fit

    sc = loaded.scenario
    app = AppModel.from_env(sc.app.env)
    fitted, seen = fit_params(ev, startup_s=app.startup_s,
                              restart_delay_s={s.name: s.restart_delay_s
                                               for s in sc.strategies})
    variants = {"default": SimParams(), "fitted": fitted}
    sims: dict[str, pd.DataFrame] = {}
    for name, params in variants.items():
        run_dir = out / f"sim-{name}"
        run_sim_scenario(loaded, run_dir, run_id=f"sim-{name}", params=params,
                         repetitions=args.seeds, echo=lambda _: None)
        sims[name] = trial_metrics(run_dir)
    table, records = compare(real, sims)
    fit_lines = "\n".join(f"- `{k}`: {v['range']} (n={v['n']}; default "
                          f"{getattr(SimParams(), k)})" for k, v in seen.items())
    n_real = real.groupby("strategy").size().to_dict()
    text = (f"# Sim vs real: {sc.name}\n\nreal runs: {', '.join(map(str, real_dirs))} "
            f"(trials per strategy: {n_real})\n"
            f"sim: {args.seeds} seeds per variant; `default` = SimParams defaults, "
            f"`fitted` = lags fitted to the real run's events:\n\n{fit_lines}\n\n{table}\n")
    (out / "validation.md").write_text(text, encoding="utf-8")
    (out / "validation.json").write_text(json.dumps(
        {"real": [str(d) for d in real_dirs], "fitted": seen, "rows": records},
        default=lambda o: None if isinstance(o, float) and np.isnan(o) else str(o),
        indent=1), encoding="utf-8")
    print(text)
    print(f"written: {out / 'validation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
