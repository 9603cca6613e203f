"""`harness run --keep-metrics`: each trial's Prometheus data kept under the run folder.

    results/<run>/metrics/<trial>/   Prometheus TSDB blocks: the trial's own Prometheus
                                     (app replicas, HAProxy; harness/platforms/docker/kept_tsdb.py)
                                     plus the harness's own series (`harness_*`)

The harness's own series are the ones it serves on `--metrics-port` while a run is live
(harness/report/loadgen_metrics.py). They are rebuilt here from the same definitions: each
per-second row is fed to a fresh set of those metrics (`make_loadgen_metrics`), the
resulting samples are written as OpenMetrics with the row's wall-clock time, and Debian's
`promtool tsdb create-blocks-from openmetrics` turns that into blocks next to the trial's.
So a metric renamed or added there shows up in kept data without a change here.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.errors import PrerequisiteError

METRICS_DIR = "metrics"
PROMTOOL_TIMEOUT_S = 120.0

Row = Mapping[str, Any]


def trial_id(strategy: str, trial: int | str) -> str:
    return f"{strategy}-{trial}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def openmetrics(rows: Iterable[tuple[float, Row]]) -> str:
    """OpenMetrics text of the harness's own series for timestamped rows (pure).

    One fresh registry per trial, fed row by row in time order (counters add up as they
    do live); after each row every sample is taken with the row's timestamp."""
    from prometheus_client import CollectorRegistry

    from harness.report.loadgen_metrics import make_loadgen_metrics

    registry = CollectorRegistry()
    metrics = make_loadgen_metrics(registry)
    families: dict[str, tuple[str, str, list[str]]] = {}  # name → (type, help, lines)
    last_ts = -math.inf
    for ts, row in sorted(rows, key=lambda r: r[0]):
        if ts <= last_ts:  # one sample per series and millisecond
            continue
        last_ts = ts
        metrics.observe_second(row)
        for fam in registry.collect():
            _t, _h, lines = families.setdefault(fam.name, (fam.type, fam.documentation, []))
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue  # a process start time, not the run's data
                lines.append(f"{s.name}{_labels(s.labels)} {_value(s.value)} {ts:.3f}")
    out = []
    for name, (kind, help_text, lines) in families.items():
        if not lines:
            continue
        out.append(f"# TYPE {name} {kind}")
        out.append(f"# HELP {name} {_escape(help_text)}")
        out.extend(lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool"
                                         if Path("/usr/bin/promtool").exists() else None)
    if not found:
        raise PrerequisiteError("promtool is missing (Debian's prometheus package; "
                                "scripts/setup.sh installs it)")
    return found


def create_blocks(text: str, out_dir: Path) -> list[str]:
    """Blocks from OpenMetrics `text` moved into `out_dir`; their names."""
    with tempfile.TemporaryDirectory(prefix=".harness-blocks-", dir=out_dir) as tmp:
        src = Path(tmp) / "series.om"
        src.write_text(text)
        blocks_dir = Path(tmp) / "blocks"
        r = subprocess.run([promtool(), "tsdb", "create-blocks-from", "openmetrics",
                            str(src), str(blocks_dir)], capture_output=True, text=True,
                           timeout=PROMTOOL_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
            raise PrerequisiteError(f"promtool create-blocks-from failed: {tail[0][:300]}")
        names = []
        for block in sorted(blocks_dir.iterdir()) if blocks_dir.is_dir() else ():
            block.rename(out_dir / block.name)
            names.append(block.name)
        return names


class KeptMetrics:
    """One run's kept metrics: the trial folders and the harness series of each trial."""

    def __init__(self, run_dir: Path, wall: Callable[[], float] = time.time) -> None:
        self.root = (run_dir / METRICS_DIR).resolve()
        self._wall = wall
        self._rows: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self.sizes: dict[str, int] = {}

    def trial_dir(self, trial: str) -> Path:
        d = self.root / trial
        d.mkdir(parents=True, exist_ok=True)
        return d

    def observe_row(self, row: Row) -> None:
        """A timeseries row as it is written (its wall-clock time is now)."""
        key = trial_id(str(row["strategy"]), row["trial"])
        self._rows.setdefault(key, []).append((self._wall(), dict(row)))

    def finish_trial(self, trial: str) -> int:
        """After tear-down: add the harness series as blocks; the trial folder's size."""
        d = self.root / trial
        rows = self._rows.pop(trial, [])
        if rows and d.is_dir():
            create_blocks(openmetrics(rows), d)
        size = 0
        if d.is_dir():
            from harness.platforms.docker.kept_tsdb import size_bytes

            size = size_bytes(d)
        self.sizes[trial] = size
        return size

    def summary(self) -> dict[str, Any]:
        """For run.json: the folder (relative to the run folder) and bytes per trial."""
        return {"dir": METRICS_DIR, "bytes": dict(self.sizes),
                "total_bytes": sum(self.sizes.values())}
