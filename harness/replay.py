"""``harness replay RUN_DIR``: what other policies would have decided on a run's recorded inputs.

Reads run.json (each strategy's ``autoscaler:`` block as the run resolved it) and
decisions.csv, replays every chosen policy per strategy × trial
(harness/autoscale/replay.py), and writes into ``--out`` (default RUN_DIR/replay/):

- ``decisions.csv`` — the replayed decisions, the columns of the run's decisions.csv
  (harness/record/schema.py DECISIONS); ``policy`` names the replayed policy;
- ``replay.svg`` — recorded vs replayed desired replicas over time, one panel per
  strategy × trial: plain SVG, no script, no external reference (opens anywhere, passes a
  strict Content-Security-Policy).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.autoscale.controller import DecisionRow
from harness.autoscale.registry import POLICIES, make_policy
from harness.autoscale.replay import CAVEAT, cell_int, replay_rows, spec_for
from harness.autoscale.spec import EXTERNAL_POLICIES, RECORDED, AutoscalerSpec
from harness.errors import HarnessError
from harness.record.schema import DECISIONS, names
from harness.record.writer import _cell

COLORS = ("#5794F2", "#FF9830", "#B877D9", "#73BF69", "#F2CC0C", "#8AB8FF")


@dataclass(frozen=True)
class Track:
    strategy: str
    trial: int
    recorded: list[dict[str, str]]
    replayed: dict[str, list[DecisionRow]]  # policy name → rows


def _specs(run_dir: Path) -> dict[str, AutoscalerSpec]:
    try:
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        strategies = run["scenario"]["strategies"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HarnessError(f"{run_dir}/run.json: cannot read the run's strategies ({e})") \
            from None
    out: dict[str, AutoscalerSpec] = {}
    for s in strategies:
        if isinstance(s, dict) and s.get("autoscaler"):
            out[str(s["name"])] = AutoscalerSpec.model_validate(s["autoscaler"],
                                                                context=RECORDED)
    return out


def _recorded(run_dir: Path) -> dict[tuple[str, int], list[dict[str, str]]]:
    path = run_dir / "decisions.csv"
    if not path.is_file():
        raise HarnessError(f"{path}: no decisions.csv (did the run use an autoscaler?)")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("t_s")]
    out: dict[tuple[str, int], list[dict[str, str]]] = {}
    for r in rows:
        out.setdefault((r["strategy"], int(r.get("trial") or 1)), []).append(r)
    for v in out.values():
        v.sort(key=lambda r: float(r["t_s"]))
    return out


def replay_run(run_dir: Path, strategy: str | None = None,
               policies: Sequence[str] = (), out: Path | None = None,
               target: float | None = None,
               echo: Callable[[str], None] = print) -> list[Track]:
    """Replay and write the files; returns what was replayed (for tests)."""
    for p in policies:
        if p in EXTERNAL_POLICIES:
            raise HarnessError(f"--policy {p}: a platform's own controller; it cannot run "
                               f"offline (replay its port, --policy hpa)")
        if p not in POLICIES:
            raise HarnessError(f"--policy {p}: unknown policy; known: {', '.join(POLICIES)}")
    specs = _specs(run_dir)
    if strategy is not None and strategy not in specs:
        raise HarnessError(f"--strategy {strategy}: no autoscaled strategy of that name in "
                           f"{run_dir}/run.json (autoscaled: {', '.join(specs) or 'none'})")
    recorded = _recorded(run_dir)
    tracks: list[Track] = []
    for (name, trial), rows in sorted(recorded.items()):
        if name not in specs or (strategy is not None and name != strategy):
            continue
        base = specs[name]
        replayed: dict[str, list[DecisionRow]] = {}
        # the real HPA's rows replay through its port by default (docs/kubernetes.md)
        own = "hpa" if base.policy in EXTERNAL_POLICIES else base.policy
        for pol in policies or (own,):
            try:
                spec = spec_for(base, pol, target)
            except ValueError as e:
                raise HarnessError(f"--policy {pol} on strategy {name}: {e}") from None
            replayed[pol] = replay_rows(rows, make_policy(spec), spec)
        tracks.append(Track(name, trial, rows, replayed))
    if not tracks:
        raise HarnessError(f"{run_dir}: no recorded decisions to replay")
    out = out or run_dir / "replay"
    out.mkdir(parents=True, exist_ok=True)
    run_id = tracks[0].recorded[0].get("run_id", "")
    _write_atomic(out / "decisions.csv", _csv(tracks, run_id))
    _write_atomic(out / "replay.svg", chart(tracks))
    echo(f"note: {CAVEAT}")
    for t in tracks:
        rec = [cell_int(r.get("desired")) for r in t.recorded]
        for pol, rows in t.replayed.items():
            same = sum(a == b["desired"] for a, b in zip(rec, rows, strict=True))
            echo(f"{t.strategy} trial {t.trial} · {pol}: {same}/{len(rows)} decisions equal "
                 f"the recorded desired count")
    echo(str(out / "decisions.csv"))
    echo(str(out / "replay.svg"))
    return tracks


def _csv(tracks: list[Track], run_id: str) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names(DECISIONS), lineterminator="\n")
    w.writeheader()
    for t in tracks:
        for rows in t.replayed.values():
            for r in rows:
                full = {"run_id": run_id, "strategy": t.strategy, "trial": t.trial, **r}
                w.writerow({k: _cell(full.get(k)) for k in names(DECISIONS)})
    return buf.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)  # replaces a link at `path`, never writes through it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the chart ------------------------------------------------------------------------------

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 860, 240, 48, 150, 52, 32


def _steps(points: list[tuple[float, float]], x: Callable[[float], float],
           y: Callable[[float], float]) -> str:
    """A step line: each count holds until the next decision."""
    d: list[str] = []
    for i, (t, v) in enumerate(points):
        if i == 0:
            d.append(f"M{x(t):.1f},{y(v):.1f}")
        else:
            d.append(f"H{x(t):.1f}V{y(v):.1f}")
    return " ".join(d)


def chart(tracks: list[Track]) -> str:
    """Recorded vs replayed desired replicas, one panel per strategy × trial."""
    panels: list[str] = []
    for i, tr in enumerate(tracks):
        rec = [(float(r["t_s"]), float(v)) for r in tr.recorded
               if (v := cell_int(r.get("desired"))) is not None]
        lines = [("recorded", "#222", rec, "")]
        for j, (pol, rows) in enumerate(tr.replayed.items()):
            pts = [(r["t_s"], float(r["desired"])) for r in rows if r["desired"] is not None]
            lines.append((f"replay: {pol}", COLORS[j % len(COLORS)], pts, "6 4"))
        ts = [t for _, _, pts, _ in lines for t, _ in pts] or [0.0, 1.0]
        vs = [v for _, _, pts, _ in lines for _, v in pts] or [0.0, 1.0]
        t0, t1 = min(ts), max(max(ts), min(ts) + 1)
        top = max(vs) + 1
        oy = PAD_T + i * H

        def x(t: float, t0: float = t0, t1: float = t1) -> float:
            return PAD_L + (t - t0) / (t1 - t0) * (W - PAD_L - PAD_R)

        def y(v: float, oy: float = oy, top: float = top) -> float:
            return oy + (H - PAD_B - PAD_T) * (1 - v / top) + 10

        g = [f'<text x="{PAD_L}" y="{oy + 4}" class="h">'
             f'{html.escape(tr.strategy)} · trial {tr.trial} · desired replicas</text>',
             f'<line x1="{PAD_L}" y1="{y(0):.1f}" x2="{W - PAD_R}" y2="{y(0):.1f}" '
             'class="ax"/>']
        for k in range(0, int(top) + 1, max(1, int(top) // 5)):
            g.append(f'<text x="{PAD_L - 6}" y="{y(k) + 4:.1f}" class="tk" '
                     f'text-anchor="end">{k}</text>')
        g.append(f'<text x="{PAD_L}" y="{y(0) + 16:.1f}" class="tk">{t0:g} s</text>'
                 f'<text x="{W - PAD_R}" y="{y(0) + 16:.1f}" class="tk" '
                 f'text-anchor="end">{t1:g} s</text>')
        for k, (label, color, pts, dash) in enumerate(lines):
            if pts:
                dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
                g.append(f'<path d="{_steps(pts, x, y)}" stroke="{color}" fill="none" '
                         f'stroke-width="{2 if k == 0 else 1.6}"{dash_attr}/>')
            ly = oy + 24 + 16 * k
            g.append(f'<line x1="{W - PAD_R + 10}" y1="{ly}" x2="{W - PAD_R + 30}" '
                     f'y2="{ly}" stroke="{color}" stroke-width="2"/>'
                     f'<text x="{W - PAD_R + 34}" y="{ly + 4}" class="tk">'
                     f'{html.escape(label)}</text>')
        panels.append("<g>" + "".join(g) + "</g>")
    height = PAD_T + H * len(tracks) + 20
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
            f'viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="11">'
            f"<title>harness replay: recorded vs replayed decisions</title>"
            "<style>.h{font-weight:bold;font-size:12px}.tk{fill:#444}"
            ".ax{stroke:#999}</style>"
            f'<rect width="{W}" height="{height}" fill="#fff"/>'
            + "".join(f'<text x="{PAD_L}" y="{14 + 13 * n}" class="tk">{html.escape(line)}'
                      "</text>" for n, line in enumerate(textwrap.wrap(CAVEAT, 130)))
            + "".join(panels) + "</svg>\n")
